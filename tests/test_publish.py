"""The card renderer and the publisher: facts in, card out; stage, check, push to the local Hub server."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from huggingface_hub import HfApi, ModelCard, constants

from stentor_hub.card import ModelCardFacts, parameter_breakdown, plot_curves, render_card
from stentor_hub.cli import main
from stentor_hub.publish import PublishError, check_staged, push_folder, stage_repository

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

TOKEN = "hf_PUBLISHtest_SECRET_4242424242"  # recognizable: it must never show up anywhere
WRONG_TOKEN = "hf_WRONGtoken_SECRET_1313131313"
STENTOR2_30M = dict(vocab_size=8064, hidden_size=512, intermediate_size=1024, num_hidden_layers=10,
                    num_attention_heads=8, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True)


# --- a RUN_DIR built from a tiny random model, following the training output contract -----------


def make_run_dir(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=8064, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=8001, eos_token_id=8000, pad_token_id=8000)
    model = LlamaForCausalLM(config)
    for name in ("best", "final"):
        model.save_pretrained(out / name)
        GenerationConfig(bos_token_id=8001, eos_token_id=8000, pad_token_id=8000).save_pretrained(out / name)
    shutil.copytree(tokenizer_dir, out / "tokenizer")
    rows = ["step,epoch,train_loss,eval_loss,eval_ppl,note"]
    for step in range(10, 110, 10):  # as the Trainer logs them: train and eval loss on separate rows
        loss = 9.0 - step / 20
        rows.append(f"{step},{step / 50:.2f},{loss:.4f},,,")
        if step % 20 == 0:
            rows.append(f"{step},{step / 50:.2f},,{loss + 0.1:.4f},{math.exp(loss + 0.1):.2f},")
    (out / "training_curves.csv").write_text("\n".join(rows) + "\n")
    manifest = {
        "schema_version": 1, "recipe_name": "tiny-cpu",
        "recipe": {"name": "tiny-cpu", "seed": 1, "model": {"hidden_size": 64, "num_hidden_layers": 2},
                   "tokenizer": {"vocab": "english-8000-strict-nocapcode-v1"},
                   "optimizer": {"lr": 1e-3, "betas": [0.9, 0.95]}, "training": {"batch_size": 4, "epochs": 2}},
        "model": {"architecture": "LlamaForCausalLM", "parameters": sum(p.numel() for p in model.parameters())},
        "versions": {"python": "3.11", "torch": "2", "transformers": "5", "accelerate": "1", "datasets": "5", "stentor_hub": "0.1.0"},
        "hardware": {"device": "cpu", "device_name": "CPU", "num_processes": 1, "mixed_precision": "no", "cpu_count": 2},
        "t4_recipe": {"enabled": True, "fp32_norm_modules": 5, "fp32_layers": 2, "softmax_modules_patched": 0},
        "data": {"train_sources": [{"path": "/data/sample.txt", "kind": "local"}, {"path": "epfml/FineWeb-HQ", "kind": "hub"}],
                 "eval_sources": [{"path": "/data/val.txt", "kind": "local"}], "source_tokens": 20000,
                 "train_tokens": 18000, "eval_tokens": 2000, "block_size": 64, "train_blocks": 281, "eval_blocks": 31},
        "training": {"tokens_seen": 25600, "steps": 100, "epochs": 2.0, "wall_time_seconds": 7200.0,
                     "tokens_per_second": 602.4, "stopped_by": "epochs"},
        "best": {"step": 80, "eval_loss": 5.1, "eval_ppl": 164.02},
        "final": {"step": 100, "epoch": 2.0, "train_loss": 4.0, "eval_loss": 4.1, "eval_ppl": 60.34},
        "started_at": "2026-11-24T00:00:00+00:00", "finished_at": "2026-11-24T02:00:00+00:00",
    }
    (out / "run_manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory, tokenizer_dir) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("fake_run") / "run", tokenizer_dir)


@pytest.fixture(scope="session")
def blimp_file(tmp_path_factory, shared) -> Path:
    """A blimp_results.json over the real 67 task names, accuracies spread over all three tiers."""
    tasks = {}
    for i, path in enumerate(sorted((shared / "blimp").glob("*.jsonl"))):
        first = json.loads(path.open().readline())
        correct = 400 + (i * 37) % 600
        tasks[first["UID"]] = {"correct": correct, "total": 1000, "accuracy": correct / 10,
                               "field": first["field"], "linguistics_term": first["linguistics_term"]}
    overall = sum(t["accuracy"] for t in tasks.values()) / len(tasks)
    out = tmp_path_factory.mktemp("blimp") / "blimp_results.json"
    out.write_text(json.dumps({"overall": overall, "tasks": tasks, "model": "fake", "scoring": "sum log-prob"}))
    return out


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub"), {TOKEN: "stentor"}) as server:
        yield server


@pytest.fixture
def hub_env(hub, tmp_path, monkeypatch):
    """The environment `hf upload` would read, pointed at the local server."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # huggingface_hub reads it at import
    return hub


@pytest.fixture(scope="session")
def staged(tmp_path_factory, fake_run, blimp_file) -> Path:
    return stage_repository(fake_run, tmp_path_factory.mktemp("staged") / "repo", repo_id="stentor/staged",
                            blimp=blimp_file)


# --- card --------------------------------------------------------------------------------------


def test_parameter_breakdown_matches_the_30m_card_and_real_models():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    groups = {g.name.split(" (")[0]: g for g in parameter_breakdown(STENTOR2_30M)}
    assert groups["total"].count == 30_353_920
    assert groups["embedding"].count == 4_128_768 and f"{groups['embedding'].share:.1f}" == "13.6"
    for config in (STENTOR2_30M, dict(STENTOR2_30M, num_key_value_heads=2, tie_word_embeddings=False,
                                      attention_bias=True, mlp_bias=True, num_hidden_layers=3)):
        with torch.device("meta"):
            model = LlamaForCausalLM(LlamaConfig(**config))
        real = sum(p.numel() for p in model.parameters())  # parameters() counts tied weights once
        assert parameter_breakdown(config)[-1].count == real


def test_card_is_deterministic_and_its_metadata_parses(fake_run, blimp_file, tmp_path):
    facts = ModelCardFacts.from_run(fake_run, blimp=blimp_file, repo_id="stentor/tiny")
    text = render_card(facts)
    assert text == render_card(ModelCardFacts.from_run(fake_run, blimp=blimp_file, repo_id="stentor/tiny"))
    card = ModelCard(text, ignore_metadata_errors=False)
    metrics = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert metrics == {"Best validation loss": 5.1, "Best validation perplexity": 164.02,
                       "Final-epoch validation loss": 4.1, "Final-epoch validation perplexity": 60.34,
                       "BLiMP overall accuracy": round(json.loads(blimp_file.read_text())["overall"], 2)}
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "text-generation"
    assert card.data.datasets == ["epfml/FineWeb-HQ"]  # Hub sources only; local paths are not datasets

    # every BLiMP task in exactly one tier, with its description and the tier rule respected
    blimp = json.loads(blimp_file.read_text())["tasks"]
    tiers = {"strong": facts.blimp.strong, "moderate": facts.blimp.moderate, "weak": facts.blimp.weak}
    assert sorted(t.uid for tier in tiers.values() for t in tier) == sorted(blimp)
    assert all(t.accuracy >= 85 for t in tiers["strong"]) and all(t.accuracy <= 55 for t in tiers["weak"])
    assert all(tier for tier in tiers.values()) and all(t.description for tier in tiers.values() for t in tier)
    assert f"{len(tiers['strong'])} strong (≥ 85%)" in text
    assert sum(c.tasks for c in facts.blimp.categories) == 67
    for uid in blimp:
        assert f"| `{uid}` |" in text
    # the results table marks the manifest's best step and the final one; hours from the manifest
    assert "| 80 | 1.60 | 5.0000 | 5.1000 | 164.02 | best |" in text
    assert "end of epoch 2, final" in text and "| Training time | 2.00 hours (7200 s) |" in text
    assert "| `optimizer.betas` | [0.9, 0.95] |" in text and "| **total** | **598,336** | **100%** |" in text

    first, second = plot_curves(facts.curves, tmp_path / "a.svg"), plot_curves(facts.curves, tmp_path / "b.svg")
    assert first.read_bytes() == second.read_bytes() and b"<svg" in first.read_bytes()


def test_card_config_prose_is_inserted_and_missing_prose_leaves_sections_out(fake_run, tmp_path):
    config = tmp_path / "card.md"
    config.write_text("---\nmodel_name: Stentor2-Tiny\nlicense: mit\n---\n## Intended uses\n\nResearch on *tiny* models.\n\n"
                      "## Sample outputs\n\n> Once upon a time there was\n")
    text = render_card(ModelCardFacts.from_run(fake_run, card_config=config))
    assert text.startswith("---\n") and "\n# Stentor2-Tiny\n" in text
    assert "## Intended uses\n\nResearch on *tiny* models.\n" in text
    assert "## Sample outputs\n\n> Once upon a time there was\n" in text
    assert "## Limitations" not in text and "## Notices" not in text and "BLiMP" not in text
    assert ModelCard(text).data.license == "mit"

    yaml_config = tmp_path / "card.yaml"
    yaml_config.write_text(yaml.safe_dump({"limitations": "Makes things up.", "intended_uses": None}))
    text = render_card(ModelCardFacts.from_run(fake_run, card_config=yaml_config))
    assert "## Limitations\n\nMakes things up.\n" in text and "## Intended uses" not in text


def test_the_example_stentor2_card_config_renders(fake_run):
    from stentor_hub._resources import resource_dir

    text = render_card(ModelCardFacts.from_run(fake_run, card_config=resource_dir("cards") / "examples" / "stentor2-30m.md"))
    card = ModelCard(text, ignore_metadata_errors=False)
    assert card.data.datasets == ["epfml/FineWeb-HQ", "StentorLabs/StenCore"]
    assert "\n# Stentor2-30M\n\nStentor2-30M is a small English base language model" in text
    assert text.index("## Intended uses") < text.index("## Limitations") < text.index("## Notices")


def test_missing_or_bad_facts_are_clear_errors(fake_run, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(fake_run, broken)
    manifest = json.loads((broken / "run_manifest.json").read_text())
    del manifest["best"]
    (broken / "run_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"run_manifest.json is missing \['best'\]"):
        ModelCardFacts.from_run(broken)
    shutil.copy(fake_run / "run_manifest.json", broken / "run_manifest.json")
    (broken / "training_curves.csv").write_text("step,loss\n1,2\n")
    with pytest.raises(ValueError, match="header must be exactly step,epoch,train_loss,eval_loss,eval_ppl,note"):
        ModelCardFacts.from_run(broken)
    bad_config = tmp_path / "card.yaml"
    bad_config.write_text("licence: mit\n")
    with pytest.raises(ValueError, match=r"unknown keys \['licence'\]"):
        ModelCardFacts.from_run(fake_run, card_config=bad_config)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelCardFacts.from_run(tmp_path / "nope")


def test_card_command_and_custom_template(fake_run, blimp_file, tmp_path, capsys):
    out = tmp_path / "README.md"
    assert main(["card", str(fake_run), "--blimp", str(blimp_file), "--out", str(out)]) == 0
    assert out.read_text() == render_card(ModelCardFacts.from_run(fake_run, blimp=blimp_file))
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "model_card.md.j2").write_text("# {{ f.model_name }}\n\nBest loss {{ f.manifest.best.eval_loss }}.\n")
    assert main(["card", str(fake_run), "--template", str(templates), "--out", str(out)]) == 0
    assert out.read_text().endswith("---\n\n# run\n\nBest loss 5.1.\n")
    (templates / "model_card.md.j2").write_text("{{ f.no_such_fact }}\n")
    assert main(["card", str(fake_run), "--template", str(templates), "--out", str(out)]) == 2
    assert "refers to a fact that does not exist" in capsys.readouterr().err
    assert out.read_text().endswith("Best loss 5.1.\n")  # the failed render left the previous file alone


# --- staging and checks ------------------------------------------------------------------------


def test_staged_repository_has_every_file(staged, fake_run):
    names = {p.name for p in staged.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md", "training_curves.csv",
            "training_curves.svg", "blimp_results.json", "run_manifest.json", "tokenizer_config.json",
            "tokenization_stentor.py", "tokenmonster.py", "tokenmonster.vocab"} <= names
    assert (staged / "model.safetensors").read_bytes() == (fake_run / "best" / "model.safetensors").read_bytes()
    assert (staged / "README.md").read_text().startswith("---\n") and b"<svg" in (staged / "training_curves.svg").read_bytes()


def test_checks_stop_a_publish_that_would_not_work(staged, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(staged, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "eos_token_id": 7999}))
    with pytest.raises(PublishError, match="config.json eos_token_id is 7999 but the tokenizer's is 8000"):
        check_staged(broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PublishError, match="model.safetensors does not open as safetensors"):
        check_staged(broken)


# --- push --------------------------------------------------------------------------------------


def count_commits(hub, repo_id: str) -> int:
    return len(HfApi(endpoint=hub.url, token=TOKEN).list_repo_commits(repo_id))


def test_dry_run_sends_nothing(hub_env, fake_run, tmp_path, capsys, monkeypatch):
    import socket

    connections = []
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", lambda self, address: (connections.append(address), real_connect(self, address))[1])
    before = len(hub_env.requests)
    staging = tmp_path / "staging"
    assert main(["publish", str(fake_run), "--repo-id", "stentor/dry", "--dry-run", "--staging", str(staging)]) == 0
    assert len(hub_env.requests) == before and connections == []  # not to our server, not anywhere
    out = capsys.readouterr().out
    assert "dry run: nothing was sent" in out and (staging / "README.md").is_file() and TOKEN not in out
    # the checks ran (a fresh process loaded the staged folder and generated)
    assert "checks passed: 20 tensors, 598,336 parameters, card metadata with 4 results" in out
    assert "fresh-process load generated 'Once upon a time" in out
    assert not any(TOKEN.encode() in p.read_bytes() for p in staging.iterdir())
    # a folder that is not a previous staging is never overwritten
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="is not a previous staging"):
        stage_repository(fake_run, tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_publish_end_to_end_through_the_local_hub(tiny_run, hub_env, blimp_file, tmp_path, capsys):
    """A real (short) tiny-cpu training run, published, then loaded from the server by a user."""
    run_dir = tiny_run
    args = ["publish", str(run_dir), "--repo-id", "stentor/tiny-e2e", "--blimp", str(blimp_file)]
    assert main(args) == 0
    out = capsys.readouterr().out
    head = HfApi(endpoint=hub_env.url, token=TOKEN).model_info("stentor/tiny-e2e").sha
    assert f"pushed stentor/tiny-e2e: {hub_env.url}/stentor/tiny-e2e/commit/{head}" in out
    assert count_commits(hub_env, "stentor/tiny-e2e") == 2  # the repo's initial commit + ours: one commit
    assert TOKEN not in out

    # an anonymous user in a fresh process, through the server
    user_env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    user_env.update(HF_HOME=str(tmp_path / "user_home"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    load = subprocess.run([sys.executable, "-c", _LOAD_FROM_HUB], capture_output=True, text=True, timeout=300, env=user_env)
    assert load.returncode == 0, load.stderr[-3000:]
    assert load.stdout.strip().startswith("GENERATED Once upon a time")

    # publishing the same run again (staged afresh, pushed as publish does): no empty commit
    def publish_again(card_config=None, message="again"):
        folder = stage_repository(run_dir, tmp_path / "again", repo_id="stentor/tiny-e2e", blimp=blimp_file,
                                  card_config=card_config)
        return push_folder(folder, "stentor/tiny-e2e", commit_message=message)

    unchanged = publish_again()
    assert not unchanged.created_commit and unchanged.commit_oid == head
    assert count_commits(hub_env, "stentor/tiny-e2e") == 2

    # a changed card: a second commit, and only the README changed
    card_config = tmp_path / "card.yaml"
    card_config.write_text("notices: This is a test model.\n")
    second = publish_again(card_config, "Add notices")
    api = HfApi(endpoint=hub_env.url, token=TOKEN)
    commits = api.list_repo_commits("stentor/tiny-e2e")
    assert second.created_commit and [c.title for c in commits][:1] == ["Add notices"] and len(commits) == 3

    def blobs(revision):
        return {f.path: f.blob_id for f in api.list_repo_tree("stentor/tiny-e2e", revision=revision, recursive=True)}

    new, old = blobs(commits[0].commit_id), blobs(commits[1].commit_id)
    assert {path for path in new if new[path] != old.get(path)} == {"README.md"}


_LOAD_FROM_HUB = """
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained("stentor/tiny-e2e", trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained("stentor/tiny-e2e")
inputs = tokenizer("Once upon a time", return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
assert out.shape[1] == inputs["input_ids"].shape[1] + 5
print("GENERATED", tokenizer.decode(out[0]))
"""


def test_wrong_token_and_unreachable_hub_fail_cleanly(hub_env, staged, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", WRONG_TOKEN)
    with pytest.raises(PublishError) as refused:
        push_folder(staged, "stentor/refused", commit_message="x")
    message = str(refused.value)
    assert "refused the token (HTTP 401)" in message and "HF_TOKEN" in message and WRONG_TOKEN not in message
    assert hub_env.branch_head("stentor/refused") is None  # nothing was created

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(PublishError, match="could not reach the Hub at http://127.0.0.1:9") as unreachable:
        push_folder(staged, "stentor/unreachable", commit_message="x")
    assert TOKEN not in str(unreachable.value) and "Nothing was committed" in str(unreachable.value)
    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err and WRONG_TOKEN not in captured.out + captured.err


def test_publish_command_with_a_wrong_token_exits_2_without_the_token(hub_env, fake_run, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", WRONG_TOKEN)
    assert main(["publish", str(fake_run), "--repo-id", "stentor/wrong-token"]) == 2
    captured = capsys.readouterr()
    assert "publish: error: push to stentor/wrong-token failed: the Hub at" in captured.err
    assert "(HTTP 401)" in captured.err and WRONG_TOKEN not in captured.out + captured.err


def test_push_to_a_branch_and_private(hub_env, staged):
    api = HfApi(endpoint=hub_env.url, token=TOKEN)
    first = push_folder(staged, "stentor/branchy", commit_message="main")
    on_dev = push_folder(staged, "stentor/branchy", revision="dev", commit_message="dev")
    assert not on_dev.created_commit  # dev starts at main: same content, no commit
    (changed := staged.parent / "branchy").mkdir()
    shutil.copytree(staged, changed, dirs_exist_ok=True)
    (changed / "README.md").write_text((staged / "README.md").read_text() + "\nOn dev.\n")
    on_dev = push_folder(changed, "stentor/branchy", revision="dev", commit_message="dev")
    assert on_dev.created_commit and api.model_info("stentor/branchy", revision="dev").sha == on_dev.commit_oid
    assert api.model_info("stentor/branchy").sha == first.commit_oid
    push_folder(staged, "stentor/hidden", private=True, commit_message="private")
    assert api.model_info("stentor/hidden").private is True
    with pytest.raises(Exception, match="Repository Not Found"):
        HfApi(endpoint=hub_env.url, token=False).model_info("stentor/hidden")


def test_push_killed_mid_upload_leaves_the_previous_commit(staged, tmp_path, monkeypatch):
    """The server process dies during the LFS upload of new weights: after a restart the repo is at
    the commit before, and publishing again works."""
    from safetensors.torch import load_file, save_file

    from hub_server import DIE_DURING_LFS_UPLOAD, start_server_process

    storage = tmp_path / "storage"
    server, url = start_server_process(storage, {TOKEN: "stentor"})
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    changed = tmp_path / "changed"
    shutil.copytree(staged, changed)
    tensors = {k: v + 0.5 for k, v in load_file(staged / "model.safetensors").items()}
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    try:
        before = push_folder(staged, "stentor/crash", commit_message="v1").commit_oid
        (storage / DIE_DURING_LFS_UPLOAD).touch()
        pusher = subprocess.Popen(
            [sys.executable, "-c", "import sys; from stentor_hub.publish import push_folder; "
             "push_folder(sys.argv[1], 'stentor/crash', commit_message='v2')", str(changed)],
            env={**os.environ, "HF_HUB_DISABLE_XET": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert server.wait(timeout=120) == -9
        pusher.kill()  # it is retrying against a dead server
        pusher.wait()
    finally:
        server.kill()
        server.wait()
    server, url = start_server_process(storage, {TOKEN: "stentor"})
    monkeypatch.setenv("HF_ENDPOINT", url)
    try:
        api = HfApi(endpoint=url, token=TOKEN)
        assert api.model_info("stentor/crash").sha == before
        assert [c.title for c in api.list_repo_commits("stentor/crash")] == ["v1", "initial commit"]
        after = push_folder(changed, "stentor/crash", commit_message="v2")
        assert after.created_commit and after.commit_oid != before
    finally:
        server.kill()
        server.wait()

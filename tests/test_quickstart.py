"""`stentor-hub quickstart` end to end (a short budget through --max-steps, same code path), pushed to
the local Hub server; and the Stentor2-30M card's Quick Start snippet run as written against the
repository the quickstart staged, with only the repository name replaced by the local path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import HfApi, ModelCard

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

TOKEN = "hf_QUICKSTARTtest_SECRET_5656565656"  # recognizable: it must never show up anywhere
REPO_ID = "stentor/quickstart-e2e"
MAX_STEPS = 20
BLIMP_LIMIT = 5
PROMPT = "Once upon a time"

# The Quick Start code of the StentorLabs/Stentor2-30M model card, verbatim.
CARD_QUICK_START = '''\
from transformers import AutoModelForCausalLM, AutoTokenizer
import torch

model_name = "StentorLabs/Stentor2-30M"
tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(model_name, torch_dtype=torch.float16 if torch.cuda.is_available() else torch.float32)
model.eval()

prompt = "The history of science"
inputs = tokenizer.encode(prompt, return_tensors="pt")
with torch.no_grad():
    outputs = model.generate(inputs, max_new_tokens=50, do_sample=True, top_p=0.8, temperature=1.0, repetition_penalty=1.1, pad_token_id=tokenizer.pad_token_id)
print(tokenizer.decode(outputs[0], skip_special_tokens=True))
'''


def quickstart(workdir: Path, *args: str, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    """``stentor-hub quickstart`` in a fresh process, as a user runs it."""
    cmd = [sys.executable, "-m", "stentor_hub", "quickstart", "--workdir", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=workdir.parent)


def clean_env(tmp: Path, **extra: str) -> dict:
    """The caller's environment without any Hugging Face login, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT")}
    env.update(HF_HOME=str(tmp / "hf_home"), TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_XET="1")
    # one torch thread: on a CPU shared with other busy processes, two-thread OpenMP kernels run several
    # times slower than one thread (measured on a busy 2-core machine: 20 training steps took 88 s with
    # two threads, 9 to 30 s with one)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory, shared, train_cache_dir):
    """One real quickstart (20 training steps, 5 BLiMP pairs per task) pushed to a local Hub."""
    root = tmp_path_factory.mktemp("quickstart")
    with HubServer(root / "hub", {TOKEN: "stentor"}) as hub:
        env = clean_env(root, HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, STENTOR_SHARED=str(shared))
        started = time.perf_counter()
        proc = quickstart(root / "work", "--repo-id", REPO_ID, "--push", "--max-steps", str(MAX_STEPS),
                          "--blimp-limit", str(BLIMP_LIMIT), "--prompt", PROMPT,
                          "--set", f"data.cache_dir={train_cache_dir}", env=env)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            pytest.fail(f"quickstart failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
        api = HfApi(endpoint=hub.url, token=TOKEN)
        hub_files = sorted(api.list_repo_files(REPO_ID))
        head = hub.branch_head(REPO_ID)
    workdir = root / "work"
    return SimpleNamespace(proc=proc, workdir=workdir, summary=json.loads((workdir / "summary.json").read_text()),
                           hub_files=hub_files, head=head, seconds=seconds)


def test_quickstart_end_to_end(quickstart_run):
    run = quickstart_run
    work, summary = run.workdir, run.summary
    run_dir, repo = Path(summary["run_dir"]), Path(summary["repository"])

    # trained through the recipe's code path: the run folder the training program writes
    for name in ("final", "best", "tokenizer", "checkpoints", "training_curves.csv", "run_manifest.json"):
        assert (run_dir / name).exists(), name
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["recipe_name"] == "tiny-cpu"
    assert manifest["training"]["steps"] == MAX_STEPS and manifest["training"]["stopped_by"] == "max_steps"
    assert 1_000_000 < manifest["model"]["parameters"] < 3_000_000

    # it learned something, and the evaluation API agrees with the Trainer on the same blocks
    ppl = json.loads((work / "eval" / "perplexity.json").read_text())
    assert ppl["eval_loss"] < summary["training"]["start_eval_loss"] - 0.5
    assert ppl["eval_loss"] == pytest.approx(manifest["best"]["eval_loss"], abs=0.02)
    assert ppl["blocks"] == manifest["data"]["eval_blocks"]

    blimp = json.loads((work / "eval" / "blimp_results.json").read_text())
    assert blimp["num_tasks"] == 67 and blimp["num_pairs"] == 67 * BLIMP_LIMIT and blimp["limit"] == BLIMP_LIMIT
    assert all(t["total"] == BLIMP_LIMIT for t in blimp["tasks"].values())
    assert 0 <= blimp["overall"] <= 100

    # the staged repository: everything the publisher promises, and the card tells the facts
    expected = {"README.md", "model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json",
                "tokenization_stentor.py", "tokenmonster.py", "training_curves.csv", "training_curves.svg",
                "run_manifest.json", "blimp_results.json"}
    assert expected <= set(summary["repository_files"])
    card = (repo / "README.md").read_text()
    assert f'"{REPO_ID}"' in card and "BLiMP" in card and "quickstart" in card
    metrics = {r.metric_name: r.metric_value for r in ModelCard(card).data.eval_results}
    assert metrics["BLiMP overall accuracy"] == pytest.approx(blimp["overall"], abs=0.006)
    assert metrics["Best validation loss"] == pytest.approx(manifest["best"]["eval_loss"], abs=1e-4)

    # pushed in one commit: the Hub holds exactly the staged files at the reported commit
    assert summary["pushed"]["commit_oid"] == run.head
    assert set(summary["repository_files"]) <= set(run.hub_files)
    assert set(run.hub_files) - set(summary["repository_files"]) <= {".gitattributes"}

    # the sample came from the reloaded repository, with the card's settings
    sample = summary["sample"]
    assert sample["text"].startswith(PROMPT) and len(sample["text"]) > len(PROMPT)
    assert (sample["top_p"], sample["temperature"], sample["repetition_penalty"]) == (0.8, 1.0, 1.1)
    assert (work / "sample.txt").read_text().strip() == sample["text"].strip()

    # the summary on the terminal says where things are and what came out
    out = run.proc.stdout
    for text in ("quickstart finished in", str(work), "perplexity", f"{ppl['eval_ppl']:.2f}", "BLiMP",
                 summary["pushed"]["commit_url"], sample["text"].splitlines()[0]):
        assert text in out, text

    # the token never shows up: not on the terminal, not in any file written
    assert TOKEN not in run.proc.stdout + run.proc.stderr
    for path in work.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert TOKEN.encode() not in path.read_bytes(), path
    print(f"quickstart with --max-steps {MAX_STEPS} --blimp-limit {BLIMP_LIMIT}: {run.seconds:.1f}s")


def test_card_quick_start_snippet_runs_unchanged_on_the_quickstart_repository(quickstart_run, tmp_path):
    repo = Path(quickstart_run.summary["repository"])
    code = CARD_QUICK_START.replace('"StentorLabs/Stentor2-30M"', json.dumps(str(repo)))
    assert code.count(str(repo)) == 1 and code.replace(json.dumps(str(repo)), '"StentorLabs/Stentor2-30M"') == CARD_QUICK_START
    env = clean_env(tmp_path, HF_HUB_OFFLINE="1")  # a local folder: nothing may come from a network
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("The history of science"), proc.stdout
    assert "Traceback" not in proc.stderr


def test_quickstart_offline_without_data_says_what_it_needs(tmp_path):
    empty = tmp_path / "no-shared-here"
    empty.mkdir()
    env = clean_env(tmp_path, HF_HUB_OFFLINE="1", STENTOR_SHARED=str(empty), HOME=str(tmp_path / "home"))
    env.pop("STENTOR_VOCAB_DIR", None)
    started = time.perf_counter()
    proc = quickstart(tmp_path / "work", env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    for needed in ("epfml/FineWeb-HQ", "english-8000-strict-nocapcode-v1", "nyu-mll/blimp", "--corpus PATH", "--vocab PATH",
                   "--blimp DIR", "STENTOR_SHARED=", "unreachable"):
        assert needed in err, needed
    assert "Traceback" not in err
    assert not (tmp_path / "work").exists()  # nothing written
    assert time.perf_counter() - started < 60  # no retry loops against an unreachable Hub


def test_quickstart_refuses_before_training(tmp_path, shared):
    env = clean_env(tmp_path, STENTOR_SHARED=str(shared))

    proc = quickstart(tmp_path / "a", "--push", env=env, timeout=120)
    assert proc.returncode == 2 and "--push needs --repo-id OWNER/NAME" in proc.stderr

    proc = quickstart(tmp_path / "b", "--push", "--repo-id", "me/tiny", env=env, timeout=120)
    assert proc.returncode == 2
    assert "HF_TOKEN" in proc.stderr and "hf auth login" in proc.stderr and not (tmp_path / "b").exists()

    proc = quickstart(tmp_path / "c", "--corpus", str(tmp_path / "missing.txt"), env=env, timeout=120)
    assert proc.returncode == 2 and f"{tmp_path / 'missing.txt'} does not exist" in proc.stderr

    foreign = tmp_path / "d"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    proc = quickstart(foreign, env=env, timeout=120)
    assert proc.returncode == 2 and "did not write" in proc.stderr
    assert (foreign / "thesis.tex").read_text() == "precious" and sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_default_recipe_is_tiny_cpu_unchanged(shared):
    """Without --max-steps or --set, quickstart trains the tiny-cpu recipe exactly as shipped."""
    from stentor_hub.quickstart import build_recipe, budget_overrides, resolve_inputs
    from stentor_hub.recipes.config import load_recipe

    recipe = load_recipe("tiny-cpu")
    inputs, pairs = resolve_inputs(None, None, None, 2, recipe)
    assert build_recipe(inputs) == recipe
    assert len(pairs) == 67 and all(len(p) == 2 for p in pairs.values())
    short = build_recipe(inputs, max_steps=MAX_STEPS)
    assert short["training"]["max_steps"] == MAX_STEPS and short["schedule"]["total_steps"] == MAX_STEPS
    assert short["training"]["eval_steps"] == MAX_STEPS // 2 and short["training"]["best_eval_start_step"] <= MAX_STEPS // 2
    assert budget_overrides(recipe, 400)[0] == "training.max_steps=400"


def test_single_document_corpus_is_refused_before_anything_is_written(tmp_path, shared):
    corpus = tmp_path / "one-doc.txt"
    corpus.write_text("A line of text.\nAnother line, no blank line between them.\n" * 200)
    proc = quickstart(tmp_path / "work", "--corpus", str(corpus), env=clean_env(tmp_path, STENTOR_SHARED=str(shared)),
                      timeout=120)
    assert proc.returncode == 2
    assert "single document" in proc.stderr and "data.eval_sources" in proc.stderr
    assert not (tmp_path / "work").exists()


def test_held_out_perplexity_blocks_are_the_trainers_eval_blocks(tokenizer, shared, tmp_path):
    """With --corpus and no eval source, quickstart's perplexity reads the corpus's first
    ``max_eval_samples`` blocks: exactly the blocks the training data loader held out."""
    import torch

    from stentor_hub.recipes.data import build_eval_blocks, load_token_data

    source = {"path": str(shared / "corpora" / "gutenberg_val.txt"), "max_doc_chars": 20000}
    data = load_token_data([source], [], tokenizer, 128, 4096, 8, cache_dir=tmp_path)
    assert data.eval_held_out
    blocks = build_eval_blocks(source, tokenizer, 128, max_samples=8)
    assert blocks.shape == (8, 128)
    assert torch.equal(blocks.flatten(), torch.from_numpy(data.eval.astype("int64")))


def test_threads_one_on_a_busy_cpu_else_torch_default(monkeypatch):
    import torch

    from stentor_hub import quickstart as qs

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    threads, why = qs.choose_threads(None)
    assert threads == 1 and "load average 5.0 on 2 cores" in why and "--threads 2" in why
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.3, 0.3))
    assert qs.choose_threads(None) == (2, "torch's default")
    assert qs.choose_threads(3) == (3, "--threads")

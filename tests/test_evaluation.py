"""BLiMP scoring (as lm-evaluation-harness scores it) and perplexity (as the Trainer's eval_loss),
checked against independent computations on a tiny Llama with fixed random weights."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from stentor_hub.cli import main
from stentor_hub.evaluation import (
    BLIMP_TASKS,
    blimp_loglikelihoods,
    blimp_prefix_token_id,
    evaluate_blimp,
    load_blimp,
    sentence_loglikelihoods,
)

TASKS = ["adjunct_island", "determiner_noun_agreement_1", "wh_vs_that_with_gap"]


@pytest.fixture(scope="session")
def tiny_model():
    """A 2-layer Llama over the full 8064-id vocabulary with fixed (seeded) random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1234)
    config = LlamaConfig(
        vocab_size=8064, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
        bos_token_id=8001, eos_token_id=8000, pad_token_id=8000,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the default init, so sentences score far apart
        for p in model.parameters():
            p.mul_(4.0)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_model, tokenizer):
    """The tiny model saved as a model folder with its tokenizer (as a published repo)."""
    folder = tmp_path_factory.mktemp("tiny_model") / "model"
    tiny_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def blimp_dir(shared):
    return shared / "blimp"


def reference_loglikelihood(model, ids: list[int]) -> float:
    """log P(ids[1:] | ids[0]) token by token: one unpadded sequence, float64 log-softmax."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    total = 0.0
    for t in range(len(ids) - 1):
        total += torch.log_softmax(logits[t], dim=-1)[ids[t + 1]].item()
    return total


def test_prefix_token_is_bos_else_eos(tokenizer):
    assert blimp_prefix_token_id(tokenizer) == tokenizer.bos_token_id == 8001
    no_bos = copy.deepcopy(tokenizer)
    no_bos.bos_token = None
    assert no_bos.bos_token_id is None
    assert blimp_prefix_token_id(no_bos) == tokenizer.eos_token_id == 8000
    assert blimp_prefix_token_id(tokenizer, prefix_token_id=8000) == 8000


def test_sentence_scores_match_token_by_token_reference(tiny_model, tokenizer, blimp_dir):
    pairs = load_blimp(blimp_dir, tasks=TASKS, limit=4)
    sentences = [s for task in pairs.values() for p in task for s in (p.good, p.bad)]
    scores = sentence_loglikelihoods(tiny_model, tokenizer, sentences, batch_size=5)
    for sentence, score in zip(sentences, scores):
        # lm-eval: continuation " " + sentence tokenized alone; context = [BOS]
        ids = [8001] + tokenizer(" " + sentence, add_special_tokens=False)["input_ids"]
        assert len(ids) > 3
        assert score == pytest.approx(reference_loglikelihood(tiny_model, ids), abs=1e-4)
    # the prefix token matters: with EOS as context the scores change
    eos_scores = sentence_loglikelihoods(tiny_model, tokenizer, sentences[:4], prefix_token_id=8000)
    for sentence, score in zip(sentences[:4], eos_scores):
        ids = [8000] + tokenizer.encode(" " + sentence)
        assert score == pytest.approx(reference_loglikelihood(tiny_model, ids), abs=1e-4)
    assert eos_scores != scores[:4]


def test_results_do_not_depend_on_batch_size_or_padding_side(tiny_model, tokenizer, blimp_dir):
    pairs = load_blimp(blimp_dir, tasks=TASKS, limit=15)
    one = blimp_loglikelihoods(tiny_model, tokenizer, pairs, batch_size=1)
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    many = blimp_loglikelihoods(tiny_model, left, pairs, batch_size=64)
    assert one.keys() == many.keys() == set(TASKS)
    for uid in TASKS:
        assert len(one[uid]) == 15
        for (good1, bad1), (good64, bad64) in zip(one[uid], many[uid]):
            assert good1 == pytest.approx(good64, abs=1e-4) and bad1 == pytest.approx(bad64, abs=1e-4)
    acc1 = evaluate_blimp(tiny_model, tokenizer, pairs, batch_size=1, progress=False)
    acc64 = evaluate_blimp(tiny_model, tokenizer, pairs, batch_size=64, progress=False)
    assert acc1["tasks"] == acc64["tasks"] and acc1["overall"] == acc64["overall"]


def test_accuracy_ties_and_unweighted_overall(tiny_model, tokenizer, tmp_path):
    rows_a = [  # a tie (identical sentences) counts as correct, as lm-eval's argmax picks the first choice
        {"sentence_good": "The cat sleeps.", "sentence_bad": "The cat sleeps.", "field": "f", "linguistics_term": "t", "pairID": "0"},
        {"sentence_good": "The dogs bark.", "sentence_bad": "The dogs barks.", "field": "f", "linguistics_term": "t", "pairID": "1"},
    ]
    rows_b = [{"sentence_good": f"Mary saw {n} birds.", "sentence_bad": f"Mary saw {n} bird.", "field": "g",
               "linguistics_term": "u", "pairID": str(i)} for i, n in enumerate(["two", "three", "many", "several"])]
    for name, rows in (("task_a", rows_a), ("task_b", rows_b)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = load_blimp(tmp_path)
    lls = blimp_loglikelihoods(tiny_model, tokenizer, pairs)
    assert lls["task_a"][0][0] == lls["task_a"][0][1]
    results = evaluate_blimp(tiny_model, tokenizer, tmp_path, progress=False, model_name="tiny")
    for uid in ("task_a", "task_b"):
        expected = sum(good >= bad for good, bad in lls[uid])
        task = results["tasks"][uid]
        assert task["correct"] == expected and task["total"] == len(pairs[uid])
        assert task["accuracy"] == pytest.approx(100 * expected / task["total"])
    assert results["tasks"]["task_a"]["correct"] >= 1
    assert results["tasks"]["task_b"]["field"] == "g" and results["tasks"]["task_b"]["linguistics_term"] == "u"
    accs = [results["tasks"][u]["accuracy"] for u in ("task_a", "task_b")]
    assert results["overall"] == pytest.approx(sum(accs) / 2)  # not weighted by the 2 vs 4 pairs
    assert results["model"] == "tiny" and results["num_pairs"] == 6 and results["complete"] is False
    assert results["prefix_token_id"] == 8001 and "8001" in results["scoring"]


def test_task_filtering_and_limit(blimp_dir):
    every = load_blimp(blimp_dir, limit=1)
    assert list(every) == list(BLIMP_TASKS) and len(BLIMP_TASKS) == 67
    some = load_blimp(blimp_dir, tasks=["wh_island", "causative"], limit=3)
    assert list(some) == ["causative", "wh_island"]
    assert [len(v) for v in some.values()] == [3, 3]
    pair = some["causative"][0]
    assert pair.uid == "causative" and pair.field and pair.linguistics_term and pair.good != pair.bad
    assert len(load_blimp(blimp_dir / "causative.jsonl")["causative"]) == 1000
    with pytest.raises(ValueError, match="unknown BLiMP task.*no_such_task.*available: adjunct_island"):
        load_blimp(blimp_dir, tasks=["causative", "no_such_task"])
    with pytest.raises(ValueError, match="limit must be a positive"):
        load_blimp(blimp_dir, limit=0)


def test_malformed_lines_name_file_and_line(tmp_path):
    good = json.dumps({"sentence_good": "A b.", "sentence_bad": "B a."})
    bad_json = tmp_path / "bad_json.jsonl"
    bad_json.write_text(f"{good}\n{good}\n{{\"sentence_good\": \"oops\"\n")
    with pytest.raises(ValueError, match=rf"{bad_json}:3: not valid JSON"):
        load_blimp(bad_json)
    missing = tmp_path / "missing_key.jsonl"
    missing.write_text(f"{good}\n\n" + json.dumps({"sentence_good": "A b."}) + "\n")
    with pytest.raises(ValueError, match=rf"{missing}:3: 'sentence_bad' is missing"):
        load_blimp(missing)
    not_object = tmp_path / "list.jsonl"
    not_object.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=rf"{not_object}:1: expected a JSON object"):
        load_blimp(not_object)


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="BLiMP data not found: .*nowhere"):
        load_blimp(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=rf"no BLiMP \*.jsonl files in {tmp_path}"):
        load_blimp(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="empty.jsonl: no BLiMP pairs"):
        load_blimp(tmp_path)


def test_cli_blimp_writes_results(tiny_model_dir, tiny_model, tokenizer, blimp_dir, tmp_path, capsys):
    out = tmp_path / "results" / "blimp_results.json"
    rc = main(["eval", "blimp", str(tiny_model_dir), "--data", str(blimp_dir), "--out", str(out),
               "--tasks", "causative,wh_island", "--limit", "6", "--batch-size", "4", "--device", "cpu", "--no-progress"])
    assert rc == 0
    results = json.loads(out.read_text())
    assert set(results["tasks"]) == {"causative", "wh_island"}
    for task in results["tasks"].values():
        assert set(task) == {"correct", "total", "accuracy", "field", "linguistics_term"}
        assert task["total"] == 6 and 0 <= task["correct"] <= 6
    # the same numbers as the Python API on the in-memory model
    expected = evaluate_blimp(tiny_model, tokenizer, blimp_dir, tasks=["causative", "wh_island"], limit=6, progress=False)
    assert results["tasks"] == expected["tasks"] and results["overall"] == pytest.approx(expected["overall"])
    assert results["model"] == str(tiny_model_dir) and results["limit"] == 6 and results["device"] == "cpu"
    assert "BLiMP overall" in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["blimp_results.json"]  # no temporary files left


def test_cli_bad_input_exits_2_and_keeps_previous_results(tiny_model_dir, blimp_dir, tmp_path, capsys):
    out = tmp_path / "blimp_results.json"
    previous = {"overall": 61.5, "tasks": {}, "scoring": "an earlier run", "previous": True}
    out.write_text(json.dumps(previous))
    args = ["eval", "blimp", str(tiny_model_dir), "--out", str(out), "--no-progress"]
    assert main(args + ["--data", str(blimp_dir), "--tasks", "nope"]) == 2
    assert "unknown BLiMP task(s) nope" in capsys.readouterr().err
    assert main(args + ["--data", str(tmp_path / "missing")]) == 2
    assert "BLiMP data not found" in capsys.readouterr().err
    assert main(["eval", "blimp", str(tmp_path / "no_model"), "--data", str(blimp_dir), "--out", str(out)]) == 2
    assert "model not found" in capsys.readouterr().err
    assert json.loads(out.read_text()) == previous


# ---------------------------------------------------------------------------------------------
# perplexity


def test_perplexity_equals_trainer_eval_loss(tiny_model, tokenizer, shared, tmp_path):
    """The same blocks through transformers.Trainer.evaluate() give the same eval_loss."""
    from transformers import Trainer, TrainingArguments

    from stentor_hub.evaluation import evaluate_perplexity
    from stentor_hub.recipes.data import build_eval_blocks

    sample = shared / "corpora" / "sample.txt"
    blocks = build_eval_blocks(sample, tokenizer, 32, max_samples=13)
    assert blocks.shape == (13, 32)
    result = evaluate_perplexity(tiny_model, tokenizer, sample, block_size=32, max_samples=13, batch_size=4)

    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), per_device_eval_batch_size=5, report_to=[], use_cpu=True)
    trainer = Trainer(model=tiny_model, args=args, eval_dataset=[{"input_ids": b, "labels": b} for b in blocks])
    trainer_loss = trainer.evaluate()["eval_loss"]

    assert result["blocks"] == 13 and result["tokens"] == 13 * 31 and result["block_size"] == 32
    assert result["eval_loss"] == pytest.approx(trainer_loss, rel=1e-5)
    assert result["eval_ppl"] == pytest.approx(math.exp(trainer_loss), rel=1e-5)
    assert result["eval_loss"] > 1.0  # a random model: far from zero, so agreement is not trivial
    # and independently: the mean over every predicted token, one block at a time
    with torch.no_grad():
        losses = [torch.nn.functional.cross_entropy(tiny_model(b[None]).logits[0, :-1].double(), b[1:], reduction="sum")
                  for b in blocks]
    assert result["eval_loss"] == pytest.approx(float(sum(losses)) / (13 * 31), rel=1e-5)


def test_cli_perplexity_on_a_run_checkpoint(tiny_model, tokenizer, shared, tmp_path, capsys):
    """RUN_DIR/final: tokenizer from RUN_DIR/tokenizer, block size from RUN_DIR/run_manifest.json."""
    from stentor_hub.evaluation import evaluate_perplexity

    run_dir = tmp_path / "run"
    tiny_model.save_pretrained(run_dir / "final")
    tokenizer.save_pretrained(run_dir / "tokenizer")
    (run_dir / "run_manifest.json").write_text(json.dumps({"schema_version": 1, "data": {"block_size": 24}}))
    sample = shared / "corpora" / "sample.txt"
    out = tmp_path / "ppl.json"
    rc = main(["eval", "perplexity", str(run_dir / "final"), "--data", f"{{path: {sample}, max_chars: 20000}}",
               "--out", str(out), "--max-samples", "5", "--no-progress"])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["block_size"] == 24 and result["blocks"] == 5
    assert result["data"]["max_chars"] == 20000 and result["data"]["path"] == str(sample)
    expected = evaluate_perplexity(tiny_model, tokenizer, {"path": str(sample), "max_chars": 20000}, 24, max_samples=5)
    assert result["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-6)
    assert "perplexity" in capsys.readouterr().out

    assert main(["eval", "perplexity", str(run_dir), "--data", str(sample), "--out", str(out)]) == 2
    assert "is a training run folder; pass" in capsys.readouterr().err
    assert main(["eval", "perplexity", str(run_dir / "final"), "--data", str(sample), "--out", str(out),
                 "--block-size", "4096"]) == 2
    assert "longer than the model's window of 64" in capsys.readouterr().err
    assert main(["eval", "perplexity", str(run_dir / "final"), "--data", str(tmp_path / "none.txt"), "--out", str(out)]) == 2
    assert "none.txt" in capsys.readouterr().err
    assert main(["eval", "perplexity", str(run_dir / "final"), "--data", "{max_chars: 5}", "--out", str(out)]) == 2
    assert "a mapping needs a 'path' key" in capsys.readouterr().err
    assert json.loads(out.read_text()) == result  # failed runs left the earlier results alone


def test_sentence_longer_than_the_window_is_a_clear_error(tiny_model, tokenizer):
    long_sentence = " ".join(["The quick brown fox jumps over the lazy dog."] * 12)
    assert len(tokenizer.encode(" " + long_sentence)) > tiny_model.config.max_position_embeddings
    with pytest.raises(ValueError, match="does not fit the model's window of 64"):
        sentence_loglikelihoods(tiny_model, tokenizer, ["A short one.", long_sentence])


def test_perplexity_reproduces_the_training_runs_eval_loss(tiny_run, tmp_path):
    """`stentor-hub eval perplexity RUN_DIR/best` on the run's eval source (the recipe's source
    mapping, verbatim) gives the eval_loss the Trainer measured for that checkpoint; the block
    size comes from the run's manifest."""
    manifest = json.loads((tiny_run / "run_manifest.json").read_text())
    recipe_data = manifest["recipe"]["data"]
    assert len(recipe_data["eval_sources"]) == 1
    out = tmp_path / "ppl.json"
    assert main(["eval", "perplexity", str(tiny_run / "best"), "--data", json.dumps(recipe_data["eval_sources"][0]),
                 "--out", str(out), "--max-samples", str(recipe_data["max_eval_samples"]), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["block_size"] == manifest["data"]["block_size"]
    assert result["blocks"] == manifest["data"]["eval_blocks"]
    # bf16 autocast (if the run used it) perturbs the Trainer's number slightly
    tolerance = 1e-5 if manifest["hardware"]["mixed_precision"] == "no" else 1e-3
    assert result["eval_loss"] == pytest.approx(manifest["best"]["eval_loss"], rel=tolerance)


def test_perplexity_on_the_runs_prepared_shards_is_the_trainers_eval_loss(tiny_run, tmp_path):
    """The run's prepared folder (run_manifest.json: data.cache_file is its index) as --data: the
    eval split the Trainer evaluated on, the same blocks as the eval source tokenized afresh."""
    from pathlib import Path

    from stentor_hub.recipes.data import build_eval_blocks
    from stentor_hub.tokenizer import load_tokenizer

    manifest = json.loads((tiny_run / "run_manifest.json").read_text())
    shards = Path(manifest["data"]["cache_file"]).parent
    recipe_data = manifest["recipe"]["data"]
    tokenizer = load_tokenizer(tiny_run / "tokenizer")
    from_shards = build_eval_blocks(str(shards), tokenizer, 128, max_samples=recipe_data["max_eval_samples"])
    afresh = build_eval_blocks(recipe_data["eval_sources"][0], tokenizer, 128, max_samples=recipe_data["max_eval_samples"])
    assert from_shards.shape == (manifest["data"]["eval_blocks"], 128) and torch.equal(from_shards, afresh)
    out = tmp_path / "ppl.json"
    assert main(["eval", "perplexity", str(tiny_run / "best"), "--data", str(shards), "--out", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["blocks"] == manifest["data"]["eval_blocks"]
    tolerance = 1e-5 if manifest["hardware"]["mixed_precision"] == "no" else 1e-3
    assert result["eval_loss"] == pytest.approx(manifest["best"]["eval_loss"], rel=tolerance)


def test_cli_blimp_on_a_training_run_checkpoint(tiny_run, blimp_dir, tmp_path):
    out = tmp_path / "blimp_results.json"
    assert main(["eval", "blimp", str(tiny_run / "final"), "--data", str(blimp_dir), "--out", str(out),
                 "--tasks", "anaphor_number_agreement", "--limit", "10", "--no-progress"]) == 0
    task = json.loads(out.read_text())["tasks"]["anaphor_number_agreement"]
    assert task["total"] == 10 and task["field"] == "morphology"


def test_blimp_from_the_hub_dataset_and_a_hub_model(tiny_model_dir, blimp_dir, tmp_path, monkeypatch):
    """--data nyu-mll/blimp: the dataset as the Hub lays it out (one parquet config per task),
    served by the local Hub server and read through datasets, scores as the local files do;
    and MODEL given as a Hub id (remote-code tokenizer included) scores as the local folder."""
    import os
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    from hub_server import HubServer

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # read at import; the server speaks LFS only
    tasks = ["adjunct_island", "anaphor_gender_agreement"]
    token = "hf_test_nyu_mll_owner"
    with HubServer(tmp_path / "hub", {token: "nyu-mll"}) as hub:
        api = HfApi(endpoint=hub.url, token=token)
        api.create_repo("nyu-mll/blimp", repo_type="dataset")
        operations, configs = [], []
        for uid in tasks:
            rows = [json.loads(line) for line in (blimp_dir / f"{uid}.jsonl").read_text(encoding="utf-8").split("\n") if line.strip()]
            pq.write_table(pa.Table.from_pylist(rows[:40]), tmp_path / f"{uid}.parquet")
            operations.append(CommitOperationAdd(f"{uid}/train-00000-of-00001.parquet", str(tmp_path / f"{uid}.parquet")))
            configs.append(f"- config_name: {uid}\n  data_files:\n  - split: train\n    path: {uid}/train-*")
        operations.append(CommitOperationAdd("README.md", ("---\nconfigs:\n" + "\n".join(configs) + "\n---\n# BLiMP\n").encode()))
        api.create_commit("nyu-mll/blimp", operations, commit_message="BLiMP as on the Hub", repo_type="dataset")
        api.create_repo("nyu-mll/tiny-stentor")
        api.upload_folder(folder_path=str(tiny_model_dir), repo_id="nyu-mll/tiny-stentor")

        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf_home"))
        outputs = {}
        for label, model, data in (
            ("hub", "nyu-mll/tiny-stentor", "nyu-mll/blimp"),
            ("local", str(tiny_model_dir), str(blimp_dir)),
        ):
            out = tmp_path / f"{label}.json"
            result = subprocess.run(
                [sys.executable, "-m", "stentor_hub", "eval", "blimp", model, "--data", data,
                 "--tasks", ",".join(tasks), "--limit", "10", "--out", str(out)],
                capture_output=True, text=True, env=env, timeout=600,
            )
            assert result.returncode == 0, result.stderr[-3000:]
            outputs[label] = json.loads(out.read_text())
    assert any(path.startswith("/datasets/nyu-mll/blimp/resolve/") for _, path in hub.requests)
    assert any(path.startswith("/nyu-mll/tiny-stentor/resolve/") and path.endswith("model.safetensors") for _, path in hub.requests)
    assert outputs["hub"]["model"] == "nyu-mll/tiny-stentor"
    for uid in tasks:
        assert outputs["hub"]["tasks"][uid] == outputs["local"]["tasks"][uid]
        assert outputs["hub"]["tasks"][uid]["total"] == 10
    assert outputs["hub"]["overall"] == outputs["local"]["overall"]

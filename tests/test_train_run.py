"""A real tiny-cpu training run: the output directory contract that eval, publisher and quickstart read."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from stentor_hub.run_dir import CURVES_HEADER as EXPECTED_HEADER  # its value is pinned in test_run_dir.py


def test_run_dir_has_every_output(tiny_run):
    for name in ("final", "best"):
        files = {p.name for p in (tiny_run / name).iterdir()}
        assert {"model.safetensors", "config.json", "generation_config.json"} <= files
    assert (tiny_run / "tokenizer" / "tokenizer_config.json").is_file()
    assert any(p.name.startswith("checkpoint-") for p in (tiny_run / "checkpoints").iterdir())
    leftovers = [p.name for p in tiny_run.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary folders or files left behind


def test_manifest_records_the_run(tiny_run):
    manifest = json.loads((tiny_run / "run_manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["recipe_name"] == "tiny-cpu"
    assert manifest["recipe"]["training"]["max_steps"] == 40  # the resolved config, overrides applied
    assert manifest["model"]["architecture"] == "LlamaForCausalLM"
    assert 1_000_000 < manifest["model"]["parameters"] < 3_000_000
    assert set(manifest["versions"]) >= {"python", "torch", "transformers", "accelerate", "datasets", "stentor_hub"}
    hw = manifest["hardware"]
    assert hw["device"] == "cpu" and hw["num_processes"] == 1 and hw["mixed_precision"] in ("bf16", "no")
    assert manifest["t4_recipe"] == {"enabled": True, "fp32_norm_modules": 9, "fp32_layers": 2, "softmax_modules_patched": 0}
    training, data = manifest["training"], manifest["data"]
    assert training["steps"] == 40 and training["stopped_by"] == "max_steps"
    assert training["tokens_seen"] == 40 * 16 * 128 == 40 * training["tokens_per_step"]
    assert data["block_size"] == 128 and data["train_blocks"] * 128 == data["train_tokens"] <= data["source_tokens"]
    assert data["eval_blocks"] == 64
    assert data["source_tokens_by_source"] == [data["source_tokens"]]  # one train source: all of it
    assert manifest["best"]["step"] in (20, 40)
    assert manifest["final"]["step"] == 40
    assert manifest["final"]["eval_ppl"] == pytest.approx(math.exp(manifest["final"]["eval_loss"]))
    assert manifest["started_at"] <= manifest["finished_at"]


def test_curves_csv_and_learning(tiny_run):
    with open(tiny_run / "training_curves.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == EXPECTED_HEADER
        rows = list(reader)
    train_steps = [int(r["step"]) for r in rows if r["train_loss"]]
    evals = [(int(r["step"]), float(r["eval_loss"])) for r in rows if r["eval_loss"]]
    assert train_steps == [10, 20, 30, 40]
    assert [s for s, _ in evals] == [0, 20, 40]
    assert evals[-1][1] < evals[0][1] - 0.5  # it learns: eval loss well below the start
    best = [r for r in rows if r["note"] == "best"]
    manifest = json.loads((tiny_run / "run_manifest.json").read_text())
    assert int(best[-1]["step"]) == manifest["best"]["step"]
    assert float(best[-1]["eval_loss"]) == pytest.approx(manifest["best"]["eval_loss"], rel=1e-5)


def test_outputs_load_with_auto_classes_and_reproduce_eval_loss(tiny_run, shared):
    from transformers import AutoModelForCausalLM

    from stentor_hub.recipes.data import build_eval_blocks
    from stentor_hub.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_run / "tokenizer")
    assert len(tokenizer) == 8064
    model = AutoModelForCausalLM.from_pretrained(tiny_run / "final").eval()
    assert model.config.eos_token_id == tokenizer.eos_token_id == 8000
    manifest = json.loads((tiny_run / "run_manifest.json").read_text())
    source = manifest["recipe"]["data"]["eval_sources"][0]
    blocks = build_eval_blocks(source, tokenizer, block_size=128, max_samples=64)
    assert blocks.shape == (64, 128)
    with torch.no_grad():
        loss = torch.stack([model(input_ids=b, labels=b).loss for b in blocks.split(16)]).mean().item()
    # same blocks and batches as the Trainer's evaluation: the same loss (bf16 autocast would round more)
    tolerance = 0.05 if manifest["hardware"]["mixed_precision"] == "bf16" else 1e-4
    assert loss == pytest.approx(manifest["final"]["eval_loss"], abs=tolerance)

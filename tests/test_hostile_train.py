"""Hostile training input and failing machines: a bad recipe value fails before anything is
written, naming the key, the value and what is allowed; --resume on a finished run changes nothing;
Ctrl-C stops with one line and a resumable state; the manifest of a resumed run adds up its
sessions; a checkpoint with truncated weights is set aside."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import TINY_RUN_OVERRIDES, run_train
from stentor_hub._resources import shared_dir
from stentor_hub.errors import RecipeError
from stentor_hub.recipes.config import find_recipe, load_recipe
from stentor_hub.recipes.train import train

BAD_VALUES = [
    ("training.batch_size=-1", "training.batch_size=-1", "positive integer"),
    ("training.batch_size=0", "training.batch_size=0", "positive integer"),
    ("training.batch_size=abc", "training.batch_size", "expected a number"),
    ("training.gradient_accumulation_steps=0", "training.gradient_accumulation_steps=0", "positive integer"),
    ("training.max_steps=0", "training.max_steps=0", "positive integer or null"),
    ("training.max_steps=2.5", "training.max_steps=2.5", "positive integer"),
    ("training.epochs=-1", "training.epochs=-1", "above 0"),
    ("training.token_budget=-5", "training.token_budget=-5", "positive integer"),
    ("training.eval_steps=0", "training.eval_steps=0", "positive integer"),
    ("training.save_steps=-3", "training.save_steps=-3", "positive integer"),
    ("training.logging_steps=0", "training.logging_steps=0", "positive integer"),
    ("training.max_grad_norm=0", "training.max_grad_norm=0", "above 0"),
    ("optimizer.lr=-1", "optimizer.lr=-1", "above 0"),
    ("optimizer.lr=0", "optimizer.lr=0", "above 0"),
    ("optimizer.lr=.nan", "optimizer.lr=nan", "above 0"),
    ("optimizer.betas=[0.9]", "optimizer.betas=[0.9]", "two numbers in [0, 1)"),
    ("optimizer.betas=[1.5,0.9]", "optimizer.betas=[1.5, 0.9]", "two numbers in [0, 1)"),
    ("optimizer.betas=0.9", "optimizer.betas=0.9", "two numbers"),
    ("optimizer.eps=0", "optimizer.eps=0", "above 0"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1", ">= 0"),
    ("schedule.warmup_steps=-1", "schedule.warmup_steps=-1", ">= 0"),
    ("schedule.total_steps=0", "schedule.total_steps=0", "positive integer"),
    ("schedule.min_lr_ratio=2", "schedule.min_lr_ratio=2", "[0, 1]"),
    ("data.block_size=1", "data.block_size=1", ">= 2"),
    ("data.source_token_budget=0", "data.source_token_budget=0", "positive integer"),
    ("data.train_sources=[]", "data.train_sources=[]", "list of paths"),
    ("data.train_sources=corpus.txt", "data.train_sources='corpus.txt'", "list of paths"),
    ("t4_recipe.enabled=3", "t4_recipe.enabled=3", "true or false"),
    ("t4_recipe.fp32_layers=-1", "t4_recipe.fp32_layers=-1", ">= 0"),
    ("model.num_attention_heads=0", "model.num_attention_heads=0", "positive integer"),
    ("model.hidden_size=null", "model.hidden_size=None", "positive integer"),
    ("seed=-1", "seed=-1", ">= 0"),
    ("tokenizer.vocab=5", "tokenizer.vocab=5", "vocabulary name or path"),
]


@pytest.mark.parametrize("override,named,allowed", BAD_VALUES, ids=[v[0] for v in BAD_VALUES])
def test_a_bad_value_fails_before_anything_is_written(tmp_path, train_cache_dir, override, named, allowed):
    out = tmp_path / "run"
    with pytest.raises(RecipeError) as error:
        config = load_recipe("tiny-cpu", [f"data.cache_dir={train_cache_dir}", override])
        train(config, out)
    message = str(error.value)
    assert named in message and allowed in message, message
    assert not out.exists()  # no checkpoints/, no tokenizer/


def _recipe_file(tmp_path, edit):
    config = yaml.safe_load(find_recipe("tiny-cpu").read_text())
    edit(config)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["training"].pop("batch_size"), "recipe key 'training.batch_size' is missing"),
    (lambda c: c.pop("training"), "recipe section 'training' must be a mapping of settings, got missing"),
    (lambda c: c.update(optimizer=[1, 2]), "recipe section 'optimizer' must be a mapping"),
    (lambda c: c["training"].update(lr=1e-3), "unknown recipe key 'training.lr'"),
    (lambda c: c["optimizer"].update(betas1=0.9), "unknown recipe key 'optimizer.betas1'; did you mean optimizer.betas"),
    (lambda c: c.update(trainer={"x": 1}), "unknown recipe section 'trainer'"),
])
def test_unknown_and_missing_keys_in_a_recipe_file(tmp_path, edit, message):
    path = _recipe_file(tmp_path, edit)
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        train(load_recipe(str(path)), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_bad_value_on_the_command_line_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stentor_hub.recipes.train", "--config", "tiny-cpu", "--output-dir", str(tmp_path / "r"),
         "training.batch_size=-1"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "STENTOR_SHARED": str(shared_dir(required=True))})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "training.batch_size=-1 is not allowed: it must be a positive integer" in result.stderr
    assert not (tmp_path / "r").exists()


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "checkpoints" not in p.parts}


def test_resume_on_a_finished_run_says_so_and_changes_nothing(tmp_path, tiny_run, train_cache_dir):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = snapshot(run)
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    result = run_train(run, *TINY_RUN_OVERRIDES, cache_dir=train_cache_dir, resume=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "is finished" in result.stderr and "step 40" in result.stderr and "training.max_steps=40" in result.stderr
    assert "nothing was changed" in result.stderr and "Traceback" not in result.stderr
    assert snapshot(run) == before and sorted(p.name for p in (run / "checkpoints").iterdir()) == checkpoints


SMALL = ["model.hidden_size=64", "model.intermediate_size=128", "model.num_hidden_layers=2",
         "model.num_attention_heads=2", "model.num_key_value_heads=2", "training.max_steps=20", "training.batch_size=8",
         "training.save_steps=10", "training.eval_steps=10", "training.logging_steps=5",
         "training.best_eval_start_step=10", "data.max_eval_samples=16", "training.mixed_precision=no"]


def test_ctrl_c_stops_in_one_line_and_the_resumed_manifest_adds_up(tmp_path, train_cache_dir):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "stentor_hub.recipes.train", "--config", "tiny-cpu", "--output-dir", str(run),
           f"data.cache_dir={train_cache_dir}", *SMALL]
    env = {**os.environ, "STENTOR_SHARED": str(shared_dir(required=True))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    marker = run / "checkpoints" / "checkpoint-10" / "stentor_checkpoint_complete.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before Ctrl-C"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert "interrupted at step" in last and "checkpoint-10" in last and "--resume" in last
    assert "Traceback" not in err
    assert not (run / "run_manifest.json").exists()

    resumed = run_train(run, *SMALL, cache_dir=train_cache_dir, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    training = json.loads((run / "run_manifest.json").read_text())["training"]
    sessions = training["sessions"]
    assert len(sessions) == 2 and sessions[0]["from_step"] == 0 and sessions[0]["to_step"] == 10
    assert sessions[1]["from_step"] == 10 and sessions[1]["to_step"] == 20
    assert sum(s["tokens"] for s in sessions) == training["tokens_seen"] == 20 * 8 * 128
    assert training["train_seconds"] == pytest.approx(sum(s["train_seconds"] for s in sessions), abs=0.02)
    assert all(s["train_seconds"] > 0 for s in sessions)
    assert training["tokens_per_second"] == pytest.approx(training["tokens_seen"] / training["train_seconds"], rel=0.01)
    assert training["wall_time_seconds"] >= training["train_seconds"] - 0.05


def test_a_checkpoint_with_truncated_weights_is_set_aside(tmp_path):
    import torch
    from safetensors.torch import save_file

    from stentor_hub.recipes.callbacks import COMPLETE_MARKER, last_complete_checkpoint

    checkpoints = tmp_path / "checkpoints"
    for step in (10, 20):
        folder = checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file({"w": torch.zeros(64, 64)}, folder / "model.safetensors")
        (folder / COMPLETE_MARKER).write_text(json.dumps({"step": step, "num_input_tokens_seen": step}))
    weights = checkpoints / "checkpoint-20" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a disk that filled up mid-write
    assert last_complete_checkpoint(checkpoints).name == "checkpoint-10"
    assert (checkpoints / "checkpoint-20.truncated" / "model.safetensors").is_file()  # set aside, not deleted

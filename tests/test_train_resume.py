"""Kill a run with SIGKILL mid-way, resume it, and get what an uninterrupted run gets."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_train
from stentor_hub._resources import shared_dir

# a smaller model than tiny-cpu's, so three runs fit in the test budget
SMALL_MODEL = ["model.hidden_size=64", "model.intermediate_size=128", "model.num_hidden_layers=3",
               "model.num_attention_heads=2", "model.num_key_value_heads=2"]
SMALL = [
    *SMALL_MODEL,
    "training.max_steps=20", "training.batch_size=8", "training.save_steps=10", "training.eval_steps=10",
    "training.logging_steps=5", "training.best_eval_start_step=10", "data.max_eval_samples=16",
    "training.mixed_precision=no",
]


def _curves(run_dir):
    with open(run_dir / "training_curves.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, train_cache_dir):
    straight = tmp_path / "straight"
    result = run_train(straight, *SMALL, cache_dir=train_cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "stentor_hub.recipes.train", "--config", "tiny-cpu", "--output-dir", str(killed),
           f"data.cache_dir={train_cache_dir}", *SMALL]
    env = {**os.environ, "STENTOR_SHARED": str(shared_dir(required=True))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed / "checkpoints" / "checkpoint-10" / "stentor_checkpoint_complete.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "run_manifest.json").exists() and not (killed / "final").exists()

    resumed = run_train(killed, *SMALL, cache_dir=train_cache_dir, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((straight / "run_manifest.json").read_text())
    b = json.loads((killed / "run_manifest.json").read_text())
    assert b["training"]["resumed_from_step"] == 10
    assert b["final"]["step"] == a["final"]["step"] == 20
    assert b["training"]["tokens_seen"] == a["training"]["tokens_seen"] == 20 * 8 * 128
    assert b["final"]["eval_loss"] == pytest.approx(a["final"]["eval_loss"], rel=1e-4)
    assert b["final"]["train_loss"] == pytest.approx(a["final"]["train_loss"], rel=1e-4)
    assert b["best"]["step"] == a["best"]["step"]

    # the curves keep what was logged before the kill, once, and note the resume
    rows = _curves(killed)
    train_steps = [int(r["step"]) for r in rows if r["train_loss"]]
    assert train_steps == [int(r["step"]) for r in _curves(straight) if r["train_loss"]] == list(range(5, 21, 5))
    assert any(r["note"].startswith("resumed from step") for r in rows)
    evals_a = [float(r["eval_loss"]) for r in _curves(straight) if r["eval_loss"]]
    evals_b = [float(r["eval_loss"]) for r in rows if r["eval_loss"]]
    assert evals_b == pytest.approx(evals_a, rel=1e-4)


def test_resume_skips_a_half_written_checkpoint(tmp_path, tiny_run, train_cache_dir):
    """A checkpoint folder without the completion marker (a crash mid-save) is set aside, not loaded."""
    import shutil

    from stentor_hub.recipes.callbacks import COMPLETE_MARKER, last_complete_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "checkpoints", run / "checkpoints")
    half = run / "checkpoints" / "checkpoint-60"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"truncated")
    latest = last_complete_checkpoint(run / "checkpoints")
    assert latest.name == "checkpoint-40" and (latest / COMPLETE_MARKER).is_file()
    assert not half.exists() and (run / "checkpoints" / "checkpoint-60.incomplete" / "model.safetensors").is_file()

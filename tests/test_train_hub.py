"""Push while training (hub.* recipe keys) and resume on a machine that has nothing but the
Hub: a real run pushing to the local Hub server, SIGKILLed after a push, its folder deleted,
resumed from the server, compared with an uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants

from conftest import run_train
from stentor_hub._resources import shared_dir
from test_train_resume import SMALL

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import HubServer  # noqa: E402

TOKEN = "hf_TRAINpush_SECRET_5757575757"
REPO = "stentor/tiny-live"
PUSH = [f"hub.repo_id={REPO}", "hub.strategy=checkpoint"]


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    with HubServer(tmp_path / "hub_storage", {TOKEN: "stentor"}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        yield server


def _repo_files(server) -> list[str]:
    try:
        return HfApi(endpoint=server.url, token=TOKEN).list_repo_files(REPO)
    except Exception:
        return []


def test_checkpoints_pushed_while_training_resume_on_a_new_machine(tmp_path, hub_env, train_cache_dir):
    straight = tmp_path / "straight"
    result = run_train(straight, *SMALL, cache_dir=train_cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]

    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "stentor_hub.recipes.train", "--config", "tiny-cpu", "--output-dir", str(run_dir),
           f"data.cache_dir={train_cache_dir}", *SMALL, *PUSH]
    env = {**os.environ, "STENTOR_SHARED": str(shared_dir(required=True))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while "last-checkpoint/trainer_state.json" not in _repo_files(hub_env) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before a push could be seen: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate()
    assert TOKEN not in stderr

    # what was pushed is a loadable model folder with the run's files and a resumable checkpoint
    files = set(_repo_files(hub_env))
    assert {"model.safetensors", "config.json", "tokenizer_config.json", "tokenization_stentor.py", "tokenmonster.py",
            "training_curves.csv", "run_manifest.json", "last-checkpoint/optimizer.pt",
            "last-checkpoint/stentor_checkpoint_complete.json"} <= files
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from huggingface_hub import snapshot_download

    local = snapshot_download(REPO, local_dir=str(tmp_path / "download"), ignore_patterns=["last-checkpoint/*", "best/*"],
                              endpoint=hub_env.url, token=TOKEN)
    AutoTokenizer.from_pretrained(local, trust_remote_code=True)
    AutoModelForCausalLM.from_pretrained(local)
    partial = json.loads((Path(local) / "run_manifest.json").read_text())
    assert partial["in_progress"] is True and partial["training"]["steps"] >= 10

    # a new machine: nothing local but the recipe
    shutil.rmtree(run_dir)
    resumed = run_train(run_dir, *SMALL, *PUSH, cache_dir=train_cache_dir, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert TOKEN not in resumed.stderr + resumed.stdout
    a = json.loads((straight / "run_manifest.json").read_text())
    b = json.loads((run_dir / "run_manifest.json").read_text())
    assert b["training"]["resumed_from_step"] in (10, 20) and b["final"]["step"] == a["final"]["step"] == 20
    assert b["training"]["tokens_seen"] == a["training"]["tokens_seen"]
    assert b["final"]["eval_loss"] == pytest.approx(a["final"]["eval_loss"], rel=1e-4)
    assert b["final"]["train_loss"] == pytest.approx(a["final"]["train_loss"], rel=1e-4)

    # the end of training was pushed too: the finished manifest, no snapshots left behind
    final = json.loads(Path(snapshot_download(REPO, local_dir=str(tmp_path / "download2"), allow_patterns=["run_manifest.json"],
                                             endpoint=hub_env.url, token=TOKEN))
                       .joinpath("run_manifest.json").read_text())
    assert final["final"]["step"] == 20 and "in_progress" not in final
    assert not (run_dir / ".hub-push").exists()


def test_failed_pushes_are_logged_and_training_goes_on(tmp_path, train_cache_dir, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = run_train(tmp_path / "run", *SMALL, "hub.repo_id=stentor/unreachable", "hub.strategy=every_save", cache_dir=train_cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "push to the Hub failed; training goes on" in result.stderr
    assert TOKEN not in result.stderr + result.stdout
    assert json.loads((tmp_path / "run" / "run_manifest.json").read_text())["final"]["step"] == 20


def test_hub_settings_are_checked_before_training(tmp_path, train_cache_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no stored login either
    for overrides, message in (
        (["hub.repo_id=not-a-repo-id"], "hub.repo_id='not-a-repo-id': use OWNER/NAME"),
        (["hub.repo_id=stentor/a--b"], "hub.repo_id 'stentor/a--b' is not a name the Hub accepts"),
        ([f"hub.repo_id={REPO}", "hub.revision=has space"], "hub.revision 'has space' is not a valid branch name"),
        ([f"hub.repo_id={REPO}", "hub.strategy=sometimes"], "hub.strategy='sometimes': use one of end, every_save"),
        ([f"hub.repo_id={REPO}"], "needs a Hugging Face token with write access"),
    ):
        result = run_train(tmp_path / "run", *SMALL, *overrides, cache_dir=train_cache_dir)
        assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / "run").exists()

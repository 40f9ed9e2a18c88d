"""A full disk (a small tmpfs, mounted for the test): the command fails with one message naming the
folder and the space, and leaves no temporary file or folder and no half-written output behind."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from stentor_hub.cli import main
from stentor_hub.errors import DiskFullError
from stentor_hub.helpers import write_json_atomic

from conftest import run_train
from test_hostile_train import SMALL


@contextlib.contextmanager
def tmpfs(mount: Path, size: str):
    """A tmpfs of ``size`` at ``mount``. Mounting needs root (or CAP_SYS_ADMIN), which this
    project's CI has."""
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True, capture_output=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs."""
    with tmpfs(tmp_path / "disk", "64k") as mount:
        yield mount


def test_export_onto_a_full_disk_names_the_folder_and_leaves_nothing(small_disk, vocab8000_path, capsys):
    out = small_disk / "tok"
    assert main(["tokenizer", "export", "--vocab", str(vocab8000_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"no space left on the disk of {small_disk} while writing tok/" in err and "bytes free" in err
    assert "Traceback" not in err
    assert list(small_disk.iterdir()) == []  # no .tok.* temporary folder, no half tokenizer


def test_a_file_write_onto_a_full_disk_keeps_the_previous_file(small_disk):
    target = small_disk / "results.json"
    write_json_atomic({"previous": True}, target)
    with pytest.raises(DiskFullError, match=f"disk of {small_disk} while writing results.json"):
        write_json_atomic({"big": "x" * 200_000}, target)
    assert target.read_text() == '{\n  "previous": true\n}\n'
    assert sorted(p.name for p in small_disk.iterdir()) == ["results.json"]


def test_a_disk_that_fills_during_training_leaves_a_resumable_run(tmp_path, train_cache_dir):
    """A 13 MB disk holds the tokenizer, best/ and checkpoint-10 (7 MB) of the small model, not a
    second checkpoint: the run stops in one line naming the disk and checkpoint-10, leaves no
    half-written checkpoint or temporary file, and resumes to the end once there is room."""
    with tmpfs(tmp_path / "disk", "13m") as disk:
        run = disk / "run"
        result = run_train(run, *SMALL, cache_dir=train_cache_dir)
        assert result.returncode == 2, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert f"no space left on the disk of {run}" in last and "bytes free" in last, last
        assert "checkpoint-10" in last and "--resume" in last and "Traceback" not in result.stderr
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-10"]
        assert not [p for p in run.rglob("*") if "tmp" in p.name], list(run.rglob("*tmp*"))
        assert not (run / "run_manifest.json").exists() and not (run / "final").exists()

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # room made
        resumed = run_train(run, *SMALL, cache_dir=train_cache_dir, resume=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        manifest = json.loads((run / "run_manifest.json").read_text())
        assert manifest["training"]["steps"] == 20 and (run / "final" / "model.safetensors").is_file()
        assert [s["from_step"] for s in manifest["training"]["sessions"]] == [0, 10]

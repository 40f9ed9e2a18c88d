"""A full disk (a small tmpfs, mounted for the test): the command fails with one message naming the
folder and the space, and leaves no temporary file or folder and no half-written output behind."""

from __future__ import annotations

import subprocess

import pytest

from stentor_hub.cli import main
from stentor_hub.errors import DiskFullError
from stentor_hub.helpers import write_json_atomic


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs. Mounting needs root (or CAP_SYS_ADMIN), which this project's CI has."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True, capture_output=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


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

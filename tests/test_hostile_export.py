"""Hostile cases for folders stentor-hub replaces: nothing it did not write is ever deleted.

Every folder written whole (a tokenizer export, a staging, a quickstart workdir) carries the
marker ``helpers.FOLDER_MARKER`` listing its files; a folder is replaced only when it holds nothing
else, and the refusal names the files and the flag."""

from __future__ import annotations

import json
import shutil

import pytest

from stentor_hub.cli import main
from stentor_hub.errors import OutputExistsError
from stentor_hub.helpers import FOLDER_MARKER, build_folder, check_replaceable, claim_folder, write_folder_marker


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_onto_a_staged_model_repository_deletes_nothing(tmp_path, tokenizer_dir, vocab1024_path, capsys):
    """The worst case of the issue: a staged model repository holds tokenizer_config.json."""
    repo = tmp_path / "my-model"
    shutil.copytree(tokenizer_dir, repo)
    (repo / FOLDER_MARKER).unlink(missing_ok=True)
    for name, data in (("model.safetensors", b"weights"), ("config.json", b"{}"), ("README.md", b"# card"),
                       ("run_manifest.json", b"{}"), ("training_curves.csv", b"step\n")):
        (repo / name).write_bytes(data)
    before = snapshot(repo)
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(repo)]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and str(repo) in err and "model.safetensors" in err and "did not write" in err
    assert "Traceback" not in err
    assert snapshot(repo) == before


def test_export_refuses_a_previous_export_with_a_user_file_added(tmp_path, vocab1024_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(out)]) == 0
    marker = json.loads((out / FOLDER_MARKER).read_text())
    assert marker["tool"] == "stentor-hub" and marker["kind"] == "tokenizer" and "tokenizer_config.json" in marker["files"]
    (out / "notes.md").write_text("mine")
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "notes.md" in err and "--out" in err
    assert (out / "notes.md").read_text() == "mine" and (out / "tokenizer_config.json").is_file()
    (out / "notes.md").unlink()
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(out)]) == 0  # ours again: replaced


def test_export_onto_a_file_or_another_kind_is_refused(tmp_path, vocab1024_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err and a_file.read_text() == "keep"
    other = tmp_path / "staging"
    other.mkdir()
    (other / "README.md").write_text("card")
    write_folder_marker(other, "staging")
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(other)]) == 2
    assert "stentor-hub staging folder, not a previous tokenizer" in capsys.readouterr().err
    assert (other / "README.md").read_text() == "card"


def test_marker_helper_lists_files_and_deletes_only_them(tmp_path):
    folder = tmp_path / "w"
    with build_folder(folder, kind="thing", flag="--x") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.txt").write_text("a")
    assert json.loads((folder / FOLDER_MARKER).read_text())["files"] == ["sub/a.txt"]
    check_replaceable(folder, "thing", "--x")  # ours only: fine
    (folder / "sub" / "user.txt").write_text("u")
    with pytest.raises(OutputExistsError, match=r"--x .*sub/user\.txt"):
        check_replaceable(folder, "thing", "--x")
    with pytest.raises(OutputExistsError):
        with build_folder(folder, kind="thing", flag="--x") as tmp:
            (tmp / "b.txt").write_text("b")
    assert (folder / "sub" / "user.txt").read_text() == "u" and (folder / "sub" / "a.txt").is_file()
    # claim_folder deletes nothing when a foreign file is there, and only the listed files otherwise
    with pytest.raises(OutputExistsError):
        claim_folder(folder, "thing", "--x")
    (folder / "sub" / "user.txt").unlink()
    claim_folder(folder, "thing", "--x")
    assert snapshot(folder) == {FOLDER_MARKER: (folder / FOLDER_MARKER).read_bytes()}
    assert json.loads((folder / FOLDER_MARKER).read_text())["files"] == []

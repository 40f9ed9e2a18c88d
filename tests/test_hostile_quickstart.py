"""Hostile quickstart workdirs: a previous quickstart's folder is replaced file by file (only the
files its marker lists), and any file the user added there makes quickstart refuse, naming it."""

from __future__ import annotations

import json

import pytest

from stentor_hub.errors import OutputExistsError
from stentor_hub.helpers import FOLDER_MARKER, write_folder_marker
from stentor_hub.quickstart import WORKDIR_KIND, prepare_workdir

from test_quickstart import clean_env, quickstart


def previous_quickstart(workdir):
    """A workdir as a finished quickstart leaves it: its files, then the marker listing them."""
    for name in ("tiny-run/final/model.safetensors", "tiny-run/run_manifest.json", "eval/blimp_results.json",
                 "summary.json", "card_config.yaml"):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_text(name)
    write_folder_marker(workdir, WORKDIR_KIND)


def test_a_file_added_to_a_previous_workdir_is_never_deleted(tmp_path, shared):
    workdir = tmp_path / "work"
    workdir.mkdir()
    previous_quickstart(workdir)
    (workdir / "eval" / "my_analysis.ipynb").write_text("hours of work")
    proc = quickstart(workdir, env=clean_env(tmp_path, STENTOR_SHARED=str(shared)), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--workdir" in proc.stderr and "eval/my_analysis.ipynb" in proc.stderr and "Traceback" not in proc.stderr
    assert (workdir / "eval" / "my_analysis.ipynb").read_text() == "hours of work"
    assert (workdir / "summary.json").read_text() == "summary.json"  # nothing of the previous run was touched


def test_a_previous_workdir_is_replaced_only_file_by_file(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    previous_quickstart(workdir)
    prepare_workdir(workdir)
    assert [p.name for p in workdir.rglob("*")] == [FOLDER_MARKER]
    assert json.loads((workdir / FOLDER_MARKER).read_text()) == {"tool": "stentor-hub", "kind": WORKDIR_KIND, "files": []}


def test_a_folder_quickstart_did_not_make_is_refused(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".quickstart-looking-name").write_text("")
    (workdir / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExistsError, match="--workdir .*thesis.tex"):
        prepare_workdir(workdir)
    assert (workdir / "thesis.tex").read_text() == "precious"
    other = tmp_path / "tok"
    other.mkdir()
    (other / "tokenizer_config.json").write_text("{}")
    write_folder_marker(other, "tokenizer")
    with pytest.raises(OutputExistsError, match="stentor-hub tokenizer folder, not a previous quickstart workdir"):
        prepare_workdir(other)
    assert (other / "tokenizer_config.json").is_file()

"""The run folder's one owner (RunDir, RunManifest, the curves), the shared helpers, the commands
layer's error handling, the public API and how the library imports remote_code/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stentor_hub.errors import MissingInputError, RunDirError, StentorError
from stentor_hub.helpers import build_folder, check_repo_id, looks_like_hub_id, write_json_atomic
from stentor_hub.run_dir import CURVES_HEADER, RunDir, RunManifest, read_curves, tokenizer_folder

REPO = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(Path(__file__).parent))
from test_publish import make_run_dir  # noqa: E402  (a run folder as written before best/ held the tokenizer)


def test_curves_header_is_the_documented_contract():
    assert CURVES_HEADER == ["step", "epoch", "train_loss", "eval_loss", "eval_ppl", "note"]


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, tokenizer_dir) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("old_run") / "run", tokenizer_dir)


def test_an_old_run_folder_loads(old_run):
    run = RunDir.open(old_run)
    manifest = run.read_manifest()
    assert manifest.schema_version == 1 and manifest.recipe_name == "tiny-cpu"
    assert manifest.best["step"] == 80 and manifest.final["step"] == 100 and manifest.block_size == 64
    assert [p.step for p in run.read_curves() if p.eval_loss is not None] == [20, 40, 60, 80, 100]
    # best/ of an old run has no tokenizer files: the run's tokenizer/ is used
    assert tokenizer_folder(run.best) == run.tokenizer
    assert RunDir.of_checkpoint(run.final) == run
    assert RunManifest.from_dict(json.loads(manifest.to_json())) == manifest  # JSON round trip


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("final"), r"run_manifest.json is missing \['final'\]"),
    (lambda m: m.update(schema_version=2), r"schema_version is 2, this stentor-hub reads schema 1"),
    (lambda m: m.update(data=[1]), r"'data' must be a JSON object, got list"),
    (lambda m: m["best"].update(step="80"), r"'best.step' must be a number \(an integer\), got '80'"),
    (lambda m: m["best"].update(eval_loss=None), r"'best' has no \['eval_loss'\]"),
])
def test_a_bad_manifest_names_the_file_and_field(old_run, tmp_path, change, message):
    data = json.loads((old_run / "run_manifest.json").read_text())
    change(data)
    path = tmp_path / "run_manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RunDirError, match=message) as error:
        RunManifest.read(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)  # callers catching ValueError keep working


def test_missing_run_files_are_missing_input_errors(tmp_path):
    with pytest.raises(MissingInputError, match="run folder .* does not exist"):
        RunDir.open(tmp_path / "nope")
    with pytest.raises(MissingInputError, match="run_manifest.json is missing"):
        RunDir(tmp_path).read_manifest()
    (tmp_path / "training_curves.csv").write_text(",".join(CURVES_HEADER) + "\n1,0.1,x,,,\n")
    with pytest.raises(RunDirError, match="line 2: column train_loss is not a number"):
        read_curves(tmp_path / "training_curves.csv")


def test_best_and_final_are_complete_model_folders(tiny_run):
    """AutoTokenizer loads a checkpoint folder itself (it holds the tokenizer and its remote code)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = RunDir(tiny_run)
    for folder in (run.best, run.final):
        assert tokenizer_folder(folder) == folder
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        assert len(tokenizer) == model.config.vocab_size == 8064
        assert tokenizer.decode(tokenizer.encode("Once upon a time")) .endswith("Once upon a time")
        assert {p.name for p in run.tokenizer.iterdir()} <= {p.name for p in folder.iterdir()}
    assert (run.best / "best_eval.json").is_file()


# --- helpers -------------------------------------------------------------------------------------


def test_hub_id_and_repo_id_rules(tmp_path, monkeypatch):
    assert looks_like_hub_id("nyu-mll/blimp") and looks_like_hub_id("epfml/FineWeb-HQ")
    for name in ("./a/b", "~/data", "/data/x", "a/b.jsonl", "corpora/train.txt", "a/b/c", "ab", "a/"):
        assert not looks_like_hub_id(name), name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "owner" / "name").mkdir(parents=True)
    assert not looks_like_hub_id("owner/name")  # an existing local path wins
    assert check_repo_id("alice/model", StentorError) == "alice/model"
    for bad in ("alice", "alice/", "/model", "a/b/c"):
        with pytest.raises(StentorError, match="--repo-id must be OWNER/NAME"):
            check_repo_id(bad, StentorError)


def test_atomic_writes_leave_the_previous_file_or_folder(tmp_path):
    out = write_json_atomic({"a": 1}, tmp_path / "sub" / "x.json")
    assert json.loads(out.read_text()) == {"a": 1}
    with pytest.raises(TypeError):
        write_json_atomic({"a": object()}, out)  # not JSON: nothing is replaced
    assert json.loads(out.read_text()) == {"a": 1}
    folder = tmp_path / "model"
    with build_folder(folder) as tmp:
        (tmp / "w.bin").write_bytes(b"1")
    with pytest.raises(RuntimeError):
        with build_folder(folder) as tmp:
            (tmp / "w.bin").write_bytes(b"2")
            raise RuntimeError("crash while writing")
    assert (folder / "w.bin").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "sub"]  # no temporary left
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["x.json"]


# --- the command line ----------------------------------------------------------------------------


def test_known_errors_are_one_line_and_bugs_keep_their_traceback(monkeypatch, capsys, tmp_path):
    from stentor_hub import cli

    assert cli.main(["card", str(tmp_path / "nope"), "--out", str(tmp_path / "README.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stentor-hub card: error: run folder") and len(err.strip().splitlines()) == 1

    def bug(args):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr("stentor_hub.commands.card.card", bug)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["card", str(tmp_path / "nope"), "--out", str(tmp_path / "README.md")])


def test_train_command_has_the_module_flags(tmp_path):
    for command in ([sys.executable, "-m", "stentor_hub", "train"], [sys.executable, "-m", "stentor_hub.recipes.train"]):
        result = subprocess.run([*command, "--config", "tiny-cpu", "--output-dir", str(tmp_path / "r"), "training.lr=1"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert "unknown config key 'training.lr'" in result.stderr and "Traceback" not in result.stderr
        usage = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60).stdout
        assert all(flag in usage for flag in ("--config", "--output-dir", "--resume", "key=value"))
    assert not (tmp_path / "r").exists()


# --- public API and remote code ------------------------------------------------------------------


def test_public_api_imports_lazily():
    code = ("import sys, stentor_hub; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "from stentor_hub import StentorTokenizer, Vocab, train, evaluate_blimp, evaluate_perplexity, render_card, "
            "write_card, publish_run, RunDir, RunManifest, StentorError; "
            "assert all(getattr(stentor_hub, n).__doc__ for n in stentor_hub.__all__); "
            "print(StentorTokenizer.__module__, Vocab.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["stentor_hub.remote.tokenization_stentor", "stentor_hub.remote.tokenmonster"]


_IMPORTED_FILES = ("import json, sys, stentor_hub.tokenizer as t, stentor_hub.tokenmonster as m; "
                   "t.tokenizer_class(); "
                   "print(json.dumps({n: sys.modules['stentor_hub.remote.' + n].__file__ "
                   "for n in ('tokenmonster', 'tokenization_stentor')}))")


def test_source_checkout_and_installed_wheel_import_the_same_remote_code():
    """The tests run the installed wheel (files under stentor_hub/_data/remote_code); a source
    checkout on PYTHONPATH imports remote_code/ at the repository root. Both are the same files."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run([sys.executable, "-c", _IMPORTED_FILES], capture_output=True, text=True, timeout=120,
                               cwd="/", env=env)
    source = subprocess.run([sys.executable, "-c", _IMPORTED_FILES], capture_output=True, text=True, timeout=120,
                            cwd="/", env={**env, "PYTHONPATH": str(REPO)})
    assert installed.returncode == 0 and source.returncode == 0, installed.stderr + source.stderr
    installed_files, source_files = json.loads(installed.stdout), json.loads(source.stdout)
    for name in ("tokenmonster", "tokenization_stentor"):
        assert Path(source_files[name]) == REPO / "remote_code" / f"{name}.py"
        assert Path(installed_files[name]).parent.parts[-2:] == ("_data", "remote_code")
        assert Path(installed_files[name]).read_bytes() == Path(source_files[name]).read_bytes()

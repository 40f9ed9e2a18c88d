"""Hostile evaluation and card inputs: an --out that cannot be written fails before the evaluation,
a BLiMP overall of 250 or a NaN loss in a manifest or curves is refused naming file and field,
malformed card-config metadata is refused naming the key."""

from __future__ import annotations

import json
import shutil

import pytest

from stentor_hub.card import ModelCardFacts, load_card_config, render_card, summarize_blimp
from stentor_hub.cli import main
from stentor_hub.errors import CardError, RunDirError
from stentor_hub.run_dir import RunDir

from test_evaluation import blimp_dir, tiny_model, tiny_model_dir  # noqa: F401  (fixtures)
from test_publish import blimp_file, fake_run  # noqa: F401  (fixtures)


def test_blimp_out_into_a_folder_fails_before_the_evaluation(tiny_model_dir, blimp_dir, tmp_path, capsys, monkeypatch):
    import stentor_hub.evaluation as evaluation

    monkeypatch.setattr(evaluation, "load_model_and_tokenizer",
                        lambda *a, **k: pytest.fail("the model was loaded before --out was checked"))
    folder = tmp_path / "results"
    folder.mkdir()
    assert main(["eval", "blimp", str(tiny_model_dir), "--data", str(blimp_dir), "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"--out {folder} is a folder" in err and "Traceback" not in err
    assert main(["eval", "perplexity", str(tiny_model_dir), "--data", "x.txt", "--out", str(folder)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_blimp_out_under_a_file_fails_before_the_evaluation(tiny_model_dir, blimp_dir, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["eval", "blimp", str(tiny_model_dir), "--data", str(blimp_dir), "--limit", "1",
                 "--out", str(blocker / "r.json")]) == 2
    assert "is not a writable folder" in capsys.readouterr().err and blocker.read_text() == "x"


@pytest.mark.parametrize("edit,field", [
    (lambda r: r.update(overall=250.0), "'overall' is 250.0"),
    (lambda r: r.update(overall=float("nan")), "'overall' is nan"),
    (lambda r: r.update(overall=-3), "'overall' is -3"),
    (lambda r: next(iter(r["tasks"].values())).update(accuracy=140.0), "has accuracy 140.0"),
    (lambda r: next(iter(r["tasks"].values())).update(correct=2000), "0 <= correct <= total"),
    (lambda r: r.update(tasks=[1, 2]), "'tasks' must map task names"),
])
def test_impossible_blimp_results_are_refused(blimp_file, edit, field):
    results = json.loads(blimp_file.read_text())
    edit(results)
    descriptions = {uid: "d" for uid in json.loads(blimp_file.read_text())["tasks"]}
    with pytest.raises(CardError) as error:
        summarize_blimp(results, descriptions, source="my_blimp.json")
    assert "my_blimp.json" in str(error.value) and field in str(error.value)


@pytest.mark.parametrize("section,key,value", [("final", "eval_loss", "NaN"), ("best", "eval_ppl", "Infinity"),
                                               ("training", "tokens_per_second", "NaN"), ("final", "train_loss", "-1.5")])
def test_nan_or_negative_losses_in_a_manifest_are_refused(fake_run, tmp_path, section, key, value):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    manifest = json.loads((run / "run_manifest.json").read_text())
    manifest[section][key] = "@@"
    (run / "run_manifest.json").write_text(json.dumps(manifest).replace('"@@"', value))
    with pytest.raises(RunDirError) as error:
        RunDir(run).read_manifest()
    assert "run_manifest.json" in str(error.value) and f"'{section}.{key}'" in str(error.value)


def test_nan_in_the_curves_is_refused(fake_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    lines = (run / "training_curves.csv").read_text().splitlines()
    lines[1] = "10,0.20,nan,,,"
    (run / "training_curves.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunDirError, match=r"training_curves.csv, line 2: column train_loss is nan"):
        ModelCardFacts.from_run(run)


@pytest.mark.parametrize("text,key", [
    ("license: [mit, apache]\n", "'license'"),
    ("license: Apache 2.0\n", "'license'"),
    ("language: english\n", "'language'"),
    ("language: [en, 5]\n", "'language'"),
    ("tags: stentor\n", "'tags'"),
    ("tags: [ok, {a: b}]\n", "'tags'"),
    ("datasets: epfml/FineWeb-HQ\n", "'datasets'"),
    ("widget: Once upon a time\n", "'widget'"),
    ("widget: [{prompt: hi}]\n", "'widget'"),
    ("pipeline_tag: Text Generation\n", "'pipeline_tag'"),
    ("model_name: 42\n", "'model_name'"),
])
def test_malformed_card_metadata_names_file_and_key(tmp_path, text, key):
    path = tmp_path / "card.yaml"
    path.write_text(text)
    with pytest.raises(CardError) as error:
        load_card_config(path)
    assert str(path) in str(error.value) and key in str(error.value) and "must be" in str(error.value)


def test_bad_front_matter_in_a_markdown_card_config(tmp_path):
    path = tmp_path / "card.md"
    path.write_text("---\nlicense: [unclosed\n---\n## Summary\nx\n")
    with pytest.raises(CardError, match="front matter is not valid YAML"):
        load_card_config(path)


@pytest.mark.parametrize("edit,field", [
    (lambda m: m["training"].update(steps="x"), "'training.steps' must be a number, got 'x'"),
    (lambda m: m["training"].update(wall_time_seconds="slow"), "'training.wall_time_seconds' must be a number"),
    (lambda m: m.update(hardware="cpu"), "'hardware' must be a JSON object"),
    (lambda m: m["training"].pop("tokens_seen"), "no attribute 'tokens_seen'"),
])
def test_manifest_mistakes_are_one_line_naming_the_field(fake_run, tmp_path, edit, field):
    from stentor_hub.errors import StentorError

    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    manifest = json.loads((run / "run_manifest.json").read_text())
    edit(manifest)
    (run / "run_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StentorError, match=field):
        render_card(ModelCardFacts.from_run(run))


def test_an_existing_file_that_is_not_a_result_is_never_overwritten(tiny_model_dir, blimp_dir, tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    readme = tmp_path / "README.md"
    readme.write_text("# my model\n")
    for target in (notes, readme):
        assert main(["eval", "blimp", str(tiny_model_dir), "--data", str(blimp_dir), "--limit", "1",
                     "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"--out {target} exists and is not a results file" in err and "Traceback" not in err
    assert notes.read_text() == '{"my": "notes"}' and readme.read_text() == "# my model\n"
    # an earlier result of the same kind is replaced (the same command run again)
    results = tmp_path / "blimp.json"
    assert main(["eval", "blimp", str(tiny_model_dir), "--data", str(blimp_dir), "--limit", "1", "--out", str(results)]) == 0
    assert main(["eval", "blimp", str(tiny_model_dir), "--data", str(blimp_dir), "--limit", "2", "--out", str(results)]) == 0
    assert json.loads(results.read_text())["limit"] == 2
    # but not by a perplexity run
    assert main(["eval", "perplexity", str(tiny_model_dir), "--data", "x.txt", "--out", str(results)]) == 2
    assert "is not a results file" in capsys.readouterr().err and json.loads(results.read_text())["limit"] == 2

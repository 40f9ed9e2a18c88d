"""Recipe configs, overrides, and bad input that must fail before anything is trained or written."""

from __future__ import annotations

import sys
import subprocess

import pytest

from stentor_hub.recipes.config import apply_overrides, load_recipe
from stentor_hub.recipes.train import RecipeError, train


def test_overrides_reach_nested_keys_and_keep_types():
    config = load_recipe("tiny-cpu", ["training.max_steps=7", "optimizer.lr=8e-4", "optimizer.betas=[0.9,0.99]",
                                      "data.eval_sources=null", "schedule.type=wsd"])
    assert config["training"]["max_steps"] == 7
    assert config["optimizer"]["lr"] == 8e-4 and isinstance(config["optimizer"]["lr"], float)
    assert config["optimizer"]["betas"] == [0.9, 0.99]
    assert config["data"]["eval_sources"] is None and config["schedule"]["type"] == "wsd"
    assert load_recipe("tiny-cpu")["training"]["max_steps"] == 400  # the file itself is untouched


def test_unknown_key_names_close_matches():
    with pytest.raises(ValueError, match=r"unknown config key 'training.max_step'.*training.max_steps"):
        load_recipe("tiny-cpu", ["training.max_step=3"])
    with pytest.raises(ValueError, match="must look like key=value"):
        apply_overrides({"a": 1}, ["a"])
    with pytest.raises(ValueError, match="expected a number"):
        load_recipe("tiny-cpu", ["optimizer.lr=fast"])


def test_stentor2_30m_recipe_is_the_published_one():
    c = load_recipe("stentor2-30m")
    assert c["optimizer"] == {"lr": 8e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.01, "fused": "auto"}
    assert c["schedule"]["type"] == "cosine" and c["schedule"]["warmup_steps"] == 3031 and c["schedule"]["total_steps"] == 60626
    assert c["schedule"]["stable_steps"] == 48500
    t = c["training"]
    assert (t["batch_size"], t["epochs"], t["token_budget"], t["max_grad_norm"]) == (8, 2, 800_000_000, 1.0)
    assert (t["eval_steps"], t["best_eval_start_step"], t["logging_steps"]) == (900, 1500, 300)
    assert c["data"]["block_size"] == 1024 and c["data"]["source_token_budget"] == 400_000_000
    assert c["data"]["max_eval_samples"] == 5000 and c["seed"] == 42
    assert [s["path"] for s in c["data"]["train_sources"]] == ["epfml/FineWeb-HQ", "StentorLabs/StenCore"]
    assert c["t4_recipe"] == {"enabled": True, "fp32_norms": True, "fp32_layers": 2}


BAD_INPUTS = [
    (["data.block_size=512"], RecipeError, "data.block_size=512 is above the model's context length"),
    (["model.vocab_size=8000"], RecipeError, "tokenizer has 8064 ids but model.vocab_size=8000"),
    (["training.token_budget=1000"], RecipeError, "smaller than one optimizer step"),
    (["training.batch_size=15", "training.gradient_accumulation_steps=2"], RecipeError, "cannot be split evenly"),
    (["training.mixed_precision=fp16"], RecipeError, "fp16 needs a CUDA GPU"),
    (["data.train_sources=[/nonexistent/corpus.txt]"], FileNotFoundError, "/nonexistent/corpus.txt': no such file"),
    (["tokenizer.vocab=/nonexistent/x.vocab"], FileNotFoundError, "vocabulary file not found"),
]


@pytest.mark.parametrize("overrides,error,message", BAD_INPUTS, ids=[o[0][0].split("=")[0] for o in BAD_INPUTS])
def test_bad_input_fails_before_writing_anything(tmp_path, train_cache_dir, overrides, error, message):
    config = load_recipe("tiny-cpu", [f"data.cache_dir={train_cache_dir}", *overrides])
    out = tmp_path / "run"
    with pytest.raises(error, match=message):
        train(config, out)
    assert not out.exists()


def test_empty_data_is_a_clear_error(tmp_path, train_cache_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    config = load_recipe("tiny-cpu", [f"data.cache_dir={train_cache_dir}", f"data.train_sources=[{empty}]"])
    with pytest.raises(RecipeError, match=r"training data gives 0 tokens.*add text"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_output_dir_must_be_writable_new_or_resumable(tmp_path, train_cache_dir):
    config = load_recipe("tiny-cpu", [f"data.cache_dir={train_cache_dir}"])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(RecipeError, match="is not writable"):
        train(config, blocker / "run")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(RecipeError, match="already holds files; pass --resume"):
        train(config, taken)
    assert (taken / "notes.txt").read_text() == "keep me"
    with pytest.raises(RecipeError, match="no run to resume"):
        train(config, tmp_path / "fresh", resume=True)


def test_command_line_reports_errors_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stentor_hub.recipes.train", "--config", "tiny-cpu", "--output-dir", str(tmp_path / "r"),
         "training.lr=1"], capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "unknown config key 'training.lr'" in result.stderr and "Traceback" not in result.stderr

"""`stentor-hub export onnx`: a real torch.onnx export of the tiny training run, checked by
onnxruntime against PyTorch (logits and greedy generation with past), tokenizer included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stentor_hub.cli import main


@pytest.fixture(scope="module")
def model_folder(tiny_run, tmp_path_factory) -> Path:
    """The run's best checkpoint with its tokenizer beside it: a complete model folder."""
    folder = tmp_path_factory.mktemp("onnx_model") / "model"
    shutil.copytree(tiny_run / "best", folder)
    for item in (tiny_run / "tokenizer").iterdir():
        shutil.copy2(item, folder / item.name)
    return folder


@pytest.fixture(scope="module")
def exported(model_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx_out") / "onnx"
    assert main(["export", "onnx", str(model_folder), "--out", str(out)]) == 0
    return out


def test_export_writes_graph_config_and_remote_code_tokenizer(exported):
    names = {p.name for p in exported.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer_config.json", "tokenization_stentor.py", "tokenmonster.py",
            "tokenmonster.vocab", "onnx_export.json"} <= names
    report = json.loads((exported / "onnx_export.json").read_text())
    assert report["greedy_tokens_match"] is True and 0 <= report["max_abs_logit_diff"] <= report["atol"] == 1e-4


def test_exported_graph_generates_like_pytorch_from_the_output_folder_alone(exported, model_folder):
    """A user with only the output folder: the tokenizer loads through AutoTokenizer, the graph
    has optimum's text-generation-with-past names, and greedy decoding over it with the
    present tensors fed back equals model.generate."""
    import onnxruntime
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from stentor_hub.onnx_export import ort_greedy

    tokenizer = AutoTokenizer.from_pretrained(str(exported), trust_remote_code=True)
    config = AutoConfig.from_pretrained(str(exported))
    session = onnxruntime.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    layers = config.num_hidden_layers
    assert inputs == ["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    assert outputs == ["logits"] + [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    model = AutoModelForCausalLM.from_pretrained(str(model_folder)).eval()
    prompt = tokenizer.encode("A prompt that was not among the export's checks")
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24, repetition_penalty=1.0,
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)[0].tolist()
    assert ort_greedy(session, config, prompt, 24, tokenizer.eos_token_id) == expected


def test_failed_check_leaves_no_output(model_folder, tmp_path, capsys):
    out = tmp_path / "onnx"
    assert main(["export", "onnx", str(model_folder), "--out", str(out), "--atol", "-1"]) == 2
    assert "onnxruntime's logits differ from PyTorch's" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_non_empty_output_folder_is_refused(model_folder, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["export", "onnx", str(model_folder), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "notes.txt").read_text() == "keep me"

"""Export a Stentor2 model to ONNX for ``text-generation-with-past``, and prove the export right.

``export_onnx(model, out_dir)`` writes ``model.onnx`` with the input and output names of
optimum's ``text-generation-with-past`` task (``input_ids``, ``attention_mask``,
``position_ids``, ``past_key_values.N.key/value`` in; ``logits``, ``present.N.key/value``
out), the model's ``config.json``/``generation_config.json``, and the tokenizer with its remote
code, which optimum's own exporter leaves out for a remote-code tokenizer. Before it returns it
checks that onnxruntime's logits on a few prompts match PyTorch's (``max |Δ| <= atol``,
default 1e-4 in fp32) and that greedy generation through the graph, feeding the ``present``
tensors back as ``past_key_values``, gives the same tokens as ``model.generate``. The figures
go to ``onnx_export.json`` beside the model. A failed check leaves no output folder.

Needs the ``onnx`` extra (``pip install stentor-hub[onnx]``: onnx, onnxscript, onnxruntime);
the export goes through ``torch.onnx.export(dynamo=True)``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from stentor_hub.errors import ExportError, OutputExistsError
from stentor_hub.helpers import build_folder

ONNX_FILE = "model.onnx"
REPORT_FILE = "onnx_export.json"
DEFAULT_PROMPTS = ("The history of science", "Once upon a time, in a small village,", "It was")
DEFAULT_ATOL = 1e-4


class OnnxExportError(ExportError):
    """The exported graph does not reproduce the PyTorch model, or the onnx extra is missing."""


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote and measured."""

    out_dir: str
    prompts: list[str]
    atol: float
    max_abs_logit_diff: float
    greedy_new_tokens: int
    greedy_tokens_match: bool
    opset: int | None = None
    files: list[str] = field(default_factory=list)


def _missing_extra() -> str:
    return "ONNX export needs the onnx extra: pip install 'stentor-hub[onnx]' (onnx, onnxscript, onnxruntime)"


def _with_past_module(model):
    """The model as a function of (input_ids, attention_mask, position_ids, past) returning
    (logits, present...): the flat signature an ONNX graph needs."""
    import torch
    from transformers import DynamicCache

    n_layers = model.config.num_hidden_layers

    class WithPast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, past):
            cache = DynamicCache()
            for i in range(n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache, use_cache=True)
            presents = []
            for layer in out.cache.layers:
                presents += [layer.keys, layer.values]
            return (out.logits, *presents)

    return WithPast()


def _io_names(n_layers: int) -> tuple[list[str], list[str]]:
    kv = [f"{i}.{part}" for i in range(n_layers) for part in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids"] + [f"past_key_values.{n}" for n in kv], ["logits"] + [f"present.{n}" for n in kv]


def _empty_past(config, batch: int = 1):
    import torch

    heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return [torch.zeros(batch, heads, 0, head_dim) for _ in range(2 * config.num_hidden_layers)]


def _export_graph(model, path: Path) -> None:
    import torch

    config = model.config
    names_in, names_out = _io_names(config.num_hidden_layers)
    # example inputs with a non-empty past, so no dimension is specialised to 0 or 1
    heads = config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    past = tuple(torch.randn(2, heads, 3, head_dim) for _ in range(2 * config.num_hidden_layers))
    input_ids = torch.randint(0, config.vocab_size, (2, 4))
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    position_ids = torch.arange(3, 7).expand(2, 4)
    batch, seq, past_seq, total = (torch.export.Dim(n) for n in ("batch", "sequence_length", "past_sequence_length", "total_sequence_length"))
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, tuple({0: batch, 2: past_seq} for _ in past))
    torch.onnx.export(
        _with_past_module(model), (input_ids, attention_mask, position_ids, past), str(path),
        input_names=names_in, output_names=names_out, dynamic_shapes=dynamic, dynamo=True, optimize=True,
        external_data=False, verbose=False,
    )


def _ort_step(session, names_in, input_ids, past, past_len: int):
    import numpy as np

    length = input_ids.shape[1]
    feed = {
        "input_ids": input_ids.astype(np.int64),
        "attention_mask": np.ones((input_ids.shape[0], past_len + length), dtype=np.int64),
        "position_ids": np.arange(past_len, past_len + length, dtype=np.int64)[None].repeat(input_ids.shape[0], 0),
    }
    feed.update({name: p for name, p in zip(names_in[3:], past)})
    logits, *present = session.run(None, feed)
    return logits, present


def ort_greedy(session, config, prompt_ids: list[int], max_new_tokens: int, eos_token_id: int | None) -> list[int]:
    """Greedy generation over the exported graph: the prompt in one step, then one token per
    step with the ``present`` tensors fed back as ``past_key_values``."""
    import numpy as np

    names_in, _ = _io_names(config.num_hidden_layers)
    past = [p.numpy() for p in _empty_past(config)]
    ids = list(prompt_ids)
    step_input = np.array([ids], dtype=np.int64)
    past_len = 0
    for _ in range(max_new_tokens):
        logits, past = _ort_step(session, names_in, step_input, past, past_len)
        past_len += step_input.shape[1]
        next_id = int(logits[0, -1].argmax())
        ids.append(next_id)
        if eos_token_id is not None and next_id == eos_token_id:
            break
        step_input = np.array([[next_id]], dtype=np.int64)
    return ids


def check_onnx_export(out_dir: Path, model, tokenizer, prompts=DEFAULT_PROMPTS, atol: float = DEFAULT_ATOL, max_new_tokens: int = 16) -> tuple[float, bool]:
    """(max |logit difference| over the prompts, whether greedy tokens agree); raises
    ``OnnxExportError`` naming the prompt when either check fails."""
    import numpy as np
    import onnxruntime
    import torch
    from transformers import GenerationConfig

    session = onnxruntime.InferenceSession(str(out_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    names_in, _ = _io_names(model.config.num_hidden_layers)
    worst = 0.0
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        with torch.no_grad():
            expected = model(torch.tensor([ids])).logits.float().numpy()
        got, _ = _ort_step(session, names_in, np.array([ids]), [p.numpy() for p in _empty_past(model.config)], 0)
        diff = float(np.abs(got - expected).max())
        worst = max(worst, diff)
        if not diff <= atol:
            raise OnnxExportError(f"onnxruntime's logits differ from PyTorch's by {diff:.3g} (> {atol:g}) on the prompt {prompt!r}")
        greedy = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        with torch.no_grad():
            reference = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long), generation_config=greedy)[0].tolist()
        ours = ort_greedy(session, model.config, ids, max_new_tokens, tokenizer.eos_token_id)
        if ours != reference:
            raise OnnxExportError(
                f"greedy generation through the ONNX graph differs from model.generate on the prompt {prompt!r}: "
                f"{ours[len(ids):]} vs {reference[len(ids):]}"
            )
    return worst, True


def export_onnx(model: str | Path, out_dir: str | Path, *, prompts=DEFAULT_PROMPTS, atol: float = DEFAULT_ATOL, max_new_tokens: int = 16) -> OnnxExport:
    """Export ``model`` (a model folder or Hub id) to ``out_dir`` and check it (see the module
    docstring). ``out_dir`` must not exist or be empty; it appears only when every check passed."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise OnnxExportError(_missing_extra()) from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise OutputExistsError(f"{out_dir} exists and is not empty; choose a new --out folder for the ONNX export")
    tokenizer = AutoTokenizer.from_pretrained(str(model), trust_remote_code=True)
    torch_model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
    with build_folder(out_dir) as staging:
        _export_graph(torch_model, staging / ONNX_FILE)
        torch_model.config.save_pretrained(staging)
        if torch_model.generation_config is not None:
            torch_model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)  # with its remote code (auto_map), unlike optimum's exporter
        worst, agree = check_onnx_export(staging, torch_model, tokenizer, prompts, atol, max_new_tokens)
        import onnx

        opset = next((o.version for o in onnx.load(str(staging / ONNX_FILE), load_external_data=False).opset_import if o.domain in ("", "ai.onnx")), None)
        report = OnnxExport(
            out_dir=str(out_dir), prompts=list(prompts), atol=atol, max_abs_logit_diff=worst,
            greedy_new_tokens=max_new_tokens, greedy_tokens_match=agree, opset=opset,
            files=sorted(p.name for p in staging.iterdir()) + [REPORT_FILE],
        )
        (staging / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report

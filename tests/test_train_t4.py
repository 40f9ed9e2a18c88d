"""The T4 mixed-precision recipe, checked inside real forward passes under CPU bf16 autocast,
and the exact size of the published 30M architecture."""

from __future__ import annotations

import pytest
import torch

from stentor_hub.recipes.config import load_recipe
from stentor_hub.recipes.t4 import apply_t4_recipe, t4_counts
from stentor_hub.recipes.train import build_model, build_optimizer, count_parameters, lr_lambda


@pytest.fixture(scope="module")
def tiny_config():
    return load_recipe("tiny-cpu")


def _tiny_model(tiny_config, tokenizer):
    torch.manual_seed(0)
    return build_model(tiny_config["model"], tokenizer)


def test_stentor2_30m_has_exactly_the_published_size(tokenizer):
    config = load_recipe("stentor2-30m")
    model = build_model(config["model"], tokenizer)
    assert count_parameters(model) == 30_353_920
    c = model.config
    assert (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
            c.head_dim, c.vocab_size, c.max_position_embeddings) == (512, 1024, 10, 8, 8, 64, 8064, 1024)
    assert c.tie_word_embeddings and c.hidden_act == "silu" and c._attn_implementation == "sdpa"
    assert c.rms_norm_eps == 1e-5 and model.model.rotary_emb.inv_freq[1].item() == pytest.approx(10000 ** (-2 / 64))
    assert apply_t4_recipe(model, fp32_layers=2) == {"fp32_norm_modules": 21, "fp32_layers": 2, "softmax_modules_patched": 0}
    # init: normal(0, 0.02) weights, norms at 1
    w = model.model.layers[3].mlp.up_proj.weight
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert torch.all(model.model.norm.weight == 1)


def test_weight_decay_only_on_linear_weights(tiny_config, tokenizer):
    model = _tiny_model(tiny_config, tokenizer)
    optimizer = build_optimizer(model, tiny_config["optimizer"], "cpu")
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    assert id(model.model.embed_tokens.weight) not in decayed  # tied with lm_head: not decayed
    assert id(model.model.layers[0].self_attn.q_proj.weight) in decayed
    assert all(id(m.weight) not in decayed for m in model.modules() if type(m).__name__.endswith("RMSNorm"))
    assert len(decay["params"]) == 4 * 7  # q k v o gate up down per layer


def test_schedules():
    cosine = lr_lambda({"type": "cosine", "warmup_steps": 10, "total_steps": 110, "min_lr_ratio": 0.0})
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5) and cosine(110) == pytest.approx(0.0) and cosine(500) == pytest.approx(0.0)
    wsd = lr_lambda({"type": "wsd", "warmup_steps": 10, "total_steps": 110, "stable_steps": 50, "min_lr_ratio": 0.1})
    assert wsd(30) == 1.0 and wsd(59) == 1.0 and wsd(85) == pytest.approx(0.55) and wsd(110) == pytest.approx(0.1)


def _record_dtypes(model):
    """Forward hooks recording (input dtype, output dtype) of norms, layers and projections."""
    seen = {}

    def hook(name):
        def record(module, args, kwargs, output):
            x = args[0] if args else kwargs["hidden_states"]
            out = output[0] if isinstance(output, tuple) else output
            seen[name] = (x.dtype, out.dtype)
        return record

    for name, module in model.named_modules():
        if type(module).__name__.endswith(("RMSNorm", "DecoderLayer")) or name.endswith(("q_proj", "down_proj")):
            module.register_forward_hook(hook(name), with_kwargs=True)
    return seen


def test_forward_under_cpu_bf16_autocast_keeps_norms_and_first_layers_in_fp32(tiny_config, tokenizer):
    model = _tiny_model(tiny_config, tokenizer)
    reference = _tiny_model(tiny_config, tokenizer)  # same weights, no recipe
    counts = apply_t4_recipe(model, fp32_layers=2)
    assert counts == t4_counts(model) == {"fp32_norm_modules": 9, "fp32_layers": 2, "softmax_modules_patched": 0}
    seen, seen_ref = _record_dtypes(model), _record_dtypes(reference)
    ids = torch.randint(0, 8000, (2, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
        reference(input_ids=ids, labels=ids)
    loss.backward()
    assert torch.isfinite(loss)

    f32, bf16 = torch.float32, torch.bfloat16
    # the first two layers compute their projections in FP32; the others under autocast in bf16
    for i in (0, 1):
        assert seen[f"model.layers.{i}.self_attn.q_proj"][1] == f32
        assert seen[f"model.layers.{i}.mlp.down_proj"][1] == f32
        assert all(p.dtype == f32 and p.grad is not None for p in model.model.layers[i].parameters())
    for i in (2, 3):
        assert seen[f"model.layers.{i}.self_attn.q_proj"][1] == bf16
        assert seen[f"model.layers.{i}.mlp.down_proj"][1] == bf16
    assert seen_ref["model.layers.0.self_attn.q_proj"][1] == bf16  # autocast really is on: without the recipe, bf16
    # every layer and every norm returns its input dtype
    for name, (dtype_in, dtype_out) in seen.items():
        if name.endswith(("norm", "layernorm", "layers.0", "layers.1", "layers.2", "layers.3")):
            assert dtype_in == dtype_out, name


def test_patched_norm_computes_in_fp32_and_returns_input_dtype(tiny_config, tokenizer):
    model = _tiny_model(tiny_config, tokenizer)
    norm = model.model.layers[3].input_layernorm
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = (torch.randn(2, 5, 128) * 3).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        unpatched = norm(x)
    assert unpatched.dtype == torch.float32  # stock LlamaRMSNorm: fp32 weight * bf16 -> fp32

    apply_t4_recipe(model, fp32_layers=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    xf = x.float()
    expected = (norm.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon))).to(torch.bfloat16)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, expected)  # normalised and scaled in FP32, rounded once at the end


def test_fp32_layer_casts_bf16_inputs_and_returns_bf16(tiny_config, tokenizer):
    model = _tiny_model(tiny_config, tokenizer)
    apply_t4_recipe(model, fp32_layers=2)
    apply_t4_recipe(model, fp32_layers=2)  # idempotent: no double wrapping
    layer = model.model.layers[0]
    x = torch.randn(1, 8, 128).to(torch.bfloat16)
    cos, sin = model.model.rotary_emb(x, torch.arange(8)[None])
    inner = {}
    layer.mlp.down_proj.register_forward_hook(lambda m, a, o: inner.update(dtype=o.dtype, input=a[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x, position_embeddings=(cos.to(torch.bfloat16), sin.to(torch.bfloat16)))
    out = out[0] if isinstance(out, tuple) else out
    assert out.dtype == torch.bfloat16
    assert inner == {"dtype": torch.float32, "input": torch.float32}
    assert t4_counts(model)["fp32_layers"] == 2


def test_fp32_layers_above_depth_is_an_error(tiny_config, tokenizer):
    model = _tiny_model(tiny_config, tokenizer)
    with pytest.raises(ValueError, match="fp32_layers=9 but the model has 4 decoder layers"):
        apply_t4_recipe(model, fp32_layers=9)

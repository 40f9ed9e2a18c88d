"""The T4 mixed-precision recipe from the Stentor2 card.

T4 GPUs have no bf16, and plain fp16 autocast lets small models drift (norm statistics and the
first layers, where activations are still close to the embeddings, are the sensitive parts). The
card keeps those in FP32:

* every RMSNorm computes in FP32 and returns the input dtype (21 modules in the 30M model);
* the first ``fp32_layers`` decoder layers keep FP32 weights and run with autocast disabled:
  their floating-point inputs are cast to FP32 and their output back to the input dtype;
* the attention softmax is left to SDPA, which already accumulates it in FP32 (0 modules patched).

The patches wrap ``forward`` of the module instances. They must be in place before the
``Trainer`` is built, because the Trainer wraps and prepares the model (DDP, autocast) before any
callback runs; :class:`T4RecipeCallback` then checks them on the prepared model, logs the counts,
and puts them in the run's logs. The patches do not change the weights, so saved models are
ordinary ``LlamaForCausalLM`` checkpoints.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import nn
from transformers import TrainerCallback

from stentor_hub.errors import RecipeError

logger = logging.getLogger(__name__)

_MARK = "_stentor_t4"


def _is_rmsnorm(module: nn.Module) -> bool:
    return type(module).__name__.endswith("RMSNorm")


def _to_fp32(value):
    if torch.is_tensor(value) and value.is_floating_point():
        return value.float()
    if isinstance(value, tuple):
        return tuple(_to_fp32(v) for v in value)
    if isinstance(value, list):
        return [_to_fp32(v) for v in value]
    return value


def _to_dtype(value, dtype):
    if torch.is_tensor(value) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, tuple):
        return tuple(_to_dtype(v, dtype) for v in value)
    return value


def _first_tensor(args, kwargs) -> torch.Tensor:
    for value in (*args, *kwargs.values()):
        if torch.is_tensor(value) and value.is_floating_point():
            return value
    raise ValueError("T4 recipe: a patched module was called without a floating-point tensor input")


def _fp32_norm_forward(forward):
    @functools.wraps(forward)
    def fp32_norm(hidden_states: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden_states.device.type, enabled=False):
            out = forward(hidden_states.float())
        return out.to(hidden_states.dtype)

    return fp32_norm


def _fp32_layer_forward(forward):
    @functools.wraps(forward)
    def fp32_layer(*args, **kwargs):
        input_dtype = _first_tensor(args, kwargs).dtype
        device_type = _first_tensor(args, kwargs).device.type
        with torch.autocast(device_type, enabled=False):
            out = forward(*_to_fp32(args), **{k: _to_fp32(v) for k, v in kwargs.items()})
        return _to_dtype(out, input_dtype)

    return fp32_layer


def _patch(module: nn.Module, wrapper) -> bool:
    if getattr(module, _MARK, False):
        return False  # already patched: applying the recipe twice changes nothing
    module.forward = wrapper(module.forward)
    setattr(module, _MARK, True)
    return True


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama-style causal LM (``model.model.layers``)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise RecipeError(f"T4 recipe: {type(model).__name__} has no decoder layers at model.model.layers")
    return layers


def apply_t4_recipe(model: nn.Module, fp32_layers: int = 2, fp32_norms: bool = True) -> dict[str, int]:
    """Patch ``model`` in place for the T4 recipe and return the counts of patched modules:
    ``{"fp32_norm_modules", "fp32_layers", "softmax_modules_patched"}``.

    Call it before building the ``Trainer``. Idempotent: a second call patches nothing new but
    reports the same counts."""
    layers = decoder_layers(model)
    if not 0 <= fp32_layers <= len(layers):
        raise RecipeError(f"t4_recipe.fp32_layers={fp32_layers} but the model has {len(layers)} decoder layers")
    attn = getattr(model.config, "_attn_implementation", None)
    if attn not in (None, "sdpa"):
        logger.warning("T4 recipe: attention is %r, not SDPA; the softmax is not kept in FP32 by this recipe", attn)
    norms = [m for m in model.modules() if _is_rmsnorm(m)] if fp32_norms else []
    for norm in norms:
        norm.float()
        _patch(norm, _fp32_norm_forward)
    for layer in layers[:fp32_layers]:
        layer.float()
        _patch(layer, _fp32_layer_forward)
    return t4_counts(model)


def t4_counts(model: nn.Module) -> dict[str, int]:
    """How many modules of ``model`` carry the T4 patches."""
    model = getattr(model, "module", model)  # DDP-wrapped
    return {
        "fp32_norm_modules": sum(1 for m in model.modules() if _is_rmsnorm(m) and getattr(m, _MARK, False)),
        "fp32_layers": sum(1 for m in decoder_layers(model) if getattr(m, _MARK, False)),
        "softmax_modules_patched": 0,  # SDPA computes the softmax in FP32 already
    }


class T4RecipeCallback(TrainerCallback):
    """Checks on the prepared model that the T4 patches survived the Trainer's wrapping and that
    the FP32 layers' weights are still FP32, and logs the counts."""

    def __init__(self, expected: dict[str, int]):
        self.expected = dict(expected)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        counts = t4_counts(model)
        if counts != self.expected:
            raise RuntimeError(f"T4 recipe: the prepared model has patches {counts}, expected {self.expected}")
        for layer in decoder_layers(getattr(model, "module", model))[: counts["fp32_layers"]]:
            if any(p.dtype != torch.float32 for p in layer.parameters()):
                raise RuntimeError("T4 recipe: an FP32 layer's weights were cast away from FP32 by the Trainer")
        if state.is_world_process_zero:
            logger.info(
                "T4 recipe: %d RMSNorm modules in FP32, first %d decoder layers in FP32 without autocast, "
                "%d softmax modules patched (SDPA)",
                counts["fp32_norm_modules"], counts["fp32_layers"], counts["softmax_modules_patched"],
            )

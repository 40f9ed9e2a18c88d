"""stentor-hub: take a small Stentor2 language model from raw text to a published Hub repository.

The public API (each name is documented where it is defined)::

    from stentor_hub import StentorTokenizer, Vocab          # the tokenizer and its engine
    from stentor_hub import load_recipe, train               # recipe YAML + overrides -> RunDir
    from stentor_hub import evaluate_blimp, evaluate_perplexity, run_blimp, run_perplexity
    from stentor_hub import render_card, write_card, ModelCardFacts
    from stentor_hub import publish_run                      # stage, check, push
    from stentor_hub import RunDir, RunManifest, StentorError

Names are imported on first use, so ``import stentor_hub`` (and ``stentor-hub --help``) does not
load torch or transformers.
"""

from __future__ import annotations

import importlib

from stentor_hub import remote_code as _remote_code

__version__ = "0.1.0"

_remote_code.register()  # `import stentor_hub.remote.tokenmonster` works from here on

# public name -> the module that defines it
_API = {
    "StentorTokenizer": "stentor_hub.remote.tokenization_stentor",
    "Vocab": "stentor_hub.tokenmonster",
    "StreamDecoder": "stentor_hub.tokenmonster",
    "export_tokenizer": "stentor_hub.tokenizer",
    "load_tokenizer": "stentor_hub.tokenizer",
    "load_recipe": "stentor_hub.recipes.config",
    "train": "stentor_hub.recipes.train",
    "evaluate_blimp": "stentor_hub.evaluation",
    "evaluate_perplexity": "stentor_hub.evaluation",
    "run_blimp": "stentor_hub.evaluation",
    "run_perplexity": "stentor_hub.evaluation",
    "load_model_and_tokenizer": "stentor_hub.evaluation",
    "ModelCardFacts": "stentor_hub.card",
    "render_card": "stentor_hub.card",
    "write_card": "stentor_hub.card",
    "publish_run": "stentor_hub.publish",
    "RunDir": "stentor_hub.run_dir",
    "RunManifest": "stentor_hub.run_dir",
    "StentorError": "stentor_hub.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'stentor_hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

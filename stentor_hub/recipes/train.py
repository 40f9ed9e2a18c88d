"""Train a Stentor2 model from a recipe YAML with the transformers Trainer.

    python -m stentor_hub.recipes.train --config recipes/tiny-cpu.yaml --output-dir runs/tiny [key=value ...]
    python -m stentor_hub.recipes.train --config recipes/tiny-cpu.yaml --output-dir runs/tiny --resume

Several processes (2x T4 on Kaggle, or CPU processes with gloo) use the launchers as they are:

    accelerate launch --multi_gpu --num_processes 2 -m stentor_hub.recipes.train --config ... --output-dir ...
    torchrun --nproc_per_node 2 -m stentor_hub.recipes.train --config ... --output-dir ...

Multi-node is accelerate's (or torchrun's) own flags: ``--num_machines``, ``--machine_rank``,
``--main_process_ip``, ``--main_process_port`` (torchrun: ``--nnodes``, ``--node_rank``,
``--rdzv-endpoint``). ``training.batch_size`` is the global batch: it is split over all processes.

The run directory gets ``final/``, ``best/``, ``tokenizer/``, ``training_curves.csv``,
``run_manifest.json`` and ``checkpoints/`` (for ``--resume``). Every check on the inputs runs
before anything is written or trained.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stentor_hub.errors import RecipeError
from stentor_hub.run_dir import MANIFEST_SCHEMA_VERSION, RunDir, RunManifest

logger = logging.getLogger("stentor_hub.recipes.train")

__all__ = ["train", "RecipeError"]


# -- checks that run before anything is written ------------------------------------------------


def world_size() -> int:
    """Processes of this run, as set by torchrun / accelerate launch (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_mixed_precision(setting: str, device_type: str) -> str:
    """``auto`` is fp16 on CUDA (the card's T4 recipe) and FP32 on CPU: bf16 autocast works on
    CPU (force it with ``bf16``) but was several times slower than FP32 for these model sizes on
    the CPUs we measured (benchmarks/train). fp16 needs CUDA."""
    import torch

    setting = "no" if setting is False else str(setting).lower()  # YAML reads a bare `no` as false
    if setting not in ("auto", "fp16", "bf16", "no"):
        raise RecipeError(f"training.mixed_precision={setting!r}: use auto, fp16, bf16 or no")
    if setting == "auto":
        return "fp16" if device_type == "cuda" else "no"
    if setting == "fp16" and device_type != "cuda":
        raise RecipeError("training.mixed_precision=fp16 needs a CUDA GPU; on CPU use bf16 or no (or auto)")
    if setting == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RecipeError("this GPU has no bf16 (a T4 does not); use training.mixed_precision=fp16 or auto")
    return setting


# What every recipe value may be: (types, lowest, highest, can be null, what is allowed). Checked
# before anything else, so a bad value is one line naming the key, not a traceback mid-run.
_INT, _NUM = (int,), (int, float)
RECIPE_VALUES: dict[str, tuple] = {
    "seed": (_INT, 0, None, False, "an integer >= 0"),
    "model.vocab_size": (_INT, 1, None, False, "a positive integer"),
    "model.hidden_size": (_INT, 1, None, False, "a positive integer"),
    "model.intermediate_size": (_INT, 1, None, False, "a positive integer"),
    "model.num_hidden_layers": (_INT, 1, None, False, "a positive integer"),
    "model.num_attention_heads": (_INT, 1, None, False, "a positive integer"),
    "model.num_key_value_heads": (_INT, 1, None, False, "a positive integer"),
    "model.max_position_embeddings": (_INT, 2, None, False, "an integer >= 2"),
    "tokenizer.vocab": ((str,), None, None, False, "a vocabulary name or path"),
    "data.train_sources": ((list,), None, None, False, "a list of paths, Hub dataset ids or {path: ...} mappings"),
    "data.eval_sources": ((list,), None, None, True, "a list of sources, or null to hold out validation text"),
    "data.block_size": (_INT, 2, None, False, "an integer >= 2"),
    "data.source_token_budget": (_INT, 1, None, True, "a positive integer or null"),
    "data.max_eval_samples": (_INT, 1, None, True, "a positive integer or null"),
    "optimizer.lr": (_NUM, 0, 10, False, "a number above 0 (at most 10)"),
    "optimizer.betas": ((list, tuple), None, None, False, "two numbers in [0, 1), e.g. [0.9, 0.95]"),
    "optimizer.eps": (_NUM, 0, 1, False, "a number above 0"),
    "optimizer.weight_decay": (_NUM, 0, None, False, "a number >= 0"),
    "schedule.type": ((str,), None, None, False, "cosine or wsd"),
    "schedule.warmup_steps": (_INT, 0, None, False, "an integer >= 0"),
    "schedule.total_steps": (_INT, 1, None, False, "a positive integer"),
    "schedule.stable_steps": (_INT, 0, None, True, "an integer >= 0"),
    "schedule.min_lr_ratio": (_NUM, 0, 1, True, "a number in [0, 1]"),
    "training.batch_size": (_INT, 1, None, False, "a positive integer (sequences per optimizer step, all processes)"),
    "training.gradient_accumulation_steps": (_INT, 1, None, False, "a positive integer"),
    "training.epochs": (_NUM, 0, None, True, "a number above 0, or null"),
    "training.token_budget": (_INT, 1, None, True, "a positive integer or null"),
    "training.max_steps": (_INT, 1, None, True, "a positive integer or null"),
    "training.max_grad_norm": (_NUM, 0, None, False, "a number above 0"),
    "training.eval_steps": (_INT, 1, None, False, "a positive integer"),
    "training.best_eval_start_step": (_INT, 0, None, False, "an integer >= 0"),
    "training.logging_steps": (_INT, 1, None, False, "a positive integer"),
    "training.save_steps": (_INT, 1, None, False, "a positive integer"),
    "training.save_total_limit": (_INT, 1, None, True, "a positive integer or null"),
    "training.dataloader_num_workers": (_INT, 0, None, False, "an integer >= 0"),
    "training.ddp_timeout": (_INT, 1, None, True, "a positive number of seconds"),
    "hub.repo_id": ((str,), None, None, True, "OWNER/NAME, or null to push nothing"),
    "hub.strategy": ((str,), None, None, True, "end, every_save, checkpoint or all_checkpoints"),
    "hub.private": ((bool,), None, None, True, "true or false"),
    "hub.revision": ((str,), None, None, True, "a branch name, or null for main"),
    "t4_recipe.enabled": ((bool,), None, None, False, "true or false"),
    "t4_recipe.fp32_layers": (_INT, 0, None, False, "an integer >= 0"),
}
_STRICTLY_ABOVE = {"optimizer.lr", "optimizer.eps", "training.epochs", "training.max_grad_norm"}  # 0 not allowed
RECIPE_SECTIONS = ("model", "tokenizer", "data", "optimizer", "schedule", "training", "t4_recipe")
_OPTIONAL = {"data.eval_sources", "data.source_token_budget", "data.max_eval_samples", "schedule.stable_steps",
             "schedule.min_lr_ratio", "training.epochs", "training.token_budget", "training.max_steps",
             "training.save_total_limit", "training.ddp_timeout", "hub.repo_id", "hub.strategy", "hub.private",
             "hub.revision"}
# keys a recipe may carry beyond RECIPE_VALUES (model.* goes to LlamaConfig as it is)
_OTHER_KEYS = {"name", "data.cache_dir", "data.shards_dir", "optimizer.fused", "training.mixed_precision", "t4_recipe.fp32_norms"}


def check_recipe_values(config: dict[str, Any]) -> None:
    """Every section present, no unknown key (outside ``model``), every value of the right type
    and range (:data:`RECIPE_VALUES`); else one :class:`RecipeError` naming the key, the value and
    what is allowed."""
    import difflib

    if not isinstance(config, dict):
        raise RecipeError(f"a recipe must be a mapping of sections, got {type(config).__name__}")
    for section in RECIPE_SECTIONS:
        if not isinstance(config.get(section), dict):
            got = "missing" if section not in config else f"{config[section]!r}"
            raise RecipeError(f"recipe section '{section}' must be a mapping of settings, got {got}")
    known = set(RECIPE_VALUES) | _OTHER_KEYS
    for section, values in config.items():
        if section not in RECIPE_SECTIONS + ("seed", "name", "hub"):  # hub: optional section
            raise RecipeError(f"unknown recipe section '{section}'; the sections are {', '.join(RECIPE_SECTIONS)}")
        if section == "model" or not isinstance(values, dict):
            continue
        for key in values:
            dotted = f"{section}.{key}"
            if dotted not in known:
                close = difflib.get_close_matches(dotted, sorted(known), n=3, cutoff=0.6)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise RecipeError(f"unknown recipe key '{dotted}'{hint}")
    for dotted, (types, low, high, nullable, allowed) in RECIPE_VALUES.items():
        section, _, key = dotted.rpartition(".")
        node = config.get(section) or {} if section else config
        if key not in node:
            if dotted in _OPTIONAL:
                continue
            raise RecipeError(f"recipe key '{dotted}' is missing; it must be {allowed}")
        value = node[key]
        if value is None and nullable:
            continue
        bad = (not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
               or (isinstance(value, float) and not math.isfinite(value))
               or (low is not None and (value < low or (value == low and dotted in _STRICTLY_ABOVE)))
               or (high is not None and value > high))
        if dotted == "optimizer.betas" and not bad:
            bad = len(value) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                             and 0 <= b < 1 for b in value)
        if dotted == "data.train_sources" and not bad:
            bad = not value
        if bad:
            raise RecipeError(f"{dotted}={value!r} is not allowed: it must be {allowed}")


def check_recipe(config: dict[str, Any], processes: int) -> None:
    """Configuration errors that need no data: sizes, batch split, budgets."""
    check_recipe_values(config)
    model, data, training = config["model"], config["data"], config["training"]
    if data["block_size"] > model["max_position_embeddings"]:
        raise RecipeError(
            f"data.block_size={data['block_size']} is above the model's context length "
            f"model.max_position_embeddings={model['max_position_embeddings']}; lower data.block_size or raise the context"
        )
    if data["block_size"] < 2:
        raise RecipeError(f"data.block_size={data['block_size']}: a block needs at least 2 tokens")
    per_step = processes * training["gradient_accumulation_steps"]
    if training["batch_size"] % per_step:
        raise RecipeError(
            f"training.batch_size={training['batch_size']} sequences cannot be split evenly over {processes} "
            f"process(es) x {training['gradient_accumulation_steps']} accumulation steps; make it a multiple of {per_step}"
        )
    tokens_per_step = training["batch_size"] * data["block_size"]
    for key, budget in (("training.token_budget", training.get("token_budget")),
                        ("data.source_token_budget", data.get("source_token_budget"))):
        if budget is not None and budget < tokens_per_step:
            raise RecipeError(
                f"{key}={budget} is smaller than one optimizer step ({training['batch_size']} sequences x "
                f"{data['block_size']} tokens = {tokens_per_step} tokens); raise it or lower the batch/block size"
            )
    if config["t4_recipe"]["fp32_layers"] > model["num_hidden_layers"]:
        raise RecipeError(
            f"t4_recipe.fp32_layers={config['t4_recipe']['fp32_layers']} but the model has "
            f"{model['num_hidden_layers']} layers"
        )
    if config["schedule"]["type"] not in ("cosine", "wsd"):
        raise RecipeError(f"schedule.type={config['schedule']['type']!r}: use cosine or wsd")


def check_hub(hub: dict) -> None:
    """``hub.*``: a repo id and branch the Hub accepts, a known strategy, and a token, all before
    training starts (a bad name would otherwise fail only in the background pushes)."""
    from stentor_hub.helpers import check_branch, check_repo_id
    from stentor_hub.recipes.hub_push import STRATEGIES

    repo_id = hub.get("repo_id")
    if repo_id is None:
        return
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise RecipeError(f"hub.repo_id={repo_id!r}: use OWNER/NAME (or null to push nothing)")
    check_repo_id(repo_id, RecipeError, "hub.repo_id")
    if hub.get("revision") is not None:
        check_branch(hub["revision"], RecipeError, "hub.revision")
    if hub.get("strategy") not in STRATEGIES:
        raise RecipeError(f"hub.strategy={hub.get('strategy')!r}: use one of {', '.join(STRATEGIES)}")
    from huggingface_hub import get_token

    if not get_token():
        raise RecipeError(
            f"hub.repo_id={repo_id} needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login` "
            "(HF_ENDPOINT picks another Hub); checked before training, so nothing was done"
        )


def check_output_dir(run: RunDir, resume: bool, resume_from_hub: bool = False) -> None:
    """The output folder must be writable, and must not hold another run unless resuming
    (from its checkpoints, or, with ``hub.repo_id``, from the Hub)."""
    run_dir = existing = run.path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RecipeError(f"output directory {run_dir} is not writable ({existing} is not a writable folder); choose another --output-dir")
    has_run = run_dir.is_dir() and any(run_dir.iterdir())
    if has_run and not resume:
        raise RecipeError(
            f"output directory {run_dir} already holds files; pass --resume to continue that run, "
            "or choose a new --output-dir (nothing is overwritten)"
        )
    if resume and not resume_from_hub and not run.checkpoints.is_dir():
        raise RecipeError(f"--resume: {run_dir}/checkpoints does not exist; there is no run to resume there")


def check_vocab(tokenizer, model_config: dict) -> None:
    if len(tokenizer) != model_config["vocab_size"]:
        raise RecipeError(
            f"the tokenizer has {len(tokenizer)} ids but model.vocab_size={model_config['vocab_size']}; "
            f"set model.vocab_size={len(tokenizer)} (or use the matching vocabulary)"
        )


# -- model, optimizer, schedule ---------------------------------------------------------------


def build_model(model_config: dict, tokenizer):
    """A freshly initialised LlamaForCausalLM: normal(0, std) for Linear and Embedding weights,
    RMSNorm weights 1, biases 0."""
    import torch
    from torch import nn
    from transformers import LlamaConfig, LlamaForCausalLM

    settings = {k: v for k, v in model_config.items() if k not in ("architecture", "attn_implementation")}
    if model_config.get("architecture", "LlamaForCausalLM") != "LlamaForCausalLM":
        raise RecipeError(f"model.architecture={model_config['architecture']!r}: only LlamaForCausalLM is supported")
    config = LlamaConfig(
        **settings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attention_bias=False,
        mlp_bias=False,
        use_cache=True,
    )
    config._attn_implementation = model_config.get("attn_implementation", "sdpa")
    model = LlamaForCausalLM(config)
    std = model_config.get("initializer_range", 0.02)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif type(module).__name__.endswith("RMSNorm"):
                module.weight.fill_(1.0)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def count_parameters(model) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def build_optimizer(model, opt: dict, device_type: str):
    """AdamW with weight decay on ``nn.Linear`` weights only (none on embeddings, norms, biases;
    a tied output layer is the embedding, so it is not decayed either)."""
    import torch
    from torch import nn

    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)} - embedding_ids
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    decay = [p for p in params if id(p) in decay_ids]
    no_decay = [p for p in params if id(p) not in decay_ids]
    fused = opt.get("fused", "auto")
    fused = device_type == "cuda" if fused == "auto" else bool(fused)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": opt["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opt["lr"], betas=tuple(opt["betas"]), eps=opt["eps"], fused=fused,
    )


def lr_lambda(schedule: dict):
    """Multiplier of the peak lr at a step: linear warmup, then cosine to ``min_lr_ratio`` at
    ``total_steps`` (or, for ``wsd``, flat for ``stable_steps`` and then a linear decay)."""
    warmup, total = schedule["warmup_steps"], schedule["total_steps"]
    floor = schedule.get("min_lr_ratio", 0.0)
    kind, stable = schedule["type"], schedule.get("stable_steps", 0)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "wsd":
            if step < warmup + stable:
                return 1.0
            progress = min(1.0, (step - warmup - stable) / max(1, total - warmup - stable))
            return floor + (1.0 - floor) * (1.0 - progress)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


# -- the run, in named steps (as torchtune's recipes): arguments, data, model, trainer, outputs, manifest


def _versions() -> dict[str, str]:
    import accelerate
    import datasets
    import torch
    import transformers

    import stentor_hub

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "accelerate": accelerate.__version__, "datasets": datasets.__version__,
            "stentor_hub": getattr(stentor_hub, "__version__", "unknown")}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunSetup:
    """Step 1, the arguments: the checked inputs of a run and its ``TrainingArguments``."""

    run: RunDir
    config: dict[str, Any]
    processes: int
    device_type: str
    mixed_precision: str
    vocab_path: Path  # resolved once: the tokenizer and the exported tokenizer folder use it
    tokenizer: Any
    train_sources: list
    eval_sources: list
    per_device_batch: int
    resume_from: Path | None
    tokens: Any = None  # stentor_hub.recipes.prepare.PreparedShards, prepared before the process group
    sessions_before: list = field(default_factory=list)  # training sessions up to resume_from (its marker)
    args: Any = None  # transformers.TrainingArguments
    started_at: str = field(default_factory=_now)
    started: float = field(default_factory=time.perf_counter)

    @property
    def is_main(self) -> bool:
        return self.args.process_index == 0


@dataclass
class RunData:
    """Step 2, the data: token blocks for the Trainer and the step budget they allow."""

    tokens: Any  # stentor_hub.recipes.data.TokenData
    train_dataset: Any
    eval_dataset: Any
    train_blocks: int
    steps_per_epoch: int
    max_steps: int


@dataclass
class RunModel:
    """Step 3, the model: freshly initialised, T4 recipe applied, with its optimizer and schedule."""

    model: Any
    optimizer: Any
    scheduler: Any
    parameters: int
    t4_counts: dict


def setup_arguments(config: dict[str, Any], output_dir: str | os.PathLike, resume: bool) -> RunSetup:
    """Every check that needs no data, then the ``TrainingArguments`` (which set up the processes,
    gloo on CPU, so they come before the data work)."""
    import torch

    from stentor_hub.recipes import callbacks as cb
    from stentor_hub.recipes.data import Source
    from stentor_hub.tokenizer import load_vocab_tokenizer, resolve_vocab

    run = RunDir(Path(output_dir).expanduser().resolve())
    processes = world_size()
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    check_recipe_values(config)  # types and ranges first: the checks below index and divide by them
    model_cfg, data_cfg, train_cfg = config["model"], config["data"], config["training"]
    hub = config.get("hub") or {}
    check_recipe(config, processes)
    check_hub(hub)
    mixed_precision = resolve_mixed_precision(train_cfg["mixed_precision"], device_type)
    check_output_dir(run, resume, resume_from_hub=bool(hub.get("repo_id")))
    vocab_path = resolve_vocab(config["tokenizer"]["vocab"])
    tokenizer = load_vocab_tokenizer(vocab_path)
    check_vocab(tokenizer, model_cfg)
    resume_from, sessions_before = None, []
    if resume:
        resume_from = cb.last_complete_checkpoint(run.checkpoints, set_aside=os.environ.get("RANK", "0") == "0")
        if resume_from is None and hub.get("repo_id"):
            resume_from = _checkpoint_from_hub(hub, run.checkpoints)
        if resume_from is None:
            where = f"{run.checkpoints} or on the Hub ({hub['repo_id']})" if hub.get("repo_id") else str(run.checkpoints)
            raise RecipeError(f"--resume: no complete checkpoint in {where}; start a new run instead")
        sessions_before = earlier_sessions(resume_from)
    setup = RunSetup(
        run=run, config=config, processes=processes, device_type=device_type, mixed_precision=mixed_precision,
        vocab_path=vocab_path, tokenizer=tokenizer,
        train_sources=[Source.parse(s) for s in data_cfg["train_sources"] or []],
        eval_sources=[Source.parse(s) for s in data_cfg.get("eval_sources") or []],
        per_device_batch=train_cfg["batch_size"] // (processes * train_cfg["gradient_accumulation_steps"]),
        resume_from=resume_from, sessions_before=sessions_before,
    )
    setup.tokens = prepare_data(setup)
    setup.args = training_arguments(setup)
    return setup


def prepare_data(setup: RunSetup):
    """The token shards, before ``TrainingArguments`` forms the process group: one process
    prepares them (every core) while the others wait for its index file, in no collective call
    that could time out. On CPU with several processes the gloo group is then formed here with
    ``training.ddp_timeout`` (transformers hands the timeout to the process group on GPUs only)."""
    import torch

    from stentor_hub.recipes.prepare import prepare_recipe_data, wait_for_shards

    if os.environ.get("RANK", "0") == "0":
        tokens = prepare_recipe_data(setup.config, setup.tokenizer, progress=True)
    else:
        tokens = wait_for_shards(setup.config, setup.tokenizer)
    if setup.device_type == "cpu" and setup.processes > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", timeout=_dt.timedelta(seconds=ddp_timeout(setup.config)))
    return tokens


def ddp_timeout(config: dict) -> int:
    return int(config["training"].get("ddp_timeout", 1800))


def _checkpoint_from_hub(hub: dict, checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint pushed to ``hub.repo_id``, downloaded by one process per machine
    (the others wait for its completion marker), as ``checkpoints_dir/checkpoint-N``."""
    from stentor_hub.recipes import callbacks as cb
    from stentor_hub.recipes.hub_push import download_last_checkpoint

    if os.environ.get("LOCAL_RANK", "0") == "0":
        logger.info("no local checkpoint: downloading the last one pushed to %s", hub["repo_id"])
        try:
            download_last_checkpoint(hub["repo_id"], checkpoints_dir, revision=hub.get("revision"))
        except Exception as e:
            raise RecipeError(f"--resume: could not download a checkpoint from {hub['repo_id']} ({type(e).__name__}: {str(e)[:300]})") from None
    else:
        deadline = time.monotonic() + 3600
        while cb.last_complete_checkpoint(checkpoints_dir, set_aside=False) is None and time.monotonic() < deadline:
            time.sleep(1)
    return cb.last_complete_checkpoint(checkpoints_dir, set_aside=False)


def earlier_sessions(checkpoint: Path) -> list[dict]:
    """The training sessions up to ``checkpoint``, from its completion marker (a marker written
    before sessions were recorded gives one session of unknown duration)."""
    from stentor_hub.recipes.callbacks import COMPLETE_MARKER

    marker = json.loads((checkpoint / COMPLETE_MARKER).read_text())
    if isinstance(marker.get("sessions"), list) and marker["sessions"]:
        return marker["sessions"]
    return [{"started_at": None, "from_step": 0, "to_step": marker["step"], "tokens": marker["num_input_tokens_seen"],
             "train_seconds": None}]


def check_not_finished(setup: RunSetup, data: RunData) -> None:
    """``--resume`` on a run that already reached its step or token budget (and wrote its manifest)
    is refused: training again would redo the last step and overwrite final/, best/ and the manifest."""
    from stentor_hub.recipes.callbacks import COMPLETE_MARKER

    if setup.resume_from is None or not setup.run.manifest_file.is_file():
        return
    marker = json.loads((setup.resume_from / COMPLETE_MARKER).read_text())
    step, tokens = marker["step"], marker["num_input_tokens_seen"]
    budget = setup.config["training"].get("token_budget")
    if step >= data.max_steps or (budget is not None and tokens >= budget):
        limit = (f"training.max_steps={data.max_steps}" if step >= data.max_steps else f"training.token_budget={budget}")
        raise RecipeError(
            f"--resume: the run in {setup.run.path} is finished (its last checkpoint, step {step}, reached {limit}); "
            "nothing was changed. To train further raise training.max_steps (or training.token_budget) with --resume, "
            "or start a new run in another --output-dir")


def training_arguments(setup: RunSetup):
    """The recipe's ``training`` section as ``TrainingArguments``; ``max_steps`` is set by the data step."""
    from transformers import TrainingArguments

    train_cfg, seed = setup.config["training"], setup.config["seed"]
    return TrainingArguments(
        output_dir=str(setup.run.checkpoints),
        per_device_train_batch_size=setup.per_device_batch,
        per_device_eval_batch_size=setup.per_device_batch,
        gradient_accumulation_steps=train_cfg["gradient_accumulation_steps"],
        max_steps=1,  # replaced once the data size is known
        max_grad_norm=train_cfg["max_grad_norm"],
        fp16=setup.mixed_precision == "fp16",
        bf16=setup.mixed_precision == "bf16",
        use_cpu=setup.device_type == "cpu",
        eval_strategy="steps",
        eval_steps=train_cfg["eval_steps"],
        eval_on_start=setup.resume_from is None,  # the starting loss, to show how far training got
        logging_steps=train_cfg["logging_steps"],
        save_strategy="steps",
        save_steps=train_cfg["save_steps"],
        save_total_limit=train_cfg["save_total_limit"],
        seed=seed,
        data_seed=seed,
        include_num_input_tokens_seen="all",
        dataloader_num_workers=train_cfg["dataloader_num_workers"],
        ddp_backend="gloo" if setup.device_type == "cpu" and setup.processes > 1 else None,
        ddp_timeout=ddp_timeout(setup.config),
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        report_to=[],
    )


def setup_data(setup: RunSetup) -> RunData:
    """The prepared tokens (memory-mapped shards, see :func:`prepare_data`), cut into full
    batches of blocks; the step budget follows from their number."""
    from stentor_hub.recipes.data import BlockDataset

    data_cfg, train_cfg = setup.config["data"], setup.config["training"]
    block, global_batch = data_cfg["block_size"], train_cfg["batch_size"]
    tokens = setup.tokens
    train_blocks = (len(tokens.train) // block) // global_batch * global_batch  # every step a full batch
    if train_blocks == 0:
        raise RecipeError(
            f"the training data gives {len(tokens.train)} tokens, less than one batch of {global_batch} blocks of "
            f"{block} tokens; add text (data.train_sources, max_chars) or lower training.batch_size / data.block_size"
        )
    eval_dataset = BlockDataset(tokens.eval, block, data_cfg.get("max_eval_samples"))
    if len(eval_dataset) == 0:
        raise RecipeError(
            f"the evaluation data gives {len(tokens.eval)} tokens, less than one block of {block}; "
            "add text to data.eval_sources (or raise max_chars)"
        )
    steps_per_epoch = train_blocks // global_batch
    max_steps = train_cfg.get("max_steps") or math.ceil((train_cfg.get("epochs") or 1) * steps_per_epoch)
    setup.args.max_steps = max_steps
    return RunData(tokens, BlockDataset(tokens.train, block, train_blocks), eval_dataset, train_blocks,
                   steps_per_epoch, max_steps)


def setup_model(setup: RunSetup) -> RunModel:
    """The model, with the T4 recipe patched in before the Trainer wraps it, and its optimizer."""
    import torch
    from transformers import set_seed

    from stentor_hub.recipes.t4 import apply_t4_recipe

    config = setup.config
    set_seed(config["seed"])
    model = build_model(config["model"], setup.tokenizer)
    t4_cfg = config["t4_recipe"]
    t4_counts = {"fp32_norm_modules": 0, "fp32_layers": 0, "softmax_modules_patched": 0}
    if t4_cfg["enabled"]:
        t4_counts = apply_t4_recipe(model, t4_cfg["fp32_layers"], t4_cfg.get("fp32_norms", True))
    optimizer = build_optimizer(model, config["optimizer"], setup.device_type)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config["schedule"]))
    return RunModel(model, optimizer, scheduler, count_parameters(model), t4_counts)


def setup_trainer(setup: RunSetup, data: RunData, parts: RunModel, callbacks: list | None = None):
    """The Trainer with the recipe's callbacks (stop rules, T4 checks, best checkpoint, curves,
    checkpoint markers, Hub pushes, throughput) plus ``callbacks``. Returns
    ``(trainer, stop_rules, best, hub_push)``; ``hub_push`` is None without ``hub.repo_id``."""
    from transformers import Trainer

    from stentor_hub.recipes import callbacks as cb
    from stentor_hub.recipes.hub_push import HubPushCallback
    from stentor_hub.recipes.t4 import T4RecipeCallback

    hub = setup.config.get("hub") or {}
    hub_push = None
    if hub.get("repo_id"):
        def manifest_so_far(state) -> dict:
            return {"schema_version": MANIFEST_SCHEMA_VERSION, "recipe_name": setup.config.get("name"), "recipe": setup.config,
                    "in_progress": True, "started_at": setup.started_at,
                    "model": {"architecture": "LlamaForCausalLM", "parameters": parts.parameters},
                    "training": {"steps": state.global_step, "tokens_seen": int(state.num_input_tokens_seen), "max_steps": data.max_steps}}

        hub_push = HubPushCallback(setup.run.path, hub, manifest_so_far)

    train_cfg, t4_enabled = setup.config["training"], setup.config["t4_recipe"]["enabled"]
    stop_rules = cb.StopRulesCallback(train_cfg.get("token_budget"), train_cfg.get("epochs"), train_cfg.get("max_steps"))
    best = cb.BestCheckpointCallback(setup.run.best, train_cfg["best_eval_start_step"], setup.run.tokenizer)
    trainer = Trainer(
        model=parts.model, args=setup.args, train_dataset=data.train_dataset, eval_dataset=data.eval_dataset,
        optimizers=(parts.optimizer, parts.scheduler),
        callbacks=[c for c in (stop_rules, T4RecipeCallback(parts.t4_counts) if t4_enabled else None, best,
                               cb.CurvesCallback(setup.run.curves_file),
                               cb.CheckpointMarkerCallback(setup.sessions_before, setup.started_at),
                               hub_push, *(callbacks or [])) if c],
    )
    trainer.callback_handler.callbacks.insert(0, cb.ThroughputCallback())  # first, so every logger sees it
    return trainer, stop_rules, best, hub_push


def save_outputs(setup: RunSetup, parts: RunModel, trainer, best) -> dict:
    """``final/`` and, when no evaluation reached ``best_eval_start_step``, ``best/`` as the final
    model; both are complete model folders (weights, configs, tokenizer). Returns the best record."""
    from stentor_hub.recipes import callbacks as cb

    state = trainer.state
    cb.save_model_atomic(parts.model, setup.run.final, setup.run.tokenizer)
    if best.best is not None:
        return best.best
    final_eval = _last_log(state, "eval_loss")
    record = {"step": state.global_step, "eval_loss": final_eval.get("eval_loss"),
              "eval_ppl": cb.perplexity(final_eval["eval_loss"]) if final_eval else None,
              "note": f"no evaluation at or after best_eval_start_step="
                      f"{setup.config['training']['best_eval_start_step']}; best = final"}
    cb.save_model_atomic(parts.model, setup.run.best, setup.run.tokenizer,
                         extra={cb.BEST_RECORD: json.dumps(record, indent=2)})
    return record


def _last_log(state, key: str) -> dict:
    return next((h for h in reversed(state.log_history) if key in h), {})


def _hardware(setup: RunSetup) -> dict:
    import torch

    return {
        "device": setup.device_type,
        "device_name": torch.cuda.get_device_name(0) if setup.device_type == "cuda" else _cpu_name(),
        "num_processes": setup.processes,
        "mixed_precision": setup.mixed_precision,
        "cpu_count": os.cpu_count(),
    }


def _data_record(setup: RunSetup, data: RunData) -> dict:
    block, tokens = setup.config["data"]["block_size"], data.tokens
    by_source = tokens.source_tokens("train")
    return {
        "train_sources": [s.describe() for s in setup.train_sources],
        "eval_sources": [s.describe() for s in setup.eval_sources] or "held out from the start of train_sources",
        "source_tokens": int(len(tokens.train)),
        # what each train source gave, in train_sources' order (None: shards prepared without the counts)
        "source_tokens_by_source": None if by_source is None else [int(r["tokens"]) for r in by_source],
        "train_tokens": data.train_blocks * block,
        "eval_tokens": len(data.eval_dataset) * block,
        "block_size": block,
        "train_blocks": data.train_blocks,
        "eval_blocks": len(data.eval_dataset),
        "cache_file": str(tokens.index_file),
        "prepare_seconds": round(tokens.seconds, 2),  # 0 when the shards were prepared before
    }


def session_totals(setup: RunSetup, state, train_seconds: float, tokens_before: int) -> dict:
    """Time, tokens and throughput over every session of the run (a resumed run has several),
    each session listed: ``wall_time_seconds``, ``train_seconds``, ``tokens_per_second``, ``sessions``."""
    this = {"started_at": setup.started_at, "from_step": int(setup.resume_from.name.split("-")[-1]) if setup.resume_from else 0,
            "to_step": state.global_step, "tokens": int(state.num_input_tokens_seen - tokens_before),
            "train_seconds": round(train_seconds, 2), "wall_time_seconds": round(time.perf_counter() - setup.started, 2)}
    sessions = [*setup.sessions_before, this]
    train_total = sum(s.get("train_seconds") or 0 for s in sessions)
    wall_total = sum(s.get("wall_time_seconds") or s.get("train_seconds") or 0 for s in sessions)
    tokens_total = sum(s.get("tokens") or 0 for s in sessions)
    totals = {"wall_time_seconds": round(wall_total, 2), "train_seconds": round(train_total, 2),
              "tokens_per_second": round(tokens_total / max(train_total, 1e-9), 1), "sessions": sessions}
    if any(s.get("train_seconds") is None for s in sessions):
        totals["sessions_note"] = "a session before resuming recorded no duration; its time is not in the totals"
    return totals


def build_manifest(setup: RunSetup, data: RunData, parts: RunModel, state, stopped_by: str | None,
                   best_record: dict, train_seconds: float, tokens_before: int) -> RunManifest:
    """What was run, on what, and how it ended (``run_manifest.json``, schema 1)."""
    from stentor_hub.recipes.callbacks import perplexity

    config, block = setup.config, setup.config["data"]["block_size"]
    train_cfg, global_batch = config["training"], config["training"]["batch_size"]
    final_eval, final_train = _last_log(state, "eval_loss"), _last_log(state, "loss")
    return RunManifest(
        schema_version=MANIFEST_SCHEMA_VERSION,
        recipe_name=config.get("name"),
        recipe=config,
        model={"architecture": "LlamaForCausalLM", "parameters": parts.parameters},
        versions=_versions(),
        hardware=_hardware(setup),
        t4_recipe={"enabled": bool(config["t4_recipe"]["enabled"]), **parts.t4_counts},
        data=_data_record(setup, data),
        training={
            "tokens_seen": int(state.num_input_tokens_seen),
            "steps": state.global_step,
            "epochs": round(state.epoch or 0.0, 6),
            **session_totals(setup, state, train_seconds, tokens_before),
            "stopped_by": stopped_by or "max_steps",
            "batch_size": global_batch,
            "per_device_batch_size": setup.per_device_batch,
            "gradient_accumulation_steps": train_cfg["gradient_accumulation_steps"],
            "tokens_per_step": global_batch * block,
            "steps_per_epoch": data.steps_per_epoch,
            "max_steps": data.max_steps,
            "token_budget": train_cfg.get("token_budget"),
            "resumed_from_step": int(setup.resume_from.name.split("-")[-1]) if setup.resume_from else None,
        },
        best={k: best_record.get(k) for k in ("step", "eval_loss", "eval_ppl")} | (
            {"note": best_record["note"]} if "note" in best_record else {}),
        final={
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 6),
            "train_loss": final_train.get("loss"),
            "eval_loss": final_eval.get("eval_loss"),
            "eval_ppl": perplexity(final_eval["eval_loss"]) if final_eval else None,
        },
        started_at=setup.started_at,
        finished_at=_now(),
    )


def _last_checkpoint(run: RunDir) -> Path | None:
    from stentor_hub.recipes.callbacks import last_complete_checkpoint

    return last_complete_checkpoint(run.checkpoints, set_aside=False)


def _close_progress_bars(trainer) -> None:
    """Close the Trainer's progress bar now, so that the message a stopped run ends with is the
    last line printed."""
    for callback in trainer.callback_handler.callbacks:
        bar = getattr(callback, "training_bar", None)
        if bar is not None:
            bar.close()


def _disk_full_in_training(error: BaseException, run: RunDir, step: int):
    """The :class:`~stentor_hub.errors.DiskFullError` to stop with when ``error`` is the disk of
    the run filling up (while the Trainer saved ``checkpoint-{step}``, or ours saved ``best/``),
    naming the checkpoint to resume from; ``None`` for any other error. The half-written
    checkpoint, this session's own and unmarked, is removed: it could only be set aside on resume,
    taking the room the resume needs."""
    from stentor_hub.errors import DiskFullError
    from stentor_hub.helpers import disk_full, folder_size
    from stentor_hub.recipes.callbacks import COMPLETE_MARKER

    last = _last_checkpoint(run)
    partial = run.checkpoints / f"checkpoint-{step}"
    partial = partial if partial.is_dir() and not (partial / COMPLETE_MARKER).is_file() else None
    if isinstance(error, DiskFullError):
        full = error
    else:
        needed = max(folder_size(last) if last else 0, folder_size(partial) if partial else 0, 1 << 20)
        full = disk_full(error, run.checkpoints, f"the step-{step} checkpoint", needed=needed)
        if full is None:
            return None
    if partial is not None:
        shutil.rmtree(partial, ignore_errors=True)
    resume = f"; the last complete checkpoint is {last.name}: continue with --resume" if last else ""
    return DiskFullError(f"{full}{resume}")


def train(config: dict[str, Any], output_dir: str | os.PathLike, resume: bool = False,
          callbacks: list | None = None) -> RunDir:
    """Train a resolved recipe (see :func:`~stentor_hub.recipes.config.load_recipe`) into
    ``output_dir``; ``callbacks`` are extra ``TrainerCallback``s (timers, loggers).

    Returns the :class:`~stentor_hub.run_dir.RunDir`. Raises :class:`RecipeError` (a
    ``ValueError``) or :class:`~stentor_hub.errors.MissingInputError` for bad input, before
    anything is written."""
    from stentor_hub.helpers import write_text_atomic
    from stentor_hub.recipes.callbacks import COMPLETE_MARKER
    from stentor_hub.tokenizer import export_tokenizer

    setup = setup_arguments(config, output_dir, resume)
    data = setup_data(setup)
    check_not_finished(setup, data)
    parts = setup_model(setup)
    run = setup.run
    if setup.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        if setup.resume_from is None or not (run.tokenizer / "tokenizer_config.json").is_file():
            export_tokenizer(setup.vocab_path, run.tokenizer, mark=False)  # a resumed run keeps the tokenizer it trained with
        logger.info("model: %s parameters; data: %d train blocks, %d eval blocks of %d tokens%s", f"{parts.parameters:,}",
                    data.train_blocks, len(data.eval_dataset), config["data"]["block_size"],
                    "" if data.tokens.prepared_now else " (prepared before)")
    trainer, stop_rules, best, hub_push = setup_trainer(setup, data, parts, callbacks)

    tokens_before = 0
    if setup.resume_from is not None:
        tokens_before = json.loads((setup.resume_from / COMPLETE_MARKER).read_text())["num_input_tokens_seen"]
        logger.info("resuming from %s", setup.resume_from)
    train_start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(setup.resume_from) if setup.resume_from else None)
    except KeyboardInterrupt:
        _close_progress_bars(trainer)
        last = _last_checkpoint(run)
        where = (f"the last complete checkpoint is {last.name}; continue with --resume" if last is not None
                 else "no checkpoint was complete yet; start again (the folder holds no finished run)")
        raise KeyboardInterrupt(f"interrupted at step {trainer.state.global_step}: {where}") from None
    except (OSError, RuntimeError) as e:
        full = _disk_full_in_training(e, run, trainer.state.global_step)
        if full is None:
            raise
        _close_progress_bars(trainer)
        raise full from None
    train_seconds = time.perf_counter() - train_start
    trainer.accelerator.wait_for_everyone()
    if not setup.is_main:
        return run

    best_record = save_outputs(setup, parts, trainer, best)
    manifest = build_manifest(setup, data, parts, trainer.state, stop_rules.stopped_by, best_record,
                              train_seconds, tokens_before)
    write_text_atomic(run.manifest_file, manifest.to_json())
    if hub_push is not None:
        hub_push.push_final(trainer.state.global_step)
    logger.info("done: %s steps, %s tokens, stopped by %s; final eval loss %s; wrote %s", trainer.state.global_step,
                f"{trainer.state.num_input_tokens_seen:,}", manifest.training["stopped_by"], manifest.final["eval_loss"],
                run.path)
    return run


if __name__ == "__main__":
    from stentor_hub.commands.train import main

    sys.exit(main())

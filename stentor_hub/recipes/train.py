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

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from stentor_hub.recipes.config import load_recipe

logger = logging.getLogger("stentor_hub.recipes.train")

MANIFEST_SCHEMA_VERSION = 1


class RecipeError(ValueError):
    """A recipe or its inputs cannot be trained; the message says what to change."""


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


def check_recipe(config: dict[str, Any], processes: int) -> None:
    """Configuration errors that need no data: sizes, batch split, budgets."""
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


def check_output_dir(run_dir: Path, resume: bool) -> None:
    """The output folder must be writable, and must not hold another run unless resuming."""
    existing = run_dir
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
    if resume and not (run_dir / "checkpoints").is_dir():
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


# -- the run ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stentor_hub.recipes.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="recipe YAML path or shipped name (tiny-cpu, stentor2-30m)")
    parser.add_argument("--output-dir", default=None, help="run directory (default runs/<recipe name>)")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    return parser.parse_args(argv)


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


def train(config: dict[str, Any], output_dir: str | os.PathLike, resume: bool = False, callbacks: list | None = None) -> Path:
    """Run a resolved recipe (see :func:`~stentor_hub.recipes.config.load_recipe`) into
    ``output_dir``; ``callbacks`` are extra ``TrainerCallback``s (timers, loggers). Returns the
    run directory. Raises :class:`RecipeError` (a ``ValueError``) or ``FileNotFoundError`` for
    bad input, before anything is written."""
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    from stentor_hub.recipes import callbacks as cb
    from stentor_hub.recipes.data import BlockDataset, Source
    from stentor_hub.recipes.prepare import prepare_recipe_data, wait_for_shards
    from stentor_hub.recipes.t4 import T4RecipeCallback, apply_t4_recipe
    from stentor_hub.tokenizer import export_tokenizer, resolve_vocab, tokenizer_class

    started_at, t0 = _now(), time.perf_counter()
    run_dir = Path(output_dir).expanduser().resolve()
    processes = world_size()
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    model_cfg, data_cfg, train_cfg = config["model"], config["data"], config["training"]

    check_recipe(config, processes)
    mixed_precision = resolve_mixed_precision(train_cfg["mixed_precision"], device_type)
    check_output_dir(run_dir, resume)
    tokenizer = tokenizer_class()(vocab_file=str(resolve_vocab(config["tokenizer"]["vocab"])))
    check_vocab(tokenizer, model_cfg)
    train_sources = [Source.parse(s) for s in data_cfg["train_sources"] or []]
    eval_sources = [Source.parse(s) for s in data_cfg.get("eval_sources") or []]

    per_device_batch = train_cfg["batch_size"] // (processes * train_cfg["gradient_accumulation_steps"])
    checkpoints_dir = run_dir / "checkpoints"
    resume_from = None
    if resume:
        resume_from = cb.last_complete_checkpoint(checkpoints_dir, set_aside=os.environ.get("RANK", "0") == "0")
        if resume_from is None:
            raise RecipeError(f"--resume: no complete checkpoint in {checkpoints_dir}; start a new run instead")

    # data, before TrainingArguments forms the process group: one process prepares the token shards
    # (every core) while the others wait for its index file, in no collective call that could time out
    if os.environ.get("RANK", "0") == "0":
        tokens = prepare_recipe_data(config, tokenizer, progress=True)
    else:
        tokens = wait_for_shards(config, tokenizer)
    ddp_timeout = int(train_cfg.get("ddp_timeout", 1800))
    if device_type == "cpu" and processes > 1 and not torch.distributed.is_initialized():
        # transformers hands ddp_timeout to the process group on GPUs only; on CPU (gloo) it is set here
        torch.distributed.init_process_group("gloo", timeout=_dt.timedelta(seconds=ddp_timeout))

    args = TrainingArguments(
        output_dir=str(checkpoints_dir),
        per_device_train_batch_size=per_device_batch,
        per_device_eval_batch_size=per_device_batch,
        gradient_accumulation_steps=train_cfg["gradient_accumulation_steps"],
        max_steps=1,  # replaced below, once the data size is known
        max_grad_norm=train_cfg["max_grad_norm"],
        fp16=mixed_precision == "fp16",
        bf16=mixed_precision == "bf16",
        use_cpu=device_type == "cpu",
        eval_strategy="steps",
        eval_steps=train_cfg["eval_steps"],
        eval_on_start=resume_from is None,  # the starting loss, to show how far training got
        logging_steps=train_cfg["logging_steps"],
        save_strategy="steps",
        save_steps=train_cfg["save_steps"],
        save_total_limit=train_cfg["save_total_limit"],
        seed=config["seed"],
        data_seed=config["seed"],
        include_num_input_tokens_seen="all",
        dataloader_num_workers=train_cfg["dataloader_num_workers"],
        ddp_backend="gloo" if device_type == "cpu" and processes > 1 else None,
        ddp_find_unused_parameters=False,
        ddp_timeout=ddp_timeout,
        remove_unused_columns=False,
        report_to=[],
    )
    is_main = args.process_index == 0

    block = data_cfg["block_size"]
    global_batch = train_cfg["batch_size"]
    n_train_blocks = (len(tokens.train) // block) // global_batch * global_batch  # every step a full batch
    if n_train_blocks == 0:
        raise RecipeError(
            f"the training data gives {len(tokens.train)} tokens, less than one batch of {global_batch} blocks of "
            f"{block} tokens; add text (data.train_sources, max_chars) or lower training.batch_size / data.block_size"
        )
    train_dataset = BlockDataset(tokens.train, block, n_train_blocks)
    eval_dataset = BlockDataset(tokens.eval, block, data_cfg.get("max_eval_samples"))
    if len(eval_dataset) == 0:
        raise RecipeError(
            f"the evaluation data gives {len(tokens.eval)} tokens, less than one block of {block}; "
            "add text to data.eval_sources (or raise max_chars)"
        )
    steps_per_epoch = n_train_blocks // global_batch
    epochs = train_cfg.get("epochs")
    max_steps = train_cfg.get("max_steps") or math.ceil((epochs or 1) * steps_per_epoch)
    args.max_steps = max_steps
    token_budget = train_cfg.get("token_budget")

    # model, with the T4 recipe patched in before the Trainer wraps it
    set_seed(config["seed"])
    model = build_model(model_cfg, tokenizer)
    n_params = count_parameters(model)
    t4_cfg = config["t4_recipe"]
    t4_counts = {"fp32_norm_modules": 0, "fp32_layers": 0, "softmax_modules_patched": 0}
    if t4_cfg["enabled"]:
        t4_counts = apply_t4_recipe(model, t4_cfg["fp32_layers"], t4_cfg.get("fp32_norms", True))
    optimizer = build_optimizer(model, config["optimizer"], device_type)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config["schedule"]))

    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        export_tokenizer(resolve_vocab(config["tokenizer"]["vocab"]), run_dir / "tokenizer")
        logger.info("model: %s parameters; data: %d train blocks, %d eval blocks of %d tokens%s", f"{n_params:,}",
                    n_train_blocks, len(eval_dataset), block, "" if tokens.prepared_now else " (prepared before)")

    stop_rules = cb.StopRulesCallback(token_budget, epochs, train_cfg.get("max_steps"))
    best = cb.BestCheckpointCallback(run_dir / "best", train_cfg["best_eval_start_step"])
    trainer = Trainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        optimizers=(optimizer, scheduler),
        callbacks=[c for c in (stop_rules, T4RecipeCallback(t4_counts) if t4_cfg["enabled"] else None, best,
                               cb.CurvesCallback(run_dir / "training_curves.csv"), cb.CheckpointMarkerCallback(),
                               *(callbacks or [])) if c],
    )
    trainer.callback_handler.callbacks.insert(0, cb.ThroughputCallback())  # first, so every logger sees it

    train_start = time.perf_counter()
    tokens_before = 0
    if resume_from is not None:
        tokens_before = json.loads((resume_from / cb.COMPLETE_MARKER).read_text())["num_input_tokens_seen"]
        logger.info("resuming from %s", resume_from)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - train_start
    state = trainer.state
    trainer.accelerator.wait_for_everyone()
    if not is_main:
        return run_dir

    # outputs: final model, best (the final one when no evaluation reached best_eval_start_step)
    final_eval = next((h for h in reversed(state.log_history) if "eval_loss" in h), {})
    final_train = next((h for h in reversed(state.log_history) if "loss" in h), {})
    cb.save_model_atomic(model, run_dir / "final")
    best_record = best.best
    if best_record is None:
        best_record = {"step": state.global_step, "eval_loss": final_eval.get("eval_loss"),
                       "eval_ppl": cb.perplexity(final_eval["eval_loss"]) if final_eval else None,
                       "note": f"no evaluation at or after best_eval_start_step={train_cfg['best_eval_start_step']}; best = final"}
        cb.save_model_atomic(model, run_dir / "best", extra={cb.BEST_RECORD: json.dumps(best_record, indent=2)})

    session_tokens = state.num_input_tokens_seen - tokens_before
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "recipe_name": config.get("name"),
        "recipe": config,
        "model": {"architecture": "LlamaForCausalLM", "parameters": n_params},
        "versions": _versions(),
        "hardware": {
            "device": device_type,
            "device_name": torch.cuda.get_device_name(0) if device_type == "cuda" else _cpu_name(),
            "num_processes": processes,
            "mixed_precision": mixed_precision,
            "cpu_count": os.cpu_count(),
        },
        "t4_recipe": {"enabled": bool(t4_cfg["enabled"]), **t4_counts},
        "data": {
            "train_sources": [s.describe() for s in train_sources],
            "eval_sources": [s.describe() for s in eval_sources] or "held out from the start of train_sources",
            "source_tokens": int(len(tokens.train)),
            "train_tokens": n_train_blocks * block,
            "eval_tokens": len(eval_dataset) * block,
            "block_size": block,
            "train_blocks": n_train_blocks,
            "eval_blocks": len(eval_dataset),
            "cache_file": str(tokens.index_file),
            "prepare_seconds": round(tokens.seconds, 2),  # 0 when the shards were prepared before
        },
        "training": {
            "tokens_seen": int(state.num_input_tokens_seen),
            "steps": state.global_step,
            "epochs": round(state.epoch or 0.0, 6),
            "wall_time_seconds": round(time.perf_counter() - t0, 2),
            "train_seconds": round(train_seconds, 2),
            "tokens_per_second": round(session_tokens / max(train_seconds, 1e-9), 1),
            "stopped_by": stop_rules.stopped_by or "max_steps",
            "batch_size": global_batch,
            "per_device_batch_size": per_device_batch,
            "gradient_accumulation_steps": train_cfg["gradient_accumulation_steps"],
            "tokens_per_step": global_batch * block,
            "steps_per_epoch": steps_per_epoch,
            "max_steps": max_steps,
            "token_budget": token_budget,
            "resumed_from_step": int(resume_from.name.split("-")[-1]) if resume_from else None,
        },
        "best": {k: best_record.get(k) for k in ("step", "eval_loss", "eval_ppl")} | (
            {"note": best_record["note"]} if "note" in best_record else {}),
        "final": {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 6),
            "train_loss": final_train.get("loss"),
            "eval_loss": final_eval.get("eval_loss"),
            "eval_ppl": cb.perplexity(final_eval["eval_loss"]) if final_eval else None,
        },
        "started_at": started_at,
        "finished_at": _now(),
    }
    cb.write_atomic(run_dir / "run_manifest.json", json.dumps(manifest, indent=2) + "\n")
    logger.info("done: %s steps, %s tokens, stopped by %s; final eval loss %s; wrote %s", state.global_step,
                f"{state.num_input_tokens_seen:,}", manifest["training"]["stopped_by"], final_eval.get("eval_loss"), run_dir)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        config = load_recipe(args.config, args.overrides)
        output_dir = args.output_dir or os.path.join("runs", str(config.get("name", "run")))
        train(config, output_dir, resume=args.resume)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"stentor_hub.recipes.train: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of the Stentor2-30M recipe next to a plain PyTorch loop.

    python benchmarks/train/bench_train.py                 # CPU: 30M model, 2 x 128 tokens per step, FP32
    python benchmarks/train/bench_train.py --batch-size 8 --block-size 1024 --steps 300   # the card's batch, on a GPU

Both sides train the same model (the recipe's architecture, init and T4 patches) on the same
blocks with the same AdamW groups, schedule, gradient clipping and precision. The recipe side is
``stentor_hub.recipes.train.train`` itself (Trainer, callbacks, curves, token counting); the
plain side is a bare ``for`` loop. Each side runs ``--repeats`` times, alternating, and the
median tokens/s over the timed steps (after ``--warmup`` steps; evaluation and checkpointing
are outside the timed window) is reported with the recipe's overhead: on CUDA by wall clock, on CPU
by CPU time (process time of all threads), because a shared CPU's wall clock mostly measures the
neighbours. On CUDA the model FLOPs
utilisation is reported too (6 x parameters x tokens plus attention, against --peak-tflops).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from stentor_hub.recipes.config import load_recipe
from stentor_hub.recipes.data import BlockDataset, load_token_data
from stentor_hub.recipes.t4 import apply_t4_recipe
from stentor_hub.recipes.train import (
    build_model, build_optimizer, count_parameters, lr_lambda, resolve_mixed_precision, train,
)
from stentor_hub.tokenizer import resolve_vocab, tokenizer_class


def _clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


class StepTimer(TrainerCallback):
    """Clocks at the end of every optimizer step."""

    def __init__(self):
        self.times: list[tuple[float, float]] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(_clock())


def throughput(step_times: list[tuple[float, float]], warmup: int, tokens_per_step: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) after the warm-up steps. On a shared
    machine the wall figure moves with other people's load; CPU time counts only our work."""
    timed = step_times[warmup - 1:]  # from the end of the last warm-up step
    tokens = tokens_per_step * (len(timed) - 1)
    return tokens / (timed[-1][0] - timed[0][0]), tokens / (timed[-1][1] - timed[0][1])


def run_recipe(config: dict, steps: int, warmup: int, tokens_per_step: int) -> tuple[float, float]:
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        train(config, Path(tmp) / "run", callbacks=[timer])
    return throughput(timer.times, warmup, tokens_per_step)


def run_plain(config: dict, tokenizer, tokens, steps: int, warmup: int, precision: str) -> tuple[float, float]:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(config["seed"])
    model = build_model(config["model"], tokenizer)
    if config["t4_recipe"]["enabled"]:
        apply_t4_recipe(model, config["t4_recipe"]["fp32_layers"])
    model.to(device).train()
    optimizer = build_optimizer(model, config["optimizer"], device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config["schedule"]))
    dataset = BlockDataset(tokens.train, config["data"]["block_size"])
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config["seed"]))
    batch_size = config["training"]["batch_size"]
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler(device, enabled=precision == "fp16")
    times = []
    for step in range(steps):
        picked = order[(step * batch_size) % (len(order) - batch_size):][:batch_size]
        ids = torch.stack([dataset[int(i)]["input_ids"] for i in picked]).to(device)
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(input_ids=ids, labels=ids).loss
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["training"]["max_grad_norm"])
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % config["training"]["logging_steps"] == 0:
            loss.item()  # the recipe logs too; a plain loop that never syncs would flatter itself
        times.append(_clock())
    return throughput(times, warmup, batch_size * config["data"]["block_size"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="stentor2-30m")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mixed-precision", default="auto")
    parser.add_argument("--peak-tflops", type=float, default=None, help="accelerator peak for MFU (e.g. 65 for a T4 fp16)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (default 1: idle OpenMP threads spin, which muddles CPU time on a busy machine)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)

    # the 30M architecture; local text instead of the Hub streams (offline, and data is not what is measured)
    config = load_recipe(args.config, [
        f"training.batch_size={args.batch_size}", f"data.block_size={args.block_size}",
        f"training.max_steps={args.steps}", "training.eval_steps=1000000", "training.save_steps=1000000",
        "training.best_eval_start_step=1000000", "training.logging_steps=5", "training.token_budget=null",
        f"training.mixed_precision={args.mixed_precision}", "data.max_eval_samples=4",
        "data.source_token_budget=400000", "schedule.warmup_steps=2", f"schedule.total_steps={args.steps}",
        'data.train_sources=[{path: "{shared}/corpora/gutenberg_train.txt", max_doc_chars: 20000}]',
        'data.eval_sources=[{path: "{shared}/corpora/gutenberg_val.txt", max_chars: 20000}]',
        *([f"data.cache_dir={args.cache_dir}"] if args.cache_dir else []),
    ])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_mixed_precision(config["training"]["mixed_precision"], device)
    tokenizer = tokenizer_class()(vocab_file=str(resolve_vocab(config["tokenizer"]["vocab"])))
    d = config["data"]
    tokens = load_token_data(d["train_sources"], d["eval_sources"], tokenizer, d["block_size"],
                             d["source_token_budget"], d["max_eval_samples"], d["cache_dir"])
    n_params = count_parameters(build_model(config["model"], tokenizer))
    tokens_per_step = args.batch_size * args.block_size

    recipe, plain = [], []
    for _ in range(args.repeats):
        plain.append(run_plain(config, tokenizer, tokens, args.steps, args.warmup, precision))
        recipe.append(run_recipe(config, args.steps, args.warmup, tokens_per_step))
    # on CUDA the wall clock is the measure; on a (possibly shared) CPU, CPU time is the fair one
    basis = 0 if device == "cuda" else 1
    r, p = (statistics.median(x[basis] for x in runs) for runs in (recipe, plain))
    overhead = 100.0 * (p - r) / p

    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"\nStentor2 training throughput: {args.config}, {n_params:,} parameters, {device} ({name}), {precision}")
    print(f"batch {args.batch_size} x {args.block_size} tokens, {args.steps} steps ({args.warmup} warm-up), "
          f"{args.repeats} repeats (alternating), medians\n")
    print(f"| {'loop':<30} | {'tokens/s (wall)':>15} | {'tokens per CPU-s':>16} | {'runs (wall / CPU)':<40} |")
    print(f"|{'-' * 32}|{'-' * 17}|{'-' * 18}|{'-' * 42}|")
    for label, runs in (("plain PyTorch loop", plain), ("recipe (Trainer + callbacks)", recipe)):
        wall = statistics.median(x[0] for x in runs)
        cpu = statistics.median(x[1] for x in runs)
        detail = ", ".join(f"{w:,.0f}/{c:,.0f}" for w, c in runs)
        print(f"| {label:<30} | {wall:>15,.1f} | {cpu:>16,.1f} | {detail:<40} |")
    measure = "wall-clock" if basis == 0 else "CPU-time"
    print(f"\nrecipe overhead ({measure} basis): {overhead:+.1f}% (target < 5%)")
    if device == "cuda" and args.peak_tflops:
        L, h, T = config["model"]["num_hidden_layers"], config["model"]["hidden_size"], args.block_size
        flops_per_token = 6 * n_params + 12 * L * h * T
        print(f"model FLOPs utilisation: {100 * r * flops_per_token / (args.peak_tflops * 1e12):.1f}% of {args.peak_tflops} TFLOPS")
    return 0 if overhead < 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""The Stentor2-30M recipe on a GPU, in one command: prepared shards, a few hundred fp16 steps
with the T4 recipe, and what they cost.

    python benchmarks/train/gpu_run.py                          # GPU: 300 steps of 8 x 1024 tokens (~3 min on a T4)
    python benchmarks/train/gpu_run.py --steps 3 --block-size 128 --batch-size 2 --eval-blocks 2 --warmup 1  # CPU smoke
    torchrun --nproc_per_node 2 benchmarks/train/gpu_run.py    # 2x T4, as the card (global batch split)

Data: ``gutenberg_train.txt`` from the shared folder (local, so no network is needed), prepared
with every CPU core into token shards (reused on the next run), enough tokens for the steps.
Training: ``stentor_hub.recipes.train.train`` with the 30M recipe as published (fp16 on CUDA via
``mixed_precision: auto``, the T4 recipe's FP32 norms and first two layers), evaluation at step 0
and at the end. Reported: tokens/s after ``--warmup`` steps (wall clock, CUDA synchronised),
model FLOPs utilisation = 6 x parameters x tokens/s over the GPU's peak (``--peak-tflops``; known
GPUs are looked up and the figure used is printed), peak GPU memory, and the first logged losses.
For reference, the card's 2x T4 run did about 45,000 tokens/s (~8.5% MFU of 2 x 65 TFLOPS).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from stentor_hub.recipes.config import load_recipe
from stentor_hub.recipes.prepare import prepare_recipe_data
from stentor_hub.recipes.train import build_model, count_parameters, train
from stentor_hub.tokenizer import resolve_vocab, tokenizer_class

# dense fp16/bf16 tensor-core peaks from the vendors' data sheets, TFLOPS per GPU
PEAK_TFLOPS = {"T4": 65.0, "L4": 121.0, "A10G": 125.0, "V100": 125.0, "A100": 312.0, "L40S": 362.0, "H100": 989.0,
               "H200": 989.0}


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if key in device_name.upper():
            return value
    return None


class StepClock(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20, help="steps left out of the tokens/s figure")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (sequences per step), as the card")
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--eval-blocks", type=int, default=16, help="blocks of gutenberg_val.txt evaluated at start and end")
    parser.add_argument("--peak-tflops", type=float, default=None, help="GPU peak for MFU (default: looked up by name)")
    parser.add_argument("--shards-dir", default=None, help="prepared shards to reuse (default: in the token cache)")
    parser.add_argument("--output-dir", default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args(argv)
    rank0 = os.environ.get("RANK", "0") == "0"
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    device = "cuda" if torch.cuda.is_available() else "cpu"

    tokens_needed = args.steps * args.batch_size * args.block_size
    config = load_recipe("stentor2-30m", [
        'data.train_sources=[{path: "{shared}/corpora/gutenberg_train.txt"}]',
        'data.eval_sources=[{path: "{shared}/corpora/gutenberg_val.txt"}]',
        f"data.max_eval_samples={args.eval_blocks}", f"data.block_size={args.block_size}",
        f"data.source_token_budget={tokens_needed + args.batch_size * args.block_size}",
        *([f"data.shards_dir={args.shards_dir}"] if args.shards_dir else []),
        f"training.batch_size={args.batch_size}", f"training.max_steps={args.steps}", "training.token_budget=null",
        f"training.eval_steps={args.steps}", f"training.save_steps={args.steps}",
        f"training.best_eval_start_step={args.steps}", f"training.logging_steps={max(1, min(10, args.steps // 10))}",
        f"schedule.total_steps={args.steps}", f"schedule.warmup_steps={max(1, args.steps // 10)}",
    ])
    tokenizer = tokenizer_class()(vocab_file=str(resolve_vocab(config["tokenizer"]["vocab"])))
    started = time.perf_counter()
    if rank0:  # the other processes wait for the shards inside train()
        shards = prepare_recipe_data(config, tokenizer, progress=True)
        prepare_seconds = time.perf_counter() - started
        print(f"data: {len(shards.train):,} train tokens in {shards.folder} "
              f"({'prepared in %.1fs' % prepare_seconds if shards.prepared_now else 'prepared before'})", flush=True)
    n_params = count_parameters(build_model(config["model"], tokenizer))

    clock = StepClock()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(args.output_dir or Path(tmp) / "run")
        t0 = time.perf_counter()
        train(config, run_dir, callbacks=[clock])
        if not rank0:
            return 0
        manifest = json.loads((run_dir / "run_manifest.json").read_text())
        curves = (run_dir / "training_curves.csv").read_text().splitlines()
    start_seconds = clock.times[0] - t0 if clock.times else float("nan")
    timed = clock.times[min(args.warmup, len(clock.times) - 2):]
    tokens_per_step = args.batch_size * args.block_size
    tokens_per_s = tokens_per_step * (len(timed) - 1) / (timed[-1] - timed[0])
    name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    peak = args.peak_tflops or (peak_tflops(name) if device == "cuda" else None)

    print(f"\nStentor2-30M recipe: {n_params:,} parameters, {processes} x {name}, "
          f"{manifest['hardware']['mixed_precision']}, T4 recipe {'on' if manifest['t4_recipe']['enabled'] else 'off'}")
    print(f"{args.steps} steps of {args.batch_size} x {args.block_size} tokens; first step done {start_seconds:.1f}s "
          f"after train() was called")
    print(f"| {'measure':<38} | {'value':>24} |")
    print(f"|{'-' * 40}|{'-' * 26}|")
    rows = [("tokens/s (steps after warm-up, wall)", f"{tokens_per_s:,.0f}"),
            ("timed steps", f"{len(timed) - 1}")]
    if peak:
        mfu = 100 * 6 * n_params * tokens_per_s / (peak * 1e12 * processes)
        rows.append((f"MFU (6 x N x tokens/s / {processes} x {peak:g} TFLOPS)", f"{mfu:.1f}%"))
    else:
        rows.append(("MFU", "n/a (no GPU peak: pass --peak-tflops)"))
    if device == "cuda":
        rows.append(("peak GPU memory (this process)", f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"))
    rows += [("final train loss", f"{manifest['final']['train_loss']}"), ("final eval loss", f"{manifest['final']['eval_loss']}")]
    for label, value in rows:
        print(f"| {label:<38} | {value:>24} |")
    print("\nfirst rows of training_curves.csv:")
    for line in curves[:8]:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data preparation: tokens/s and MB/s of `stentor-hub data prepare` with 1 and 2 workers, peak
memory at two budgets, and how long training takes to start from prepared shards.

    python benchmarks/data/bench_data.py                      # the whole file for speed, 1M and 8M for memory
    python benchmarks/data/bench_data.py --speed-tokens 4000000 --workers 1 2 4 --repeats 5

Every preparation runs in a fresh process (``python -m stentor_hub data prepare``) into a new
folder, on ``gutenberg_train.txt`` from the shared data (whole books, the 30M recipe's 1,024-token
blocks; two eval blocks from ``gutenberg_val.txt``). Peak resident memory is the kernel's ``ru_maxrss``: of the main process
(reading, merging, writing) and of the largest worker (cleaning, tokenizing). Start time: the 30M
recipe's ``train()`` from ready shards to the Trainer's train-begin event, and the same with the
shards missing (prepared first). The speed runs are interleaved (1, 2, 1, 2, ... workers) and
repeated; each row is the median run, with the fastest and slowest beside it. The load average is
printed beside each figure: on a shared machine the wall clock measures the neighbours too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# two eval blocks from the validation file, so the start-time runs' evaluation at step 0 is short
BENCH_DATA = [
    'data.train_sources=[{path: "{shared}/corpora/gutenberg_train.txt"}]',
    'data.eval_sources=[{path: "{shared}/corpora/gutenberg_val.txt", max_chars: 20000}]',
    "data.max_eval_samples=2", "data.block_size=1024",
]

# run in a child process: prepare, then report its own and its workers' peak memory
_CHILD = r"""
import json, resource, sys, time
from stentor_hub.recipes.config import load_recipe
from stentor_hub.recipes.prepare import prepare_recipe_data
from stentor_hub.tokenizer import resolve_vocab, tokenizer_class
out, workers, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
config = load_recipe("stentor2-30m", overrides)
tokenizer = tokenizer_class()(vocab_file=str(resolve_vocab(config["tokenizer"]["vocab"])))
started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
shards = prepare_recipe_data(config, tokenizer, workers=workers, out_dir=out)
seconds = time.perf_counter() - started
me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
me_cpu = me.ru_utime + me.ru_stime - before.ru_utime - before.ru_stime  # the preparation only, not the imports
print(json.dumps({"engine": tokenizer._vocab.engine, "seconds": seconds, "tokens": len(shards.train) + len(shards.eval), "bytes": shards.bytes_read,
                  "main_rss_mb": me.ru_maxrss / 1024, "worker_rss_mb": kids.ru_maxrss / 1024,
                  "main_cpu_s": me_cpu, "workers_cpu_s": kids.ru_utime + kids.ru_stime}))
"""


def prepare(out: Path, workers: int, budget: int) -> dict:
    load_before = os.getloadavg()[0]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    # run outside the checkout: `python -c` puts the working folder first, and a checkout there would
    # shadow the installed stentor-hub (and its compiled engine)
    result = subprocess.run([sys.executable, "-c", _CHILD, str(out), str(workers), *BENCH_DATA,
                             f"data.source_token_budget={budget}"], capture_output=True, text=True, env=env,
                            cwd=tempfile.gettempdir())
    if result.returncode:
        raise SystemExit(f"prepare failed:\n{result.stderr[-3000:]}")
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row.update(workers=workers, budget=budget, load=(load_before + os.getloadavg()[0]) / 2)
    if workers == 1:
        row["worker_rss_mb"] = None  # tokenized in the main process
    return row


def start_time(shards_dir: Path, budget: int) -> float:
    """Seconds from calling the 30M recipe's train() to the Trainer's train-begin event: the
    data step (open the shards, or prepare them first), model, optimizer and Trainer set up. The
    run is stopped there: what follows is model compute, not data."""
    # imported before the clock starts, so neither measurement pays the libraries' first import
    from transformers import LlamaForCausalLM, Trainer, TrainerCallback  # noqa: F401

    from stentor_hub.recipes.config import load_recipe
    from stentor_hub.recipes.train import train

    class Started(Exception):
        pass

    class StopAtTrainBegin(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            raise Started(time.perf_counter())

    config = load_recipe("stentor2-30m", [
        *BENCH_DATA, f"data.source_token_budget={budget}", f"data.shards_dir={shards_dir}", "training.batch_size=2",
        "training.max_steps=1", "training.token_budget=null", "training.mixed_precision=no",
    ])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            train(config, Path(tmp) / "run", callbacks=[StopAtTrainBegin()])
        except Started as started:
            return started.args[0] - t0
    raise RuntimeError("training ended without a train-begin event")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed-tokens", type=int, default=10_000_000,
                        help="budget of the tokens/s runs (gutenberg_train.txt holds 7.9M)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count, interleaved")
    parser.add_argument("--memory-budgets", type=int, nargs="+", default=[1_000_000, 8_000_000])
    parser.add_argument("--memory-workers", type=int, default=2)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs: dict[int, list[dict]] = {w: [] for w in args.workers}
        for repeat in range(args.repeats):
            for workers in args.workers:
                runs[workers].append(prepare(tmp / f"speed-{workers}-{repeat}", workers, args.speed_tokens))
        for workers, done in runs.items():
            done.sort(key=lambda r: r["seconds"])
            median = dict(done[len(done) // 2], fastest=done[0]["seconds"], slowest=done[-1]["seconds"])
            rows.append(median)
        for budget in args.memory_budgets:
            rows.append(prepare(tmp / f"mem-{budget}", args.memory_workers, budget))
        same = len({(tmp / f"speed-{w}-{r}" / "index.json").read_bytes()
                    for w in args.workers for r in range(args.repeats)}) == 1
        budget = args.memory_budgets[-1]
        ready = start_time(tmp / f"mem-{budget}", budget)
        small = args.memory_budgets[0]
        missing = start_time(tmp / "start-missing", small)

    engines = ", ".join(sorted({r["engine"] for r in rows}))
    print(f"\nstentor-hub data prepare on gutenberg_train.txt ({engines} TokenMonster engine; {cores} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f} now; each row shows the load during its run)\n")
    print(f"| {'workers':>7} | {'budget':>10} | {'tokens':>10} | {'seconds':>8} | {'min-max s':>9} | {'tokens/s':>9} | "
          f"{'MB/s':>5} | {'main RSS MB':>11} | {'worker RSS MB':>13} | {'load':>4} |")
    print(f"|{'-' * 9}|{'-' * 12}|{'-' * 12}|{'-' * 10}|{'-' * 11}|{'-' * 11}|{'-' * 7}|{'-' * 13}|{'-' * 15}|{'-' * 6}|")
    for r in rows:
        worker = "-" if r["worker_rss_mb"] is None else f"{r['worker_rss_mb']:.0f}"
        spread = f"{r['fastest']:.2f}-{r['slowest']:.2f}" if "fastest" in r else "-"
        print(f"| {r['workers']:>7} | {r['budget']:>10,} | {r['tokens']:>10,} | {r['seconds']:>8.2f} | {spread:>9} | "
              f"{r['tokens'] / r['seconds']:>9,.0f} | {r['bytes'] / 1e6 / r['seconds']:>5.2f} | {r['main_rss_mb']:>11.0f} | "
              f"{worker:>13} | {r['load']:>4.1f} |")
    speed = {r["workers"]: r["tokens"] / r["seconds"] for r in rows[:len(args.workers)]}
    if 1 in speed and 2 in speed:
        print(f"\n2 workers / 1 worker: {speed[2] / speed[1]:.2f}x by wall clock (target >= 1.8x on an idle 2-core machine)")
        # on a shared machine the wall clock measures the neighbours: CPU time says what an idle one
        # would do, the busiest of the 2-worker run's processes (main, or one worker) setting the
        # pace, or all of them sharing the cores
        one, two = (next(r for r in rows if r["workers"] == w) for w in (1, 2))
        pace = max(two["main_cpu_s"], two["workers_cpu_s"] / 2, (two["main_cpu_s"] + two["workers_cpu_s"]) / min(cores, 3))
        print(f"CPU seconds: 1 worker {one['main_cpu_s']:.1f} (one process); 2 workers: main {two['main_cpu_s']:.1f}, "
              f"workers {two['workers_cpu_s']:.1f} in all; on idle cores: {one['main_cpu_s'] / pace:.2f}x")
    print(f"same bytes for every worker count: {same}")
    best = max(speed.values())
    per_core = speed.get(1, best)
    print(f"extrapolation, 400M tokens: {400e6 / per_core:.0f} s on 1 core at {per_core:,.0f} tokens/s; "
          f"~{400e6 / (per_core * 4 * 0.9):.0f} s on 4 cores (assuming 90% scaling)")
    print(f"training start (30M recipe, train() to the Trainer's train-begin): {ready:.1f}s from prepared {budget:,}-token shards; "
          f"{missing:.1f}s with {small:,}-token shards missing (prepared first, all cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

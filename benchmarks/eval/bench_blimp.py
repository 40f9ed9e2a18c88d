"""BLiMP throughput of stentor-hub's scorer and, when installed, lm-evaluation-harness's own.

The model is the Stentor2-30M architecture (``recipes/stentor2-30m.yaml``) with seeded random
weights: speed does not depend on the weights, and per-pair log-likelihoods are compared between
the two implementations, which checks the scoring on thousands of real sentences.

    .venv/bin/python benchmarks/eval/bench_blimp.py                        # stentor-hub only
    .venv-lmeval/bin/python benchmarks/eval/bench_blimp.py --lm-eval      # both, and compare
    .venv/bin/python benchmarks/eval/bench_blimp.py --tasks all --limit 1000   # all 67,000 pairs

``.venv-lmeval`` is a separate virtual environment with ``lm_eval==0.4.13`` (never a project
dependency); see ``benchmarks/eval/README.md``. lm-eval runs offline on a local task config
that reads the same ``*.jsonl`` files as its ``blimp_*`` tasks read from the Hub.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from stentor_hub._resources import resource_dir, shared_dir
from stentor_hub.evaluation import BLIMP_TASKS, blimp_loglikelihoods, blimp_task_results, load_blimp, load_model_and_tokenizer
from stentor_hub.tokenizer import export_tokenizer

# lm-eval's blimp _template_yaml, with the Hub dataset replaced by the local jsonl file.
LM_EVAL_TASK_YAML = """\
task: local_blimp_{uid}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {path}
output_type: multiple_choice
validation_split: train
doc_to_text: ""
doc_to_target: 0
doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

DEFAULT_TASKS = 10  # the first 10 tasks (alphabetical) ...
DEFAULT_LIMIT = 100  # ... x 100 pairs = 1,000 pairs


def build_model_dir(folder: Path, vocab: Path) -> Path:
    """Save the 30M architecture with seeded random weights and the tokenizer as a model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = yaml.safe_load((resource_dir("recipes") / "stentor2-30m.yaml").read_text())["model"]
    spec = {k: v for k, v in spec.items() if k not in ("architecture", "attn_implementation", "initializer_range")}
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**spec, bos_token_id=8001, eos_token_id=8000, pad_token_id=8000))
    model.save_pretrained(folder)
    export_tokenizer(vocab, folder / "tokenizer_export")
    for f in (folder / "tokenizer_export").iterdir():
        f.rename(folder / f.name)
    (folder / "tokenizer_export").rmdir()
    return folder


def run_stentor(model_dir: Path, data: Path, tasks: list[str], limit: int, batch_size: int) -> tuple[dict, dict, float]:
    model, tokenizer = load_model_and_tokenizer(model_dir, device="cpu", dtype="float32")
    pairs = load_blimp(data, tasks=tasks, limit=limit)
    start = time.perf_counter()  # timed: tokenizing + scoring (as lm-eval's timing below)
    lls = blimp_loglikelihoods(model, tokenizer, pairs, batch_size=batch_size, progress=True)
    seconds = time.perf_counter() - start
    accuracies = {uid: task["accuracy"] for uid, task in blimp_task_results(pairs, lls).items()}
    return accuracies, lls, seconds


def run_lm_eval(model_dir: Path, data: Path, tasks: list[str], limit: int, batch_size: int) -> tuple[dict, dict, float]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    config_dir = Path(tempfile.mkdtemp(prefix="lmeval_blimp_"))
    for uid in tasks:
        (config_dir / f"{uid}.yaml").write_text(LM_EVAL_TASK_YAML.format(uid=uid, path=data / f"{uid}.jsonl"))
    lm = HFLM(pretrained=str(model_dir), trust_remote_code=True, batch_size=batch_size, device="cpu", dtype="float32")
    start = time.perf_counter()  # timed: building requests (tokenizing) + scoring + aggregation
    out = lm_eval.simple_evaluate(
        model=lm, tasks=[f"local_blimp_{uid}" for uid in tasks], limit=limit, log_samples=True,
        task_manager=TaskManager(include_path=str(config_dir), include_defaults=False),
    )
    seconds = time.perf_counter() - start
    accuracies = {uid: 100.0 * out["results"][f"local_blimp_{uid}"]["acc,none"] for uid in tasks}
    lls = {}
    for uid in tasks:
        samples = sorted(out["samples"][f"local_blimp_{uid}"], key=lambda s: s["doc_id"])
        lls[uid] = [(s["resps"][0][0][0], s["resps"][1][0][0]) for s in samples]
    return accuracies, lls, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=str(DEFAULT_TASKS), help="'all' or the number of tasks (first N, alphabetical)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help="pairs per task (1000 = all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lm-eval", action="store_true", help="also run lm-evaluation-harness (needs lm_eval installed)")
    parser.add_argument("--repeats", type=int, default=1, help="run each implementation N times (alternating); report the fastest")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shared = shared_dir(required=True)
    data = shared / "blimp"
    tasks = list(BLIMP_TASKS) if args.tasks == "all" else list(BLIMP_TASKS[: int(args.tasks)])
    n_pairs = len(tasks) * args.limit

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(Path(tmp) / "stentor2-30m-random", shared / "tokenmonster" / "vocabs" / "english-8000-strict-nocapcode-v1.vocab")
        our_times, their_times = [], []
        for _ in range(args.repeats):  # alternating, so both see the same background load
            ours, our_lls, seconds = run_stentor(model_dir, data, tasks, args.limit, args.batch_size)
            our_times.append(seconds)
            if args.lm_eval:
                theirs, their_lls, seconds = run_lm_eval(model_dir, data, tasks, args.limit, args.batch_size)
                their_times.append(seconds)
        our_seconds = min(our_times)
        rows = [("stentor-hub", our_seconds, sum(ours.values()) / len(ours))]
        comparison = None
        if args.lm_eval:
            their_seconds = min(their_times)
            rows.append(("lm-eval 0.4.13 (HFLM)", their_seconds, sum(theirs.values()) / len(theirs)))
            max_diff = max(abs(a - b) for uid in tasks for pa, pb in zip(our_lls[uid], their_lls[uid]) for a, b in zip(pa, pb))
            same_tasks = sum(abs(ours[uid] - theirs[uid]) < 1e-9 for uid in tasks)
            comparison = (same_tasks, max_diff)

    print()
    print(f"BLiMP, Stentor2-30M architecture (random weights, fp32), CPU: "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"subset: {len(tasks)} tasks x {args.limit} pairs = {n_pairs} pairs ({2 * n_pairs} sentences), batch size {args.batch_size}, "
          f"fastest of {args.repeats}; load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print()
    print(f"| {'implementation':<24} | {'seconds':>8} | {'pairs/s':>8} | {'overall %':>9} |")
    print(f"|{'-' * 26}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
    for name, seconds, overall in rows:
        print(f"| {name:<24} | {seconds:8.1f} | {n_pairs / seconds:8.1f} | {overall:9.2f} |")
    if comparison:
        same_tasks, max_diff = comparison
        print()
        print(f"per-task accuracy identical: {same_tasks}/{len(tasks)} tasks; "
              f"max |log-likelihood difference| over {2 * n_pairs} sentences: {max_diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

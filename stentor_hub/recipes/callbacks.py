"""Trainer callbacks for the rest of the card's run: stop rules, the curves CSV, the best
checkpoint, throughput in the logs, and crash-safe checkpoint markers."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from stentor_hub.helpers import build_folder, write_json_atomic, write_text_atomic
from stentor_hub.run_dir import CURVES_HEADER
from stentor_hub.tokenizer import copy_tokenizer_files

COMPLETE_MARKER = "stentor_checkpoint_complete.json"
BEST_RECORD = "best_eval.json"


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else float("inf")


class StopRulesCallback(TrainerCallback):
    """Stops at the token budget (tokens of all processes, from ``state.num_input_tokens_seen``,
    which the Trainer gathers across processes), after ``epochs`` epochs, or at ``max_steps``;
    remembers which rule stopped the run."""

    def __init__(self, token_budget: int | None, epochs: float | None, max_steps: int | None):
        self.token_budget = token_budget
        self.epochs = epochs
        self.max_steps = max_steps
        self.stopped_by: str | None = None

    def _stop(self, control, rule: str):
        if self.stopped_by is None:
            self.stopped_by = rule
        control.should_training_stop = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.token_budget is not None and state.num_input_tokens_seen >= self.token_budget:
            self._stop(control, "token_budget")
        elif self.max_steps is not None and state.global_step >= self.max_steps:
            self._stop(control, "max_steps")
        elif self.epochs is not None and state.epoch is not None and state.epoch >= self.epochs - 1e-9:
            self._stop(control, "epochs")
        if control.should_training_stop:
            # evaluate and save the last step, so the final checkpoint and curves are complete
            control.should_log = True
            control.should_evaluate = True
            control.should_save = True
        return control


class CurvesCallback(TrainerCallback):
    """Appends a row to ``training_curves.csv`` at every train log and every evaluation, flushed
    and fsynced, so a crash keeps everything logged so far. On resume, rows logged after the
    checkpoint (they will be logged again) are dropped and a note row marks the resume."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _append(self, state, row: dict) -> None:
        if not state.is_world_process_zero:
            return
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVES_HEADER)
            if new:
                writer.writeheader()
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CURVES_HEADER})
            f.flush()
            os.fsync(f.fileno())

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists() or state.global_step == 0:
            return
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["step"] and int(r["step"]) <= state.global_step]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=CURVES_HEADER, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, out.getvalue())
        self._append(state, {"step": state.global_step, "epoch": _round(state.epoch), "note": f"resumed from step {state.global_step}"})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._append(state, {"step": state.global_step, "epoch": _round(state.epoch), "train_loss": _round(logs["loss"])})

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            loss = metrics["eval_loss"]
            self._append(state, {
                "step": state.global_step, "epoch": _round(state.epoch), "eval_loss": _round(loss),
                "eval_ppl": _round(perplexity(loss)), "note": metrics.get("stentor_note", ""),
            })


def _round(x):
    return None if x is None else round(float(x), 6)


class BestCheckpointCallback(TrainerCallback):
    """Saves the model to ``best/`` whenever the eval loss improves, counting only evaluations at
    or after ``start_step``. The folder is written beside ``best/`` and swapped in, so ``best/``
    is always a complete model (with the tokenizer files of ``tokenizer_dir``);
    ``best/best_eval.json`` records its step and loss, which also lets a resumed run continue the
    comparison."""

    def __init__(self, best_dir: Path, start_step: int, tokenizer_dir: Path | None = None):
        self.best_dir = Path(best_dir)
        self.start_step = start_step
        self.tokenizer_dir = tokenizer_dir
        self.best: dict | None = None
        record = self.best_dir / BEST_RECORD
        if record.is_file():
            self.best = json.loads(record.read_text())

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not metrics or "eval_loss" not in metrics or state.global_step < self.start_step:
            return
        loss = float(metrics["eval_loss"])
        if self.best is not None and not loss < self.best["eval_loss"]:
            return
        self.best = {"step": state.global_step, "eval_loss": loss, "eval_ppl": perplexity(loss)}
        metrics["stentor_note"] = "best"  # CurvesCallback runs after this one and notes it
        if state.is_world_process_zero:
            save_model_atomic(model, self.best_dir, self.tokenizer_dir,
                              extra={BEST_RECORD: json.dumps(self.best, indent=2)})


def save_model_atomic(model, out_dir: Path, tokenizer_dir: Path | None = None, extra: dict[str, str] | None = None) -> None:
    """``model.save_pretrained`` plus the tokenizer files of ``tokenizer_dir`` (so ``out_dir`` is a
    complete model folder that the Auto classes load) into a sibling temporary folder, then swap it
    into ``out_dir``."""
    with build_folder(out_dir) as tmp:  # the swap also fixes transformers' owner-only model.safetensors
        getattr(model, "module", model).save_pretrained(tmp, safe_serialization=True)
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, tmp)
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)


class ThroughputCallback(TrainerCallback):
    """Adds ``tokens_per_second`` (this session) and ``elapsed_seconds`` to every log entry.
    Inserted first among the callbacks so the progress bar and the curves see the values."""

    def __init__(self):
        self.start_time = None
        self.start_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time = time.perf_counter()
        self.start_tokens = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or self.start_time is None or "loss" not in logs:
            return
        elapsed = time.perf_counter() - self.start_time
        logs["tokens_per_second"] = round((state.num_input_tokens_seen - self.start_tokens) / max(elapsed, 1e-9), 1)
        logs["elapsed_seconds"] = round(elapsed, 1)


class CheckpointMarkerCallback(TrainerCallback):
    """The Trainer writes a checkpoint folder file by file; a crash can leave a partial one. After
    every complete save this writes a marker into the folder, and :func:`last_complete_checkpoint`
    resumes only from marked folders. The marker also lists the training sessions up to that
    step (``sessions``: earlier sessions, given as ``sessions_before``, and this one so far), so a
    resumed run's manifest adds up time and tokens over all of them."""

    def __init__(self, sessions_before: list[dict] | None = None, started_at: str | None = None):
        self.sessions_before = list(sessions_before or [])
        self.started_at = started_at
        self.start_time = self.start_step = self.start_tokens = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_time = time.perf_counter()
        self.start_step, self.start_tokens = state.global_step, state.num_input_tokens_seen

    def sessions(self, state) -> list[dict]:
        """The sessions up to now: the earlier ones and this one (steps, tokens, seconds)."""
        if self.start_time is None:
            return list(self.sessions_before)
        return [*self.sessions_before, {
            "started_at": self.started_at, "from_step": self.start_step, "to_step": state.global_step,
            "tokens": int(state.num_input_tokens_seen - self.start_tokens),
            "train_seconds": round(time.perf_counter() - self.start_time, 2)}]

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every process has written its part (RNG states) before the marker
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                marker = {"step": state.global_step, "num_input_tokens_seen": state.num_input_tokens_seen,
                          "sessions": self.sessions(state)}
                write_json_atomic(marker, folder / COMPLETE_MARKER)


def weights_are_whole(folder: Path) -> bool:
    """Whether every ``*.safetensors`` file of ``folder`` holds all the bytes its header promises
    (a disk that filled up, or a copy cut short, leaves a file that looks fine but is truncated)."""
    import struct

    for path in Path(folder).glob("*.safetensors"):
        try:
            with open(path, "rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_len))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
            return False
        if path.stat().st_size < 8 + header_len + end:
            return False
    return True


def last_complete_checkpoint(checkpoints_dir: Path, set_aside: bool = True) -> Path | None:
    """The newest ``checkpoint-N`` folder that carries the completion marker. With
    ``set_aside`` (the main process only), newer unmarked (crashed mid-write) folders are renamed
    ``checkpoint-N.incomplete``, and marked ones whose weights are truncated ``checkpoint-N.truncated``,
    so the Trainer never loads or rotates them; nothing is deleted."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return None
    found = []
    for folder in checkpoints_dir.iterdir():
        name = folder.name
        if folder.is_dir() and name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            found.append((int(name[len("checkpoint-"):]), folder))
    complete = None
    for step, folder in sorted(found, reverse=True):
        marked = (folder / COMPLETE_MARKER).is_file()
        if marked and weights_are_whole(folder):
            complete = folder
            break
        if not set_aside:
            continue
        reason = "truncated" if marked else "incomplete"  # marked but its weights were cut short
        target = folder.with_name(f"{folder.name}.{reason}")
        n = 1
        while target.exists():
            target = folder.with_name(f"{folder.name}.{reason}{n}")
            n += 1
        os.replace(folder, target)
    return complete

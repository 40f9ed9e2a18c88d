"""The folder a training run writes, and the one place that knows its layout and its files.

    RUN_DIR/
      best/                 complete model folder: weights, configs, tokenizer files, best_eval.json
      final/                complete model folder of the last step
      tokenizer/            the tokenizer alone (what best/ and final/ also hold)
      training_curves.csv   one row per train log and per evaluation (CURVES_HEADER)
      run_manifest.json     what was run, on what, and how it ended (RunManifest, schema 1)
      checkpoints/          the Trainer's checkpoints, for --resume

Run folders written before ``best/`` and ``final/`` carried the tokenizer keep loading: the
tokenizer of a checkpoint is then ``RUN_DIR/tokenizer`` (:func:`tokenizer_folder`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from stentor_hub.errors import MissingInputError, RunDirError
from stentor_hub.helpers import read_json

MANIFEST_FILE = "run_manifest.json"
CURVES_FILE = "training_curves.csv"
CURVES_HEADER = ["step", "epoch", "train_loss", "eval_loss", "eval_ppl", "note"]
MANIFEST_SCHEMA_VERSION = 1
CHECKPOINTS = ("best", "final")
# the model files of a checkpoint folder (the tokenizer files are the tokenizer folder's)
MODEL_FILES = ("model.safetensors", "config.json", "generation_config.json")


@dataclass(frozen=True)
class RunDir:
    """The paths of one training run (see the module docstring for the layout)."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:  # a RunDir goes wherever a path does
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    best = property(lambda self: self.path / "best", doc="the lowest-eval-loss model folder")
    final = property(lambda self: self.path / "final", doc="the last step's model folder")
    tokenizer = property(lambda self: self.path / "tokenizer", doc="the exported tokenizer folder")
    curves_file = property(lambda self: self.path / CURVES_FILE)
    manifest_file = property(lambda self: self.path / MANIFEST_FILE)
    checkpoints = property(lambda self: self.path / "checkpoints", doc="the Trainer's checkpoints (--resume)")

    @classmethod
    def open(cls, path: "str | os.PathLike | RunDir") -> "RunDir":
        """An existing run folder; raises :class:`MissingInputError` when ``path`` is not a folder."""
        run = path if isinstance(path, RunDir) else cls(path)
        if not run.path.is_dir():
            raise MissingInputError(f"run folder {run.path} does not exist; pass the --output-dir of a training run")
        return run

    @classmethod
    def of_checkpoint(cls, model_dir: str | os.PathLike) -> "RunDir | None":
        """The run that ``model_dir`` (``RUN_DIR/best`` or ``RUN_DIR/final``) belongs to, if any
        (its parent holds a run manifest)."""
        model_dir = Path(model_dir).expanduser()
        if (model_dir.parent / MANIFEST_FILE).is_file():
            return cls(model_dir.parent)
        return None

    def checkpoint(self, name: str) -> Path:
        """``best/`` or ``final/``; any other name is a :class:`RunDirError`."""
        if name not in CHECKPOINTS:
            raise RunDirError(f"checkpoint must be 'best' or 'final', got {name!r}")
        return self.path / name

    def is_run(self) -> bool:
        """Whether the folder looks like a training run (it has ``final/`` with a ``config.json``)."""
        return (self.final / "config.json").is_file()

    def read_manifest(self) -> "RunManifest":
        return RunManifest.read(self.manifest_file)

    def read_curves(self) -> "list[CurvePoint]":
        return read_curves(self.curves_file)

    def block_size(self) -> int | None:
        """``data.block_size`` of the manifest, read on its own, so a partial manifest (one written
        by hand beside a checkpoint, say) still gives it; ``None`` when it is not there."""
        try:
            return int(json.loads(self.manifest_file.read_text(encoding="utf-8"))["data"]["block_size"])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def tokenizer_folder(model_dir: str | os.PathLike) -> Path | None:
    """The folder holding the tokenizer of a local model folder: the folder itself when it has
    ``tokenizer_config.json``, else ``../tokenizer`` when the model is a checkpoint of a run written
    before checkpoints carried their tokenizer; ``None`` when neither has one."""
    model_dir = Path(model_dir).expanduser()
    if (model_dir / "tokenizer_config.json").is_file():
        return model_dir
    beside = model_dir.parent / "tokenizer"
    return beside if (beside / "tokenizer_config.json").is_file() else None


# --- the manifest -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunManifest:
    """``run_manifest.json``: the recipe as run and what came of it.

    The sections are mappings as written by :func:`stentor_hub.recipes.train.train`; ``best`` needs
    ``step``, ``eval_loss`` and ``eval_ppl``, ``final`` needs ``step``. Jinja templates read them as
    ``f.manifest.best.eval_loss``."""

    schema_version: int
    recipe_name: str | None
    recipe: dict
    model: dict
    versions: dict
    hardware: dict
    t4_recipe: dict
    data: dict
    training: dict
    best: dict
    final: dict
    started_at: str | None = None
    finished_at: str | None = None

    _SECTIONS = ("recipe", "model", "versions", "hardware", "t4_recipe", "data", "training", "best", "final")
    _TRAINING_NUMBERS = ("tokens_seen", "steps", "epochs", "wall_time_seconds", "train_seconds", "tokens_per_second",
                         "batch_size", "per_device_batch_size", "gradient_accumulation_steps", "tokens_per_step",
                         "steps_per_epoch", "max_steps")
    _REQUIRED_RESULTS = {"best": (("step", int), ("eval_loss", float), ("eval_ppl", float)), "final": (("step", int),)}

    @classmethod
    def from_dict(cls, data: Any, source: str = MANIFEST_FILE) -> "RunManifest":
        """Check and wrap a parsed manifest; raises :class:`RunDirError` naming ``source`` and the field."""
        if not isinstance(data, dict):
            raise RunDirError(f"{source} must hold a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", MANIFEST_SCHEMA_VERSION)
        if version != MANIFEST_SCHEMA_VERSION:
            raise RunDirError(f"{source}: schema_version is {version!r}, this stentor-hub reads schema "
                              f"{MANIFEST_SCHEMA_VERSION}; use the stentor-hub version that wrote the run")
        missing = [key for key in ("recipe_name", *cls._SECTIONS) if key not in data]
        if missing:
            raise RunDirError(f"{source} is missing {missing}; it must follow run manifest schema {MANIFEST_SCHEMA_VERSION}")
        for key in cls._SECTIONS:
            if not isinstance(data[key], dict):
                raise RunDirError(f"{source}: '{key}' must be a JSON object, got {type(data[key]).__name__}")
        for section, required in cls._REQUIRED_RESULTS.items():
            absent = [k for k, _ in required if data[section].get(k) is None]
            if absent:
                raise RunDirError(f"{source}: '{section}' has no {absent}")
            for key, kind in required:
                value = data[section][key]
                if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
                    raise RunDirError(f"{source}: '{section}.{key}' must be a number{' (an integer)' if kind is int else ''}, "
                                      f"got {value!r}")
        for key in cls._TRAINING_NUMBERS:
            value = data["training"].get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise RunDirError(f"{source}: 'training.{key}' must be a number, got {value!r}")
        for section in ("training", "best", "final"):
            for key, value in data[section].items():
                if isinstance(value, float) and (not math.isfinite(value) or (value < 0 and key.endswith(("loss", "ppl")))):
                    raise RunDirError(f"{source}: '{section}.{key}' is {value}, not a finite number"
                                      f"{' >= 0' if key.endswith(('loss', 'ppl')) else ''}; the run that wrote it "
                                      "diverged or the file was edited: retrain or fix the value")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known} | {"schema_version": version})

    @classmethod
    def read(cls, path: str | os.PathLike) -> "RunManifest":
        data = read_json(path, "written by python -m stentor_hub.recipes.train", RunDirError)
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def parameters(self) -> int:
        return int(self.model["parameters"])

    @property
    def block_size(self) -> int | None:
        value = self.data.get("block_size")
        return int(value) if isinstance(value, int) else None


# --- the curves -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CurvePoint:
    step: int
    epoch: float | None
    train_loss: float | None
    eval_loss: float | None
    eval_ppl: float | None
    note: str


def read_curves(path: str | os.PathLike) -> list[CurvePoint]:
    """Rows of ``training_curves.csv`` (an empty cell is ``None``: not measured at that step).
    Raises :class:`RunDirError` naming the line and column of a bad cell."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} is missing; the training run writes it (python -m stentor_hub.recipes.train)")

    def number(value: str, column: str, line: int) -> float | None:
        if value == "":
            return None
        try:
            number = float(value)
        except ValueError:
            raise RunDirError(f"{path}, line {line}: column {column} is not a number: {value!r}") from None
        if not math.isfinite(number):
            raise RunDirError(f"{path}, line {line}: column {column} is {value}, not a finite number; "
                              "the run diverged there: retrain (lower optimizer.lr) or drop the row")
        return number

    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != CURVES_HEADER:
            raise RunDirError(f"{path}: header must be exactly {','.join(CURVES_HEADER)}, got {','.join(header or [])!r}")
        points = []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(CURVES_HEADER):
                raise RunDirError(f"{path}, line {line}: expected {len(CURVES_HEADER)} cells, got {len(row)}")
            step = number(row[0], "step", line)
            if step is None:
                raise RunDirError(f"{path}, line {line}: the step cell is empty")
            points.append(CurvePoint(int(step), number(row[1], "epoch", line), number(row[2], "train_loss", line),
                                     number(row[3], "eval_loss", line), number(row[4], "eval_ppl", line), row[5]))
    if not any(p.eval_loss is not None for p in points):
        raise RunDirError(f"{path} has no evaluated step (no eval_loss); the card's results need at least one")
    return points

"""Shared fixtures. Data comes from the shared folder (``$STENTOR_SHARED`` or ``../shared``);
a missing folder fails the tests that need it with a message saying how to point at it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `python -m stentor_hub` and `python -c` put the working folder first on sys.path; started from
# the checkout, a test's subprocess would import the checkout's stentor_hub (no compiled engine)
# instead of the installed wheel `make test` put there. PYTHONSAFEPATH (3.11+) leaves it out.
os.environ.setdefault("PYTHONSAFEPATH", "1")

from stentor_hub._resources import shared_dir

VOCAB_8000 = "english-8000-strict-nocapcode-v1"
VOCAB_1024 = "english-1024-strict-nocapcode-v1"


@pytest.fixture(scope="session")
def shared() -> Path:
    try:
        return shared_dir(required=True)
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def vocab8000_path(shared) -> Path:
    return shared / "tokenmonster" / "vocabs" / f"{VOCAB_8000}.vocab"


@pytest.fixture(scope="session")
def vocab1024_path(shared) -> Path:
    return shared / "tokenmonster" / "vocabs" / f"{VOCAB_1024}.vocab"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, vocab8000_path) -> Path:
    """A tokenizer folder exported from the 8000 vocabulary (as `stentor-hub tokenizer export`)."""
    from stentor_hub.tokenizer import export_tokenizer

    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    export_tokenizer(vocab8000_path, out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The exported tokenizer loaded through the real AutoTokenizer (trust_remote_code)."""
    from stentor_hub.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


# -- training (owned by the training recipe, issue 3) -----------------------------------------

# A short real run of recipes/tiny-cpu.yaml: 40 optimizer steps, evaluations at 0/20/40.
TINY_RUN_OVERRIDES = [
    "training.max_steps=40",
    "training.eval_steps=20",
    "training.logging_steps=10",
    "training.save_steps=20",
    "training.best_eval_start_step=20",
]


@pytest.fixture(scope="session")
def train_cache_dir(tmp_path_factory) -> Path:
    """Token cache shared by the training tests (the corpus is tokenized once per session)."""
    return tmp_path_factory.mktemp("token_cache")


def run_train(run_dir: Path, *overrides: str, config: str = "tiny-cpu", cache_dir: Path | None = None,
              resume: bool = False, launcher: list[str] | None = None, timeout: float = 600, env: dict | None = None):
    """Run ``python -m stentor_hub.recipes.train`` in a subprocess (as a user would); returns
    the CompletedProcess."""
    import os
    import subprocess
    import sys

    cmd = [*(launcher or [sys.executable]), "-m", "stentor_hub.recipes.train", "--config", config,
           "--output-dir", str(run_dir)]
    if resume:
        cmd.append("--resume")
    if cache_dir is not None:
        cmd.append(f"data.cache_dir={cache_dir}")
    cmd += list(overrides)
    env = {**(os.environ if env is None else env), "STENTOR_SHARED": str(shared_dir(required=True)),
           "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, shared, train_cache_dir) -> Path:
    """RUN_DIR of a real (short) training run of ``recipes/tiny-cpu.yaml``: final/, best/,
    tokenizer/, training_curves.csv, run_manifest.json, checkpoints/."""
    run_dir = tmp_path_factory.mktemp("tiny_run") / "run"
    result = run_train(run_dir, *TINY_RUN_OVERRIDES, cache_dir=train_cache_dir)
    if result.returncode != 0:
        pytest.fail(f"tiny-cpu training failed (exit {result.returncode}):\n{result.stderr[-4000:]}", pytrace=False)
    return run_dir

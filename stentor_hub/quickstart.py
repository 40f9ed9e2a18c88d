"""``stentor-hub quickstart``: the project's main job in one command, small enough for a laptop.

    stentor-hub quickstart [--workdir DIR] [--corpus PATH] [--vocab PATH_OR_NAME] [--blimp PATH]
                           [--repo-id OWNER/NAME] [--push]

Raw text in, a loadable repository with a complete model card out:

1. trains the ``tiny-cpu`` recipe on the corpus (:func:`stentor_hub.recipes.train.train`, the
   function behind ``python -m stentor_hub.recipes.train``);
2. evaluates the best checkpoint: validation perplexity and a BLiMP subset (the first
   ``--blimp-limit`` pairs of each of the 67 tasks), through :mod:`stentor_hub.evaluation`;
3. renders the card and stages the repository (:func:`stentor_hub.publish.stage_repository`),
   runs the publisher's checks (a fresh offline process loads and generates), and pushes it in one
   commit only with ``--push``;
4. reloads the staged repository with ``AutoTokenizer``/``AutoModelForCausalLM`` and samples a
   short text with the card's settings (top_p 0.8, temperature 1.0, repetition penalty 1.1);
5. prints a summary and writes it to ``WORKDIR/summary.json``.

Inputs default to the development data (``$STENTOR_SHARED`` or ``../shared``) when it exists, else
to Hub names (the corpus ``epfml/FineWeb-HQ``, the vocabulary ``english-8000-strict-nocapcode-v1``,
BLiMP ``nyu-mll/blimp``). Every input is checked before training starts; offline without local
copies, the command says which flags to pass.

``--max-steps`` (and ``--blimp-limit``) shrink the budget on the same code path, for tests and
impatient people; ``--set KEY=VALUE`` passes any other recipe override.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stentor_hub.errors import QuickstartError
from stentor_hub.helpers import (FOLDER_MARKER, check_repo_id, claim_folder, looks_like_hub_id, write_folder_marker,
                                 write_json_atomic, write_text_atomic)
from stentor_hub.run_dir import RunDir

RECIPE = "tiny-cpu"
DEFAULT_WORKDIR = os.path.join("runs", "quickstart")
RUN_NAME = "stentor2-tiny-quickstart"
HUB_CORPUS = "epfml/FineWeb-HQ"
DEFAULT_PROMPT = "Once upon a time"
DEFAULT_BLIMP_LIMIT = 100
SAMPLE_TOKENS = 40
# the Stentor2-30M card's recommended sampling settings
SAMPLING = {"do_sample": True, "top_p": 0.8, "temperature": 1.0, "repetition_penalty": 1.1}
TOTAL_STEPS = 6
WORKDIR_KIND = "quickstart workdir"  # the kind in the workdir's folder marker (helpers.FOLDER_MARKER)

logger = logging.getLogger("stentor_hub.quickstart")

_CARD_CONFIG = """\
# Written by `stentor-hub quickstart`: prose for the demo model's card.
model_name: {model_name}
summary: |
  A demonstration model made by `stentor-hub quickstart` in a few minutes on a CPU: the `tiny-cpu`
  recipe (the Stentor2 training code path at laptop size) trained on {corpus}.
limitations: |
  This model is tiny and trained for minutes on a small corpus. It shows that the pipeline works end
  to end (training, evaluation, card, repository); it does not write good text and must not be used
  for anything that matters.
"""


# -- inputs ---------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Where the corpus, vocabulary and BLiMP data come from, resolved before anything runs."""

    train_sources: list
    eval_sources: list  # empty: the first documents of the corpus are held out
    vocab: str  # a name or a path, as the recipe records it
    vocab_path: Path
    blimp: str
    notes: list[str] = field(default_factory=list)  # where each default came from

    @property
    def corpus_label(self) -> str:
        first = self.train_sources[0]
        return str(first["path"] if isinstance(first, dict) else first)


def hub_reachable(timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the Hub (``HF_ENDPOINT``) answers a TCP connection, and its address. One quick probe,
    so offline inputs are reported at once instead of after the client's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False, endpoint
    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout):
            return True, endpoint
    except OSError:
        return False, endpoint


class InputProblems:
    """The problems found while resolving the inputs, reported together; the Hub is probed once,
    the first time an input needs it."""

    def __init__(self):
        self.problems: list[str] = []
        self.offline_names: list[str] = []  # Hub names that cannot be fetched
        self.notes: list[str] = []  # where each default came from
        self._hub: tuple[bool, str] | None = None

    def online(self) -> bool:
        if self._hub is None:
            self._hub = hub_reachable()
        return self._hub[0]

    def offline(self, name: str, problem: str) -> None:
        self.offline_names.append(name)
        self.problems.append(problem)

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        message = "quickstart cannot start (nothing was written):\n  - " + "\n  - ".join(self.problems)
        if self.offline_names:
            message += (
                f"\nThe Hub ({self._hub[1] if self._hub else 'HF_ENDPOINT'}) is unreachable or HF_HUB_OFFLINE is set, so "
                f"{', '.join(self.offline_names)} cannot be fetched. Offline, pass local copies: --corpus PATH (text to "
                "train on), --vocab PATH (the english-8000-strict-nocapcode-v1.vocab TokenMonster file) and --blimp DIR "
                "(the BLiMP *.jsonl files); or set STENTOR_SHARED=/path/to/shared, a folder holding tokenmonster/vocabs/, "
                "blimp/ and corpora/gutenberg_{train,val}.txt."
            )
        raise QuickstartError(message)


def resolve_inputs(corpus: str | None, vocab: str | None, blimp: str | None, blimp_limit: int,
                   recipe: dict) -> tuple[Inputs, dict]:
    """Resolve and check every input; returns the inputs and the BLiMP pairs (read now, so a
    missing file fails before training). Raises :class:`QuickstartError` listing every problem
    at once, with the flags that fix them."""
    from stentor_hub._resources import shared_dir

    shared, found = shared_dir(), InputProblems()
    train_sources, eval_sources = resolve_corpus(corpus, recipe, shared, found)
    vocab_name, vocab_path = resolve_vocab_input(vocab, recipe, found)
    blimp_data, pairs = resolve_blimp_input(blimp, blimp_limit, shared, found)
    found.raise_if_any()
    return Inputs(train_sources, eval_sources, vocab_name, vocab_path, blimp_data, found.notes), pairs


def resolve_corpus(corpus: str | None, recipe: dict, shared: Path | None, found: InputProblems) -> tuple[list, list]:
    """``--corpus``, else the recipe's Gutenberg text in the shared data, else the Hub corpus;
    each source is checked (a local file exists, a Hub dataset streams one document)."""
    from stentor_hub.recipes.data import Source, iter_documents, local_files

    if corpus is not None:
        train_sources = [{"path": corpus if looks_like_hub_id(corpus) else str(Path(corpus).expanduser())}]
        eval_sources: list = []
    elif shared is not None:
        train_sources, eval_sources = recipe["data"]["train_sources"], recipe["data"]["eval_sources"] or []
        found.notes.append(f"corpus: the tiny-cpu recipe's Gutenberg text in {shared}/corpora")
    else:
        train_sources, eval_sources = [{"path": HUB_CORPUS}], []
        found.notes.append(f"corpus: the Hub dataset {HUB_CORPUS} (streamed; no shared data folder found)")
    for spec in [*train_sources, *eval_sources]:
        source = Source.parse(spec)
        if source.is_local():
            if not local_files(source.path):
                found.problems.append(f"corpus: {source.path} does not exist; pass --corpus PATH (a .txt file with blank "
                                      "lines between documents, .jsonl/.parquet with a 'text' field, or a glob)")
        elif not found.online():
            found.offline(source.path, f"corpus: {source.path} is a Hub dataset and the Hub is unreachable")
        else:
            try:
                next(iter(iter_documents(source)), None)  # streams one document
            except (OSError, ValueError) as e:
                found.problems.append(f"corpus: {e}")
    return train_sources, eval_sources


def resolve_vocab_input(vocab: str | None, recipe: dict, found: InputProblems) -> tuple[str, Path | None]:
    """The vocabulary as the recipe records it (a name or a path) and its file: a path, a name
    found locally, or a Hub download (only tried when the Hub answers)."""
    from stentor_hub.tokenizer import DEFAULT_VOCAB, find_local_vocab, resolve_vocab, vocab_is_path, vocab_search_dirs

    vocab_name = str(vocab) if vocab is not None else (recipe["tokenizer"]["vocab"] or DEFAULT_VOCAB)
    if not vocab_is_path(vocab_name) and find_local_vocab(vocab_name) is None and not found.online():
        found.offline(vocab_name, f"vocabulary: {vocab_name} is not in {', '.join(map(str, vocab_search_dirs()))} "
                                  "and the Hub is unreachable")
        return vocab_name, None
    try:
        return vocab_name, resolve_vocab(vocab_name)
    except FileNotFoundError as e:
        found.problems.append(f"vocabulary: {e}")
        return vocab_name, None


def resolve_blimp_input(blimp: str | None, blimp_limit: int, shared: Path | None,
                        found: InputProblems) -> tuple[str, dict]:
    """``--blimp``, else the shared data's BLiMP folder, else the Hub dataset; its pairs are read now."""
    from stentor_hub.evaluation import BLIMP_HUB_DATASET, load_blimp

    if blimp is not None:
        blimp_data = blimp if looks_like_hub_id(blimp) else str(Path(blimp).expanduser())
    elif shared is not None and (shared / "blimp").is_dir():
        blimp_data = str(shared / "blimp")
        found.notes.append(f"BLiMP: {blimp_data}")
    else:
        blimp_data = BLIMP_HUB_DATASET
        found.notes.append(f"BLiMP: the Hub dataset {BLIMP_HUB_DATASET}")
    if looks_like_hub_id(blimp_data) and not found.online():
        found.offline(blimp_data, f"BLiMP: {blimp_data} is a Hub dataset and the Hub is unreachable")
        return blimp_data, {}
    try:
        return blimp_data, load_blimp(blimp_data, limit=blimp_limit)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        found.problems.append(f"BLiMP: {first.replace('with --data', 'with --blimp')}")
        return blimp_data, {}


def build_recipe(inputs: Inputs, max_steps: int | None = None, overrides: list[str] | None = None) -> dict:
    """The ``tiny-cpu`` recipe with the quickstart's inputs and budget."""
    from stentor_hub.recipes.config import apply_overrides, load_recipe

    config = load_recipe(RECIPE)
    config["data"]["train_sources"] = inputs.train_sources
    config["data"]["eval_sources"] = inputs.eval_sources or None
    config["tokenizer"]["vocab"] = inputs.vocab
    if max_steps is not None:
        config = apply_overrides(config, budget_overrides(config, max_steps))
    return apply_overrides(config, overrides or [])


def budget_overrides(config: dict, max_steps: int) -> list[str]:
    """``training.max_steps=N`` plus the evaluation, logging, checkpoint and schedule settings
    scaled to it, so a short run still evaluates (and selects a best checkpoint) twice."""
    if max_steps < 1:
        raise QuickstartError(f"--max-steps must be at least 1, got {max_steps}")
    training, schedule = config["training"], config["schedule"]
    every = min(training["eval_steps"], max(1, max_steps // 2))
    return [
        f"training.max_steps={max_steps}",
        f"training.eval_steps={every}",
        f"training.save_steps={min(training['save_steps'], every)}",
        f"training.best_eval_start_step={min(training['best_eval_start_step'], every)}",
        f"training.logging_steps={min(training['logging_steps'], max(1, max_steps // 4))}",
        f"schedule.total_steps={min(schedule['total_steps'], max_steps)}",
        f"schedule.warmup_steps={min(schedule['warmup_steps'], max(1, max_steps // 10))}",
    ]


def _txt_has_two_documents(path: Path) -> bool:
    """Whether a ``.txt`` file has a blank line between two stretches of text (documents), read
    line by line and stopping at the second document."""
    seen_text = seen_gap = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                if seen_gap:
                    return True
                seen_text = True
            elif seen_text:
                seen_gap = True
    return False


def check_holdout(config: dict) -> None:
    """With no evaluation source, validation blocks are held out as whole documents from the start
    of the corpus; a ``.txt`` corpus that is one single document would leave nothing to train on."""
    from stentor_hub.recipes.data import Source, local_files

    data = config["data"]
    if data.get("eval_sources"):
        return
    files = [f for spec in data["train_sources"] for f in local_files(Source.parse(spec).path)]
    if files and all(f.suffix == ".txt" for f in files) and not any(_txt_has_two_documents(f) for f in files):
        names = ", ".join(str(f) for f in files)
        raise QuickstartError(
            f"corpus {names} is a single document (no blank line between documents). Validation blocks are held "
            "out as whole documents from the start of the corpus, so nothing would be left to train on. Put a blank "
            "line between documents, use .jsonl (one document per record), or name validation text with "
            "--set 'data.eval_sources=[/path/to/validation.txt]'"
        )


# -- the workdir ----------------------------------------------------------------------------------


def prepare_workdir(workdir: Path) -> None:
    """Create ``workdir``; a previous quickstart's folder (its marker lists the files quickstart
    wrote) has those files replaced, and any file quickstart did not write makes it refuse."""
    if workdir.exists() and not workdir.is_dir():
        raise QuickstartError(f"--workdir {workdir} is a file; choose a folder")
    existing = workdir
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise QuickstartError(f"--workdir {workdir} is not writable; choose another folder")
    claim_folder(workdir, WORKDIR_KIND, "--workdir")


def _check_push(push: bool, repo_id: str | None) -> None:
    if repo_id is not None:
        check_repo_id(repo_id, QuickstartError)
    if not push:
        return
    if repo_id is None:
        raise QuickstartError("--push needs --repo-id OWNER/NAME (the Hub repository to create or update)")
    from huggingface_hub import get_token

    if not get_token():
        raise QuickstartError(
            "--push needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login` "
            "(HF_ENDPOINT picks another Hub); checked before training, so nothing was done"
        )


# -- the run --------------------------------------------------------------------------------------


def _step(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{seconds:.1f}s"


class _Timer:
    """Seconds per step of the quickstart, for the summary."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str):
        t = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t

    def summary(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in self.seconds.items()} | {"total": round(time.perf_counter() - self.started, 1)}


@dataclass
class Evaluation:
    perplexity: dict
    blimp: dict
    blimp_file: Path


@dataclass
class Staged:
    repo_dir: Path
    card_config: Path
    check: Any  # stentor_hub.publish.CheckReport
    pushed: dict | None = None


def run_quickstart(workdir: str | os.PathLike = DEFAULT_WORKDIR, corpus: str | None = None, vocab: str | None = None,
                   blimp: str | None = None, repo_id: str | None = None, push: bool = False,
                   max_steps: int | None = None, blimp_limit: int = DEFAULT_BLIMP_LIMIT,
                   prompt: str = DEFAULT_PROMPT, overrides: list[str] | None = None, seed: int = 42,
                   threads: int | None = None) -> dict:
    """Run the whole job, one function a step; returns the summary (also written to
    ``WORKDIR/summary.json``). Raises :class:`QuickstartError` for bad input, before training."""
    timer = _Timer()
    workdir = Path(workdir).expanduser().resolve()
    if blimp_limit < 1:
        raise QuickstartError(f"--blimp-limit must be at least 1 pair per task, got {blimp_limit}")
    _check_push(push, repo_id)
    with timer.step("inputs"):
        inputs, pairs, config = check_inputs(workdir, corpus, vocab, blimp, blimp_limit, max_steps, overrides)
    try:
        run, threads_used = train_step(config, workdir, threads, timer)
        with timer.step("evaluation"):
            evaluation = evaluate_step(run, config, pairs, workdir, blimp_limit)
        staged = publish_step(run, inputs, evaluation, workdir, repo_id, push, timer)
        with timer.step("sample"):
            sample = sample_step(staged.repo_dir, prompt, seed, workdir)
        summary = build_summary(workdir, run, inputs, evaluation, staged, prompt, sample, seed, threads_used, blimp_limit)
        summary["seconds"] = timer.summary()
        write_json_atomic(summary, workdir / "summary.json")
    finally:  # list what this run wrote, so the next quickstart may replace exactly that
        write_folder_marker(workdir, WORKDIR_KIND)
    print_summary(summary)
    return summary


def check_inputs(workdir: Path, corpus: str | None, vocab: str | None, blimp: str | None, blimp_limit: int,
                 max_steps: int | None, overrides: list[str] | None) -> tuple[Inputs, dict, dict]:
    """Step 1: resolve the inputs, build and check the recipe, then prepare the workdir."""
    from stentor_hub.recipes.config import load_recipe
    from stentor_hub.recipes.train import check_recipe

    _step(1, TOTAL_STEPS, "checking the inputs")
    inputs, pairs = resolve_inputs(corpus, vocab, blimp, blimp_limit, load_recipe(RECIPE))
    config = build_recipe(inputs, max_steps, overrides)
    check_recipe(config, 1)
    check_holdout(config)
    for note in inputs.notes:
        print(f"  {note}")
    print(f"  vocabulary: {inputs.vocab_path}")
    prepare_workdir(workdir)
    return inputs, pairs, config


def train_step(config: dict, workdir: Path, threads: int | None, timer: _Timer) -> tuple[RunDir, int]:
    """Step 2: training, through the same function as ``python -m stentor_hub.recipes.train``."""
    import torch

    from stentor_hub.recipes.train import train

    _step(2, TOTAL_STEPS, f"training the {RECIPE} recipe ({config['training']['max_steps']} steps at most; "
                          "the corpus is tokenized first and cached for the next run)")
    threads_used, why = choose_threads(threads)
    torch.set_num_threads(threads_used)
    print(f"  torch threads: {threads_used} ({why})")
    _log_to_console()
    with timer.step("training"):
        run = train(config, workdir / RUN_NAME)
    return run, threads_used


def evaluate_step(run: RunDir, config: dict, pairs: dict, workdir: Path, blimp_limit: int) -> Evaluation:
    """Step 3: perplexity and BLiMP of the best checkpoint (the weights that get published)."""
    from stentor_hub.evaluation import evaluate_blimp, evaluate_perplexity, load_model_and_tokenizer

    _step(3, TOTAL_STEPS, "evaluating the best checkpoint: perplexity, then BLiMP "
                          f"({len(pairs)} tasks x the first {blimp_limit} pairs)")
    model, tokenizer = load_model_and_tokenizer(run.best, device=None)
    data = config["data"]
    # the Trainer's eval blocks: the eval source, or the first documents held out of the corpus
    ppl_source = (data["eval_sources"] or data["train_sources"])[0]
    ppl = evaluate_perplexity(model, tokenizer, ppl_source, block_size=data["block_size"],
                              max_samples=data["max_eval_samples"], progress=True, model_name=str(run.best))
    write_json_atomic(ppl, workdir / "eval" / "perplexity.json")
    blimp_results = evaluate_blimp(model, tokenizer, pairs, progress=True, model_name=str(run.best))
    blimp_results["limit"] = blimp_limit
    blimp_file = write_json_atomic(blimp_results, workdir / "eval" / "blimp_results.json")
    return Evaluation(ppl, blimp_results, blimp_file)


def publish_step(run: RunDir, inputs: Inputs, evaluation: Evaluation, workdir: Path, repo_id: str | None,
                 push: bool, timer: _Timer) -> Staged:
    """Steps 4 and 5: the card, the staged repository and the publisher's checks
    (:func:`stentor_hub.publish.publish_run`, as ``stentor-hub publish``); the push only when asked."""
    from stentor_hub.errors import PushError
    from stentor_hub.publish import publish_run

    _step(4, TOTAL_STEPS, "rendering the card and staging the repository; a fresh offline process loads it")
    model_name = repo_id.split("/")[1] if repo_id else RUN_NAME
    card_config = write_text_atomic(workdir / "card_config.yaml", _CARD_CONFIG.format(
        model_name=json.dumps(model_name), corpus=_corpus_words(inputs)))
    staging_started = time.perf_counter()
    push_started = None

    def checked(_report) -> None:
        nonlocal push_started
        timer.seconds["staging"] = time.perf_counter() - staging_started
        push_started = time.perf_counter()
        _step(5, TOTAL_STEPS, f"pushing {workdir / 'repo'} to {repo_id} in one commit" if push
              else "not pushing (pass --push --repo-id OWNER/NAME to publish)")

    best_step = run.read_manifest().best["step"]
    try:
        report = publish_run(run, repo_id, blimp=evaluation.blimp_file, card_config=card_config,
                             staging=workdir / "repo", dry_run=not push, on_checked=checked,
                             commit_message=f"stentor-hub quickstart: {RECIPE} recipe, best checkpoint (step {best_step})")
    except PushError as e:  # already says what happened, without the token
        raise QuickstartError(f"{e}\nEverything else is done and kept in {workdir}; once fixed, push the staged "
                              f"repository with: stentor-hub publish {run} --repo-id {repo_id} "
                              f"--blimp {evaluation.blimp_file} --card-config {card_config}") from None
    staged = Staged(report.staging, card_config, report.check)
    if report.push is not None:
        staged.pushed = {"repo_id": repo_id, "commit_url": report.push.commit_url, "commit_oid": report.push.commit_oid,
                         "created_commit": report.push.created_commit}
        timer.seconds["push"] = time.perf_counter() - push_started
    return staged


def sample_step(repo_dir: Path, prompt: str, seed: int, workdir: Path) -> str:
    """Step 6: reload the staged repository as a user would, and sample with the card's settings."""
    _step(6, TOTAL_STEPS, "reloading the staged repository with AutoTokenizer/AutoModelForCausalLM and sampling")
    sample = generate_sample(repo_dir, prompt, seed=seed)
    write_text_atomic(workdir / "sample.txt", sample + "\n")
    return sample


def build_summary(workdir: Path, run: RunDir, inputs: Inputs, evaluation: Evaluation, staged: Staged, prompt: str,
                  sample: str, seed: int, threads_used: int, blimp_limit: int) -> dict:
    """What the quickstart made, for ``summary.json`` and the printed summary."""
    import torch

    manifest, repo_dir = run.read_manifest(), staged.repo_dir
    ppl, blimp_results, report = evaluation.perplexity, evaluation.blimp, staged.check
    return {
        "workdir": str(workdir),
        "run_dir": str(run),
        "repository": str(repo_dir),
        "repository_files": sorted(p.relative_to(repo_dir).as_posix() for p in repo_dir.rglob("*")
                                   if p.is_file() and p.name != FOLDER_MARKER),  # what is pushed
        "card": str(repo_dir / "README.md"),
        "inputs": {"corpus": inputs.train_sources, "eval": inputs.eval_sources or "held out from the corpus",
                   "vocab": str(inputs.vocab_path), "blimp": inputs.blimp},
        "model": {"parameters": manifest.parameters, "checkpoint": "best", "best_step": manifest.best["step"]},
        "training": {k: manifest.training[k] for k in ("steps", "tokens_seen", "train_seconds", "tokens_per_second", "stopped_by")}
        | {"mixed_precision": manifest.hardware["mixed_precision"], "start_eval_loss": _start_eval_loss(run)},
        "perplexity": {"eval_loss": ppl["eval_loss"], "eval_ppl": ppl["eval_ppl"], "blocks": ppl["blocks"],
                       "block_size": ppl["block_size"], "data": ppl["data"]},
        "blimp": {"overall": blimp_results["overall"], "num_tasks": blimp_results["num_tasks"],
                  "num_pairs": blimp_results["num_pairs"], "limit": blimp_limit},
        "check": {"tensors": report.tensors, "parameters": report.parameters, "card_results": report.card_results},
        "pushed": staged.pushed,
        "sample": {"prompt": prompt, "text": sample, "max_new_tokens": SAMPLE_TOKENS, "seed": seed,
                   **{k: v for k, v in SAMPLING.items() if k != "do_sample"}},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": threads_used,
    }


def choose_threads(threads: int | None) -> tuple[int, str]:
    """torch's CPU threads for the run: ``threads`` if given; else torch's default, or 1 when other
    processes already keep every core busy (load average at or above the core count), where
    multi-threaded kernels wait on each other and run several times slower than one thread."""
    import torch

    if threads is not None:
        return threads, "--threads"
    default = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except OSError:
        return default, "torch's default"
    cores = os.cpu_count() or 1
    if default > 1 and load >= cores:
        return 1, (f"the CPU is busy: load average {load:.1f} on {cores} cores, where one thread is several times "
                   f"faster than {default}; --threads {default} to override")
    return default, "torch's default"


def _corpus_words(inputs: Inputs) -> str:
    names = []
    for spec in inputs.train_sources:
        path = str(spec["path"] if isinstance(spec, dict) else spec)
        names.append(f"`{path if looks_like_hub_id(path) else Path(path).name}`")
    return ", ".join(names)


def _start_eval_loss(run: RunDir) -> float | None:
    first = next((p for p in run.read_curves() if p.eval_loss is not None), None)
    return None if first is None else first.eval_loss


def generate_sample(repo_dir: str | os.PathLike, prompt: str, seed: int = 42, max_new_tokens: int = SAMPLE_TOKENS) -> str:
    """Load ``repo_dir`` as a user loads a Hub repository and sample with the card's settings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(repo_dir), trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(str(repo_dir))
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **SAMPLING)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def print_summary(summary: dict) -> None:
    t, ppl, blimp = summary["training"], summary["perplexity"], summary["blimp"]
    workdir = Path(summary["workdir"])

    def rel(path: str) -> str:
        p = Path(path)
        return str(p.relative_to(workdir.parent)) if p.is_relative_to(workdir.parent) else str(p)

    start = f", from {t['start_eval_loss']:.2f} at step 0" if t.get("start_eval_loss") is not None else ""
    lines = [
        "",
        f"quickstart finished in {_duration(summary['seconds']['total'])} ({summary['device']}); everything is in {workdir}",
        f"  training run   {rel(summary['run_dir'])}/  {summary['model']['parameters']:,} parameters, {t['steps']} steps, "
        f"{t['tokens_seen']:,} tokens in {_duration(t['train_seconds'])} ({t['tokens_per_second']:,.0f} tokens/s, {'fp32' if t['mixed_precision'] == 'no' else t['mixed_precision']})",
        f"  perplexity     {ppl['eval_ppl']:.2f} (eval loss {ppl['eval_loss']:.3f}{start}) on {ppl['blocks']} blocks of "
        f"{ppl['block_size']} tokens of {Path(str(ppl['data']['path'])).name}  -> eval/perplexity.json",
        f"  BLiMP          {blimp['overall']:.1f}% over {blimp['num_tasks']} tasks x {blimp['limit']} pairs "
        f"({blimp['num_pairs']:,} pairs; chance is 50%)  -> eval/blimp_results.json",
        f"  repository     {rel(summary['repository'])}/  {len(summary['repository_files'])} files, card {rel(summary['card'])}; "
        "checks passed (fresh-process load)",
    ]
    if summary["pushed"]:
        p = summary["pushed"]
        lines.append(f"  pushed         {p['commit_url']}" + ("" if p["created_commit"] else " (unchanged; no new commit)"))
    else:
        lines.append("  pushed         no (stentor-hub publish RUN_DIR --repo-id OWNER/NAME, or quickstart --push)")
    s = summary["sample"]
    lines += [
        f"  sample         top_p {s['top_p']}, temperature {s['temperature']}, repetition penalty "
        f"{s['repetition_penalty']}, {s['max_new_tokens']} new tokens  -> sample.txt",
        "",
        "    " + s["text"].replace("\n", "\n    "),
        "",
    ]
    print("\n".join(lines), flush=True)


def _log_to_console() -> None:
    """Show the training recipe's INFO lines (model size, data, throughput) once."""
    package = logging.getLogger("stentor_hub")
    if not package.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("  %(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)

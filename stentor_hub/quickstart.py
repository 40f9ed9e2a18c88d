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

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RECIPE = "tiny-cpu"
DEFAULT_WORKDIR = os.path.join("runs", "quickstart")
RUN_NAME = "stentor2-tiny-quickstart"
HUB_CORPUS = "epfml/FineWeb-HQ"
DEFAULT_PROMPT = "Once upon a time"
DEFAULT_BLIMP_LIMIT = 100
SAMPLE_TOKENS = 40
# the Stentor2-30M card's recommended sampling settings
SAMPLING = {"do_sample": True, "top_p": 0.8, "temperature": 1.0, "repetition_penalty": 1.1}
MARKER = ".stentor-quickstart"  # a workdir holding it was made by quickstart and may be replaced

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


class QuickstartError(ValueError):
    """Something quickstart needs is missing or wrong; the message says what to pass."""


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


def _looks_like_hub_id(name: str) -> bool:
    parts = str(name).split("/")
    return (len(parts) == 2 and all(parts) and not str(name).startswith((".", "/", "~"))
            and not Path(name).expanduser().exists() and Path(name).suffix == "")


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


def resolve_inputs(corpus: str | None, vocab: str | None, blimp: str | None, blimp_limit: int,
                   recipe: dict) -> tuple[Inputs, dict]:
    """Resolve and check every input; returns the inputs and the BLiMP pairs (read now, so a
    missing file fails before training). Raises :class:`QuickstartError` listing every problem
    at once, with the flags that fix them."""
    from stentor_hub._resources import shared_dir
    from stentor_hub.evaluation import BLIMP_HUB_DATASET, load_blimp
    from stentor_hub.recipes.data import Source, iter_documents, local_files
    from stentor_hub.tokenizer import DEFAULT_VOCAB, resolve_vocab, vocab_search_dirs

    shared = shared_dir()
    problems: list[str] = []
    notes: list[str] = []
    hub: tuple[bool, str] | None = None
    offline_names: list[str] = []

    def online() -> bool:
        nonlocal hub
        if hub is None:
            hub = hub_reachable()
        return hub[0]

    # corpus
    if corpus is not None:
        train_sources = [{"path": corpus if _looks_like_hub_id(corpus) else str(Path(corpus).expanduser())}]
        eval_sources: list = []
    elif shared is not None:
        train_sources, eval_sources = recipe["data"]["train_sources"], recipe["data"]["eval_sources"] or []
        notes.append(f"corpus: the tiny-cpu recipe's Gutenberg text in {shared}/corpora")
    else:
        train_sources, eval_sources = [{"path": HUB_CORPUS}], []
        notes.append(f"corpus: the Hub dataset {HUB_CORPUS} (streamed; no shared data folder found)")
    for spec in [*train_sources, *eval_sources]:
        source = Source.parse(spec)
        if source.is_local():
            if not local_files(source.path):
                problems.append(f"corpus: {source.path} does not exist; pass --corpus PATH (a .txt file with blank "
                                "lines between documents, .jsonl/.parquet with a 'text' field, or a glob)")
        elif not online():
            offline_names.append(source.path)
            problems.append(f"corpus: {source.path} is a Hub dataset and the Hub is unreachable")
        else:
            try:
                next(iter(iter_documents(source)), None)  # streams one document
            except (OSError, ValueError) as e:
                problems.append(f"corpus: {e}")

    # vocabulary: a path, a name found locally, or a Hub download
    vocab_name = str(vocab) if vocab is not None else (recipe["tokenizer"]["vocab"] or DEFAULT_VOCAB)
    vocab_path = None
    is_name = not (vocab_name.endswith(".vocab") or os.sep in vocab_name or Path(vocab_name).expanduser().exists())
    if is_name and not any((d / f"{vocab_name}.vocab").is_file() for d in vocab_search_dirs()) and not online():
        offline_names.append(vocab_name)
        problems.append(f"vocabulary: {vocab_name} is not in {', '.join(map(str, vocab_search_dirs()))} and the Hub is unreachable")
    else:
        try:
            vocab_path = resolve_vocab(vocab_name)
        except FileNotFoundError as e:
            problems.append(f"vocabulary: {e}")

    # BLiMP
    if blimp is not None:
        blimp_data = blimp if _looks_like_hub_id(blimp) else str(Path(blimp).expanduser())
    elif shared is not None and (shared / "blimp").is_dir():
        blimp_data = str(shared / "blimp")
        notes.append(f"BLiMP: {blimp_data}")
    else:
        blimp_data = BLIMP_HUB_DATASET
        notes.append(f"BLiMP: the Hub dataset {BLIMP_HUB_DATASET}")
    pairs: dict = {}
    if _looks_like_hub_id(blimp_data) and not online():
        offline_names.append(blimp_data)
        problems.append(f"BLiMP: {blimp_data} is a Hub dataset and the Hub is unreachable")
    else:
        try:
            pairs = load_blimp(blimp_data, limit=blimp_limit)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            problems.append(f"BLiMP: {first.replace('with --data', 'with --blimp')}")

    if problems:
        message = "quickstart cannot start (nothing was written):\n  - " + "\n  - ".join(problems)
        if offline_names:
            message += (
                f"\nThe Hub ({hub[1] if hub else 'HF_ENDPOINT'}) is unreachable or HF_HUB_OFFLINE is set, so "
                f"{', '.join(offline_names)} cannot be fetched. Offline, pass local copies: --corpus PATH (text to "
                "train on), --vocab PATH (the english-8000-strict-nocapcode-v1.vocab TokenMonster file) and --blimp DIR "
                "(the BLiMP *.jsonl files); or set STENTOR_SHARED=/path/to/shared, a folder holding tokenmonster/vocabs/, "
                "blimp/ and corpora/gutenberg_{train,val}.txt."
            )
        raise QuickstartError(message)
    return Inputs(train_sources, eval_sources, vocab_name, vocab_path, blimp_data, notes), pairs


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
    """Create ``workdir``; a previous quickstart's folder (it holds the marker file) is replaced,
    any other non-empty folder is refused."""
    if workdir.exists() and not workdir.is_dir():
        raise QuickstartError(f"--workdir {workdir} is a file; choose a folder")
    if workdir.is_dir() and any(workdir.iterdir()):
        if not (workdir / MARKER).is_file():
            raise QuickstartError(
                f"--workdir {workdir} already holds files that quickstart did not write; choose a new or empty "
                "--workdir (nothing is overwritten)"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by stentor-hub quickstart; the next quickstart run replaces this folder\n")
    if not os.access(workdir, os.W_OK):
        raise QuickstartError(f"--workdir {workdir} is not writable; choose another folder")


def _check_push(push: bool, repo_id: str | None) -> None:
    if repo_id is not None and (repo_id.count("/") != 1 or not all(repo_id.split("/"))):
        raise QuickstartError(f"--repo-id must be OWNER/NAME, got {repo_id!r}")
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


def run_quickstart(workdir: str | os.PathLike = DEFAULT_WORKDIR, corpus: str | None = None, vocab: str | None = None,
                   blimp: str | None = None, repo_id: str | None = None, push: bool = False,
                   max_steps: int | None = None, blimp_limit: int = DEFAULT_BLIMP_LIMIT,
                   prompt: str = DEFAULT_PROMPT, overrides: list[str] | None = None, seed: int = 42,
                   threads: int | None = None) -> dict:
    """Run the whole job; returns the summary (also written to ``WORKDIR/summary.json``)."""
    started = time.perf_counter()
    workdir = Path(workdir).expanduser().resolve()
    if blimp_limit < 1:
        raise QuickstartError(f"--blimp-limit must be at least 1 pair per task, got {blimp_limit}")
    _check_push(push, repo_id)
    total_steps = 6
    timings: dict[str, float] = {}

    _step(1, total_steps, "checking the inputs")
    from stentor_hub.recipes.config import load_recipe

    t = time.perf_counter()
    inputs, pairs = resolve_inputs(corpus, vocab, blimp, blimp_limit, load_recipe(RECIPE))
    config = build_recipe(inputs, max_steps, overrides)
    from stentor_hub.recipes.train import check_recipe

    check_recipe(config, 1)
    check_holdout(config)
    for note in inputs.notes:
        print(f"  {note}")
    print(f"  vocabulary: {inputs.vocab_path}")
    prepare_workdir(workdir)
    timings["inputs"] = time.perf_counter() - t

    # 2. training, through the same function as `python -m stentor_hub.recipes.train`
    _step(2, total_steps, f"training the {RECIPE} recipe ({config['training']['max_steps']} steps at most; "
                          "the corpus is tokenized first and cached for the next run)")
    import torch

    from stentor_hub.recipes.train import train

    threads_used, why = choose_threads(threads)
    torch.set_num_threads(threads_used)
    print(f"  torch threads: {threads_used} ({why})")
    _log_to_console()
    t = time.perf_counter()
    run_dir = train(config, workdir / RUN_NAME)
    timings["training"] = time.perf_counter() - t
    manifest = json.loads((run_dir / "run_manifest.json").read_text())

    # 3. evaluation of the best checkpoint (the weights that get published)
    _step(3, total_steps, "evaluating the best checkpoint: perplexity, then BLiMP "
                          f"({len(pairs)} tasks x the first {blimp_limit} pairs)")
    from stentor_hub.evaluation import evaluate_blimp, evaluate_perplexity, load_model_and_tokenizer, write_json_atomic

    t = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(run_dir / "best", device=None)
    data = config["data"]
    # the Trainer's eval blocks: the eval source, or the first documents held out of the corpus
    ppl_source = (data["eval_sources"] or data["train_sources"])[0]
    ppl = evaluate_perplexity(model, tokenizer, ppl_source, block_size=data["block_size"],
                              max_samples=data["max_eval_samples"], progress=True, model_name=str(run_dir / "best"))
    write_json_atomic(ppl, workdir / "eval" / "perplexity.json")
    blimp_results = evaluate_blimp(model, tokenizer, pairs, progress=True, model_name=str(run_dir / "best"))
    blimp_results["limit"] = blimp_limit
    blimp_file = write_json_atomic(blimp_results, workdir / "eval" / "blimp_results.json")
    del model
    timings["evaluation"] = time.perf_counter() - t

    # 4. card, staging and the publisher's checks
    _step(4, total_steps, "rendering the card and staging the repository; a fresh offline process loads it")
    from stentor_hub.publish import check_staged, push_folder, stage_repository

    t = time.perf_counter()
    model_name = repo_id.split("/")[1] if repo_id else RUN_NAME
    card_config = workdir / "card_config.yaml"
    card_config.write_text(_CARD_CONFIG.format(model_name=json.dumps(model_name), corpus=_corpus_words(inputs)))
    repo_dir = stage_repository(run_dir, workdir / "repo", repo_id=repo_id, blimp=blimp_file, card_config=card_config)
    report = check_staged(repo_dir)
    timings["staging"] = time.perf_counter() - t

    # 5. push, only when asked
    pushed = None
    if push:
        _step(5, total_steps, f"pushing {repo_dir} to {repo_id} in one commit")
        t = time.perf_counter()
        try:
            result = push_folder(repo_dir, repo_id, commit_message=f"stentor-hub quickstart: {RECIPE} recipe, "
                                                                   f"best checkpoint (step {manifest['best']['step']})")
        except ValueError as e:  # PublishError: already says what happened, without the token
            raise QuickstartError(f"{e}\nEverything else is done and kept in {workdir}; once fixed, push the staged "
                                  f"repository with: stentor-hub publish {run_dir} --repo-id {repo_id} "
                                  f"--blimp {blimp_file} --card-config {card_config}") from None
        pushed = {"repo_id": repo_id, "commit_url": result.commit_url, "commit_oid": result.commit_oid,
                  "created_commit": result.created_commit}
        timings["push"] = time.perf_counter() - t
    else:
        _step(5, total_steps, "not pushing (pass --push --repo-id OWNER/NAME to publish)")

    # 6. reload the staged repository as a user would, and sample with the card's settings
    _step(6, total_steps, "reloading the staged repository with AutoTokenizer/AutoModelForCausalLM and sampling")
    t = time.perf_counter()
    sample = generate_sample(repo_dir, prompt, seed=seed)
    (workdir / "sample.txt").write_text(sample + "\n", encoding="utf-8")
    timings["sample"] = time.perf_counter() - t

    files = sorted(p.relative_to(repo_dir).as_posix() for p in repo_dir.rglob("*") if p.is_file())
    summary = {
        "workdir": str(workdir),
        "run_dir": str(run_dir),
        "repository": str(repo_dir),
        "repository_files": files,
        "card": str(repo_dir / "README.md"),
        "inputs": {"corpus": inputs.train_sources, "eval": inputs.eval_sources or "held out from the corpus",
                   "vocab": str(inputs.vocab_path), "blimp": inputs.blimp},
        "model": {"parameters": manifest["model"]["parameters"], "checkpoint": "best", "best_step": manifest["best"]["step"]},
        "training": {k: manifest["training"][k] for k in ("steps", "tokens_seen", "train_seconds", "tokens_per_second", "stopped_by")}
        | {"mixed_precision": manifest["hardware"]["mixed_precision"], "start_eval_loss": _start_eval_loss(run_dir)},
        "perplexity": {"eval_loss": ppl["eval_loss"], "eval_ppl": ppl["eval_ppl"], "blocks": ppl["blocks"],
                       "block_size": ppl["block_size"], "data": ppl["data"]},
        "blimp": {"overall": blimp_results["overall"], "num_tasks": blimp_results["num_tasks"],
                  "num_pairs": blimp_results["num_pairs"], "limit": blimp_limit},
        "check": {"tensors": report.tensors, "parameters": report.parameters, "card_results": report.card_results},
        "pushed": pushed,
        "sample": {"prompt": prompt, "text": sample, "max_new_tokens": SAMPLE_TOKENS, "seed": seed,
                   **{k: v for k, v in SAMPLING.items() if k != "do_sample"}},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": threads_used,
        "seconds": {k: round(v, 1) for k, v in timings.items()} | {"total": round(time.perf_counter() - started, 1)},
    }
    write_json_atomic(summary, workdir / "summary.json")
    print_summary(summary)
    return summary


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
        names.append(f"`{path if _looks_like_hub_id(path) else Path(path).name}`")
    return ", ".join(names)


def _start_eval_loss(run_dir: Path) -> float | None:
    from stentor_hub.card import read_curves

    first = next((p for p in read_curves(run_dir / "training_curves.csv") if p.eval_loss is not None), None)
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


# -- CLI ------------------------------------------------------------------------------------------


def _cmd_quickstart(args) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run_quickstart(workdir=args.workdir, corpus=args.corpus, vocab=args.vocab, blimp=args.blimp, repo_id=args.repo_id,
                   push=args.push, max_steps=args.max_steps, blimp_limit=args.blimp_limit, prompt=args.prompt,
                   overrides=args.set, threads=args.threads)
    return 0



def register_cli(subparsers) -> None:
    from stentor_hub.cli import positive_int

    parser = subparsers.add_parser(
        "quickstart", help="train the tiny recipe, evaluate, write the card, stage (and optionally push) the repository",
        description="Raw text in, a loadable repository with a complete model card out: train the tiny-cpu recipe, "
                    "evaluate perplexity and a BLiMP subset, render the card, stage the repository (push it with --push), "
                    "reload it with the Auto classes and sample. Under 10 minutes on 2 CPU cores.",
    )
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, metavar="DIR",
                        help=f"where everything goes (default ./{DEFAULT_WORKDIR}; a previous quickstart's folder is replaced)")
    parser.add_argument("--corpus", metavar="PATH",
                        help=f"training text: .txt (blank lines between documents), .jsonl/.parquet ('text'), a glob, or a Hub "
                             f"dataset id (default: ../shared/corpora Gutenberg text, else {HUB_CORPUS}); validation is "
                             "held out from its first documents")
    parser.add_argument("--vocab", metavar="PATH_OR_NAME",
                        help="TokenMonster vocabulary file or name (default english-8000-strict-nocapcode-v1, looked up "
                             "locally, then on the Hub)")
    parser.add_argument("--blimp", metavar="PATH",
                        help="folder of BLiMP *.jsonl files or the Hub dataset nyu-mll/blimp (default ../shared/blimp if present)")
    parser.add_argument("--repo-id", metavar="OWNER/NAME", help="Hub repository named in the card (and pushed to with --push)")
    parser.add_argument("--push", action="store_true",
                        help="push the staged repository to --repo-id in one commit (token: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--max-steps", type=positive_int, metavar="N",
                        help="train at most N steps (default: the recipe's rules, 2 epochs and at most 400 steps); "
                             "evaluation, checkpoints and the lr schedule scale with it")
    parser.add_argument("--blimp-limit", type=positive_int, default=DEFAULT_BLIMP_LIMIT, metavar="N",
                        help=f"BLiMP pairs per task, the first N of each of the 67 (default {DEFAULT_BLIMP_LIMIT}; 1000 is all)")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt of the sample (default {DEFAULT_PROMPT!r})")
    parser.add_argument("--threads", type=positive_int, metavar="N",
                        help="torch CPU threads (default: torch's, or 1 when other processes keep every core busy)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other tiny-cpu recipe override, e.g. --set data.cache_dir=/tmp/tokens (repeatable)")
    parser.set_defaults(func=_cmd_quickstart)

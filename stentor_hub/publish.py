"""Publish a training run to the Hugging Face Hub: stage a complete repository, check it, push it
in one commit.

    stentor-hub card RUN_DIR --out README.md                      # render the card only
    stentor-hub publish RUN_DIR --repo-id OWNER/NAME [--dry-run]  # stage, check, push

The token comes from ``HF_TOKEN`` or the huggingface_hub login, the endpoint from ``HF_ENDPOINT``,
as for ``hf upload``. The token is never printed, logged or written: every message that leaves this
module goes through :func:`_redact`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stentor_hub.card import ModelCardFacts, plot_curves, render_card
from stentor_hub.errors import MissingInputError, PublishError, PushError
from stentor_hub.helpers import FOLDER_MARKER, build_folder, check_branch, check_repo_id, check_replaceable
from stentor_hub.run_dir import CURVES_FILE, MANIFEST_FILE, MODEL_FILES, RunDir
from stentor_hub.tokenizer import copy_tokenizer_files

RUN_FILES = (CURVES_FILE, MANIFEST_FILE)
GENERATE_PROMPT = "Once upon a time"
STAGING_KIND = "staging"  # the kind in the folder marker of a staging folder

__all__ = ["publish_run", "stage_repository", "check_staged", "push_folder", "PublishError", "PublishReport"]


# --- staging -----------------------------------------------------------------------------------


def stage_repository(run_dir: "str | os.PathLike | RunDir", staging_dir: str | os.PathLike, *, repo_id: str | None = None,
                     blimp: str | os.PathLike | None = None, card_config: str | os.PathLike | None = None,
                     template_dir: str | os.PathLike | None = None, checkpoint: str = "best",
                     space_id: str | None = None, compare: "list[str | os.PathLike]" = ()) -> Path:
    """Write the repository as it will be pushed into ``staging_dir``: the ``checkpoint`` weights
    with their configs, the tokenizer folder (with its remote code), ``README.md`` (its sample
    outputs generated from the staged weights), ``training_curves.csv`` and ``.svg``,
    ``run_manifest.json`` and ``blimp_results.json`` if given; ``compare`` names earlier models
    for the card's head-to-head table. With ``space_id`` the card links to that demo Space (see
    :mod:`stentor_hub.space`).

    The folder is built beside ``staging_dir`` and moved into place, so a failure leaves nothing
    half-written. An existing ``staging_dir`` is replaced only if it is empty or a previous staging
    holding nothing else (its marker lists the files stentor-hub wrote); a git clone, notes or data
    of the user's make it an :class:`OutputExistsError`, before any work. Returns ``staging_dir``."""
    run, staging_dir = RunDir.open(run_dir), Path(staging_dir)
    check_replaceable(staging_dir, STAGING_KIND, "--staging")
    facts = ModelCardFacts.from_run(run, blimp=blimp, card_config=card_config, repo_id=repo_id,
                                    checkpoint=checkpoint, template_dir=template_dir, compare=compare)
    if space_id is not None:
        from stentor_hub.space import space_url

        facts.space_id, facts.space_url = space_id, space_url(space_id)
    render_card(facts, template_dir)  # a template error stops here, before any weights are copied
    with build_folder(staging_dir, kind=STAGING_KIND, flag="--staging") as tmp:
        for name in MODEL_FILES:
            source = run.checkpoint(checkpoint) / name
            if not source.is_file():
                raise MissingInputError(f"{source} is missing; the {checkpoint} checkpoint must hold {', '.join(MODEL_FILES)}")
            shutil.copy2(source, tmp / name)
        copy_tokenizer_files(run.tokenizer, tmp)
        for name in RUN_FILES:
            shutil.copy2(run / name, tmp / name)
        if blimp is not None:
            shutil.copy2(blimp, tmp / "blimp_results.json")
        plot_curves(facts.curves, tmp / "training_curves.svg", title=f"{facts.model_name}: training curves")
        facts.add_samples(tmp)  # from the weights and tokenizer exactly as staged
        (tmp / "README.md").write_text(render_card(facts, template_dir), encoding="utf-8")
    return staging_dir


# --- checks ------------------------------------------------------------------------------------

# Runs in a fresh interpreter, offline, exactly as a user would load the repository.
_LOAD_CHECK = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt = sys.argv[1], sys.argv[2]
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(folder)
model.eval()
inputs = tokenizer(prompt, return_tensors="pt")
with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
print("STENTOR_LOAD_CHECK " + json.dumps({
    "len_tokenizer": len(tokenizer), "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
    "pad_token_id": tokenizer.pad_token_id, "prompt_tokens": int(inputs["input_ids"].shape[1]),
    "generated_tokens": int(out.shape[1] - inputs["input_ids"].shape[1]),
    "text": tokenizer.decode(out[0]), "parameters": sum(p.numel() for p in model.parameters()),
}))
"""


@dataclass(frozen=True)
class CodeBlockResult:
    line: int  # of the block's opening fence in README.md
    first_line: str
    ran: bool
    seconds: float
    reason: str = ""  # why it was not run


@dataclass
class CheckReport:
    tensors: int
    parameters: int
    generated_text: str
    card_results: int  # model-index entries huggingface_hub parsed
    code_blocks: list[CodeBlockResult] = field(default_factory=list)


def check_staged(folder: str | os.PathLike, timeout: float = 300.0, *, repo_id: str | None = None) -> CheckReport:
    """Check a staged repository before anything leaves the machine: the weights open, the card's
    metadata parses (``ModelCard``, ``model-index``, ``co2_eq_emissions``), a fresh offline Python
    process loads the model and tokenizer with the Auto classes, whose vocabulary and special ids
    agree with the configs, and generates; then every ```python block of the card runs (see
    :func:`check_card_code`; ``repo_id`` is the id the card loads, by default the one it names).
    Raises :class:`PublishError` naming the failed check."""
    folder = Path(folder)
    tensors = _check_safetensors(folder / "model.safetensors")
    card_results = _check_card(folder / "README.md")
    loaded = _load_in_fresh_process(folder, timeout)
    config = json.loads((folder / "config.json").read_text())
    generation = json.loads((folder / "generation_config.json").read_text())
    problems = []
    if config.get("vocab_size") != loaded["len_tokenizer"]:
        problems.append(f"config.json vocab_size is {config.get('vocab_size')} but the tokenizer has "
                        f"{loaded['len_tokenizer']} ids")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        for name, values in (("config.json", config), ("generation_config.json", generation)):
            value = values.get(key)
            if value is not None and value != loaded[key] and not (isinstance(value, list) and loaded[key] in value):
                problems.append(f"{name} {key} is {value} but the tokenizer's is {loaded[key]}")
    if loaded["generated_tokens"] < 1:
        problems.append("the model generated no tokens")
    if problems:
        raise PublishError("the model and its tokenizer disagree: " + "; ".join(problems)
                           + ". Export the tokenizer the model was trained with (RUN_DIR/tokenizer) and retrain or fix the config.")
    code_blocks = check_card_code(folder, repo_id=repo_id, timeout=timeout)
    return CheckReport(tensors, loaded["parameters"], loaded["text"], card_results, code_blocks)


def check_card_code(folder: str | os.PathLike, *, repo_id: str | None = None,
                    timeout: float = 300.0) -> list[CodeBlockResult]:
    """Run every ```python block of ``folder/README.md``, one fresh offline process each, with the
    card's repository id (``repo_id``, or the ``OWNER/NAME`` its quick start loads) replaced by the
    staged folder and no GPU visible, so code that picks its device runs on the CPU. A block under
    ``<!-- check: skip REASON -->`` is not run; under ``<!-- check: needs-model ID -->`` it runs
    when ``ID`` is a local folder or in the Hugging Face cache, and is reported as not run
    otherwise. A failing block raises :class:`PublishError` with its first lines and the error."""
    import time

    from stentor_hub.card import python_blocks

    folder = Path(folder).resolve()
    card = (folder / "README.md").read_text(encoding="utf-8")
    repo_id = repo_id or _card_repo_id(card)
    results = []
    for block in python_blocks(card):
        first = next((line for line in block.code.splitlines() if line.strip()), "")
        reason = _not_run_reason(block.check)
        if reason:
            results.append(CodeBlockResult(block.line, first, False, 0.0, reason))
            continue
        code = block.code
        if repo_id:
            code = code.replace(f'"{repo_id}"', repr(str(folder))).replace(f"'{repo_id}'", repr(str(folder)))
        started = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", code], env=_offline_env(cpu_only=True), capture_output=True,
                                  text=True, timeout=timeout, cwd=tempfile.gettempdir())
        except subprocess.TimeoutExpired:
            raise PublishError(f"README.md, the python block at line {block.line} ran over {timeout:.0f} s:\n"
                               f"{_first_lines(block.code)}") from None
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
            raise PublishError(f"README.md, the python block at line {block.line} fails (exit {proc.returncode}); "
                               f"fix the template or the card config:\n{_first_lines(block.code)}\n--- error:\n{tail}")
        results.append(CodeBlockResult(block.line, first, True, time.perf_counter() - started))
    return results


def _first_lines(code: str, n: int = 4) -> str:
    lines = code.strip().splitlines()
    return "\n".join("    " + line for line in lines[:n]) + ("\n    ..." if len(lines) > n else "")


def _card_repo_id(card: str) -> str | None:
    import re

    match = re.search(r'^repo = "([\w.-]+/[\w.-]+)"$', card, re.M)
    return match.group(1) if match else None


def _not_run_reason(check: str | None) -> str:
    """Why a block is not run ("" when it is), from its ``<!-- check: ... -->`` marker."""
    if not check:
        return ""
    kind, _, argument = check.partition(" ")
    if kind == "skip":
        return argument or "marked as not run in the template"
    if kind == "needs-model":
        if Path(argument).expanduser().is_dir() or _in_hf_cache(argument):
            return ""
        return f"needs the model {argument}, which is neither a local folder nor in the Hugging Face cache (offline)"
    raise PublishError(f"README.md has an unknown check marker <!-- check: {check} -->; use 'skip REASON' or "
                       "'needs-model ID'")


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # not a valid id: not in the cache either
        return False


def _offline_env(cpu_only: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _check_safetensors(path: Path) -> int:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            for key in keys:
                f.get_slice(key)
    except Exception as e:
        raise PublishError(f"{path.name} does not open as safetensors ({type(e).__name__}: {e}); re-save the checkpoint") from None
    if not keys:
        raise PublishError(f"{path.name} holds no tensors")
    return len(keys)


def _check_card(path: Path) -> int:
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(path.read_text(encoding="utf-8"), ignore_metadata_errors=False)
        results = card.data.eval_results or []
    except Exception as e:
        raise PublishError(f"README.md metadata does not parse with huggingface_hub ({type(e).__name__}: {e}); "
                           "fix the card config or the template") from None
    if not results:
        raise PublishError("README.md metadata has no model-index results")
    co2 = card.data.to_dict().get("co2_eq_emissions")
    if co2 is not None:
        problems = _co2_problems(co2)
        if problems:
            raise PublishError(f"README.md metadata co2_eq_emissions is not in the Hub's format: {'; '.join(problems)}; "
                               "fix power_watts / grid_intensity / co2_source in the card config")
    return len(results)


# the Hub's co2_eq_emissions: emissions in grams, the rest text
CO2_FIELDS = {"emissions": (int, float), "source": str, "training_type": str, "geographical_location": str,
              "hardware_used": str}


def _co2_problems(co2) -> list[str]:
    if not isinstance(co2, dict):
        return [f"it must be a mapping, got {type(co2).__name__}"]
    problems = [f"unknown key {key!r}" for key in sorted(set(co2) - set(CO2_FIELDS))]
    if "emissions" not in co2:
        problems.append("'emissions' (grams of CO2eq) is missing")
    for key, kind in CO2_FIELDS.items():
        value = co2.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
            problems.append(f"'{key}' must be {'a number' if kind != str else 'text'}, got {value!r}")
    if isinstance(co2.get("emissions"), (int, float)) and co2["emissions"] < 0:
        problems.append("'emissions' is negative")
    return problems


def _load_in_fresh_process(folder: Path, timeout: float) -> dict:
    env = _offline_env()
    try:
        proc = subprocess.run([sys.executable, "-c", _LOAD_CHECK, str(folder.resolve()), GENERATE_PROMPT], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        raise PublishError(f"loading the staged repository took over {timeout:.0f} s in a fresh process") from None
    for line in proc.stdout.splitlines():
        if line.startswith("STENTOR_LOAD_CHECK "):
            return json.loads(line.split(" ", 1)[1])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
    raise PublishError(f"the staged repository {folder} does not load with AutoModelForCausalLM/AutoTokenizer "
                       f"(trust_remote_code, offline) in a fresh process:\n{tail}")


# --- push --------------------------------------------------------------------------------------


@dataclass
class PushResult:
    commit_url: str
    commit_oid: str
    created_commit: bool  # False when the content was already there (no empty commit)
    made_private: bool = False  # --private turned an existing public repository private


HUB_TIMEOUT = 60.0  # seconds without an answer (connect, each read or write) before a Hub call fails


@contextlib.contextmanager
def hub_timeout(seconds: float):
    """huggingface_hub's HTTP client waits forever by default (``timeout=None``); inside this
    block every call it makes gives up after ``seconds`` without an answer."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)

    def client_with_timeout():
        client = previous()
        client.timeout = type(client.timeout)(seconds)
        return client

    set_client_factory(client_with_timeout)
    try:
        yield
    finally:
        set_client_factory(previous)


def push_folder(folder: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
                revision: str | None = None, commit_message: str | None = None,
                delete_folders: tuple[str, ...] = (), repo_type: str = "model", space_sdk: str | None = None,
                timeout: float = HUB_TIMEOUT) -> PushResult:
    """Create ``repo_id`` if needed and commit every file of ``folder`` in one commit, which
    first removes ``delete_folders`` from the repository (a folder replaced whole). Files whose
    content is already on the Hub are skipped by the client; unchanged content makes no commit.
    ``repo_type`` is ``"model"`` or ``"space"`` (then ``space_sdk`` names its SDK, e.g. ``"gradio"``).
    With ``private``, an existing public repository is made private first (``update_repo_settings``)
    or the push is refused. Every call gives up after ``timeout`` seconds without an answer.
    Raises :class:`PushError` (a :class:`PublishError`; token redacted, naming the step) on network
    or auth failures."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    folder = Path(folder)
    # read HF_ENDPOINT now, not when huggingface_hub was imported, so the environment of the call counts
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    secret = token or _current_token()
    branch = revision or "main"
    message = commit_message or f"Upload {folder.name} with stentor-hub"
    made_private = False
    step = "creating the repository"
    try:
        with hub_timeout(timeout):
            api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk)
            if private:
                step = "reading the repository's visibility"
                if not api.repo_info(repo_id, repo_type=repo_type).private:
                    step = "making the existing public repository private (--private)"
                    api.update_repo_settings(repo_id, private=True, repo_type=repo_type)
                    made_private = True
                    if not api.repo_info(repo_id, repo_type=repo_type).private:
                        raise PushError(f"push to {repo_id} refused: --private was asked but the Hub at {api.endpoint} "
                                        "left the existing repository public. Nothing was committed.")
            if branch != "main":
                step = f"creating the branch {branch}"
                api.create_branch(repo_id, branch=branch, exist_ok=True, repo_type=repo_type)
            step = "reading the repository's current commit"
            before = api.repo_info(repo_id, revision=branch, repo_type=repo_type).sha
            existing = ({f.split("/", 1)[0] for f in api.list_repo_files(repo_id, revision=branch, repo_type=repo_type) if "/" in f}
                        if delete_folders else set())
            operations = [CommitOperationDelete(f"{name}/", is_folder=True) for name in delete_folders if name in existing]
            operations += [CommitOperationAdd(path.relative_to(folder).as_posix(), str(path))
                           for path in sorted(folder.rglob("*")) if path.is_file() and path.name != FOLDER_MARKER]
            card = folder / "README.md"
            if card.is_file():
                step = "validating README.md's metadata with the Hub"
                _validate_card_with_hub(api.endpoint, card, repo_type, token=secret)
            step = "uploading the files and committing"
            info = api.create_commit(repo_id, operations, commit_message=message, revision=branch, repo_type=repo_type)
    except PushError:
        raise
    except Exception as e:  # every failure becomes one message without the token
        raise PushError(_explain_push_error(e, api.endpoint, repo_id, secret, step, timeout)) from None
    return PushResult(commit_url=info.commit_url, commit_oid=info.oid, created_commit=info.oid != before,
                      made_private=made_private)


def _validate_card_with_hub(endpoint: str, card: Path, repo_type: str, token: str | None) -> None:
    """The Hub's own check of a card's metadata (what ``ModelCard.validate`` asks, sent to this
    push's endpoint rather than the one read when huggingface_hub was imported); a refusal is a
    :class:`PushError` quoting the Hub, before anything is committed."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = {**build_hf_headers(token=token), "Accept": "text/plain"}
    response = get_session().post(f"{endpoint}/api/validate-yaml", headers=headers,
                                  json={"repoType": repo_type, "content": card.read_text(encoding="utf-8")})
    if response.status_code == 400:
        raise PushError(f"the Hub refused README.md's metadata: {response.text.strip()[:500]}; fix the card config "
                        "(or the template) and publish again. Nothing was committed.")
    hf_raise_for_status(response)


def _current_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def _network_error(error: BaseException) -> BaseException | None:
    """The connection-level failure behind ``error`` (refused, reset, timed out), if any."""
    while error is not None:
        transport = type(error).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore") and "Status" not in type(error).__name__
        if isinstance(error, (OSError, TimeoutError)) or transport:
            return error
        error = error.__cause__ or error.__context__
    return None


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _explain_push_error(error: Exception, endpoint: str, repo_id: str, secret: str | None, step: str = "pushing",
                        timeout: float = HUB_TIMEOUT) -> str:
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    status = getattr(getattr(error, "response", None), "status_code", None)
    nothing = "Nothing was committed; the repository is at its previous commit."
    if status == 401 and not secret:
        what = (f"no Hugging Face token was found and the Hub at {endpoint} requires one (HTTP 401). Set HF_TOKEN "
                "to a token with write access, or log in with `hf auth login`.")
    elif status == 401:
        what = (f"the Hub at {endpoint} refused the token (HTTP 401). Set HF_TOKEN to a valid token with write "
                "access, or log in with `hf auth login`.")
    elif status == 403:
        what = f"the token has no write access to {repo_id} (HTTP 403). Use a token of its owner with write scope."
    elif isinstance(error, RepositoryNotFoundError):
        what = f"repository {repo_id} was not found at {endpoint} (HTTP {status}); check --repo-id and the token."
    elif isinstance(error, HfHubHTTPError):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        what = f"the Hub at {endpoint} answered an error: {first}"
    elif (network := _network_error(error)) is not None and "Timeout" in type(network).__name__:
        what = (f"the Hub at {endpoint} did not answer within {timeout:.0f} s while {step} "
                f"({type(network).__name__}: timed out). Check the network and HF_ENDPOINT, then publish again.")
    elif network is not None:
        during = f"{error} " if isinstance(error, RuntimeError) else ""  # e.g. "Error while uploading 'x' to the Hub."
        what = (f"{during}could not reach the Hub at {endpoint} ({type(network).__name__}: {str(network)[:200]}). "
                "Check the network and HF_ENDPOINT, then publish again.")
    else:
        what = f"{type(error).__name__}: {str(error)[:500]}"
    return _redact(f"push to {repo_id} failed: {what} (step: {step}) {nothing}", secret)


# --- the verb: stage, check, push --------------------------------------------------------------


@dataclass
class PublishReport:
    staging: Path
    files: list[Path]  # the staged files
    check: CheckReport
    push: PushResult | None  # None for a dry run
    kept: bool  # the staging folder was asked for and is kept
    space_check: "object | None" = None  # stentor_hub.space.SpaceCheck, with space_id
    space_push: PushResult | None = None


def publish_run(run_dir: "str | os.PathLike | RunDir", repo_id: str | None, *, blimp: str | os.PathLike | None = None,
                card_config: str | os.PathLike | None = None, template_dir: str | os.PathLike | None = None,
                checkpoint: str = "best", compare: "list[str | os.PathLike]" = (),
                staging: str | os.PathLike | None = None, dry_run: bool = False,
                private: bool = False, revision: str | None = None, commit_message: str | None = None,
                token: str | None = None, space_id: str | None = None,
                on_staged: Callable[[Path, list[Path]], None] | None = None,
                on_checked: Callable[[CheckReport], None] | None = None) -> PublishReport:
    """Publish a training run to ``repo_id``: stage the repository (:func:`stage_repository`),
    check it (:func:`check_staged`), then push it in one commit (:func:`push_folder`) unless
    ``dry_run`` (a dry run needs no ``repo_id``; the card then names none); ``compare`` names
    earlier models (run folders or card-facts files) for the card's head-to-head table. The staging folder is
    ``staging`` (kept) or a temporary one (deleted). ``on_staged(folder, files)`` runs between
    staging and the checks, ``on_checked(check)`` between the checks and the push (for progress
    output). With ``space_id`` the model's demo Space (:mod:`stentor_hub.space`) is staged and
    checked with the model, linked from the card, and pushed after it. Raises
    :class:`PublishError` naming the failed step (:class:`PushError` for the push); the token is
    never in a message."""
    if revision is not None:
        check_branch(revision, PublishError)
    if repo_id is not None:
        check_repo_id(repo_id, PublishError)
    elif not dry_run:
        raise PublishError("publishing needs --repo-id OWNER/NAME (the Hub repository to create or update)")
    if space_id is not None:
        check_repo_id(space_id, PublishError, "--space")
        if repo_id is None:
            raise PublishError("--space needs --repo-id: the Space loads the model from its Hub repository")
    run = RunDir.open(run_dir)
    kept = staging is not None
    staging_root = None if kept else Path(tempfile.mkdtemp(prefix="stentor-publish-"))
    space_root = None if space_id is None else Path(tempfile.mkdtemp(prefix="stentor-space-"))
    folder = Path(staging) if kept else staging_root / (repo_id.split("/")[1] if repo_id else run.name)
    try:
        stage_repository(run, folder, repo_id=repo_id, blimp=blimp, card_config=card_config,
                         template_dir=template_dir, checkpoint=checkpoint, space_id=space_id, compare=compare)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != FOLDER_MARKER)
        if on_staged is not None:
            on_staged(folder, files)
        check = check_staged(folder)
        if on_checked is not None:
            on_checked(check)
        space_folder = space_check = space_pushed = None
        if space_id is not None:  # staged and checked now, pushed after the model
            from stentor_hub.space import check_space, push_space, stage_space

            space_folder = stage_space([repo_id], space_root / space_id.split("/")[1])
            space_check = check_space(space_folder, for_push=True)
        pushed = None
        if not dry_run:
            step = getattr(run.read_manifest(), checkpoint)["step"]
            message = commit_message or f"Publish {repo_id.split('/')[1]}: {checkpoint} checkpoint (step {step})"
            pushed = push_folder(folder, repo_id, token=token, private=private, revision=revision, commit_message=message)
            if space_id is not None:
                try:
                    space_pushed = push_space(space_folder, space_id, token=token, private=private)
                except PublishError as e:
                    raise PushError(f"{e} The model {repo_id} was pushed; push its Space again with "
                                    f"`stentor-hub space {repo_id} --out DIR --push {space_id}`.") from None
    finally:
        for root in (staging_root, space_root):
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
    return PublishReport(folder, files, check, pushed, kept, space_check, space_pushed)

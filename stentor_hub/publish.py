"""Publish a training run to the Hugging Face Hub: stage a complete repository, check it, push it
in one commit.

    stentor-hub card RUN_DIR --out README.md                      # render the card only
    stentor-hub publish RUN_DIR --repo-id OWNER/NAME [--dry-run]  # stage, check, push

The token comes from ``HF_TOKEN`` or the huggingface_hub login, the endpoint from ``HF_ENDPOINT``,
as for ``hf upload``. The token is never printed, logged or written: every message that leaves this
module goes through :func:`_redact`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stentor_hub._resources import install_folder
from stentor_hub.card import ModelCardFacts, plot_curves, render_card

MODEL_FILES = ("model.safetensors", "config.json", "generation_config.json")
RUN_FILES = ("training_curves.csv", "run_manifest.json")
GENERATE_PROMPT = "Once upon a time"


class PublishError(ValueError):
    """A publish step failed; the message says which and what to do (printed by the CLI, exit 2)."""


# --- staging -----------------------------------------------------------------------------------


def stage_repository(run_dir: str | os.PathLike, staging_dir: str | os.PathLike, *, repo_id: str | None = None,
                     blimp: str | os.PathLike | None = None, card_config: str | os.PathLike | None = None,
                     template_dir: str | os.PathLike | None = None, checkpoint: str = "best",
                     space_id: str | None = None) -> Path:
    """Write the repository as it will be pushed into ``staging_dir``: the ``checkpoint`` weights
    with their configs, the tokenizer folder (with its remote code), ``README.md``,
    ``training_curves.csv`` and ``.svg``, ``run_manifest.json`` and ``blimp_results.json`` if given.
    With ``space_id`` the card links to that demo Space (see :mod:`stentor_hub.space`).

    The folder is built beside ``staging_dir`` and moved into place, so a failure leaves nothing
    half-written. An existing ``staging_dir`` is replaced only if it is empty or a previous staging
    (it holds ``README.md`` and ``config.json``). Returns ``staging_dir``."""
    run_dir, staging_dir = Path(run_dir), Path(staging_dir)
    facts = ModelCardFacts.from_run(run_dir, blimp=blimp, card_config=card_config, repo_id=repo_id,
                                    checkpoint=checkpoint, template_dir=template_dir)
    if space_id is not None:
        from stentor_hub.space import space_url

        facts.space_id, facts.space_url = space_id, space_url(space_id)
    if staging_dir.exists() and any(staging_dir.iterdir()) and not (
        (staging_dir / "README.md").is_file() and (staging_dir / "config.json").is_file()
    ):
        raise FileExistsError(f"staging folder {staging_dir} exists and is not a previous staging; choose a new --staging")
    card = render_card(facts, template_dir)
    staging_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{staging_dir.name}.", dir=staging_dir.parent))
    try:
        for name in MODEL_FILES:
            source = run_dir / checkpoint / name
            if not source.is_file():
                raise FileNotFoundError(f"{source} is missing; the {checkpoint} checkpoint must hold {', '.join(MODEL_FILES)}")
            shutil.copy2(source, tmp / name)
        tokenizer_dir = run_dir / "tokenizer"
        for source in sorted(tokenizer_dir.iterdir()):
            if source.is_file() and not source.name.startswith("."):
                if (tmp / source.name).exists():
                    raise ValueError(f"tokenizer file {source} would overwrite the model's {source.name}")
                shutil.copy2(source, tmp / source.name)
        for name in RUN_FILES:
            shutil.copy2(run_dir / name, tmp / name)
        if blimp is not None:
            shutil.copy2(blimp, tmp / "blimp_results.json")
        plot_curves(facts.curves, tmp / "training_curves.svg", title=f"{facts.model_name}: training curves")
        (tmp / "README.md").write_text(card, encoding="utf-8")
        install_folder(tmp, staging_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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


@dataclass
class CheckReport:
    tensors: int
    parameters: int
    generated_text: str
    card_results: int  # model-index entries huggingface_hub parsed


def check_staged(folder: str | os.PathLike, timeout: float = 300.0) -> CheckReport:
    """Check a staged repository before anything leaves the machine: the weights open, the card's
    metadata parses (``ModelCard``, ``model-index``), and a fresh offline Python process loads the
    model and tokenizer with the Auto classes, whose vocabulary and special ids agree with the
    configs, and generates. Raises :class:`PublishError` naming the failed check."""
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
    return CheckReport(tensors, loaded["parameters"], loaded["text"], card_results)


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
    return len(results)


def _load_in_fresh_process(folder: Path, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    try:
        proc = subprocess.run([sys.executable, "-c", _LOAD_CHECK, str(folder), GENERATE_PROMPT], env=env,
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


def push_folder(folder: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False,
                revision: str | None = None, commit_message: str | None = None, repo_type: str = "model",
                space_sdk: str | None = None) -> PushResult:
    """Create ``repo_id`` if needed and commit every file of ``folder`` in one commit. Files whose
    content is already on the Hub are skipped by the client; unchanged content makes no commit.
    ``repo_type`` is ``"model"`` or ``"space"`` (then ``space_sdk`` names its SDK, e.g. ``"gradio"``).
    Raises :class:`PublishError` (token redacted) on network or auth failures."""
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(folder)
    # read HF_ENDPOINT now, not when huggingface_hub was imported, so the environment of the call counts
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    secret = token or _current_token()
    branch = revision or "main"
    message = commit_message or f"Upload {folder.name} with stentor-hub"
    try:
        api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type=repo_type, space_sdk=space_sdk)
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True, repo_type=repo_type)
        before = api.repo_info(repo_id, revision=branch, repo_type=repo_type).sha
        operations = [CommitOperationAdd(path.relative_to(folder).as_posix(), str(path))
                      for path in sorted(folder.rglob("*")) if path.is_file()]
        info = api.create_commit(repo_id, operations, commit_message=message, revision=branch, repo_type=repo_type)
    except Exception as e:  # every failure becomes one message without the token
        raise PublishError(_explain_push_error(e, api.endpoint, repo_id, secret)) from None
    return PushResult(commit_url=info.commit_url, commit_oid=info.oid, created_commit=info.oid != before)


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


def _explain_push_error(error: Exception, endpoint: str, repo_id: str, secret: str | None) -> str:
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
    elif (network := _network_error(error)) is not None:
        during = f"{error} " if isinstance(error, RuntimeError) else ""  # e.g. "Error while uploading 'x' to the Hub."
        what = (f"{during}could not reach the Hub at {endpoint} ({type(network).__name__}: {str(network)[:200]}). "
                "Check the network and HF_ENDPOINT, then publish again.")
    else:
        what = f"{type(error).__name__}: {str(error)[:500]}"
    return _redact(f"push to {repo_id} failed: {what} {nothing}", secret)


# --- CLI ---------------------------------------------------------------------------------------


def _cmd_card(args) -> int:
    facts = ModelCardFacts.from_run(args.run_dir, blimp=args.blimp, card_config=args.card_config,
                                    repo_id=args.repo_id, checkpoint=args.checkpoint, template_dir=args.template)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render_card(facts, args.template), encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


def _cmd_publish(args) -> int:
    if args.repo_id.count("/") != 1 or not all(args.repo_id.split("/")):
        raise PublishError(f"--repo-id must be OWNER/NAME, got {args.repo_id!r}")
    if args.space is not None:  # --space: checked before anything is staged
        from stentor_hub.space import check_repo_id

        check_repo_id(args.space, "--space")
    keep = args.staging is not None
    staging_root = None if keep else Path(tempfile.mkdtemp(prefix="stentor-publish-"))
    space_root = None if args.space is None else Path(tempfile.mkdtemp(prefix="stentor-space-"))
    staging = Path(args.staging) if keep else staging_root / args.repo_id.split("/")[1]
    try:
        stage_repository(args.run_dir, staging, repo_id=args.repo_id, blimp=args.blimp, card_config=args.card_config,
                         template_dir=args.template, checkpoint=args.checkpoint, space_id=args.space)
        files = sorted(p for p in staging.rglob("*") if p.is_file())
        print(f"staged {len(files)} files in {staging}{'' if keep else ' (temporary)'}:")
        for path in files:
            print(f"  {path.relative_to(staging).as_posix():<28} {path.stat().st_size:>12,} bytes")
        report = check_staged(staging)
        print(f"checks passed: {report.tensors} tensors, {report.parameters:,} parameters, card metadata with "
              f"{report.card_results} results, fresh-process load generated {report.generated_text!r}")
        if args.space is not None:  # the demo Space of the model: staged and checked now, pushed after the model
            from stentor_hub.space import check_space, print_staged_space, push_space, stage_space

            space_folder = stage_space([args.repo_id], space_root / args.space.split("/")[1])
            print_staged_space(space_folder, check_space(space_folder, for_push=True))
        if args.dry_run:
            also = "" if args.space is None else f" and the Space {args.space}"
            print(f"dry run: nothing was sent to the Hub (would push to {args.repo_id}{also})")
            return 0
        facts_step = json.loads((staging / "run_manifest.json").read_text())[args.checkpoint]["step"]
        message = args.commit_message or f"Publish {args.repo_id.split('/')[1]}: {args.checkpoint} checkpoint (step {facts_step})"
        result = push_folder(staging, args.repo_id, private=args.private, revision=args.revision, commit_message=message)
        if result.created_commit:
            print(f"pushed {args.repo_id}: {result.commit_url}")
        else:
            print(f"{args.repo_id} already has this content; no commit made ({result.commit_url})")
        if args.space is not None:
            try:
                space = push_space(space_folder, args.space, private=args.private)
            except PublishError as e:
                raise PublishError(f"{e} The model {args.repo_id} was pushed; push its Space again with "
                                   f"`stentor-hub space {args.repo_id} --out DIR --push {args.space}`.") from None
            print(f"pushed the Space {args.space}: {space.commit_url}" if space.created_commit
                  else f"the Space {args.space} already has this content; no commit made ({space.commit_url})")
    finally:
        for root in (staging_root, space_root):
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)
    return 0


def _add_card_arguments(parser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="training output folder (final/, best/, tokenizer/, ...)")
    parser.add_argument("--blimp", metavar="FILE", help="blimp_results.json from `stentor-hub eval blimp`")
    parser.add_argument("--card-config", metavar="FILE", help="card config (YAML or Markdown): metadata and prose")
    parser.add_argument("--template", metavar="DIR", help="folder of Jinja templates overriding cards/ by name")
    parser.add_argument("--checkpoint", choices=("best", "final"), default="best",
                        help="weights to publish (default: best, the lowest eval loss)")


def register_cli(subparsers) -> None:
    card = subparsers.add_parser("card", help="render the model card of a training run")
    _add_card_arguments(card)
    card.add_argument("--repo-id", metavar="OWNER/NAME", help="repository the usage example loads from")
    card.add_argument("--out", required=True, metavar="README.md", help="output file")
    card.set_defaults(func=_cmd_card)

    publish = subparsers.add_parser("publish", help="stage, check and push a training run to the Hub in one commit")
    _add_card_arguments(publish)
    publish.add_argument("--repo-id", required=True, metavar="OWNER/NAME", help="Hub repository (created if needed)")
    publish.add_argument("--staging", metavar="DIR", help="keep the staged repository here (default: a temporary folder)")
    publish.add_argument("--dry-run", action="store_true", help="stage and check only; no network request at all")
    publish.add_argument("--private", action="store_true", help="create the repository as private")
    publish.add_argument("--revision", metavar="BRANCH", help="branch to commit to (created if needed; default main)")
    publish.add_argument("--commit-message", metavar="MSG", help="commit title")
    publish.add_argument("--space", metavar="OWNER/NAME",
                         help="also push a demo Space of the model (stentor-hub space) and link it from the card")
    publish.set_defaults(func=_cmd_publish)

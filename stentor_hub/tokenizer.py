"""The Stentor tokenizer inside the library: find a vocabulary, export a tokenizer folder, load it.

A vocabulary is named by path or by name (``english-8000-strict-nocapcode-v1``). A name is
looked up, in order, in ``$STENTOR_VOCAB_DIR``, ``~/.cache/stentor_hub/vocabs``, the
development data (``$STENTOR_SHARED/tokenmonster/vocabs``), and finally on the Hugging Face Hub
(``alasdairforsythe/tokenmonster``, file ``vocabs/NAME.vocab``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from stentor_hub._resources import install_folder, shared_dir

DEFAULT_VOCAB = "english-8000-strict-nocapcode-v1"
VOCAB_DIR_ENV = "STENTOR_VOCAB_DIR"
HUB_VOCAB_REPO = "alasdairforsythe/tokenmonster"


def vocab_search_dirs() -> list[Path]:
    """The local folders searched for ``NAME.vocab``, in order."""
    dirs = []
    if os.environ.get(VOCAB_DIR_ENV):
        dirs.append(Path(os.environ[VOCAB_DIR_ENV]))
    dirs.append(Path.home() / ".cache" / "stentor_hub" / "vocabs")
    shared = shared_dir()
    if shared is not None:
        dirs.append(shared / "tokenmonster" / "vocabs")
    return dirs


def resolve_vocab(vocab: str | os.PathLike) -> Path:
    """Path of a TokenMonster vocabulary given as a path or a name.

    Raises ``FileNotFoundError`` with what was tried and how to pass a path when the file is
    neither local nor downloadable (for example offline)."""
    as_path = Path(vocab).expanduser()
    if as_path.suffix == ".vocab" or os.sep in str(vocab) or as_path.exists():
        if as_path.is_file():
            return as_path
        raise FileNotFoundError(f"vocabulary file not found: {as_path}")
    name = str(vocab)
    for folder in vocab_search_dirs():
        candidate = folder / f"{name}.vocab"
        if candidate.is_file():
            return candidate
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_VOCAB_REPO, f"vocabs/{name}.vocab"))
    except Exception as e:  # offline, unknown name, no access: all end the same way for the user
        searched = ", ".join(str(d) for d in vocab_search_dirs())
        raise FileNotFoundError(
            f"TokenMonster vocabulary '{name}' is not available: not in {searched}, and the Hub download of "
            f"{HUB_VOCAB_REPO}/vocabs/{name}.vocab failed ({type(e).__name__}). Pass the path of the .vocab "
            f"file instead (--vocab /path/to/{name}.vocab), or put it in ${VOCAB_DIR_ENV}."
        ) from None


def tokenizer_class():
    """``StentorTokenizer``, imported from the remote code that ships with every model."""
    from stentor_hub.remote.tokenization_stentor import StentorTokenizer

    return StentorTokenizer


def export_tokenizer(vocab: str | os.PathLike, out_dir: str | os.PathLike):
    """Write a complete tokenizer folder (vocabulary, config with ``auto_map``, chat template,
    remote code) that ``AutoTokenizer.from_pretrained(out_dir, trust_remote_code=True)`` loads.

    The folder is written beside ``out_dir`` and moved into place, so a failure leaves no
    half-written folder; an existing non-empty ``out_dir`` that is not a tokenizer folder is
    refused. Returns the tokenizer."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "tokenizer_config.json").is_file():
        raise FileExistsError(f"{out_dir} exists and is not a tokenizer folder; choose an empty or new --out")
    tokenizer = tokenizer_class()(vocab_file=str(resolve_vocab(vocab)))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        install_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer


def load_tokenizer(path_or_repo: str | os.PathLike, **kwargs):
    """``AutoTokenizer.from_pretrained(path_or_repo, trust_remote_code=True)``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path_or_repo), trust_remote_code=True, **kwargs)


def _cmd_export(args) -> int:
    tokenizer = export_tokenizer(args.vocab, args.out)
    sample = "Hello world"
    ids = tokenizer.encode(sample)
    print(f"wrote {args.out}: {len(tokenizer)} ids ({tokenizer.vocab_size} TokenMonster + specials)")
    print(f"{sample!r} -> {ids} -> {tokenizer.decode(ids)!r}")
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("tokenizer", help="tokenizer tools")
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    export = sub.add_parser("export", help="write a tokenizer folder that AutoTokenizer loads")
    export.add_argument("--vocab", default=DEFAULT_VOCAB, help=f"path or name of a .vocab file (default {DEFAULT_VOCAB})")
    export.add_argument("--out", required=True, help="output folder")
    export.set_defaults(func=_cmd_export)

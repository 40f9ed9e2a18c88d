"""The Stentor tokenizer inside the library: find a vocabulary, export a tokenizer folder, load it.

A vocabulary is named by path or by name (``english-8000-strict-nocapcode-v1``). A name is
looked up, in order, in ``$STENTOR_VOCAB_DIR``, ``~/.cache/stentor_hub/vocabs``, the
development data (``$STENTOR_SHARED/tokenmonster/vocabs``), and finally on the Hugging Face Hub
(``alasdairforsythe/tokenmonster``, file ``vocabs/NAME.vocab``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from stentor_hub._resources import shared_dir
from stentor_hub.errors import MissingInputError, TokenizerError
from stentor_hub.helpers import build_folder, check_replaceable

DEFAULT_VOCAB = "english-8000-strict-nocapcode-v1"
VOCAB_DIR_ENV = "STENTOR_VOCAB_DIR"
HUB_VOCAB_REPO = "alasdairforsythe/tokenmonster"
TOKENIZER_KIND = "tokenizer"  # the kind in the folder marker of an exported tokenizer


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


def vocab_is_path(vocab: str | os.PathLike) -> bool:
    """Whether ``vocab`` names a file (``.vocab`` suffix, a folder separator, or an existing
    path) rather than a vocabulary name to look up."""
    as_path = Path(vocab).expanduser()
    return as_path.suffix == ".vocab" or os.sep in str(vocab) or as_path.exists()


def find_local_vocab(name: str) -> Path | None:
    """``NAME.vocab`` in the first of :func:`vocab_search_dirs` that has it."""
    for folder in vocab_search_dirs():
        candidate = folder / f"{name}.vocab"
        if candidate.is_file():
            return candidate
    return None


def resolve_vocab(vocab: str | os.PathLike) -> Path:
    """Path of a TokenMonster vocabulary given as a path or a name.

    Raises :class:`MissingInputError` with what was tried and how to pass a path when the file is
    neither local nor downloadable (for example offline)."""
    if vocab_is_path(vocab):
        as_path = Path(vocab).expanduser()
        if as_path.is_file():
            return as_path
        raise MissingInputError(f"vocabulary file not found: {as_path}")
    name = str(vocab)
    local = find_local_vocab(name)
    if local is not None:
        return local
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(HUB_VOCAB_REPO, f"vocabs/{name}.vocab"))
    except Exception as e:  # offline, unknown name, no access: all end the same way for the user
        searched = ", ".join(str(d) for d in vocab_search_dirs())
        raise MissingInputError(
            f"TokenMonster vocabulary '{name}' is not available: not in {searched}, and the Hub download of "
            f"{HUB_VOCAB_REPO}/vocabs/{name}.vocab failed ({type(e).__name__}). Pass the path of the .vocab "
            f"file instead (--vocab /path/to/{name}.vocab), or put it in ${VOCAB_DIR_ENV}."
        ) from None


def tokenizer_class():
    """``StentorTokenizer``, imported from the remote code that ships with every model."""
    from stentor_hub.remote_code import load

    return load("tokenization_stentor").StentorTokenizer


def load_vocab_tokenizer(vocab_path: str | os.PathLike):
    """A ``StentorTokenizer`` over a vocabulary file; a file that is not a TokenMonster
    vocabulary stentor-hub can read is a :class:`TokenizerError` naming it."""
    try:
        return tokenizer_class()(vocab_file=str(vocab_path))
    except (ValueError, EOFError) as e:  # the remote code raises plain errors: it ships without stentor-hub
        raise TokenizerError(f"{vocab_path} is not a usable TokenMonster vocabulary: {e}") from None


def tokenizer_files(tokenizer_dir: str | os.PathLike) -> list[Path]:
    """The files of a tokenizer folder that go beside a model (vocabulary, configs, remote code):
    all but hidden ones such as the folder marker."""
    return [p for p in sorted(Path(tokenizer_dir).iterdir()) if p.is_file() and not p.name.startswith(".")]


def copy_tokenizer_files(tokenizer_dir: str | os.PathLike, into: str | os.PathLike) -> list[Path]:
    """Copy the files of a tokenizer folder (:func:`tokenizer_files`) into a model folder,
    refusing to overwrite one of the model's own files. Returns the copies."""
    into = Path(into)
    copied = []
    for source in tokenizer_files(tokenizer_dir):
        target = into / source.name
        if target.exists():
            raise TokenizerError(f"tokenizer file {source} would overwrite the model's {source.name}")
        shutil.copy2(source, target)
        copied.append(target)
    return copied


def export_tokenizer(vocab: str | os.PathLike, out_dir: str | os.PathLike, mark: bool = True):
    """Write a complete tokenizer folder (vocabulary, config with ``auto_map``, chat template,
    remote code) that ``AutoTokenizer.from_pretrained(out_dir, trust_remote_code=True)`` loads.

    The folder is written beside ``out_dir`` and moved into place, so a failure leaves no
    half-written folder. An existing ``out_dir`` is replaced only when it is empty or a tokenizer
    folder stentor-hub exported holding nothing else (its marker lists the files); anything else is
    an :class:`OutputExistsError` naming the files, before any work. ``mark=False`` (the
    ``tokenizer/`` of a run folder, which the run itself guards) writes no marker and checks
    nothing. Returns the tokenizer."""
    out_dir = Path(out_dir)
    kind = TOKENIZER_KIND if mark else None
    if mark:
        check_replaceable(out_dir, TOKENIZER_KIND, "--out")
    tokenizer = load_vocab_tokenizer(resolve_vocab(vocab))
    with build_folder(out_dir, kind=kind, flag="--out") as staging:
        tokenizer.save_pretrained(str(staging))
    return tokenizer


def load_tokenizer(path_or_repo: str | os.PathLike, **kwargs):
    """``AutoTokenizer.from_pretrained(path_or_repo, trust_remote_code=True)``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path_or_repo), trust_remote_code=True, **kwargs)

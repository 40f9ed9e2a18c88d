"""Helpers every module shares: writes that are never half-done, and the Hub naming rules.

* :func:`write_text_atomic` / :func:`write_json_atomic`: a file is written beside its destination
  and renamed over it, so a reader sees the old file or the new one, never a part.
* :func:`build_folder`: the same for a folder (a model, a tokenizer, a staged repository).
* :func:`looks_like_hub_id` / :func:`check_repo_id`: what counts as ``owner/name``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from stentor_hub.errors import MissingInputError, StentorError

# --- files ------------------------------------------------------------------------------------


def ordinary_permissions(path: str | os.PathLike) -> None:
    """Give a file or folder (and what it holds) the permissions the umask gives new files.

    Temporary files and folders (``mkstemp``, ``mkdtemp``; transformers' own atomic save of
    ``model.safetensors``) are private to their owner; what we rename into place should not be."""
    umask = os.umask(0)
    os.umask(umask)
    path = Path(path)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def replace_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to; when the block ends without
    error it is renamed over ``path``, else deleted, so ``path`` is never half-written::

        with replace_atomically(cache_file) as tmp:
            numpy.savez(tmp, ...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        ordinary_permissions(tmp)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder, flushed to
    disk and renamed into place: a failure leaves any previous ``path`` intact. Returns ``path``."""
    with replace_atomically(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_json_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``obj`` as indented JSON (and a final newline), written by :func:`write_text_atomic`."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def install_folder(written: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Move a completely written folder into place. Whatever was at ``destination`` is set
    aside first and deleted only once the new folder is in place, so a crash leaves one of the
    two whole, never neither; permissions become the umask's (see ``ordinary_permissions``)."""
    written, destination = Path(written), Path(destination)
    ordinary_permissions(written)
    previous = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    shutil.rmtree(previous, ignore_errors=True)  # left by an earlier crash, if any
    if destination.exists():
        os.replace(destination, previous)
    os.replace(written, destination)
    shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def build_folder(destination: str | os.PathLike) -> Iterator[Path]:
    """Build a folder beside ``destination`` and swap it in when the block ends without error::

        with build_folder(out) as tmp:
            model.save_pretrained(tmp)

    On an error the partial folder is deleted and ``destination`` is left as it was."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield tmp
        install_folder(tmp, destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_json(path: str | os.PathLike, what: str, error: type[StentorError]) -> Any:
    """A JSON file; a missing file is a ``MissingInputError`` saying what it is (``what``), bad
    JSON is ``error`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} is missing ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e})") from None


def read_jsonl(path: str | os.PathLike, error: type[StentorError]) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for every non-blank line of a JSON Lines file; a line that is not
    JSON raises ``error`` naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); "
                            "each line must be one JSON object") from None


def read_yaml_mapping(path: str | os.PathLike, what: str, error: type[StentorError]) -> dict:
    """A YAML file that must hold a mapping (an empty file is ``{}``); raises ``error`` naming
    the file when it is not valid YAML or not a mapping."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise error(f"{what} {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{what} {path} must be a YAML mapping, got {type(data).__name__}")
    return data


# --- Hub names --------------------------------------------------------------------------------

_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
# names that end like a local data file are paths, even when they do not exist (yet)
_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".vocab", ".yaml", ".yml", ".csv")


def looks_like_hub_id(name: str | os.PathLike) -> bool:
    """Whether ``name`` names a Hub repository (``owner/name``) rather than a local path: two
    parts of letters, digits, ``_.-``, not starting with ``.`` or ``~``, not an existing path and
    not ending like a data file (``.txt``, ``.jsonl``, ...)."""
    text = str(name)
    return (bool(_HUB_ID.fullmatch(text)) and not text.startswith((".", "~"))
            and not text.lower().endswith(_FILE_SUFFIXES) and not os.path.exists(os.path.expanduser(text)))


def check_repo_id(repo_id: str, error: type[StentorError], flag: str = "--repo-id") -> str:
    """``repo_id`` if it is ``OWNER/NAME`` (two non-empty parts); else ``error`` naming ``flag``."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise error(f"{flag} must be OWNER/NAME, got {repo_id!r}")
    return repo_id

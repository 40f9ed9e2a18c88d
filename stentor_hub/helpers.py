"""Helpers every module shares: writes that are never half-done, and the Hub naming rules.

* :func:`write_text_atomic` / :func:`write_json_atomic`: a file is written beside its destination
  and renamed over it, so a reader sees the old file or the new one, never a part.
* :func:`build_folder`: the same for a folder (a model, a tokenizer, a staged repository); with
  ``kind`` it writes the folder marker (:data:`FOLDER_MARKER`) and replaces an existing folder only
  when :func:`check_replaceable` finds nothing there that stentor-hub did not write.
* :func:`looks_like_hub_id` / :func:`check_repo_id`: what counts as ``owner/name``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from stentor_hub.errors import DiskFullError, MissingInputError, OutputExistsError, StentorError

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


def folder_size(path: str | os.PathLike) -> int:
    """Bytes in the files under ``path`` (or of the file ``path``; 0 if it is missing)."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size if path.exists() else 0


def disk_full(error: BaseException, folder: str | os.PathLike, what: str, written: int = 0,
              needed: int | None = None) -> DiskFullError | None:
    """A :class:`DiskFullError` naming ``folder``, ``what`` was being written and the space needed,
    when ``error`` is a full disk (or quota); ``None`` for any other error. Some writers report a
    full disk in their own words (``torch.save``: a ``RuntimeError`` of its zip writer): with
    ``needed`` (the bytes the write takes), any error counts while the disk has less than that free."""
    existing = Path(folder)
    while not existing.exists():
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if getattr(error, "errno", None) not in (errno.ENOSPC, errno.EDQUOT) and (needed is None or free >= needed):
        return None
    space = (f"about {needed:,} are needed" if needed else
             f"more than the {written:,} bytes written so far are needed")
    return DiskFullError(f"no space left on the disk of {folder} while writing {what}: {free:,} bytes free, and {space}; "
                         "free some space (or choose a folder on another disk) and run again. Nothing half-written "
                         "was left in place")


@contextlib.contextmanager
def replace_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to; when the block ends without
    error it is renamed over ``path``, else deleted, so ``path`` is never half-written::

        with replace_atomically(cache_file) as tmp:
            numpy.savez(tmp, ...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)  # see atomic_leftovers
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        ordinary_permissions(tmp)  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except OSError as e:
        full = disk_full(e, path.parent, path.name, folder_size(tmp))
        tmp.unlink(missing_ok=True)
        if full is not None:
            raise full from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_leftovers(path: str | os.PathLike) -> list[Path]:
    """Temporary files that :func:`replace_atomically` left beside ``path`` when its process was
    killed (SIGKILL, power loss) between creating and renaming them. Only the owner of ``path``'s
    folder should delete them."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp{glob.escape(path.suffix)}"))


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


# The marker stentor-hub writes into every folder it creates whole (a tokenizer, a staging, a
# quickstart workdir): {"tool": "stentor-hub", "kind": ..., "files": [...]}. Only such a folder, and
# only while it holds nothing but the listed files, is ever replaced.
FOLDER_MARKER = ".stentor-hub.json"


def folder_files(folder: str | os.PathLike) -> list[str]:
    """Every file under ``folder`` (relative POSIX paths, sorted), the marker itself left out."""
    folder = Path(folder)
    marker = folder / FOLDER_MARKER
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if (p.is_symlink() or not p.is_dir()) and p != marker)


def write_folder_marker(folder: str | os.PathLike, kind: str, files: list[str] | None = None) -> Path:
    """Write the marker saying stentor-hub made ``folder`` as a ``kind`` (``tokenizer``,
    ``staged repository``, ...) and listing the files it wrote (default: all there now)."""
    files = folder_files(folder) if files is None else sorted(files)
    return write_json_atomic({"tool": "stentor-hub", "kind": kind, "files": files}, Path(folder) / FOLDER_MARKER)


def read_folder_marker(folder: str | os.PathLike) -> dict | None:
    """The marker of ``folder``, or ``None`` when it has none (or one that is not ours)."""
    try:
        marker = json.loads((Path(folder) / FOLDER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("tool") != "stentor-hub" or not isinstance(marker.get("files"), list):
        return None
    return marker


def _some(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_replaceable(folder: str | os.PathLike, kind: str, flag: str) -> None:
    """Refuse (:class:`OutputExistsError` naming the files and ``flag``) to replace ``folder``
    unless it is missing, empty, or a ``kind`` folder stentor-hub made whose every file is listed
    in its marker: nothing stentor-hub did not write is ever deleted."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir() or folder.is_symlink():
        raise OutputExistsError(f"{flag} {folder} is a file, not a folder; choose another {flag}")
    present = folder_files(folder)
    if not present:
        return
    marker = read_folder_marker(folder)
    if marker is None:
        raise OutputExistsError(
            f"{flag} {folder} is not a {kind} folder stentor-hub wrote: it is not a previous {kind} (no {FOLDER_MARKER}) "
            f"and holds files stentor-hub did not write ({_some(present)}); nothing was changed. "
            f"Choose a new or empty {flag}")
    if marker.get("kind") != kind:
        raise OutputExistsError(
            f"{flag} {folder} is a stentor-hub {marker.get('kind')} folder, not a previous {kind} folder; nothing "
            f"was changed. Choose another {flag}")
    foreign = [name for name in present if name not in set(marker["files"])]
    if foreign:
        raise OutputExistsError(
            f"{flag} {folder} is a previous {kind} folder but also holds files stentor-hub did not write "
            f"({_some(foreign)}); nothing was changed. Move them away or choose another {flag}")


def claim_folder(folder: str | os.PathLike, kind: str, flag: str) -> Path:
    """Make ``folder`` an empty ``kind`` folder of stentor-hub's, to be filled in place (a
    quickstart workdir): after :func:`check_replaceable`, the files a previous ``kind`` run listed
    in the marker are deleted (only those), then a marker listing nothing is written. Call
    :func:`write_folder_marker` when done (also on failure) so the next run may replace it."""
    folder = Path(folder)
    check_replaceable(folder, kind, flag)
    marker = read_folder_marker(folder)
    if marker is not None:
        for name in marker["files"]:
            (folder / name).unlink(missing_ok=True)
        for sub in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()  # only the folders left empty
    folder.mkdir(parents=True, exist_ok=True)
    write_folder_marker(folder, kind, files=[])
    return folder


@contextlib.contextmanager
def build_folder(destination: str | os.PathLike, kind: str | None = None, flag: str = "the output folder") -> Iterator[Path]:
    """Build a folder beside ``destination`` and swap it in when the block ends without error::

        with build_folder(out, kind="tokenizer", flag="--out") as tmp:
            model.save_pretrained(tmp)

    With ``kind``, an existing ``destination`` is first checked by :func:`check_replaceable` and
    the new folder gets a marker listing its files. On an error the partial folder is deleted and
    ``destination`` is left as it was."""
    destination = Path(destination)
    if kind is not None:
        check_replaceable(destination, kind, flag)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        yield tmp
        if kind is not None:
            write_folder_marker(tmp, kind)
            check_replaceable(destination, kind, flag)  # again: something may have appeared meanwhile
        install_folder(tmp, destination)
    except OSError as e:
        full = disk_full(e, destination.parent, f"{destination.name}/", folder_size(tmp))
        if full is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise full from None
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_file(path: str | os.PathLike, flag: str, error: type[StentorError],
                      replaces: tuple[str, ...] = ()) -> Path:
    """Check, before any work, that a results file can be written at ``path``: not a folder, and
    in a writable folder (created when written if missing). An existing file is replaced only if it
    is a JSON object with every key of ``replaces`` (a result this project wrote), never another file.
    Raises ``error`` naming ``flag``."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{flag} {path} is a folder; name a file (e.g. {path / 'results.json'})")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"{flag} {path} cannot be written ({existing} is not a writable folder); choose another {flag}")
    if path.exists() and not os.access(path, os.W_OK):
        raise error(f"{flag} {path} is read-only; choose another {flag}")
    if path.exists() and replaces:
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            found = None
        if not isinstance(found, dict) or not all(key in found for key in replaces):
            raise error(f"{flag} {path} exists and is not a results file of this kind (it would be overwritten); "
                        f"choose another {flag}, or move that file away")
    return path


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
    JSON, or bytes that are not UTF-8 (:func:`not_utf8`), raise ``error`` naming the file and line."""
    with open(path, encoding="utf-8") as f:
        try:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as e:
                    raise error(f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno}); "
                                "each line must be one JSON object") from None
        except UnicodeDecodeError:
            raise not_utf8(path, error) from None


def not_utf8(path: str | os.PathLike, error: type[StentorError]) -> StentorError:
    """``error`` naming the byte offset (and line) of the first bytes of ``path`` that are not UTF-8,
    for a reader that just failed to decode it."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return error(f"{path}: bytes at offset {e.start} (line {line}) are not UTF-8 ({e.reason}: "
                     f"{data[e.start:e.start + 4]!r}); save the file as UTF-8")
    return error(f"{path} is not UTF-8 text; save the file as UTF-8")


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
    """``repo_id`` if it is ``OWNER/NAME`` (two non-empty parts) that huggingface_hub's own
    validator accepts (letters, digits, ``-_.``, no ``--`` or ``..``, at most 96 characters); else
    ``error`` naming ``flag``. Checked before any work, ``--dry-run`` included."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise error(f"{flag} must be OWNER/NAME, got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise error(f"{flag} {repo_id!r} is not a name the Hub accepts: {e}") from None
    return repo_id


_BAD_BRANCH = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def check_branch(branch: str, error: type[StentorError], flag: str = "--revision") -> str:
    """``branch`` if git (and so the Hub) accepts it as a branch name (``git check-ref-format``:
    no spaces or ``~^:?*[\\``, no ``..``, ``@{`` or ``//``, not starting with ``-`` or ``/`` nor
    ending with ``/``, ``.`` or ``.lock``, no part starting with ``.``); else ``error`` naming ``flag``."""
    if (not branch or _BAD_BRANCH.search(branch) or branch.startswith(("-", "/")) or branch.endswith(("/", ".", ".lock"))
            or any(part.startswith(".") for part in branch.split("/")) or branch == "@"):
        raise error(f"{flag} {branch!r} is not a valid branch name (git check-ref-format: no spaces, ~^:?*[\\, "
                    "'..', '@{', leading '-' or '.', trailing '/', '.' or '.lock')")
    return branch

"""Where the package's data folders and the development data live."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent

SHARED_ENV = "STENTOR_SHARED"


def resource_dir(name: str) -> Path:
    """The folder ``remote_code``, ``cards`` or ``recipes``: inside the installed wheel
    (``stentor_hub/_data/NAME``) or, in a source checkout, at the repository root."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"stentor-hub's '{name}' folder is missing from {_PACKAGE}; reinstall the package (pip install stentor-hub)"
    )


def shared_dir(required: bool = False) -> Path | None:
    """The development data folder: ``$STENTOR_SHARED``, else ``../shared`` beside the
    repository (or the current directory). ``None`` when absent, unless ``required``."""
    env = os.environ.get(SHARED_ENV)
    candidates = [Path(env)] if env else [_PACKAGE.parent.parent / "shared", Path.cwd().parent / "shared", Path.cwd() / "shared"]
    for candidate in candidates:
        if (candidate / "tokenmonster").is_dir():
            return candidate.resolve()
    if required:
        looked = ", ".join(str(c) for c in candidates)
        raise FileNotFoundError(
            f"the shared data folder was not found (looked in {looked}). "
            f"Set {SHARED_ENV}=/path/to/shared (it holds tokenmonster/, blimp/ and corpora/)."
        )
    return None


def ordinary_permissions(path: str | os.PathLike) -> None:
    """Give a file or folder (and what it holds) the permissions the umask gives new files.

    Temporary files and folders (``mkstemp``, ``mkdtemp``; transformers' own atomic save of
    ``model.safetensors``) are private to their owner; what we rename into place should not be."""
    umask = os.umask(0)
    os.umask(umask)
    path = Path(path)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


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

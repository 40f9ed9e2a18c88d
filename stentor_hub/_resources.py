"""Where the package's data folders and the development data live."""

from __future__ import annotations

import os
from pathlib import Path

from stentor_hub.errors import MissingInputError

_PACKAGE = Path(__file__).resolve().parent

SHARED_ENV = "STENTOR_SHARED"


def resource_dir(name: str) -> Path:
    """The folder ``remote_code``, ``cards`` or ``recipes``: inside the installed wheel
    (``stentor_hub/_data/NAME``) or, in a source checkout, at the repository root."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise MissingInputError(
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
        raise MissingInputError(
            f"the shared data folder was not found (looked in {looked}). "
            f"Set {SHARED_ENV}=/path/to/shared (it holds tokenmonster/, blimp/ and corpora/)."
        )
    return None

"""How the library imports the files of ``remote_code/``.

``remote_code/`` (``tokenmonster.py``, ``tokenization_stentor.py``) is what travels to the Hub next
to the weights and runs there under ``trust_remote_code``, without stentor-hub installed. The
library runs those very files, not a copy that could drift from them. They import each other
relatively (``from .tokenmonster import Vocab``), as transformers' loader of remote code expects,
so they are loaded as one package, ``stentor_hub.remote``, whose folder is ``remote_code/``: at the
repository root in a source checkout, ``stentor_hub/_data/remote_code`` in the wheel (see
:func:`stentor_hub._resources.resource_dir`). :func:`register` makes that package (the package's
``__init__`` calls it); :func:`load` imports one of its files.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from stentor_hub._resources import resource_dir

PACKAGE = "stentor_hub.remote"


def folder() -> Path:
    """The ``remote_code`` folder the library imports from."""
    return resource_dir("remote_code")


def register() -> ModuleType:
    """The package ``stentor_hub.remote`` over :func:`folder` (made once, on first call)."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.machinery.ModuleSpec(PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(folder())]
    package = importlib.util.module_from_spec(spec)
    package.__doc__ = "The files of remote_code/, imported by stentor_hub.remote_code."
    sys.modules[PACKAGE] = package
    return package


def load(name: str) -> ModuleType:
    """Import ``remote_code/NAME.py`` as ``stentor_hub.remote.NAME``."""
    register()
    return importlib.import_module(f"{PACKAGE}.{name}")

"""The errors stentor-hub raises for bad input, one class per area under :class:`StentorError`.

Each message says what is wrong, where (file, field, flag) and what to do. The command line prints
a :class:`StentorError` as one line and exits 2; anything else is a bug and keeps its traceback.
Every class also derives from the built-in error a caller would expect (``ValueError`` for a bad
value, ``FileNotFoundError`` for a missing input), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class StentorError(Exception):
    """Base class of the errors stentor-hub raises for input it cannot use."""


class MissingInputError(StentorError, FileNotFoundError):
    """A file, folder, vocabulary or dataset that was named (or that a run needs) is not there."""


class OutputExistsError(StentorError, FileExistsError):
    """An output folder holds files stentor-hub did not write; nothing is overwritten."""


class DiskFullError(StentorError, OSError):
    """The disk filled up while writing; the message names the folder and the space it needed.
    Nothing half-written is left in place (the previous file or folder, if any, is kept)."""


class RecipeError(StentorError, ValueError):
    """A recipe or its inputs cannot be trained; the message says what to change."""


class DataError(StentorError, ValueError):
    """A data source cannot be read as documents (malformed line, missing field, empty source)."""


class TokenizerError(StentorError, ValueError):
    """A vocabulary or tokenizer folder cannot be used."""


class RunDirError(StentorError, ValueError):
    """A training run folder (manifest, curves) is incomplete or does not follow its schema."""


class CardError(StentorError, ValueError):
    """The model card cannot be rendered from the run, the card config or the template."""


class EvaluationError(StentorError, ValueError):
    """An evaluation cannot run on the given model, data or settings."""


class PublishError(StentorError, ValueError):
    """A publish step failed; the message says which and what to do."""


class PushError(PublishError):
    """Pushing to the Hub failed (network, token, permissions); nothing was committed."""


class ExportError(StentorError, ValueError):
    """A model cannot be exported to another format, or the export does not reproduce it."""


class QuickstartError(StentorError, ValueError):
    """Something quickstart needs is missing or wrong; the message says what to pass."""

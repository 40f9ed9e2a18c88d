"""Shared fixtures. Data comes from the shared folder (``$STENTOR_SHARED`` or ``../shared``);
a missing folder fails the tests that need it with a message saying how to point at it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stentor_hub._resources import shared_dir

VOCAB_8000 = "english-8000-strict-nocapcode-v1"
VOCAB_1024 = "english-1024-strict-nocapcode-v1"


@pytest.fixture(scope="session")
def shared() -> Path:
    try:
        return shared_dir(required=True)
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def vocab8000_path(shared) -> Path:
    return shared / "tokenmonster" / "vocabs" / f"{VOCAB_8000}.vocab"


@pytest.fixture(scope="session")
def vocab1024_path(shared) -> Path:
    return shared / "tokenmonster" / "vocabs" / f"{VOCAB_1024}.vocab"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, vocab8000_path) -> Path:
    """A tokenizer folder exported from the 8000 vocabulary (as `stentor-hub tokenizer export`)."""
    from stentor_hub.tokenizer import export_tokenizer

    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    export_tokenizer(vocab8000_path, out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    """The exported tokenizer loaded through the real AutoTokenizer (trust_remote_code)."""
    from stentor_hub.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)

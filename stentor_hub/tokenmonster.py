"""The pure-Python TokenMonster engine (``Vocab``, ``StreamDecoder``).

The implementation lives in ``remote_code/tokenmonster.py`` so that it ships with every
model; this module is its public import path inside the library."""

from stentor_hub.remote.tokenmonster import EncodeResult, StreamDecoder, UnsupportedVocabError, Vocab

__all__ = ["Vocab", "StreamDecoder", "EncodeResult", "UnsupportedVocabError"]

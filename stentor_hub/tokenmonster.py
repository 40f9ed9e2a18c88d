"""The TokenMonster engine (``Vocab``, ``StreamDecoder``): compiled where built, pure Python always.

The implementation lives in ``remote_code/tokenmonster.py`` so that it ships with every
model; this module is its public import path inside the library (see :mod:`stentor_hub.remote_code`)."""

from stentor_hub.remote_code import load

_engine = load("tokenmonster")
Vocab, StreamDecoder, EncodeResult, UnsupportedVocabError = (
    _engine.Vocab, _engine.StreamDecoder, _engine.EncodeResult, _engine.UnsupportedVocabError)
ENGINES, DEFAULT_ENGINE = _engine.ENGINES, _engine.DEFAULT_ENGINE

__all__ = ["Vocab", "StreamDecoder", "EncodeResult", "UnsupportedVocabError", "ENGINES", "DEFAULT_ENGINE"]

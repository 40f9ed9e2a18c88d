"""The TokenMonster engine (``Vocab``, ``StreamDecoder``): compiled where built, pure Python always.

The implementation lives in ``remote_code/tokenmonster.py`` so that it ships with every
model; this module is its public import path inside the library (see :mod:`stentor_hub.remote_code`)."""

from stentor_hub.remote_code import load

_engine = load("tokenmonster")
Vocab, StreamDecoder, EncodeResult, UnsupportedVocabError = (
    _engine.Vocab, _engine.StreamDecoder, _engine.EncodeResult, _engine.UnsupportedVocabError)
#: the compiled module ``Vocab`` uses by default (imported and ABI-checked there), or None
NATIVE = _engine._NATIVE if _engine.DEFAULT_ENGINE == "native" else None

__all__ = ["Vocab", "StreamDecoder", "EncodeResult", "UnsupportedVocabError", "NATIVE"]

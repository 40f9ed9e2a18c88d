"""A pure-Python TokenMonster engine: `.vocab` loading, encoding and decoding.

Written from the TokenMonster implementation specification (SPEC.md in the
project's shared data) and checked, bit for bit, against golden vectors produced by
the Go reference. This file travels to the Hugging Face Hub next to the model
weights and runs under ``trust_remote_code``: it imports only the standard library.

Public API::

    vocab = Vocab.load("english-8000-strict-nocapcode-v1.vocab")
    ids = vocab.encode("Hello world")        # -> [98, 1637, 593, 3963]
    vocab.decode(ids)                        # -> b"Hello world"   (raw bytes, as the reference)
    dec = vocab.decoder()                    # streaming: dec.decode(ids) -> bytes, dec.flush() -> bytes

Supported vocabularies: capcode level 0 or 1, UTF-8 charset, normalization 0 (none) or
1 (NFD), with or without an UNK token. Everything else (full capcode, raw-byte or UTF-16
charsets, the other normalizations) is refused at load time with ``UnsupportedVocabError``
rather than tokenized wrongly.

Speed. The tokenizer is a greedy scan with look-ahead; a direct port runs at about
0.05 MB/s. From a "fresh" state at position ``p`` (no look-ahead token carried over)
everything that follows depends only on ``data[p:]``, and in practice only on the few
bytes the scan actually reads before it reaches the next fresh state. ``_segment`` runs
the scan from one fresh state to the next and records how far it read; the result is
memoised under exactly those bytes (cut at the next space, which is where fresh states
almost always fall). A later text that starts with the same bytes at a fresh state must
take the same decisions, so the memo is exact, not a heuristic. Reading less makes the
keys shorter and the memo hit more often: where the bounds of a branch's score already
decide a step, the look-ahead walk that would refine it is skipped. A native
implementation can replace ``Vocab._encode_normalized`` behind the same API.

Engines. When stentor-hub is installed with its compiled scanner
(``stentor_hub._native._tokenmonster``, built from C by ``pip install``), ``Vocab`` uses it
for normalization, the scan, ``decode`` and the stream decoder; otherwise (or with the
environment variable ``STENTOR_TOKENMONSTER=python``) it uses the pure-Python code here. Both
give the same ids: the compiled normalizer takes each code point's Unicode 13 data from this
file (``_CHARS``), and hands the rare text it does not cover (lone surrogates, a run of over
30 combining marks) back to the code here. ``Vocab.engine`` says which one a vocabulary uses.

Unicode 13. The reference normalizes with Unicode 13 tables; Python's ``unicodedata`` is
Unicode 13 on 3.10, 14 on 3.11, 15 on 3.12+. ``unicode13.py`` (beside this file) lists where
later versions differ, and the normalization consults it first, so the ids are the same on
every Python.
"""

from __future__ import annotations

import bisect
import importlib
import os
import re
import unicodedata

from .unicode13 import CATEGORY_13, COMBINING_13, NFD_13, UNASSIGNED_IN_13

__all__ = ["Vocab", "StreamDecoder", "EncodeResult", "UnsupportedVocabError", "ENGINES", "DEFAULT_ENGINE"]

ENGINE_ENV = "STENTOR_TOKENMONSTER"
_NATIVE_MODULE = "stentor_hub._native._tokenmonster"
_NATIVE_ABI = 2


def _import_native():
    """The compiled scanner of an installed stentor-hub, or None (not installed, built without
    a compiler, or from a version whose interface differs). Imported by name, optionally: on
    the Hub this file must work with the standard library alone."""
    try:
        native = importlib.import_module(_NATIVE_MODULE)
    except ImportError:
        return None
    return native if getattr(native, "ABI", None) == _NATIVE_ABI else None


_NATIVE = _import_native()
#: the engines available in this process ("python" always)
ENGINES = ("native", "python") if _NATIVE is not None else ("python",)
#: what ``Vocab`` uses unless told otherwise: native when available and not overridden
DEFAULT_ENGINE = "python" if os.environ.get(ENGINE_ENV, "").strip().lower() == "python" or _NATIVE is None else "native"

NONE_ID = 0xFFFFFF  # the file format's "no value" for 24-bit fields
_MAX_KEY_LEN = 40
_HEADER_LEN = 24
_ENTRY_FIXED = 15  # flag, n_words, alt1, alt2, id, score after the key
_NEG = -1000000

_DEL_MARK = 0x7F  # capcode level-1 "delete the next byte" marker
_DELETE_PAIR_RE = re.compile(rb"\x7f[\x00-\xff]?")

# Memo limits: keys longer than this are not cached (they are rare and would only bloat
# the memo); the memo is cleared when it holds this many entries.
_MEMO_MAX_KEY = 256
_MEMO_MAX_ENTRIES = 300_000
_MEMO_MAX_LENGTHS = 24
# Segments that depend on where the data ends are cached by the whole remainder, and only
# looked up this close to the end (a segment rarely reads further than two tokens ahead).
_TAIL_REACH = 2 * _MAX_KEY_LEN + 2


def _check_engine(engine: str | None) -> str:
    if engine is None:
        return DEFAULT_ENGINE
    if engine not in ("native", "python"):
        raise ValueError(f"engine must be 'native', 'python' or None, not {engine!r}")
    if engine not in ENGINES:
        raise ValueError(
            "the native TokenMonster engine is not available: install stentor-hub where a C compiler "
            "exists (pip install stentor-hub builds it), or use engine='python'"
        )
    return engine


def _build_trie(index_of: dict) -> dict:
    root = {}
    for key, entry in index_of.items():
        children = root
        for depth, b in enumerate(key):
            node = children.get(b)
            if node is None:
                node = children[b] = [-1, {}]
            if depth == len(key) - 1:
                node[0] = entry
            children = node[1]

    def freeze(children):
        return {b: (node[0], freeze(node[1])) for b, node in children.items()}

    return freeze(root)


class _Longer:
    """Memo marker: segments starting with this first word read past the space after it.
    ``by_next_byte`` maps the byte after that space to the lengths of the keys stored."""

    __slots__ = ("by_next_byte",)

    def __init__(self):
        self.by_next_byte = {}


class UnsupportedVocabError(ValueError):
    """A well-formed vocabulary that uses a feature this engine does not implement."""


class EncodeResult(tuple):
    """``(ids, missing, normalized)``: token ids, count of dropped input bytes, and the
    exact bytes that were tokenized (after normalization and capcode encoding)."""

    __slots__ = ()

    def __new__(cls, ids, missing, normalized):
        return tuple.__new__(cls, (ids, missing, normalized))

    ids = property(lambda self: self[0])
    missing = property(lambda self: self[1])
    normalized = property(lambda self: self[2])


# ---------------------------------------------------------------------------------------
# Unicode 13 (what the reference uses) on top of whatever tables this Python has.

_ucd = unicodedata  # the running Python's tables (the table's checker swaps in others)
_UNASSIGNED_STARTS = [first for first, _ in UNASSIGNED_IN_13]
_UNASSIGNED_ENDS = [last for _, last in UNASSIGNED_IN_13]


def _charset_re(codes) -> re.Pattern:
    """A regex matching one code point of the (first, last) ranges ``codes``."""
    return re.compile("[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in codes) + "]" if codes else "(?!)")


# Code points whose NFD needs Unicode 13 data (unassigned then, or changed since). The BMP
# ones and the others are separate patterns: ``re`` looks up a BMP-only set in a bitmap, but
# walks a set with astral ranges range by range, which would dominate the cost of NFD.
_NFD_SPECIAL = sorted(list(UNASSIGNED_IN_13) + [(cp, cp) for cp in set(COMBINING_13) | set(NFD_13)])
_NFD_SPECIAL_BMP_RE = _charset_re([r for r in _NFD_SPECIAL if r[1] < 0x10000])
_NFD_SPECIAL_ASTRAL_RE = _charset_re([r for r in _NFD_SPECIAL if r[1] >= 0x10000])
_ASTRAL_RE = re.compile("[\\U00010000-\\U0010ffff]")
_NFD_SPECIAL_SPLIT_RE = re.compile(f"({_NFD_SPECIAL_BMP_RE.pattern}|{_NFD_SPECIAL_ASTRAL_RE.pattern})")
_FIRST_UNASSIGNED = chr(_UNASSIGNED_STARTS[0]) if UNASSIGNED_IN_13 else chr(0x10FFFF)


def _unassigned_in_13(cp: int) -> bool:
    k = bisect.bisect_right(_UNASSIGNED_STARTS, cp) - 1
    return k >= 0 and cp <= _UNASSIGNED_ENDS[k]


def _category_major13(cp: int) -> str:
    """First letter of the Unicode 13 general category ("L", "N", "M", ...; "C" if unassigned)."""
    major = CATEGORY_13.get(cp)
    if major is not None:
        return major
    if _unassigned_in_13(cp):
        return "C"
    return _ucd.category(chr(cp))[0]


def _combining13(ch: str) -> int:
    """Canonical combining class of one character in Unicode 13."""
    if ch < _FIRST_UNASSIGNED and not COMBINING_13:
        return _ucd.combining(ch)
    cp = ord(ch)
    ccc = COMBINING_13.get(cp)
    if ccc is not None:
        return ccc
    if _unassigned_in_13(cp):
        return 0
    return _ucd.combining(ch)


def _nfd13(text: str) -> str:
    """NFD with Unicode 13 tables. Where the text has no code point that Unicode 13 sees
    differently this is the running Python's NFD; otherwise decompose one character at a time
    and put each run of non-starters in canonical order by Unicode 13's combining classes."""
    if not _NFD_SPECIAL_BMP_RE.search(text) and not (_ASTRAL_RE.search(text) and _NFD_SPECIAL_ASTRAL_RE.search(text)):
        return _ucd.normalize("NFD", text)
    if not COMBINING_13 and not NFD_13:
        # only code points unassigned in 13: starters without decomposition there, which
        # canonical ordering never crosses, so NFD works on the pieces between them
        pieces = _NFD_SPECIAL_SPLIT_RE.split(text)
        return "".join(piece if k % 2 else _ucd.normalize("NFD", piece) for k, piece in enumerate(pieces))
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp in NFD_13:
            chars.extend(NFD_13[cp])
        elif _unassigned_in_13(cp):
            chars.append(ch)  # unassigned in 13: a starter without decomposition
        else:
            chars.extend(_ucd.normalize("NFD", ch))
    out = []
    run = []
    for ch in chars:
        if _combining13(ch):
            run.append(ch)
            continue
        if run:
            out.extend(sorted(run, key=_combining13))  # stable, as canonical ordering is
            run = []
        out.append(ch)
    out.extend(sorted(run, key=_combining13))
    return "".join(out)


def _use_unicodedata(module) -> None:
    """Use another ``unicodedata``-like module as "the running Python's tables" (only for
    make_unicode13_table.py's check, which verifies the emulation against several versions)."""
    global _ucd
    _ucd = module
    _CLASSES.clear()
    _CHARS.clear()
    for c in range(128):
        _CLASSES[c]


# ---------------------------------------------------------------------------------------
# Normalization (SPEC §3) and capcode level 1 (SPEC §4.2), on str.

# Character classes used by the level-1 marker rule, one character per input code point:
# "a" letter (L*), "0" number (N*), "m" mark (M*), " " U+0020, "'" apostrophes, "." other.
def _class_of_major(major: str, code: int) -> str:
    if code == 0x20:
        return " "
    if code == 0x27 or code == 0x2019:
        return "'"
    return {"L": "a", "N": "0", "M": "m"}.get(major, ".")


class _ClassTable(dict):
    def __missing__(self, code):
        cls = self[code] = _class_of_major(_category_major13(code), code)
        return cls


_CLASSES = _ClassTable()
for _c in range(128):
    _CLASSES[_c]  # pre-fill ASCII so the common case never reaches __missing__


class _CharTable(dict):
    def __missing__(self, code):
        ch = chr(code)
        info = self[code] = (_CLASSES[code], _combining13(ch), _nfd13(ch))
        return info


#: code point -> (class, Unicode 13 combining class, Unicode 13 NFD): what the compiled
#: normalizer asks about each non-ASCII code point it meets, once, so that the Unicode data
#: of both engines comes from this file
_CHARS = _CharTable()

# A letter gets a marker unless the previous code point is a space, letter or mark, or an
# apostrophe that follows a letter; a number gets one unless it follows a space or number.
_MARKER_IN_CLASSES_RE = re.compile(r"(?<![ am])(?<!a')(?=a)|(?<![ 0])(?=0)")
_MARKER_ASCII_RE = re.compile(r"(?<![ A-Za-z])(?<![A-Za-z]')(?=[A-Za-z])|(?<![ 0-9])(?=[0-9])")
_LONG_NONASCII_RE = re.compile(r"[^\x00-\x7f]{31,}")
_CGJ = "\u034f"
_MAX_NONSTARTERS = 30


def _nfd_stream_safe(text: str) -> str:
    """NFD as Go's x/text does it: a CGJ goes in after 30 consecutive non-starters."""
    nfd = _nfd13(text)
    for run in _LONG_NONASCII_RE.finditer(nfd):
        count = 0
        for ch in run.group():
            count = count + 1 if _combining13(ch) else 0
            if count > _MAX_NONSTARTERS:
                return _nfd13(_insert_cgj(text))
    return nfd


def _insert_cgj(text: str) -> str:
    out = []
    nonstarters = 0
    for ch in text:
        decomposed = _nfd13(ch)
        lead = 0
        for d in decomposed:
            if not _combining13(d):
                break
            lead += 1
        trail = 0
        for d in reversed(decomposed):
            if not _combining13(d):
                break
            trail += 1
        if lead == 0:
            nonstarters = trail
        else:
            nonstarters += lead
            if nonstarters > _MAX_NONSTARTERS:
                out.append(_CGJ)
                nonstarters = trail
        out.append(ch)
    return "".join(out)


def _capcode1(text: str) -> str:
    """Insert the ``\\x7f `` delete markers of capcode level 1; DEL itself becomes 0x14."""
    if "\x7f" in text:
        text = text.replace("\x7f", "\x14")
    if text.isascii():
        return _MARKER_ASCII_RE.sub("\x7f ", text)
    classes = text.translate(_CLASSES)
    cuts = [m.start() for m in _MARKER_IN_CLASSES_RE.finditer(classes)]
    if not cuts:
        return text
    parts = []
    prev = 0
    for cut in cuts:
        parts.append(text[prev:cut])
        prev = cut
    parts.append(text[prev:])
    return "\x7f ".join(parts)


# ---------------------------------------------------------------------------------------
# The vocabulary file (SPEC §2).


class _Reader:
    """Bounds-checked little-endian reads that fail with a message naming the file."""

    def __init__(self, buf: bytes, name: str):
        self.buf = buf
        self.name = name
        self.pos = 0

    def fail(self, what: str):
        raise ValueError(
            f"{self.name}: not a valid TokenMonster .vocab file: {what}. "
            "Pass the path of an unmodified .vocab file (e.g. english-8000-strict-nocapcode-v1.vocab)."
        )

    def need(self, n: int, what: str):
        if self.pos + n > len(self.buf):
            self.fail(f"file ends at byte {len(self.buf)} in the middle of {what} (needs {n} more bytes at offset {self.pos})")

    def u8(self, what: str) -> int:
        self.need(1, what)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u24(self, what: str) -> int:
        self.need(3, what)
        b = self.buf
        p = self.pos
        self.pos = p + 3
        return b[p] | b[p + 1] << 8 | b[p + 2] << 16

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return v


class Vocab:
    """A loaded TokenMonster vocabulary. Build it with :meth:`Vocab.load` or :meth:`Vocab.from_bytes`.

    Attributes: ``vocab_size`` (distinct token ids), ``n_ids`` (size of the id space, highest
    id + 1), ``capcode``, ``charset``, ``normalization``, ``mode``, ``delete_id`` and
    ``unk_id`` (``None`` when absent), ``max_token_len``, ``name``, and ``engine``: "native"
    (the compiled scanner of stentor-hub) or "python" (this file), chosen by ``engine=`` or
    else ``DEFAULT_ENGINE``. Both give identical results.
    """

    # -- construction -------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, engine: str | None = None) -> "Vocab":
        """Read a ``.vocab`` file. A truncated, corrupt or foreign file raises ``ValueError``.
        ``engine``: "native", "python" or None (``DEFAULT_ENGINE``)."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:
                buf = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"TokenMonster vocabulary not found: {path}") from None
        return cls.from_bytes(buf, name=path, engine=engine)

    @classmethod
    def from_bytes(cls, buf: bytes, name: str = "<bytes>", engine: str | None = None) -> "Vocab":
        """Parse the bytes of a ``.vocab`` file; ``name`` is used in error messages."""
        self = cls.__new__(cls)
        self._init_from_bytes(bytes(buf), name, _check_engine(engine))
        return self

    def _init_from_bytes(self, buf: bytes, name: str, engine: str) -> None:
        r = _Reader(buf, name)
        if len(buf) < _HEADER_LEN:
            r.fail(f"it is {len(buf)} bytes long, shorter than the {_HEADER_LEN}-byte header")
        capcode, charset, normalization, mode = buf[0], buf[1], buf[2], buf[3]
        if capcode > 2:
            r.fail(f"capcode level {capcode} in the header (must be 0, 1 or 2)")
        if charset > 2:
            r.fail(f"charset {charset} in the header (must be 0, 1 or 2)")
        r.pos = 8
        unk_id = r.u24("the header")
        vocab_size = r.u24("the header")
        n_ids = r.u24("the header")
        n_entries = r.u24("the header")
        delete_id = r.u24("the header")
        max_token_len = r.u8("the header")
        if max_token_len > _MAX_KEY_LEN:
            r.fail(f"header says the longest token is {max_token_len} bytes (at most {_MAX_KEY_LEN})")
        # Each entry is at least 17 bytes and the class table 256: reject impossible counts
        # before looping, so random bytes fail at once.
        if _HEADER_LEN + n_entries * 17 + 256 + 3 > len(buf):
            r.fail(f"header announces {n_entries} token entries, more than a {len(buf)}-byte file can hold")

        keys, flags, nwords, alt1, alt2, ids = [], [], [], [], [], []
        index_of = {}
        for e in range(n_entries):
            where = f"token entry {e} of {n_entries}"
            klen = r.u8(where)
            if klen == 0 or klen > _MAX_KEY_LEN:
                r.fail(f"{where} has a key of {klen} bytes (must be 1..{_MAX_KEY_LEN})")
            if klen > max_token_len:
                r.fail(f"{where} has a key of {klen} bytes, longer than the header's longest token ({max_token_len})")
            key = r.take(klen, where)
            r.need(_ENTRY_FIXED, where)
            flag = r.u8(where)
            nw = r.u8(where)
            a1 = r.u24(where)
            a2 = r.u24(where)
            tid = r.u24(where)
            r.take(4, where)  # score: plays no part in tokenization
            for alt in (a1, a2):
                if alt != NONE_ID and alt >= e:
                    r.fail(f"{where} names entry {alt} as an alternative; alternatives must be earlier entries")
            if tid >= n_ids:
                r.fail(f"{where} has id {tid}, outside the header's id range 0..{n_ids - 1}")
            if key in index_of:
                r.fail(f"{where} repeats the key {key!r} of entry {index_of[key]}")
            index_of[key] = e
            keys.append(key)
            flags.append(flag)
            nwords.append(nw)
            alt1.append(-1 if a1 == NONE_ID else a1)
            alt2.append(-1 if a2 == NONE_ID else a2)
            ids.append(tid)
        begin_class = r.take(256, "the byte-class table")
        n_deleted = r.u24("the deleted-token count")
        for d in range(n_deleted):
            where = f"deleted token {d} of {n_deleted}"
            r.take(r.u8(where), where)
            r.take(7, where)
        if r.pos != len(buf):
            r.fail(f"{len(buf) - r.pos} unexpected bytes after the end of the data at offset {r.pos}")
        for label, value in (("delete", delete_id), ("UNK", unk_id)):
            if value != NONE_ID and value >= n_ids:
                r.fail(f"the {label} token id {value} is outside the id range 0..{n_ids - 1}")
        if n_ids > n_entries + n_deleted + 2:
            r.fail(f"header announces {n_ids} ids for only {n_entries} entries")
        if vocab_size > n_ids:
            r.fail(f"header's vocab_size {vocab_size} exceeds its id range {n_ids}")

        if capcode == 2:
            raise UnsupportedVocabError(f"{name}: full capcode (level 2) is not supported by this engine; levels 0 and 1 are")
        if charset != 1:
            raise UnsupportedVocabError(f"{name}: charset {charset} is not supported by this engine; only UTF-8 (1) is")
        if normalization not in (0, 1):
            raise UnsupportedVocabError(
                f"{name}: normalization flags {normalization} are not supported by this engine; only 0 (none) and 1 (NFD) are"
            )

        self.name = os.path.basename(name)
        self._raw = buf
        self.capcode = capcode
        self.charset = charset
        self.normalization = normalization
        self.mode = mode
        self.vocab_size = vocab_size
        self.n_ids = n_ids
        self.max_token_len = max_token_len
        self.delete_id = None if delete_id == NONE_ID else delete_id
        self.unk_id = None if unk_id == NONE_ID else unk_id
        self._keys = keys
        self._key_len = [len(k) for k in keys]
        self._flags = flags
        self._nwords = nwords
        self._alt1 = alt1
        self._alt2 = alt2
        self._ids = ids
        self._index_of = index_of
        self._begin_class = begin_class
        # decode table: last writer wins, so an id with a duplicate decodes via the duplicate
        table = [b""] * n_ids
        for key, tid in zip(keys, ids):
            table[tid] = key
        self._decode_table = table
        self.engine = engine
        if engine == "native":
            self._native = _NATIVE.Scanner(
                keys, flags, nwords, alt1, alt2, ids, begin_class, self.delete_id, self.unk_id, max_token_len,
                table, capcode, normalization & 1, _CHARS,
            )
            return
        self._native = None
        # A trie of the keys: byte -> (entry index or -1, children). The scan walks it byte by
        # byte, which also tells it exactly how far it had to read.
        self._trie = _build_trie(index_of)
        self._longest, self._longest_spaced, self._segment = _compile_scanner(
            self._trie, max_token_len, keys, flags, nwords, self._key_len, alt1, alt2, ids, begin_class,
            self.delete_id, self.unk_id,
        )
        self._memo = {}
        self._ext_memo = {}
        self._tail_memo = {}

    def __getstate__(self):
        # pickle the file bytes, not the derived tables or the memo
        return {"raw": self._raw, "name": self.name, "engine": self.engine}

    def __setstate__(self, state):
        # the receiving process may lack the compiled engine: then it uses the pure one
        engine = state.get("engine", DEFAULT_ENGINE)
        self._init_from_bytes(state["raw"], state["name"], engine if engine in ENGINES else "python")

    def __repr__(self) -> str:
        return f"Vocab({self.name!r}, vocab_size={self.vocab_size}, capcode={self.capcode}, engine={self.engine!r})"

    def __len__(self) -> int:
        return self.vocab_size

    # -- lookups ------------------------------------------------------------------------

    def id_to_token(self, token_id: int) -> bytes:
        """The stored bytes of an id, in encoded form (e.g. ``b"\\x7f lo"``); ``b""`` for an id
        with no token. Raises ``IndexError`` for an id outside ``0..n_ids-1``."""
        if not 0 <= token_id < self.n_ids:
            raise IndexError(f"token id {token_id} is outside 0..{self.n_ids - 1}")
        return self._decode_table[token_id]

    def token_to_id(self, token: bytes) -> int | None:
        """The id of a token given in encoded form (duplicates included), or ``None``."""
        e = self._index_of.get(bytes(token))
        return None if e is None else self._ids[e]

    # -- encoding -----------------------------------------------------------------------

    def normalize(self, text: str | bytes) -> bytes:
        """The bytes the tokenizer sees: NFD (if the vocabulary asks for it), then capcode."""
        if isinstance(text, str):
            if self._native is not None:
                data = self._native.normalize(text)
                if data is not None:
                    return data
            return self._normalize_str(text).encode("utf-8")
        if not isinstance(text, (bytes, bytearray, memoryview)):
            raise TypeError(f"encode() takes str or bytes, not {type(text).__name__}")
        raw = bytes(text)
        if raw.isascii():
            return self.normalize(raw.decode("ascii"))
        try:
            return self.normalize(raw.decode("utf-8"))
        except UnicodeDecodeError:
            # invalid bytes pass through unchanged, each as its own unit (a lone surrogate
            # here: category Cs, "other", exactly how the reference treats them)
            return self._normalize_str(raw.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def _normalize_str(self, text: str) -> str:
        if self.normalization & 1 and not text.isascii():
            text = _nfd_stream_safe(text)
        if self.capcode == 1:
            text = _capcode1(text)
        return text

    def encode(self, text: str | bytes) -> list[int]:
        """Token ids of ``text`` (``str``, or ``bytes`` that need not be valid UTF-8)."""
        if self._native is not None and isinstance(text, str):
            ids = self._native.encode_text(text)  # normalize() and the scan in one call
            if ids is not None:
                return ids
        return self._encode_normalized(self.normalize(text))[0]

    def encode_detailed(self, text: str | bytes) -> EncodeResult:
        """``(ids, missing, normalized)``: ``missing`` counts input bytes no token covered
        (dropped, or each replaced by UNK when the vocabulary has one)."""
        data = self.normalize(text)
        ids, missing = self._encode_normalized(data)
        return EncodeResult(ids, missing, data)

    def _encode_normalized(self, data: bytes) -> tuple[list[int], int]:
        """Tokenize normalized bytes: the compiled scanner, or the memoised pure-Python scan."""
        if self._native is not None:
            return self._native.encode(data)
        n = len(data)
        if n == 0 or self.max_token_len == 0:
            return [], 0
        memo = self._memo
        memo_get = memo.get
        ext_get = self._ext_memo.get
        tail_get = self._tail_memo.get
        find = data.find
        segment = self._segment
        longer_marker, max_key, max_entries, tail_start = _Longer, _MEMO_MAX_KEY, _MEMO_MAX_ENTRIES, n - _TAIL_REACH
        out = []
        missing = 0
        p = 0
        lookahead = None  # the previous segment's walk at p, when it computed one
        while p < n:
            # The memo entry for the fresh state at p: first by the text up to the next space,
            # then, if segments starting so read further, by their exact lengths.
            s = find(b" ", p + 1)
            if s >= 0:
                result = memo_get(data[p : s + 1])
                if result.__class__ is longer_marker:
                    # segments starting with this word read on past the space: their exact
                    # lengths, indexed by the byte after the space
                    found = None
                    if s + 1 < n:
                        for length in result.by_next_byte.get(data[s + 1], ()):
                            found = ext_get(data[p : p + length])
                            if found is not None:
                                break
                    result = found
            else:
                result = None
            if result is None and p >= tail_start:
                result = tail_get(data[p:])
            if result is None:
                ids, q, reach, dropped, lookahead = segment(data, p, n, lookahead)
                result = (tuple(ids), q - p, dropped)  # a tuple of ints is not tracked by the GC
                if 0 <= s < p + max_key and reach <= s + 1 and len(memo) < max_entries:
                    memo[data[p : s + 1]] = result  # the common case: read no further than the space
                else:
                    self._remember(data, p, n, s, reach, result)
            else:
                lookahead = None
            ids, length, dropped = result
            out += ids
            p += length
            if dropped:
                missing += dropped
        return out, missing

    def _remember(self, data: bytes, p: int, n: int, s: int, reach: int, result) -> None:
        """Store a segment that started at ``p`` and read ``data[p:reach]`` (``reach == n + 1``:
        it also depended on where the data ends). ``s`` is the next space after ``p``."""
        memo = self._memo
        if len(memo) >= _MEMO_MAX_ENTRIES:
            memo.clear()
            self._ext_memo.clear()
            self._tail_memo.clear()
        if n - p <= _TAIL_REACH and (reach > n or s < 0):
            self._tail_memo[data[p:]] = result  # keyed by everything that follows: always exact
        if reach > n:
            if s >= 0 and s + 1 - p <= _MEMO_MAX_KEY and data[p : s + 1] not in memo:
                memo[data[p : s + 1]] = _Longer()
            return
        if s < 0 or s + 1 - p > _MEMO_MAX_KEY or reach - p > _MEMO_MAX_KEY:
            return
        if reach <= s + 1:
            memo[data[p : s + 1]] = result
            return
        # Keys read by segments that start with the same first word are prefix-free: the scan
        # is deterministic, so two texts agreeing on what one read make it read the same.
        key = data[p : s + 1]
        longer = memo.get(key)
        if longer is None:
            longer = memo[key] = _Longer()
        lengths = longer.by_next_byte.setdefault(data[s + 1], [])
        length = reach - p
        if length not in lengths:
            if len(lengths) >= _MEMO_MAX_LENGTHS:
                return
            lengths.append(length)
        self._ext_memo[data[p:reach]] = result

    # -- decoding -----------------------------------------------------------------------

    def decode(self, ids) -> bytes:
        """Bytes of a list of ids, exactly as the reference: ids outside the id range are
        skipped, and the result need not be valid UTF-8."""
        if self._native is not None:
            return self._native.decode(ids if isinstance(ids, (list, tuple)) else list(ids))
        table = self._decode_table
        n = len(table)
        raw = b"".join([table[t] for t in ids if 0 <= t < n])
        if self.capcode == 1 and b"\x7f" in raw:
            raw = _DELETE_PAIR_RE.sub(b"", raw)
        return raw

    def decoder(self) -> "StreamDecoder":
        """A streaming decoder that holds back incomplete UTF-8 between calls."""
        return StreamDecoder(self)


def _compile_scanner(trie, maxlen, keys, flags, nwords, key_len, alt1s, alt2s, idof, bc, delete_id, unk_id):
    """The scanner's hot functions, as closures over the vocabulary's tables (cheaper to
    reach than attributes of ``self``, which matters in pure Python)."""
    space_node = trie.get(0x20)
    has_delete = delete_id is not None
    # An alternative is a proper prefix of the current token, so its walk starts by reading
    # the rest of the current token: bytes known from the keys alone. Walk them once here:
    # per entry and alternative, (best entry, its length, trie children, bytes consumed), with
    # children None when the walk dies inside the token; None when not a prefix (plain walk).
    suffix_walks = ([], [])
    for e, key in enumerate(keys):
        for alts, walks in zip((alt1s, alt2s), suffix_walks):
            alt = alts[e]
            if alt < 0 or not key.startswith(keys[alt]):
                walks.append(None)
                continue
            children, best, best_len, consumed = trie, -1, 0, 0
            for b in key[len(keys[alt]) :]:
                node = children.get(b)
                consumed += 1
                if node is None:
                    children = None
                    break
                entry, children = node
                if entry >= 0:
                    best, best_len = entry, consumed
            walks.append((best, best_len, children, consumed))
    suffix_walks1, suffix_walks2 = suffix_walks
    # SPEC §5.2's scores, split into per-entry and per-class parts so the scan adds up a few
    # table entries instead of calling a function (tests/tokenmonster_reference.py has the
    # formulas as written in the spec).
    first = [[(f >> 7) + max(0, w - fd - 1) + 100 * (w - fd) for f, w in zip(flags, nwords)] for fd in (0, 1)]
    second_spaced = [(f >> 7) + max(0, w - 1) + 100 * w for f, w in zip(flags, nwords)]
    second_plain = [v + ((f >> 2) & 1) for v, f in zip(second_spaced, flags)]
    class_part = [((nb >> 2) & 1) + 100 * (nb >> 3) for nb in range(256)]
    first_bits = [((f & 1) << 1 | (f >> 3) & 1) << 4 for f in flags]  # ends with letter, ends with marker
    second_bits = [(f & 1) << 3 | ((f >> 1) & 1) << 2 | ((f >> 4) & 1) << 1 for f in flags]
    cross_plain = [0] * 64
    cross_spaced = [0] * 64
    for bits in range(64):
        end_letter, end_marker = bits >> 5 & 1, bits >> 4 & 1
        end_letter2, start_letter2, start_marker2, letter_after = bits >> 3 & 1, bits >> 2 & 1, bits >> 1 & 1, bits & 1
        common = -100 * (end_marker & start_marker2) - 3 * (end_letter2 & letter_after)
        cross_plain[bits] = common - 103 * (end_letter & start_letter2)
        cross_spaced[bits] = common - 103 * end_letter - 1
    missing_ids = (unk_id,) if unk_id is not None else ()
    # Bounds of branch 1's score past the current token: g = what the look-ahead token at j
    # adds (its length, its own parts, the class of the byte after it), over every key that
    # starts with the byte at j, for each combination of the current token's end bits. Only
    # for bytes that have a single-byte token (the walk always finds something) and that no
    # letter-initial key starts with (so no spaced branch): there branch 1 is one number.
    classes_after = set(bc)
    no_letter_start = [False] * 256
    for b, (entry, _) in trie.items():
        no_letter_start[b] = entry >= 0
    for e, key in enumerate(keys):
        if flags[e] & 2:
            no_letter_start[key[0]] = False
    # min and max of key length + own score parts per (first byte, second_bits), then the
    # cross terms per end-bits combination and class after (few groups: cheap at load time)
    groups = {}
    for e, key in enumerate(keys):
        if no_letter_start[key[0]]:
            v = key_len[e] + second_plain[e]
            group = (key[0], second_bits[e])
            low_high = groups.get(group)
            if low_high is None:
                groups[group] = [v, v]
            elif v < low_high[0]:
                low_high[0] = v
            elif v > low_high[1]:
                low_high[1] = v
    g_min = [None] * 1024
    g_max = [None] * 1024
    for (b, bits), (low, high) in groups.items():
        for end_bits in range(4):
            at = end_bits << 8 | b
            for nb in classes_after:
                extra = class_part[nb] + cross_plain[end_bits << 4 | bits | nb & 1]
                if g_min[at] is None or low + extra < g_min[at]:
                    g_min[at] = low + extra
                if g_max[at] is None or high + extra > g_max[at]:
                    g_max[at] = high + extra

    def longest(data: bytes, j: int, n: int, children=trie, best=-1, best_len=0, k=0):
        """Longest key that is a prefix of ``data[j:]``: (entry, length, reach), where
        ``reach`` is one past the last byte read, or ``n + 1`` if the answer depended on
        where the data ends. Entry is -1 when nothing matches. The optional arguments resume
        a walk that has already matched ``k`` bytes (see ``suffix_walks``)."""
        for b in data[j + k : j + maxlen]:
            node = children.get(b)
            if node is None:
                return best, best_len, j + k + 1
            k += 1
            entry, children = node
            if entry >= 0:
                best = entry
                best_len = k
        return best, best_len, (n + 1 if n - j < maxlen else j + k)

    def longest_spaced(data: bytes, j: int, n: int):
        """Longest key that is a prefix of ``b" " + data[j:]`` (length includes the space),
        or (0, 0, reach) when none is."""
        node = space_node
        if node is None or maxlen == 0:
            return 0, 0, j
        entry, children = node
        best, best_len = (entry, 1) if entry >= 0 else (0, 0)
        k = 1
        for b in data[j : j + maxlen - 1]:
            node = children.get(b)
            if node is None:
                return best, best_len, j + k
            k += 1
            entry, children = node
            if entry >= 0:
                best = entry
                best_len = k
        return best, best_len, (n + 1 if n - j < maxlen - 1 else j + k - 1)

    def segment(data: bytes, p: int, n: int, lookahead=None):
        """Run the scan (SPEC §5.3) from the fresh state at ``p`` to the next one.

        Returns (ids, q, reach, missing): the ids emitted, the position of the next fresh
        state, one past the last byte read (``n + 1`` if the end of the data mattered), and
        1 if the segment is a byte no token covers, else 0, and the walk at q when this
        segment already made it (passed back in as ``lookahead`` to save the work)."""

        cur, L, reach = lookahead or longest(data, p, n)
        if cur < 0:
            return list(missing_ids), p + 1, reach, 1, None
        out = []
        i = p
        fd = 0
        while True:
            j = i + L
            if j >= n:
                reach = n + 1
                break
            if j + 1 > reach:
                reach = j + 1
            f1 = flags[cur]
            if f1 & 32 and bc[data[j]] == 12:
                break
            s1 = s2 = s3 = s1b = s2b = s3b = _NEG

            # branches 2 and 3: an alternative (a shorter prefix) of cur, then the longest after it
            a1 = alt1s[cur]
            if a1 >= 0:
                a2 = alt2s[cur]
                second = False
                alt = a1
                while alt >= 0:
                    la = key_len[alt] - fd
                    q = i + la
                    walk = suffix_walks2[cur] if second else suffix_walks1[cur]
                    if walk is None:
                        n2, l2, r = longest(data, q, n)
                    elif walk[2] is None:
                        n2, l2, r = walk[0], walk[1], q + walk[3]
                    else:
                        n2, l2, r = longest(data, q, n, walk[2], walk[0], walk[1], walk[3])
                    ra = r
                    if r > reach:
                        reach = r
                    sa = sb = _NEG
                    nb_, lb = -1, 0
                    if n2 >= 0:
                        t = la + l2
                        x = q + l2
                        if x < n:
                            nb = bc[data[x]]
                            if x + 1 > reach:
                                reach = x + 1
                        else:
                            nb = bc[0]
                            reach = n + 1
                        f2 = flags[n2]
                        w2 = nwords[n2]
                        sa = t + first[fd][alt] + second_plain[n2] + class_part[nb] + cross_plain[first_bits[alt] | second_bits[n2] | nb & 1]
                        if t <= L:
                            sa -= 100 if t < L else 10000
                        if has_delete and f2 & 2 and nb == 1 and w2 == 0:
                            m, k, r = longest_spaced(data, q, n)
                            if r > reach:
                                reach = r
                            if k > l2 + 1:
                                k -= 1
                                t = la + k
                                x = q + k
                                if x < n:
                                    nb = bc[data[x]]
                                    if x + 1 > reach:
                                        reach = x + 1
                                else:
                                    nb = bc[0]
                                    reach = n + 1
                                sb = t + first[fd][alt] + second_spaced[m] + class_part[nb] + cross_spaced[first_bits[alt] | second_bits[m] | nb & 1]
                                if t <= L:
                                    sb -= 100 if t < L else 10000
                                nb_, lb = m, k
                    if not second:
                        s2, s2b, n2_, l2_, n2b, l2b, la2, r2 = sa, sb, n2, l2, nb_, lb, la, ra
                        second = True
                        alt = a2
                    else:
                        s3, s3b, n3_, l3_, n3b, l3b, la3, r3 = sa, sb, n2, l2, nb_, lb, la, ra
                        break

            # branch 1: cur, then the longest token at j. When no token starting with the
            # byte at j begins with a letter (so no spaced branch), the bounds of what branch 1
            # can score may already decide against the alternatives: then the walk is skipped
            # and the bytes it would read do not become part of the memo key.
            b = data[j]
            walk_j = True
            if no_letter_start[b]:
                base = L + first[fd][cur]
                at = first_bits[cur] << 4 | b
                best_alt = max(s2, s3, s2b, s3b)
                if base + g_min[at] >= best_alt:
                    out.append(idof[cur])
                    return out, j, reach, 0, None
                walk_j = base + g_max[at] >= best_alt
            if walk_j:
                n1, l1, r1 = longest(data, j, n)
                r = r1
                if r > reach:
                    reach = r
                if n1 >= 0:
                    x = j + l1
                    if x < n:
                        nb = bc[data[x]]
                        if x + 1 > reach:
                            reach = x + 1
                    else:
                        nb = bc[0]
                        reach = n + 1
                    f2 = flags[n1]
                    w2 = nwords[n1]
                    s1 = L + l1 + first[fd][cur] + second_plain[n1] + class_part[nb] + cross_plain[first_bits[cur] | second_bits[n1] | nb & 1]
                    if has_delete and f2 & 2 and nb == 1 and w2 == 0:
                        m, k, r = longest_spaced(data, j, n)
                        if r > reach:
                            reach = r
                        if k > l1 + 1:
                            k -= 1
                            x = j + k
                            if x < n:
                                nb = bc[data[x]]
                                if x + 1 > reach:
                                    reach = x + 1
                            else:
                                nb = bc[0]
                                reach = n + 1
                            s1b = L + k + first[fd][cur] + second_spaced[m] + class_part[nb] + cross_spaced[first_bits[cur] | second_bits[m] | nb & 1]
                            n1b, l1b = m, k

            best = max(s1, s2, s3, s1b, s2b, s3b)
            if best == _NEG:
                break
            # ties go to the first branch in this order: s1, s2, s3, s1b, s2b, s3b.
            # After a plain branch the new current token is exactly what a fresh lookup at
            # the new position would give (fd = 0), so the segment ends there.
            if s1 == best:
                out.append(idof[cur])
                return out, j, reach, 0, (n1, l1, r1)
            if s2 == best:
                out.append(idof[a1])
                return out, i + la2, reach, 0, (n2_, l2_, r2)
            if s3 == best:
                out.append(idof[a2])
                return out, i + la3, reach, 0, (n3_, l3_, r3)
            if s1b == best:
                out.append(idof[cur])
                out.append(delete_id)
                i = j
                cur, L = n1b, l1b
            elif s2b == best:
                out.append(idof[a1])
                out.append(delete_id)
                i += la2
                cur, L = n2b, l2b
            else:
                out.append(idof[a2])
                out.append(delete_id)
                i += la3
                cur, L = n3b, l3b
            fd = 1
        out.append(idof[cur])
        return out, i + L, reach, 0, None

    return longest, longest_spaced, segment


def _incomplete_utf8_tail(data: bytes) -> int:
    """How many trailing bytes to hold back (SPEC §6.2), quirks of the reference included.

    Deviation: where the reference crashes (it would hold more bytes than there are), this
    holds exactly the bytes present of the incomplete character instead."""
    n = len(data)
    if n == 0 or data[-1] < 0x80:
        return 0
    s = n - 1
    while s >= 0 and (data[s] & 0xC0) == 0x80:
        s -= 1
    if s < 0:
        return n
    x = data[s]
    if x < 0x80:
        need = 1
    elif (x & 0xE0) == 0xC0:
        need = 2
    elif (x & 0xF0) == 0xE0:
        need = 3
    elif (x & 0xF8) == 0xF0:
        need = 4
    else:
        return n - s
    have = n - s
    if have < need:
        held = need - have  # reference quirk: the count of MISSING bytes
        return held if held <= n else have
    if need == 1 and (x & 0xC0) != 0:
        return n  # reference quirk: ASCII >= 0x40 followed by stray continuation bytes
    return 0


class StreamDecoder:
    """Decodes ids chunk by chunk (SPEC §6.2), holding back bytes of an unfinished UTF-8
    character until the next chunk. ``flush()`` returns what is held, raw, as the reference.

    Concatenating every ``decode`` output and a final ``flush`` gives ``Vocab.decode`` of all
    ids, except where a delete marker interacts with the bytes that ``flush`` returns."""

    def __init__(self, vocab: Vocab):
        self._native = vocab._native
        self._table = vocab._decode_table
        self._capcode = vocab.capcode
        self._remainder = b""
        self._pending_delete = False

    def decode(self, ids) -> bytes:
        if self._native is not None:
            data = self._native.join(ids if isinstance(ids, (list, tuple)) else list(ids))
            if self._remainder:
                data = self._remainder + data
        else:
            table = self._table
            n = len(table)
            data = self._remainder + b"".join([table[t] for t in ids if 0 <= t < n])
        held = _incomplete_utf8_tail(data)
        if held:
            self._remainder = data[len(data) - held :]
            data = data[: len(data) - held]
        else:
            self._remainder = b""
        if self._capcode != 1:
            return data
        if not self._pending_delete and b"\x7f" not in data:
            return data
        if self._native is not None:
            out, self._pending_delete = self._native.strip(data, self._pending_delete)
            return out
        out = bytearray()
        pending = self._pending_delete
        for x in data:
            if x == _DEL_MARK:
                pending = True
            elif pending:
                pending = False
            else:
                out.append(x)
        self._pending_delete = pending
        return bytes(out)

    def flush(self) -> bytes:
        held, self._remainder = self._remainder, b""
        return held

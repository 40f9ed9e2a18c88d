"""Write small synthetic TokenMonster ``.vocab`` files (SPEC §2) for tests of features the
real vocabularies do not use (UNK, capcode 0, refused features, corrupt files)."""

from __future__ import annotations

import struct
import unicodedata

NONE = 0xFFFFFF


def _u24(v: int) -> bytes:
    return bytes((v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF))


def _first_char_class(key: bytes) -> str:
    try:
        ch = key.decode("utf-8")[0]
    except UnicodeDecodeError:
        return "other"
    cat = unicodedata.category(ch)
    return {"L": "letter", "M": "letter", "N": "number"}.get(cat[0], "space" if ch == " " else "other")


def _flags(key: bytes, marker: int) -> tuple[int, int]:
    text = key.decode("utf-8", "replace")
    is_letter = [unicodedata.category(c)[0] in "LM" for c in text]
    flag = 0
    if is_letter and is_letter[-1]:
        flag |= 1
    if is_letter and is_letter[0]:
        flag |= 2
    if text.startswith(" "):
        flag |= 4
    if key[-1] == marker:
        flag |= 8
    if key[0] == marker:
        flag |= 16
    n_words = sum(1 for a, b in zip(text, text[1:]) if a == " " and unicodedata.category(b)[0] in "LNM")
    if text.startswith(" ") and n_words == 1 and all(is_letter[1:]):
        flag |= 32
    letters = sum(is_letter)
    digits = sum(c.isdigit() for c in text)
    spaces = text.count(" ")
    if len(key) == 1 or letters + spaces == len(text) or digits + spaces == len(text) or letters + digits == 0:
        flag |= 128
    return flag, n_words


def build_vocab(
    tokens: list[bytes],
    *,
    capcode: int = 1,
    charset: int = 1,
    normalization: int = 1,
    unk: bool = False,
    begin_class: bytes | None = None,
) -> bytes:
    """A ``.vocab`` file for ``tokens`` (given in encoded form). With capcode 1, 0x7F is the
    delete token and every letter/number-initial token gets its ``b"\\x7f "`` duplicate."""
    plain = sorted(set(tokens) | ({b"\x7f"} if capcode == 1 else set()), key=lambda k: (len(k), k))
    ids = {key: i for i, key in enumerate(plain)}
    entries = list(plain)
    if capcode == 1:
        for key in plain:
            if _first_char_class(key) in ("letter", "number") and len(key) + 2 <= 40:
                dup = b"\x7f " + key
                if dup not in ids:
                    entries.append(dup)
                    ids[dup] = ids[key]
    entries.sort(key=lambda k: (len(k), k))
    index = {key: e for e, key in enumerate(entries)}
    n_ids = len(plain) + (1 if unk else 0)
    unk_id = len(plain) if unk else NONE
    delete_id = ids[b"\x7f"] if capcode == 1 else NONE
    marker = 0x7F if capcode == 1 else -1
    body = bytearray()
    for key in entries:
        prefixes = [index[key[:n]] for n in range(len(key) - 1, 0, -1) if key[:n] in index]
        alt1 = prefixes[0] if prefixes else NONE
        alt2 = prefixes[1] if len(prefixes) > 1 else NONE
        flag, n_words = _flags(key, marker)
        score = -1.0 if key.startswith(b"\x7f ") and capcode == 1 else 0.5
        body += bytes([len(key)]) + key + bytes([flag, n_words]) + _u24(alt1) + _u24(alt2) + _u24(ids[key]) + struct.pack("<f", score)
    if begin_class is None:
        classes = bytearray(256)
        for b in range(256):
            ch = chr(b)
            if ch.isalpha() and b < 128:
                classes[b] = 1
            elif ch == " ":
                classes[b] = 12
            elif b < 128 and not ch.isalnum() and b > 32 or b == marker:
                classes[b] = 10
        begin_class = bytes(classes)
    header = bytes([capcode, charset, normalization, 4, 0, 0, 0, 0]) + _u24(unk_id) + _u24(len(plain) + (1 if unk else 0))
    header += _u24(n_ids) + _u24(len(entries)) + _u24(delete_id) + bytes([max(len(k) for k in entries)])
    return bytes(header) + bytes(body) + begin_class + _u24(0)

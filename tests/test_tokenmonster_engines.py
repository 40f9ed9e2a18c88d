"""The two TokenMonster engines side by side: the compiled scanner (stentor_hub._native) against
the pure-Python one on random inputs and streaming chunkings, engine selection, threads, and
Unicode 13 normalization on every Python.

The compiled engine is part of what `make test` builds (a C compiler is on every machine of
this project); a build without it fails the tests that need it, naming the fix."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import unicodedata

import pytest

import stentor_hub.remote.tokenmonster as tm
from stentor_hub.tokenmonster import Vocab
from vocab_builder import build_vocab

VOCABS = ["english-8000-strict-nocapcode-v1", "english-1024-strict-nocapcode-v1"]
FORCED_PYTHON = os.environ.get(tm.ENGINE_ENV, "").strip().lower() == "python"


def _require_native() -> None:
    if "native" not in tm.ENGINES:
        pytest.fail(
            "the compiled TokenMonster engine is not installed: reinstall with a C compiler "
            "(make install, or STENTOR_NATIVE=1 pip install . to see why it does not build)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def pairs(shared) -> dict[str, tuple[Vocab, Vocab]]:
    """(native, python) per vocabulary."""
    _require_native()
    out = {}
    for name in VOCABS:
        raw = (shared / "tokenmonster" / "vocabs" / f"{name}.vocab").read_bytes()
        out[name] = (Vocab.from_bytes(raw, name, engine="native"), Vocab.from_bytes(raw, name, engine="python"))
    return out


# ---------------------------------------------------------------------------------------
# Engine selection


def test_engine_selection(vocab8000_path):
    _require_native()
    assert tm.DEFAULT_ENGINE == ("python" if FORCED_PYTHON else "native")
    assert Vocab.load(vocab8000_path).engine == tm.DEFAULT_ENGINE
    assert Vocab.load(vocab8000_path, engine="python").engine == "python"
    assert Vocab.load(vocab8000_path, engine="native").engine == "native"
    assert "engine='native'" in repr(Vocab.load(vocab8000_path, engine="native"))
    with pytest.raises(ValueError, match="engine must be"):
        Vocab.load(vocab8000_path, engine="go")


def test_environment_variable_forces_pure_engine(vocab8000_path, tmp_path):
    script = "from stentor_hub.tokenmonster import Vocab; import sys; print(Vocab.load(sys.argv[1]).engine)"
    for value, want in (("python", "python"), ("", "native")):
        env = dict(os.environ, **{tm.ENGINE_ENV: value})
        result = subprocess.run([sys.executable, "-c", script, str(vocab8000_path)], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == want


def test_pickle_keeps_the_engine(pairs):
    import pickle

    for native, python in pairs.values():
        assert pickle.loads(pickle.dumps(native)).engine == "native"
        assert pickle.loads(pickle.dumps(python)).engine == "python"


# ---------------------------------------------------------------------------------------
# Differential: native against pure Python

# code points from every plane worth testing: ASCII, Latin, combining marks, CJK, emoji, code
# points assigned after Unicode 13, private use, noncharacters, DEL and C0 controls
_RANGES = [(0x20, 0x7F), (0x00, 0x20), (0x7F, 0x80), (0xA0, 0x250), (0x300, 0x370), (0x370, 0x530), (0x600, 0x900),
           (0x1AB0, 0x1AD0), (0x2000, 0x2070), (0x3040, 0x3100), (0x4E00, 0x4E80), (0xAC00, 0xAC40),
           (0xFE00, 0xFE10), (0xFFF0, 0x10000), (0x1F300, 0x1F700), (0x1E030, 0x1E090), (0x10000, 0x10FFFF)]


def _random_text(rng: random.Random, max_items: int = 24) -> str:
    out = []
    for _ in range(rng.randrange(0, max_items)):
        r = rng.random()
        if r < 0.005:
            out.append("a" + "\u0301" * rng.randrange(25, 40))  # around the CGJ threshold (SPEC §3.2)
        elif r < 0.45:
            out.append(rng.choice(["the", " ", "  ", "The", "QUICK", "don't", "won\u2019t", "1,000.5", "x2", ". ", ", ", "\n",
                                   "caf\u00e9", "e\u0301", "\x7f", "*", "'"]))
        else:
            lo, hi = rng.choice(_RANGES)
            c = rng.randrange(lo, hi)
            if 0xD800 <= c <= 0xDFFF:
                c = 0xFFFD
            out.append(chr(c))
    return "".join(out)


def _random_bytes(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randrange(0, 8)):
        r = rng.random()
        if r < 0.3:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6))))  # mostly invalid UTF-8
        elif r < 0.5:
            parts.append(rng.choice([b"\xc3", b"\xe6\x97", b"\xf0\x9f\x98", b"\x80\x80", b"\xed\xa0\x80", b"\xff", b"\x7f"]))
        else:
            parts.append(_random_text(rng, 8).encode("utf-8"))
    return b"".join(parts)


N_RANDOM = 20_000  # per vocabulary


def test_native_matches_pure_on_random_inputs(pairs, shared):
    """20,000 inputs per vocabulary, a third each random Unicode, random bytes (invalid UTF-8
    included) and slices of real prose, every result (ids, missing, normalized, decode) equal."""
    corpus = (shared / "corpora" / "gutenberg_train.txt").read_text(encoding="utf-8")[:2_000_000]
    corpus += (shared / "corpora" / "wikitext2_test.txt").read_text(encoding="utf-8")[:1_000_000]
    for name, (native, python) in pairs.items():
        rng = random.Random(name)
        mismatches = []
        kinds = {"unicode": 0, "bytes": 0, "corpus": 0}
        for k in range(N_RANDOM):
            kind = ("unicode", "bytes", "corpus")[k % 3]
            if kind == "unicode":
                text = _random_text(rng)
            elif kind == "bytes":
                text = _random_bytes(rng)
            else:
                start = rng.randrange(len(corpus) - 300)
                text = corpus[start : start + rng.randrange(1, 300)]
            kinds[kind] += 1
            got, want = native.encode_detailed(text), python.encode_detailed(text)
            # encode() of text is one compiled call (normalization and scan), its own path
            if got != want or native.encode(text) != want.ids or native.decode(got.ids) != python.decode(want.ids):
                mismatches.append((kind, repr(text)[:80]))
        assert sum(kinds.values()) == N_RANDOM and min(kinds.values()) > N_RANDOM // 4
        assert not mismatches, (name, len(mismatches), mismatches[:5])


def test_native_normalizer_matches_pure_for_every_header(shared):
    """The compiled normalizer with and without NFD, with capcode 0 and 1 (synthetic
    vocabularies): the same normalized bytes and ids as the pure engine on 3,000 random texts
    each, marks and decomposable letters included."""
    _require_native()
    tokens = [bytes([b]) for b in b"\t\n abcdeilnorstuxyz.,!'0123456789"] + [
        b" the", b" cafe", b"e\xcc\x81", b"\xcc\x81", b"\xc3\xa9", b" a", b"re", b"ing", b" s", b"\x7f "]
    corpus = (shared / "corpora" / "wikitext2_test.txt").read_text(encoding="utf-8")[:200_000]
    for capcode in (0, 1):
        for normalization in (0, 1):
            raw = build_vocab(tokens, capcode=capcode, normalization=normalization)
            name = f"capcode {capcode}, normalization {normalization}"
            native, python = (Vocab.from_bytes(raw, name, engine=e) for e in ("native", "python"))
            rng = random.Random(name)
            for k in range(3000):
                if k % 2:
                    text = _random_text(rng)
                else:
                    start = rng.randrange(len(corpus) - 200)
                    text = corpus[start : start + rng.randrange(200)]
                want = python.encode_detailed(text)
                assert native.normalize(text) == want.normalized, (name, text)
                assert native.encode(text) == want.ids, (name, text)


def test_what_the_compiled_normalizer_hands_back(pairs):
    """Text the compiled pass does not cover goes through the pure normalization: a lone
    surrogate (the same UnicodeEncodeError), a run of over 30 combining marks (the CGJ of
    SPEC §3.2, inserted exactly where the pure engine puts it)."""
    for native, python in pairs.values():
        for text in ("ab\ud800cd", "\udfff", "x" + "\u0301" * 31 + "y", "a" + "\u0316\u0301" * 20):
            for vocab in (native, python):
                try:
                    results = (vocab.normalize(text), vocab.encode(text))
                except UnicodeEncodeError as e:
                    results = ("UnicodeEncodeError", e.start, e.end)
                if vocab is native:
                    got = results
                else:
                    assert got == results, (text, got, results)
        assert "\u034f".encode() in native.normalize("x" + "\u0301" * 31)
        assert "\u034f".encode() not in native.normalize("x" + "\u0301" * 30)


def test_native_matches_pure_on_whole_corpora(pairs, shared):
    """One long text each (the scan's GIL-free path; the pure engine's memo at scale)."""
    for corpus in ("wikitext2_test.txt", "gutenberg_val.txt"):
        text = (shared / "corpora" / corpus).read_text(encoding="utf-8")[:300_000]
        for name, (native, python) in pairs.items():
            assert native.encode_detailed(text) == python.encode_detailed(text), (corpus, name)


def test_native_decode_matches_pure_on_random_ids(pairs):
    rng = random.Random(7)
    for native, python in pairs.values():
        for _ in range(3000):
            ids = [rng.randrange(-3, native.n_ids + 3) for _ in range(rng.randrange(0, 30))]
            if rng.random() < 0.3:
                ids.append(native.delete_id)
            assert native.decode(ids) == python.decode(ids), ids
            assert native.decode(iter(ids)) == python.decode(ids)
        assert native.decode([2**70, -(2**70)]) == python.decode([2**70, -(2**70)]) == b""


def test_native_stream_decoder_matches_pure_on_random_chunkings(pairs, shared):
    """2,000 random chunkings per vocabulary of encoded text (multi-byte characters split
    across tokens, delete markers) and of random ids: every chunk's output and the flush equal."""
    corpus = (shared / "corpora" / "wikitext2_test.txt").read_text(encoding="utf-8")[:500_000]
    for name, (native, python) in pairs.items():
        rng = random.Random(f"stream {name}")
        for k in range(2000):
            if k % 2:
                ids = native.encode(_random_text(rng) + corpus[(s := rng.randrange(len(corpus) - 300)) : s + rng.randrange(300)])
            else:
                ids = [rng.randrange(native.n_ids + 2) for _ in range(rng.randrange(40))]
            chunks, at = [], 0
            while at < len(ids):
                step = rng.choice([1, 1, 2, 3, 7, 50])
                chunks.append(ids[at : at + step])
                at += step
            dn, dp = native.decoder(), python.decoder()
            for chunk in chunks:
                assert dn.decode(chunk) == dp.decode(chunk), (name, chunks)
            assert dn.flush() == dp.flush(), (name, chunks)


def test_native_collapse_whitespace_is_the_split():
    """The data cleaning's compiled whitespace collapse against " ".join(text.split()): every
    code point alone and between others (each kind of str: ASCII, Latin-1, 2 and 4 bytes; the
    result narrowed as Python narrows), random strings of whitespace and text, non-str refused."""
    _require_native()
    from stentor_hub._native._tokenmonster import collapse_whitespace
    from stentor_hub.recipes.data import collapse_whitespace_python as split_form

    for c in range(sys.maxunicode + 1):
        ch = chr(c)
        for text in (ch, f"a{ch}b", f" {ch} ", ch * 3, f"\u3000{ch}"):
            out = collapse_whitespace(text)
            assert out == split_form(text) and sys.getsizeof(out) == sys.getsizeof(split_form(text)), hex(c)
    pool = [" ", "\t", "\n", "\r\n", "\x0b", "\x1c", "\x85", "\u00a0", "\u2028", "\u3000", "a", "\u00e9",
            "\u20ac", "\U0001F600", "\ud800"]
    rng = random.Random(3)
    for _ in range(50_000):
        text = "".join(rng.choice(pool) for _ in range(rng.randrange(16)))
        assert collapse_whitespace(text) == split_form(text), repr(text)
    with pytest.raises(TypeError, match="takes str, not bytes"):
        collapse_whitespace(b"a b")


def test_data_cleaning_uses_the_engine_it_is_given():
    """clean_text collapses with the compiled form unless STENTOR_TOKENMONSTER=python."""
    _require_native()
    from stentor_hub.recipes import data

    expected = "collapse_whitespace_python" if FORCED_PYTHON else "collapse_whitespace"
    assert data.collapse_whitespace.__name__ == expected


# ---------------------------------------------------------------------------------------
# Threads


def test_threads_encoding_at_once_give_the_same_ids(pairs, shared):
    """Several threads share one Vocab (the compiled scan runs without the GIL)."""
    text = (shared / "corpora" / "gutenberg_val.txt").read_text(encoding="utf-8")
    pieces = [text[k : k + 40_000] for k in range(0, min(len(text), 640_000), 40_000)]
    for native, _ in pairs.values():
        want = [native.encode(p) for p in pieces]
        results: dict[int, list] = {}
        errors = []

        def work(worker: int) -> None:
            try:
                order = list(range(len(pieces)))
                random.Random(worker).shuffle(order)
                results[worker] = {k: native.encode(pieces[k]) for k in order}
            except Exception as e:  # reported below, not lost in the thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(results) == 6
        for got in results.values():
            assert [got[k] for k in range(len(pieces))] == want


# ---------------------------------------------------------------------------------------
# Unicode 13


def _both(vocab8000_path):
    engines = ["python"] + (["native"] if "native" in tm.ENGINES else [])
    return [Vocab.load(vocab8000_path, engine=e) for e in engines]


@pytest.mark.parametrize("cp", [0x1AC1, 0x1AC7, 0x1ACA, 0x0870])
def test_code_points_after_unicode_13_are_unassigned(vocab8000_path, cp):
    """U+1AC1/1AC7/1ACA (combining marks in Unicode 14) and U+0870 (an Arabic letter in 14) are
    unassigned in Unicode 13: no category class (so a following letter gets a capcode marker),
    combining class 0 (so NFD does not move marks across them)."""
    ch = chr(cp)
    assert tm._unassigned_in_13(cp) and tm._combining13(ch) == 0 and tm._CLASSES[cp] == "."
    assert tm._nfd13("a\u0316" + ch + "\u0301\u0316") == "a\u0316" + ch + "\u0316\u0301"
    for vocab in _both(vocab8000_path):
        # a letter after the code point gets a marker, as after any "other" character
        assert vocab.normalize("x" + ch + "y") == ("\x7f x" + ch + "\x7f y").encode("utf-8"), vocab.engine
        # canonical ordering stops at it: the mark after it stays after it
        assert vocab.normalize(" a" + ch + "\u0316") == (" a" + ch + "\u0316").encode("utf-8"), vocab.engine
        assert vocab.decode(vocab.encode(" b" + ch + "\u0301")) == (" b" + ch + "\u0301").encode("utf-8")
    if unicodedata.unidata_version >= "14":
        # what this Python's own tables would have done instead
        assert unicodedata.category(ch)[0] in "LM"


def test_unicode13_nfd_equals_running_nfd_without_later_code_points():
    rng = random.Random(13)
    checked = 0
    for _ in range(5000):
        text = _random_text(rng)
        if any(tm._unassigned_in_13(ord(c)) for c in text):
            continue
        assert tm._nfd13(text) == unicodedata.normalize("NFD", text)
        checked += 1
    assert checked > 1000


def test_unicode13_table_is_well_formed():
    import stentor_hub.remote.unicode13 as table

    assert table.UNICODE_VERSION == "13.0.0"
    ranges = table.UNASSIGNED_IN_13
    assert all(a <= b for a, b in ranges) and all(ranges[k][1] < ranges[k + 1][0] for k in range(len(ranges) - 1))
    # every listed code point is assigned in this Python's tables iff this Python is past 13
    # and the code point's version is one it knows; none is assigned in a Unicode 13 Python
    assigned = sum(unicodedata.category(chr(c)) != "Cn" for a, b in ranges for c in range(a, b + 1))
    if unicodedata.unidata_version.startswith("13."):
        assert assigned == 0
    else:
        assert assigned > 0


def test_exported_tokenizer_carries_the_table_and_works_without_stentor_hub(tokenizer_dir, vocab8000_path, tmp_path):
    """The folder that goes to the Hub has unicode13.py; loaded by AutoTokenizer in a process
    where stentor_hub cannot be imported, it runs the pure engine and gives the same ids."""
    assert (tokenizer_dir / "unicode13.py").is_file()
    texts = ["x\u1ac1y \u0870a caf\u00e9", "Hello world", "a\u0316\u1ac7\u0301\u0316 \u1aca", "The QUICK brown fox"]
    script = r"""
import importlib.abc, json, sys
class NoStentorHub(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "stentor_hub" or name.startswith("stentor_hub."):
            raise ImportError("stentor_hub is hidden in this test")
sys.meta_path.insert(0, NoStentorHub())
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
texts = json.loads(sys.argv[2])
print(json.dumps({"engine": tok._vocab.engine, "ids": [tok.encode(t, add_special_tokens=False) for t in texts]}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH="")
    result = subprocess.run([sys.executable, "-c", script, str(tokenizer_dir), json.dumps(texts)], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["engine"] == "python"
    for vocab in _both(vocab8000_path):
        assert got["ids"] == [vocab.encode(t) for t in texts], vocab.engine


def test_remote_code_uses_native_engine_when_installed(tokenizer):
    """In this process stentor-hub (with its compiled scanner) is installed: the tokenizer
    loaded through AutoTokenizer from the exported folder uses it."""
    _require_native()
    assert tokenizer._vocab.engine == tm.DEFAULT_ENGINE


# Run by other Python interpreters: the remote code's pure engine, stdlib only, as the Hub ships it
_IDS_ON_THIS_PYTHON = r"""
import hashlib, json, os, random, sys, unicodedata
os.environ["STENTOR_TOKENMONSTER"] = "python"
sys.path.insert(0, sys.argv[1])
import remote_code.tokenmonster as tm
digest, exact = hashlib.sha256(), 0
later = [0x1AC1, 0x1AC7, 0x1ACA, 0x0870, 0x0898, 0x1DFA, 0x2FFC, 0x1F6DD, 0x1FAE8, 0x31350, 0x0CF3]
pool = [chr(c) for c in later] + list("aeiouAEIOU \u00e9\u00fc\u00f1\u0301\u0316\u0308 \ud55c\uad6d\u00c5\u212b")
vocab = tm.Vocab.load(sys.argv[2])
for line in open(sys.argv[3], encoding="utf-8"):
    record = json.loads(line)
    if "text" in record:
        ids = vocab.encode(record["text"])
        exact += ids == record["ids"]
        digest.update(json.dumps(ids).encode())
rng = random.Random(13)
for _ in range(3000):
    digest.update(json.dumps(vocab.encode("".join(rng.choice(pool) for _ in range(rng.randint(1, 24))))).encode())
print(json.dumps({"unicode": unicodedata.unidata_version, "exact": exact, "digest": digest.hexdigest()}))
"""


def _pythons() -> dict[str, str]:
    """Python 3.10-3.13 interpreters on this machine (pyenv's, or on PATH), by version."""
    import glob
    import shutil

    found = {}
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for minor in ("3.10", "3.11", "3.12", "3.13"):
        candidates = sorted(glob.glob(os.path.join(root, "versions", f"{minor}.*", "bin", "python")))
        candidates += [p for p in [shutil.which(f"python{minor}")] if p]
        for path in candidates:
            if subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0:
                found[minor] = path
                break
    return found


def test_the_same_ids_on_python_3_10_to_3_13(shared):
    """Python 3.10's unicodedata is Unicode 13, the reference's tables; 3.11-3.13 carry 14-15.1.
    On each, the shipped pure engine gives every vector's ids and the same ids for text full of
    code points assigned after Unicode 13."""
    from stentor_hub import remote_code

    pythons = _pythons()
    assert "3.10" in pythons and len(pythons) >= 3, (
        f"found Python {sorted(pythons)}; this test needs 3.10 (Unicode 13) and two later ones "
        "(e.g. `pyenv install 3.10 3.12 3.13`)")
    vocab = shared / "tokenmonster" / "vocabs" / "english-8000-strict-nocapcode-v1.vocab"
    vectors = shared / "tokenmonster" / "vectors" / "tokenize_english-8000-strict-nocapcode-v1.jsonl"
    results = {}
    for minor, python in pythons.items():
        run = subprocess.run([python, "-c", _IDS_ON_THIS_PYTHON, str(remote_code.folder().parent), str(vocab), str(vectors)],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"Python {minor}: {run.stderr[-2000:]}"
        results[minor] = json.loads(run.stdout)
    n_vectors = sum(1 for line in vectors.open(encoding="utf-8") if '"text"' in line)
    assert all(r["exact"] == n_vectors for r in results.values()), results
    assert results["3.10"]["unicode"] == "13.0.0"
    assert len({r["digest"] for r in results.values()}) == 1, results

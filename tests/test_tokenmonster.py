"""The pure-Python TokenMonster engine against the Go reference's golden vectors, a naive
port of the spec, Hypothesis properties and fuzzed vocabulary files."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import random
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from stentor_hub.remote.tokenmonster import _nfd13, _unassigned_in_13
from stentor_hub.tokenmonster import StreamDecoder, UnsupportedVocabError, Vocab
from tokenmonster_reference import tokenize_reference
from vocab_builder import build_vocab

VOCABS = ["english-8000-strict-nocapcode-v1", "english-1024-strict-nocapcode-v1"]


@pytest.fixture(scope="module")
def vocabs(shared) -> dict[str, Vocab]:
    return {name: Vocab.load(shared / "tokenmonster" / "vocabs" / f"{name}.vocab") for name in VOCABS}


def _records(shared: Path, filename: str) -> list[dict]:
    path = shared / "tokenmonster" / "vectors" / filename
    # split on "\n" only: str.splitlines() would also split at U+2028 inside JSON strings
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def _field_bytes(record: dict, field: str) -> bytes:
    """Exact bytes of a vector field: ``<field>_hex`` when present (non-UTF-8 values)."""
    if field + "_hex" in record:
        return bytes.fromhex(record[field + "_hex"])
    return record[field].encode("utf-8")


@pytest.mark.parametrize(
    "filename",
    [f"tokenize_{name}.jsonl" for name in VOCABS] + ["tokenize_bytes_invalid_utf8.jsonl"],
)
def test_tokenize_vectors(shared, vocabs, filename):
    records = _records(shared, filename)
    assert len(records) >= 16
    failures = []
    for record in records:
        vocab = vocabs[record["vocab"]]
        text = bytes.fromhex(record["text_hex"]) if "text_hex" in record else record["text"]
        for attempt in ("cold", "memoised"):  # the second call runs on the memo
            ids, missing, normalized = vocab.encode_detailed(text)
            got = (ids, missing, normalized, vocab.decode(ids))
            want = (record["ids"], record["missing"], _field_bytes(record, "normalized"), _field_bytes(record, "decoded"))
            if got != want:
                failures.append((record.get("category"), repr(text)[:60], attempt))
    assert not failures, failures


def test_decode_vectors(shared, vocabs):
    records = _records(shared, "decode.jsonl")
    assert len(records) == 70
    for record in records:
        assert vocabs[record["vocab"]].decode(record["ids"]) == bytes.fromhex(record["decoded_hex"]), record["note"]


def test_stream_decode_vectors(shared, vocabs):
    records = _records(shared, "stream_decode.jsonl")
    assert len(records) == 34
    for record in records:
        vocab = vocabs[record["vocab"]]
        decoder = vocab.decoder()
        outputs = [decoder.decode(chunk) for chunk in record["chunks"]]
        flushed = decoder.flush()
        if record["reference_panics"]:
            # Deviation (documented): where the reference crashes we hold back the bytes of the
            # unfinished character; nothing is lost or duplicated.
            all_ids = [i for chunk in record["chunks"] for i in chunk]
            assert b"".join(outputs) + flushed == vocab.decode(all_ids), record["note"]
        else:
            assert [o.hex() for o in outputs] == record["outputs_hex"], record["note"]
            assert flushed.hex() == record["flush_hex"], record["note"]


def test_stream_decoder_holds_incomplete_utf8(vocabs):
    vocab = vocabs[VOCABS[0]]
    ids = vocab.encode("日本語 ok")
    decoder = vocab.decoder()
    pieces = [decoder.decode([i]) for i in ids] + [decoder.flush()]
    assert b"".join(pieces) == vocab.decode(ids) == "日本語 ok".encode()
    assert isinstance(decoder, StreamDecoder)


# ---------------------------------------------------------------------------------------
# Properties

_words = st.sampled_from(
    "the of and to a in was he it that his her you as had with for she not at but be my on have him is said me "
    "which by so this all from they no were if would or when what there been one could very an who them Mr "
    "we now more out do are up their your will little than then some into any well much about time know "
    "should man did like upon such never only good how before other see must am own come down say after think "
    "made might being Mrs again great two can go over too here came went Elizabeth Darcy bookkeeper café naïve "
    "résumé 1,000.50 3rd x2 don't it's won’t 日本語 😀 Ελληνικά Привет".split()
)
_punct = st.sampled_from([" ", " ", " ", ", ", ". ", "; ", " — ", "\n", "\n\n", '"', "'", "(", ")", "  ", "\t", "-", ":", "?", "!"])
_english = st.lists(st.one_of(_words, _punct), min_size=0, max_size=40).map("".join)
_any_text = st.one_of(_english, st.text(max_size=60), st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=80))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_any_text, vocab_index=st.integers(0, 1))
def test_engine_matches_naive_port_of_spec(vocabs, text, vocab_index):
    """The memoised scanner gives exactly what a direct port of SPEC §5.3 gives."""
    vocab = vocabs[VOCABS[vocab_index]]
    ids, missing, normalized = vocab.encode_detailed(text)
    assert (ids, missing) == tokenize_reference(vocab, normalized)
    assert vocab.encode(text) == ids  # and again from the memo


@settings(max_examples=100, deadline=None)
@given(parts=st.lists(_english, min_size=2, max_size=5))
def test_memo_is_exact_across_texts(vocabs, parts):
    """Texts that share pieces reuse memo entries; results stay those of the reference."""
    vocab = vocabs[VOCABS[0]]
    for text in parts + ["".join(parts), " ".join(parts)]:
        normalized = vocab.normalize(text)
        assert vocab.encode(text) == tokenize_reference(vocab, normalized)[0]


# Runs of spaces, punctuation, digits and short words: where the scores of competing branches
# come closest, so a wrong shortcut in the scanner shows up first (". . .", "* * *", "d'ye",
# "I'm", "1,18").
_dense = st.lists(
    st.sampled_from([" ", "  ", ".", " .", "*", " *", ",", "'", '"', "_", "-", "--", "?", "\n", "1", "8", "0", "d", "ye", "I", "m", "The", "s"]),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=_dense, vocab_index=st.integers(0, 1))
def test_engine_matches_naive_port_on_dense_punctuation(vocabs, text, vocab_index):
    vocab = vocabs[VOCABS[vocab_index]]
    ids, missing, normalized = vocab.encode_detailed(text)
    assert (ids, missing) == tokenize_reference(vocab, normalized)


@pytest.mark.parametrize("corpus", ["wikitext2_test.txt", "gutenberg_train.txt"])
def test_engine_matches_naive_port_on_corpus_text(shared, corpus):
    """Real prose through fresh vocabularies, cut at random places. The scanner skips a
    look-ahead walk when score bounds already decide a step, and memoises segments under
    the bytes they read; both must agree with the direct port of SPEC §5.3 on every text."""
    path = shared / "corpora" / corpus
    with open(path, encoding="utf-8") as f:
        text = f.read(400_000)
    rng = random.Random(corpus)
    for name in VOCABS:
        vocab = Vocab.load(shared / "tokenmonster" / "vocabs" / f"{name}.vocab")
        mismatches = []
        for _ in range(40):
            start = rng.randrange(len(text) - 2500)
            piece = text[start : start + rng.randrange(1, 2500)]
            for attempt in ("cold", "memoised"):
                ids, missing, normalized = vocab.encode_detailed(piece)
                if (ids, missing) != tokenize_reference(vocab, normalized):
                    mismatches.append((name, start, len(piece), attempt))
        assert not mismatches, mismatches


def _max_combining_run(text: str) -> int:
    longest = run = 0
    for ch in unicodedata.normalize("NFD", text):
        run = run + 1 if unicodedata.combining(ch) else 0
        longest = max(longest, run)
    return longest


# Characters whose bytes the 8000 vocabulary covers: everything but C0 controls other than
# tab/newline/CR, DEL, and surrogates.
_covered_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(map(chr, [*range(0, 9), 11, 12, *range(14, 32), 127]))),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(_english, _covered_text))
def test_decode_encode_round_trip_is_nfd(vocabs, text):
    assume(_max_combining_run(text) <= 30)  # longer runs get a CGJ inserted (SPEC §3.2)
    vocab = vocabs[VOCABS[0]]
    ids, missing, _ = vocab.encode_detailed(text)
    assert missing == 0
    # NFD as Unicode 13 has it (the reference's tables): this Python's own NFD wherever the
    # text has no code point assigned after Unicode 13 (test_tokenmonster_engines.py has those)
    want = unicodedata.normalize("NFD", text) if not any(_unassigned_in_13(ord(c)) for c in text) else _nfd13(text)
    assert vocab.decode(ids) == want.encode("utf-8")


def test_cgj_after_thirty_combining_marks(vocabs):
    vocab = vocabs[VOCABS[0]]
    text = "a" + "\u0301" * 35
    decoded = vocab.decode(vocab.encode(text)).decode("utf-8")
    assert decoded == "a" + "\u0301" * 30 + "\u034f" + "\u0301" * 5


def test_missing_bytes_are_counted_and_dropped(vocabs):
    vocab = vocabs[VOCABS[1]]  # the 1024 vocabulary lacks most bytes >= 0x80
    ids, missing, _ = vocab.encode_detailed("日本語 ok")
    assert missing == 6
    assert vocab.decode(ids) == b"\xa5\x9c\xac ok"


# ---------------------------------------------------------------------------------------
# Loading: corrupt, truncated, foreign and unsupported files


def test_load_errors_name_the_file(tmp_path, vocab8000_path):
    good = vocab8000_path.read_bytes()
    cases = {
        "empty.vocab": b"",
        "short.vocab": good[:10],
        "truncated.vocab": good[: len(good) // 2],
        "trailing.vocab": good + b"\x00",
        "foreign.vocab": b"PK\x03\x04" + bytes(200),
        "text.vocab": b"this is not a vocabulary file at all, just text\n" * 20,
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError) as info:
            Vocab.load(path)
        assert name in str(info.value) and "not a valid TokenMonster" in str(info.value), name


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Vocab.load(tmp_path / "nope.vocab")


def _load_or_value_error(buf: bytes) -> None:
    try:
        vocab = Vocab.from_bytes(buf, name="fuzz.vocab")
    except ValueError as e:
        assert "fuzz.vocab" in str(e)
        return
    # whatever loads must also tokenize and decode without crashing
    ids = vocab.encode("Hello world, 123 café\n")
    vocab.decode(ids)
    vocab.decoder().decode(ids)


@settings(max_examples=300, deadline=None)
@given(buf=st.binary(max_size=600))
def test_fuzz_random_bytes(buf):
    _load_or_value_error(buf)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_vocab(vocab1024_path, data):
    buf = bytearray(vocab1024_path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "header"]))
        pos = data.draw(st.integers(0, max(len(buf) - 1, 0)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del buf[pos : pos + data.draw(st.integers(1, 8))]
        elif kind == "header" and len(buf) >= 24:
            buf[data.draw(st.integers(0, 23))] = data.draw(st.integers(0, 255))
    _load_or_value_error(bytes(buf))


def test_unsupported_features_are_refused(tmp_path):
    tokens = [b"a", b"b", b" ", b" ab"]
    for label, kwargs in {
        "full capcode": dict(capcode=2),
        "charset 0": dict(charset=0),
        "charset 2": dict(charset=2),
        "lowercase normalization": dict(normalization=3),
    }.items():
        path = tmp_path / f"{label.replace(' ', '_')}.vocab"
        path.write_bytes(build_vocab(tokens, **kwargs))
        with pytest.raises(UnsupportedVocabError, match=path.name):
            Vocab.load(path)


# ---------------------------------------------------------------------------------------
# Synthetic vocabularies: UNK and capcode level 0

_SYNTHETIC = [bytes([b]) for b in b"\t\n abcdehlorstwxyz.,!'0123456789"] + [
    b" a", b" b", b" the", b" hello", b" world", b"he", b"ll", b"llo", b"wor", b"ld", b" wor", b"er", b"st", b" test",
    b"ing", b" s", b" t", b" w", b" x", b"12", b"00",
]


@pytest.mark.parametrize("capcode", [0, 1])
@pytest.mark.parametrize("unk", [False, True])
def test_synthetic_vocab_matches_reference(capcode, unk):
    vocab = Vocab.from_bytes(build_vocab(_SYNTHETIC, capcode=capcode, unk=unk), name="synthetic.vocab")
    rnd = random.Random(capcode * 2 + unk)
    alphabet = "abcdehlorstwxyz .,!'\n0123456789QZ€"
    for _ in range(300):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 40)))
        ids, missing, normalized = vocab.encode_detailed(text)
        assert (ids, missing) == tokenize_reference(vocab, normalized)
        if unk:
            assert ids.count(vocab.unk_id) == missing
        else:
            assert vocab.unk_id is None


def test_capcode0_has_no_markers():
    vocab = Vocab.from_bytes(build_vocab(_SYNTHETIC, capcode=0), name="capcode0.vocab")
    assert vocab.delete_id is None
    assert vocab.normalize("hello World") == b"hello World"
    assert vocab.decode(vocab.encode("hello world")) == b"hello world"


def test_unk_decodes_to_nothing():
    vocab = Vocab.from_bytes(build_vocab(_SYNTHETIC, unk=True), name="unk.vocab")
    ids, missing, _ = vocab.encode_detailed("hello QQ world")
    assert missing == 2 and ids.count(vocab.unk_id) == 2
    assert vocab.decode(ids) == b"hello  world"


# ---------------------------------------------------------------------------------------
# API, pickling and processes


def test_public_api(vocabs):
    vocab = vocabs[VOCABS[0]]
    assert vocab.vocab_size == len(vocab) == 8000 and vocab.n_ids == 8000
    assert vocab.delete_id == 98 and vocab.unk_id is None
    assert vocab.encode("Hello world") == [98, 1637, 593, 3963]
    assert vocab.encode(b"Hello world") == vocab.encode("Hello world")
    assert vocab.id_to_token(593) == b"\x7f lo" and vocab.token_to_id(b"lo") == 593 == vocab.token_to_id(b"\x7f lo")
    assert vocab.token_to_id(b"no such token, surely") is None
    with pytest.raises(IndexError):
        vocab.id_to_token(8000)
    with pytest.raises(TypeError, match="str or bytes"):
        vocab.encode(123)
    assert vocab.decode([98, 1637, 99999, -1, 593]) == b"Hello"  # out-of-range ids are skipped


def test_pickle_round_trip(vocabs):
    vocab = vocabs[VOCABS[0]]
    vocab.encode("warm the memo up")
    clone = pickle.loads(pickle.dumps(vocab))
    text = "Pickled vocabularies give the same ids: café, 日本語, 3rd."
    assert clone.encode(text) == vocab.encode(text)
    assert len(pickle.dumps(vocab)) < 2 * len(vocab._raw)  # the file bytes, not the memo


def _encode_in_child(args):
    vocab, text = args
    return vocab.encode(text)


def test_forked_and_spawned_workers(vocabs):
    vocab = vocabs[VOCABS[0]]
    texts = ["Forked workers tokenize too.", "Dies ist ein Test: ü ö ä ß.", "😀 emoji and 日本語"] * 4
    expected = [vocab.encode(t) for t in texts]
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            assert pool.map(_encode_in_child, [(vocab, t) for t in texts]) == expected, method

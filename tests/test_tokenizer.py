"""StentorTokenizer through the real AutoTokenizer (trust_remote_code), on whichever
transformers is installed: CI runs this file on 5.x and on 4.57."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import pickle
import random
import subprocess
import sys
import threading
import unicodedata
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from stentor_hub._resources import resource_dir
from stentor_hub.tokenmonster import Vocab


def _vector_texts(shared: Path) -> list[str]:
    path = shared / "tokenmonster" / "vectors" / "tokenize_english-8000-strict-nocapcode-v1.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return [r["text"] for r in records]


@pytest.fixture(scope="module")
def engine(vocab8000_path) -> Vocab:
    return Vocab.load(vocab8000_path)


def test_ids_and_specials(tokenizer):
    assert type(tokenizer).__name__ == "StentorTokenizer"
    assert len(tokenizer) == 8064 and tokenizer.vocab_size == 8000
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("</s>", 8000)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<s>", 8001)
    assert tokenizer.pad_token_id == 8000
    assert tokenizer.convert_tokens_to_ids("<|reserved_0|>") == 8002
    assert tokenizer.convert_tokens_to_ids("<|reserved_61|>") == 8063
    assert len(tokenizer.get_vocab()) == 8064


def test_same_ids_as_engine(tokenizer, engine, shared):
    for text in _vector_texts(shared):
        if "<" in text and ">" in text:
            continue  # special-token strings are covered below
        assert tokenizer.encode(text) == engine.encode(text), text[:50]
        assert tokenizer(text)["input_ids"] == engine.encode(text)


def test_no_bos_eos_unless_asked(tokenizer, tokenizer_dir):
    from transformers import AutoTokenizer

    ids = tokenizer.encode("Hello world")
    assert ids == [98, 1637, 593, 3963]
    with_both = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=True, add_bos_token=True, add_eos_token=True)
    assert with_both.encode("Hello world") == [8001] + ids + [8000]
    assert with_both.encode("Hello world", add_special_tokens=False) == ids


def test_special_token_strings(tokenizer):
    ids = tokenizer.encode("Hello world</s><s>again")
    assert ids[:4] == [98, 1637, 593, 3963] and ids[4:6] == [8000, 8001]
    assert tokenizer.decode(ids) == "Hello world</s><s>again"
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hello worldagain"
    split = tokenizer("Hello world</s>", split_special_tokens=True)["input_ids"]
    assert 8000 not in split and tokenizer.decode(split) == "Hello world</s>"


def test_batches_padding_truncation_tensors(tokenizer):
    texts = ["Short one.", "A somewhat longer sentence, with more tokens in it."]
    lengths = [len(tokenizer.encode(t)) for t in texts]
    right = tokenizer(texts, padding=True, return_tensors="pt")
    assert right["input_ids"].shape == (2, max(lengths)) and right["input_ids"].dtype == torch.long
    assert right["attention_mask"].sum(dim=1).tolist() == lengths
    assert right["input_ids"][0, lengths[0]:].eq(tokenizer.pad_token_id).all()
    left_tok = pickle.loads(pickle.dumps(tokenizer))
    left_tok.padding_side = "left"
    left = left_tok(texts, padding=True, return_tensors="pt")
    assert left["input_ids"][0, -lengths[0]:].tolist() == tokenizer.encode(texts[0])
    assert left["attention_mask"][0, : max(lengths) - lengths[0]].eq(0).all()
    truncated = tokenizer(texts, truncation=True, max_length=4)
    assert [len(ids) for ids in truncated["input_ids"]] == [min(4, n) for n in lengths]
    assert truncated["input_ids"][1] == tokenizer.encode(texts[1])[:4]


def test_offsets_are_refused_clearly(tokenizer):
    for call in (lambda: tokenizer("x y", return_offsets_mapping=True), lambda: tokenizer(["x", "y"], return_offsets_mapping=True)):
        with pytest.raises(NotImplementedError, match="return_offsets_mapping is not supported by StentorTokenizer"):
            call()


def test_chat_template(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\n"
    no_prompt = tokenizer.apply_chat_template(messages, tokenize=False)
    assert no_prompt == "<|system|>\nBe brief.\n<|user|>\nHi there\n"
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert list(ids) == tokenizer.encode(text)


def test_decode_renders_invalid_utf8_as_replacement(tokenizer):
    assert tokenizer.decode([199]) == "\ufffd"  # the lone byte 0xE6
    emoji = tokenizer.encode("😀")
    assert tokenizer.decode(emoji) == "😀" and tokenizer.decode(emoji[:2]) == "\ufffd"


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=60))
def test_decode_encode_round_trip_is_nfd(tokenizer, text):
    """The docstring's promise: decode(encode(s)) == NFD(s) by Unicode 13's tables, for covered
    text without DEL and without runs of more than 30 combining marks. That is this Python's NFD
    unless the text holds a code point assigned after Unicode 13 (a starter there: U+10F83, a
    combining mark since 14, is not reordered before U+0300), which Unicode 13's NFD leaves in place."""
    import stentor_hub.remote.tokenmonster as tm

    assume(all(run <= 30 for run in _combining_runs(text)))
    assume(not any(tok in text for tok in tokenizer.get_added_vocab()))
    later = [c for c in text if tm._unassigned_in_13(ord(c)) and unicodedata.category(c) != "Cn"]
    expected = tm._nfd13(text) if later else unicodedata.normalize("NFD", text)
    assert tokenizer.decode(tokenizer.encode(text)) == expected


def test_round_trip_of_a_mark_assigned_after_unicode_13(tokenizer):
    """The example Hypothesis found: U+10F83 is unassigned in Unicode 13, a starter, so NFD leaves
    it after U+0300 (Unicode 14 made it a mark of class 220, and its NFD moves it before U+0300)."""
    assert tokenizer.decode(tokenizer.encode("U\u0300\U00010f83")) == "U\u0300\U00010f83"
    assert tokenizer.decode(tokenizer.encode("\u00c5")) == "A\u030a"


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), data=st.data())
def test_decode_of_a_prefix_is_a_prefix(tokenizer, text, data):
    """What streaming relies on: decoding the first k ids gives a prefix of decoding them all,
    up to what the cut leaves unfinished (a pending delete marker or an incomplete UTF-8
    character, each a U+FFFD), which the next tokens replace."""
    ids = tokenizer.encode(text)
    cut = data.draw(st.integers(0, len(ids)))
    head, whole = tokenizer.decode(ids[:cut]), tokenizer.decode(ids)
    assert whole.startswith(head.rstrip("\ufffd"))


def _combining_runs(text: str):
    run = 0
    for ch in unicodedata.normalize("NFD", text):
        run = run + 1 if unicodedata.combining(ch) else 0
        yield run


def _streamed(tokenizer, prompt, ids, iterator: bool, **kwargs) -> str:
    """What a streamer shows when generate() feeds it: the prompt in one call, then one
    token per call."""
    from transformers import TextIteratorStreamer, TextStreamer

    def feed(streamer):
        if prompt:
            streamer.put(torch.tensor([prompt]))
        for token_id in ids:
            streamer.put(torch.tensor([token_id]))
        streamer.end()

    if iterator:
        streamer = TextIteratorStreamer(tokenizer, **kwargs)
        pieces = []
        reader = threading.Thread(target=lambda: pieces.extend(streamer))
        reader.start()
        feed(streamer)
        reader.join(timeout=30)
        return "".join(pieces)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        feed(TextStreamer(tokenizer, **kwargs))
    return out.getvalue()[:-1]  # TextStreamer ends with a newline of its own


_STREAMING_TEXTS = [
    "Ünïcödé spans tokens: 日本語, 😀👍🏽, 한국어.\nNew line, then 🍕!",
    "Z̴̡̢a̷͈͠l̸̰̾g̶̱̈́o̵̡͝ text: é è ê ë ē ĕ ė ę ě, Ångström, naïve façade, Ǆ ǅ ǆ, ﬁ ligature.",
    "한국어 문장은 자모로 분해됩니다. 안녕하세요, 세계!\n\n둘째 줄: 가나다라마바사.",
    "Family 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tones 👋🏻👋🏿, keycaps 1️⃣#️⃣, hearts ❤️‍🔥.",
    "line one\n\n\nline four\r\nwindows\n\ttabbed\n  indented\n",
    "Vietnamese: Tiếng Việt có dấu, người, được, Đà Nẵng.\nGreek: ἀρχὴ ἥμισυ παντός.",
]


@pytest.mark.parametrize("skip_prompt", [False, True], ids=["with-prompt", "skip-prompt"])
@pytest.mark.parametrize("iterator", [False, True], ids=["TextStreamer", "TextIteratorStreamer"])
def test_streamers_print_the_full_decode(tokenizer, shared, iterator, skip_prompt):
    texts = [t for t in _vector_texts(shared) if len(t) < 2000][:60] + _STREAMING_TEXTS
    for text in texts:
        ids = tokenizer.encode(text)
        if len(ids) < 2:
            continue
        split = max(1, len(ids) // 3)  # generate() always puts a prompt first
        prompt, generated = ids[:split], ids[split:]
        expected = tokenizer.decode(generated if skip_prompt else ids)
        assert _streamed(tokenizer, prompt, generated, iterator, skip_prompt=skip_prompt) == expected, text[:40]
    for ids in _random_generations(tokenizer, random.Random(7), 200):
        prompt, generated = ids[:2], ids[2:]
        expected = tokenizer.decode(generated if skip_prompt else ids, skip_special_tokens=True)
        assert _streamed(tokenizer, prompt, generated, iterator, skip_prompt=skip_prompt, skip_special_tokens=True) == expected, ids


def _random_generations(tokenizer, rnd: random.Random, count: int) -> list[list[int]]:
    """Id sequences as a badly trained model might emit them: lone bytes, newlines, special
    ids, delete markers (even at the end), with the one structure every tokenized text has:
    a delete marker is followed by a token that starts with a space (the space it deletes)."""
    vocab = tokenizer._vocab
    spaced = [i for i in range(vocab.n_ids) if vocab.id_to_token(i).startswith(b" ")]
    sequences = []
    for _ in range(count):
        ids = []
        for _ in range(rnd.randint(3, 40)):
            if ids and ids[-1] < vocab.n_ids and vocab.id_to_token(ids[-1]).endswith(b"\x7f"):
                ids.append(rnd.choice(spaced))
            else:
                ids.append(rnd.choice([rnd.randrange(len(tokenizer)), rnd.randrange(vocab.n_ids), 98, 1, 3, 199, 130, 123]))
        sequences.append(ids)
    return sequences


def test_a_pending_delete_marker_decodes_as_unfinished_until_its_word_arrives(tokenizer):
    """The delete marker (id 98) glues the next word on; until it comes, the text ends with
    U+FFFD (unfinished, as a cut UTF-8 character), so it neither ends in a newline (where
    streamers restart) nor loses the marker."""
    ids = tokenizer.encode("one\n") + [98]
    assert tokenizer.decode(ids) == "one\n\ufffd"
    the = tokenizer.encode(" the")
    assert tokenizer._vocab.id_to_token(the[0]).startswith(b" ")
    assert tokenizer.decode(ids + the) == "one\nthe"


def test_pickle_round_trip(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    text = "Pickled tokenizers agree: café, 日本語 </s>."
    assert clone.encode(text) == tokenizer.encode(text) and clone.decode(clone.encode(text)) == tokenizer.decode(tokenizer.encode(text))


def test_datasets_map_with_two_processes(tokenizer, shared):
    import datasets

    lines = [l for l in (shared / "corpora" / "sample.txt").read_text(encoding="utf-8").split("\n") if l.strip()][:64]
    expected = [tokenizer.encode(l) for l in lines]
    dataset = datasets.Dataset.from_dict({"text": lines})
    mapped = dataset.map(lambda batch: tokenizer(batch["text"]), batched=True, batch_size=8, num_proc=2, load_from_cache_file=False)
    assert mapped["input_ids"] == expected


class _Lines(torch.utils.data.Dataset):
    def __init__(self, tokenizer, lines):
        self.tokenizer, self.lines = tokenizer, lines

    def __len__(self):
        return len(self.lines)

    def __getitem__(self, i):
        return self.tokenizer.encode(self.lines[i])


def test_dataloader_with_two_workers(tokenizer, shared):
    lines = [l for l in (shared / "corpora" / "sample.txt").read_text(encoding="utf-8").split("\n") if l.strip()][:32]
    loader = torch.utils.data.DataLoader(_Lines(tokenizer, lines), batch_size=None, num_workers=2)
    assert list(loader) == [tokenizer.encode(l) for l in lines]


def test_saved_folder_contents(tokenizer_dir, tmp_path, tokenizer):
    names = {p.name for p in tokenizer_dir.iterdir()}
    assert {"tokenmonster.vocab", "tokenizer_config.json", "tokenization_stentor.py", "tokenmonster.py"} <= names
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_stentor.StentorTokenizer"
    template = config.get("chat_template") or (tokenizer_dir / "chat_template.jinja").read_text()
    assert "<|{{ message['role'] }}|>" in template
    # saving what AutoTokenizer loaded writes an equivalent folder again
    tokenizer.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "tokenmonster.vocab").read_bytes() == (tokenizer_dir / "tokenmonster.vocab").read_bytes()
    assert (tmp_path / "again" / "tokenization_stentor.py").is_file()


_FRESH_PROCESS = """
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)
texts = json.load(open(sys.argv[2], encoding="utf-8"))
print(json.dumps([tok.encode(t) for t in texts]))
"""


def test_fresh_process_offline_load(tokenizer_dir, shared, tmp_path, engine):
    texts = _vector_texts(shared)
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH="")
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(tokenizer_dir), str(tmp_path / "texts.json")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    specials = ("</s>", "<s>", "<|reserved_")
    for text, ids in zip(texts, got):
        if not any(s in text for s in specials):
            assert ids == engine.encode(text), text[:50]


def test_remote_code_is_self_contained():
    """Files that travel to the Hub import only the standard library, transformers and each
    other, and use no network, subprocesses, eval/exec or pickle."""
    allowed_roots = set(sys.stdlib_module_names) | {"transformers", "numpy"}
    forbidden_modules = {"socket", "subprocess", "urllib", "http", "pickle", "requests", "ctypes", "shelve", "marshal"}
    for path in resource_dir("remote_code").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                roots = [] if node.level else [node.module.split(".")[0]]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "compile", "__import__"}, f"{path.name} calls {node.func.id}"
                continue
            else:
                continue
            for root in roots:
                assert root in allowed_roots and root not in forbidden_modules, f"{path.name} imports {root}"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"padding": True},
        {"padding": True, "return_tensors": "pt"},
        {"padding": "max_length", "max_length": 64},
        {"padding": True, "pad_to_multiple_of": 8, "return_length": True},
        {"padding": True, "padding_side": "left", "return_tensors": "pt"},
        {"add_special_tokens": False, "return_attention_mask": False},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults",
)
@pytest.mark.parametrize("add_bos_token", [True, False])
def test_plain_batches_match_transformers_batch_path(tokenizer_dir, options, add_bos_token):
    """Plain batches (and single texts) skip transformers' per-sequence machinery;
    truncation=True with a long max_length sends the same input through transformers' own path,
    with the same result."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=True, add_bos_token=add_bos_token)
    texts = ["Short one.", "A longer sentence, with </s> inside and café.", "", "日本語 😀", "<|reserved_3|>x<s>"]
    # a batch, then each text alone (a plain batch of one, unbatched as transformers does)
    for inputs in [texts] + texts:
        fast = tok(inputs, **options)
        slow = tok(inputs, truncation=True, **{"max_length": 10_000, **options})
        assert list(fast.keys()) == list(slow.keys())
        for key in fast:
            a, b = fast[key], slow[key]
            assert (a.tolist() if hasattr(a, "tolist") else a) == (b.tolist() if hasattr(b, "tolist") else b), (inputs, key)
    assert tok.encode(texts[1], add_special_tokens=False) == tok.convert_tokens_to_ids(tok.tokenize(texts[1]))


def test_split_special_tokens_in_batches(tokenizer):
    """Honoured in batches as for single texts (transformers 4.57's own batch path for
    Python tokenizers drops the flag before tokenizing)."""
    texts = ["Hello world</s>", "<s>again"]
    batch = tokenizer(texts, split_special_tokens=True)["input_ids"]
    assert batch == [tokenizer(t, split_special_tokens=True)["input_ids"] for t in texts]
    assert all(8000 not in ids and 8001 not in ids for ids in batch)


def test_plain_batches_warn_about_too_long_sequences_as_transformers_does(tokenizer_dir, caplog):
    """The warning transformers gives for a sequence longer than model_max_length: the same from
    a plain batch as from a single text (transformers' own path), and none when all fit."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    long_text = "A sentence that is well over eight tokens long, to be sure of it."
    hf_logging.enable_propagation()
    try:
        messages = {}
        for case, texts in (("single", long_text), ("batch", ["Short.", long_text, "Hi"]), ("all fit", ["Short.", "Hi"])):
            tok = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=True, model_max_length=8)
            caplog.clear()
            with caplog.at_level("WARNING"):
                tok(texts)
            messages[case] = {r.getMessage() for r in caplog.records if "maximum sequence length" in r.getMessage()}
    finally:
        hf_logging.disable_propagation()
    assert len(messages["single"]) == 1 and messages["batch"] == messages["single"]
    assert messages["all fit"] == set()


def _incremental_detokenize(tokenizer, prompt: list[int], generated: list[int], window: int = 5) -> str:
    """Incremental detokenization as vLLM and TGI do it: token strings from
    convert_ids_to_tokens, a window of them decoded twice with convert_tokens_to_string (up to
    the read offset and to the end; added tokens kept apart), the difference emitted unless it
    ends with U+FFFD (unfinished), and the offsets moved on only when text was emitted."""
    added = set(tokenizer.get_added_vocab())

    def text_of(tokens):
        parts, run = [], []
        for token in tokens:
            if token in added:
                if run:
                    parts.append(tokenizer.convert_tokens_to_string(run))
                    run = []
                parts.append(token)
            else:
                run.append(token)
        if run:
            parts.append(tokenizer.convert_tokens_to_string(run))
        return "".join(parts)

    tokens = tokenizer.convert_ids_to_tokens(prompt[-window - 2:])
    read_offset = len(tokens)
    prefix_offset = max(read_offset - window, 0)
    out = []
    for token_id in generated:
        tokens += tokenizer.convert_ids_to_tokens([token_id])
        prefix_text = text_of(tokens[prefix_offset:read_offset])
        new_text = text_of(tokens[prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            out.append(new_text[len(prefix_text):])
            prefix_offset, read_offset = read_offset, len(tokens)
    return "".join(out)


def test_token_strings_round_trip(tokenizer, shared):
    """convert_ids_to_tokens / convert_tokens_to_string give back the decode exactly, for whole
    texts and for every window of them (serving engines decode windows)."""
    rnd = random.Random(3)
    for text in _vector_texts(shared) + _STREAMING_TEXTS:
        ids = tokenizer.encode(text)
        assert tokenizer.convert_tokens_to_ids(tokenizer.convert_ids_to_tokens(ids)) == ids
        assert tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(ids)) == tokenizer.decode(ids), text[:40]
        if ids:
            a = rnd.randrange(len(ids))
            b = rnd.randrange(a, len(ids) + 1)
            assert tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(ids[a:b])) == tokenizer.decode(ids[a:b])


def test_incremental_detokenization_as_serving_engines_do_it(tokenizer, shared):
    texts = [t for t in _vector_texts(shared) if "<" not in t][:80] + _STREAMING_TEXTS
    for text in texts:
        ids = tokenizer.encode(text)
        for split in sorted({1, len(ids) // 3, len(ids) // 2}):
            if not 0 < split < len(ids) or tokenizer.decode(ids[:split]).endswith("\ufffd"):
                continue  # a prompt is text: it does not end inside a character
            expected = tokenizer.decode(ids)[len(tokenizer.decode(ids[:split])):]
            assert _incremental_detokenize(tokenizer, ids[:split], ids[split:]) == expected, text[:40]
    for ids in _random_generations(tokenizer, random.Random(11), 200):
        prompt, generated = tokenizer.encode("A prompt."), ids
        expected = tokenizer.decode(prompt + generated)[len("A prompt."):]
        # an engine never emits a trailing unfinished U+FFFD; everything before it must match
        assert _incremental_detokenize(tokenizer, prompt, generated) == expected.rstrip("\ufffd"), ids


def test_chat_template_in_both_places(tokenizer_dir, tokenizer):
    """transformers reads chat_template.jinja; TGI reads tokenizer_config.json only."""
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["chat_template"] == (tokenizer_dir / "chat_template.jinja").read_text() == tokenizer.chat_template

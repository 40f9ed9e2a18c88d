"""Text -> blocks: the card's cleaning and packing rules, shared by training and perplexity eval."""

from __future__ import annotations

import json

import pytest
import torch

from stentor_hub.recipes.data import build_eval_blocks, clean_text, iter_documents


def test_clean_text_applies_nfkc_strips_lines_and_collapses_whitespace():
    assert clean_text("  Hello\u00a0 world \n\n \t \n  second\tline  \n") == "Hello world second line"
    assert clean_text("\ufb01ne \u2460") == "fine 1"  # NFKC: ligature and circled digit
    assert clean_text("\n \n") == ""


def test_clean_text_is_the_cards_rule_as_written(shared):
    """The one-split implementation against the rule spelled out step by step (NFKC, strip each
    line, drop empty lines, join with spaces, collapse whitespace), on random strings of every
    whitespace and line-boundary character and those NFKC turns into whitespace, and on corpora."""
    import random
    import re
    import sys
    import unicodedata

    def as_written(text: str) -> str:
        text = unicodedata.normalize("NFKC", text)
        lines = (line.strip() for line in text.splitlines())
        return re.sub(r"\s+", " ", " ".join(line for line in lines if line)).strip()

    spacy = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF
             and any(ch.isspace() for ch in unicodedata.normalize("NFKC", chr(c)))]
    pool = spacy + ["\r\n", "a", "b", "\u00e9", "e\u0301", "\ufb01", "\u2460", "."]
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(pool) for _ in range(rng.randrange(14)))
        assert clean_text(text) == as_written(text), repr(text)
    for name in ("wikitext2_test.txt", "gutenberg_val.txt"):
        text = (shared / "corpora" / name).read_text(encoding="utf-8")
        assert clean_text(text) == as_written(text), name


def test_build_eval_blocks_packs_cleaned_documents_with_eos(tmp_path, tokenizer):
    path = tmp_path / "docs.txt"
    path.write_text("First  paragraph.\nStill the first document.\n\nSecond document here.\n\n\nThird one, with more words in it.\n")
    blocks = build_eval_blocks(path, tokenizer, block_size=4)
    expected = []
    for doc in ["First paragraph. Still the first document.", "Second document here.", "Third one, with more words in it."]:
        expected += tokenizer.encode(doc, add_special_tokens=False) + [tokenizer.eos_token_id]
    n = len(expected) // 4
    assert blocks.dtype == torch.long and blocks.shape == (n, 4)
    assert blocks.flatten().tolist() == expected[: n * 4]

    capped = build_eval_blocks(path, tokenizer, block_size=4, max_samples=2)
    assert capped.shape == (2, 4) and torch.equal(capped, blocks[:2])


def test_jsonl_source_and_max_chars(tmp_path, tokenizer):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["alpha beta", "gamma delta epsilon"])))
    assert list(iter_documents(str(path))) == ["alpha beta", "gamma delta epsilon"]
    assert list(iter_documents({"path": str(path), "max_chars": 13})) == ["alpha beta", "gam"]
    blocks = build_eval_blocks(str(path), tokenizer, block_size=2)
    assert (blocks == tokenizer.eos_token_id).sum() >= 1


def test_too_little_text_and_missing_files_are_clear_errors(tmp_path, tokenizer):
    path = tmp_path / "short.txt"
    path.write_text("Hi.\n")
    with pytest.raises(ValueError, match="fewer than one block of 512"):
        build_eval_blocks(path, tokenizer, block_size=512)
    with pytest.raises(FileNotFoundError, match="no such file"):
        build_eval_blocks(str(tmp_path / "nope.txt"), tokenizer, block_size=8)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "x"}\n')
    with pytest.raises(ValueError, match="no 'text' field"):
        build_eval_blocks(str(bad), tokenizer, block_size=8)


def test_shared_corpus_gives_full_blocks(shared, tokenizer):
    blocks = build_eval_blocks(f"{shared}/corpora/sample.txt", tokenizer, block_size=128, max_samples=10)
    assert blocks.shape == (10, 128)
    assert int(blocks.max()) < len(tokenizer)


def test_token_data_is_cached_budgeted_exactly_and_held_out(tmp_path, tokenizer):
    import numpy as np

    from stentor_hub.recipes.data import load_token_data

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(f"Document number {i} talks about the sea and the ships." for i in range(200)))
    cache = tmp_path / "cache"
    first = load_token_data([str(corpus)], [], tokenizer, block_size=16, source_token_budget=1000,
                            max_eval_samples=4, cache_dir=cache)
    assert not first.from_cache and first.eval_held_out
    assert len(first.train) == 1000  # the source-token budget, exactly
    assert len(first.eval) == 4 * 16
    # held out: the eval tokens are the first documents, training starts after them
    stream = build_eval_blocks(str(corpus), tokenizer, block_size=2).flatten().numpy()
    boundary = np.flatnonzero(stream == tokenizer.eos_token_id)
    train_start = int(boundary[boundary >= 63][0]) + 1
    assert np.array_equal(first.eval, stream[:64]) and np.array_equal(first.train, stream[train_start:train_start + 1000])

    second = load_token_data([str(corpus)], [], tokenizer, block_size=16, source_token_budget=1000,
                             max_eval_samples=4, cache_dir=cache)
    assert second.from_cache and second.cache_file == first.cache_file
    assert np.array_equal(second.train, first.train) and np.array_equal(second.eval, first.eval)
    corpus.write_text(corpus.read_text() + "\n\nA new document.")
    third = load_token_data([str(corpus)], [], tokenizer, block_size=16, source_token_budget=1000,
                            max_eval_samples=4, cache_dir=cache)
    assert not third.from_cache  # an edited file is tokenized again


def test_stop_rules_name_the_rule_that_stopped():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from stentor_hub.recipes.callbacks import StopRulesCallback

    args = TrainingArguments(output_dir="unused", report_to=[])
    for rule, state_values in [("token_budget", dict(num_input_tokens_seen=4096, global_step=2, epoch=0.1)),
                               ("max_steps", dict(num_input_tokens_seen=100, global_step=50, epoch=0.5)),
                               ("epochs", dict(num_input_tokens_seen=100, global_step=20, epoch=2.0))]:
        callback, control = StopRulesCallback(token_budget=4096, epochs=2, max_steps=50), TrainerControl()
        state = TrainerState(**state_values)
        callback.on_step_end(args, state, control)
        assert control.should_training_stop and control.should_evaluate and control.should_save
        assert callback.stopped_by == rule
    callback, control = StopRulesCallback(token_budget=4096, epochs=2, max_steps=50), TrainerControl()
    callback.on_step_end(args, TrainerState(num_input_tokens_seen=4095, global_step=49, epoch=1.9), control)
    assert not control.should_training_stop and callback.stopped_by is None


def test_parquet_and_glob_sources(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["one parquet row", "two parquet rows"], "n": [1, 2]}), tmp_path / "a.parquet")
    (tmp_path / "b.txt").write_text("a text file\n\nwith two documents\n")
    (tmp_path / "c.jsonl").write_text('{"text": "a json line"}\n')
    assert list(iter_documents(str(tmp_path / "a.parquet"))) == ["one parquet row", "two parquet rows"]
    docs = list(iter_documents(str(tmp_path / "*.*")))  # sorted: a.parquet, b.txt, c.jsonl
    assert docs == ["one parquet row", "two parquet rows", "a text file\n", "with two documents\n", "a json line"]
    with pytest.raises(ValueError, match="no 'body' column"):
        list(iter_documents({"path": str(tmp_path / "a.parquet"), "text_field": "body"}))
    with pytest.raises(ValueError, match="unknown keys \\['maxchars'\\]"):
        list(iter_documents({"path": str(tmp_path / "b.txt"), "maxchars": 3}))


def test_hub_dataset_is_streamed_through_the_hub_protocol(tmp_path, shared):
    """A Hub dataset id (here served by the local Hub server, as the Hub lays out parquet data)
    is streamed through datasets and gives the documents the same parquet file gives locally."""
    import json
    import subprocess
    import sys

    import pyarrow as pa
    import pyarrow.parquet as pq

    from hub_server import HubServer

    docs = [line for line in (shared / "corpora" / "sample.txt").read_text(encoding="utf-8").split("\n") if line.strip()][:40]
    local = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": d, "id": i} for i, d in enumerate(docs)]), local)
    token = "hf_test_epfml_owner"
    with HubServer(tmp_path / "hub", {token: "epfml"}) as hub:
        hub.add_parquet_dataset("epfml/FineWeb-HQ", local, token)
        env = hub.client_env(tmp_path / "hf_home")
        code = ("import json, sys; from stentor_hub.recipes.data import iter_documents; "
                "print(json.dumps([list(iter_documents(sys.argv[1])), list(iter_documents(sys.argv[2]))]))")
        result = subprocess.run([sys.executable, "-c", code, "epfml/FineWeb-HQ", str(local)],
                                capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from_hub, from_file = json.loads(result.stdout.strip().splitlines()[-1])
    assert from_hub == from_file and len(from_hub) == len(docs)
    assert any("/datasets/epfml/FineWeb-HQ/" in path for _, path in hub.requests)

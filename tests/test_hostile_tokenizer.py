"""What the tokenizer does with control characters and surrogates, the same in ``encode``,
``tokenizer(text)`` and batches (documented in remote_code/tokenization_stentor.py)."""

from __future__ import annotations

import pytest


def _three_ways(tokenizer, text):
    return [tokenizer.encode(text), tokenizer(text)["input_ids"], tokenizer([text, "x"])["input_ids"][0],
            tokenizer([text, "a longer second text"], padding=True)["input_ids"][0][:len(tokenizer.encode(text))]]


@pytest.mark.parametrize("control", ["\x00", "\x07", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"])
def test_c0_controls_are_dropped_the_same_everywhere(tokenizer, control):
    ways = _three_ways(tokenizer, f"a{control}b")
    assert all(ids == ways[0] for ids in ways)
    assert tokenizer.decode(ways[0]) == "ab"


@pytest.mark.parametrize("kept", ["\t", "\n", "\r", "\x85", "\u200b"])
def test_tab_newline_and_c1_or_format_characters_are_kept(tokenizer, kept):
    ways = _three_ways(tokenizer, f"a{kept}b")
    assert all(ids == ways[0] for ids in ways)
    assert tokenizer.decode(ways[0]) == f"a{kept}b"


@pytest.mark.parametrize("text,code,position", [("bad \ud800 x", "D800", 4), ("\udcff", "DCFF", 0),
                                                ("pair \ud83d\ude00", "D83D", 5)])
def test_a_surrogate_is_a_value_error_naming_its_position_everywhere(tokenizer, text, code, position):
    calls = [lambda: tokenizer.encode(text), lambda: tokenizer(text), lambda: tokenizer([text, "x"]),
             lambda: tokenizer([text, "a longer one"], padding=True), lambda: tokenizer.tokenize(text)]
    for call in calls:
        with pytest.raises(ValueError, match=f"surrogate code point U\\+{code} at character {position}"):
            call()

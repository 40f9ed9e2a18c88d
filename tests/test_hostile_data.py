"""Hostile input data: a JSONL text that is not a string, bytes that are not UTF-8, a lone
surrogate, a record that is not an object: each is an error naming the file and the line (or byte
offset), never trained on as "5", "None" or "['a']", never a crash of the run."""

from __future__ import annotations

import pytest

from stentor_hub.errors import DataError
from stentor_hub.recipes.data import iter_documents


@pytest.mark.parametrize("value,shown", [("5", "5"), ("null", "null"), ('["a"]', '["a"]'), ('{"t": 1}', '{"t": 1}'),
                                         ("true", "true")])
def test_a_text_that_is_not_a_string_names_file_and_line(tmp_path, value, shown):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": %s}\n' % value)
    with pytest.raises(DataError) as error:
        list(iter_documents(str(path)))
    message = str(error.value)
    assert f"{path}:3:" in message and "'text'" in message and shown in message and "not a string" in message


def test_a_record_that_is_not_an_object(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "fine"}\n[1, 2]\n')
    with pytest.raises(DataError, match=rf"{path}:2: the record is a list"):
        list(iter_documents(str(path)))


def test_a_lone_surrogate_names_file_and_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "fine"}\n{"text": "bad \\ud800 here"}\n')
    with pytest.raises(DataError, match=rf"{path}:2: 'text' holds a lone surrogate .* at character 4"):
        list(iter_documents(str(path)))
    # a proper pair is fine
    path.write_text('{"text": "ok \\ud83d\\ude00"}\n')
    assert list(iter_documents(str(path))) == ["ok \U0001F600"]


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_bytes_that_are_not_utf8_name_file_and_offset(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    good = b'{"text": "fine"}\n' if suffix == ".jsonl" else b"fine\n\n"
    path.write_bytes(good + b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError) as error:
        list(iter_documents(str(path)))
    message = str(error.value)
    offset, line = len(good) + len(b'{"text": "caf'), good.count(b"\n") + 1
    assert str(path) in message and f"offset {offset} (line {line})" in message and "UTF-8" in message


def test_a_parquet_column_that_is_not_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), path)
    with pytest.raises(DataError, match=r"row 1: column 'text' is a int"):
        list(iter_documents(str(path)))


def test_training_stops_on_bad_data_before_writing(tmp_path, train_cache_dir):
    from stentor_hub.recipes.config import load_recipe
    from stentor_hub.recipes.train import train

    path = tmp_path / "docs.jsonl"
    path.write_text("".join('{"text": "a sentence of words number %d."}\n' % i for i in range(50)) + '{"text": 5}\n')
    config = load_recipe("tiny-cpu", [f"data.cache_dir={train_cache_dir}", f"data.train_sources=[{path}]"])
    with pytest.raises(DataError, match=rf"{path}:51: 'text' is 5"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()

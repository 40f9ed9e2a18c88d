"""Prepared token shards (`stentor-hub data prepare`): the same tokens as the plain in-memory
pipeline, the same bytes for any number of workers, resumable after SIGKILL, read by memory map."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from stentor_hub.recipes.data import BlockDataset, reference_token_data
from stentor_hub.recipes.prepare import PreparedShards, ShardsError, prepare_shards


def _shard_bytes(folder: Path) -> dict[str, str]:
    """Every file a preparation leaves (shards, index, any leftover), by name: its size and SHA-256
    (a difference reads as names and digests, not as megabytes of bytes)."""
    return {p.name: f"{p.stat().st_size} {hashlib.sha256(p.read_bytes()).hexdigest()}"
            for p in sorted(folder.iterdir()) if p.name != ".lock"}


def _cli(*args: str, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "stentor_hub", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, **popen)


def test_tiny_recipe_shards_equal_todays_pipeline_for_any_worker_count(tmp_path, tokenizer, shared):
    from stentor_hub.recipes.config import load_recipe

    data = load_recipe("tiny-cpu")["data"]
    args = (data["train_sources"], data["eval_sources"], tokenizer, data["block_size"], data["source_token_budget"],
            data["max_eval_samples"])
    reference = reference_token_data(*args)
    outputs = {}
    for workers in (1, 2, 3):
        shards = prepare_shards(*args, tmp_path / f"w{workers}", workers=workers, shard_tokens=50_000)
        assert np.array_equal(np.asarray(shards.train), reference.train)
        assert np.array_equal(np.asarray(shards.eval), reference.eval)
        assert len(shards.index["splits"]["train"]["shards"]) == -(-len(reference.train) // 50_000)
        outputs[workers] = _shard_bytes(tmp_path / f"w{workers}")
    assert outputs[1] == outputs[2] == outputs[3]
    index = json.loads((tmp_path / "w1" / "index.json").read_text())
    assert index["format_version"] == 1 and index["dtype"] == "uint16" and not index["eval_held_out"]
    assert index["splits"]["train"]["tokens"] == len(reference.train) and index["tokenizer"] == index["key"]["tokenizer"]
    assert index["sources"]["train"][0]["path"].endswith("gutenberg_train.txt")


def _mixed_sources(tmp_path: Path) -> list[str]:
    """Three sources of different lengths (two run out early), with empty documents in them."""
    a = tmp_path / "a.txt"
    a.write_text("\n\n".join(f"Book {i} begins.\nThe sea was calm and the ships sailed on, day {i}." for i in range(40)))
    b = tmp_path / "b.jsonl"
    b.write_text("\n".join(json.dumps({"text": t}) for t in
                           ["  ", "A short one.", "\t\n", *(f"Record {i}: the harbour at dawn." for i in range(7))]))
    c = tmp_path / "c.txt"
    c.write_text("Only two documents here.\n\nAnd this is the second, a little longer than the first one.\n")
    return [str(a), str(b), str(c)]


def _tokens_per_source(sources, tokenizer, budget, held_out_tokens) -> list[int]:
    """What each source gives to training, counted here from scratch: documents tagged with their
    source, interleaved round-robin, the first whole documents held out, the rest cut at the budget."""
    from stentor_hub.recipes.data import interleave, iter_token_documents

    def documents(i):
        return ((i, ids) for ids in iter_token_documents(sources[i], tokenizer))

    tagged = interleave([documents(i) for i in range(len(sources))])
    held = 0
    for _, ids in tagged:
        held += len(ids)
        if held >= held_out_tokens:
            break
    counts, total = [0] * len(sources), 0
    for i, ids in tagged:
        take = len(ids) if budget is None else min(len(ids), budget - total)
        counts[i] += take
        total += take
        if budget is not None and total >= budget:
            break
    return counts


@pytest.mark.parametrize("budget", [777, None])
def test_interleaving_held_out_split_and_exact_budget_match_the_reference(tmp_path, tokenizer, budget):
    sources = _mixed_sources(tmp_path)
    reference = reference_token_data(sources, [], tokenizer, 16, budget, 5)
    assert reference.eval_held_out and len(reference.eval) == 80
    if budget:
        assert len(reference.train) == budget
    for workers in (1, 3):
        folder = tmp_path / f"w{workers}"
        shards = prepare_shards(sources, [], tokenizer, 16, budget, 5, folder, workers=workers, shard_tokens=37)
        assert shards.eval_held_out
        assert np.array_equal(np.asarray(shards.eval), reference.eval)
        assert np.array_equal(np.asarray(shards.train), reference.train)
    assert _shard_bytes(tmp_path / "w1") == _shard_bytes(tmp_path / "w3")
    assert [r["tokens"] for r in shards.source_tokens("train")] == _tokens_per_source(sources, tokenizer, budget, 80)
    assert shards.source_tokens("train")[1]["source"]["path"].endswith("b.jsonl")
    assert sum(r["tokens"] for r in shards.source_tokens("eval")) == 80

    # blocks read from the map, across shard boundaries (37-token shards, 16-token blocks)
    dataset = BlockDataset(shards.train, 16)
    assert len(dataset) == len(reference.train) // 16
    for i in (0, 2, 5, len(dataset) - 1):
        item = dataset[i]
        assert item["input_ids"].dtype.is_floating_point is False and item["input_ids"].shape == (16,)
        assert item["input_ids"].tolist() == reference.train[i * 16:(i + 1) * 16].tolist()
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    import pickle  # data-loader workers get the paths, not the tokens

    clone = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 2000 and clone[3]["input_ids"].tolist() == dataset[3]["input_ids"].tolist()


def test_a_folder_is_reused_only_for_its_own_data(tmp_path, tokenizer):
    sources = _mixed_sources(tmp_path)
    folder = tmp_path / "prepared"
    first = prepare_shards(sources, [], tokenizer, 16, 500, 5, folder, workers=1)
    assert first.prepared_now
    before = _shard_bytes(folder)
    again = prepare_shards(sources, [], tokenizer, 16, 500, 5, folder, workers=2)
    assert not again.prepared_now and np.array_equal(np.asarray(again.train), np.asarray(first.train))
    with pytest.raises(ShardsError, match=r"prepared for other data settings \(source_token_budget differ"):
        prepare_shards(sources, [], tokenizer, 16, 600, 5, folder, workers=1)
    assert _shard_bytes(folder) == before  # nothing touched
    (folder / "train-00000.bin").write_bytes(b"\x00\x00")
    with pytest.raises(ShardsError, match="wrong size"):
        PreparedShards(folder)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "train-00000.bin").write_bytes(b"\x01\x00")
    with pytest.raises(ShardsError, match="not a preparation this command can resume"):
        prepare_shards(sources, [], tokenizer, 16, 500, 5, stray, workers=1)
    assert (stray / "train-00000.bin").read_bytes() == b"\x01\x00"
    with pytest.raises(ShardsError, match="no index.json"):
        PreparedShards(tmp_path / "nothing")


# 150 shards of 20,000 tokens: the compiled engine on two workers writes one in about 5 ms and the
# test looks every 50 ms, so it finds three while more than a hundred are still to come
PREPARE_ARGS = ["--config", "tiny-cpu", "--shard-tokens", "20000", "--no-progress",
                'data.train_sources=["{shared}/corpora/gutenberg_train.txt"]',
                "data.source_token_budget=3000000"]


def test_sigkill_mid_prepare_resumes_from_the_last_shard_and_ends_byte_identical(tmp_path, shared):
    straight = tmp_path / "straight"
    result = _cli("data", "prepare", *PREPARE_ARGS, "--out", str(straight), "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train from it with: data.shards_dir=" in result.stdout

    killed = tmp_path / "killed"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "stentor_hub", "data", "prepare", *PREPARE_ARGS, "--out", str(killed),
                             "--workers", "2"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 300
    progress = killed / "progress.json"
    while time.time() < deadline and proc.poll() is None:
        if progress.is_file() and len(json.loads(progress.read_text())["train"]) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "prepare ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its workers, mid-shard
    proc.wait()
    assert not (killed / "index.json").exists()
    kept = {s["file"]: (killed / s["file"]).stat().st_mtime_ns for s in json.loads(progress.read_text())["train"]}
    assert len(kept) >= 3

    resumed = _cli("data", "prepare", *PREPARE_ARGS, "--out", str(killed), "--workers", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _shard_bytes(killed) == _shard_bytes(straight)
    # resumed, not redone: the shards written before the kill were left as they were
    assert {name: (killed / name).stat().st_mtime_ns for name in kept} == kept
    assert not (killed / "progress.json").exists() and not list(killed.glob(".*tmp*"))


def test_what_a_kill_leaves_is_resumed_and_cleared(tmp_path, tokenizer, monkeypatch):
    """Killed before the eval shards were recorded, and with a progress record half-written: the
    next run finishes with the bytes of an uninterrupted one and nothing extra in the folder."""
    from stentor_hub.helpers import replace_atomically
    from stentor_hub.recipes import prepare

    sources = _mixed_sources(tmp_path)
    args = (sources, [sources[2]], tokenizer, 16, 700, 5)
    prepare_shards(*args, tmp_path / "straight", workers=1, shard_tokens=64)

    folder = tmp_path / "killed"
    calls = []
    real_write_progress = prepare._write_progress

    def write_progress_then_die(path, state):
        calls.append(state)
        if len(calls) == 2:  # the eval shard is in place, its record not yet
            raise SystemExit("killed")
        real_write_progress(path, state)

    monkeypatch.setattr(prepare, "_write_progress", write_progress_then_die)
    with pytest.raises(SystemExit):
        prepare_shards(*args, folder, workers=1, shard_tokens=64)
    monkeypatch.undo()
    assert (folder / "eval-00000.bin").is_file() and json.loads((folder / "progress.json").read_text())["eval"] is None
    # and a SIGKILL inside an atomic write of the progress record: the temporary file stays behind
    replace_atomically(folder / "progress.json").__enter__().write_text('{"key":')

    resumed = prepare_shards(*args, folder, workers=2, shard_tokens=64)
    assert resumed.prepared_now
    assert _shard_bytes(folder) == _shard_bytes(tmp_path / "straight")
    assert sum(r["tokens"] for r in resumed.source_tokens("train")) == len(resumed.train) == 700


def test_cli_bad_input_is_one_clear_line(tmp_path):
    result = _cli("data", "prepare", "--config", "tiny-cpu", "--out", str(tmp_path / "x"),
                  "data.train_sources=[/nonexistent/corpus.txt]")
    assert result.returncode == 2 and "/nonexistent/corpus.txt': no such file" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "x").exists()
    result = _cli("data", "prepare", "--config", "tiny-cpu", "--workers", "0")
    assert result.returncode == 2 and "expected a positive integer, got 0" in result.stderr


def test_hub_dataset_prepares_the_same_shards_as_its_parquet_file(tmp_path, shared):
    """A Hub dataset id streams through datasets (from the local Hub server) into the same
    shards that the same parquet file gives from disk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hub_server import HubServer

    docs = [line for line in (shared / "corpora" / "sample.txt").read_text(encoding="utf-8").split("\n") if line.strip()]
    local = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": d} for d in docs]), local)
    common = ["--config", "tiny-cpu", "--no-progress", "--shard-tokens", "1000", "data.eval_sources=[]",
              "data.max_eval_samples=4", "data.source_token_budget=5000"]
    from_file = _cli("data", "prepare", *common, f"data.train_sources=[{local}]", "--out", str(tmp_path / "file"))
    assert from_file.returncode == 0, from_file.stderr[-3000:]
    token = "hf_test_epfml_owner"
    with HubServer(tmp_path / "hub", {token: "epfml"}) as hub:
        hub.add_parquet_dataset("epfml/FineWeb-HQ", local, token)
        env = hub.client_env(tmp_path / "hf_home")
        env.update(TOKENIZERS_PARALLELISM="false")
        from_hub = subprocess.run([sys.executable, "-m", "stentor_hub", "data", "prepare", *common,
                                   "data.train_sources=[epfml/FineWeb-HQ]", "--out", str(tmp_path / "hub_shards")],
                                  capture_output=True, text=True, env=env, timeout=600)
    assert from_hub.returncode == 0, from_hub.stderr[-3000:]
    assert any("/datasets/epfml/FineWeb-HQ/" in path for _, path in hub.requests)
    a, b = _shard_bytes(tmp_path / "file"), _shard_bytes(tmp_path / "hub_shards")
    assert {k: v for k, v in a.items() if k != "index.json"} == {k: v for k, v in b.items() if k != "index.json"}
    assert len([k for k in a if k.startswith("train-")]) == 5
    assert json.loads((tmp_path / "hub_shards" / "index.json").read_text())["sources"]["train"][0]["kind"] == "hub"

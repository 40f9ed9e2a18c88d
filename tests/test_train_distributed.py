"""Two CPU processes with gloo, the 2x T4 layout, started by torchrun and by accelerate launch
(--multi_gpu with no GPU falls back to gloo on the CPU): the global batch is split, tokens are
counted across both processes, and only the main process writes outputs."""

from __future__ import annotations

import csv
import json
import socket
import sys
from pathlib import Path

import pytest

from conftest import run_train
from test_train_resume import SMALL_MODEL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(name: str) -> list[str]:
    if name == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    return [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port())]


@pytest.mark.parametrize("launcher_name", ["torchrun", "accelerate"])
def test_two_gloo_processes_split_the_batch_and_count_all_tokens(tmp_path, train_cache_dir, launcher_name):
    run_dir = tmp_path / "ddp"
    launcher = _launcher(launcher_name)
    result = run_train(
        # token budget of 10 steps, below max_steps: it only stops at step 10 if both processes' tokens count
        run_dir, *SMALL_MODEL, "training.max_steps=12", "training.token_budget=10240", "training.batch_size=8",
        "training.eval_steps=6",
        "training.save_steps=6", "training.logging_steps=3", "training.best_eval_start_step=6",
        "data.max_eval_samples=15", cache_dir=train_cache_dir, launcher=launcher,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["hardware"]["num_processes"] == 2
    training = manifest["training"]
    assert training["per_device_batch_size"] == 4 and training["batch_size"] == 8
    # both processes' tokens: 10 steps x 8 sequences x 128 tokens (one process alone would see half)
    assert training["stopped_by"] == "token_budget"
    assert training["tokens_seen"] == 10 * 8 * 128 == 10240
    assert training["steps"] == 10 and manifest["final"]["step"] == 10
    assert manifest["data"]["eval_blocks"] == 15  # odd count over 2 processes: each block evaluated once
    with open(run_dir / "training_curves.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["train_loss"]] == [3, 6, 9, 10]  # one writer, no duplicates
    assert [int(r["step"]) for r in rows if r["eval_loss"]] == [0, 6, 10]
    assert (run_dir / "final" / "model.safetensors").is_file() and (run_dir / "best" / "model.safetensors").is_file()


def test_ranks_wait_for_data_preparation_longer_than_ddp_timeout(tmp_path, shared):
    """Rank 0 prepares the token shards from a Hub dataset over a slow network (the local Hub
    server answering each request after 2.5 s: over 20 s in all) while rank 1 waits for the shards'
    index, in no collective call; with training.ddp_timeout=20 a collective wait that long would
    have killed the run (a barrier around the data step, as before, would time out)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hub_server import HubServer

    docs = [line for line in (shared / "corpora" / "sample.txt").read_text(encoding="utf-8").split("\n") if line.strip()]
    local = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": d} for d in docs]), local)
    token = "hf_test_epfml_owner"
    run_dir = tmp_path / "ddp"
    with HubServer(tmp_path / "hub", {token: "epfml"}) as hub:
        hub.add_parquet_dataset("epfml/FineWeb-HQ", local, token)
        hub.delay = 2.5
        env = hub.client_env(tmp_path / "hf_home")
        result = run_train(
            run_dir, *SMALL_MODEL, "training.ddp_timeout=20", "data.train_sources=[epfml/FineWeb-HQ]",
            "data.eval_sources=[]", "data.max_eval_samples=4", "data.source_token_budget=null",
            "training.max_steps=4", "training.batch_size=8", "training.eval_steps=2", "training.save_steps=2",
            "training.logging_steps=2", "training.best_eval_start_step=2",
            cache_dir=tmp_path / "cache", launcher=_launcher("torchrun"), env=env,
        )
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    assert manifest["recipe"]["training"]["ddp_timeout"] == 20 and manifest["hardware"]["num_processes"] == 2
    assert manifest["data"]["prepare_seconds"] > 20  # preparation outlasted the collective timeout
    assert manifest["training"]["steps"] == 4 and manifest["data"]["eval_blocks"] == 4
    assert any("/datasets/epfml/FineWeb-HQ/" in path for _, path in hub.requests)

"""`stentor-hub tokenizer export`: names, paths, offline failure, and safe output folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from stentor_hub.cli import main


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "STENTOR_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), HOME=str(tmp_path / "home"), **extra)
    return env


def test_export_by_name_from_vocab_dir(tmp_path, vocab8000_path):
    vocab_dir = tmp_path / "vocabs"
    vocab_dir.mkdir()
    shutil.copy(vocab8000_path, vocab_dir / vocab8000_path.name)
    out = tmp_path / "tok"
    result = subprocess.run(
        [sys.executable, "-m", "stentor_hub", "tokenizer", "export", "--vocab", vocab8000_path.stem, "--out", str(out)],
        capture_output=True, text=True, env=_env(tmp_path, STENTOR_VOCAB_DIR=str(vocab_dir), STENTOR_SHARED=str(tmp_path / "none")),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "8064 ids" in result.stdout and (out / "tokenmonster.vocab").read_bytes() == vocab8000_path.read_bytes()


def test_unknown_name_offline_says_how_to_pass_a_path(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stentor_hub", "tokenizer", "export", "--vocab", "english-32000-balanced-v1", "--out", str(tmp_path / "t")],
        capture_output=True, text=True, env=_env(tmp_path, STENTOR_SHARED=str(tmp_path / "none")), timeout=300,
    )
    assert result.returncode == 2
    assert "english-32000-balanced-v1" in result.stderr and "--vocab /path/to/english-32000-balanced-v1.vocab" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "t").exists()


def test_export_by_path_and_refuses_foreign_folder(tmp_path, vocab1024_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(out)]) == 0
    assert "1152 ids" in capsys.readouterr().out  # 1024 + specials, padded to a multiple of 128
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(out)]) == 0  # re-export is fine
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "important.txt").write_text("keep me")
    assert main(["tokenizer", "export", "--vocab", str(vocab1024_path), "--out", str(foreign)]) == 2
    assert "not a tokenizer folder" in capsys.readouterr().err
    assert (foreign / "important.txt").read_text() == "keep me"


def test_corrupt_vocab_fails_before_writing(tmp_path, capsys):
    bad = tmp_path / "bad.vocab"
    bad.write_bytes(b"\x01\x01\x01" + bytes(40))
    assert main(["tokenizer", "export", "--vocab", str(bad), "--out", str(tmp_path / "tok")]) == 2
    assert "bad.vocab" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()


def test_name_downloads_from_the_hub(tmp_path, vocab1024_path):
    """Not found locally: the name is fetched from alasdairforsythe/tokenmonster through
    huggingface_hub (here from the local server that speaks the Hub's protocol)."""
    from huggingface_hub import HfApi

    from hub_server import HubServer

    token = "hf_test_tokenmonster_owner"
    with HubServer(tmp_path / "hub", {token: "alasdairforsythe"}) as hub:
        api = HfApi(endpoint=hub.url, token=token)
        api.create_repo("alasdairforsythe/tokenmonster")
        api.upload_file(path_or_fileobj=str(vocab1024_path), path_in_repo=f"vocabs/{vocab1024_path.name}",
                        repo_id="alasdairforsythe/tokenmonster")
        env = _env(tmp_path, STENTOR_SHARED=str(tmp_path / "none"), HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1")
        env.pop("HF_HUB_OFFLINE")
        out = tmp_path / "tok"
        result = subprocess.run(
            [sys.executable, "-m", "stentor_hub", "tokenizer", "export", "--vocab", vocab1024_path.stem, "--out", str(out)],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert (out / "tokenmonster.vocab").read_bytes() == vocab1024_path.read_bytes()
        assert any("vocabs/" in path for _, path in hub.requests)

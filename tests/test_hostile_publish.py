"""Hostile cases for publishing: a user's folder survives staging, --private is honoured, names the
Hub refuses are refused before any work, a silent server times out, a template stays sandboxed."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
from huggingface_hub import HfApi

from stentor_hub.card import ModelCardFacts, render_card
from stentor_hub.cli import main
from stentor_hub.errors import CardError, OutputExistsError
from stentor_hub.publish import PublishError, PushError, push_folder, stage_repository

from test_publish import TOKEN, blimp_file, fake_run, hub, hub_env, staged  # noqa: F401  (fixtures)


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dry_run_staging_onto_a_git_clone_deletes_nothing(fake_run, tmp_path, capsys):
    clone = tmp_path / "my-model"
    (clone / ".git" / "objects").mkdir(parents=True)
    (clone / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (clone / "README.md").write_text("# my card")
    (clone / "config.json").write_text("{}")
    (clone / "notes.txt").write_text("my notes")
    (clone / "data").mkdir()
    (clone / "data" / "train.jsonl").write_text('{"text": "x"}\n')
    before = snapshot(clone)
    assert main(["publish", str(fake_run), "--repo-id", "stentor/x", "--dry-run", "--staging", str(clone)]) == 2
    err = capsys.readouterr().err
    assert "--staging" in err and str(clone) in err and ".git/HEAD" in err and "Traceback" not in err
    assert snapshot(clone) == before


def test_previous_staging_is_replaced_but_an_added_file_is_refused(fake_run, tmp_path):
    folder = tmp_path / "stage"
    stage_repository(fake_run, folder)
    first = snapshot(folder)
    stage_repository(fake_run, folder)  # a previous staging, untouched: replaced
    assert snapshot(folder).keys() == first.keys()
    (folder / "my_eval.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="my_eval.txt.*--staging"):
        stage_repository(fake_run, folder)
    assert (folder / "my_eval.txt").read_text() == "mine" and (folder / "README.md").is_file()


def test_relative_staging_passes_its_own_load_check(fake_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["publish", str(fake_run), "--repo-id", "stentor/rel", "--dry-run", "--staging", "rel/stage"]) == 0
    assert "checks passed" in capsys.readouterr().out and (tmp_path / "rel" / "stage" / "README.md").is_file()


@pytest.mark.parametrize("repo_id", ["stentor/bad--name", "stentor/.hidden", "stentor/" + "x" * 97, "a/b/c"])
def test_dry_run_refuses_repo_ids_the_hub_refuses(fake_run, tmp_path, capsys, repo_id):
    staging = tmp_path / "stage"
    assert main(["publish", str(fake_run), "--repo-id", repo_id, "--dry-run", "--staging", str(staging)]) == 2
    err = capsys.readouterr().err
    assert "--repo-id" in err and repo_id in err and "Traceback" not in err
    assert not staging.exists()


@pytest.mark.parametrize("branch", ["has space", "a..b", "-x", "x.lock", "feat/.hidden", "a:b"])
def test_bad_branch_names_are_refused_before_staging(fake_run, tmp_path, capsys, branch):
    staging = tmp_path / "stage"
    assert main(["publish", str(fake_run), "--repo-id", "stentor/br", f"--revision={branch}", "--dry-run",
                 "--staging", str(staging)]) == 2
    err = capsys.readouterr().err
    assert "--revision" in err and repr(branch) in err and not staging.exists()


def test_private_onto_an_existing_public_repository_makes_it_private(hub_env, staged, capsys):
    api = HfApi(endpoint=hub_env.url, token=TOKEN)
    anonymous = HfApi(endpoint=hub_env.url, token=False)
    push_folder(staged, "stentor/was-public", commit_message="public")
    assert anonymous.model_info("stentor/was-public").private is False
    result = push_folder(staged, "stentor/was-public", private=True, commit_message="private now")
    assert result.made_private and api.model_info("stentor/was-public").private is True
    with pytest.raises(Exception, match="Repository Not Found"):
        anonymous.model_info("stentor/was-public")
    again = push_folder(staged, "stentor/was-public", private=True, commit_message="still private")
    assert not again.made_private  # already private: nothing to change


def test_metadata_the_hub_refuses_stops_the_push_before_any_commit(hub_env, staged, tmp_path):
    """The Hub's own validator (POST /api/validate-yaml, as ModelCard.validate) runs before the
    commit; its refusal is quoted and nothing is committed."""
    push_folder(staged, "stentor/validated", commit_message="first")
    before = HfApi(endpoint=hub_env.url, token=TOKEN).model_info("stentor/validated").sha
    broken = tmp_path / "broken"
    shutil.copytree(staged, broken)
    card = broken / "README.md"
    card.write_text(card.read_text().replace("---\n", "---\nlicense: [unclosed\n", 1))
    with pytest.raises(PushError, match=r"the Hub refused README.md's metadata: .*Invalid YAML.*Nothing was committed"):
        push_folder(broken, "stentor/validated", commit_message="broken")
    assert HfApi(endpoint=hub_env.url, token=TOKEN).model_info("stentor/validated").sha == before
    assert any(path == "/api/validate-yaml" for _, path in hub_env.requests)


def test_visibility_settings_endpoint_is_owner_only(hub_env, staged):
    from huggingface_hub.errors import HfHubHTTPError

    push_folder(staged, "stentor/owned", commit_message="x")
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=hub_env.url, token=False).update_repo_settings("stentor/owned", private=True)
    assert HfApi(endpoint=hub_env.url, token=TOKEN).model_info("stentor/owned").private is False


def test_a_server_that_never_answers_times_out_and_says_what(staged, monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does), never answers a byte
    accepted = []
    stop = threading.Event()

    def hold():
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    started = time.perf_counter()
    try:
        with pytest.raises(PublishError) as error:
            push_folder(staged, "stentor/silent", commit_message="x", timeout=1.0)
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        silent.close()
    message = str(error.value)
    assert "did not answer within 1 s while creating the repository" in message and "timed out" in message
    assert TOKEN not in message and "Nothing was committed" in message
    assert time.perf_counter() - started < 60


# --- the card template runs sandboxed ---------------------------------------------------------


@pytest.mark.parametrize("template", [
    "{{ f.__class__.__init__.__globals__['os'].environ }}",
    "{{ lipsum.__globals__['os'].environ['HF_TOKEN'] }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ f.run_dir.joinpath('run_manifest.json').read_text() }}",
    "{{ f.tokenizer_dir.parent.parent.iterdir() | list }}",
])
def test_a_template_cannot_reach_the_environment_or_files(fake_run, tmp_path, monkeypatch, template):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "model_card.md.j2").write_text(template)
    facts = ModelCardFacts.from_run(fake_run)
    with pytest.raises(CardError, match="sandbox|does not exist") as error:
        render_card(facts, folder)
    assert TOKEN not in str(error.value)


def test_a_template_cannot_include_files_outside_its_folder(fake_run, tmp_path):
    (tmp_path / "secret.txt").write_text("SECRET")
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "link.txt").symlink_to(tmp_path / "secret.txt")
    facts = ModelCardFacts.from_run(fake_run)
    for include in ("../secret.txt", "link.txt", str(tmp_path / "secret.txt")):
        (folder / "model_card.md.j2").write_text(f"{{% include '{include}' %}}")
        with pytest.raises(CardError, match="not in the template folder"):
            render_card(facts, folder)
    (folder / "model_card.md.j2").write_text("Model {{ f.model_name }}")  # formatting the facts still works
    assert "Model " in render_card(facts, folder)

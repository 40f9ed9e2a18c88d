"""The local Hub server against the real huggingface_hub client (HTTP on 127.0.0.1, no mocks)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import urllib.error
import urllib.request
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

sys.path.insert(0, str(Path(__file__).parent))
from hub_server import DIE_DURING_LFS_UPLOAD, HubServer, start_server_process  # noqa: E402

ALICE, BOB = "hf_alice_TESTTOKEN_0123456789", "hf_bob_TESTTOKEN_9876543210"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with HubServer(tmp_path_factory.mktemp("hub"), {ALICE: "alice", BOB: "bob"}) as server:
        yield server


@pytest.fixture(autouse=True)
def no_xet(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # read at import; the server speaks LFS only


def http(method: str, url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """A plain stdlib request: (status, headers, body), without the client's interpretation."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def api(hub, token=ALICE) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def commit_files(hub, repo_id: str, files: dict[str, bytes], message="add files", token=ALICE, **kwargs):
    ops = [CommitOperationAdd(path, data) for path, data in files.items()]
    return api(hub, token).create_commit(repo_id, ops, commit_message=message, **kwargs)


def test_commit_and_download_regular_and_lfs_files(hub, tmp_path):
    client = api(hub)
    url = client.create_repo("alice/roundtrip")
    assert url == f"{hub.url}/alice/roundtrip"
    weights = os.urandom(50_000)
    info = commit_files(hub, "alice/roundtrip", {"model.safetensors": weights, "config.json": b'{"a": 1}',
                                                 "sub/notes.txt": b"hello"})
    assert info.commit_url == f"{hub.url}/alice/roundtrip/commit/{info.oid}"
    assert client.model_info("alice/roundtrip").sha == info.oid
    assert any(m == "POST" and p == "/alice/roundtrip.git/info/lfs/objects/batch" for m, p in hub.requests)
    assert any(m == "PUT" and p.startswith("/__lfs__/upload/") for m, p in hub.requests)  # basic LFS transfer

    tree = {f.path: f for f in client.list_repo_tree("alice/roundtrip", recursive=True)}
    assert set(tree) == {".gitattributes", "model.safetensors", "config.json", "sub", "sub/notes.txt"}
    assert tree["model.safetensors"].lfs.sha256 == hashlib.sha256(weights).hexdigest()
    assert tree["config.json"].lfs is None
    assert [c.title for c in client.list_repo_commits("alice/roundtrip")] == ["add files", "initial commit"]

    for name, data in (("model.safetensors", weights), ("sub/notes.txt", b"hello")):
        path = hf_hub_download("alice/roundtrip", name, endpoint=hub.url, token=ALICE, cache_dir=tmp_path)
        assert Path(path).read_bytes() == data
    # a download is cached under the commit the server reported in X-Repo-Commit
    assert (tmp_path / "models--alice--roundtrip" / "snapshots" / info.oid / "model.safetensors").is_file()


def test_resolve_headers_the_client_checks(hub):
    data = os.urandom(1000)
    api(hub).create_repo("alice/headers")
    info = commit_files(hub, "alice/headers", {"w.bin": data, "r.txt": b"0123456789"})
    status, headers, _ = http("HEAD", f"{hub.url}/alice/headers/resolve/main/w.bin")
    assert status == 200
    assert headers["X-Repo-Commit"] == info.oid
    assert headers["X-Linked-Etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert headers["X-Linked-Size"] == "1000" and headers["Content-Length"] == "1000"
    _, regular, _ = http("HEAD", f"{hub.url}/alice/headers/resolve/main/r.txt")
    git_oid = hashlib.sha1(b"blob 10\0" + b"0123456789").hexdigest()
    assert regular["ETag"] == f'"{git_oid}"' and "X-Linked-Etag" not in regular
    status, _, body = http("GET", f"{hub.url}/alice/headers/resolve/{info.oid}/r.txt", {"Range": "bytes=3-"})
    assert status == 206 and body == b"3456789"
    status, missing, _ = http("HEAD", f"{hub.url}/alice/headers/resolve/main/nope.txt")
    assert status == 404 and missing["X-Error-Code"] == "EntryNotFound"
    with pytest.raises(RevisionNotFoundError):
        api(hub).model_info("alice/headers", revision="no-such-branch")


def test_unchanged_content_makes_no_commit(hub):
    api(hub).create_repo("alice/same")
    files = {"model.safetensors": b"x" * 3000, "README.md": b"# same\n"}
    first = commit_files(hub, "alice/same", files, message="one")
    second = commit_files(hub, "alice/same", files, message="two")
    assert second.oid == first.oid
    assert len(api(hub).list_repo_commits("alice/same")) == 2  # initial + one
    third = commit_files(hub, "alice/same", {**files, "README.md": b"# changed\n"}, message="three")
    assert third.oid != first.oid
    assert [c.title for c in api(hub).list_repo_commits("alice/same")][0] == "three"


def test_auth_wrong_token_anonymous_write_other_namespace_private(hub):
    api(hub).create_repo("alice/auth")
    with pytest.raises(HfHubHTTPError) as wrong:
        api(hub, token="hf_WRONG_token_000").model_info("alice/auth")
    assert wrong.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as anonymous:
        api(hub, token=False).create_repo("alice/anon")
    assert anonymous.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as foreign:
        commit_files(hub, "alice/auth", {"a.txt": b"a"}, token=BOB)
    assert foreign.value.response.status_code == 403
    assert api(hub, token=False).model_info("alice/auth").sha  # public: readable without a token

    api(hub).create_repo("alice/secret", private=True)
    assert api(hub).model_info("alice/secret").private is True
    for token in (BOB, False):
        with pytest.raises(RepositoryNotFoundError):
            api(hub, token=token).model_info("alice/secret")


def test_branches_and_parent_commit(hub):
    client = api(hub)
    client.create_repo("alice/branches")
    main_head = client.model_info("alice/branches").sha
    client.create_branch("alice/branches", branch="dev")
    client.create_branch("alice/branches", branch="dev", exist_ok=True)
    on_dev = commit_files(hub, "alice/branches", {"d.txt": b"dev"}, revision="dev")
    assert client.model_info("alice/branches", revision="dev").sha == on_dev.oid
    assert client.model_info("alice/branches").sha == main_head
    with pytest.raises(HfHubHTTPError) as stale:
        commit_files(hub, "alice/branches", {"e.txt": b"e"}, parent_commit="0" * 40)
    assert stale.value.response.status_code == 412


def test_invalid_readme_metadata_is_refused_before_upload(hub):
    api(hub).create_repo("alice/yaml")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        commit_files(hub, "alice/yaml", {"README.md": b"---\nlicense: [unclosed\n---\n# x\n"})
    assert [c.title for c in api(hub).list_repo_commits("alice/yaml")] == ["initial commit"]


def test_server_killed_mid_upload_leaves_previous_commit(tmp_path):
    """A server process killed while an LFS upload streams in restarts at the previous commit."""
    storage = tmp_path / "storage"
    server, url = start_server_process(storage, {ALICE: "alice"})
    try:
        HfApi(endpoint=url, token=ALICE).create_repo("alice/crash")
        before = commit_files_at(url, "alice/crash", {"model.safetensors": b"1" * 200_000}).oid
        (storage / DIE_DURING_LFS_UPLOAD).touch()
        # the uploader runs in its own process: after the kill, the client retries with backoff
        uploader = subprocess.Popen([sys.executable, "-c", _UPLOAD_SCRIPT, url, ALICE],
                                    env={**os.environ, "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert server.wait(timeout=60) == -9  # SIGKILL, raised by the server itself mid-body
        uploader.kill()
        uploader.wait()
    finally:
        server.kill()
        server.wait()
    server, url = start_server_process(storage, {ALICE: "alice"})
    try:
        client = HfApi(endpoint=url, token=ALICE)
        assert client.model_info("alice/crash").sha == before
        assert [c.title for c in client.list_repo_commits("alice/crash")] == ["add files", "initial commit"]
        assert http("GET", f"{url}/alice/crash/resolve/main/model.safetensors")[2] == b"1" * 200_000
        after = commit_files_at(url, "alice/crash", {"model.safetensors": b"2" * 200_000}).oid  # and it still works
        assert after != before
    finally:
        server.kill()
        server.wait()


_UPLOAD_SCRIPT = """
import sys
from huggingface_hub import CommitOperationAdd, HfApi
HfApi(endpoint=sys.argv[1], token=sys.argv[2]).create_commit(
    "alice/crash", [CommitOperationAdd("model.safetensors", b"2" * 200_000)], commit_message="second")
"""


def commit_files_at(url: str, repo_id: str, files: dict[str, bytes]):
    ops = [CommitOperationAdd(path, data) for path, data in files.items()]
    return HfApi(endpoint=url, token=ALICE).create_commit(repo_id, ops, commit_message="add files")

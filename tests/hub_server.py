"""A small local server that speaks enough of the Hugging Face Hub's HTTP protocol for the real
``huggingface_hub`` client (with ``HF_HUB_DISABLE_XET=1``) and ``transformers`` to create a repo,
commit files (regular and LFS, basic transfer) and download them again.

Standard library only, so it also runs as its own process (``HUB_SERVER_TOKENS={"TOKEN": "USER"}
python tests/hub_server.py --storage DIR``, or :func:`start_server_process`), which a
test can kill mid-upload and restart over the same storage.

Storage (a folder, so a restarted server sees the same state)::

    objects/<sha256>                 file contents, content-addressed
    repos/<type>s/<owner>/<name>.json  {"private", "branches": {name: commit}, "commits": {oid: {...}}}

A commit is a full snapshot of the file table (path -> sha256, size, lfs). It becomes visible only
when the repo's JSON is replaced (``os.replace``) after every object it names is stored, so a
server killed at any point leaves each branch at its previous commit.

Endpoints (``{t}`` = ``models``, ``datasets`` or ``spaces``; ``[/{t}]`` is empty for models; revisions are
percent-encoded branch names or commit ids):

    GET  /api/whoami-v2, /api/agent-harnesses
    POST /api/repos/create                        409 when it exists; a Space needs its ``sdk``
    POST /api/validate-yaml                       400 when the README front matter is not YAML
    GET  /api/{t}/OWNER/NAME[/revision/REV]       repo info (sha, siblings)
    POST /api/{t}/OWNER/NAME/preupload/REV        upload mode (regular | lfs) and the remote oid
    POST /api/{t}/OWNER/NAME/branch/BRANCH        create a branch (startingPoint: a revision; default main)
    POST /api/{t}/OWNER/NAME/commit/REV           NDJSON commit (header, file, lfsFile, deletedFile, deletedFolder)
    GET  /api/{t}/OWNER/NAME/commits/REV          history, newest first
    GET  /api/{t}/OWNER/NAME/tree/REV[/PATH]      file listing (?recursive=true)
    POST [/{t}]/OWNER/NAME.git/info/lfs/objects/batch   LFS batch API, basic transfer
    PUT  /api/{t}/OWNER/NAME/settings             visibility ("private" / "public"; owner only)
    PUT  /__lfs__/upload/OID?sig=...              the upload URL the batch answer hands out (no auth, as S3)
    POST /__lfs__/verify/OID
    HEAD|GET [/{t}]/OWNER/NAME/resolve/REV/PATH   with ETag, X-Repo-Commit, X-Linked-Etag/-Size, Range

Auth: ``Authorization: Bearer TOKEN``; an unknown token is refused everywhere with 401; writing needs
the token of the namespace's owner; private repos are invisible (404) to everyone else.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Files stored as LFS, as in the .gitattributes the Hub writes into every new repo (a subset).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.safetensors", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.msgpack",
                    "*.npy", "*.npz", "*.pkl", "*.pickle", "*.gz", "*.zip", "*.tar", "*.model", "*tfevents*")
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores anything this large as LFS whatever its name
DIE_DURING_LFS_UPLOAD = "DIE_DURING_LFS_UPLOAD"  # trigger file in the storage folder (see _lfs_upload)
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
SPACE_SDKS = ("gradio", "docker", "static", "streamlit")  # what the Hub accepts as a Space's sdk
TOKENS_ENV = "HUB_SERVER_TOKENS"  # {"token": "user", ...} for the server run as a process


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """An HTTP error answer: status, the ``X-Error-Code`` the client dispatches on, a message."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubStorage:
    """Repositories and objects in a folder. All writes go to a temporary name, then ``os.replace``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    # objects
    def object_path(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise HubError(400, f"invalid sha256 oid: {sha256!r}")
        return self.root / "objects" / sha256

    def has_object(self, sha256: str) -> bool:
        return self.object_path(sha256).is_file()

    def put_object(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_object(sha256):
            self._write_atomic(self.object_path(sha256), data)
        return sha256

    def read_object(self, sha256: str) -> bytes:
        return self.object_path(sha256).read_bytes()

    # repos
    def repo_path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / f"{repo_id}.json"

    def load_repo(self, repo_type: str, repo_id: str) -> dict | None:
        path = self.repo_path(repo_type, repo_id)
        return json.loads(path.read_text()) if path.is_file() else None

    def save_repo(self, repo_type: str, repo_id: str, repo: dict) -> None:
        self._write_atomic(self.repo_path(repo_type, repo_id), json.dumps(repo, indent=1, sort_keys=True).encode())

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def file_entry(self, data: bytes, path: str, gitattributes: str) -> dict:
        """The tree entry for ``data`` stored at ``path``."""
        sha256 = self.put_object(data)
        return {"sha256": sha256, "size": len(data), "lfs": is_lfs_path(path, len(data), gitattributes)}

    def new_commit(self, repo: dict, parent: str | None, files: dict, title: str, message: str, author: str) -> str:
        body = json.dumps({"parent": parent, "files": files, "title": title, "date": _now(), "nonce": secrets.token_hex(4)},
                          sort_keys=True)
        oid = hashlib.sha1(body.encode()).hexdigest()
        repo["commits"][oid] = {"parent": parent, "files": files, "title": title, "message": message,
                                "author": author, "date": _now()}
        return oid


def is_lfs_path(path: str, size: int, gitattributes: str) -> bool:
    if size >= LFS_SIZE_THRESHOLD:
        return True
    name = path.rsplit("/", 1)[-1]
    for line in gitattributes.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "filter=lfs" in parts[1:] and (fnmatch.fnmatch(name, parts[0]) or fnmatch.fnmatch(path, parts[0])):
            return True
    return False


class HubServer:
    """The server. ``tokens`` maps a token to its user name. ``requests`` logs ``(method, path)``."""

    def __init__(self, storage: str | os.PathLike, tokens: dict[str, str], host: str = "127.0.0.1", port: int = 0,
                 delay: float = 0.0):
        self.delay = delay  # seconds before each answer: a slow network, for tests of long downloads
        self.storage = HubStorage(storage)
        self.tokens = dict(tokens)
        self.requests: list[tuple[str, str]] = []
        self.signing_key = secrets.token_bytes(16)
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # helpers the tests use
    def branch_head(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> str | None:
        repo = self.storage.load_repo(repo_type, repo_id)
        return None if repo is None else repo["branches"].get(branch)

    def sign(self, oid: str) -> str:
        return hmac.new(self.signing_key, oid.encode(), hashlib.sha256).hexdigest()

    def add_parquet_dataset(self, repo_id: str, parquet: str | os.PathLike, token: str) -> None:
        """Create dataset ``repo_id`` with ``parquet`` as its train split, laid out as the Hub lays
        out parquet data (through the real client; ``token`` must own the namespace)."""
        from huggingface_hub import HfApi

        api = HfApi(endpoint=self.url, token=token)
        api.create_repo(repo_id, repo_type="dataset")
        api.upload_file(path_or_fileobj=str(parquet), path_in_repo="data/train-00000-of-00001.parquet",
                        repo_id=repo_id, repo_type="dataset")

    def client_env(self, hf_home: str | os.PathLike) -> dict[str, str]:
        """Environment for a client process of this server: no HF_* settings of the caller's, the
        endpoint, no Xet, a private HF_HOME."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
        env.update(HF_ENDPOINT=self.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(hf_home))
        return env


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    server_version = "StentorLocalHub/1"

    def log_message(self, format, *args):  # quiet: tests read hub.requests instead
        pass

    # plumbing
    @property
    def endpoint(self) -> str:
        return f"http://{self.headers.get('Host') or self.hub.url.split('//', 1)[1]}"

    def _body(self) -> bytes:
        if self._raw_body is None:
            self._raw_body = self._read_body()
        return self._raw_body

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json", headers: dict | None = None,
              content_length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if content_length is None else content_length))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _user(self) -> str | None:
        """The user the request is authenticated as; ``None`` when anonymous; 401 for an unknown token."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        token = auth.split(" ", 1)[1].strip() if auth.lower().startswith("bearer ") else auth.strip()
        for known, user in self.hub.tokens.items():
            if hmac.compare_digest(known, token):
                return user
        raise HubError(401, "Invalid credentials in Authorization header")

    def _dispatch(self) -> None:
        self.hub.requests.append((self.command, self.path))
        if self.hub.delay:
            time.sleep(self.hub.delay)
        self._raw_body = None
        try:
            self._route()
        except HubError as e:
            self._body()  # drain what the client sent, or the next request on this connection reads it
            headers = {"X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            body = b"" if self.command == "HEAD" else json.dumps({"error": e.message}).encode()
            self._send(e.status, body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        method = self.command
        if parts[:2] == ["api", "whoami-v2"]:
            user = self._user()
            if user is None:
                raise HubError(401, "You must be authenticated to call whoami")
            return self._json({"type": "user", "name": user, "auth": {"type": "access_token"}})
        if parts[:2] == ["api", "agent-harnesses"]:  # the client's user-agent registry: none here
            return self._json({"standardEnvVars": [], "harnesses": {}})
        if parts[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create_repo(json.loads(self._body() or b"{}"))
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(self._body() or b"{}"))
        if len(parts) >= 4 and parts[0] == "api" and parts[1] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[parts[1]], f"{parts[2]}/{parts[3]}", parts[4:]
            if not rest and method == "GET":
                return self._repo_info(repo_type, repo_id, "main")
            if len(rest) >= 2 and rest[0] == "revision" and method == "GET":
                return self._repo_info(repo_type, repo_id, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "preupload" and method == "POST":
                return self._preupload(repo_type, repo_id, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "commit" and method == "POST":
                return self._commit(repo_type, repo_id, "/".join(rest[1:]))
            if len(rest) >= 2 and rest[0] == "branch" and method == "POST":
                return self._create_branch(repo_type, repo_id, "/".join(rest[1:]), json.loads(self._body() or b"{}"))
            if len(rest) >= 2 and rest[0] == "commits" and method == "GET":
                return self._commits(repo_type, repo_id, rest[1])
            if rest == ["settings"] and method == "PUT":
                return self._update_settings(repo_type, repo_id, json.loads(self._body() or b"{}"))
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]), recursive)
        if parts[:2] == ["__lfs__", "upload"] and method == "PUT":
            return self._lfs_upload(parts[2], query.get("sig", [""])[0])
        if parts[:2] == ["__lfs__", "verify"] and method == "POST":
            return self._lfs_verify(parts[2], json.loads(self._body() or b"{}"))
        repo_type = "model"
        if parts and parts[0] in ("datasets", "spaces"):
            repo_type, parts = REPO_TYPES[parts[0]], parts[1:]
        if len(parts) >= 5 and parts[1].endswith(".git") and parts[2:5] == ["info", "lfs", "objects"] and method == "POST":
            return self._lfs_batch(repo_type, f"{parts[0]}/{parts[1][:-4]}", json.loads(self._body() or b"{}"))
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
        raise HubError(404, f"no such endpoint: {method} {url.path}")

    # repos and revisions
    def _readable_repo(self, repo_type: str, repo_id: str) -> dict:
        user = self._user()
        repo = self.hub.storage.load_repo(repo_type, repo_id)
        if repo is None or (repo["private"] and user != repo_id.split("/")[0]):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def _writable_repo(self, repo_type: str, repo_id: str) -> tuple[dict, str]:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repository")
        repo = self._readable_repo(repo_type, repo_id)
        if user != repo_id.split("/")[0]:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo, user

    @staticmethod
    def _resolve_revision(repo: dict, revision: str) -> str:
        if revision in repo["branches"]:
            return repo["branches"][revision]
        if revision in repo["commits"]:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _create_repo(self, payload: dict) -> None:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        name, owner = payload.get("name"), payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        if not name or not re.fullmatch(r"[\w.-]+", name) or repo_type not in REPO_TYPES.values():
            raise HubError(400, f"invalid repository name or type: {name!r} ({repo_type})")
        if owner != user:
            raise HubError(403, f"You don't have the rights to create a repository under {owner}")
        if repo_type == "space" and payload.get("sdk") not in SPACE_SDKS:
            raise HubError(400, f"a Space needs an sdk, one of {', '.join(SPACE_SDKS)}; got {payload.get('sdk')!r}")
        repo_id = f"{owner}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.endpoint}/{prefix}{repo_id}"
        with self.hub.storage.lock:
            if self.hub.storage.load_repo(repo_type, repo_id) is not None:
                return self._json({"error": "You already created this repo", "url": url}, status=409)
            repo = {"private": payload.get("visibility") == "private" or bool(payload.get("private")),
                    "branches": {}, "commits": {}, "created": _now()}
            if repo_type == "space":
                repo["sdk"] = payload["sdk"]
            files = {".gitattributes": self.hub.storage.file_entry(DEFAULT_GITATTRIBUTES.encode(), ".gitattributes", "")}
            repo["branches"]["main"] = self.hub.storage.new_commit(repo, None, files, "initial commit", "", user)
            self.hub.storage.save_repo(repo_type, repo_id, repo)
        self._json({"url": url, "name": repo_id, "id": secrets.token_hex(12)})

    def _validate_yaml(self, payload: dict) -> None:
        import yaml  # the client's own dependency; only this endpoint needs it

        content = payload.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        if match:
            try:
                data = yaml.safe_load(match.group(1))
                if data is not None and not isinstance(data, dict):
                    raise ValueError("metadata is not a mapping")
            except Exception as e:
                return self._json({"errors": [{"message": f"Invalid YAML: {e}"}], "warnings": []}, status=400)
        self._json({"errors": [], "warnings": []})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._readable_repo(repo_type, repo_id)
        sha = self._resolve_revision(repo, revision)
        commit = repo["commits"][sha]
        info = {
            "id": repo_id, "modelId": repo_id, "author": repo_id.split("/")[0], "sha": sha, "private": repo["private"],
            "lastModified": commit["date"], "createdAt": repo["created"], "tags": [], "downloads": 0, "likes": 0,
            "siblings": [{"rfilename": path} for path in sorted(commit["files"])],
        }
        if repo_type == "space":
            info["sdk"] = repo["sdk"]
        self._json(info)

    def _update_settings(self, repo_type: str, repo_id: str, payload: dict) -> None:
        """``PUT /api/<type>s/<id>/settings`` (``update_repo_settings``): visibility, owner only."""
        self._writable_repo(repo_type, repo_id)
        visibility = payload.get("visibility")
        if visibility is None and "private" in payload:
            visibility = "private" if payload["private"] else "public"
        if visibility not in (None, "public", "private"):
            raise HubError(400, f"invalid visibility: {visibility!r}")
        with self.hub.storage.lock:
            repo = self.hub.storage.load_repo(repo_type, repo_id)
            if visibility is not None:
                repo["private"] = visibility == "private"
            self.hub.storage.save_repo(repo_type, repo_id, repo)
        self._json({"private": repo["private"]})

    def _create_branch(self, repo_type: str, repo_id: str, branch: str, payload: dict) -> None:
        self._writable_repo(repo_type, repo_id)
        with self.hub.storage.lock:
            repo = self.hub.storage.load_repo(repo_type, repo_id)
            if branch in repo["branches"]:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            repo["branches"][branch] = self._resolve_revision(repo, payload.get("startingPoint") or "main")
            self.hub.storage.save_repo(repo_type, repo_id, repo)
        self._json({"success": True})

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo = self._readable_repo(repo_type, repo_id)
        sha, history = self._resolve_revision(repo, revision), []
        while sha is not None:
            commit = repo["commits"][sha]
            history.append({"id": sha, "title": commit["title"], "message": commit["message"], "date": commit["date"],
                            "authors": [{"user": commit["author"]}]})
            sha = commit["parent"]
        self._json(history)

    def _tree(self, repo_type: str, repo_id: str, revision: str, prefix: str, recursive: bool) -> None:
        repo = self._readable_repo(repo_type, repo_id)
        files = repo["commits"][self._resolve_revision(repo, revision)]["files"]
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        if prefix and prefix not in files and not any(p.startswith(base) for p in files):
            raise HubError(404, f"{prefix} does not exist", "EntryNotFound")
        entries, folders = [], set()
        for path in sorted(files):
            if not path.startswith(base):
                continue
            rest = path[len(base):].split("/")
            for depth in range(1, len(rest)):
                if depth == 1 or recursive:
                    folders.add(base + "/".join(rest[:depth]))
            if len(rest) == 1 or recursive:
                entries.append(self._file_json(path, files[path]))
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f} for f in sorted(folders)]
        self._json(entries)

    def _file_json(self, path: str, entry: dict) -> dict:
        data = {"type": "file", "path": path, "size": entry["size"], "oid": self._git_oid(entry)}
        if entry["lfs"]:
            data["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                           "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
        return data

    def _git_oid(self, entry: dict) -> str:
        if entry["lfs"]:
            return git_blob_oid(lfs_pointer(entry["sha256"], entry["size"]))
        return git_blob_oid(self.hub.storage.read_object(entry["sha256"]))

    # uploads
    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo, _ = self._writable_repo(repo_type, repo_id)
        files = repo["commits"][self._resolve_revision(repo, revision)]["files"]
        payload = json.loads(self._body() or b"{}")
        gitattributes = self._gitattributes(files)
        answer = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item["size"])
            lfs = is_lfs_path(path, size, gitattributes)
            remote = files.get(path)
            # The client compares this with its own oid to drop unchanged files: sha256 for LFS, git sha1 otherwise.
            oid = None if remote is None else (remote["sha256"] if lfs and remote["lfs"] else self._git_oid(remote))
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._json({"files": answer, "commitOid": repo["branches"].get(revision)})

    def _gitattributes(self, files: dict) -> str:
        entry = files.get(".gitattributes")
        return "" if entry is None else self.hub.storage.read_object(entry["sha256"]).decode(errors="replace")

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict) -> None:
        self._writable_repo(repo_type, repo_id)
        if payload.get("operation") != "upload":
            raise HubError(400, "only the upload operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            answer = {"oid": oid, "size": size, "authenticated": True}
            if not self.hub.storage.has_object(oid):  # else: already there, no actions = nothing to upload
                answer["actions"] = {
                    "upload": {"href": f"{self.endpoint}/__lfs__/upload/{oid}?sig={self.hub.sign(oid)}", "header": {}},
                    "verify": {"href": f"{self.endpoint}/__lfs__/verify/{oid}", "header": {}},
                }
            objects.append(answer)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, oid: str, sig: str) -> None:
        if not hmac.compare_digest(sig, self.hub.sign(oid)):
            raise HubError(403, "invalid or expired upload signature")
        trigger = self.hub.storage.root / DIE_DURING_LFS_UPLOAD
        if trigger.exists():  # a test asked this server to be killed in the middle of an upload
            trigger.unlink()
            self.rfile.read(max(1, int(self.headers.get("Content-Length") or 2) // 2))
            os.kill(os.getpid(), signal.SIGKILL)
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not match sha256 {oid}")
        self.hub.storage.put_object(data)
        self._send(200, b"", headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, oid: str, payload: dict) -> None:
        self._user()
        path = self.hub.storage.object_path(oid)
        if not path.is_file() or path.stat().st_size != int(payload.get("size", -1)):
            raise HubError(404, f"LFS object {oid} is missing or has the wrong size")
        self._json({"success": True})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        _, user = self._writable_repo(repo_type, repo_id)
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the commit payload must start with a header line")
        header = lines[0]["value"]
        storage = self.hub.storage
        with storage.lock:
            repo = storage.load_repo(repo_type, repo_id)
            parent = self._resolve_revision(repo, revision)
            if revision != parent and revision not in repo["branches"]:
                raise HubError(400, f"can only commit to a branch, not {revision}")
            if header.get("parentCommit") and header["parentCommit"] != parent:
                raise HubError(412, f"A commit has happened since. Parent {header['parentCommit']} is not the head {parent}")
            files = dict(repo["commits"][parent]["files"])
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                    files[value["path"]] = {"sha256": storage.put_object(data), "size": len(data), "lfs": False}
                elif key == "lfsFile":
                    if not storage.has_object(value["oid"]):
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    size = storage.object_path(value["oid"]).stat().st_size
                    files[value["path"]] = {"sha256": value["oid"], "size": size, "lfs": True}
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {p: e for p, e in files.items() if not p.startswith(folder)}
                else:
                    raise HubError(400, f"unsupported commit operation: {key}")
            oid = storage.new_commit(repo, parent, files, header.get("summary", ""), header.get("description", ""), user)
            repo["branches"][revision if revision in repo["branches"] else "main"] = oid
            storage.save_repo(repo_type, repo_id, repo)  # the one atomic step that publishes the commit
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._json({"success": True, "commitOid": oid, "commitUrl": f"{self.endpoint}/{prefix}{repo_id}/commit/{oid}",
                    "hookOutput": "", "pullRequestUrl": None})

    # downloads
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._readable_repo(repo_type, repo_id)
        sha = self._resolve_revision(repo, revision)
        entry = repo["commits"][sha]["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{self._git_oid(entry)}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["sha256"]}"', "X-Linked-Size": str(entry["size"])})
        data = self.hub.storage.read_object(entry["sha256"]) if self.command == "GET" else b""
        status, length = 200, entry["size"]
        range_header = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if match and self.command == "GET":
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else entry["size"] - 1
            if start >= entry["size"]:
                raise HubError(416, "range not satisfiable")
            data, status = data[start:end + 1], 206
            length = len(data)
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{entry['size']}"
        self._send(status, data, content_type="application/octet-stream", headers=headers, content_length=length)


def start_server_process(storage: str | os.PathLike, tokens: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """This server in its own process (which a test can kill); returns it and its URL once it listens.
    ``tokens`` maps a token to its user."""
    args = [sys.executable, str(Path(__file__).resolve()), "--storage", str(storage)]
    env = {**os.environ, TOKENS_ENV: json.dumps(tokens)}  # not argv: other processes can read that
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # "READY URL", or nothing when it failed to start
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"hub server did not start: {line!r}")
    return proc, line.split()[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="folder holding the repos and objects (kept across restarts)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    args = parser.parse_args(argv)
    tokens = json.loads(os.environ.get(TOKENS_ENV) or "{}")
    server = HubServer(args.storage, tokens, port=args.port)
    print(f"READY {server.url}", flush=True)  # the parent process waits for this line
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A stand-in for the Hugging Face hub on 127.0.0.1, for tests: repos served from local folders in the hub's shape.

    with HubStandin() as hub:
        hub.add_repo("org/tiny-sd", folder, extra={"flax_model.msgpack": b"..."})
        hub.add_repo("org/gated", folder, gated=True)            # 401 without a token, 403 with one not allowed
        hub.add_repo("org/flaky", folder, drop_once={"big.bin"})  # the connection drops half-way, the first time
        monkeypatch.setenv("HF_ENDPOINT", hub.url)

It answers what huggingface_hub 2.4 asks when fetching a model (see ``hf_api.py`` and ``file_download.py``):

- ``GET /api/models/{repo}[/revision/{rev}]``: ``id``, ``sha`` and ``siblings`` (``rfilename``; with ``?blobs=true``
  also ``size``, ``blobId`` and ``lfs`` {``sha256``, ``size``, ``pointerSize``}), ``gated``.
- ``GET /api/models/{repo}/tree/{rev}``: the files as ``{"type": "file", "path", "size", "oid", "lfs"}``.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob id) or ``X-Linked-Etag``
  (sha256 of an LFS file) and ``X-Linked-Size``, ``Content-Length``, ``Accept-Ranges``; ``Range: bytes=N-`` gives
  206 with ``Content-Range``.
- Errors as the hub sends them: ``X-Error-Code`` ``RepoNotFound`` (401), ``RevisionNotFound`` / ``EntryNotFound``
  (404) and ``GatedRepo`` (401 without a token, 403 with a token that has not accepted the licence) with an
  ``X-Error-Message``.

Files of 1 kB and more, and weights, are served as LFS files (their ETag is the sha256), others as git blobs.
`bytes_served` counts the body bytes sent per path, `requests` records (method, path, Range header).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_LFS_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".ckpt", ".pt", ".onnx", ".npy", ".h5")


@dataclass
class _File:
    data: bytes
    lfs: bool
    sha256: str
    blob_id: str


@dataclass
class _Repo:
    repo_id: str
    files: dict[str, _File]
    commit: str
    gated: bool = False
    tokens: set[str] = field(default_factory=set)
    drop_once: set[str] = field(default_factory=set)
    rate: float | None = None  # bytes a second its files are sent at (None: as fast as the socket goes)


def _file(path: str, data: bytes) -> _File:
    lfs = path.endswith(_LFS_SUFFIXES) or len(data) >= 1024
    sha256 = hashlib.sha256(data).hexdigest()
    if lfs:  # the blob id of an LFS file is that of its pointer file
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
        blob_id = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
    else:
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    return _File(data, lfs, sha256, blob_id)


class HubStandin:
    """A threaded HTTP server in the Hugging Face hub's shape; see the module's docstring."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.bytes_served: Counter[str] = Counter()
        self.requests: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                standin._handle(self, body=True)

            def do_HEAD(self) -> None:
                standin._handle(self, body=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubStandin":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "HubStandin":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def add_repo(self, repo_id: str, folder: str | Path | None = None, *, extra: dict[str, bytes] | None = None,
                 gated: bool = False, tokens: set[str] | None = None, drop_once: set[str] | None = None,
                 rate: float | None = None) -> str:
        """Serve `folder`'s files (and `extra` ones) as `repo_id` (at `rate` bytes a second when given, so a
        download lasts long enough to watch and cancel); returns the commit hash of its ``main``."""
        files: dict[str, _File] = {}
        if folder is not None:
            root = Path(folder)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                files[path.relative_to(root).as_posix()] = _file(path.name, path.read_bytes())
        for name, data in (extra or {}).items():
            files[name] = _file(name, data)
        digest = hashlib.sha1(repo_id.encode())
        for name, f in sorted(files.items()):
            digest.update(name.encode() + f.sha256.encode())
        repo = _Repo(repo_id, files, digest.hexdigest(), gated, set(tokens or ()), set(drop_once or ()), rate)
        self.repos[repo_id] = repo
        return repo.commit

    # -- the handler ---------------------------------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, *, body: bool) -> None:
        parts = urlsplit(req.path)
        path = unquote(parts.path)
        with self._lock:
            self.requests.append((req.command, path, req.headers.get("Range")))
        if path.startswith("/api/models/"):
            return self._api(req, path[len("/api/models/"):], parts.query, body)
        if "/resolve/" in path:
            return self._resolve(req, path.lstrip("/"), body)
        return self._error(req, 404, "RepoNotFound", "Not found", body)

    def _find(self, rest: str) -> tuple[_Repo | None, str]:
        for repo_id, repo in self.repos.items():
            if rest == repo_id or rest.startswith(repo_id + "/"):
                return repo, rest[len(repo_id):].lstrip("/")
        return None, rest

    def _revision_ok(self, repo: _Repo, revision: str) -> bool:
        return revision in ("main", repo.commit)

    def _api(self, req, rest: str, query: str, body: bool) -> None:
        repo, tail = self._find(rest)
        if repo is None:
            return self._error(req, 401, "RepoNotFound", "Repository not found", body)
        revision = "main"
        if tail.startswith("revision/"):
            revision = tail[len("revision/"):]
        elif tail.startswith("tree/"):
            revision = tail[len("tree/"):].split("/", 1)[0]
        if not self._revision_ok(repo, revision):
            return self._error(req, 404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        if tail.startswith("tree/"):
            listing = [{"type": "file", "oid": f.blob_id, "size": len(f.data), "path": name,
                        **({"lfs": {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}} if f.lfs else {})}
                       for name, f in repo.files.items()]
            return self._json(req, listing, body)
        blobs = "blobs=true" in query.lower() or "blobs=1" in query
        siblings = []
        for name, f in repo.files.items():
            sibling: dict = {"rfilename": name}
            if blobs:
                sibling.update(size=len(f.data), blobId=f.blob_id)
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}
            siblings.append(sibling)
        info = {"_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
                "private": False, "gated": "manual" if repo.gated else False, "disabled": False, "siblings": siblings,
                "tags": [], "downloads": 0, "likes": 0}
        return self._json(req, info, body)

    def _resolve(self, req, rest: str, body: bool) -> None:
        repo_part, _, tail = rest.partition("/resolve/")
        repo = self.repos.get(repo_part)
        if repo is None:
            return self._error(req, 401, "RepoNotFound", "Repository not found", body)
        revision, _, name = tail.partition("/")
        if not self._revision_ok(repo, revision):
            return self._error(req, 404, "RevisionNotFound", f"Invalid rev id: {revision}", body)
        if repo.gated:
            auth = req.headers.get("Authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            if not token:
                return self._error(req, 401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must "
                                   "have access to it and be authenticated to access it. Please log in.", body)
            if token not in repo.tokens:
                return self._error(req, 403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are "
                                   f"not in the authorized list. Visit https://huggingface.co/{repo.repo_id} to ask "
                                   "for access.", body)
        f = repo.files.get(name)
        if f is None:
            return self._error(req, 404, "EntryNotFound", f"{name} does not exist on \"{revision}\"", body)
        start = 0
        ranged = req.headers.get("Range")
        if ranged and ranged.startswith("bytes=") and body:
            first = ranged[len("bytes="):].split("-", 1)[0]
            start = int(first) if first.isdigit() else 0
            if start >= len(f.data):
                req.send_response(416)
                req.send_header("Content-Range", f"bytes */{len(f.data)}")
                req.send_header("Content-Length", "0")
                req.end_headers()
                return
        data = f.data[start:]
        req.send_response(206 if start else 200)
        req.send_header("X-Repo-Commit", repo.commit)
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("Content-Type", "application/octet-stream")
        if f.lfs:
            req.send_header("ETag", f'"{f.sha256}"')
            req.send_header("X-Linked-Etag", f'"{f.sha256}"')
            req.send_header("X-Linked-Size", str(len(f.data)))
        else:
            req.send_header("ETag", f'"{f.blob_id}"')
        if start:
            req.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if not body:
            return
        key = f"{repo.repo_id}/{name}"
        if name in repo.drop_once:
            repo.drop_once.discard(name)
            half = data[: len(data) // 2]
            req.wfile.write(half)
            req.wfile.flush()
            with self._lock:
                self.bytes_served[key] += len(half)
            req.close_connection = True
            try:
                req.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if repo.rate:
            step = 16 * 1024
            for offset in range(0, len(data), step):
                try:
                    req.wfile.write(data[offset:offset + step])
                    req.wfile.flush()
                except OSError:  # the client went away (a cancelled download)
                    return
                with self._lock:
                    self.bytes_served[key] += len(data[offset:offset + step])
                time.sleep(step / repo.rate)
            return
        req.wfile.write(data)
        with self._lock:
            self.bytes_served[key] += len(data)

    def _json(self, req, payload, body: bool) -> None:
        data = json.dumps(payload).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if body:
            req.wfile.write(data)

    def _error(self, req, status: int, code: str, message: str, body: bool) -> None:
        data = json.dumps({"error": message}).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("X-Error-Code", code)
        req.send_header("X-Error-Message", message)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        if body:
            req.wfile.write(data)


@contextlib.contextmanager
def serving_hub(monkeypatch, tmp_path: Path):
    """A started `HubStandin` with HF_ENDPOINT pointing at it, an empty hub cache in `tmp_path` (``standin.cache``),
    no token, online mode and no gated repositories remembered: the body of the tests' ``hub`` fixtures."""
    import huggingface_hub.constants

    from studio import model_store

    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    for name in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(model_store, "_GATED", set())
    with HubStandin() as standin:
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        standin.cache = cache
        yield standin

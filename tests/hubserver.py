"""A small local Hugging Face Hub for tests: the real ``huggingface_hub`` client talks to it unmodified.

It speaks the part of the Hub HTTP API that ``huggingface_hub`` (>= 1.0) and ``transformers`` use
to create repos, commit files, branch, tag and download: repo create, repo info, validate-yaml,
preupload (every file answered ``uploadMode: "regular"``, so content travels base64 inside the
NDJSON commit; no LFS, no Xet), commit, tree, paths-info, commits, refs, tag, branch, resolve
(HEAD/GET with ``ETag``, ``X-Repo-Commit``, ``Content-Length`` and the ``X-Error-Code`` headers the
client turns into ``RepositoryNotFoundError`` / ``RevisionNotFoundError`` /
``RemoteEntryNotFoundError``) and whoami.

Storage is in memory with git-like history: every commit has a 40-hex sha, a parent and a full
snapshot of the tree; revisions resolve by branch, then tag, then full sha. Nothing is ever
rewritten: a commit only appends; tags and branches can be created, and deletions are recorded
(so a test can assert that none happened).

Failure modes for tests: ``set_failure("http500", count=N)`` answers the next N requests with
HTTP 500; ``set_failure("down")`` closes the listening socket (new connections are refused) and
drops kept-alive connections without an answer; ``set_failure(None)`` restores service on the
same port.

Every request's method, path and headers are recorded in ``FakeHub.requests`` so a test can check
that the token is sent; the server itself never logs headers. File bytes sent by ``resolve`` GETs
are counted per ``repo_id/path`` in ``FakeHub.bytes_served`` (each range in ``ranges_served``);
Range requests are answered as the Hub's CDN does (``a-b``, ``a-``, ``-suffix``; 416 beyond EOF).

The pytest fixture ``local_hub`` starts one server per test and points the client at it.
``huggingface_hub`` reads ``HF_ENDPOINT`` and the cache paths into ``huggingface_hub.constants`` at
import time, so the fixture patches both the environment (for subprocesses) and those constants
(for this process).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import secrets
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_USER = "fake-user"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass
class FakeCommit:
    """One commit: a full snapshot of the tree (path -> bytes) plus history metadata."""

    sha: str
    parent: str | None
    title: str
    description: str
    files: dict[str, bytes]
    date: str
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


@dataclass
class FakeRepo:
    """One repo with branches, tags and an append-only commit store."""

    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, FakeCommit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)

    def resolve(self, revision: str) -> str | None:
        """Commit sha for a branch, tag or full sha; None when unknown."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision in self.commits:
            return revision
        return None

    def history(self, sha: str) -> list[FakeCommit]:
        """Commits from ``sha`` back to the root, newest first."""
        out = []
        cur: str | None = sha
        while cur is not None:
            commit = self.commits[cur]
            out.append(commit)
            cur = commit.parent
        return out

    def files_at(self, revision: str) -> dict[str, bytes]:
        """The tree of a revision (raises KeyError when the revision is unknown)."""
        sha = self.resolve(revision)
        if sha is None:
            raise KeyError(revision)
        return self.commits[sha].files

    def commit(
        self, branch: str, title: str, description: str, files: dict[str, bytes], added, deleted
    ):
        parent = self.branches.get(branch)
        sha = hashlib.sha1(
            f"{parent}\n{title}\n{time.time_ns()}\n{secrets.token_hex(8)}".encode()
        ).hexdigest()
        self.commits[sha] = FakeCommit(
            sha, parent, title, description, files, _now(), list(added), list(deleted)
        )
        self.branches[branch] = sha
        return sha


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class RecordedRequest:
    """Method, path (with query) and headers (names lower-cased) of one request received."""

    method: str
    path: str
    headers: dict[str, str]


class FakeHub:
    """The server: start() binds a random free port on 127.0.0.1; stop() shuts it down."""

    def __init__(self, token: str | None = None, *, require_token: bool = True):
        self.token = token or "hf_fake_" + secrets.token_hex(16)
        self.require_token = require_token
        self.repos: dict[tuple[str, str], FakeRepo] = {}
        self.requests: list[RecordedRequest] = []
        self.deletions: list[str] = []
        self.bytes_served: dict[str, int] = {}
        self.ranges_served: list[tuple[str, int, int]] = []
        self._lock = threading.RLock()
        self._failure: str | None = None
        self._failure_count: int | None = None
        # Seconds every request waits before it is answered: a slow Hub (tests of what training
        # does to pushes still queued behind it).
        self.request_delay_s = 0.0
        self._failure_match: str | None = None
        self._server: socketserver.TCPServer | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # ---------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        server = _Server(("127.0.0.1", self.port or 0), Handler)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), daemon=True, name="fake-hub"
        )
        self._thread.start()
        return self

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
            self._thread = None

    def stop(self) -> None:
        self._stop_listening()

    def set_failure(
        self, mode: str | None, count: int | None = None, match: str | None = None
    ) -> None:
        """Switch failure mode: None (healthy), "http500" (next ``count`` requests, or all; with
        ``match``, only requests whose path contains it), "down"."""
        if mode not in (None, "http500", "down"):
            raise ValueError(f"failure mode must be None, 'http500' or 'down', got {mode!r}")
        with self._lock:
            was_down = self._failure == "down"
            self._failure, self._failure_count, self._failure_match = mode, count, match
        if mode == "down" and not was_down:
            self._stop_listening()
        elif mode != "down" and was_down:
            self.start()

    def _take_failure(self, path: str = "") -> str | None:
        with self._lock:
            mode = self._failure
            if mode == "http500" and self._failure_match and self._failure_match not in path:
                return None
            if mode == "http500" and self._failure_count is not None:
                self._failure_count -= 1
                if self._failure_count <= 0:
                    self._failure, self._failure_count = None, None
            return mode

    def _count_served(self, key: str, start: int, size: int) -> None:
        with self._lock:
            self.bytes_served[key] = self.bytes_served.get(key, 0) + size
            self.ranges_served.append((key, start, size))

    # ---------------------------------------------------------------- helpers for tests
    def repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        """The stored repo (KeyError if it was never created)."""
        return self.repos[(repo_type, repo_id)]

    def url_prefix(self, repo_type: str) -> str:
        return f"{self.endpoint}/{_URL_PREFIX[repo_type]}"

    # ---------------------------------------------------------------- API implementation
    def _get_repo(self, repo_type: str, repo_id: str) -> FakeRepo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise _HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: FakeRepo, revision: str) -> str:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def create_repo(self, body: dict) -> tuple[int, dict]:
        name, org = body.get("name"), body.get("organization") or _USER
        repo_type = body.get("type") or "model"
        if not name or repo_type not in _URL_PREFIX:
            raise _HubError(400, f"invalid repo create payload: {body}")
        repo_id = f"{org}/{name}"
        url = self.url_prefix(repo_type) + repo_id
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                return 409, {"error": "You already created this model repo", "url": url}
            repo = FakeRepo(repo_id, repo_type, body.get("visibility") == "private")
            repo.commit(
                "main",
                "initial commit",
                "",
                {".gitattributes": _GITATTRIBUTES},
                [".gitattributes"],
                [],
            )
            self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": url, "name": repo_id, "id": secrets.token_hex(12)}

    def repo_info(self, repo: FakeRepo, revision: str) -> dict:
        sha = self._resolve(repo, revision)
        files = repo.commits[sha].files
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": sha,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "lastModified": repo.commits[sha].date,
            "createdAt": repo.created_at,
            "tags": [],
            "downloads": 0,
            "likes": 0,
            "siblings": [{"rfilename": p} for p in sorted(files)],
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        readme = files.get("README.md")
        if readme is not None:
            meta = _front_matter(readme.decode("utf-8", "replace"))
            if isinstance(meta, dict):
                info["cardData"] = meta
        return info

    def preupload(self, repo: FakeRepo, revision: str, body: dict) -> dict:
        sha = repo.resolve(revision)
        existing = repo.commits[sha].files if sha else {}
        out = []
        for f in body.get("files", []):
            path = f["path"]
            old = existing.get(path)
            out.append(
                {
                    "path": path,
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(old) if old is not None else None,
                }
            )
        return {"files": out, "commitOid": sha}

    def commit(self, repo: FakeRepo, revision: str, raw: bytes) -> dict:
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self._lock:
            if revision not in repo.branches:
                raise _HubError(
                    404,
                    f"Invalid rev id: {revision} (commits go to an existing branch)",
                    "RevisionNotFound",
                )
            head = repo.branches[revision]
            parent_commit = header.get("parentCommit")
            if parent_commit and parent_commit != head:
                raise _HubError(
                    412, f"parentCommit {parent_commit} is not the head of {revision} ({head})"
                )
            files = dict(repo.commits[head].files)
            added, deleted = [], []
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[path] = base64.b64decode(value["content"])
                    added.append(path)
                elif key == "deletedFile":
                    if path not in files:
                        raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[path]
                    deleted.append(path)
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    gone = [p for p in files if p.startswith(prefix)]
                    for p in gone:
                        del files[p]
                    deleted.extend(gone)
                else:
                    # lfsFile would need an LFS store; this server answers "regular" for every file.
                    raise _HubError(400, f"unsupported commit operation {key!r}")
            if deleted:
                self.deletions.extend(f"{repo.repo_id}:{p}" for p in deleted)
            sha = repo.commit(
                revision,
                header.get("summary", ""),
                header.get("description", ""),
                files,
                added,
                deleted,
            )
        return {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{self.url_prefix(repo.repo_type)}{repo.repo_id}/commit/{sha}",
            "hookOutput": "",
            "pullRequestUrl": None,
        }

    def tree(self, repo: FakeRepo, revision: str, path: str, recursive: bool) -> list[dict]:
        sha = self._resolve(repo, revision)
        files = repo.commits[sha].files
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in files):
            raise _HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
        entries: dict[str, dict] = {}
        for p, content in sorted(files.items()):
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix) :].split("/")
            depth = len(rest) if recursive else 1
            for i in range(1, min(depth, len(rest)) + 1):
                sub = prefix + "/".join(rest[:i])
                if i == len(rest):
                    entries[sub] = {
                        "type": "file",
                        "oid": git_blob_sha1(content),
                        "size": len(content),
                        "path": sub,
                    }
                elif sub not in entries:
                    entries[sub] = {
                        "type": "directory",
                        "oid": hashlib.sha1(sub.encode()).hexdigest(),
                        "size": 0,
                        "path": sub,
                    }
        return list(entries.values())

    def refs(self, repo: FakeRepo) -> dict:
        def item(kind, name, sha):
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}

        return {
            "branches": [item("heads", n, s) for n, s in sorted(repo.branches.items())],
            "tags": [item("tags", n, s) for n, s in sorted(repo.tags.items())],
            "converts": [],
        }

    def create_tag(self, repo: FakeRepo, revision: str, body: dict) -> dict:
        tag = body.get("tag")
        if not tag:
            raise _HubError(400, "tag name missing")
        with self._lock:
            sha = self._resolve(repo, revision)
            if tag in repo.tags or tag in repo.branches:
                raise _HubError(409, f"Tag {tag} already exists")
            repo.tags[tag] = sha
        return {"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": sha}

    def create_branch(self, repo: FakeRepo, branch: str, body: dict) -> dict:
        with self._lock:
            if branch in repo.branches or branch in repo.tags:
                raise _HubError(409, f"Branch {branch} already exists")
            start = self._resolve(repo, body.get("startingPoint") or "main")
            repo.branches[branch] = start
        return {"name": branch, "ref": f"refs/heads/{branch}", "targetCommit": start}

    def commits(self, repo: FakeRepo, revision: str) -> list[dict]:
        sha = self._resolve(repo, revision)
        return [
            {
                "id": c.sha,
                "title": c.title,
                "message": c.description,
                "date": c.date,
                "authors": [{"user": _USER}],
            }
            for c in repo.history(sha)
        ]

    def paths_info(self, repo: FakeRepo, revision: str, paths: list[str]) -> list[dict]:
        sha = self._resolve(repo, revision)
        files = repo.commits[sha].files
        out = []
        for p in paths:
            if p in files:
                out.append(
                    {
                        "type": "file",
                        "oid": git_blob_sha1(files[p]),
                        "size": len(files[p]),
                        "path": p,
                    }
                )
            elif any(f.startswith(p.rstrip("/") + "/") for f in files):
                out.append(
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(p.encode()).hexdigest(),
                        "size": 0,
                        "path": p,
                    }
                )
        return out


def _front_matter(text: str):
    if not text.startswith("---"):
        return None
    parts = text.split("\n---", 1)
    if len(parts) < 2:
        return None
    return yaml.safe_load(parts[0][3:])


def validate_card_yaml(content: str) -> tuple[list[str], list[str]]:
    """The subset of the Hub's README metadata checks that catch malformed cards: (errors, warnings)."""
    errors: list[str] = []
    warnings: list[str] = []
    try:
        meta = _front_matter(content)
    except yaml.YAMLError as e:
        return [f"YAML does not parse: {e}"], []
    if meta is None:
        return [], ["Empty or missing yaml metadata in repo card"]
    if not isinstance(meta, dict):
        return ["YAML metadata must be a mapping"], []
    for key in ("tags", "datasets"):
        if key in meta and not (
            isinstance(meta[key], list) and all(isinstance(x, str) for x in meta[key])
        ):
            errors.append(f'"{key}" must be a list of strings')
    if "license" in meta and not isinstance(meta["license"], str):
        errors.append('"license" must be a string')
    for entry in meta.get("model-index", []) or []:
        if not isinstance(entry, dict) or "name" not in entry or "results" not in entry:
            errors.append('"model-index" entries need "name" and "results"')
            continue
        for res in entry["results"]:
            if not {"task", "dataset", "metrics"} <= set(res):
                errors.append('"model-index.results" need "task", "dataset" and "metrics"')
            for m in res.get("metrics", []):
                if "type" not in m or "value" not in m:
                    errors.append('"model-index.results.metrics" need "type" and "value"')
    return errors, warnings


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        # Silent on purpose: requests carry the bearer token and tests assert it is never logged.
        pass

    # Every verb goes through one dispatcher.
    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_PUT(self):
        self._handle("PUT")

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(
        self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False
    ):
        self.send_response(status)
        hdrs = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _handle(self, method: str):
        hub = self.hub
        body = self._body()
        hub.requests.append(
            RecordedRequest(method, self.path, {k.lower(): v for k, v in self.headers.items()})
        )
        if hub.request_delay_s:
            time.sleep(hub.request_delay_s)
        failure = hub._take_failure(self.path)
        if failure == "down":
            # Kept-alive connections survive the listening socket; drop them without an answer.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if failure == "http500":
            body = json.dumps({"error": "simulated internal error"}).encode()
            # A HEAD answer has no body (one here would corrupt the kept-alive connection).
            self._send(500, body, head=method == "HEAD")
            return
        auth = self.headers.get("Authorization")
        # validate-yaml is public on the Hub (ModelCard.validate sends no token); all else needs it.
        public = urlsplit(self.path).path == "/api/validate-yaml"
        if hub.require_token and not public and auth != f"Bearer {hub.token}":
            msg = "Invalid credentials in Authorization header" if auth else "Unauthorized"
            self._json(401, {"error": msg}, {"X-Error-Message": msg})
            return
        try:
            self._route(method, body)
        except _HubError as e:
            hdrs = {"X-Error-Message": e.message}
            if e.code:
                hdrs["X-Error-Code"] = e.code
            if method == "HEAD":
                self._send(e.status, b"", hdrs, head=True)
            else:
                self._json(e.status, {"error": e.message}, hdrs)
        except Exception as e:  # a bug in the fake must show up as a 500 with its text
            self._json(500, {"error": f"fake hub bug: {type(e).__name__}: {e}"})

    def _route(self, method: str, body: bytes):
        hub = self.hub
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        raw = [s for s in split.path.split("/") if s != ""]
        seg = [unquote(s) for s in raw]

        if method == "GET" and seg == ["api", "whoami-v2"]:
            return self._json(
                200,
                {
                    "type": "user",
                    "name": _USER,
                    "fullname": "Fake User",
                    "orgs": [{"name": "geofm-test", "type": "org"}],
                    "auth": {
                        "type": "access_token",
                        "accessToken": {"displayName": "t", "role": "write"},
                    },
                },
            )
        if method == "POST" and seg == ["api", "repos", "create"]:
            status, obj = hub.create_repo(json.loads(body or b"{}"))
            return self._json(status, obj)
        if method == "POST" and seg == ["api", "validate-yaml"]:
            payload = json.loads(body or b"{}")
            errors, warnings = validate_card_yaml(payload.get("content", ""))
            return self._json(
                400 if errors else 200,
                {
                    "errors": [{"message": m} for m in errors],
                    "warnings": [{"message": m} for m in warnings],
                },
            )
        if method == "GET" and seg[:2] == ["api", "telemetry"]:
            return self._json(200, {})

        if len(seg) >= 4 and seg[0] == "api" and seg[1] in _REPO_TYPES:
            repo_type = _REPO_TYPES[seg[1]]
            repo = hub._get_repo(repo_type, f"{seg[2]}/{seg[3]}")
            rest, raw_rest = seg[4:], raw[4:]
            if not rest and method == "GET":
                return self._json(200, hub.repo_info(repo, "main"))
            action = rest[0] if rest else ""
            if action == "revision" and method == "GET" and len(rest) >= 2:
                return self._json(200, hub.repo_info(repo, "/".join(rest[1:])))
            if action == "preupload" and method == "POST":
                return self._json(200, hub.preupload(repo, rest[1], json.loads(body or b"{}")))
            if action == "commit" and method == "POST":
                return self._json(200, hub.commit(repo, rest[1], body))
            if action == "tree" and method == "GET":
                rec = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                path = "/".join(unquote(s) for s in raw_rest[2:])
                return self._json(200, hub.tree(repo, rest[1], path, rec))
            if action == "refs" and method == "GET":
                return self._json(200, hub.refs(repo))
            if action == "commits" and method == "GET":
                return self._json(200, hub.commits(repo, rest[1]))
            if action == "tag" and method == "POST":
                return self._json(200, hub.create_tag(repo, rest[1], json.loads(body or b"{}")))
            if action == "branch" and method == "POST":
                return self._json(200, hub.create_branch(repo, rest[1], json.loads(body or b"{}")))
            if action in ("tag", "branch") and method == "DELETE":
                # Supported so a test can catch a client that deletes history.
                with hub._lock:
                    store = repo.tags if action == "tag" else repo.branches
                    if rest[1] not in store:
                        raise _HubError(404, f"{action} {rest[1]} not found", "RevisionNotFound")
                    del store[rest[1]]
                    hub.deletions.append(f"{repo.repo_id}:{action}:{rest[1]}")
                return self._json(200, {})
            if action == "paths-info" and method == "POST":
                form = parse_qs(body.decode()) if body else {}
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    paths = json.loads(body).get("paths", [])
                else:
                    paths = form.get("paths", [])
                return self._json(200, hub.paths_info(repo, rest[1], paths))
            raise _HubError(404, f"fake hub: no route for {method} {split.path}")

        # /{ns}/{name}/resolve/{rev}/{path} and /datasets/{ns}/{name}/resolve/...
        if method in ("GET", "HEAD"):
            repo_type = "model"
            s, r = seg, raw
            if s and s[0] in ("datasets", "spaces"):
                repo_type, s, r = _REPO_TYPES[s[0]], s[1:], r[1:]
            if len(s) >= 5 and s[2] == "resolve":
                repo = hub._get_repo(repo_type, f"{s[0]}/{s[1]}")
                sha = hub._resolve(repo, s[3])
                path = "/".join(unquote(x) for x in r[4:])
                content = repo.commits[sha].files.get(path)
                if content is None:
                    raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
                headers = {
                    "Content-Type": "application/octet-stream",
                    "ETag": f'"{git_blob_sha1(content)}"',
                    "X-Repo-Commit": sha,
                    "Accept-Ranges": "bytes",
                }
                status, payload, start = 200, content, 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and method == "GET":
                    # One range, as the Hub's CDN answers: "a-b" (inclusive), "a-" or "-suffix".
                    first, _, last = rng[6:].partition("-")
                    size = len(content)
                    if first:
                        start, stop = int(first), min(int(last) + 1, size) if last else size
                    else:
                        start, stop = max(size - int(last), 0), size
                    if start >= size or stop <= start:
                        raise _HubError(416, f"range {rng} not satisfiable for {size} bytes")
                    payload, status = content[start:stop], 206
                    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
                headers["Content-Length"] = str(len(payload))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if method == "GET":
                    self.wfile.write(payload)
                    hub._count_served(
                        f"{repo.repo_id}/{path}", start if status == 206 else 0, len(payload)
                    )
                return None
        raise _HubError(404, f"fake hub: no route for {method} {split.path}")


def hub_env(hub: FakeHub, home: str) -> dict[str, str]:
    """Environment variables that point a fresh Python process at ``hub`` with its cache in ``home``."""
    return {
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": hub.token,
        "HF_HOME": home,
        "HF_HUB_CACHE": os.path.join(home, "hub"),
        "HF_XET_CACHE": os.path.join(home, "xet"),
        "HF_TOKEN_PATH": os.path.join(home, "token"),
        "HF_MODULES_CACHE": os.path.join(home, "modules"),
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }


def point_client_at(hub: FakeHub, home: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process (env + frozen ``huggingface_hub.constants``) at ``hub``; returns the
    environment, which subprocesses need as well."""
    from huggingface_hub import constants

    os.makedirs(home, exist_ok=True)
    env = hub_env(hub, home)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    # huggingface_hub froze these at import time; this process needs them patched too.
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(
        constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(constants, "HF_HOME", home)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
    monkeypatch.setattr(constants, "HF_XET_CACHE", env["HF_XET_CACHE"])
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", env["HF_TOKEN_PATH"])
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", os.path.join(home, "stored_tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return env


@contextlib.contextmanager
def serving_hub(home: str, monkeypatch: pytest.MonkeyPatch):
    """A started ``FakeHub`` with this process and ``.env`` pointed at it; stopped on exit."""
    hub = FakeHub().start()
    hub.env = point_client_at(hub, home, monkeypatch)
    hub.home = home
    try:
        yield hub
    finally:
        hub.set_failure(None)
        hub.stop()


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A running ``FakeHub`` with ``HF_ENDPOINT``/``HF_TOKEN``/cache paths pointed at it.

    Yields the ``FakeHub`` (``.endpoint``, ``.token``, ``.set_failure(mode, count)``, ``.repos``,
    ``.requests``, ``.env`` for subprocesses).
    """
    with serving_hub(str(tmp_path / "hf_home"), monkeypatch) as hub:
        yield hub


__all__ = [
    "FakeHub",
    "git_blob_sha1",
    "hub_env",
    "local_hub",
    "point_client_at",
    "serving_hub",
    "validate_card_yaml",
]

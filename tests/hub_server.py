"""A local stand-in for the Hugging Face Hub, for tests without a network.

`HubServer` serves repositories that a test writes, on 127.0.0.1, through the HTTP API that the
real huggingface_hub 0.36 code calls, so that with its endpoint pointed here (`HF_ENDPOINT`, or
`huggingface_hub.constants.ENDPOINT` in-process) `snapshot_download`, `hf_hub_download` and
`HfFileSystem` run unchanged:

* `GET /api/{models,datasets}/ORG/NAME[/revision/REV]`: repository info (`sha`, `siblings`);
* `GET /api/{models,datasets}/ORG/NAME/tree/REV[/PATH]?recursive=..`: the tree listing that
  `HfFileSystem.ls/glob/find` read;
* `POST /api/{models,datasets}/ORG/NAME/paths-info/REV`: what `HfFileSystem.info` reads;
* `HEAD/GET /[datasets/]ORG/NAME/resolve/REV/PATH`: file metadata (`X-Repo-Commit`, `ETag`,
  `Content-Length`) and downloads, with `Range` requests answered 206 (ranged reads).

Errors carry the `X-Error-Code` the real Hub sends (`RepoNotFound`, `RevisionNotFound`,
`EntryNotFound`), so huggingface_hub raises its own exception types. Every request is logged in
`requests` as (method, path) for tests that check what was fetched.
"""

import dataclasses
import hashlib
import http.server
import json
import pathlib
import re
import threading
import urllib.parse

_REPO_TYPES = {"models": "model", "datasets": "dataset"}


@dataclasses.dataclass
class _Repo:
    revisions: dict[str, str]  # branch or tag -> commit sha
    commits: dict[str, dict[str, bytes]]  # commit sha -> {path: content}


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class HubServer:
    """A threaded HTTP server on 127.0.0.1 serving repositories added with `add_repo`.

    Use as a context manager; `endpoint` is its URL.
    """

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        repo_type: str = "model",
        revision: str = "main",
    ) -> str:
        """Adds (or adds a revision to) a repository; returns the new commit's sha.

        Args:
          files: path in the repository -> content.
          revision: the branch or tag that points at this commit.
        """
        digest = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
        with self._lock:
            repo = self.repos.setdefault((repo_type, repo_id), _Repo({}, {}))
            repo.commits[digest] = dict(files)
            repo.revisions[revision] = digest
        return digest

    @staticmethod
    def files_of(directory: pathlib.Path) -> dict[str, bytes]:
        """Every file under `directory`, keyed by its relative path (for `add_repo`)."""
        return {
            p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*"))
            if p.is_file()
        }

    def asked_for(self) -> set[str]:
        """Paths in repositories asked for (HEAD or GET .../resolve/REV/PATH) so far."""
        return {path.split("/resolve/", 1)[1].split("/", 1)[1] for _, path in self.requests
                if "/resolve/" in path}  # fmt: skip

    def lookup(self, repo_type: str, repo_id: str, revision: str | None):
        """(commit sha, files) or an error code."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return "RepoNotFound"
        revision = revision or "main"
        sha = repo.revisions.get(revision, revision)
        if sha not in repo.commits:
            return "RevisionNotFound"
        return sha, repo.commits[sha]


class _Handler(http.server.BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # -- plumbing --------------------------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value) -> None:
        self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _error(self, code: str) -> None:
        body = json.dumps({"error": code}).encode()
        self._send(404, body, {"X-Error-Code": code, "Content-Type": "application/json"})

    def _route(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.hub.requests.append((self.command, url.path))
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts[0] == "api" and len(parts) >= 4 and parts[1] in _REPO_TYPES:
            self._api(_REPO_TYPES[parts[1]], f"{parts[2]}/{parts[3]}", parts[4:], query)
            return
        repo_type = "model"
        if parts[0] in _REPO_TYPES and parts[0] != "models":
            repo_type, parts = _REPO_TYPES[parts[0]], parts[1:]
        if len(parts) >= 5 and parts[2] == "resolve":
            self._resolve(repo_type, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            return
        self._send(404, b"not found")

    do_GET = do_HEAD = do_POST = _route

    # -- API -------------------------------------------------------------------------------

    def _api(self, repo_type: str, repo_id: str, rest: list[str], query: dict) -> None:
        revision = rest[1] if len(rest) >= 2 else None
        found = self.hub.lookup(repo_type, repo_id, revision)
        if isinstance(found, str):
            self._error(found)
            return
        sha, files = found
        if not rest or rest[0] == "revision":
            siblings = [{"rfilename": p, "size": len(d)} for p, d in sorted(files.items())]
            info = {"id": repo_id, "sha": sha, "siblings": siblings, "private": False}
            self._json(info | {"lastModified": "2026-01-01T00:00:00.000Z", "tags": []})
        elif rest[0] == "tree":
            recursive = query.get("recursive", ["False"])[0].lower() == "true"
            self._json(_tree(files, "/".join(rest[2:]), recursive))
        elif rest[0] == "paths-info":
            length = int(self.headers.get("Content-Length", 0))
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            entries = _tree(files, "", recursive=True)
            wanted = set(form.get("paths", []))
            self._json([e for e in entries if e["path"] in wanted])
        else:
            self._send(404, b"unknown API route")

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        found = self.hub.lookup(repo_type, repo_id, revision)
        if isinstance(found, str):
            self._error(found)
            return
        sha, files = found
        if path not in files:
            self._error("EntryNotFound")
            return
        data = files[path]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        headers["Accept-Ranges"] = "bytes"
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if ranged and self.command == "GET":
            start = int(ranged.group(1))
            end = min(int(ranged.group(2) or len(data) - 1), len(data) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(206, data[start : end + 1], headers)
            return
        self._send(200, data, headers)


def _tree(files: dict[str, bytes], directory: str, recursive: bool) -> list[dict]:
    """The Hub's tree entries under `directory` (files and folders)."""
    prefix = f"{directory.strip('/')}/" if directory.strip("/") else ""
    folders, entries = set(), []
    for path in sorted(files):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :].split("/")
        for depth in range(1, len(rest)):
            if recursive or depth == 1:
                folders.add(prefix + "/".join(rest[:depth]))
        if recursive or len(rest) == 1:
            size = len(files[path])
            entries.append({"type": "file", "path": path, "size": size, "oid": _sha1(files[path])})
    for folder in sorted(folders):
        entries.append({"type": "directory", "path": folder, "oid": _sha1(folder.encode())})
    return entries

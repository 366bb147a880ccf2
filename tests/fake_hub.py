"""A Hugging Face Hub stand-in on 127.0.0.1 for tests: the real `huggingface_hub` client talks to it.

Files are served from `root/<owner>/<repo>/<path>` in the Hub's URL layout, as `hf_hub_download` asks
for them (huggingface_hub/file_download.py):

    HEAD {endpoint}/{repo_id}/resolve/{revision}/{filename}   metadata: X-Repo-Commit, ETag (an LFS file's
                                                              sha256, also as X-Linked-Etag), X-Linked-Size
    GET  {endpoint}/{repo_id}/resolve/{revision}/{filename}   the bytes (a Range header resumes)

Errors carry the Hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound), which the client
maps to its exception types. `corrupt[path] = "truncate" | "flip"` serves that file cut in half (with an
honest Content-Length) or with one byte changed; the metadata still describes the real file.
Every request is logged in `requests` as (method, path).
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = "c0ffee" + "0" * 34  # the one commit every repo is at


class FakeHub:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.corrupt: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, body=False)

            def do_GET(self) -> None:
                hub._serve(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add(self, repo_id: str, filename: str, data: bytes) -> Path:
        path = self.root / repo_id / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def downloads(self, filename: str) -> int:
        """How many GET requests asked for `filename`."""
        return sum(1 for method, path in self.requests if method == "GET" and path.endswith("/" + filename))

    def _serve(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(req.path.split("?")[0])
        self.requests.append((req.command, path))
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(req, 404, "RepoNotFound")
        repo_id, revision, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        if not (self.root / repo_id).is_dir():
            return self._error(req, 404, "RepoNotFound")
        if revision not in ("main", COMMIT):
            return self._error(req, 404, "RevisionNotFound")
        file = self.root / repo_id / filename
        if not file.is_file():
            return self._error(req, 404, "EntryNotFound")
        data = file.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        served = data
        mode = self.corrupt.get(filename)
        if mode == "truncate":
            served = data[: len(data) // 2]
        elif mode == "flip":
            served = data[:-1] + bytes([data[-1] ^ 0xFF])
        start = 0
        if body and req.headers.get("Range", "").startswith("bytes="):
            start = int(req.headers["Range"][6:].split("-")[0])
        req.send_response(206 if start else 200)
        req.send_header("X-Repo-Commit", COMMIT)
        req.send_header("ETag", f'"{sha}"')
        req.send_header("X-Linked-Etag", f'"{sha}"')
        req.send_header("X-Linked-Size", str(len(data)))
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("Content-Length", str(len(served) - start))
        if start:
            req.send_header("Content-Range", f"bytes {start}-{len(served) - 1}/{len(served)}")
        req.end_headers()
        if body:
            req.wfile.write(served[start:])

    @staticmethod
    def _error(req: BaseHTTPRequestHandler, status: int, code: str) -> None:
        message = f"{code} (fake hub)".encode()
        req.send_response(status)
        req.send_header("X-Error-Code", code)
        req.send_header("X-Error-Message", code)
        req.send_header("X-Repo-Commit", COMMIT)
        req.send_header("Content-Length", str(len(message)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(message)

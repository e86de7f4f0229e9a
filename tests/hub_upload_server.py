"""A local stand-in for the three Hub calls an upload makes (huggingface_hub's HfApi): create
a repository, ask each file's upload mode (answered 'regular', so the file travels inline in
the commit), and commit. It records what it received; other requests get 404 and are listed."""

import base64
import http.server
import json
import threading


class FakeHub:
    """Serves on 127.0.0.1 (a free port) until `close`; `endpoint` is its address."""

    def __init__(self):
        self.repos: list[tuple[str, str | None]] = []  # (repo id, Authorization header)
        self.files: dict[str, bytes] = {}  # path in the repository -> content committed
        self.unknown: list[tuple[str, str]] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _answer(self, method: str, path: str, body: bytes, authorization: str | None):
        """(status, JSON reply) for one request."""
        if method == "POST" and path == "/api/repos/create":
            request = json.loads(body)
            repo = f"{request['organization']}/{request['name']}"
            self.repos.append((repo, authorization))
            return 200, {"url": f"{self.endpoint}/{repo}"}
        parts = path.split("/")  # /api/models/ORG/NAME/(preupload|commit)/REVISION
        if method == "POST" and len(parts) == 7 and parts[5] == "preupload":
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                     for f in files]  # fmt: skip
            return 200, {"files": modes}
        if method == "POST" and len(parts) == 7 and parts[5] == "commit":
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    content = base64.b64decode(item["value"]["content"])
                    self.files[item["value"]["path"]] = content
            oid = "1" * 40
            return 200, {"commitUrl": f"{self.endpoint}/{parts[3]}/{parts[4]}/commit/{oid}",
                         "commitOid": oid}  # fmt: skip
        self.unknown.append((method, path))
        return 404, {"error": "not served by the fake Hub"}

    def _handler(self):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                status, value = hub._answer(method, path, body, self.headers.get("authorization"))
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self._serve("POST")

            def do_GET(self):
                self._serve("GET")

        return Handler

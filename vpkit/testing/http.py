"""A local HTTP mirror for download tests: Range requests, corrupt copies, a cut first transfer, a request log.

    with MirrorServer({"file.zip": data}) as server:
        fetch_file(RemoteFile("file.zip"), root, mirrors=[server.mirror("flaky")])
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class MirrorServer:
    """A local HTTP server: /good/ serves the files (with Range), /bad/ serves corrupt copies, /flaky/ cuts the
    first response of each file halfway, /norange/ ignores Range headers; every request is logged."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.log: list[tuple[str, str | None]] = []
        self.cut: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.log.append((self.path, self.headers.get("Range")))
                mirror, _, name = self.path.strip("/").partition("/")
                if name not in server.blobs or mirror not in ("good", "bad", "flaky", "norange"):
                    self.send_error(404)
                    return
                body = server.blobs[name]
                if mirror == "bad":
                    body = body[:-8] + b"corrupt!"
                start = 0
                ranged = self.headers.get("Range")
                if ranged and mirror != "norange":
                    start = int(ranged.removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if mirror == "flaky" and self.path not in server.cut:
                    server.cut.add(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def mirror(self, name: str) -> str:
        return f"{self.url}/{name}/"

    def __enter__(self) -> MirrorServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

"""A loopback HTTP proxy in front of a real Prometheus that misbehaves on purpose.

Prometheus itself cannot be told to answer 429 or 503, so tests put this proxy between the
client and the real server: the first `failures` requests get `status` (with `Retry-After`
when given), the rest are forwarded unchanged.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


class FlakyProxy:
    def __init__(self, upstream: str, status: int, failures: int, retry_after: str | None = None):
        self.upstream = upstream
        self.status = status
        self.failures = failures
        self.retry_after = retry_after
        self.requests: list[tuple[float, int, dict[str, str]]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                with proxy._lock:
                    failing = proxy.failures > 0
                    if failing:
                        proxy.failures -= 1
                if failing:
                    proxy.requests.append((time.monotonic(), proxy.status, dict(self.headers)))
                    self.send_response(proxy.status)
                    if proxy.retry_after is not None:
                        self.send_header("Retry-After", proxy.retry_after)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    self.wfile.write(b"injected failure")
                    return
                answer = requests.get(proxy.upstream + self.path, timeout=60)
                proxy.requests.append((time.monotonic(), answer.status_code, dict(self.headers)))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", ""))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

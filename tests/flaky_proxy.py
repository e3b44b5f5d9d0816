"""A loopback HTTP proxy in front of a real Prometheus that misbehaves on purpose.

Prometheus itself cannot be told to answer 429 or 503, so tests put this proxy between the
client and the real server: the first `failures` requests misbehave, the rest are forwarded
unchanged. How they misbehave is `fault`:

- `"status"` (default): answer `status` (with `Retry-After` when given);
- `"delay"`: forward, but only after `delay_s` (beyond the client's timeout: a slow server);
- `"drop"`: close the connection without answering;
- `"truncate"`: forward the real answer cut in half, then close the connection;
- `"body"`: answer 200 with `body` (malformed or unexpected JSON).

`rewrite(path) -> path` changes forwarded requests (e.g. a finer step, to get Prometheus' own
11,000-points error), and `before_forward(n)` runs before the n-th forwarded request (e.g. to
kill the server mid-extraction). Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

FAULTS = ("status", "delay", "drop", "truncate", "body")


class FlakyProxy:
    def __init__(
        self,
        upstream: str,
        status: int = 200,
        failures: int = 0,
        retry_after: str | None = None,
        fault: str = "status",
        delay_s: float = 0.0,
        body: bytes = b"",
        rewrite: Callable[[str], str] | None = None,
        before_forward: Callable[[int], None] | None = None,
    ):
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        self.upstream = upstream
        self.status = status
        self.failures = failures
        self.retry_after = retry_after
        self.fault = fault
        self.delay_s = delay_s
        self.body = body
        self.rewrite = rewrite
        self.before_forward = before_forward
        self.forwarded = 0
        self.requests: list[tuple[float, int, dict[str, str]]] = []
        self.paths: list[str] = []  # every request's path and query, as received
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> requests.Response:
                with proxy._lock:
                    proxy.forwarded += 1
                    n = proxy.forwarded
                if proxy.before_forward is not None:
                    proxy.before_forward(n)
                path = proxy.rewrite(self.path) if proxy.rewrite else self.path
                return requests.get(proxy.upstream + path, timeout=60)

            def _send(self, status: int, content: bytes, content_type: str, length=None):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(content) if length is None else length))
                self.end_headers()
                self.wfile.write(content)

            def do_GET(self):  # noqa: N802 (http.server's naming)
                proxy.paths.append(self.path)
                with proxy._lock:
                    failing = proxy.failures > 0
                    if failing:
                        proxy.failures -= 1
                if failing and proxy.fault == "drop":
                    proxy.requests.append((time.monotonic(), 0, dict(self.headers)))
                    self.close_connection = True
                    return  # no status line at all
                if failing and proxy.fault == "status":
                    proxy.requests.append((time.monotonic(), proxy.status, dict(self.headers)))
                    self.send_response(proxy.status)
                    if proxy.retry_after is not None:
                        self.send_header("Retry-After", proxy.retry_after)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", "16")
                    self.end_headers()
                    self.wfile.write(b"injected failure")
                    return
                if failing and proxy.fault == "body":
                    proxy.requests.append((time.monotonic(), 200, dict(self.headers)))
                    self._send(200, proxy.body, "application/json")
                    return
                if failing and proxy.fault == "delay":
                    time.sleep(proxy.delay_s)
                try:
                    answer = self._forward()
                except requests.RequestException:
                    proxy.requests.append((time.monotonic(), 502, dict(self.headers)))
                    self._send(502, b"upstream unreachable", "text/plain")
                    return
                proxy.requests.append((time.monotonic(), answer.status_code, dict(self.headers)))
                content_type = answer.headers.get("Content-Type", "")
                if failing and proxy.fault == "truncate":
                    # announce the whole answer, send half, hang up: a connection cut mid-body
                    half = answer.content[: len(answer.content) // 2]
                    self._send(answer.status_code, half, content_type, len(answer.content))
                    self.close_connection = True
                    return
                self._send(answer.status_code, answer.content, content_type)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client that gave up (timeout) makes the late answer hit a closed socket: expected.
        self.server.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

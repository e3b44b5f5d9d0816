"""A real Prometheus server for tests and benchmarks, backfilled with promtool.

Starts the Debian `prometheus` binary on 127.0.0.1 with a free port, over a TSDB built by
`promtool tsdb create-blocks-from openmetrics`, with retention long enough that old backfilled
blocks are not deleted, and stops it cleanly.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests


def prometheus_available() -> bool:
    return bool(shutil.which("prometheus") and shutil.which("promtool"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backfill(openmetrics_file: Path, data_dir: Path, max_block: str = "672h") -> None:
    """Build TSDB blocks from an OpenMetrics file.

    promtool re-reads the whole file for every block it cuts, so one block per 4 weeks is far
    faster than daily blocks for our month-long exports.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            f"--max-block-duration={max_block}",
            str(openmetrics_file),
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool backfill failed: {result.stderr[-2000:]}")


class PrometheusServer:
    """A running Prometheus over a backfilled data directory."""

    def __init__(self, data_dir: Path, port: int | None = None, config: Path | None = None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config or data_dir.parent / "prometheus.yml"
        self.process: subprocess.Popen | None = None
        self.log = data_dir.parent / f"prometheus-{self.port}.log"

    def start(self, timeout_s: float = 120) -> PrometheusServer:
        if not self.config.exists():
            self.config.write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.data_dir}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--query.max-samples=200000000",
                "--query.lookback-delta=5m",
            ],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"prometheus not ready after {timeout_s}s: {self.log.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

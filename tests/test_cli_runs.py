"""`capacity extract` / `capacity run` as a user runs them: real subprocesses, a real Dagster
instance, an HTTP server standing in for Prometheus; credentials and dates handled safely."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PASSWORD = "s3cr#etPW/x?y"  # characters a URL parser reads as delimiters


class _EmptyPrometheus(BaseHTTPRequestHandler):
    """Answers every range query with no series, and records the Authorization header."""

    seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.seen.append(self.headers.get("Authorization", ""))
        body = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture()
def empty_prometheus():
    _EmptyPrometheus.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyPrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def capacity(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAPACITY_HOME": str(home), "CAPACITY_PARTITIONS_START": "2026-09-28"}
    for name in ("DAGSTER_HOME", "CAPACITY_PROMETHEUS_URL", "CAPACITY_PROMETHEUS_PASSWORD",
                 "CAPACITY_PROMETHEUS_USER", "CAPACITY_PROMETHEUS_TOKEN"):  # fmt: skip
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "capacity_pipelines.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _everything_stored(home: Path) -> str:
    """Every byte the instance and the home hold, for a search (run configs, event logs)."""
    chunks = []
    for path in home.rglob("*"):
        if path.is_file():
            chunks.append(path.read_bytes().decode("latin-1"))
    return "\n".join(chunks)


def test_a_password_in_the_url_is_used_and_never_stored_or_shown(tmp_path, empty_prometheus):
    """`#`, `/`, `?` in the password: split off before any parsing, sent as basic auth, kept
    out of the run's config, its event log, the warehouse and the terminal."""
    url = f"http://bob:{PASSWORD}@{empty_prometheus}"
    done = capacity(tmp_path, "extract", "--start", "2026-10-01", "--end", "2026-10-02",
                    "--prometheus-url", url)  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    assert _EmptyPrometheus.seen and set(_EmptyPrometheus.seen) == {expected}
    assert PASSWORD not in done.stdout + done.stderr
    assert PASSWORD not in _everything_stored(tmp_path)
    assert "s3cr" not in _everything_stored(tmp_path)


def test_a_malformed_url_fails_in_seconds_with_the_secret_masked(tmp_path):
    url = f"http://bob:{PASSWORD}@127.0.0.1:99999"  # no such port: can never work
    began = time.monotonic()
    done = capacity(tmp_path, "extract", "--start", "2026-10-01", "--end", "2026-10-02",
                    "--prometheus-url", url)  # fmt: skip
    assert done.returncode == 2
    assert time.monotonic() - began < 30  # no retries of something that cannot work
    assert "http://***@127.0.0.1:99999" in done.stderr and done.stderr.count("\n") == 1
    assert "s3cr" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("2026-10-01", (datetime.now(UTC).date() + timedelta(days=2)).isoformat(),
         "is not over yet"),
        ("2026-09-01", "2026-09-30", "CAPACITY_PARTITIONS_START=2026-09-01"),
        ("2026-10-05", "2026-10-05", "--end must be after --start"),
        ("2026-10-xx", "2026-10-05", "--start '2026-10-xx' is not a day"),
    ],
)  # fmt: skip
def test_days_that_cannot_be_extracted_are_refused_before_any_run(tmp_path, start, end, says):
    done = capacity(tmp_path, "extract", "--start", start, "--end", end, "--files", "x.om")
    assert done.returncode == 2
    assert says in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "dagster_home").exists()  # refused before an instance was touched


def test_a_run_whose_worker_is_an_unreaped_zombie_is_marked_failed(tmp_path):
    """A worker orphaned by a SIGKILLed supervisor is dead but stays a zombie, holding its pid
    and start time, until whoever adopted it reaps it; a container's init may never do so (CI
    saw the next demo wait on such a run). The next command must read it as gone."""
    import dagster as dg

    from capacity_pipelines.cli.runs import _instance, live_runs, recover_dead_runs
    from capacity_pipelines.cli.worker import process_start_ticks

    worker = subprocess.Popen(["sleep", "600"])
    try:
        started = process_start_ticks(worker.pid)
        assert started
        home = tmp_path / "dagster_home"
        home.mkdir()
        with _instance(home) as instance:
            run = instance.create_run_for_job(
                dg.GraphDefinition(name="g", node_defs=[]).to_job(name="capacity_demo"),
                tags={"capacity/command": "capacity demo",
                      "capacity/worker_pid": str(worker.pid),
                      "capacity/worker_started": started},  # fmt: skip
            )
            instance.handle_run_event(
                run.run_id,
                dg.DagsterEvent(
                    event_type_value="PIPELINE_START", job_name=run.job_name, message="started"
                ),
            )
        assert live_runs(home) == [f"{run.run_id} (capacity demo, pid {worker.pid})"]
        os.kill(worker.pid, 9)  # not reaped: a zombie until worker.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed process did not become a zombie"
            time.sleep(0.05)
        assert process_start_ticks(worker.pid) is None
        assert live_runs(home) == []
        lines: list[str] = []
        assert recover_dead_runs(home, log=lines.append) == [run.run_id]
        assert lines == [
            f"Run {run.run_id} (capacity demo): its worker process (pid {worker.pid}) is gone "
            "(killed or crashed); marked failed by the next `capacity` command."
        ]
        with _instance(home) as instance:
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    finally:
        worker.kill()
        worker.wait()

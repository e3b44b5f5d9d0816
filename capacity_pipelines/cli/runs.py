"""Launching Dagster runs from the `capacity` command, and cleaning up after runs that died.

The command is a supervisor: each run executes in a worker process (`worker.py`) in a session of
its own, so the supervisor alone receives Ctrl-C and SIGTERM and can stop the run the way
Dagster's own run launcher does: mark it CANCELING, interrupt the worker (which stops its step
processes), wait a bounded time, then kill what is left and mark the run CANCELED. It exits
130 (SIGINT) or 143 (SIGTERM) within seconds, and the warehouse stays consistent because every
write session is published all or nothing.

A run whose worker was killed (SIGKILL, the OOM killer, a node going away) stays STARTED in the
instance forever unless somebody says otherwise: every command that launches runs first marks
such runs failed (their worker pid is gone) and says so in one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from capacity_pipelines.cli.worker import RunSpec, process_start_ticks, specs_to_json
from capacity_pipelines.common import paths

DAGSTER_YAML = """\
# Written by `capacity`: a local instance for the CLI's runs and the UI.
telemetry:
  enabled: false
run_monitoring:
  enabled: true  # the daemon marks runs whose worker died as failed
run_retries:
  enabled: true
  max_retries: 2
"""
GRACE_S = 20.0  # how long an interrupted run may take to stop before it is killed
OPEN_STATUSES = ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")


class RunFailed(RuntimeError):
    """A run ended without success; the message names the run (see it in the UI)."""


class RunInterrupted(Exception):
    """The command was interrupted; the run was canceled. `signum` is the signal received."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def dagster_home() -> Path:
    """A persistent Dagster instance under CAPACITY_HOME, so CLI runs show up in the UI."""
    home = Path(os.environ.get("DAGSTER_HOME") or paths.capacity_home() / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return home


def _instance(home: Path):
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def _alive(pid: int, started: str | None) -> bool:
    now = process_start_ticks(pid)
    return now is not None and (not started or now == started)


def recover_dead_runs(home: Path, log: Callable[[str], None] = print) -> list[str]:
    """Mark failed the runs launched by `capacity` whose worker process is gone; returns ids."""
    import dagster as dg

    recovered = []
    with _instance(home) as instance:
        open_runs = instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus[s] for s in OPEN_STATUSES])
        )
        for run in open_runs:
            pid = run.tags.get("capacity/worker_pid")
            if pid is None or _alive(int(pid), run.tags.get("capacity/worker_started")):
                continue
            message = (
                f"its worker process (pid {pid}) is gone (killed or crashed); marked failed by "
                "the next `capacity` command"
            )
            instance.report_run_failed(run, message)
            storage = instance.event_log_storage
            if getattr(storage, "supports_global_concurrency_limits", False):
                storage.free_concurrency_slots_for_run(run.run_id)
            recovered.append(run.run_id)
            log(f"Run {run.run_id} ({run.tags.get('capacity/command', run.job_name)}): {message}.")
    return recovered


def live_runs(home: Path) -> list[str]:
    """Runs of `capacity` still executing in a live worker (described for people)."""
    import dagster as dg

    with _instance(home) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    return [
        f"{r.run_id} ({r.tags.get('capacity/command', r.job_name)}, pid "
        f"{r.tags['capacity/worker_pid']})"
        for r in runs
        if "capacity/worker_pid" in r.tags
        and _alive(int(r.tags["capacity/worker_pid"]), r.tags.get("capacity/worker_started"))
    ]


def _cancel(home: Path, run_id: str, final: bool) -> None:
    """Mark the run CANCELING (before interrupting it) or, when forced, CANCELED; a run that
    has not been created yet, or has finished, is left alone."""
    with _instance(home) as instance:
        run = instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return
        if final:
            instance.report_run_canceled(run, "the `capacity` command was interrupted")
        elif run.status.value != "CANCELING":
            instance.report_run_canceling(run, "the `capacity` command was interrupted")


@dataclass
class RunRequest:
    """One run for the worker: the job, its partitions, a subset of assets, settings."""

    job: str
    command: str
    title: str = ""
    partition_key: str | None = None
    partition_range: tuple[str, str] | None = None
    assets: list[str] | None = None
    resources: dict | None = None
    executor: dict | None = None
    env: dict[str, str] | None = None  # secrets for the worker and its steps (never logged)


def _spec(request: RunRequest) -> RunSpec:
    tags = {"capacity/command": request.command, "capacity/supervisor_pid": str(os.getpid())}
    if request.partition_key:
        tags["dagster/partition"] = request.partition_key
    if request.partition_range:
        tags["dagster/asset_partition_range_start"] = request.partition_range[0]
        tags["dagster/asset_partition_range_end"] = request.partition_range[1]
    return RunSpec(
        run_id=str(uuid.uuid4()),
        job=request.job,
        tags=tags,
        title=request.title,
        assets=request.assets,
        resources=request.resources or {},
        executor=request.executor or {},
    )


def launch(requests: list[RunRequest], home: Path, grace_s: float = GRACE_S) -> list[str]:
    """Execute the runs, in order, in one worker process; returns their ids.

    Raises RunFailed (a run did not succeed; the later ones did not start) or RunInterrupted.
    """
    specs = [_spec(r) for r in requests]
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    for request in requests:
        env |= request.env or {}
    failures = Path(tempfile.mkstemp(prefix="capacity-run-", suffix=".txt")[1])
    worker = subprocess.Popen(
        [sys.executable, "-m", "capacity_pipelines.cli.worker", specs_to_json(specs),
         str(failures)],
        env=env,
        start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops the run in order
    )  # fmt: skip
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    run_ids = [s.run_id for s in specs]
    try:
        code = _supervise(worker, received, home, run_ids, grace_s)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    why = failures.read_text(encoding="utf-8").strip().splitlines()
    failures.unlink(missing_ok=True)
    if received:
        raise RunInterrupted(received[0])
    if code != 0:
        raise RunFailed(
            (why[0] if why else f"a run failed (exit {code})")
            + " (the run's steps and logs are in the Dagster UI: `capacity ui`)"
        )
    return run_ids


def _supervise(
    worker: subprocess.Popen, received: list[int], home: Path, run_ids: list[str], grace_s: float
) -> int:
    interrupted_at: float | None = None
    while True:
        try:
            return worker.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if received and interrupted_at is None:
            interrupted_at = time.monotonic()
            for run_id in run_ids:
                _cancel(home, run_id, final=False)
            _signal_group(worker, signal.SIGINT)
        elif interrupted_at is not None and (
            len(received) > 1 or time.monotonic() - interrupted_at > grace_s
        ):
            _signal_group(worker, signal.SIGKILL)
            worker.wait()
            for run_id in run_ids:
                _cancel(home, run_id, final=True)
            return -signal.SIGKILL


def _signal_group(worker: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signum)  # the worker and its step processes

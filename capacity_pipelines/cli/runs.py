"""Launching Dagster runs from the `capacity` command, and cleaning up after runs that died.

The command is a supervisor: each run executes in a worker process (`worker.py`) in a session of
its own, so the supervisor alone receives Ctrl-C and SIGTERM and can stop the run the way
Dagster's own run launcher does: mark it CANCELING, interrupt the worker (which stops its step
processes), wait a bounded time, then kill what is left and mark the run CANCELED. It exits
130 (SIGINT) or 143 (SIGTERM) within seconds, and the warehouse stays consistent because every
write session is published all or nothing.

Whatever way the worker ends, nothing of it outlives it: what is left of its process group (a
forecasting pool, a compute-log `tail`) is killed, and its runs that are still open are closed,
CANCELED after an interruption, failed otherwise (the OOM killer took the worker).

A run whose worker and supervisor were both killed (a node going away, the OOM killer of a
whole cgroup) stays STARTED in the instance forever unless somebody says otherwise: every command
that launches runs first marks such runs failed (their worker pid is gone) and says so in one
line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
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


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command; `signum` is the signal, `outcome` what became of
    the runs (empty when none had started). A KeyboardInterrupt, so that no `except Exception`
    on the way swallows a SIGTERM any more than it would swallow Ctrl-C."""

    def __init__(self, signum: int, outcome: str = ""):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.outcome = outcome


def _raise_interrupted(signum: int, _frame) -> None:
    raise RunInterrupted(signum)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM stops the command the way Ctrl-C does, by an exception (`RunInterrupted`), so
    `finally` blocks run and the exit code says which signal it was. (By default SIGTERM ends
    Python on the spot.) The previous handlers come back afterwards; off the main thread,
    where handlers cannot be set, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


def recover_dead_runs(
    home: Path,
    log: Callable[[str], None] = print,
    by: str = "the next `capacity` command",
    only: list[str] | None = None,
) -> list[str]:
    """Mark failed the runs launched by `capacity` whose worker process is gone; returns ids.

    `by` says who noticed, in the run's failure message and the line printed for each run;
    `only` limits it to these run ids (a supervisor closing its own runs).
    """
    import dagster as dg

    recovered = []
    with _instance(home) as instance:
        open_runs = instance.get_runs(
            filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus[s] for s in OPEN_STATUSES])
        )
        for run in open_runs:
            if only is not None and run.run_id not in only:
                continue
            pid = run.tags.get("capacity/worker_pid")
            if pid is None or _alive(int(pid), run.tags.get("capacity/worker_started")):
                continue
            message = (
                f"its worker process (pid {pid}) is gone (killed or crashed); marked failed by {by}"
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


def _cancel(home: Path, run_ids: list[str], final: bool) -> None:
    """Mark the runs CANCELING (before interrupting them) or, once their worker is gone,
    CANCELED; a run that was never created, or has finished, is left alone."""
    with _instance(home) as instance:
        for run_id in run_ids:
            run = instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                continue
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
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)

    # Recorded from before the worker exists: a signal in between must not leave it orphaned.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    run_ids = [s.run_id for s in specs]
    try:
        # The worker writes to the same terminal or pipe: what we printed must come first.
        sys.stdout.flush()
        sys.stderr.flush()
        # Why runs failed comes back in an unnamed file, so a killed command leaves none behind.
        with tempfile.TemporaryFile("w+", encoding="utf-8") as failures:
            worker = subprocess.Popen(
                [sys.executable, "-m", "capacity_pipelines.cli.worker", specs_to_json(specs),
                 str(failures.fileno())],
                env=env,
                pass_fds=[failures.fileno()],
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops the run
            )  # fmt: skip
            code = _supervise(worker, received, home, run_ids, grace_s)
            failures.seek(0)
            why = failures.read().strip().splitlines()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise RunInterrupted(received[0], _outcome(home, run_ids))
    if code != 0:
        if code < 0:  # killed: its open runs were marked failed (one line each) just now
            why = [f"the run worker was killed by {signal.Signals(-code).name}"] + why
        raise RunFailed(
            (why[0] if why else f"a run failed (exit {code})")
            + " (the run's steps and logs are in the Dagster UI: `capacity ui`)"
        )
    return run_ids


def _outcome(home: Path, run_ids: list[str]) -> str:
    """What became of the runs of an interrupted command, for its last line: the one canceled
    (or how else it ended), and how many never started."""
    with _instance(home) as instance:
        found = [instance.get_run_by_id(run_id) for run_id in run_ids]
    ended = [f"run {r.run_id} {r.status.value.lower()}" for r in found
             if r is not None and r.status.value != "SUCCESS"]  # fmt: skip
    never = sum(r is None for r in found)
    parts = ended or ["no run was in progress"]
    if never:
        parts.append(f"{never} later run{'s' if never > 1 else ''} not started")
    return ", ".join(parts)


def _supervise(
    worker: subprocess.Popen, received: list[int], home: Path, run_ids: list[str], grace_s: float
) -> int:
    """Wait for the worker, stopping it in order when a signal is received; once it is gone,
    kill what is left of its process group and close its runs that are still open."""
    interrupted_at: float | None = None
    while True:
        try:
            code = worker.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            pass
        if received and interrupted_at is None:
            interrupted_at = time.monotonic()
            _cancel(home, run_ids, final=False)
            # The worker alone: Dagster stops the step and its processes in order (a SIGINT to
            # the group would make each of them print a traceback first).
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGINT)
        elif interrupted_at is not None and (
            len(received) > 1 or time.monotonic() - interrupted_at > grace_s
        ):
            _signal_group(worker, signal.SIGKILL)
            code = worker.wait()
            break
    # The group outlives its leader: a forecasting pool or a log tail would run on unattended.
    _signal_group(worker, signal.SIGKILL)
    if received:
        _cancel(home, run_ids, final=True)
    elif code != 0:
        recover_dead_runs(home, by="its `capacity` command", only=run_ids)
    return code


def _signal_group(worker: subprocess.Popen, signum: int) -> None:
    """Signal the worker's process group (the worker leads it; its id outlives the worker for
    as long as any member does, so it is never another process's)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signum)

"""Killed and interrupted `capacity` runs never block, lose or corrupt anything (issue 23).

Every test runs the real command (`python -m capacity_pipelines.cli`) in a process of its own
against a real Dagster instance and a real DuckDB warehouse under a private CAPACITY_HOME (a
copy of one that ran a demo and holds two accepted recommendations), and stops it with real
signals at a moment chosen from what it does: a STEP_START in the instance's event log, a
process it started, or a temporary file that exists only while a write is in flight. Then it
looks from outside: the exit code and the time to exit, the run statuses in the instance, the
processes still carrying the home in their environment (Dagster's compute-log `tail` and its
watcher, the forecasting pool), the temporaries left beside the files, every table read in
full, every SRE decision.

The fault matrix (`-k matrix`, about 5 minutes on 2 cores) is one chain of demos: SIGTERM, then
SIGKILL, at each stage in pipeline order, then a demo that completes. So every SIGTERM is
followed by a demo that gets back into that stage, every SIGKILL by a demo that gets through
that stage (the next stage's, or the final one), and all leftovers of ten stopped demos are
there for the last one to trip over.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from tests.capacity_process import (
    DEMO,
    Capacity,
    copy_home,
    decisions,
    processes_of,
    runs,
    table_counts,
    temp_folder,
    temporary_files,
    wait_until_no_processes,
)

EXIT_WITHIN_S = 30.0  # SIGINT / SIGTERM to exit, the supervisor's 20 s grace period included
EXIT_CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}
DEAD_RUN_LINE = "its worker process (pid {pid}) is gone (killed or crashed); marked failed by"
POOL = "multiprocessing.spawn"  # the forecasting engine's worker processes

pytestmark = pytest.mark.timeout(1200)


@dataclass(frozen=True)
class Stage:
    """A stage of `capacity demo` and how the matrix stops it."""

    name: str
    step: str  # the asset whose STEP_START marks the stage
    sigkill: str  # who gets the SIGKILL: "everything", "worker" or "supervisor"
    # (folder under the home, name) of a temporary to catch in flight before the SIGKILL
    temporary: tuple[str, str] | None = None


STAGES = [
    # the catch-up run's first extraction, killed while its write session holds a draft
    Stage("extract", "container_usage", "everything", (".", r"\.warehouse\.draft-\d+\.duckdb")),
    # the worker alone, as the OOM killer picks the largest process: its pool must not linger
    Stage("forecasts", "load_forecasts", "worker"),
    # the supervisor alone: the worker gets SIGTERM from the kernel and fails its run
    Stage("rightsizing", "container_rightsizing", "supervisor"),
    Stage("snapshot", "warehouse_snapshot", "everything",
          (".", r"\.warehouse_snapshot\.duckdb\.\d+\.tmp")),
    # the weekly report's folder, killed while it is being staged
    Stage("report", "weekly_capacity_report", "everything", ("reports", r"\..+\.capacity-staging")),
]  # fmt: skip


@dataclass
class Stopped:
    """One stopped command, for the table the matrix prints."""

    case: str
    code: int
    seconds: float
    statuses: list[str]

    def row(self) -> str:
        return f"| {self.case} | {self.code} | {self.seconds:.1f} | {', '.join(self.statuses)} |"


def _interrupt(cap: Capacity, signum: int) -> float:
    """Send SIGINT as a terminal's Ctrl-C does (to the foreground process group) or SIGTERM as
    `kill` and service managers do (to the process); returns when it was sent."""
    if signum == signal.SIGINT:
        os.killpg(cap.pid, signum)
    else:
        os.kill(cap.pid, signum)
    return time.monotonic()


def assert_interrupted(cap: Capacity, signum: int, sent: float, case: str) -> Stopped:
    """The command exited with 128 + signal within EXIT_WITHIN_S, in one line on stderr and
    without a traceback; its last run is CANCELED and no process of it is left."""
    code = cap.wait(timeout=120)
    seconds = time.monotonic() - sent
    name = signal.Signals(signum).name
    assert code == EXIT_CODE[signum], cap.output()
    assert seconds <= EXIT_WITHIN_S, f"{case}: took {seconds:.1f}s to exit\n{cap.output()}"
    assert "Traceback" not in "\n".join(cap.stderr), cap.output()
    assert cap.stderr[-1].startswith(f"capacity {cap.args[0]}: interrupted ({name})"), cap.output()
    statuses = cap.runs()
    # The runs it had finished stand, the one in progress is canceled, the rest never start
    # (a signal that lands between two runs cancels none: the line says so).
    done = [s for s in statuses.values() if s == "SUCCESS"]
    canceled = [run_id for run_id, s in statuses.items() if s == "CANCELED"]
    assert len(done) + len(canceled) == len(statuses) and len(canceled) <= 1, statuses
    if canceled:
        assert list(statuses)[-1] == canceled[0], statuses
        assert f"; run {canceled[0]} canceled" in cap.stderr[-1], cap.output()
    elif statuses:
        assert "; no run was in progress" in cap.stderr[-1], cap.output()
    statuses = list(statuses.values())
    assert wait_until_no_processes(cap.home, timeout=5) == {}, cap.output()
    return Stopped(case, code, seconds, statuses)


def assert_intact(home: Path, tables: set[str], kept: list[dict]) -> None:
    """Every table of the warehouse and of the snapshot reads back in full, none is missing,
    and the SRE decisions are exactly the ones recorded."""
    assert set(table_counts(home / "warehouse.duckdb")) == tables
    assert set(table_counts(home / "warehouse_snapshot.duckdb")) >= tables
    assert decisions(home) == kept


@dataclass
class Killed:
    """What a SIGKILL hit: the run executing, its worker, the temporary caught in flight."""

    run_id: str
    worker: int
    temporary: Path | None
    at: float


def _sigkill(cap: Capacity, stage: Stage) -> Killed:
    """SIGKILL at `stage`, of the processes its `sigkill` names."""
    run_id = cap.wait_for_step(stage.step)
    worker = cap.worker_pid()
    caught = None
    if stage.temporary:  # caught in flight: the worker's group is frozen until the kill
        folder, pattern = stage.temporary
        caught = cap.freeze_with_temporary(cap.home / folder, pattern)
    if stage.name == "forecasts":  # kill it while its pool computes
        deadline = time.monotonic() + 120
        while not any(POOL in c for c in processes_of(cap.home).values()):
            assert time.monotonic() < deadline, f"no forecasting pool\n{cap.output()}"
            time.sleep(0.02)
    if stage.sigkill == "everything":
        cap.kill_everything()
    elif stage.sigkill == "worker":
        os.kill(worker, signal.SIGKILL)
    else:
        os.kill(cap.pid, signal.SIGKILL)
    if caught is not None:
        cap.thaw(worker)
    return Killed(run_id, worker, caught, time.monotonic())


@pytest.mark.timeout(1500)
def test_matrix_sigterm_then_sigkill_at_every_stage_then_a_demo_completes(
    accepted_home: Path, tmp_path: Path
):
    home = copy_home(accepted_home, tmp_path)
    counts = table_counts(home / "warehouse.duckdb")
    kept = decisions(home)
    stopped: list[Stopped] = []
    dead: dict[str, int] = {}  # run id -> worker pid, of runs killed with their supervisor
    caught: list[Path] = []
    for stage in STAGES:
        # SIGTERM: canceled in order, in seconds; the next demo gets back into this stage
        cap = Capacity(home, DEMO)
        cap.wait_for_step(stage.step)
        sent = _interrupt(cap, signal.SIGTERM)
        stopped.append(assert_interrupted(cap, signal.SIGTERM, sent, f"SIGTERM at {stage.name}"))
        assert_intact(home, set(counts), kept)
        for run_id, pid in dead.items():  # killed earlier: marked failed at this demo's start
            lines = [line for line in cap.stdout if run_id in line]
            assert lines == [f"Run {run_id} (capacity demo): "
                             f"{DEAD_RUN_LINE.format(pid=pid)} the next `capacity` command."]
        dead.clear()
        assert all(not path.exists() for path in caught), caught  # removed by that demo
        caught.clear()

        # SIGKILL: nothing left running; the next demo gets through this stage
        cap = Capacity(home, DEMO)
        killed = _sigkill(cap, stage)
        code = cap.wait(timeout=120)
        left = wait_until_no_processes(home, timeout=30)
        assert left == {}, f"left running after SIGKILL at {stage.name}: {left}"
        gone_after = time.monotonic() - killed.at
        if killed.temporary is not None:
            assert killed.temporary.exists(), f"{killed.temporary} did not outlive the kill"
            caught.append(killed.temporary)
        statuses = cap.runs()
        run_id = killed.run_id
        if stage.sigkill == "everything":  # nobody is left to tell the instance
            assert statuses[run_id] == "STARTED"
            dead[run_id] = killed.worker
            assert code == -signal.SIGKILL
        elif stage.sigkill == "worker":  # its supervisor marks the run failed at once
            assert statuses[run_id] == "FAILURE"
            assert code == 1
            line = f"Run {run_id} (capacity demo): {DEAD_RUN_LINE.format(pid=killed.worker)}"
            assert f"{line} its `capacity` command." in cap.stdout, cap.output()
            assert cap.stderr[-1].startswith(
                "capacity demo: the run worker was killed by SIGKILL"
            ), cap.output()
        else:  # the worker, interrupted by the kernel's SIGTERM, fails its own run
            assert statuses[run_id] == "FAILURE"
            assert code == -signal.SIGKILL
        case = f"SIGKILL ({stage.sigkill}) at {stage.name}"
        stopped.append(Stopped(case, code, gone_after, list(statuses.values())))
        assert_intact(home, set(counts), kept)

    done = Capacity(home, DEMO)
    assert done.wait() == 0, done.output()
    for run_id, pid in dead.items():
        assert f"Run {run_id} (capacity demo): {DEAD_RUN_LINE.format(pid=pid)} the next " \
               "`capacity` command." in done.stdout  # fmt: skip
    assert all(not path.exists() for path in caught), caught
    print("\n| case | exit | seconds | runs |\n|---|---|---|---|")
    print("\n".join(s.row() for s in stopped))

    # Ten stopped demos later: no run left open, no temporary, nothing in TMPDIR, every table
    # readable with the rows one clean demo writes (re-runs never duplicate, kills leave no
    # hole), every decision kept.
    assert not [s for s in runs(home).values() if s in ("STARTED", "STARTING", "CANCELING")]
    assert temporary_files(home) == []
    assert list(temp_folder(home).iterdir()) == []
    assert table_counts(home / "warehouse.duckdb") == counts
    assert_intact(home, set(counts), kept)
    assert (home / "reports" / "2026-W43" / "capacity_report.html").is_file()


# -- SIGINT and SIGTERM outside the matrix ------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_before_the_worker_starts_exits_at_once_with_no_run(
    tmp_path: Path, signum: int
):
    """The supervisor is held before it launches anything (an analyst's read-write DuckDB
    session on the warehouse makes its check of the stores wait): the signal ends it in one
    line, with 130 / 143, and no run exists."""
    home = tmp_path / "home"
    home.mkdir()
    analyst = duckdb.connect(str(home / "warehouse.duckdb"))  # read-write: holds DuckDB's lock
    try:
        analyst.execute("CREATE TABLE notes AS SELECT 1 AS note")
        cap = Capacity(home, DEMO)
        runs_db = home / "dagster_home" / "history" / "runs.db"
        deadline = time.monotonic() + 120
        while not runs_db.exists():  # the instance is open: next comes the wait for the lock
            assert time.monotonic() < deadline and cap.process.poll() is None, cap.output()
            time.sleep(0.05)
        sent = _interrupt(cap, signum)
        stopped = assert_interrupted(cap, signum, sent, "before the worker")
    finally:
        analyst.close()
    assert stopped.statuses == [] and runs(home) == {}
    assert cap.stderr == [f"capacity demo: interrupted ({signal.Signals(signum).name})"]
    assert stopped.seconds < 5


def test_ctrl_c_during_the_weekly_report_cancels_its_run(accepted_home: Path, tmp_path: Path):
    """Ctrl-C in the last run of a demo: the two before it stand. (Ctrl-C during forecasting:
    `run-SIGINT` below; before the worker starts: above.)"""
    home = copy_home(accepted_home, tmp_path)
    kept = decisions(home)
    counts = table_counts(home / "warehouse.duckdb")
    cap = Capacity(home, DEMO)
    cap.wait_for_step("weekly_capacity_report")
    sent = _interrupt(cap, signal.SIGINT)
    stopped = assert_interrupted(cap, signal.SIGINT, sent, "Ctrl-C at the weekly report")
    assert stopped.statuses == ["SUCCESS", "SUCCESS", "CANCELED"]
    assert_intact(home, set(counts), kept)


RUN_DAY = ("--start", "2026-10-25", "--end", "2026-10-26")


@pytest.mark.parametrize(
    ("command", "step", "signum"),
    [
        ("extract", "container_usage", signal.SIGTERM),
        ("extract", "container_usage", signal.SIGINT),
        ("run", "container_usage", signal.SIGTERM),
        ("run", "load_forecasts", signal.SIGINT),
    ],
    ids=["extract-SIGTERM", "extract-SIGINT", "run-SIGTERM", "run-SIGINT"],
)
def test_extract_and_run_interrupted_cancel_their_run(
    accepted_home: Path, tmp_path: Path, command: str, step: str, signum: int
):
    home = copy_home(accepted_home, tmp_path)
    kept = decisions(home)
    counts = table_counts(home / "warehouse.duckdb")
    cap = Capacity(home, (command, *RUN_DAY))
    cap.wait_for_step(step)
    sent = _interrupt(cap, signum)
    stopped = assert_interrupted(cap, signum, sent, f"{command} {signum}")
    assert stopped.statuses == ["CANCELED"]
    assert_intact(home, set(counts), kept)

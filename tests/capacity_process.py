"""The `capacity` command as a real process, for the tests of killed and interrupted runs.

`Capacity` starts `python -m capacity_pipelines.cli ...` in a session of its own (as a shell
starts a job), reads its output line by line so a test can act on a progress line, and sends
real signals. The rest inspects what a run leaves behind, from outside: the processes that
carry the run's `CAPACITY_HOME` in their environment (every descendant inherits it, whatever
session it moved to), the runs recorded in the real Dagster instance, the temporary files in
the home folder, and every table of the warehouse.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

CAPACITY = [sys.executable, "-m", "capacity_pipelines.cli"]
# Settings of the developer's shell that would point a test run elsewhere.
_FOREIGN_SETTINGS = (
    "DAGSTER_HOME",
    "CAPACITY_WAREHOUSE",
    "CAPACITY_SNAPSHOT",
    "CAPACITY_REPORTS",
    "CAPACITY_DECISIONS",
    "CAPACITY_PROMETHEUS_URL",
    "CAPACITY_EXPORT_FILES",
    "CAPACITY_EXECUTOR",
    # block-buffered output, as in CI and cron: progress must still arrive line by line
    "PYTHONUNBUFFERED",
)
# What an interrupted or killed write can leave beside a file: warehouse drafts (and their
# WALs), snapshot and restore temporaries, publish staging files and folders.
TEMPORARY = re.compile(r"\..+\.draft-\d+\.duckdb|\..+\.\d+\.tmp|\..+\.capacity-staging")


def capacity_env(home: Path) -> dict[str, str]:
    """The environment of a `capacity` command whose every output goes under `home`, with a
    temporary folder of its own (`temp_folder`) so that what it leaves there can be seen."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN_SETTINGS}
    env["CAPACITY_HOME"] = str(home)
    env["TMPDIR"] = str(temp_folder(home))
    return env


def temp_folder(home: Path) -> Path:
    """The TMPDIR of the commands run on `home`."""
    folder = home.parent / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_capacity(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run one `capacity` command to its end."""
    return subprocess.run(
        [*CAPACITY, *args], env=capacity_env(home), capture_output=True, text=True,
        timeout=timeout, cwd=home.parent,
    )  # fmt: skip


@dataclass
class Capacity:
    """A running `capacity` command whose output lines are collected as they arrive."""

    home: Path
    args: tuple[str, ...]
    process: subprocess.Popen = field(init=False)
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    ended_at: float | None = None

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.started = datetime.now(UTC)
        self._arrived = threading.Condition()
        self.process = subprocess.Popen(
            [*CAPACITY, *self.args], env=capacity_env(self.home), cwd=self.home.parent,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its own process group, like a job started by a shell
        )  # fmt: skip
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout),
                                  (self.process.stderr, self.stderr))
        ]  # fmt: skip
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self, stream, lines: list[str]) -> None:
        for line in stream:
            with self._arrived:
                lines.append(line.rstrip("\n"))
                self._arrived.notify_all()
        with self._arrived:
            if self.process.poll() is not None and self.ended_at is None:
                self.ended_at = time.monotonic()
            self._arrived.notify_all()

    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout, "--- stderr", *self.stderr])

    def wait_for_line(self, pattern: str, timeout: float = 300) -> str:
        """The first stdout line matching `pattern` (a regular expression), once it arrives."""
        wanted = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                hit = next((line for line in self.stdout if wanted.search(line)), None)
                if hit is not None:
                    return hit
                if self.process.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError(f"ended before printing {pattern!r}:\n{self.output()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line {pattern!r} in {timeout}s:\n{self.output()}")
                self._arrived.wait(min(left, 0.5))

    def worker_pid(self, timeout: float = 60) -> int:
        """The run worker the supervisor started (its child in a session of its own)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in children(self.pid):
                if "capacity_pipelines.cli.worker" in command_line(pid):
                    return pid
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no worker process appeared:\n{self.output()}")

    def wait(self, timeout: float = 600) -> int:
        """The exit code (negative: killed by that signal) once the output is read."""
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=30)
        return code

    def kill_everything(self) -> None:
        """SIGKILL the supervisor and the worker's whole process group at once, as the OOM
        killer of a cgroup or a node going down would (the worker is in its own session)."""
        worker = self.worker_pid()
        os.kill(self.pid, signal.SIGKILL)
        os.killpg(worker, signal.SIGKILL)


    def wait_for_step(self, step: str, timeout: float = 300) -> str:
        """The id of this command's run in which `step` has started (STEP_START in the
        instance's event log); the step is running, or just finished, when this returns."""
        import dagster as dg

        deadline = time.monotonic() + timeout
        with _instance(self.home) as instance:
            while time.monotonic() < deadline:
                for run in instance.get_runs(filters=self._mine()):
                    started = instance.all_logs(
                        run.run_id, of_type=dg.DagsterEventType.STEP_START
                    )
                    if any(record.step_key == step for record in started):
                        return run.run_id
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        raise AssertionError(f"step {step} did not start:\n{self.output()}")

    def _mine(self):
        import dagster as dg

        # a pid is unique among live processes only: a copied instance holds older runs
        tags = {"capacity/supervisor_pid": str(self.pid)}
        return dg.RunsFilter(tags=tags, created_after=self.started)

    def runs(self) -> dict[str, str]:
        """run id -> status of the runs this command launched, in launch order."""
        with _instance(self.home) as instance:
            found = instance.get_runs(filters=self._mine())
            return {r.run_id: r.status.value for r in reversed(found)}

    def wait_for_temporary(self, folder: Path, pattern: str, timeout: float = 120) -> Path:
        """The first file or folder in `folder` whose name matches `pattern`, polled every
        millisecond: a temporary lives for the tens of milliseconds a write takes."""
        wanted = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if wanted.fullmatch(entry.name):
                            return Path(entry.path)
            except FileNotFoundError:
                pass
            time.sleep(0.001)
        raise AssertionError(f"no {pattern} appeared in {folder}:\n{self.output()}")

    def freeze_with_temporary(self, folder: Path, pattern: str, timeout: float = 120) -> Path:
        """Wait for a temporary (`wait_for_temporary`), then SIGSTOP the worker's process group
        and return the temporary if it is still there: frozen, the write cannot finish between
        seeing the file and the kill that follows (on a loaded machine it could, and did).
        Where the write finished first, the group goes on and the next temporary is awaited.
        The caller kills, then `thaw`s what is left."""
        deadline = time.monotonic() + timeout
        worker = self.worker_pid()
        while True:
            caught = self.wait_for_temporary(folder, pattern, deadline - time.monotonic())
            os.killpg(worker, signal.SIGSTOP)
            if caught.exists():
                return caught
            self.thaw(worker)

    def thaw(self, worker: int) -> None:
        """SIGCONT the worker's process group, if anything of it is left (a stopped process
        keeps a SIGTERM pending until it runs again)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker, signal.SIGCONT)


# -- processes ---------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def processes_of(home: Path) -> dict[int, str]:
    """Live processes (not zombies) whose environment names `home` as CAPACITY_HOME."""
    marker = f"CAPACITY_HOME={home}\0".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ and _state(int(entry.name)) not in ("Z", "X", "gone"):
            found[int(entry.name)] = command_line(int(entry.name))
    return found


def wait_until_no_processes(home: Path, timeout: float = 15) -> dict[int, str]:
    """The processes of `home` still alive after `timeout` seconds (empty once all are gone)."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(home)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


# -- what a run leaves behind ------------------------------------------------------------------


def _instance(home: Path):
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home / "dagster_home")))


def runs(home: Path) -> dict[str, str]:
    """run id -> status of every run in the instance under `home` (oldest first)."""
    with _instance(home) as instance:
        return {r.run_id: r.status.value for r in reversed(instance.get_runs())}


def temporary_files(home: Path) -> list[str]:
    """Drafts, temporaries and staging files anywhere under `home`, relative to it."""
    return sorted(
        str(path.relative_to(home))
        for path in home.rglob(".*")
        if TEMPORARY.fullmatch(path.name) or TEMPORARY.match(path.name)
    )


def table_counts(path: Path) -> dict[str, int]:
    """Rows of every table of a DuckDB file, each read in full (a torn block fails the read)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [
            name
            for (name,) in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "ORDER BY table_name"
            ).fetchall()
        ]
        counts = {}
        for name in names:
            quoted = '"' + name.replace('"', '""') + '"'
            rows = con.execute(f"SELECT * FROM {quoted}").fetchall()  # every column, every row
            counts[name] = len(rows)
        return counts
    finally:
        con.close()


# -- a home that has run once, with SRE decisions -----------------------------------------------

DEMO = ("demo", "--days", "8")
REVIEWER = "sre-on-call"


def accepted_home(folder: Path) -> Path:
    """A CAPACITY_HOME after one complete `capacity demo --days 8` and two accepted
    recommendations (through `capacity recs accept`, as an SRE records them)."""
    home = folder / "home"
    done = run_capacity(home, *DEMO)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = run_capacity(home, "recs", "list", "--jsonl", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    for line in listed.stdout.splitlines():
        rec = json.loads(line)["recommendation_id"]
        accepted = run_capacity(home, "recs", "accept", rec, "--by", REVIEWER, "-m", "tested")
        assert accepted.returncode == 0, accepted.stderr
    assert len(decisions(home)) == 2
    return home


def copy_home(seed: Path, folder: Path) -> Path:
    """A private copy of a seeded home (warehouse, decisions, snapshot, Dagster instance)."""
    home = folder / "home"
    shutil.copytree(seed, home)
    return home


def decisions(home: Path) -> list[dict]:
    """Every SRE decision in the home's decisions store (column -> value), in order."""
    con = duckdb.connect(str(home / "decisions.duckdb"), read_only=True)
    try:
        cursor = con.execute(
            "SELECT * FROM recommendation_decisions ORDER BY decided_at, recommendation_id"
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()

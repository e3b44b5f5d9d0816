"""Commands that run the pipeline: `capacity demo`, `extract`, `run`, `ui`.

Each launches the same Dagster jobs the schedules launch (`daily_capacity_pipeline`,
`weekly_capacity_report_job`), as runs recorded in the instance under `CAPACITY_HOME`, so the
UI shows them afterwards. Settings travel as the runs' resource config (visible in the UI);
credentials travel only in the environment of the run's processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from capacity_pipelines.cli.runs import (
    RunRequest,
    dagster_home,
    launch,
    live_runs,
    recover_dead_runs,
)
from capacity_pipelines.cli.worker import DAILY_JOB, WEEKLY_JOB
from capacity_pipelines.common import paths

PRELOAD = ["capacity_pipelines.cli.worker", "capacity_pipelines.definitions"]
EXECUTORS = {
    "multiprocess": lambda workers: {"config": {"multiprocess": {"max_concurrent": workers}}},
    "forkserver": lambda workers: {
        "config": {
            "multiprocess": {
                "max_concurrent": workers,
                "start_method": {"forkserver": {"preload_modules": PRELOAD}},
            }
        }
    },
    "in_process": lambda workers: {"config": {"in_process": {}}},
}


class UsageError(Exception):
    """Bad command-line input; printed as one line with exit code 2."""


def parse_day(text: str, option: str) -> date:
    """A `YYYY-MM-DD` day for `option`; UsageError otherwise."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a day (expected YYYY-MM-DD, UTC)") from None


def check_days(first: date, last: date) -> None:
    """Whole, past days within the partitions: today is not over, so it cannot be extracted."""
    from capacity_pipelines.defs.partitions import PARTITIONS_START_ENV, partitions_start

    if last < first:
        raise UsageError(f"--end must be after --start {first} (end is exclusive)")
    today = datetime.now(UTC).date()
    if last >= today:
        raise UsageError(
            f"the last day asked for, {last}, is not over yet (today is {today} UTC): "
            f"pass --end {today} or earlier (--end is exclusive)"
        )
    start = date.fromisoformat(partitions_start())
    if first < start:
        raise UsageError(
            f"--start {first} is before the first partition {start}: set "
            f"{PARTITIONS_START_ENV}={first} (it must be set for the UI and the daemon too)"
        )


def _prepare(command: str) -> Path:
    """The instance, once runs whose worker died are closed and the stores the runs will read
    have read back whole (a damaged file is one line saying how to restore it, before any run
    starts and fails on it step after step)."""
    from capacity_pipelines import warehouse as wh

    home = dagster_home()
    recover_dead_runs(home)
    for store in (paths.warehouse_path(), paths.decisions_path()):
        if store.exists():
            wh.verify(store)
    for run in live_runs(home):
        print(
            f"Another run is in progress: {run}; this one's writes wait for its writes "
            "(the warehouse has one writer at a time)."
        )
    return home


def _executor() -> dict:
    workers = max(1, os.cpu_count() or 1)
    return EXECUTORS[os.environ.get("CAPACITY_EXECUTOR", "in_process")](workers)


def source_config(prometheus_url: str | None, files: list[str] | None) -> tuple[dict, dict]:
    """(run config of the `prometheus` and `metrics` resources, secrets for the run's env).

    Credentials in the URL's user info are split off before anything parses or shows the URL;
    they reach the run only as `CAPACITY_PROMETHEUS_USER` / `_PASSWORD` in its environment.
    """
    from capacity_pipelines.defs.resources import (
        MetricSourceResource,
        prometheus_from_environment,
    )
    from capacity_pipelines.ingest.sources.prometheus import checked_url, split_credentials

    env: dict[str, str] = {}
    url = ""
    if prometheus_url:
        checked_url(prometheus_url)  # a URL that can never work fails here, in seconds
        url, user, password = split_credentials(prometheus_url)
        if user and password:
            env = {"CAPACITY_PROMETHEUS_USER": user, "CAPACITY_PROMETHEUS_PASSWORD": password}
    resources = {
        "prometheus": prometheus_from_environment(url, {**os.environ, **env}),
        "metrics": MetricSourceResource(
            export_files=[str(Path(f).resolve()) for f in files or []],
            cache_dir=str(paths.capacity_home() / "cache"),
        ),
    }
    # The run-config form of each resource (EnvVars stay references: `{"env": NAME}`).
    return {k: r._convert_to_config_dictionary() for k, r in resources.items()}, env


def _ingest_assets() -> list[str]:
    from capacity_pipelines.defs.resources import configured_catalog

    return list(configured_catalog().tables)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the whole asset graph on the bundled demo fleet: catch up the fleet's history, run
    the daily job for its last day, and build the weekly report of its last complete week."""
    from capacity_pipelines.ingest.sources.files import DEMO_FLEET_FILE, demo_source
    from capacity_pipelines.reporting.weeks import ReportWeek

    home = _prepare("capacity demo")
    first, last = demo_source().time_range()
    first_day = datetime.fromtimestamp(first, UTC).date()
    # the last whole day: a sample at 23:55 closes its day, one at 00:00 opens the next
    last_day = datetime.fromtimestamp(last + 300, UTC).date() - timedelta(days=1)
    if args.days:
        first_day = max(first_day, last_day - timedelta(days=args.days - 1))
    week = ReportWeek.last_complete(last_day)
    print(f"Demo fleet: {DEMO_FLEET_FILE.relative_to(paths.REPO_ROOT)}")
    print(f"History {first_day} .. {last_day} into {paths.warehouse_path()}")
    print(f"Weekly report for {week.describe()}")
    sources, _ = source_config(None, None)  # the demo never reads a live Prometheus
    common = dict(command="capacity demo", resources=sources, executor=_executor())
    runs = []
    if last_day > first_day:
        before = last_day - timedelta(days=1)
        runs.append(
            RunRequest(
                job=DAILY_JOB,
                title=f"Catching up {first_day} .. {before} (per-day data):",
                partition_range=(first_day.isoformat(), before.isoformat()),
                assets=[*_ingest_assets(), "llm_token_cost"],
                **common,
            )
        )
    runs.append(
        RunRequest(
            job=DAILY_JOB,
            title=f"The daily run for {last_day}:",
            partition_key=last_day.isoformat(),
            **common,
        )
    )
    runs.append(
        RunRequest(
            job=WEEKLY_JOB,
            title=f"The weekly report for {week.label}:",
            partition_key=week.monday.isoformat(),
            **common,
        )
    )
    launch(runs, home)
    print()
    print(f"Warehouse:          {paths.warehouse_path()}")
    print(f"Analyst snapshot:   {paths.snapshot_path()}")
    print(f"SRE decisions:      {paths.decisions_path()}")
    print(f"Dagster instance:   {home}  (open it with `capacity ui`)")
    print(f"Data quality:       {paths.reports_dir() / 'latest' / 'data_quality.md'}")
    print("Weekly capacity report (HTML, opens offline):")
    # Last line: the report's path alone, so scripts can `capacity demo | tail -1`.
    print(paths.reports_dir() / week.label / "capacity_report.html")
    return 0


def _days(args: argparse.Namespace) -> tuple[date, date]:
    first = parse_day(args.start, "--start")
    end = parse_day(args.end, "--end")
    check_days(first, end - timedelta(days=1))
    return first, end - timedelta(days=1)


def _daily_job_over(args: argparse.Namespace, command: str, title: str, assets=None) -> int:
    """The daily job over the days of --start/--end, reading --prometheus-url or --files."""
    first, last = _days(args)
    sources, env = source_config(args.prometheus_url, args.files)
    home = _prepare(command)
    print(f"{title} {first} .. {last} into {paths.warehouse_path()}")
    one_day = first == last
    request = RunRequest(
        job=DAILY_JOB,
        command=command,
        partition_key=first.isoformat() if one_day else None,
        partition_range=None if one_day else (first.isoformat(), last.isoformat()),
        assets=assets,
        resources=sources,
        executor=_executor(),
        env=env,
    )
    launch([request], home)
    print(f"Analyst snapshot: {paths.snapshot_path()}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    """Extract whole days from Prometheus (or exports) into the warehouse, nothing else."""
    assets = [*_ingest_assets(), "warehouse_snapshot"]
    return _daily_job_over(args, "capacity extract", "Extracting", assets)


def cmd_run(args: argparse.Namespace) -> int:
    """The daily job (what the schedule runs) for each day from --start to --end (exclusive):
    extraction, and every as-of answer (forecasts, rightsizing, ...) computed for each day."""
    return _daily_job_over(args, "capacity run", "The daily pipeline for")


def parse_week(text: str) -> date:
    """The Monday of an ISO week `YYYY-Www` (e.g. 2026-W43); UsageError otherwise."""
    try:
        year, week = text.upper().split("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    except ValueError:
        raise UsageError(
            f"--week {text!r} is not an ISO week (expected YYYY-Www, e.g. 2026-W43)"
        ) from None


def _last_week_with_data() -> date | None:
    """The Monday of the last complete week the analysts' snapshot holds extracted data for."""
    from capacity_pipelines import warehouse as wh
    from capacity_pipelines.ingest.tables import CONTAINER_USAGE_TABLE
    from capacity_pipelines.reporting.weeks import ReportWeek

    snapshot = paths.snapshot_path()
    if not snapshot.exists():
        return None
    with wh.reader(snapshot) as con:
        if not wh.table_exists(con, CONTAINER_USAGE_TABLE):
            return None
        last = con.execute(f"SELECT max(ts) FROM {CONTAINER_USAGE_TABLE}").fetchone()[0]
    if last is None:
        return None
    # a sample stamped at 00:00 closes the day before it
    return ReportWeek.last_complete((last - timedelta(microseconds=1)).date()).monday


def cmd_report(args: argparse.Namespace) -> int:
    """Build and publish one week's capacity report from the analysts' snapshot: the weekly
    job the Monday schedule launches, as a run in the instance (default: the last complete
    week the snapshot has data for)."""
    from capacity_pipelines.defs.partitions import partitions_start
    from capacity_pipelines.reporting.weeks import ReportWeek

    monday = parse_week(args.week) if args.week else _last_week_with_data()
    if monday is None:
        raise UsageError(
            f"no extracted data in {paths.snapshot_path()}: pass --week YYYY-Www, or run "
            "`capacity run --start ... --end ...` first"
        )
    week = ReportWeek(monday)
    first = date.fromisoformat(partitions_start())
    if monday < first:
        raise UsageError(f"{week.label} starts before the first partition {first}")
    if week.end > datetime.now(UTC):
        raise UsageError(f"{week.label} is not over yet (it ends {week.end:%Y-%m-%d %H:%M} UTC)")
    home = _prepare("capacity report")
    print(f"Weekly report for {week.describe()} from {paths.snapshot_path()}")
    request = RunRequest(
        job=WEEKLY_JOB,
        command="capacity report",
        title=f"The weekly report for {week.label}:",
        partition_key=week.monday.isoformat(),
        executor=_executor(),
    )
    launch([request], home)
    # Last line: the report's path alone, as `capacity demo` prints it.
    print(paths.reports_dir() / week.label / "capacity_report.html")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the Dagster UI bound to 127.0.0.1 (expose it only through an authenticating proxy).

    The UI's webserver, daemon and code server run in a session of their own; SIGINT and
    SIGTERM here stop all of them (gracefully, then by force) before the command returns.
    """
    home = dagster_home()
    command = [
        sys.executable, "-m", "dagster", "dev", "-w", str(paths.REPO_ROOT / "workspace.yaml"),
        "-h", args.host, "-p", str(args.port),
    ]  # fmt: skip
    print(f"Dagster UI on http://{args.host}:{args.port}  (DAGSTER_HOME={home})", flush=True)
    ui = subprocess.Popen(
        command, cwd=paths.REPO_ROOT, env={**os.environ, "DAGSTER_HOME": str(home)},
        start_new_session=True,
    )  # fmt: skip
    received: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, _frame: received.append(signum))
        for s in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while True:
            try:
                code = ui.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if received:
                    code = _stop_group(ui)
                    break
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _stop_group(ui)  # whatever it left behind (the daemon, the code server)
    return 128 + received[0] if received else code


def _stop_group(process: subprocess.Popen, grace_s: float = 15.0) -> int:
    """SIGINT the process group, wait, then SIGKILL whatever is left of it."""
    for signum, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; its children may not be
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
    return process.wait()

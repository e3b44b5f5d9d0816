"""What a daily run and an SRE decision cost the warehouse, and how much a run's steps overlap,
side by side with an older commit (issue 15: read-only readers, draft copies for writes only,
SRE decisions in their own store, no Dagster pool around the assets).

  copies   (a) the demo's daily run of its last day: how many times the warehouse file (and any
           other DuckDB file) is copied, the bytes copied, by which asset, and the snapshots
           published; (b) then one `capacity recs accept`. The copy function is wrapped in the
           process that runs the code: before issue 15 `capacity_pipelines.warehouse._copy` (the
           draft copy of a write session), after `capacity_pipelines.warehouse.sessions
           .copy_file` (drafts, snapshots and backups). Each CLI's own way of running the day:
           before, one in-process `materialize` per asset over the day (what `capacity demo`
           ran); after, the `daily_capacity_pipeline` job for the day's partition with the
           in-process executor, as the CLI's worker runs it.
  overlap  the same daily job for the last day under Dagster's multiprocess executor (what the
           daemon's scheduled runs use; before with its `warehouse` pool, limit 1, as its
           dagster.yaml configured) and under the in-process executor (what the CLI uses); step
           start and end times from the instance's event log: wall time of the run, the steps'
           own seconds, and the seconds during which two or more steps ran at once.

Every measured run starts from a copy of one prepared home per commit (the demo fleet's days
before the last one extracted and costed, as `capacity demo` catches them up) in a fresh
temporary CAPACITY_HOME; the code of REF runs from a git worktree with this venv, alternately
with this checkout. The code under test runs in a driver process (this file, `--driver`) with
`PYTHONPATH=<tree>`, so each side's package is the one imported.

    nice .venv/bin/python benchmarks/daily_run_bench.py --compare 25afdbf --copies
    nice .venv/bin/python benchmarks/daily_run_bench.py --compare 25afdbf --overlap --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THIS = "this checkout"
DAILY_JOB = "daily_capacity_pipeline"
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
EXECUTORS = {
    "multiprocess": {"config": {"multiprocess": {}}},
    "in_process": {"config": {"in_process": {}}},
}


# ----------------------------------------------------------------------------- measures


def overlap_seconds(intervals: list[tuple[float, float]], at_least: int = 2) -> float:
    """Seconds during which `at_least` of the (start, end) intervals were open at once."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    total, open_now, since = 0.0, 0, 0.0
    for at, change in edges:
        if open_now >= at_least:
            total += at - since
        open_now += change
        since = at
    return total


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at the same moment."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = open_now = 0
    for _, change in edges:  # an end sorts before a start at the same instant
        open_now += change
        best = max(best, open_now)
    return best


# ----------------------------------------------------------------------------- the driver
# Runs inside a process whose `capacity_pipelines` is the code under test (either commit).


@dataclass
class Copy:
    """One byte copy of a DuckDB file made by the code under test."""

    source: str  # file name: warehouse.duckdb, decisions.duckdb, ...
    bytes: int
    seconds: float
    by: str  # the asset (or CLI function) that asked for it


@dataclass
class DriverResult:
    """What one driver action observed."""

    version: str  # "before" (capacity_pipelines.warehouse is a module) or "after" (a package)
    wall: float = 0.0
    copies: list[Copy] = field(default_factory=list)
    snapshots: list[int] = field(default_factory=list)  # bytes of each snapshot published
    runs: list[dict] = field(default_factory=list)  # per Dagster run: status, times, steps
    warehouse_bytes: int = 0


def _is_after() -> bool:
    return hasattr(importlib.import_module("capacity_pipelines.warehouse"), "sessions")


def _asked_by() -> str:
    """The Dagster op (asset) running, else the innermost capacity_pipelines caller outside the
    warehouse code (the recs CLI)."""
    import dagster as dg

    with contextlib.suppress(dg.DagsterInvariantViolationError):  # no op running
        return dg.OpExecutionContext.get().op.name
    stack = traceback.extract_stack()[:-2]
    ours = [f for f in stack if "capacity_pipelines" in f.filename]
    outside = [f for f in ours if "warehouse" not in Path(f.filename).as_posix()]
    return f"{Path(outside[-1].filename).stem}.{outside[-1].name}" if outside else "?"


def _count_copies(result: DriverResult) -> None:
    """Wrap the code under test's copy function (and snapshot publisher) to record each call."""
    wh = importlib.import_module("capacity_pipelines.warehouse")

    def counted(original):
        def copy(source, target, *args, **kwargs):
            size = os.fstat(source.fileno()).st_size
            began = time.perf_counter()
            original(source, target, *args, **kwargs)
            result.copies.append(
                Copy(Path(source.name).name, size, time.perf_counter() - began, _asked_by())
            )

        return copy

    if _is_after():
        sessions = importlib.import_module("capacity_pipelines.warehouse.sessions")
        snapshot = importlib.import_module("capacity_pipelines.warehouse.snapshot")
        sessions.copy_file = snapshot.copy_file = counted(sessions.copy_file)
    else:
        wh._copy = counted(wh._copy)
    publish = wh.publish_snapshot

    def published(warehouse, snapshot_path, *args, **kwargs):
        path = publish(warehouse, snapshot_path, *args, **kwargs)
        result.snapshots.append(Path(path).stat().st_size)
        return path

    wh.publish_snapshot = published


def _paths():
    if _is_after():
        return importlib.import_module("capacity_pipelines.common.paths")
    return importlib.import_module("capacity_pipelines.paths")


def _demo_days() -> tuple[date, date]:
    """The demo fleet's first day and its last whole day, as `capacity demo` computes them."""
    package = "capacity_pipelines.ingest" if _is_after() else "capacity_pipelines"
    module = f"{package}.sources.files"
    first, last = importlib.import_module(module).demo_source().time_range()
    last_day = datetime.fromtimestamp(last + 300, UTC).date() - timedelta(days=1)
    return datetime.fromtimestamp(first, UTC).date(), last_day


def _quiet(*_args, **_kwargs) -> None:
    pass


def old_daily_capacity_pipeline():
    """The daily job of the code before the worker (reconstructed by step processes)."""
    from capacity_pipelines.definitions import defs

    return defs().resolve_job_def(DAILY_JOB)


def _run_after(tags: dict, assets: list[str] | None, executor: dict) -> None:
    from capacity_pipelines.cli.pipeline import source_config
    from capacity_pipelines.cli.worker import RunSpec, execute

    spec = RunSpec(run_id=str(uuid.uuid4()), job=DAILY_JOB, tags=tags, assets=assets,
                   resources=source_config(None, None)[0], executor=executor)  # fmt: skip
    failures: list[str] = []
    if execute(spec, failures):
        raise RuntimeError(f"the run failed: {failures}")


def _ingest_assets() -> list[str]:
    if _is_after():
        from capacity_pipelines.defs.resources import configured_catalog

        return list(configured_catalog().tables)
    return list(importlib.import_module("capacity_pipelines.catalog").load_catalog().tables)


def _dagster_home() -> None:
    if _is_after():
        from capacity_pipelines.cli.runs import dagster_home

        os.environ["DAGSTER_HOME"] = str(dagster_home())
    else:
        importlib.import_module("capacity_pipelines.cli").dagster_home()  # sets DAGSTER_HOME


def setup(first: date, last: date) -> None:
    """Catch up the days before the demo's last one (extraction and token costs)."""
    assets = [*_ingest_assets(), "llm_token_cost"]
    before = last - timedelta(days=1)
    if _is_after():
        tags = {"dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": before.isoformat()}  # fmt: skip
        _run_after(tags, assets, EXECUTORS["in_process"])
    else:
        run_partitions = importlib.import_module("capacity_pipelines.cli").run_partitions
        run_partitions(first, before, log=_quiet, only=assets)


def daily(last: date, mode: str) -> None:
    """The daily run of the demo's last day: `cli` (how each version's CLI ran it), or the
    daily job under the `in_process` or `multiprocess` executor."""
    if _is_after():
        _run_after({"dagster/partition": last.isoformat()}, None,
                   EXECUTORS["in_process" if mode == "cli" else mode])  # fmt: skip
    elif mode == "cli":
        run_partitions = importlib.import_module("capacity_pipelines.cli").run_partitions
        run_partitions(last, last, log=_quiet)
    else:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            result = dg.execute_job(
                dg.reconstructable(old_daily_capacity_pipeline), instance=instance,
                run_config={**QUIET_RUN, "execution": EXECUTORS[mode]},
                tags={"dagster/partition": last.isoformat()}, raise_on_error=False,
            )  # fmt: skip
        if not result.success:
            raise RuntimeError(f"the run {result.run_id} failed")


def decide() -> None:
    """`capacity recs accept` of the top recommendation, as an SRE types it."""
    import duckdb

    with duckdb.connect(str(_paths().snapshot_path()), read_only=True) as con:
        (top,) = con.execute(
            "SELECT recommendation_id FROM recommendations WHERE as_of = "
            "(SELECT max(as_of) FROM recommendations) ORDER BY rank LIMIT 1"
        ).fetchone()
    cli = importlib.import_module("capacity_pipelines.recommendations.cli")
    if cli.main(["accept", top, "--by", "bench", "-m", "daily_run_bench"]) != 0:
        raise RuntimeError("capacity recs accept failed")


def _runs_since(known: set[str]) -> list[dict]:
    """Status, run start/end and step intervals of the runs not in `known`, from the event log."""
    import dagster as dg

    runs = []
    with dg.DagsterInstance.get() as instance:
        for run in reversed(instance.get_runs()):
            if run.run_id in known:
                continue
            steps: dict[str, dict[str, float]] = {}
            marks: dict[str, float] = {}
            for entry in instance.all_logs(run.run_id):
                event = entry.dagster_event
                if event is None:
                    continue
                kind = event.event_type.name  # RUN_START (its value is PIPELINE_START)
                if kind in ("RUN_START", "RUN_SUCCESS", "RUN_FAILURE"):
                    marks[kind] = entry.timestamp
                elif event.step_key and kind in (
                    "STEP_WORKER_STARTING", "STEP_START", "STEP_SUCCESS", "STEP_FAILURE",
                ):  # fmt: skip
                    steps.setdefault(event.step_key, {})[kind] = entry.timestamp
            runs.append({"status": run.status.value, "marks": marks, "steps": steps})
    return runs


def driver(action: str, mode: str, out: Path, count: bool) -> None:
    """Run one action with the code on PYTHONPATH and write what was observed to `out`."""
    for name in ("CAPACITY_PROMETHEUS_URL", "CAPACITY_EXPORT_FILES"):
        os.environ.pop(name, None)  # the demo never reads a live Prometheus
    result = DriverResult("after" if _is_after() else "before")
    _dagster_home()
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        known = {r.run_id for r in instance.get_runs()}
    first, last = _demo_days()
    if count:
        _count_copies(result)
    began = time.perf_counter()
    {"setup": lambda: setup(first, last), "daily": lambda: daily(last, mode),
     "decide": decide}[action]()  # fmt: skip
    result.wall = time.perf_counter() - began
    result.runs = _runs_since(known)
    result.warehouse_bytes = _paths().warehouse_path().stat().st_size
    out.write_text(json.dumps(asdict(result)))


# ----------------------------------------------------------------------------- the parent


def run_driver(tree: Path, home: Path, action: str, mode: str = "", count: bool = False) -> dict:
    """One driver process running the code of `tree` in CAPACITY_HOME `home`."""
    from benchmarks.demo_bench import tree_env

    out = home.parent / f"{home.name}-{action}.json"
    command = [sys.executable, __file__, "--driver", action, "--mode", mode, "--out", str(out)]
    proc = subprocess.run([*command, *(["--count"] if count else [])], cwd=tree,
                          env=tree_env(tree, home), capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        sys.exit(f"{action} failed with the code of {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def prepared_homes(trees: dict[str, Path], work: Path) -> dict[str, Path]:
    """One home per commit with the demo's days before the last one caught up."""
    homes = {}
    for name, tree in trees.items():
        home = work / f"prepared-{name.replace(' ', '_')}" / "home"
        if not (home / "warehouse.duckdb").exists():
            shutil.rmtree(home.parent, ignore_errors=True)
            home.mkdir(parents=True)
            run_driver(tree, home, "setup")
        homes[name] = home
    return homes


def fresh_home(prepared: Path, work: Path) -> Path:
    """A copy of a prepared home in a new folder (the Dagster instance included)."""
    home = Path(tempfile.mkdtemp(prefix="run_", dir=work)) / "home"
    shutil.copytree(prepared, home)
    dagster_yaml = home / "dagster_home" / "dagster.yaml"
    assert dagster_yaml.exists(), f"{dagster_yaml}: the prepared home has no Dagster instance"
    return home


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def print_copies(name: str, action: str, result: dict) -> None:
    copies = result["copies"]
    by_file: dict[str, list[dict]] = {}
    for copy in copies:
        by_file.setdefault(copy["source"], []).append(copy)
    files = "; ".join(
        f"{f}: {len(c)} ({_mib(sum(x['bytes'] for x in c))}, {sum(x['seconds'] for x in c):.2f} s)"
        for f, c in by_file.items()
    )
    snapshots = result["snapshots"]
    print(f"| {name} | {action} | {result['wall']:.1f} | {_mib(result['warehouse_bytes'])} | "
          f"{files or 'none'} | {len(snapshots)} ({_mib(sum(snapshots))}) |")  # fmt: skip


def copies(trees: dict[str, Path], work: Path) -> None:
    homes = prepared_homes(trees, work)
    results: dict[str, dict[str, dict]] = {}
    for name, tree in trees.items():
        home = fresh_home(homes[name], work)
        results[name] = {
            "daily run": run_driver(tree, home, "daily", "cli", count=True),
            "recs accept": run_driver(tree, home, "decide", count=True),
        }
    print("## Copies of DuckDB files: the demo's daily run of its last day, then one "
          f"`capacity recs accept`\n\nload average at end: {_load()}\n")  # fmt: skip
    print("| code | action | wall s | warehouse after | copies per file (bytes, time) | "
          "snapshots published (bytes) |")  # fmt: skip
    print("|---|---|---:|---:|---|---|")
    for name, actions in results.items():
        for action, result in actions.items():
            print_copies(name, action, result)
    for name, actions in results.items():
        print(f"\n### Who asked for each copy ({name})\n")
        for action, result in actions.items():
            asked: dict[str, int] = {}
            for copy in result["copies"]:
                key = f"{copy['by']} ({copy['source']})"
                asked[key] = asked.get(key, 0) + 1
            print(f"- {action}: " + ", ".join(f"{k} x{v}" for k, v in asked.items()))


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


@dataclass
class RunTiming:
    """One measured daily run: wall, steps' seconds, overlap of steps and of step processes."""

    wall: float
    run_wall: float
    step_seconds: float
    startup: float  # step processes: from launch (STEP_WORKER_STARTING) to STEP_START, summed
    overlap: float
    process_overlap: float
    most_at_once: int
    load: str


def timing(result: dict, load: str) -> RunTiming:
    steps: list[tuple[float, float]] = []
    processes: list[tuple[float, float]] = []
    starts, ends, startup = [], [], 0.0
    for run in result["runs"]:
        marks = run["marks"]
        starts.append(marks["RUN_START"])
        ends.append(marks.get("RUN_SUCCESS") or marks["RUN_FAILURE"])
        for times in run["steps"].values():
            end = times.get("STEP_SUCCESS") or times.get("STEP_FAILURE")
            steps.append((times["STEP_START"], end))
            processes.append((times.get("STEP_WORKER_STARTING", times["STEP_START"]), end))
            startup += times["STEP_START"] - processes[-1][0]
    return RunTiming(
        wall=result["wall"], run_wall=max(ends) - min(starts),
        step_seconds=sum(e - s for s, e in steps), startup=startup,
        overlap=overlap_seconds(steps),
        process_overlap=overlap_seconds(processes), most_at_once=most_at_once(steps), load=load,
    )  # fmt: skip


def overlap(trees: dict[str, Path], work: Path, rounds: int) -> None:
    homes = prepared_homes(trees, work)
    measured: dict[tuple[str, str], list[RunTiming]] = {}
    for _ in range(rounds):
        for mode in EXECUTORS:
            for name, tree in trees.items():
                home = fresh_home(homes[name], work)
                load = _load()
                result = run_driver(tree, home, "daily", mode)
                measured.setdefault((name, mode), []).append(timing(result, load))
                shutil.rmtree(home.parent, ignore_errors=True)
    print(f"## The daily job for the demo's last day, {rounds} rounds alternating\n")
    print("| executor | code | load at start | driver wall s | run wall s (RUN_START to end) | "
          "steps' own s | step processes' start-up s | s with >= 2 steps running | "
          "s with >= 2 step processes alive | most steps at once |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, mode), runs in measured.items():
        for t in runs:
            print(f"| {mode} | {name} | {t.load} | {t.wall:.1f} | {t.run_wall:.1f} | "
                  f"{t.step_seconds:.1f} | {t.startup:.1f} | {t.overlap:.1f} | "
                  f"{t.process_overlap:.1f} | "
                  f"{t.most_at_once} |")  # fmt: skip
    print("\nMedians:\n")
    print("| executor | code | run wall s | steps' own s | step processes' start-up s | "
          "s with >= 2 steps running |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|")
    for (name, mode), runs in measured.items():
        print(f"| {mode} | {name} | {statistics.median(t.run_wall for t in runs):.1f} | "
              f"{statistics.median(t.step_seconds for t in runs):.1f} | "
              f"{statistics.median(t.startup for t in runs):.1f} | "
              f"{statistics.median(t.overlap for t in runs):.1f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="REF", help="git commit to measure side by side")
    parser.add_argument("--copies", action="store_true", help="count copies of the warehouse")
    parser.add_argument("--overlap", action="store_true", help="step overlap per executor")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep the prepared homes here")
    parser.add_argument("--driver", choices=["setup", "daily", "decide"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        driver(args.driver, args.mode, args.out, args.count)
        return
    sys.path.insert(0, str(REPO))
    from benchmarks.demo_bench import code_tree

    work = args.workdir or Path(tempfile.mkdtemp(prefix="daily_run_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {_load()}\n")
    with code_tree(args.compare) if args.compare else contextlib.nullcontext() as tree:
        trees = {args.compare: tree, THIS: REPO} if args.compare else {THIS: REPO}
        if args.copies:
            copies(trees, work)
        if args.overlap:
            overlap(trees, work, args.rounds)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Scale benchmark (issue 8): the weekly pipeline on 250, 500 and 2,000 containers.

For each fleet size: build the fleet by replaying and perturbing the demo fleet (itself made from
real public traces, see `scale_fleet.py`), backfill it into a real Prometheus with promtool,
extract three weeks of history (timed, reported apart), then run the weekly pipeline over the
fourth week asset by asset, in the graph's order, each asset in its own process so its wall time
and peak memory (the whole process tree, sampled every 0.2 s) are its own. Every asset reads
Prometheus or the warehouse exactly as in production (`capacity extract` runs the same code).

    nice .venv/bin/python benchmarks/scale_bench.py --workdir /tmp/scale_bench
        [--sizes 250 500 2000] [--interval 300]

`--workdir` keeps the backfilled TSDBs, so a rerun skips the fleet build. Results go to
`benchmarks/results/scale.md` and `scale.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from scale_fleet import build_scale_fleet, fleet_size, write_openmetrics  # noqa: E402

from tests.prometheus_server import PrometheusServer, backfill  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
FIRST_DAY = date(2026, 9, 28)  # the demo fleet's first day (a Monday)
HISTORY_DAYS = 21  # extracted before the timed week, so forecasts have three weeks behind them
WEEK_DAYS = 7
GOAL_WALL_S = 30 * 60  # issue 8: the weekly run for 2,000 containers within 30 minutes
GOAL_PEAK_BYTES = 8 * 1024**3  # ... with peak memory under 8 GB
SAMPLE_EVERY_S = 0.2


def graph_order() -> tuple[list[str], list[str]]:
    """(every materialisable asset in dependency order, the extraction assets)."""
    from capacity_pipelines.definitions import defs

    graph = defs().resolve_asset_graph()
    order = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    names = [k.to_user_string() for k in order]
    ingest = [k.to_user_string() for k in order if graph.get(k).group_name == "ingest"]
    return names, [n for n in ingest if n != "warehouse_snapshot"]


def tree_rss(process: psutil.Process) -> int:
    """Resident memory of a process and all its descendants (forecast workers included)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_stage(env: dict[str, str], assets: list[str], first: date, last: date) -> dict:
    """Materialise `assets` for days `first..last` in a child process; time and peak memory."""
    command = [sys.executable, __file__, "--stage", ",".join(assets)]
    command += ["--first", first.isoformat(), "--last", last.isoformat()]
    began = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    watched, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, tree_rss(watched))
        time.sleep(SAMPLE_EVERY_S)
    output = child.stdout.read() if child.stdout else ""
    # run_partitions prints "[i/n] asset ... ok (rows, 12.3 s)": the asset's own run time,
    # without the child's start-up (imports, loading the definitions).
    asset_s = [float(s) for s in re.findall(r" ok \((?:[\d,]+ rows, )?([\d.]+) s\)", output)]
    return {
        "assets": assets,
        "seconds": time.perf_counter() - began,
        "asset_seconds": sum(asset_s),
        "peak_rss_bytes": peak,
        "ok": child.returncode == 0,
        "output": output[-2000:],
    }


def request_cost(url: str, days: tuple[int, ...] = (1, 7, 21)) -> list[dict]:
    """One `container_usage` column over 1, 7 and 21 days in a single request, alone on the
    server: why the client cuts ranges into day-long requests (CAPACITY_PROMETHEUS_CHUNK_HOURS)."""
    import requests

    from capacity_pipelines.ingest.catalog import load_catalog, render_promql

    catalog = load_catalog()
    table = catalog.table("container_usage")
    promql = render_promql(table, table.columns[0], 300, 300)
    start = datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=UTC).timestamp()
    out = []
    for n in days:
        params = {"query": promql, "start": start, "end": start + n * 86_400 - 300, "step": "300s"}
        began = time.perf_counter()
        answer = requests.get(f"{url}/api/v1/query_range", params=params, timeout=600)
        answer.raise_for_status()
        seconds = time.perf_counter() - began
        series = answer.content.count(b'"metric":')
        out.append({"days": n, "seconds": seconds, "bytes": len(answer.content), "series": series})
    return out


def prepare(size: int, root: Path, interval: int) -> dict:
    """Build, write and backfill the fleet once; later runs reuse the TSDB."""
    stamp = root / "fleet.json"
    if stamp.exists():
        return json.loads(stamp.read_text())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    began = time.perf_counter()
    fleet = build_scale_fleet(SHARED, size)
    if interval != 300:
        raise SystemExit("only the demo's 300 s scrape interval is implemented (see README)")
    export = root / "fleet.om"
    written = write_openmetrics(fleet, export, n_steps=(HISTORY_DAYS + WEEK_DAYS) * 288)
    built = time.perf_counter() - began
    began = time.perf_counter()
    backfill(export, root / "tsdb")
    export.unlink()
    info = {
        **fleet_size(fleet).__dict__,
        "openmetrics_bytes": written,
        "build_s": built,
        "backfill_s": time.perf_counter() - began,
    }
    stamp.write_text(json.dumps(info, indent=2))
    return info


def growth_exponent(small: tuple[int, float], large: tuple[int, float]) -> float:
    """k in cost ~ size^k between two sizes: 1 is linear, above 1 worse than linear."""
    (n1, t1), (n2, t2) = small, large
    if t1 <= 0 or t2 <= 0 or n1 == n2:
        return float("nan")
    return math.log(t2 / t1) / math.log(n2 / n1)


def markdown(runs: list[dict], commit: str) -> str:
    """The results page: per-stage seconds and peak memory by size, growth, goals."""
    sizes = [r["fleet"]["containers"] for r in runs]
    lines = [
        "# Scale benchmark (issue 8)",
        "",
        "```",
        "nice .venv/bin/python benchmarks/scale_bench.py --workdir /tmp/scale_bench",
        "```",
        "",
        f"Commit `{commit}`; 2-core machine, shared. Fleets (replayed and perturbed demo fleet, "
        "5-min scrape, 4 weeks; see the script's docstring):",
        "",
        "| containers | services | LLM agents | series | samples | build s | promtool s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        f = r["fleet"]
        lines.append(
            f"| {f['containers']:,} | {f['services']} | {f['agents']} | {f['series']:,} "
            f"| {f['samples']:,} | {f['build_s']:.0f} | {f['backfill_s']:.0f} |"
        )
    lines += [
        "",
        "History (3 weeks of extraction before the timed week, not part of the weekly run):",
        "",
        "| containers | seconds | peak memory | warehouse after 4 weeks |",
        "|---:|---:|---:|---:|",
    ]
    for r in runs:
        h = r["history"]
        lines.append(
            f"| {r['fleet']['containers']:,} | {h['seconds']:.0f}{'' if h['ok'] else ' (failed)'} "
            f"| {h['peak_rss_bytes'] / 1024**3:.2f} GiB "
            f"| {r.get('warehouse_bytes', 0) / 1024**2:,.0f} MiB |"
        )
    lines += [
        "",
        "One request for one `container_usage` column (CPU cores of every container), alone on "
        "the server, by the span it covers (why the client asks for one day per request, "
        "`CAPACITY_PROMETHEUS_CHUNK_HOURS`, default 24):",
        "",
        "| containers | span | series | seconds | answer MB | seconds per day |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        for c in r.get("request_cost", []):
            lines.append(
                f"| {r['fleet']['containers']:,} | {c['days']} d | {c['series']:,} "
                f"| {c['seconds']:.1f} | {c['bytes'] / 1e6:.0f} | {c['seconds'] / c['days']:.2f} |"
            )
    header = " | ".join(f"{n:,} s / GiB" for n in sizes)
    lines += [
        "",
        "Weekly run, stage by stage: the asset's own run seconds (the stage process's wall "
        "seconds, start-up and loading the definitions included) / peak GiB of the stage's "
        "process tree. Growth k is fitted on the asset's own seconds between the smallest and "
        "the largest fleet.",
        "",
        f"| stage | {header} | growth k (cost ~ n^k) |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    stages = [s["assets"][0] for s in runs[0]["week"]]
    for index, stage in enumerate(stages):
        cells = []
        for r in runs:
            s = r["week"][index]
            mark = "" if s["ok"] else " (failed)"
            cells.append(
                f"{s['asset_seconds']:.1f} ({s['seconds']:.0f}) / "
                f"{s['peak_rss_bytes'] / 1024**3:.2f}{mark}"
            )
        k = growth_exponent(
            (sizes[0], runs[0]["week"][index]["asset_seconds"]),
            (sizes[-1], runs[-1]["week"][index]["asset_seconds"]),
        )
        lines.append(f"| {stage} | " + " | ".join(cells) + f" | {k:.2f} |")
    totals = [sum(s["seconds"] for s in r["week"]) for r in runs]
    own = [sum(s["asset_seconds"] for s in r["week"]) for r in runs]
    peaks = [max(s["peak_rss_bytes"] for s in r["week"]) for r in runs]
    lines.append(
        "| **weekly run** | "
        + " | ".join(
            f"**{o:.0f} ({t:.0f}) / {p / 1024**3:.2f}**"
            for o, t, p in zip(own, totals, peaks, strict=True)
        )
        + f" | {growth_exponent((sizes[0], own[0]), (sizes[-1], own[-1])):.2f} |"
    )
    # A failed stage did less work than it should have: its time proves nothing.
    whole = runs[-1]["history"]["ok"] and all(s["ok"] for s in runs[-1]["week"])
    lines += [
        "",
        f"Goal (2,000 containers): weekly run <= {GOAL_WALL_S // 60} min: "
        f"{'met' if whole and totals[-1] <= GOAL_WALL_S else 'NOT met'} ({totals[-1] / 60:.1f} "
        "min of stage processes, start-ups included); "
        f"peak memory < 8 GB: {'met' if whole and peaks[-1] < GOAL_PEAK_BYTES else 'NOT met'} "
        f"({peaks[-1] / 1024**3:.2f} GiB)"
        + ("." if whole else "; a stage failed (marked above), so the run is incomplete."),
    ]
    return "\n".join(lines) + "\n"


def stage_main(assets: list[str], first: date, last: date) -> int:
    """Child process: one stage, through the same runner as `capacity extract`."""
    from capacity_pipelines.cli import run_partitions

    monday = first - timedelta(days=first.weekday())
    run_partitions(first, last, only=assets, report_week=monday.isoformat())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/scale_bench"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 500, 2000])
    parser.add_argument("--interval", type=int, default=300, help="scrape interval (s)")
    parser.add_argument("--prepare-only", action="store_true", help="build and backfill only")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--first", help=argparse.SUPPRESS)
    parser.add_argument("--last", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return stage_main(
            args.stage.split(","), date.fromisoformat(args.first), date.fromisoformat(args.last)
        )
    if not SHARED.exists():
        print(f"{SHARED} is absent: the fleet is built from the shared traces", file=sys.stderr)
        return 2
    order, ingest = graph_order()
    history_first, history_last = FIRST_DAY, FIRST_DAY + timedelta(days=HISTORY_DAYS - 1)
    week_first = FIRST_DAY + timedelta(days=HISTORY_DAYS)
    week_last = week_first + timedelta(days=WEEK_DAYS - 1)
    runs = []
    for size in args.sizes:
        root = args.workdir / f"fleet-{size}"
        fleet = prepare(size, root, args.interval)
        print(f"fleet {size}: {fleet}", flush=True)
        if args.prepare_only:
            continue
        home = root / "home"
        shutil.rmtree(home, ignore_errors=True)
        with PrometheusServer(root / "tsdb") as server:
            env = {
                **os.environ,
                "CAPACITY_HOME": str(home),
                "CAPACITY_PROMETHEUS_URL": server.url,
                "CAPACITY_PARTITIONS_START": FIRST_DAY.isoformat(),
            }
            env.pop("DAGSTER_HOME", None)
            requests_cost = request_cost(server.url)
            history = run_stage(env, ingest, history_first, history_last)
            print(f"  history: {history['seconds']:.0f} s ok={history['ok']}", flush=True)
            if not history["ok"]:
                print(history["output"], flush=True)
            week = []
            for asset in order:
                stage = run_stage(env, [asset], week_first, week_last)
                week.append(stage)
                print(
                    f"  {asset}: {stage['seconds']:.1f} s, "
                    f"{stage['peak_rss_bytes'] / 1024**3:.2f} GiB, ok={stage['ok']}",
                    flush=True,
                )
                if not stage["ok"]:
                    print(stage["output"], flush=True)
        # Where one DuckDB file stops is a question of size and of writers: record the size.
        warehouse = home / "warehouse.duckdb"
        size_bytes = warehouse.stat().st_size if warehouse.exists() else 0
        runs.append(
            {
                "fleet": fleet,
                "history": history,
                "week": week,
                "warehouse_bytes": size_bytes,
                "request_cost": requests_cost,
            }
        )
    if args.prepare_only:
        return 0
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    text = markdown(runs, commit)
    print(text)
    if args.sizes == [250, 500, 2000]:
        (RESULTS / "scale.md").write_text(text)
        (RESULTS / "scale.json").write_text(json.dumps(runs, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

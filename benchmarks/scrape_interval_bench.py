"""What a 60 s scrape interval costs the pipeline, against the 5 min of the scale benchmark.

The pipeline asks Prometheus for 5-minute steps whatever the scrape interval (the catalog's
`step`), so the warehouse receives the same rows either way; what grows with a finer scrape is
Prometheus' work per step (five times the samples in every rate window, a denser TSDB). The
scale benchmark (`scale_bench.py`) backfills its 2,000-container fleet at 5 min because promtool
here would need hours and ~100 GB of text for 60 s; this script measures the factor instead, on
one fleet written twice (same containers, same shape, 60 s and 300 s), extracted side by side
in one run, alternating, through the product path (`extract_table`: PrometheusSource with its
day-long requests, warehouse frame).

    nice .venv/bin/python benchmarks/scrape_interval_bench.py [--containers 500] [--days 7]
        [--repeats 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from capacity_pipelines.ingest.catalog import load_catalog  # noqa: E402
from capacity_pipelines.ingest.extract import extract_table  # noqa: E402
from capacity_pipelines.ingest.sources import PrometheusSettings, PrometheusSource  # noqa: E402
from tests.prometheus_server import PrometheusServer, backfill  # noqa: E402
from tests.synthetic_fleet import write_container_fleet  # noqa: E402

START = datetime(2026, 9, 28, tzinfo=UTC)
INTERVALS = (300, 60)


def prepare(root: Path, containers: int, days: int, interval: int) -> dict:
    """Write and backfill one scrape interval's TSDB (reused when `root` already holds it)."""
    data = root / f"tsdb-{interval}"
    stamp = root / f"done-{interval}"
    if stamp.exists():
        return {"interval_s": interval, "samples": int(stamp.read_text())}
    export = root / f"fleet-{interval}.om"
    samples = write_container_fleet(
        export,
        containers=containers,
        start_s=int(START.timestamp()),
        days=days + 1,  # one day more, so the first rate window has samples before it
        interval_s=interval,
    )
    backfill(export, data)
    export.unlink()
    stamp.write_text(str(samples))
    return {"interval_s": interval, "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=500)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "scrape_interval.md"
    )
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="scrape_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    fleets = {i: prepare(root, args.containers, args.days, i) for i in INTERVALS}
    catalog = load_catalog()
    start = START + timedelta(days=1)
    end = start + timedelta(days=args.days)
    seconds: dict[int, list[float]] = {i: [] for i in INTERVALS}
    rows: dict[int, int] = {}
    servers = {i: PrometheusServer(root / f"tsdb-{i}").start() for i in INTERVALS}
    try:
        sources = {i: PrometheusSource(PrometheusSettings(url=servers[i].url)) for i in INTERVALS}
        for i in INTERVALS:  # warm each server's caches once
            extract_table(sources[i], catalog, "container_usage", start, start + timedelta(days=1))
        for _ in range(args.repeats):
            for i in INTERVALS:
                began = time.perf_counter()
                frame = extract_table(sources[i], catalog, "container_usage", start, end).frame
                seconds[i].append(time.perf_counter() - began)
                rows[i] = frame.height
    finally:
        for server in servers.values():
            server.stop()
    median = {i: statistics.median(seconds[i]) for i in INTERVALS}
    lines = [
        f"{args.containers} containers x {args.days} days, `container_usage` extracted at the "
        f"catalog's {catalog.step_seconds:.0f} s step; {args.repeats} repeats, alternating:",
        "",
        "| scrape interval | samples in Prometheus | warehouse rows | runs (s) | median s |",
        "|---:|---:|---:|---|---:|",
    ]
    for i in INTERVALS:
        runs = ", ".join(f"{s:.1f}" for s in seconds[i])
        lines.append(
            f"| {i} s | {fleets[i]['samples']:,} | {rows[i]:,} | {runs} | {median[i]:.1f} |"
        )
    lines += [
        "",
        f"**60 s / 300 s extraction time: {median[60] / median[300]:.2f}x**; same warehouse rows: "
        f"{'yes' if rows[60] == rows[300] else 'NO'}.",
    ]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    header = [
        "# Scrape interval: 60 s against 5 min (issue 8)",
        "",
        "```",
        "nice .venv/bin/python benchmarks/scrape_interval_bench.py --workdir /tmp/scrape_bench",
        "```",
        "",
        f"Commit `{commit}`, {datetime.now(UTC):%Y-%m-%d}, 2-core machine, shared.",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

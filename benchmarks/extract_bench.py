"""Extraction throughput from a real Prometheus, side by side with plain HTTP + json.

Builds a fleet of >= 500 series x 14 days at 60 s (shapes from NAB's ELB request counts, MIT,
when ../shared/data is present), backfills a real Prometheus with promtool, then measures in
one run, alternating:
  plain:   the same query_range calls (same PromQL, chunks and concurrency) with requests +
           json.loads, results discarded;
  extract: the full path: PrometheusSource -> warehouse frame -> DuckDB write (ingest_window).
Throughput is samples returned per second; the goal is extract >= 0.7 x plain.

    .venv/bin/python benchmarks/extract_bench.py [--containers 170] [--days 14] [--repeats 3]
        [--workdir DIR]   (reuse the backfilled TSDB across reruns)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from capacity_pipelines.ingest.catalog import format_duration, load_catalog, render_promql  # noqa: E402
from capacity_pipelines.ingest.extract import evaluation_grid  # noqa: E402
from capacity_pipelines.ingest.sources import PrometheusSettings, PrometheusSource  # noqa: E402
from capacity_pipelines.ingest.sources.prometheus import grid_chunks  # noqa: E402
from capacity_pipelines.ingest.window import ingest_window  # noqa: E402
from tests.prometheus_server import PrometheusServer, backfill  # noqa: E402
from tests.synthetic_fleet import write_container_fleet  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
START = datetime(2026, 8, 3, tzinfo=UTC)


def nab_shape() -> np.ndarray | None:
    path = SHARED / "nab_aws" / "elb_request_count_8c0756.csv"
    return pl.read_csv(path)["value"].to_numpy().astype(float) if path.exists() else None


def plain_fetch(url: str, jobs: list[tuple[str, float, float]], step: str, workers: int) -> int:
    session = requests.Session()

    def one(job):
        query, start, end = job
        response = session.get(
            f"{url}/api/v1/query_range",
            params={"query": query, "start": int(start), "end": int(end), "step": step},
            timeout=120,
        )
        result = json.loads(response.content)["data"]["result"]
        return sum(len(series["values"]) for series in result)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(one, jobs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=170, help="3 series per container")
    parser.add_argument("--days", type=float, default=14)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--workdir", type=Path, help="keep the backfilled TSDB here and reuse it on reruns"
    )
    args = parser.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="extract_bench_"))
    stamp = root / f"fleet-{args.containers}x{args.days}d.done"
    if not stamp.exists():
        shutil.rmtree(root / "data", ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        export = root / "fleet.om"
        began = time.monotonic()
        samples_written = write_container_fleet(
            export, args.containers, int(START.timestamp()), args.days, 60, shape=nab_shape()
        )
        print(
            f"fleet: {args.containers * 3} series, {samples_written:,} samples "
            f"({time.monotonic() - began:.0f} s to write)"
        )
        began = time.monotonic()
        backfill(export, root / "data")
        print(f"promtool backfill: {time.monotonic() - began:.0f} s")
        export.unlink()
        stamp.touch()

    catalog = dataclasses.replace(load_catalog(), step_seconds=60, rate_window_seconds=300)
    table = catalog.table("container_usage")
    start = START + timedelta(minutes=10)
    end = START + timedelta(days=args.days)
    grid = evaluation_grid(start, end, 60)
    settings_kw = dict(concurrency=args.concurrency, timeout_s=120)
    chunks = grid_chunks(grid, PrometheusSettings(url="x").points_per_request(60))
    jobs = [
        (render_promql(table, q, 60, 300), float(c[0]), float(c[-1]))
        for q in table.columns
        for c in chunks
    ]
    plain_times, extract_times, plain_samples, extract_samples = [], [], 0, 0
    with PrometheusServer(root / "data") as server:
        plain_fetch(server.url, jobs[:1], "1m", 1)  # warm the server's caches once
        for repeat in range(args.repeats):
            t0 = time.perf_counter()
            plain_samples = plain_fetch(server.url, jobs, format_duration(60), args.concurrency)
            plain_times.append(time.perf_counter() - t0)

            db = root / f"wh{repeat}.duckdb"
            db.unlink(missing_ok=True)
            source = PrometheusSource(PrometheusSettings(url=server.url, **settings_kw))
            t0 = time.perf_counter()
            result = ingest_window(source, catalog, "container_usage", start, end, db)
            extract_times.append(time.perf_counter() - t0)
            frame = result.extracted.frame
            extract_samples = int(sum(frame[c].is_not_null().sum() for c in table.value_columns))
            print(
                f"repeat {repeat + 1}: plain {plain_times[-1]:.2f} s, "
                f"extract {extract_times[-1]:.2f} s ({result.rows_written:,} rows)"
            )

    plain_rate = plain_samples / statistics.median(plain_times)
    extract_rate = extract_samples / statistics.median(extract_times)
    print()
    print("| path | samples | median s | samples/s |")
    print("|---|---|---|---|")
    print(
        f"| plain query_range + json | {plain_samples:,} | {statistics.median(plain_times):.2f} "
        f"| {plain_rate:,.0f} |"
    )
    print(
        f"| extract into DuckDB | {extract_samples:,} | {statistics.median(extract_times):.2f} "
        f"| {extract_rate:,.0f} |"
    )
    print(f"\nratio extract / plain = {extract_rate / plain_rate:.2f} (goal >= 0.70)")


if __name__ == "__main__":
    main()

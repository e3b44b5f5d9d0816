"""Warehouse coverage: what each table holds, how complete it is, and how fresh.

Feeds the `data_quality_report` asset now and the weekly report's data-quality section later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from capacity_pipelines.common.files import publish_files
from capacity_pipelines.common.formatting import markdown_table, safe_text
from capacity_pipelines.common.utilisation import CONTAINER_READINGS, REASONS, count_problems
from capacity_pipelines.ingest.catalog import Catalog

DATA_QUALITY_OWNER = "data_quality"  # owner name in the folder's ownership manifest
# Usage rows are judged a day at a time (as the bottleneck inputs are read): weeks of 5-minute
# per-pod rows never sit in memory together.
READING_PIECE = timedelta(days=1)


def table_coverage(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> pl.DataFrame:
    """Per table: rows, entities, first and last point, and two shares of expected points.

    `mean_coverage` counts the points each series should have over its own life (from its
    first to its last point): pods that exist for a while — rollouts, HPA scale-outs, restarts
    — expect points only while they exist, so only holes inside a life are gaps. Summed over a
    workload's pods that is "expected points per workload over the pods that existed at each
    time". `span_coverage` is the share of the table's whole span the series cover on average;
    where it is low but `mean_coverage` is not, series come and go (`churned_series`: series
    that start after the table's first point or stop before its last): pod churn, not gaps.
    """
    rows = []
    step = catalog.step_seconds
    for name, table in catalog.tables.items():
        key = ", ".join(f'"{k}"' for k in table.key)
        count, entities, first, last = con.execute(
            f'SELECT count(*), count(DISTINCT ({key})), min(ts), max(ts) FROM "{name}"'
        ).fetchone()
        coverage = span_coverage = 0.0
        churned = 0
        if count:
            span_steps = (last - first).total_seconds() / step + 1
            present, lifetimes, spans, churned = con.execute(
                f"""SELECT sum(n), sum(epoch(b - a) / {step} + 1), avg(n / {span_steps}),
                           count(*) FILTER (WHERE a > ? OR b < ?)
                    FROM (SELECT count(*) AS n, min(ts) AS a, max(ts) AS b
                          FROM "{name}" GROUP BY {key})""",
                [first, last],
            ).fetchone()
            coverage = min(float(present) / float(lifetimes), 1.0) if lifetimes else 0.0
            span_coverage = min(float(spans), 1.0)
        rows.append(
            {
                "table": name,
                "rows": int(count),
                "entities": int(entities),
                "first_point": first,
                "last_point": last,
                "mean_coverage": round(coverage, 4),
                "span_coverage": round(span_coverage, 4),
                "churned_series": int(churned or 0),
            }
        )
    return pl.DataFrame(rows)


def utilisation_readings(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pl.DataFrame:
    """Per table, resource and reason: rows whose usage against a limit the bottleneck labels
    skip (`common/utilisation.py`), with what each reason means (`table`, `resource`, `reason`,
    `rows`, `meaning`); rows with `start <= ts < end` when given, else all.

    The rows are judged with the same expressions the labels use, so the count is what the
    labels actually skipped.
    """
    parts = []
    stored = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    tables = {row[0] for row in stored}
    for name, table in catalog.tables.items():
        readings = tuple(
            r for r in CONTAINER_READINGS if {r.used, r.capacity} <= set(table.value_columns)
        )
        if not readings or name not in tables:
            continue
        used_and_capacity = sorted({c for r in readings for c in (r.used, r.capacity)})
        columns = ", ".join(f'"{c}"' for c in used_and_capacity)
        first, last = con.execute(f'SELECT min(ts), max(ts) FROM "{name}"').fetchone()
        if first is None:
            continue
        day = max(first, start) if start else first
        stop = min(end, last + READING_PIECE) if end else last + READING_PIECE  # exclusive
        counted = []
        while day < stop:
            upto = min(day + READING_PIECE, stop)
            piece = con.execute(
                f'SELECT {columns} FROM "{name}" WHERE ts >= ? AND ts < ?', [day, upto]
            ).pl()
            counted.append(count_problems(piece, readings))
            day = upto
        if counted:
            parts.append(
                pl.concat(counted)
                .group_by("resource", "reason")
                .agg(pl.col("rows").sum())
                .with_columns(pl.lit(name).alias("table"))
            )
    schema = {"table": pl.Utf8, "resource": pl.Utf8, "reason": pl.Utf8, "rows": pl.Int64,
              "meaning": pl.Utf8}
    if not parts:
        return pl.DataFrame(schema=schema)
    meaning = pl.DataFrame(
        [
            {"resource": r.resource, "reason": code, "meaning": r.reason(code)}
            for r in CONTAINER_READINGS
            for code in REASONS
        ]
    )
    return (
        pl.concat(parts)
        .join(meaning, on=["resource", "reason"], how="left")
        .select(list(schema))
        .sort("table", "resource", "reason")
    )


def write_data_quality_report(
    coverage: pl.DataFrame,
    out_dir: Path,
    source: str,
    now: datetime | None = None,
    readings: pl.DataFrame | None = None,
) -> list[Path]:
    """Publish `data_quality.md` and `data_quality.json` into `out_dir`; returns the paths.

    `readings` (from `utilisation_readings`) adds the rows the bottleneck labels skip and why.
    `out_dir` is shared (`reports/latest/`): only these two files are replaced.
    """
    now = now or datetime.now(UTC)
    skipped = ""
    if readings is not None:
        skipped = (
            "\n## Usage against a limit that is not a reading\n\n"
            "Rows whose CPU or memory use cannot be read against their limit. The bottleneck "
            "labels skip them: a limit of 0 or absent is missing data, and usage far above the "
            "limit is a bad reading (a reset counter, a series joined to the wrong limit), not a "
            "saturated resource.\n\n"
            + (markdown_table(readings, rows=None) if readings.height else "None.")
            + "\n"
        )
    markdown = (
        "# Warehouse data quality\n\n"
        f"Generated {now:%Y-%m-%d %H:%M} UTC from {safe_text(source, markdown=True)}.\n\n"
        "`mean_coverage` is the share of expected points present, each series expecting points "
        "only between its own first and last point (so pods that start late or stop early do "
        "not count as gaps); `span_coverage` is the share of the table's whole span the series "
        "cover on average, and `churned_series` the series that started or stopped within it "
        "(pod churn).\n\n"
        + markdown_table(coverage, rows=100)
        + "\n"
        + skipped
    )
    return publish_files(
        out_dir,
        {
            "data_quality.md": markdown,
            "data_quality.json": json.dumps(coverage.to_dicts(), default=str, indent=2) + "\n",
        },
        owner=DATA_QUALITY_OWNER,
    )

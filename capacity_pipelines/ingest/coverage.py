"""Warehouse coverage: what each table holds, how complete it is, and how fresh.

Feeds the `data_quality_report` asset now and the weekly report's data-quality section later.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from capacity_pipelines.common.files import publish_files
from capacity_pipelines.common.formatting import markdown_table, safe_text
from capacity_pipelines.ingest.catalog import Catalog

DATA_QUALITY_OWNER = "data_quality"  # owner name in the folder's ownership manifest


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


def write_data_quality_report(
    coverage: pl.DataFrame, out_dir: Path, source: str, now: datetime | None = None
) -> list[Path]:
    """Publish `data_quality.md` and `data_quality.json` into `out_dir`; returns the paths.

    `out_dir` is shared (`reports/latest/`): only these two files are replaced.
    """
    now = now or datetime.now(UTC)
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
    )
    return publish_files(
        out_dir,
        {
            "data_quality.md": markdown,
            "data_quality.json": json.dumps(coverage.to_dicts(), default=str, indent=2) + "\n",
        },
        owner=DATA_QUALITY_OWNER,
    )

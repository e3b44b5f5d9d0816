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
    """Per table: rows, entities, first and last point, share of expected points present."""
    rows = []
    step = catalog.step_seconds
    for name, table in catalog.tables.items():
        key = ", ".join(f'"{k}"' for k in table.key)
        stats = con.execute(
            f'SELECT count(*), count(DISTINCT ({key})), min(ts), max(ts) FROM "{name}"'
        ).fetchone()
        count, entities, first, last = stats
        if count:
            span_steps = (last - first).total_seconds() / step + 1
            per_entity = con.execute(
                f"SELECT avg(n) FROM (SELECT count(*) AS n, min(ts) AS a, max(ts) AS b "
                f'FROM "{name}" GROUP BY {key})'
            ).fetchone()[0]
            coverage = min(float(per_entity) / span_steps, 1.0) if span_steps else 0.0
        else:
            coverage = 0.0
        rows.append(
            {
                "table": name,
                "rows": int(count),
                "entities": int(entities),
                "first_point": first,
                "last_point": last,
                "mean_coverage": round(coverage, 4),
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
        "`mean_coverage` is the mean share of steps each entity has between the table's first "
        "and last point (pods that start late or stop early lower it).\n\n"
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

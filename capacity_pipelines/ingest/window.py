"""Extract one table over a window and write it to the warehouse, checks included.

This is the whole body of an extraction asset, kept out of Dagster so the CLI, tests and a
notebook can call it too. Nothing is written when the source fails or a blocking check fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from capacity_pipelines import warehouse
from capacity_pipelines.ingest import quality
from capacity_pipelines.ingest.catalog import Catalog
from capacity_pipelines.ingest.extract import ExtractedTable, extract_table
from capacity_pipelines.ingest.sources.base import MetricSource
from capacity_pipelines.ingest.tables import ensure_schema, replace_window


class BlockingCheckError(RuntimeError):
    """A blocking data-quality check failed; the window was not written."""


@dataclass(frozen=True)
class IngestResult:
    extracted: ExtractedTable
    rows_written: int
    verdicts: list[quality.Verdict]


def ingest_window(
    source: MetricSource,
    catalog: Catalog,
    table_name: str,
    start: datetime,
    end: datetime,
    warehouse_path: str | Path,
    lock_wait_s: float = 120.0,
) -> IngestResult:
    """Extract `[start, end)` of one table and atomically replace that window in the warehouse.

    The source is queried completely before the warehouse is opened, so a failing or slow
    source never holds the write lock and never leaves a partial window.
    """
    extracted = extract_table(source, catalog, table_name, start, end)
    found = quality.verdicts(extracted, catalog.step_seconds)
    blocking = [v for v in found if not v.passed and v.severity == "error"]
    if blocking:
        raise BlockingCheckError(
            f"{table_name} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) not written: "
            + "; ".join(v.description for v in blocking)
        )
    with warehouse.writer(warehouse_path, lock_wait_s, f"extract {table_name}") as con:
        ensure_schema(con, catalog)
        if extracted.frame.height == 0:
            # An empty answer (retention passed, exporter missing) must not wipe stored rows.
            return IngestResult(extracted=extracted, rows_written=0, verdicts=found)
        rows = replace_window(
            con,
            extracted.table,
            start,
            end,
            extracted.frame,
            source.description,
            extracted.expected_points,
        )
    return IngestResult(extracted=extracted, rows_written=rows, verdicts=found)

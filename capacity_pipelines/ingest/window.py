"""Extract one table over a window, check it, and write it to the warehouse.

This is the whole body of an extraction asset, kept out of Dagster so the CLI, tests and a
notebook can call it too. The checks run on the extracted rows before the warehouse is opened:
nothing is written when the source fails or a blocking check fails.
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
class CheckedWindow:
    """One table's extracted window and the verdicts of its data-quality checks."""

    extracted: ExtractedTable
    verdicts: list[quality.Verdict]

    @property
    def blocking_failures(self) -> list[quality.Verdict]:
        return [v for v in self.verdicts if not v.passed and v.severity == "error"]

    def refusal(self) -> BlockingCheckError:
        """The error that says why this window is not written."""
        table, start, end = self.extracted.table.name, self.extracted.start, self.extracted.end
        return BlockingCheckError(
            f"{table} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) not written: "
            + "; ".join(v.description for v in self.blocking_failures)
        )


@dataclass(frozen=True)
class IngestResult:
    extracted: ExtractedTable
    rows_written: int
    verdicts: list[quality.Verdict]


def extract_and_check(
    source: MetricSource, catalog: Catalog, table_name: str, start: datetime, end: datetime
) -> CheckedWindow:
    """Query the source for the whole window (never the warehouse) and judge the rows."""
    extracted = extract_table(source, catalog, table_name, start, end)
    return CheckedWindow(extracted, quality.verdicts(extracted, catalog.step_seconds))


def write_window(
    checked: CheckedWindow,
    catalog: Catalog,
    warehouse_path: str | Path,
    lock_wait_s: float = 120.0,
) -> int:
    """Atomically replace the window in the warehouse; returns rows written.

    Refuses (BlockingCheckError) a window whose blocking checks failed. An empty answer
    (retention passed, exporter missing) writes nothing: it must not wipe stored rows.
    """
    if checked.blocking_failures:
        raise checked.refusal()
    extracted = checked.extracted
    with warehouse.writer(warehouse_path, lock_wait_s, f"extract {extracted.table.name}") as con:
        ensure_schema(con, catalog)
        if extracted.frame.height == 0:
            return 0
        return replace_window(
            con,
            extracted.table,
            extracted.start,
            extracted.end,
            extracted.frame,
            extracted.source,
            extracted.expected_points,
        )


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
    checked = extract_and_check(source, catalog, table_name, start, end)
    rows = write_window(checked, catalog, warehouse_path, lock_wait_s)
    return IngestResult(extracted=checked.extracted, rows_written=rows, verdicts=checked.verdicts)

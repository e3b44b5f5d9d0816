"""The SRE decisions store: a small DuckDB file of its own, apart from the warehouse.

Decisions are user data. The warehouse is rebuildable from Prometheus at any time (delete it,
re-extract), so the decisions cannot live in it: they live in `decisions.duckdb` (beside the
warehouse by default), written only by `capacity recs accept|reject|defer|comment`, read by
pipeline runs and copied into the analysts' snapshot. Recording one decision copies this small
file, never the warehouse, so a review takes milliseconds whatever the warehouse's size.

Warehouses from before this store kept the decisions in a `recommendation_decisions` table;
`adopt_legacy_decisions` moves those rows here (copied and published first, then dropped from
the warehouse), so an upgrade loses nothing.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.recommendations.review import (
    empty_decisions,
    read_decisions,
    record_decision,
)
from capacity_pipelines.recommendations.tables import (
    DECISION_COLUMNS,
    DECISIONS_TABLE,
    ensure_decisions_table,
)


def load_decisions(path: str | Path, wait_s: float = 60.0) -> pl.DataFrame:
    """Every decision in the store, oldest first (empty when there is no store yet)."""
    path = Path(path)
    if not path.exists():
        return empty_decisions()
    with wh.reader(path, wait_s) as con:
        return read_decisions(con)


def append_decision(
    path: str | Path,
    recommendation: dict,
    decision: str,
    decided_by: str,
    reason: str | None,
    wait_s: float = 60.0,
    decided_at: datetime | None = None,
) -> dict:
    """Record one decision (all or nothing); returns the row written."""
    with wh.writer(path, wait_s, f"capacity recs {decision}") as con:
        ensure_decisions_table(con)
        return record_decision(con, recommendation, decision, decided_by, reason, decided_at)


def _legacy_rows(warehouse_path: Path, wait_s: float) -> pl.DataFrame | None:
    if not warehouse_path.exists():
        return None
    with wh.reader(warehouse_path, wait_s) as con:
        if not wh.table_exists(con, DECISIONS_TABLE):
            return None
        return read_decisions(con)


def adopt_legacy_decisions(
    warehouse_path: str | Path, decisions_path: str | Path, wait_s: float = 60.0
) -> int:
    """Move decisions left in an older warehouse into the store; returns rows added.

    Rows already in the store are not added twice. The store is published before the table
    is dropped from the warehouse, so a crash in between only repeats the (idempotent) copy.
    """
    warehouse_path, decisions_path = Path(warehouse_path), Path(decisions_path)
    legacy = _legacy_rows(warehouse_path, wait_s)
    if legacy is None:
        return 0
    added = 0
    if legacy.height:
        with wh.writer(decisions_path, wait_s, "adopt decisions from the warehouse") as con:
            ensure_decisions_table(con)
            known = read_decisions(con)
            new = legacy.join(known, on=list(DECISION_COLUMNS), how="anti", nulls_equal=True)
            if new.height:
                _insert(con, new)
            added = new.height
    with wh.writer(warehouse_path, wait_s, "drop decisions adopted by their store") as con:
        con.execute(f"DROP TABLE IF EXISTS {DECISIONS_TABLE}")
    return added


def _insert(con: duckdb.DuckDBPyConnection, rows: pl.DataFrame) -> None:
    columns = ", ".join(f'"{c}"' for c in DECISION_COLUMNS)
    con.register("adopted_rows", rows.select(list(DECISION_COLUMNS)).to_arrow())
    try:
        con.execute(
            f"INSERT INTO {DECISIONS_TABLE} ({columns}) SELECT {columns} FROM adopted_rows"
        )
    finally:
        con.unregister("adopted_rows")

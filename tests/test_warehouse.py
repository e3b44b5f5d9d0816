"""The warehouse write path: idempotent windows, crash safety, locks, snapshot, dictionary."""

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from capacity_pipelines import warehouse
from capacity_pipelines.catalog import load_catalog
from capacity_pipelines.dictionary import DERIVED_TABLES, derived_tables, warehouse_dictionary
from capacity_pipelines.ingest import ingest_window
from capacity_pipelines.paths import REPO_ROOT
from capacity_pipelines.sources import FileSource
from tests.synthetic_fleet import write_container_fleet

DAY1 = datetime(2026, 9, 28, tzinfo=UTC)
DAY2 = datetime(2026, 9, 29, tzinfo=UTC)
DAY3 = datetime(2026, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "fleet.om"
    write_container_fleet(path, containers=4, start_s=int(DAY1.timestamp()), days=2, interval_s=300)
    return path


def _count(path: Path, sql: str = "SELECT count(*) FROM container_usage") -> int:
    with warehouse.connect(path, read_only=True) as con:
        return con.execute(sql).fetchone()[0]


def test_rematerialising_a_window_keeps_row_counts(tmp_path: Path, export: Path):
    db = tmp_path / "wh.duckdb"
    catalog = load_catalog()
    source = FileSource([export])
    first = ingest_window(source, catalog, "container_usage", DAY1, DAY2, db)
    assert first.rows_written == 4 * 288
    ingest_window(source, catalog, "container_usage", DAY2, DAY3, db)
    before = _count(db)
    again = ingest_window(source, catalog, "container_usage", DAY1, DAY2, db)
    assert again.rows_written == first.rows_written
    assert _count(db) == before == 2 * 4 * 288
    assert (
        _count(db, "SELECT count(*) FROM (SELECT DISTINCT pod, ts FROM container_usage)") == before
    )


def test_empty_answer_keeps_stored_rows(tmp_path: Path, export: Path):
    db = tmp_path / "wh.duckdb"
    catalog = load_catalog()
    ingest_window(FileSource([export]), catalog, "container_usage", DAY1, DAY2, db)
    other = tmp_path / "other.om"
    other.write_text("# TYPE up gauge\nup 1 1790553600\n# EOF\n")
    result = ingest_window(FileSource([other]), catalog, "container_usage", DAY1, DAY2, db)
    assert result.rows_written == 0
    assert not result.verdicts[0].passed
    assert _count(db) == 4 * 288


CRASH_SCRIPT = """
import sys
from datetime import datetime, UTC
from capacity_pipelines.catalog import load_catalog
from capacity_pipelines.ingest import ingest_window
from capacity_pipelines.sources import FileSource
ingest_window(FileSource([sys.argv[1]]), load_catalog(), "container_usage",
              datetime(2026, 9, 28, tzinfo=UTC), datetime(2026, 9, 29, tzinfo=UTC), sys.argv[2])
"""


def test_process_killed_between_delete_and_insert_keeps_previous_rows(tmp_path: Path, export):
    db = tmp_path / "wh.duckdb"
    ingest_window(FileSource([export]), load_catalog(), "container_usage", DAY1, DAY2, db)
    before = _count(db)
    env = {**os.environ, "CAPACITY_TEST_CRASH_AT": "after_delete", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(export), str(db)],
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3, proc.stderr  # died inside the transaction, after the DELETE
    assert _count(db) == before


LOCK_SCRIPT = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_second_writer_waits_then_fails_clearly(tmp_path: Path):
    db = tmp_path / "wh.duckdb"
    duckdb.connect(str(db)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_SCRIPT, str(db), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(warehouse.WarehouseBusyError, match="locked by another process"),
            warehouse.connect(db, wait_s=1.5),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with warehouse.connect(db, wait_s=5) as con:  # free again once the holder is gone
        assert con.execute("SELECT 1").fetchone() == (1,)


def test_snapshot_is_readable_while_the_warehouse_is_written(tmp_path: Path, export: Path):
    db, snap = tmp_path / "wh.duckdb", tmp_path / "snap.duckdb"
    catalog = load_catalog()
    ingest_window(FileSource([export]), catalog, "container_usage", DAY1, DAY2, db)
    warehouse.publish_snapshot(db, snap)
    reader = duckdb.connect(str(snap), read_only=True)
    try:
        ingest_window(FileSource([export]), catalog, "container_usage", DAY2, DAY3, db)
        # the analyst keeps a consistent view of the old snapshot while the run writes
        assert reader.execute("SELECT count(*) FROM container_usage").fetchone()[0] == 4 * 288
        warehouse.publish_snapshot(db, snap)
        assert reader.execute("SELECT count(*) FROM container_usage").fetchone()[0] == 4 * 288
    finally:
        reader.close()
    assert _count(snap) == 2 * 4 * 288


def test_every_table_and_column_is_documented():
    con = duckdb.connect(":memory:")
    warehouse.ensure_schema(con, load_catalog())
    undocumented = con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' "
        "AND (comment IS NULL OR comment = '')"
    ).fetchall()
    assert undocumented == []
    tables = con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND (comment IS NULL OR comment = '')"
    ).fetchall()
    assert tables == []


def test_committed_data_dictionary_is_current():
    expected = warehouse_dictionary(load_catalog())
    committed = (REPO_ROOT / "docs" / "warehouse.md").read_text()
    assert committed == expected, "run `capacity dictionary` to regenerate docs/warehouse.md"


def test_dictionary_lists_every_derived_table_and_the_review_decisions():
    text = warehouse_dictionary(load_catalog())
    tables = derived_tables()
    assert len(tables) == len(DERIVED_TABLES)
    for table in tables:
        section = text.split(f"## `{table.name}`", 1)[1].split("\n## ", 1)[0]
        for column in table.columns:
            assert f"| `{column}` |" in section, f"{table.name}.{column} undocumented"
    assert "## `recommendation_decisions`" in text

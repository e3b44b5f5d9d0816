"""The warehouse write path: idempotent windows, crash safety, locks, snapshot, dictionary."""

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from capacity_pipelines import warehouse
from capacity_pipelines.common.paths import REPO_ROOT
from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.sources import FileSource
from capacity_pipelines.ingest.tables import ensure_schema
from capacity_pipelines.ingest.window import ingest_window
from capacity_pipelines.reporting.dictionary import (
    DERIVED_TABLES,
    derived_tables,
    warehouse_dictionary,
)
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
from tests.faults import crash_at
crash_at(sys.argv[3])
from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.window import ingest_window
from capacity_pipelines.ingest.sources import FileSource
ingest_window(FileSource([sys.argv[1]]), load_catalog(), "container_usage",
              datetime(2026, 9, 28, tzinfo=UTC), datetime(2026, 9, 29, tzinfo=UTC), sys.argv[2])
"""


def _ingest_crashing_at(point: str, export: Path, db: Path) -> subprocess.CompletedProcess:
    """Run one ingestion in a child process that dies (exit 3) at `point` (tests/faults.py)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(export), str(db), point],
        env=env,
        timeout=120,
        capture_output=True,
        text=True,
    )


def test_process_killed_between_delete_and_insert_keeps_previous_rows(tmp_path: Path, export):
    db = tmp_path / "wh.duckdb"
    ingest_window(FileSource([export]), load_catalog(), "container_usage", DAY1, DAY2, db)
    before = _count(db)
    proc = _ingest_crashing_at("after_delete", export, db)
    assert proc.returncode == 3, proc.stderr  # died inside the transaction, after the DELETE
    assert _count(db) == before


def _files(folder: Path) -> list[str]:
    """What a folder holds, without the writer lock's sidecar (kept, like any lock file)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".writer"))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_write_session_never_writes_the_live_file(tmp_path: Path, export: Path):
    """DuckDB rewrites metadata blocks in place when it checkpoints; a kill mid-write used to
    leave the live file unreadable. Sessions now write a draft, swapped in when closed."""
    db = tmp_path / "wh.duckdb"
    ingest_window(FileSource([export]), load_catalog(), "container_usage", DAY1, DAY2, db)
    before = _digest(db)
    with warehouse.connect(db) as con:
        con.execute("DELETE FROM container_usage")
        con.execute("CHECKPOINT")
        assert _digest(db) == before  # the live file is untouched while the session writes
        assert con.execute("SELECT count(*) FROM container_usage").fetchone() == (0,)
    assert _digest(db) != before and _count(db) == 0
    assert _files(tmp_path) == ["wh.duckdb"]  # no draft left behind


def test_a_session_killed_before_the_swap_leaves_the_live_file_as_it_was(
    tmp_path: Path, export: Path
):
    db = tmp_path / "wh.duckdb"
    ingest_window(FileSource([export]), load_catalog(), "container_usage", DAY1, DAY2, db)
    before = _digest(db)
    proc = _ingest_crashing_at("before_swap", export, db)
    assert proc.returncode == 3, proc.stderr  # its work was done and closed, then it died
    assert _digest(db) == before
    assert any(p.name.startswith(".wh.draft-") for p in tmp_path.iterdir())
    ingest_window(FileSource([export]), load_catalog(), "container_usage", DAY2, DAY3, db)
    assert _count(db) == 2 * 4 * 288
    assert _files(tmp_path) == ["wh.duckdb"]  # the dead draft is cleaned up


def test_an_exception_discards_the_sessions_commits(tmp_path: Path, export: Path):
    db = tmp_path / "wh.duckdb"
    ingest_window(FileSource([export]), load_catalog(), "container_usage", DAY1, DAY2, db)
    with pytest.raises(RuntimeError, match="check failed"), warehouse.connect(db) as con:
        con.execute("DELETE FROM container_usage")  # committed inside the session...
        raise RuntimeError("check failed")
    assert _count(db) == 4 * 288  # ...but the session failed, so none of it is published


def test_a_nested_write_session_in_one_process_is_refused(tmp_path: Path):
    db = tmp_path / "wh.duckdb"
    with (
        warehouse.connect(db),
        pytest.raises(RuntimeError, match="already open"),
        warehouse.connect(db),
    ):
        pass
    with warehouse.connect(db) as con:  # and the refusal released nothing it did not hold
        assert con.execute("SELECT 1").fetchone() == (1,)


def test_a_wal_left_by_an_in_place_writer_is_kept(tmp_path: Path):
    """A file last written in place (a DuckDB shell, or this code before drafts) and killed
    keeps its commits in the `.wal`; the next session must carry them into its draft."""
    db = tmp_path / "wh.duckdb"
    script = (
        "import duckdb, os, sys\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "con.execute(\"CREATE TABLE w AS SELECT 'in the wal' AS who\")\n"
        "os._exit(0)\n"  # no close, no checkpoint: the commit lives only in the WAL
    )
    subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=60)
    assert (tmp_path / "wh.duckdb.wal").exists()
    with warehouse.connect(db) as con:
        con.execute("INSERT INTO w VALUES ('draft')")
    with warehouse.connect(db, read_only=True) as con:
        assert sorted(con.execute("SELECT who FROM w").fetchall()) == [("draft",), ("in the wal",)]
    assert _files(tmp_path) == ["wh.duckdb"]


@pytest.fixture()
def small_disk(tmp_path: Path):
    """An 8 MiB tmpfs, to run out of disk for real (needs root: CI runs as root)."""
    folder = tmp_path / "small_disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def _fill(disk: Path, leave_free: int) -> None:
    """Take all but `leave_free` bytes of the disk with a filler file."""
    stats = os.statvfs(disk)
    (disk / "filler").write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave_free))


@pytest.mark.parametrize(
    ("free_after_build", "raised", "error"),
    [
        (256 * 1024, OSError, "could not copy the warehouse to its draft .* free on that disk"),
        # the copy fits; DuckDB's own write to the draft fails
        (None, duckdb.Error, r"Could not write file .*\.wh\.draft-.*No space left on device"),
    ],
    ids=["while copying", "while writing"],
)
def test_a_full_disk_fails_the_session_and_leaves_the_live_file(
    small_disk: Path, free_after_build, raised, error
):
    db = small_disk / "wh.duckdb"
    rows = "SELECT range AS x, md5(range::VARCHAR) AS h FROM range(40000)"
    with warehouse.connect(db) as con:
        con.execute(f"CREATE TABLE t AS {rows}")
    # "while writing": room for the copy plus a little, not for 40,000 more rows
    _fill(small_disk, free_after_build or db.stat().st_size + 256 * 1024)
    before = _digest(db)
    with pytest.raises(raised, match=error), warehouse.connect(db) as con:
        con.execute(f"INSERT INTO t {rows}")
    assert _digest(db) == before
    assert _files(small_disk) == ["filler", "wh.duckdb"]
    assert _count(db, "SELECT count(*) FROM t") == 40000


SLOW_WRITER = """
import sys, time
from capacity_pipelines import warehouse
with warehouse.connect(sys.argv[1]) as con:
    con.execute("CREATE TABLE IF NOT EXISTS w (who VARCHAR)")
    con.execute("INSERT INTO w VALUES ('first')")
    print("writing", flush=True)
    time.sleep(2)
"""


def test_a_waiting_writer_builds_on_the_previous_writers_result(tmp_path: Path):
    db = tmp_path / "wh.duckdb"
    first = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, str(db)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert first.stdout.readline().strip() == "writing"
        with warehouse.connect(db, wait_s=30) as con:  # waits for the first, then sees its row
            con.execute("INSERT INTO w VALUES ('second')")
    finally:
        first.wait(timeout=60)
    with warehouse.connect(db, read_only=True) as con:
        assert sorted(con.execute("SELECT who FROM w").fetchall()) == [("first",), ("second",)]


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
    ensure_schema(con, load_catalog())
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

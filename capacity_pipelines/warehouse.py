"""The DuckDB warehouse: typed, documented tables and the only code that writes them.

Rules (DESIGN.md): one writer at a time; a window is rewritten with delete-then-insert in one
transaction with explicit column lists, so a re-run never duplicates and a crash never leaves a
hole; a consistent read-only snapshot is published for analysts after each successful run.
Keeping all writes here is what lets the storage move (e.g. to DuckLake) later.

A write session never writes the live file: it works on a copy (a *draft*) that replaces the live
file only once DuckDB has closed it. DuckDB rewrites metadata blocks in place when it checkpoints,
and a process killed in the middle of that write leaves a block whose checksum no longer matches,
which makes the whole file unreadable (CI saw it: "Corrupt database file: computed checksum ...
does not match" after a SIGKILL). With a draft, a killed session loses only its own work. The
one write to the live file left is folding in a WAL that an in-place writer (a DuckDB shell)
left behind, before the copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import duckdb
import polars as pl

from capacity_pipelines.catalog import Catalog, TableSpec
from capacity_pipelines.extract import series_count

EXTRACTION_LOG = "extraction_log"
SCHEMA_VERSION = "schema_version"
_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")


class WarehouseBusyError(RuntimeError):
    """Another process holds the warehouse's write lock for longer than we were willing to wait."""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _open(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """Open one DuckDB file, waiting up to `wait_s` for another process to let go of its lock."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not any(marker in str(exc) for marker in _LOCK_MARKERS):
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"{path}: the warehouse is locked by another process (a second writer or a "
                    f"session opened read-write) and stayed locked for {wait_s:.0f}s; analysts "
                    "should open the published snapshot instead. DuckDB said: "
                    f"{str(exc).splitlines()[0]}"
                ) from None
            time.sleep(0.5)


_WRITING: set[Path] = set()  # live files with a write session open in this process


def _draft_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.draft-{os.getpid()}{path.suffix}")


def _remove_drafts(path: Path) -> None:
    """Drafts (and their WALs) left by killed sessions; called only under the write lock."""
    for draft in path.parent.glob(f".{path.stem}.draft-*{path.suffix}*"):
        draft.unlink(missing_ok=True)


def _remove_draft(draft: Path) -> None:
    draft.unlink(missing_ok=True)
    draft.with_name(draft.name + ".wal").unlink(missing_ok=True)


def _copy(source: BinaryIO, target: Path) -> None:
    """Byte copy; `copy_file_range` shares extents where the filesystem can (XFS, btrfs)."""
    with open(target, "wb") as dst:
        remaining = os.fstat(source.fileno()).st_size
        try:
            while remaining > 0:
                copied = os.copy_file_range(source.fileno(), dst.fileno(), remaining)
                if copied == 0:
                    break
                remaining -= copied
        except (AttributeError, OSError):  # no copy_file_range here: plain copy from the start
            source.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(source, dst, 1 << 20)


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def connect(
    path: str | Path, read_only: bool = False, wait_s: float = 60.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse, waiting up to `wait_s` for another writer to let go of its lock.

    Read-only sessions open the live file. A write session holds DuckDB's own lock on the live
    file for its whole length (so other writers, ours or a DuckDB shell, wait as before), works
    on a draft copy, and renames the closed draft over the live file when the block exits
    without an exception. An exception discards the draft: the session's commits are all or
    nothing, and a process killed at any point leaves the live file as it was.
    """
    path = Path(path)
    if read_only:
        con = _open(path, True, wait_s)
        try:
            yield con
        finally:
            con.close()
        return
    key = path.resolve()
    if key in _WRITING:
        raise RuntimeError(f"{path}: a write session is already open in this process")
    path.parent.mkdir(parents=True, exist_ok=True)
    guard = _open(path, False, wait_s)  # DuckDB's lock on the live file: one writer at a time
    _WRITING.add(key)
    draft = _draft_path(path)
    live: BinaryIO | None = None
    try:
        # Closing any descriptor of a file drops the process's POSIX locks on it, DuckDB's
        # included, so the one we copy from stays open until the guard is closed.
        live = open(path, "rb")  # noqa: SIM115
        _remove_drafts(path)
        if path.with_name(path.name + ".wal").exists():  # left by a writer from before drafts
            guard.execute("CHECKPOINT")
        try:
            _copy(live, draft)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"{path}: could not copy the warehouse to its draft {draft.name} "
                f"({exc.strerror}); a write session needs the file's size "
                f"({os.fstat(live.fileno()).st_size / 2**20:.0f} MiB) free on that disk. "
                "Nothing was written.",
            ) from exc
        con = duckdb.connect(str(draft))
        try:
            yield con
        finally:
            con.close()  # DuckDB checkpoints the draft here
        if _crash_hook("before_swap"):
            os._exit(3)  # test hook: a session killed after its work, before the swap
        with open(draft, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(draft, path)
        _fsync_directory(path.parent)
    finally:
        # Only our own draft: once the live file is replaced, the next writer may hold the new
        # one's lock (ours is on the old file) and have a draft of its own.
        _remove_draft(draft)
        _WRITING.discard(key)
        guard.close()
        if live is not None:
            live.close()


def table_ddl(table: TableSpec) -> str:
    """CREATE TABLE for one catalog table: entity labels, ts, typed value columns."""
    cols = [f"{_quote(k)} VARCHAR NOT NULL" for k in table.key]
    cols.append('"ts" TIMESTAMP NOT NULL')
    cols += [f"{_quote(c)} DOUBLE" for c in table.value_columns]
    return f"CREATE TABLE IF NOT EXISTS {_quote(table.name)} (\n  " + ",\n  ".join(cols) + "\n)"


_LOG_DOCS = {
    "table_name": "Warehouse table that was written.",
    "window_start": "UTC start of the rewritten window (inclusive).",
    "window_end": "UTC end of the rewritten window (exclusive).",
    "source": "Where the rows came from (Prometheus URL, export files or the demo fleet).",
    "row_count": "Rows written for the window.",
    "series_count": "Distinct entities (series) written for the window.",
    "expected_points": "Evaluation steps in the window: the points a complete series has.",
    "written_at": "UTC time of the write.",
}
_KEY_DOCS = {
    "cluster": "Kubernetes cluster (the catalog's default when series carry no cluster label).",
    "namespace": "Kubernetes namespace.",
    "workload": "Workload (Deployment / StatefulSet / DaemonSet) the pod belongs to.",
    "pod": "Pod name; pods that no longer exist keep their history.",
    "container": "Container name within the pod.",
    "service": "Service name.",
    "provider": "LLM provider (OTel gen_ai.provider.name, or the older gen_ai.system).",
    "model": "LLM model as requested (OTel gen_ai.request.model).",
    "agent": "Agent name (OTel gen_ai.agent.name); empty when not reported.",
}


def schema_fingerprint(catalog: Catalog) -> str:
    """Hash of everything `ensure_schema` would write for this catalog."""
    parts = [SCHEMA_VERSION, repr(sorted(_LOG_DOCS.items())), repr(sorted(_KEY_DOCS.items()))]
    for table in catalog.tables.values():
        parts.append(table_ddl(table) + table.description)
        parts += [f"{q.column}|{q.description}|{q.unit}" for q in table.columns]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def ensure_schema(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> None:
    """Create missing tables and columns and (re)write their comments from the catalog.

    All in one transaction, and skipped when the stored fingerprint of the catalog's schema
    and documentation matches: every extraction calls this, most of them with nothing to do.
    """
    fingerprint = schema_fingerprint(catalog)
    try:
        stored = con.execute(f"SELECT fingerprint FROM {SCHEMA_VERSION}").fetchone()
    except duckdb.CatalogException:
        stored = None
    if stored and stored[0] == fingerprint:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        _ensure_schema(con, catalog)
        con.execute(f"CREATE OR REPLACE TABLE {SCHEMA_VERSION} (fingerprint VARCHAR NOT NULL)")
        con.execute(
            f"COMMENT ON TABLE {SCHEMA_VERSION} IS 'Fingerprint of the metric catalog the "
            "tables and their documentation were last built from.'"
        )
        con.execute(
            f"COMMENT ON COLUMN {SCHEMA_VERSION}.fingerprint IS 'SHA-256 of the DDL and comments.'"
        )
        con.execute(f"INSERT INTO {SCHEMA_VERSION} VALUES (?)", [fingerprint])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _ensure_schema(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> None:
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {EXTRACTION_LOG} (
            table_name VARCHAR NOT NULL, window_start TIMESTAMP NOT NULL,
            window_end TIMESTAMP NOT NULL, source VARCHAR NOT NULL, row_count BIGINT NOT NULL,
            series_count BIGINT NOT NULL, expected_points BIGINT NOT NULL,
            written_at TIMESTAMP NOT NULL)"""
    )
    con.execute(
        f"COMMENT ON TABLE {EXTRACTION_LOG} IS 'One row per table and window written by an "
        "extraction: what was written, from which source, when.'"
    )
    for column, doc in _LOG_DOCS.items():
        con.execute(f"COMMENT ON COLUMN {EXTRACTION_LOG}.{column} IS {_literal(doc)}")
    for table in catalog.tables.values():
        con.execute(table_ddl(table))
        existing = {
            row[0]
            for row in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table.name]
            ).fetchall()
        }
        for column in table.value_columns:
            if column not in existing:
                con.execute(f"ALTER TABLE {_quote(table.name)} ADD COLUMN {_quote(column)} DOUBLE")
        con.execute(f"COMMENT ON TABLE {_quote(table.name)} IS {_literal(table.description)}")
        for key in table.key:
            doc = _KEY_DOCS.get(key, f"Entity label {key}.")
            con.execute(f"COMMENT ON COLUMN {_quote(table.name)}.{_quote(key)} IS {_literal(doc)}")
        con.execute(
            f"COMMENT ON COLUMN {_quote(table.name)}.ts IS "
            + _literal("UTC end of the step the row summarises.")
        )
        for query in table.columns:
            doc = f"{query.description} Unit: {query.unit}.".strip()
            con.execute(
                f"COMMENT ON COLUMN {_quote(table.name)}.{_quote(query.column)} IS {_literal(doc)}"
            )


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _delete_then_insert(
    con: duckdb.DuckDBPyConnection,
    table_name: str,
    columns: list[str],
    start: datetime,
    end: datetime,
    rows: pl.DataFrame,
    time_column: str = "ts",
) -> None:
    """Inside an open transaction: drop the window's rows, insert `rows` (explicit columns)."""
    col_list = ", ".join(_quote(c) for c in columns)
    con.execute(
        f"DELETE FROM {_quote(table_name)} WHERE {_quote(time_column)} >= ? "
        f"AND {_quote(time_column)} < ?",
        [start, end],
    )
    if _crash_hook("after_delete"):
        os._exit(3)  # test hook: simulate a process killed between delete and insert
    con.register("incoming_rows", rows.select(columns).to_arrow())
    try:
        con.execute(
            f"INSERT INTO {_quote(table_name)} ({col_list}) SELECT {col_list} FROM incoming_rows"
        )
    finally:
        con.unregister("incoming_rows")


def replace_window(
    con: duckdb.DuckDBPyConnection,
    table: TableSpec,
    start: datetime,
    end: datetime,
    frame: pl.DataFrame,
    source: str,
    expected_points: int,
) -> int:
    """Atomically replace the rows of `[start, end)` with `frame`; returns rows written."""
    start, end = _naive_utc(start), _naive_utc(end)
    series = series_count(frame, table.key)
    con.execute("BEGIN TRANSACTION")
    try:
        _delete_then_insert(con, table.name, table.all_columns, start, end, frame)
        con.execute(
            f"DELETE FROM {EXTRACTION_LOG} WHERE table_name = ? AND window_start = ? "
            "AND window_end = ?",
            [table.name, start, end],
        )
        con.execute(
            f"INSERT INTO {EXTRACTION_LOG} (table_name, window_start, window_end, source, "
            "row_count, series_count, expected_points, written_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                table.name,
                start,
                end,
                source,
                frame.height,
                series,
                expected_points,
                datetime.now(UTC).replace(tzinfo=None),
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return frame.height


_DUCKDB_TYPES = {
    pl.Utf8: "VARCHAR",
    pl.Float64: "DOUBLE",
    pl.Float32: "DOUBLE",
    pl.Int64: "BIGINT",
    pl.Int32: "BIGINT",
    pl.UInt32: "BIGINT",
    pl.Boolean: "BOOLEAN",
}


def _duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    if isinstance(dtype, pl.Categorical | pl.Enum):
        return "VARCHAR"
    for polars_type, duck in _DUCKDB_TYPES.items():
        if dtype == polars_type:
            return duck
    raise TypeError(f"no warehouse type for {dtype}")


@dataclass(frozen=True)
class DerivedTable:
    """A table computed by the pipeline (costs, forecasts, ...), documented like the others."""

    name: str
    description: str
    columns: dict[str, str]  # column -> documentation, in table order

    def ddl(self, schema: dict[str, pl.DataType]) -> str:
        cols = [f"{_quote(c)} {_duckdb_type(schema[c])}" for c in self.columns]
        return f"CREATE TABLE IF NOT EXISTS {_quote(self.name)} (" + ", ".join(cols) + ")"


def replace_derived_window(
    con: duckdb.DuckDBPyConnection,
    table: DerivedTable,
    start: datetime,
    end: datetime,
    frame: pl.DataFrame,
    time_column: str = "ts",
) -> int:
    """Create/document a derived table and atomically replace its rows in `[start, end)`.

    The window is on `time_column` (`as_of` for forecasts, whose `ts` lie in the future).
    `frame` must have every documented column; timestamps are stored as naive UTC.
    """
    missing = [c for c in table.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{table.name}: frame lacks documented columns {missing}")
    rows = frame.select(list(table.columns)).with_columns(
        pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        for c, dtype in frame.select(list(table.columns)).schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone
    )
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(table.ddl(rows.schema))
        con.execute(f"COMMENT ON TABLE {_quote(table.name)} IS {_literal(table.description)}")
        for column, doc in table.columns.items():
            con.execute(
                f"COMMENT ON COLUMN {_quote(table.name)}.{_quote(column)} IS {_literal(doc)}"
            )
        _delete_then_insert(
            con,
            table.name,
            list(table.columns),
            _naive_utc(start),
            _naive_utc(end),
            rows,
            time_column,
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return rows.height


def read_window(
    con: duckdb.DuckDBPyConnection, table_name: str, start: datetime, end: datetime
) -> pl.DataFrame:
    """Rows of one table with `ts` in `[start, end)`, as Polars."""
    return con.execute(
        f"SELECT * FROM {_quote(table_name)} WHERE ts >= ? AND ts < ? ORDER BY ts",
        [_naive_utc(start), _naive_utc(end)],
    ).pl()


def _crash_hook(point: str) -> bool:
    return os.environ.get("CAPACITY_TEST_CRASH_AT") == point


def publish_snapshot(warehouse: str | Path, snapshot: str | Path) -> Path:
    """Publish a consistent read-only copy for analysts, replacing the old one atomically.

    The copy is made from one transaction of the warehouse and renamed into place, so a reader
    holding the old snapshot open keeps a consistent view and a new reader sees the new one.
    """
    snapshot = Path(snapshot)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    tmp = snapshot.with_name(f".{snapshot.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    with connect(warehouse) as con:
        source_db = con.execute("SELECT current_database()").fetchone()[0]
        con.execute(f"ATTACH {_literal(str(tmp))} AS snapshot_copy")
        try:
            con.execute(f"COPY FROM DATABASE {_quote(source_db)} TO snapshot_copy")
        finally:
            con.execute("DETACH snapshot_copy")
    os.replace(tmp, snapshot)
    return snapshot


def data_dictionary(con: duckdb.DuckDBPyConnection) -> str:
    """A Markdown data dictionary generated from the tables' `COMMENT ON` documentation."""
    tables = con.execute(
        "SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND database_name = current_database() ORDER BY table_name"
    ).fetchall()
    lines = [
        "# Warehouse data dictionary",
        "",
        "Generated from the warehouse's `COMMENT ON` documentation by "
        "`capacity dictionary`; do not edit by hand.",
        "",
    ]
    for name, comment in tables:
        lines += [f"## `{name}`", "", (comment or "").strip(), "", "| column | type | meaning |"]
        lines.append("|---|---|---|")
        for column, dtype, doc in con.execute(
            "SELECT column_name, data_type, comment FROM duckdb_columns() "
            "WHERE table_name = ? AND schema_name = 'main' AND database_name = current_database() "
            "ORDER BY column_index",
            [name],
        ).fetchall():
            lines.append(f"| `{column}` | {dtype} | {(doc or '').replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)

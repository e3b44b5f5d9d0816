"""Copies of the warehouse for people: the analysts' snapshot, backups and their restore.

With draft-and-swap writes the live file is always a closed, consistent DuckDB file, so a byte
copy taken while holding a reader's lock (which keeps writers from swapping) is a consistent
copy, comments and all. Only when an in-place writer (a DuckDB shell) left a WAL behind is the
copy made table by table through DuckDB instead. Every copy first reads every block of the
source, so a damaged file is refused in one line instead of being copied on to analysts or
into a backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from capacity_pipelines.warehouse.sessions import (
    WarehouseCorruptError,
    _open,
    _writer_lock,
    copy_file,
    fsync_directory,
    read_every_block,
    reader,
    remove_leftovers,
    tmp_sibling,
    verify,
)
from capacity_pipelines.warehouse.tables import quote_identifier, sql_literal

MANIFEST = "MANIFEST.json"


def _consistent_copy(source: Path, target: Path, wait_s: float, durable: bool = False) -> None:
    """Copy the DuckDB file `source` to `target` as one committed state, once every block of
    it has read back (`WarehouseCorruptError` naming `source` otherwise)."""
    with reader(source, wait_s) as con:
        read_every_block(con)
        if source.with_name(source.name + ".wal").exists():
            source_db = con.execute("SELECT current_database()").fetchone()[0]
            con.execute(f"ATTACH {sql_literal(str(target))} AS copy_target (READ_WRITE)")
            try:
                con.execute(f"COPY FROM DATABASE {quote_identifier(source_db)} TO copy_target")
            finally:
                con.execute("DETACH copy_target")
            return
        with open(source, "rb") as live:
            copy_file(live, target, durable=durable)


def _add_tables(target: Path, side: Path, wait_s: float) -> None:
    """Copy every table of the DuckDB file `side` (with its comments) into `target`."""
    with reader(side, wait_s) as source:
        tables = source.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
            "AND database_name = current_database()"
        ).fetchall()
    if not tables:
        return
    con = duckdb.connect(str(target))
    try:
        con.execute(f"ATTACH {sql_literal(str(side))} AS side (READ_ONLY)")
        for (name,) in tables:
            con.execute(f"DROP TABLE IF EXISTS main.{quote_identifier(name)}")
        con.execute("COPY FROM DATABASE side TO " + quote_identifier(_database_name(con)))
        con.execute("DETACH side")
    finally:
        con.close()


def _database_name(con: duckdb.DuckDBPyConnection) -> str:
    return con.execute("SELECT current_database()").fetchone()[0]


def publish_snapshot(
    warehouse: str | Path,
    snapshot: str | Path,
    side_files: Sequence[str | Path] = (),
    wait_s: float = 60.0,
) -> Path:
    """Publish a consistent read-only copy for analysts, replacing the old one atomically.

    `side_files` are other DuckDB files (the SRE decisions) whose tables are copied in beside
    the warehouse's, so analysts find everything in one file. A reader holding the old snapshot
    open keeps its consistent view; a new reader sees the new one. Publishers take the
    snapshot's writer lock, so the copy a killed publisher left is removed by the next one.
    """
    snapshot = Path(snapshot)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(snapshot, wait_s, "publish the analysts' snapshot"):
        remove_leftovers(snapshot)
        tmp = tmp_sibling(snapshot)
        try:
            _consistent_copy(Path(warehouse), tmp, wait_s)
            for side in side_files:
                if Path(side).exists():
                    _add_tables(tmp, Path(side), wait_s)
            os.replace(tmp, snapshot)
        finally:
            tmp.unlink(missing_ok=True)
    return snapshot


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BackupFile:
    """One DuckDB file in a backup: its role (`warehouse`, `decisions`), name and checksum."""

    role: str
    name: str
    sha256: str
    size: int


def backup(files: dict[str, Path], folder: Path, wait_s: float = 60.0) -> list[BackupFile]:
    """Copy each DuckDB file (role -> live path) into `folder` with a manifest.

    Byte copies of committed states: schema, `COMMENT ON` documentation and every row come back
    exactly as they were. Files that do not exist yet are left out (and listed as absent). A
    file that does not read back whole (`WarehouseCorruptError`) is not backed up, and the new
    folder is removed: a backup that cannot be restored is worse than none. The manifest is
    written last, so a backup cut short (a kill) is refused by `restore`.
    """
    folder.mkdir(parents=True, exist_ok=False)
    try:
        written: list[BackupFile] = []
        for role, live in files.items():
            live = Path(live)
            if not live.exists():
                continue
            target = folder / f"{role}.duckdb"
            _consistent_copy(live, target, wait_s, durable=True)
            written.append(BackupFile(role, target.name, _sha256(target), target.stat().st_size))
        manifest = {
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": [f.__dict__ for f in written],
            "absent": sorted(set(files) - {f.role for f in written}),
        }
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        fsync_directory(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return written


class RestoreError(ValueError):
    """A backup folder that cannot be restored (missing, altered or unreadable files)."""


def read_manifest(folder: Path) -> list[BackupFile]:
    """The files a backup holds, each checked against its recorded checksum."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = [BackupFile(**entry) for entry in manifest["files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RestoreError(f"{folder}: not a backup made by `capacity backup` ({exc})") from None
    for entry in files:
        path = folder / entry.name
        if not path.is_file() or _sha256(path) != entry.sha256:
            raise RestoreError(f"{path}: missing or changed since the backup was made")
        try:
            verify(path)
        except WarehouseCorruptError as exc:
            raise RestoreError(f"{path}: not a readable DuckDB file ({exc.reason})") from None
        except duckdb.Error as exc:
            raise RestoreError(f"{path}: not a readable DuckDB file ({exc})") from None
    return files


def restore(folder: Path, targets: dict[str, Path], wait_s: float = 60.0) -> list[str]:
    """Put each file of the backup back in place (role -> live path); returns the roles restored.

    Each live file is replaced by rename under the writer lock, so a running pipeline finishes
    its write first and a reader sees the old or the restored file, never a mix. A live file
    that is corrupt is replaced all the same (that is what a restore is for).
    """
    restored = []
    for entry in read_manifest(folder):
        if entry.role not in targets:
            continue
        live = Path(targets[entry.role])
        live.parent.mkdir(parents=True, exist_ok=True)
        with _writer_lock(live, wait_s, f"capacity restore from {folder}"):
            remove_leftovers(live)
            guard = None
            if live.exists():
                try:
                    guard = _open(live, False, wait_s)
                except (WarehouseCorruptError, duckdb.Error):
                    guard = None  # unreadable: nothing to protect, replace it
            try:
                tmp = tmp_sibling(live)
                with open(folder / entry.name, "rb") as source:
                    copy_file(source, tmp, durable=True)
                live.with_name(live.name + ".wal").unlink(missing_ok=True)
                os.replace(tmp, live)
                fsync_directory(live.parent)
            finally:
                if guard is not None:
                    guard.close()
        restored.append(entry.role)
    return restored

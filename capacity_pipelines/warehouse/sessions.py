"""Sessions on a DuckDB file: readers open the live file read-only, writers work on a draft.

A write session never writes the live file: it works on a copy (a *draft*) that replaces the live
file only once DuckDB has closed it. DuckDB rewrites metadata blocks in place when it checkpoints,
and a process killed in the middle of that write leaves a block whose checksum no longer matches,
which makes the whole file unreadable (CI saw it: "Corrupt database file: computed checksum ...
does not match" after a SIGKILL). With a draft, a killed session loses only its own work. The
one write to the live file left is folding in a WAL that an in-place writer (a DuckDB shell)
left behind, before the copy.

Writers are serialised by two locks, taken in this order: an advisory lock on a sidecar file
(`.<name>.writer`, holding the writer's pid and purpose, so a waiting writer can say who it waits
for, and a second session opened by the same process is refused at once instead of deadlocking),
then DuckDB's own lock on the live file for the length of the session (so a DuckDB shell that
writes in place waits or fails as it always did). Readers take only DuckDB's shared lock: they
wait while a writer copies, writes and swaps, which takes seconds, never while a pipeline step
computes, because assets read, compute and only then open a writer.

Whoever holds a file's writer lock is its only writer, so every temporary beside the file that is
not its own (a draft, a copy's `.<name>.<pid>.tmp`) was left by a process that died: the holder
removes them (`remove_leftovers`). A file that turns out to be corrupt, when it is opened or
when a query reads a damaged block, is reported in one line naming it and how to restore it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import duckdb

from capacity_pipelines.warehouse.tables import quote_identifier

_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked")
_CORRUPT_MARKERS = ("Corrupt database file", "not a valid DuckDB database", "checksum")


class WarehouseBusyError(RuntimeError):
    """Another process holds the warehouse's write lock for longer than we were willing to wait."""


class WarehouseCorruptError(RuntimeError):
    """The DuckDB file cannot be read; the message says how to restore it, `reason` is what
    DuckDB said (its first line)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(
            f"{path}: the file cannot be read ({reason}). Restore it with `capacity restore "
            "--from <backup folder>` (see `capacity backup`), or move it aside and rebuild it "
            "from Prometheus with `capacity extract`; SRE decisions live in their own file and "
            "are kept."
        )
        self.path = path
        self.reason = reason


def _corrupt(path: Path, exc: BaseException) -> WarehouseCorruptError:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return WarehouseCorruptError(path, first[:200])


def is_corruption(exc: BaseException) -> bool:
    """Whether a DuckDB error says the file's bytes are damaged (not a lock or a bad query)."""
    return isinstance(exc, duckdb.Error) and any(m in str(exc) for m in _CORRUPT_MARKERS)


@contextmanager
def _reported_as_corrupt(path: Path) -> Iterator[None]:
    """A damaged block met by a query inside the block becomes the one-line error for `path`."""
    try:
        yield
    except duckdb.Error as exc:
        if is_corruption(exc):
            raise _corrupt(path, exc) from None
        raise


def _open(path: Path, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
    """Open one DuckDB file, waiting up to `wait_s` for another process to let go of its lock."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not any(marker in str(exc) for marker in _LOCK_MARKERS):
                if any(marker in str(exc) for marker in _CORRUPT_MARKERS):
                    raise _corrupt(path, exc) from None
                raise
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"{path}: the warehouse is locked by another process (a second writer or a "
                    f"session opened read-write) and stayed locked for {wait_s:.0f}s; analysts "
                    "should open the published snapshot instead. DuckDB said: "
                    f"{str(exc).splitlines()[0]}"
                ) from None
            time.sleep(0.5)
        except duckdb.Error as exc:
            if any(marker in str(exc) for marker in _CORRUPT_MARKERS):
                raise _corrupt(path, exc) from None
            raise


def writer_lock_path(path: Path) -> Path:
    """The sidecar file whose advisory lock serialises writers of `path`."""
    return path.with_name(f".{path.name}.writer")


def holder(path: Path) -> str:
    """Who holds (or last held) the writer lock of `path`, as recorded in its sidecar."""
    try:
        return writer_lock_path(Path(path)).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def _writer_lock(path: Path, wait_s: float, purpose: str) -> Iterator[None]:
    """Exclusive `flock` on the sidecar; refuses a second session of this same process."""
    lock = writer_lock_path(path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            who = holder(path)
            if who.split(" ", 1)[0] == f"pid={os.getpid()}":
                raise RuntimeError(f"{path}: a write session is already open in this process")
            if time.monotonic() >= deadline:
                raise WarehouseBusyError(
                    f"{path}: another writer held the lock for {wait_s:.0f}s ({who}); it is "
                    "released when that process ends or finishes its write"
                )
            time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()} {purpose}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _draft_path(path: Path) -> Path:
    return path.with_name(f".{path.stem}.draft-{os.getpid()}{path.suffix}")


def tmp_sibling(path: Path) -> Path:
    """Where this process writes a whole new copy of `path` before renaming it over `path`
    (snapshots, restores); only under the writer lock of `path`."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_leftovers(path: Path) -> list[Path]:
    """Remove the drafts and copy temporaries (and their WALs) that killed processes left beside
    `path`; returns them. Called only under the writer lock of `path`, whose holder is the one
    process that may have such a file open, and before it creates its own."""
    patterns = (f".{path.stem}.draft-*{path.suffix}*", f".{path.name}.*.tmp*")
    removed = [leftover for pattern in patterns for leftover in path.parent.glob(pattern)]
    for leftover in removed:
        if leftover.is_dir() and not leftover.is_symlink():  # DuckDB's spill folder `<db>.tmp`
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return removed


def _remove_draft(draft: Path) -> None:
    draft.unlink(missing_ok=True)
    draft.with_name(draft.name + ".wal").unlink(missing_ok=True)


def copy_file(source: BinaryIO, target: Path, durable: bool = False) -> None:
    """Byte copy from the start of `source`; `copy_file_range` shares extents where the
    filesystem can (XFS, btrfs). `durable` fsyncs the copy (backups; a draft is fsynced later)."""
    source.seek(0)
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
        if durable:
            dst.flush()
            os.fsync(dst.fileno())


def fsync_directory(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(draft: Path, path: Path) -> None:
    """Replace the live file by the closed draft (fsynced first, directory after)."""
    with open(draft, "rb+") as written:
        os.fsync(written.fileno())
    os.replace(draft, path)
    fsync_directory(path.parent)


@contextmanager
def reader(path: str | Path, wait_s: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the live file (waits while a writer swaps it)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such warehouse file (run the pipeline first)")
    con = _open(path, True, wait_s)
    try:
        with _reported_as_corrupt(path):
            yield con
    finally:
        con.close()


def read_every_block(con: duckdb.DuckDBPyConnection) -> None:
    """Read every column of every table of the connection's database, so that DuckDB checks
    the checksum of each block in use. Opening a file checks only its headers and catalog;
    without this a damaged block surfaces in the middle of whichever later step reads it."""
    tables = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE database_name = current_database()"
    ).fetchall()
    for schema, table in tables:
        name = f"{quote_identifier(schema)}.{quote_identifier(table)}"
        con.execute(f"SELECT bit_xor(hash(t)) FROM {name} AS t").fetchall()  # the whole row


def verify(path: str | Path, wait_s: float = 60.0) -> None:
    """`WarehouseCorruptError` (one line: the file, how to restore it) unless every block of
    the DuckDB file `path` reads back; at DuckDB's scan speed (the demo's 12 MiB: < 0.1 s)."""
    with reader(path, wait_s) as con:
        read_every_block(con)


@contextmanager
def writer(
    path: str | Path, wait_s: float = 60.0, purpose: str = ""
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write session: commits are published all or nothing when the block exits cleanly.

    Works on a draft copy of the live file that replaces it once DuckDB has closed it; an
    exception (or a kill) discards the draft and leaves the live file as it was. `purpose`
    is recorded in the lock's sidecar so a waiting writer can say what it waits for.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(path, wait_s, purpose):
        guard = _open(path, False, wait_s)  # DuckDB's lock: keeps in-place writers out
        draft = _draft_path(path)
        live: BinaryIO | None = None
        try:
            # Closing any descriptor of a file drops the process's POSIX locks on it, DuckDB's
            # included, so the one we copy from stays open until the guard is closed.
            live = open(path, "rb")  # noqa: SIM115
            remove_leftovers(path)
            if path.with_name(path.name + ".wal").exists():  # left by an in-place writer
                guard.execute("CHECKPOINT")
            try:
                copy_file(live, draft)
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
                with _reported_as_corrupt(path):  # the draft's blocks are the live file's
                    yield con
            finally:
                con.close()  # DuckDB checkpoints the draft here
            _swap_in(draft, path)
        finally:
            # Only our own draft: once the live file is replaced, the next writer may hold the
            # new one's lock (ours is on the old file) and have a draft of its own.
            _remove_draft(draft)
            guard.close()
            if live is not None:
                live.close()


@contextmanager
def connect(
    path: str | Path, read_only: bool = False, wait_s: float = 60.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """`reader` when `read_only`, else `writer` (for callers that choose at run time)."""
    session = reader(path, wait_s) if read_only else writer(path, wait_s)
    with session as con:
        yield con

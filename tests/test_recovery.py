"""A lost or corrupt warehouse, backups and restores, through the real `capacity` command.

Issue 23, items 3 and 4.

Each test copies a home that ran `capacity demo --days 8` and holds two decisions accepted with
`capacity recs accept`, then runs the command in a subprocess against it: the warehouse deleted
or damaged on disk, a backup taken, the stores changed, the backup restored or tampered with,
a backup or a restore killed half way. What is compared is read from the DuckDB files
themselves: tables and columns with their `COMMENT ON` documentation, every row, every decision.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path

import duckdb
import pytest

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.paths import REPO_ROOT
from capacity_pipelines.reporting.dictionary import derived_tables
from tests.capacity_process import (
    DEMO,
    REVIEWER,
    Capacity,
    copy_home,
    decisions,
    run_capacity,
    runs,
    table_counts,
    temporary_files,
)

pytestmark = pytest.mark.timeout(900)

RESTORE_HINT = "capacity restore --from"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BLOCK_SIZE = 262_144  # DuckDB's default block allocation size
HEADERS = 3 * 4_096  # the file header and the two database headers before block 0


def damage(path: Path, tables: tuple[str, ...] = ()) -> None:
    """Overwrite the middle third of a DuckDB file, as a bad disk or a stray `dd` would; or,
    when `tables` are named, only the data blocks holding them (the file still opens, and the
    damage is met by the query that reads them)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        blocks = [
            block
            for table in tables
            for (block,) in con.execute(
                "SELECT DISTINCT block_id FROM pragma_storage_info(?) WHERE block_id >= 0",
                [table],
            ).fetchall()
        ]
    finally:
        con.close()
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        if not tables:
            handle.seek(size // 3)
            handle.write(b"\xa5" * (size // 3))
        for block in blocks:
            handle.seek(HEADERS + block * BLOCK_SIZE + 4_096)
            handle.write(b"\xa5" * 4_096)


def store_state(path: Path) -> dict:
    """Everything a DuckDB file holds that a restore must bring back: each table with its
    comment, each column with its type, position and comment, and each table's rows (count and
    an order-free sum of row hashes, which sees a changed, missing or duplicated row)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute(
            "SELECT table_name, comment FROM duckdb_tables() "
            "WHERE database_name = current_database() ORDER BY table_name"
        ).fetchall()
        columns = con.execute(
            "SELECT table_name, column_index, column_name, data_type, comment "
            "FROM duckdb_columns() WHERE database_name = current_database() "
            "ORDER BY table_name, column_index"
        ).fetchall()
        rows = {
            name: con.execute(
                f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {wh.quote_identifier(name)} AS t"
            ).fetchone()
            for name, _ in tables
        }
        return {"tables": tables, "columns": columns, "rows": rows}
    finally:
        con.close()


def dictionary(path: Path) -> str:
    """The data dictionary generated from a DuckDB file's `COMMENT ON` documentation."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return wh.data_dictionary(con)
    finally:
        con.close()


def one_line_error(done, *names: str) -> str:
    """The command failed with exit 2 and one line on stderr that names every one of `names`."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(name in lines[0] for name in names), lines[0]
    return lines[0]


# -- item 3: a lost or corrupt warehouse --------------------------------------------------------


def test_a_lost_warehouse_is_rebuilt_by_the_next_demo_and_every_decision_is_still_there(
    accepted_home: Path, tmp_path: Path
):
    home = copy_home(accepted_home, tmp_path)
    store = home / "decisions.duckdb"
    kept, kept_bytes = decisions(home), sha256(store)
    counts = table_counts(home / "warehouse.duckdb")
    (home / "warehouse.duckdb").unlink()

    done = run_capacity(home, *DEMO)

    assert done.returncode == 0, done.stdout + done.stderr
    assert table_counts(home / "warehouse.duckdb") == counts  # rebuilt whole
    assert decisions(home) == kept and sha256(store) == kept_bytes  # a run never writes it
    listed = run_capacity(home, "recs", "list", "--status", "accepted", "--jsonl")
    accepted = [json.loads(line) for line in listed.stdout.splitlines()]
    ids = {d["recommendation_id"] for d in kept}
    assert {r["recommendation_id"] for r in accepted} == ids, listed.stderr
    assert all(r["review_status"] == "accepted" for r in accepted)


@pytest.mark.parametrize("command", ["demo", "recs list", "backup"])
def test_a_corrupt_warehouse_is_one_line_naming_it_and_how_to_restore(
    accepted_home: Path, tmp_path: Path, command: str
):
    home = copy_home(accepted_home, tmp_path)
    warehouse = home / "warehouse.duckdb"
    before = runs(home)
    # `recs list` reads one table: the damage is in its blocks, met by the query, not the open
    damage(warehouse, tables=("recommendations",) if command == "recs list" else ())
    damaged = sha256(warehouse)
    if command == "recs list":
        # Reviews read the analysts' snapshot: a damaged warehouse does not stop them...
        served = run_capacity(home, "recs", "list")
        assert served.returncode == 0 and "warehouse_snapshot.duckdb" in served.stdout
        # ...until the warehouse is what they must read.
        (home / "warehouse_snapshot.duckdb").unlink()

    done = run_capacity(home, *command.split(), *(DEMO[1:] if command == "demo" else ()))

    one_line_error(done, str(warehouse), "cannot be read", RESTORE_HINT, "capacity backup")
    assert sha256(warehouse) == damaged  # nothing wrote it
    assert runs(home) == before  # no run was started only to fail on it, step after step
    assert not (home / "backups").exists() or not any((home / "backups").iterdir())


# -- item 4: backup and restore -----------------------------------------------------------------


def test_backup_then_restore_brings_back_schema_comments_rows_and_decisions(
    accepted_home: Path, tmp_path: Path
):
    home = copy_home(accepted_home, tmp_path)
    warehouse, store = home / "warehouse.duckdb", home / "decisions.duckdb"
    backup = tmp_path / "backup"
    state = {"warehouse": store_state(warehouse), "decisions": store_state(store)}
    documented = {"warehouse": dictionary(warehouse), "decisions": dictionary(store)}
    kept = decisions(home)

    made = run_capacity(home, "backup", "--to", str(backup))
    assert made.returncode == 0, made.stderr
    assert made.stdout.splitlines()[-1] == f"Restore it with: capacity restore --from {backup}"

    # Afterwards: a third decision, rows deleted, a table dropped, a comment rewritten.
    listed = run_capacity(home, "recs", "list", "--status", "pending", "--jsonl", "--limit", "1")
    third = json.loads(listed.stdout.splitlines()[0])["recommendation_id"]
    assert run_capacity(home, "recs", "reject", third, "--by", REVIEWER).returncode == 0
    con = duckdb.connect(str(warehouse))
    con.execute("DELETE FROM container_usage WHERE cpu_cores > 0.1")
    con.execute("DROP TABLE recommendations")
    con.execute("COMMENT ON TABLE llm_token_usage IS 'changed'")
    con.close()
    assert store_state(warehouse) != state["warehouse"] and len(decisions(home)) == 3

    restored = run_capacity(home, "restore", "--from", str(backup))

    assert restored.returncode == 0, restored.stderr
    assert f"restored warehouse: {warehouse}" in restored.stdout
    assert f"restored decisions: {store}" in restored.stdout
    assert store_state(warehouse) == state["warehouse"]
    assert store_state(store) == state["decisions"]
    assert decisions(home) == kept
    assert temporary_files(home) == []
    # The data dictionary generated from the restored files is the one generated before, and
    # every table documented with its types in docs/warehouse.md reads there word for word.
    assert dictionary(warehouse) == documented["warehouse"]
    assert dictionary(store) == documented["decisions"]
    docs = (REPO_ROOT / "docs" / "warehouse.md").read_text().split("# Derived tables")[0]
    sections = re.split(r"(?m)^(?=## `)", docs)[1:]
    assert len(sections) >= 7
    for section in sections:
        assert section.strip() in documented["warehouse"] + documented["decisions"], section
    # Derived tables: docs/warehouse.md gives their documentation, which the restored comments
    # repeat (table and every column).
    comments = {name: comment for name, comment in state["warehouse"]["tables"]}
    column_comments = {(t, c): doc for t, _, c, _, doc in state["warehouse"]["columns"]}
    for table in derived_tables():
        if table.name in comments:
            assert comments[table.name] == table.description
            for column, doc in table.columns.items():
                assert column_comments[(table.name, column)] == doc


TAMPERING = {
    # what is done to the backup, and the file the refusal names ("": the folder)
    "a changed byte": (lambda b: _flip_byte(b / "warehouse.duckdb"), "warehouse.duckdb"),
    "a changed decisions file": (lambda b: _flip_byte(b / "decisions.duckdb"), "decisions.duckdb"),
    "a missing file": (lambda b: (b / "decisions.duckdb").unlink(), "decisions.duckdb"),
    "a missing manifest": (lambda b: (b / "MANIFEST.json").unlink(), ""),
    "a manifest that is not JSON": (lambda b: (b / "MANIFEST.json").write_text("{"), ""),
    # checksums recomputed after the damage: the file itself must read back
    "a damaged file with its checksum": (lambda b: _damage_and_resign(b), "warehouse.duckdb"),
}


def _damage_and_resign(backup: Path) -> None:
    damage(backup / "warehouse.duckdb")
    manifest = json.loads((backup / "MANIFEST.json").read_text())
    for entry in manifest["files"]:
        entry["sha256"] = sha256(backup / entry["name"])
    (backup / "MANIFEST.json").write_text(json.dumps(manifest))


def _flip_byte(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture(scope="module")
def backed_up(accepted_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a home, a backup of it) made with `capacity backup`."""
    home = copy_home(accepted_home, tmp_path_factory.mktemp("backed_up"))
    backup = home.parent / "backup"
    assert run_capacity(home, "backup", "--to", str(backup)).returncode == 0
    return home, backup


@pytest.mark.parametrize("tampering", list(TAMPERING))
def test_a_tampered_backup_is_refused_in_one_line_and_nothing_is_restored(
    backed_up: tuple[Path, Path], tmp_path: Path, tampering: str
):
    home, pristine = backed_up
    backup = tmp_path / "backup"
    shutil.copytree(pristine, backup)
    tamper, named = TAMPERING[tampering]
    tamper(backup)
    stores = (home / "warehouse.duckdb", home / "decisions.duckdb")
    live = [sha256(p) for p in stores]

    done = run_capacity(home, "restore", "--from", str(backup))

    one_line_error(done, str(backup / named) if named else str(backup))
    assert [sha256(p) for p in stores] == live


def test_a_backup_killed_half_way_is_refused_and_a_restore_killed_half_way_keeps_the_live_file(
    backed_up: tuple[Path, Path], tmp_path: Path
):
    home, backup = backed_up
    warehouse = home / "warehouse.duckdb"
    before = sha256(warehouse)

    # A backup killed while it copies: no manifest, so no restore will take it.
    cut_short = tmp_path / "cut_short"
    cap = Capacity(home, ("backup", "--to", str(cut_short)))
    cap.wait_for_temporary(cut_short, r"warehouse\.duckdb", timeout=60)
    os.kill(cap.pid, signal.SIGKILL)
    cap.wait()
    refused = run_capacity(home, "restore", "--from", str(cut_short))
    one_line_error(refused, str(cut_short), "not a backup made by `capacity backup`")
    assert sha256(warehouse) == before

    # A restore killed while it writes its copy beside the live file: the live file is as it
    # was, and the next restore removes the dead copy and completes.
    cap = Capacity(home, ("restore", "--from", str(backup)))
    copy = cap.wait_for_temporary(home, r"\.warehouse\.duckdb\.\d+\.tmp", timeout=60)
    os.kill(cap.pid, signal.SIGKILL)
    cap.wait()
    assert copy.exists() and sha256(warehouse) == before
    table_counts(warehouse)
    again = run_capacity(home, "restore", "--from", str(backup))
    assert again.returncode == 0, again.stderr
    assert not copy.exists() and temporary_files(home) == []
    assert sha256(warehouse) == sha256(backup / "warehouse.duckdb")

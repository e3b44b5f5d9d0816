"""Faults injected from the test harness into a child process (no hooks in production code).

A child script calls `crash_at(point)` before doing its work; the named step of the warehouse's
write path is wrapped so the process dies there with exit code 3, as a SIGKILL would leave it:
- `after_delete`: inside a window rewrite, after the DELETE, before the INSERT;
- `before_swap`: after a write session's work is closed, before the draft replaces the live file.
"""

from __future__ import annotations

import os

CRASH_EXIT = 3


def crash_at(point: str) -> None:
    """Make this process die at `point` of the warehouse write path."""
    if point == "after_delete":
        from capacity_pipelines.ingest import tables as ingest_tables
        from capacity_pipelines.warehouse import tables

        def dying_delete(con, table_name, columns, start, end, rows, time_column="ts"):
            con.execute(
                f'DELETE FROM "{table_name}" WHERE "{time_column}" >= ? AND "{time_column}" < ?',
                [start, end],
            )
            os._exit(CRASH_EXIT)

        tables.delete_then_insert = dying_delete
        ingest_tables.delete_then_insert = dying_delete
    elif point == "before_swap":
        from capacity_pipelines.warehouse import sessions

        def dying_swap(draft, path):
            os._exit(CRASH_EXIT)

        sessions._swap_in = dying_swap
    else:
        raise ValueError(f"unknown crash point {point!r}")

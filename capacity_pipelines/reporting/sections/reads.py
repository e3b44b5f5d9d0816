"""Every read the weekly report makes of the warehouse snapshot, behind one window object.

The section builders format; all SQL lives here, so the windowing rules (derived tables by the
latest `as_of` at or before the week's end, raw tables by `ts` in `(start, end]`) are written
once and every section applies them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl

from capacity_pipelines.common.freshness import stale_before
from capacity_pipelines.forecasting.fleet import FORECAST_TABLE, load_series
from capacity_pipelines.ingest.catalog import Catalog
from capacity_pipelines.ingest.tables import CONTAINER_USAGE_TABLE
from capacity_pipelines.reporting.sections.text import utc_day
from capacity_pipelines.reporting.weeks import ReportWeek
from capacity_pipelines.tokens.fleet import TOKEN_COST_TABLE

SpendForecaster = Callable[[pl.DataFrame, int], pl.DataFrame]


class Unavailable(Exception):
    """A section's input is missing or empty; the message says why."""


# What reading a table of the wrong shape raises (a missing column, a type that does not cast).
READ_ERRORS = (duckdb.Error, pl.exceptions.PolarsError, KeyError, TypeError)


def first_line(error: Exception) -> str:
    """The error's class and first line: enough for a box in the report, never a traceback."""
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


@dataclass(frozen=True)
class ReportWindow:
    """What every section builder needs: the snapshot, the week and the as-of days used."""

    con: duckdb.DuckDBPyConnection
    week: ReportWeek
    catalog: Catalog | None
    forecaster: SpendForecaster

    @property
    def start(self) -> datetime:
        return self.week.start.replace(tzinfo=None)

    @property
    def end(self) -> datetime:
        return self.week.end.replace(tzinfo=None)

    def table_status(self, table: str) -> str | None:
        """None when `table` has rows, else why it cannot be used."""
        exists = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND table_name = ?",
            [table],
        ).fetchone()[0]
        if not exists:
            return f"table {table} is not in the warehouse snapshot"
        if self.con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == 0:
            return f"table {table} is empty"
        return None

    def require(self, table: str) -> None:
        """Raise `Unavailable` (the section becomes a box) unless `table` has rows."""
        why = self.table_status(table)
        if why:
            raise Unavailable(why)

    def as_of(self, table: str, end: datetime | None = None) -> datetime | None:
        """Latest `as_of` of `table` at or before `end` (default: the week's end)."""
        if self.table_status(table):
            return None
        return self.con.execute(
            f'SELECT max(as_of) FROM "{table}" WHERE as_of <= ?', [end or self.end]
        ).fetchone()[0]

    def week_as_of(self, table: str) -> datetime:
        """The as-of day of `table` this week's report uses; `Unavailable` when there is none.

        Every as-of day a run computed is found (a ranged `capacity run` writes each day's);
        when there is none, the box says which command computes them: extraction alone
        (`capacity extract`) does not.
        """
        why = self.table_status(table)
        as_of = None if why else self.as_of(table)
        data_end = self.data_end()
        if as_of is not None and data_end is not None and as_of < stale_before(data_end):
            # an answer about the fleet as it was days before the data the week holds: what
            # it says at risk may have stopped reporting since (or found nothing to say)
            why = (
                f"the latest {table} is as of {utc_day(as_of)}, older than the data it should "
                f"describe (last sample {utc_day(data_end)})"
            )
            as_of = None
        if as_of is None:
            why = why or f"no {table} rows at or before {utc_day(self.end)}"
            sunday = self.week.monday + timedelta(days=6)
            raise Unavailable(
                f"{why}: no daily answer (forecasts, rightsizing, outlook, recommendations) for "
                f"this week's days; `capacity run --start {self.week.monday} --end "
                f"{sunday + timedelta(days=1)}` computes one for each day (extraction alone "
                f"does not), then `capacity report --week {self.week.label}`"
            )
        return as_of

    def data_end(self) -> datetime | None:
        """The newest extracted sample at or before the week's end (None without usage)."""
        if self.table_status(CONTAINER_USAGE_TABLE):
            return None
        return self.con.execute(
            f"SELECT max(ts) FROM {CONTAINER_USAGE_TABLE} WHERE ts <= ?", [self.end]
        ).fetchone()[0]

    def previous_as_of(self, table: str) -> datetime | None:
        """The as-of day last week's report used, or None when it is this week's too."""
        current = self.as_of(table)
        previous = self.as_of(table, self.end - timedelta(days=7))
        return previous if previous is not None and previous != current else None

    def as_of_days(self, table: str, start: datetime, end: datetime) -> int:
        """How many as-of days of `table` lie in `[start, end]` (0 without the table)."""
        if self.table_status(table):
            return 0
        return self.con.execute(
            f'SELECT count(DISTINCT as_of) FROM "{table}" WHERE as_of >= ? AND as_of <= ?',
            [start, end],
        ).fetchone()[0]

    def rows_at(self, table: str, as_of: datetime | None) -> pl.DataFrame:
        """Every row of one as-of day of a derived table (no rows for no day)."""
        if as_of is None:
            return pl.DataFrame()
        return self.con.execute(f'SELECT * FROM "{table}" WHERE as_of = ?', [as_of]).pl()

    def raw_week(self, table: str, start: datetime, end: datetime) -> pl.DataFrame:
        """Rows of a raw table stamped in `(start, end]`, oldest first."""
        return self.con.execute(
            f'SELECT * FROM "{table}" WHERE ts > ? AND ts <= ? ORDER BY ts', [start, end]
        ).pl()

    def token_costs(self, start: datetime, end: datetime) -> pl.DataFrame:
        """Costed token usage in `(start, end]`, `ts` in UTC as the token report expects."""
        frame = self.raw_week(TOKEN_COST_TABLE.name, start, end)
        if frame.height:
            frame = frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
        return frame

    def forecast_rows(self, as_of: datetime, series_ids: list[str]) -> pl.DataFrame:
        """The `load_forecast` rows of `series_ids` made at `as_of`."""
        return self.con.execute(
            f'SELECT * FROM "{FORECAST_TABLE.name}" WHERE as_of = ? '
            "AND list_contains(?, series_id)",
            [as_of, series_ids],
        ).pl()

    def series_history(self, as_of: datetime, days: int) -> pl.DataFrame:
        """The forecast series' last `days` of history up to `as_of` (long format)."""
        return load_series(self.con, as_of.replace(tzinfo=UTC), history_days=days).history

    def requested_resources(self) -> tuple[int, float | None, float | None]:
        """The week's evaluation steps and the fleet's mean requested cores and bytes per step."""
        return self.con.execute(
            "WITH per_step AS (SELECT ts, sum(cpu_request_cores) AS c, "
            f"sum(memory_request_bytes) AS m FROM {CONTAINER_USAGE_TABLE} WHERE ts > ? AND ts <= ? "
            "GROUP BY ts) SELECT count(*), avg(c), avg(m) FROM per_step",
            [self.start, self.end],
        ).fetchone()

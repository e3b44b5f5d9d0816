"""Documented tables and the one way rows are written: delete the window, insert, one transaction.

Rules (DESIGN.md): a window is rewritten with delete-then-insert in one transaction with explicit
column lists, so a re-run never duplicates and a crash never leaves a hole; every table and
column carries a `COMMENT ON`, from which the data dictionary is generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl


def quote_identifier(identifier: str) -> str:
    """A DuckDB identifier in double quotes (quotes inside doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    """A DuckDB string literal (single quotes inside doubled)."""
    return "'" + text.replace("'", "''") + "'"


def naive_utc(value: datetime) -> datetime:
    """The warehouse stores naive UTC timestamps; aware ones are converted, naive ones kept."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def delete_then_insert(
    con: duckdb.DuckDBPyConnection,
    table_name: str,
    columns: list[str],
    start: datetime,
    end: datetime,
    rows: pl.DataFrame,
    time_column: str = "ts",
) -> None:
    """Inside an open transaction: drop the window's rows, insert `rows` (explicit columns)."""
    col_list = ", ".join(quote_identifier(c) for c in columns)
    con.execute(
        f"DELETE FROM {quote_identifier(table_name)} WHERE {quote_identifier(time_column)} >= ? "
        f"AND {quote_identifier(time_column)} < ?",
        [start, end],
    )
    con.register("incoming_rows", rows.select(columns).to_arrow())
    try:
        con.execute(
            f"INSERT INTO {quote_identifier(table_name)} ({col_list}) "
            f"SELECT {col_list} FROM incoming_rows"
        )
    finally:
        con.unregister("incoming_rows")


def document(
    con: duckdb.DuckDBPyConnection, table_name: str, description: str, columns: dict[str, str]
) -> None:
    """(Re)write the `COMMENT ON` of a table and its columns."""
    table = quote_identifier(table_name)
    con.execute(f"COMMENT ON TABLE {table} IS {sql_literal(description)}")
    for column, doc in columns.items():
        con.execute(f"COMMENT ON COLUMN {table}.{quote_identifier(column)} IS {sql_literal(doc)}")


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
        cols = [f"{quote_identifier(c)} {_duckdb_type(schema[c])}" for c in self.columns]
        return f"CREATE TABLE IF NOT EXISTS {quote_identifier(self.name)} (" + ", ".join(cols) + ")"

    def added_columns_ddl(self, schema: dict[str, pl.DataType]) -> list[str]:
        """ALTERs that give a table written by an older release the columns documented since
        (its old rows read NULL), so an upgrade does not fail its first insert."""
        table = quote_identifier(self.name)
        return [
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {quote_identifier(c)} "
            f"{_duckdb_type(schema[c])}"
            for c in self.columns
        ]

    def rows(self, frame: pl.DataFrame) -> pl.DataFrame:
        """`frame` in table order with naive-UTC timestamps; every documented column required."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{self.name}: frame lacks documented columns {missing}")
        selected = frame.select(list(self.columns))
        return selected.with_columns(
            pl.col(c).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            for c, dtype in selected.schema.items()
            if isinstance(dtype, pl.Datetime) and dtype.time_zone
        )


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
    rows = table.rows(frame)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(table.ddl(rows.schema))
        for statement in table.added_columns_ddl(rows.schema):
            con.execute(statement)
        document(con, table.name, table.description, table.columns)
        delete_then_insert(
            con,
            table.name,
            list(table.columns),
            naive_utc(start),
            naive_utc(end),
            rows,
            time_column,
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return rows.height


def replace_as_of(
    con: duckdb.DuckDBPyConnection, table: DerivedTable, as_of: datetime, frame: pl.DataFrame
) -> int:
    """Replace one as-of day's rows of a table windowed on `as_of` (forecasts, rightsizing...).

    The window is the single instant `as_of`: `[as_of, as_of + 1 µs)`.
    """
    return replace_derived_window(
        con, table, as_of, as_of + timedelta(microseconds=1), frame, "as_of"
    )


def read_window(
    con: duckdb.DuckDBPyConnection, table_name: str, start: datetime, end: datetime
) -> pl.DataFrame:
    """Rows of one table with `ts` in `[start, end)`, as Polars."""
    return con.execute(
        f"SELECT * FROM {quote_identifier(table_name)} WHERE ts >= ? AND ts < ? ORDER BY ts",
        [naive_utc(start), naive_utc(end)],
    ).pl()


def table_exists(con: duckdb.DuckDBPyConnection, table_name: str) -> bool:
    """Whether the connection's main database holds `table_name`."""
    return bool(
        con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main' "
            "AND database_name = current_database()",
            [table_name],
        ).fetchone()[0]
    )


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

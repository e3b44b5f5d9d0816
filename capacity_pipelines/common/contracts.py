"""Input contracts of the file-based commands, checked one way, reported in one style.

`capacity forecast`, `capacity rightsize` and `capacity token-cost` (and the pipeline frames
that feed the same code) describe their columns with `Column` and call `check_frame`. A broken
file stops the command with one line, `<file>: column <name>: <problem>` (or `<file>: <problem>`
for what concerns the whole file, such as no rows), so a user sees the same wording whichever
command read the file. Domain modules keep only what is theirs (cache tokens are a subset of
input tokens, a forecast history needs three points per series, ...), in the same style.

Timestamps are normalised here too: the contract is UTC in, UTC out (DESIGN.md), so a column
without a zone is read as UTC and a zoned one converted; either way it comes back as
`Datetime("us", "UTC")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from capacity_pipelines.common.path_checks import check_input_file

# No CPU count, byte count, token count or dollar figure of a fleet comes near 1e18 (an
# exabyte); beyond it a value is a unit or export error, and squares of it (variances, SSEs)
# would overflow float64 in the models.
MAX_PLAUSIBLE_VALUE = 1e18

ColumnKind = Literal["string", "timestamp", "number"]
_EXPECTED = {"string": "a string", "timestamp": "a timestamp", "number": "a number"}
_STRING_TYPES = (pl.String, pl.Categorical, pl.Enum)


class ContractError(ValueError):
    """Input that breaks its file contract; the message is one line naming file and column."""


@dataclass(frozen=True)
class Column:
    """One column of a file contract.

    `nullable`: nulls are allowed (they mean "unknown" or "zero" to the domain that reads
    them); `negative`: negative numbers are allowed (a forecast history may hold a balance or a
    temperature; usage, sizes and token counts may not). NaN and infinity are never allowed:
    a domain that reads NaN as "missing" drops those rows before checking.
    """

    name: str
    kind: ColumnKind
    required: bool = True
    nullable: bool = False
    negative: bool = False


def column_error(source: str, column: str, problem: str) -> str:
    """The one message style: `<file>: column <name>: <problem>`."""
    return f"{source}: column {column}: {problem}"


def _type_ok(dtype: pl.DataType, column: Column) -> bool:
    if dtype == pl.Null:  # a column with no value at all: only where nulls are allowed
        return column.nullable
    if column.kind == "string":
        return isinstance(dtype, _STRING_TYPES)
    if column.kind == "timestamp":
        return isinstance(dtype, pl.Datetime) or dtype == pl.Date
    return dtype.is_numeric()


def utc_timestamps(name: str, dtype: pl.DataType) -> pl.Expr:
    """`name` as `Datetime("us", "UTC")`: zoned values converted, naive ones read as UTC."""
    if dtype == pl.Null:
        return pl.col(name).cast(pl.Datetime("us", "UTC"))
    column = pl.col(name)
    if dtype == pl.Date:
        column = column.cast(pl.Datetime("us"))
    elif isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        column = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return column.dt.cast_time_unit("us").dt.replace_time_zone("UTC")


def _value_checks(column: Column, dtype: pl.DataType) -> list[tuple[str, pl.Expr]]:
    """(problem, row is bad) pairs in the order they are reported."""
    c = pl.col(column.name)
    checks = [] if column.nullable else [("are null", c.is_null())]
    if column.kind != "number" or dtype == pl.Null:
        return checks
    if dtype.is_float():
        checks += [("are NaN", c.is_nan()), ("are infinite", c.is_infinite())]
    if not column.negative:
        checks.append(("are negative", c < 0))
    sign = "" if not column.negative else "±"
    checks.append(
        (
            f"are beyond {sign}{MAX_PLAUSIBLE_VALUE:.0e} (a unit or export error?)",
            c.is_finite() & (c.abs() > MAX_PLAUSIBLE_VALUE) if dtype.is_float()
            else c.abs() > MAX_PLAUSIBLE_VALUE,
        )
    )  # fmt: skip
    return checks


def _example(row: dict[str, object]) -> str:
    return ", ".join(f"{k} {v!r}" if isinstance(v, str) else f"{k} {v}" for k, v in row.items())


def check_rows(
    frame: pl.DataFrame,
    source: str,
    checks: Sequence[tuple[str, str, pl.Expr]],
    *,
    first_row: int = 0,
    error: type[ContractError] = ContractError,
) -> None:
    """Raise on the first `(column, problem, row is bad)` check that any row fails.

    The message counts the rows and names the first: `<source>: column <column>: 3 row(s)
    <problem>, first at row 17`. Every check runs in one pass over the frame; the first bad
    row is looked up only on failure. Domain rules (a subset larger than its whole) use this
    too, so they read like the contract's own checks.
    """
    if not checks or frame.height == 0:
        return
    counts = frame.select(
        bad.fill_null(False).sum().alias(str(i)) for i, (_, _, bad) in enumerate(checks)
    ).row(0)
    for (name, problem, bad), count in zip(checks, counts, strict=True):
        if count:
            first = frame.select(bad.fill_null(False).arg_max()).item() + first_row
            problem = f"{count} row(s) {problem}, first at row {first}"
            raise error(column_error(source, name, problem))


def check_frame(
    frame: pl.DataFrame,
    source: str,
    columns: Sequence[Column],
    *,
    unique_key: Sequence[str] = (),
    require_rows: bool = True,
    first_row: int = 0,
    error: type[ContractError] = ContractError,
) -> pl.DataFrame:
    """Check `frame` against `columns`; return it with every timestamp column in UTC.

    Raises `error` (a `ContractError`) with one line: no rows (when `require_rows`), a missing
    required column, a wrong type, then per column nulls, NaN, infinities, negative and
    implausibly large values (counted, with the first offending row), then rows that repeat
    `unique_key`. `first_row` is the file row of the frame's first row, so a caller that reads
    a file in batches still names the row of the file. Columns not listed are left untouched.
    """
    if require_rows and frame.height == 0:
        raise error(f"{source}: no rows")
    present = [c for c in columns if c.name in frame.columns]
    for column in columns:
        if column.required and column.name not in frame.columns:
            found = ", ".join(frame.columns) or "no columns"
            raise error(column_error(
                source, column.name, f"missing ({_EXPECTED[column.kind]}; found: {found})"
            ))  # fmt: skip
    for column in present:
        dtype = frame.schema[column.name]
        if not _type_ok(dtype, column):
            raise error(column_error(
                source, column.name, f"wrong type {dtype}, expected {_EXPECTED[column.kind]}"
            ))  # fmt: skip

    check_rows(
        frame,
        source,
        [
            (column.name, problem, bad)
            for column in present
            for problem, bad in _value_checks(column, frame.schema[column.name])
        ],
        first_row=first_row,
        error=error,
    )
    if unique_key and frame.height:
        repeated = frame.select(pl.struct(list(unique_key)).is_duplicated()).to_series()
        if repeated.any():
            example = frame.filter(repeated).select(unique_key).row(0, named=True)
            raise error(column_error(
                source,
                unique_key[-1],
                f"{int(repeated.sum())} duplicate ({', '.join(unique_key)}) rows, "
                f"e.g. {_example(example)}",
            ))  # fmt: skip

    timestamps = [c.name for c in present if c.kind == "timestamp"]
    return frame.with_columns(
        utc_timestamps(name, frame.schema[name]).alias(name) for name in timestamps
    )


def read_parquet_input(path: Path, error: type[ContractError] = ContractError) -> pl.DataFrame:
    """A file command's Parquet input, or one line naming it: absent, a folder, or not Parquet."""
    check_input_file(path)
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is "not a Parquet file"
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{path}: not a readable Parquet file ({first_line})") from exc

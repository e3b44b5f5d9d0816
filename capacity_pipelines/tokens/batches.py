"""Cost a usage file of any size in bounded memory: read, validate, cost and write per batch.

Costing adds about a dozen helper columns per row (label hash, price cell, gathered prices, cost
components), so costing a whole file at once peaked at tens of times the Parquet file's size and
ran out of memory on files a laptop holds easily (benchmarks/results/tokens.md). Every row is
costed on its own (its labels, its timestamp, its tokens), so batches give the same rows as one
pass, and the peak is set by `BATCH_ROWS`, not by the file.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from polars.io.plugins import register_io_source

from capacity_pipelines.tokens.costing import cost_usage
from capacity_pipelines.tokens.prices import PriceBook
from capacity_pipelines.tokens.traces import usage_batches
from capacity_pipelines.tokens.usage import UsageContractError, validate_usage

# Rows costed at a time. Costing holds a few hundred bytes per row, so a batch is some tens of
# MB; the reader's and the writer's buffers (a few row groups each) come on top. Larger batches
# are not faster: Polars already uses every core inside one batch.
BATCH_ROWS = 200_000


@dataclass(frozen=True)
class CostedFile:
    """What a costed file holds, for the command's summary line."""

    rows: int
    cost_usd: float
    unpriced_rows: int


def cost_usage_file(
    usage: Path,
    out: Path,
    book: PriceBook,
    *,
    provider: str | None = None,
    model: str | None = None,
    trace_start: dt.datetime | None = None,
    batch_rows: int = BATCH_ROWS,
) -> CostedFile:
    """Cost every row of the usage file `usage` and write them, in file order, to `out`.

    The costed batches feed Polars' streaming Parquet writer as a Python source, so the writer
    compresses on its own threads while the next batch is costed, and pulls a batch only when
    it has room for it. `out` should be a temporary path (see
    `common.files.replaced_on_success`): a bad row in a later batch raises `UsageContractError`
    after earlier batches were written. `price_id` is written as a string: each batch's price
    ids are a different set.
    """
    source = str(usage)
    batches = usage_batches(
        usage, provider=provider, model=model, trace_start=trace_start, batch_rows=batch_rows
    )
    totals = {"rows": 0, "cost_usd": 0.0, "unpriced_rows": 0}

    def costed(first_row: int, batch: pl.DataFrame) -> pl.DataFrame:
        rows = cost_usage(validate_usage(batch, source, first_row=first_row), book)
        totals["rows"] += rows.height
        totals["cost_usd"] += rows["cost_usd"].sum()
        totals["unpriced_rows"] += int(rows["unpriced"].sum())
        return rows.with_columns(pl.col("price_id").cast(pl.String))

    first = next(batches, None)
    if first is None:
        raise UsageContractError(f"{source}: no rows")
    head = [costed(*first)]  # popped when written, so it is not held to the end
    schema = head[0].schema

    def costed_batches(*_: object) -> Iterator[pl.DataFrame]:
        # The writer's projection and filter arguments are unused: it takes every column.
        yield head.pop()
        for first_row, batch in batches:
            rows = costed(first_row, batch)
            yield rows if rows.schema == schema else _conform(rows, schema, source, first_row)

    register_io_source(costed_batches, schema=schema).sink_parquet(out)
    if totals["rows"] == 0:  # the pipeline may cost an empty day; a file must hold usage
        raise UsageContractError(f"{source}: no rows")
    return CostedFile(**totals)


def _conform(rows: pl.DataFrame, schema: pl.Schema, source: str, first_row: int) -> pl.DataFrame:
    """A later batch in the first batch's types (a column null so far, an int that fits)."""
    try:
        return rows.select(schema.names()).cast(dict(schema))
    except (pl.exceptions.PolarsError, KeyError) as error:
        first = str(error).splitlines()[0]
        raise UsageContractError(
            f"{source}: rows from {first_row} on change a column's type ({first})"
        ) from error

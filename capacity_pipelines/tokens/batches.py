"""Cost a usage file of any size in bounded memory: read, validate, cost and write per batch.

Costing adds about a dozen helper columns per row (label hash, price cell, gathered prices, cost
components), so costing a whole file at once peaked at tens of times the Parquet file's size and
ran out of memory on files a laptop holds easily (benchmarks/results/tokens.md). Every row is
costed on its own (its labels, its timestamp, its tokens), so batches give the same rows as one
pass, and the peak is set by `BATCH_ROWS`, not by the file.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from capacity_pipelines.tokens.costing import cost_usage
from capacity_pipelines.tokens.prices import PriceBook
from capacity_pipelines.tokens.traces import usage_batches
from capacity_pipelines.tokens.usage import UsageContractError, validate_usage

# Rows costed at a time. About 200 bytes per row go through costing, so a batch holds some
# tens of MB; the reader's own buffers (a few row groups) come on top. Larger batches are not
# faster: Polars already uses every core inside one batch.
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

    `out` should be a temporary path (see `common.files.replaced_on_success`): a bad row in a
    later batch raises `UsageContractError` after earlier batches were written. `price_id` is
    written as a string: each batch's price ids are a different set.
    """
    source = str(usage)
    rows, cost, unpriced = 0, 0.0, 0
    writer: pq.ParquetWriter | None = None
    # One batch is written (pyarrow, GIL released) while the next is costed (Polars): on two
    # cores that hides most of the write. At most two batches are alive at a time.
    with ThreadPoolExecutor(max_workers=1) as background:
        pending: Future | None = None
        try:
            for first_row, batch in usage_batches(
                usage, provider=provider, model=model, trace_start=trace_start,
                batch_rows=batch_rows,
            ):  # fmt: skip
                costed = cost_usage(validate_usage(batch, source, first_row=first_row), book)
                table = costed.with_columns(pl.col("price_id").cast(pl.String)).to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema, compression="zstd")
                elif table.schema != writer.schema:
                    table = _conform(table, writer.schema, source, first_row)
                if pending is not None:
                    pending.result()
                pending = background.submit(writer.write_table, table)
                rows += costed.height
                cost += costed["cost_usd"].sum()
                unpriced += int(costed["unpriced"].sum())
            if pending is not None:
                pending.result()
        finally:
            if pending is not None:
                pending.exception()  # wait: the writer is closed only when no write runs
            if writer is not None:
                writer.close()
    if rows == 0:  # the pipeline may cost an empty day; a file must hold usage
        raise UsageContractError(f"{source}: no rows")
    return CostedFile(rows=rows, cost_usd=cost, unpriced_rows=unpriced)


def _conform(table: pa.Table, schema: pa.Schema, source: str, first_row: int) -> pa.Table:
    """A later batch in the first batch's types (a column null so far, an int that fits)."""
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, KeyError) as error:
        first = str(error).splitlines()[0]
        raise UsageContractError(
            f"{source}: rows from {first_row} on change a column's type ({first})"
        ) from error

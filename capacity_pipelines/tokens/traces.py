"""Read usage files and per-request LLM traces into the usage contract.

Accepted inputs (by extension): Parquet, CSV, JSONL / NDJSON. Besides files already in the
contract, three per-request trace shapes are recognised by their columns:

- Azure LLM inference trace 2023 (`TIMESTAMP, ContextTokens, GeneratedTokens`; CC-BY-4.0,
  Patel et al., Splitwise, ISCA 2024): absolute timestamps, no model.
- Mooncake FAST'25 traces (`timestamp` ms since trace start, `input_length`, `output_length`,
  `hash_ids` = 512-token prompt-prefix block ids; Apache-2.0): relative time, no model.
- Generic request logs: `timestamp`/`time`, `model`, `agent`, `input`/`prompt_tokens`,
  `output`/`completion_tokens`, `cached`/`cached_tokens`, ... (aliases below).

Traces carry no provider or model: the caller supplies them (`--provider`, `--model`), and relative
timestamps are anchored at `trace_start`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from capacity_pipelines.common.contracts import utc_timestamps
from capacity_pipelines.common.path_checks import check_input_file
from capacity_pipelines.tokens.usage import UsageContractError

# Contract column -> names seen in trace files and exporters (first present wins).
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "timestamp", "time", "TIMESTAMP", "start_time", "created_at"),
    "provider": ("provider", "gen_ai.provider.name", "gen_ai.system", "custom_llm_provider"),
    "model": ("model", "gen_ai.request.model", "gen_ai.response.model", "model_name"),
    "agent": ("agent", "agent_name", "gen_ai.agent.name"),
    "input_tokens": (
        "input_tokens",
        "input",
        "prompt_tokens",
        "ContextTokens",
        "input_length",
        "gen_ai.usage.input_tokens",
    ),
    "output_tokens": (
        "output_tokens",
        "output",
        "completion_tokens",
        "GeneratedTokens",
        "output_length",
        "gen_ai.usage.output_tokens",
    ),
    "cache_read_input_tokens": (
        "cache_read_input_tokens",
        "cached",
        "cached_tokens",
        "cached_input_tokens",
        "cache_read_tokens",
    ),
    "cache_write_input_tokens": (
        "cache_write_input_tokens",
        "cache_creation_input_tokens",
        "cache_write_tokens",
    ),
    "reasoning_output_tokens": ("reasoning_output_tokens", "reasoning_tokens"),
}

# Mooncake timestamps are milliseconds since the start of the trace (FAST'25 trace README).
MOONCAKE_TIME_UNIT_MS = 1
# Anchor of relative-time traces when the caller gives none: arbitrary, chosen so the bundled
# list prices (valid from mid-2025) apply. Pass `trace_start` to cost a trace at another date.
DEFAULT_TRACE_START = dt.datetime(2025, 9, 1, tzinfo=dt.UTC)
# Numeric absolute timestamps: magnitude tells the unit (epoch seconds are ~1.7e9 today).
EPOCH_MS_ABOVE = 1e11
EPOCH_US_ABOVE = 1e14


def _reader_error(path: Path, error: Exception) -> UsageContractError:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    kind = path.suffix.lower().lstrip(".")
    return UsageContractError(f"{path}: not a readable {kind} file ({first})")


def scan_table(path: Path) -> pl.LazyFrame:
    """A Parquet, CSV or JSONL file as a lazy frame; an unreadable file is one contract error.

    Lazy, so a caller can read a file of any size in batches (`usage_batches`). CSV and JSONL
    types are inferred once, from the first 10,000 rows, so every batch has the same schema.
    """
    check_input_file(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pl.scan_parquet(path)
    elif suffix == ".csv":
        frame = pl.scan_csv(path, infer_schema_length=10_000)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        frame = pl.scan_ndjson(path, infer_schema_length=10_000)
    else:
        raise UsageContractError(f"{path}: unsupported file type {suffix!r} (parquet, csv, jsonl)")
    try:
        frame.collect_schema()
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a readable file"
        raise _reader_error(path, exc) from exc
    return frame


def read_table(path: Path) -> pl.DataFrame:
    """Read a Parquet, CSV or JSONL file whole; any reader failure becomes one contract error."""
    frame = scan_table(path)
    try:
        return frame.collect()
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a readable file"
        raise _reader_error(path, exc) from exc


def _is_mooncake(columns: list[str]) -> bool:
    return {"input_length", "output_length"} <= set(columns)


@dataclass(frozen=True)
class TimeAxis:
    """How a file's time column becomes UTC timestamps, decided once for the whole file.

    One batch of a file cannot tell the unit of numeric epochs (that takes the largest value)
    or how far to shift an absolute trace so it starts at `trace_start` (that takes its first
    timestamp), so `time_axis` looks at the whole time column once, lazily, and every batch is
    converted with the same answer.
    """

    column: str
    relative_ms: bool
    epoch_unit_us: int = 1_000_000
    anchor: dt.datetime = DEFAULT_TRACE_START
    shift: dt.timedelta | None = None

    def raw(self, dtype: pl.DataType) -> pl.Expr:
        """The time column as timestamps, before the shift (zone as the file gives it)."""
        ts = pl.col(self.column)
        if self.relative_ms:
            anchor_us = int(self.anchor.timestamp() * 1_000_000)
            offsets_us = (ts.cast(pl.Float64) * 1_000 * MOONCAKE_TIME_UNIT_MS).round()
            return (offsets_us.cast(pl.Int64) + anchor_us).cast(pl.Datetime("us", "UTC"))
        if dtype == pl.String:
            return ts.str.strip_chars().str.to_datetime(time_unit="us", strict=True)
        if dtype.is_numeric():
            us = ts.cast(pl.Float64) * self.epoch_unit_us
            return us.cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
        return ts


def _epoch_unit_us(biggest: float | None) -> int:
    """Microseconds per unit of numeric epochs, told by the magnitude of the largest value."""
    biggest = biggest or 0.0
    return 1 if biggest > EPOCH_US_ABOVE else 1_000 if biggest > EPOCH_MS_ABOVE else 1_000_000


def time_axis(frame: pl.LazyFrame, source: str, trace_start: dt.datetime | None) -> TimeAxis:
    """Find the time column of `frame` and how to read it (see `TimeAxis`)."""
    schema = frame.collect_schema()
    columns = schema.names()
    column = next((a for a in COLUMN_ALIASES["ts"] if a in columns), None)
    if column is None:
        raise UsageContractError(f"{source}: column ts: missing (no timestamp column)")
    dtype = schema[column]
    if _is_mooncake(columns) and "ts" not in columns:
        if not dtype.is_numeric():
            raise UsageContractError(f"{source}: column {column}: expected milliseconds")
        return TimeAxis(column, True, anchor=trace_start or DEFAULT_TRACE_START)
    try:
        unit = 1_000_000
        if dtype.is_numeric():
            biggest = frame.select(pl.col(column).cast(pl.Float64).abs().max()).collect().item()
            unit = _epoch_unit_us(biggest)
        axis = TimeAxis(column, False, epoch_unit_us=unit)
        readable = dtype == pl.String or dtype.is_numeric() or dtype in (pl.Datetime, pl.Date)
        if trace_start is None or not readable:
            return axis  # a time column of another type is the validator's to report
        first = frame.select(axis.raw(dtype).min()).collect().item()
    except pl.exceptions.PolarsError as exc:
        raise UsageContractError(
            f"{source}: column {column}: cannot parse timestamps ({str(exc).splitlines()[0]})"
        ) from exc
    if not isinstance(first, dt.date):  # no rows: nothing to shift
        return axis
    if not isinstance(first, dt.datetime):
        first = dt.datetime.combine(first, dt.time())
    first = first.astimezone(dt.UTC) if first.tzinfo else first.replace(tzinfo=dt.UTC)
    return TimeAxis(column, False, epoch_unit_us=unit, shift=trace_start - first)


def to_usage(
    frame: pl.DataFrame,
    source: str,
    *,
    provider: str | None = None,
    model: str | None = None,
    trace_start: dt.datetime | None = None,
    axis: TimeAxis | None = None,
) -> pl.DataFrame:
    """Rename trace columns to the usage contract and fill what the trace does not carry.

    `provider` / `model` fill the column only when the file has none. `trace_start` anchors
    relative timestamps (Mooncake); for absolute timestamps it shifts the whole trace so its first
    request is at `trace_start` (to cost a past trace at today's prices). `axis` is the file's
    time axis when `frame` is one batch of a larger file (`usage_batches`).
    """
    axis = axis or time_axis(frame.lazy(), source, trace_start)
    renames: dict[str, str] = {}
    for target, aliases in COLUMN_ALIASES.items():
        if target in frame.columns:
            continue
        for alias in aliases:
            if alias in frame.columns and alias not in renames:
                renames[alias] = target
                break
    try:
        ts = frame.select(axis.raw(frame.schema[axis.column]).alias("ts")).to_series()
    except pl.exceptions.PolarsError as exc:
        raise UsageContractError(
            f"{source}: column {axis.column}: cannot parse timestamps "
            f"({str(exc).splitlines()[0]})"
        ) from exc
    if axis.shift is not None:
        ts = ts.to_frame().select(utc_timestamps("ts", ts.dtype)).to_series() + axis.shift
    out = frame.drop(axis.column).rename({k: v for k, v in renames.items() if k != axis.column})
    out = out.with_columns(ts)
    for name, value, flag in (("provider", provider, "--provider"), ("model", model, "--model")):
        if name not in out.columns:
            if value is None:
                raise UsageContractError(
                    f"{source}: column {name}: missing (trace files without it need {flag})"
                )
            out = out.with_columns(pl.lit(value, dtype=pl.String).alias(name))
    front = [c for c in ("ts", "provider", "model", "agent") if c in out.columns]
    return out.select(*front, *[c for c in out.columns if c not in front])


def read_usage(
    path: Path,
    *,
    provider: str | None = None,
    model: str | None = None,
    trace_start: dt.datetime | None = None,
) -> pl.DataFrame:
    """Read a usage file or a per-request trace into the usage contract (not yet validated)."""
    return to_usage(
        read_table(path), str(path), provider=provider, model=model, trace_start=trace_start
    )


def usage_batches(
    path: Path,
    *,
    provider: str | None = None,
    model: str | None = None,
    trace_start: dt.datetime | None = None,
    batch_rows: int,
) -> Iterator[tuple[int, pl.DataFrame]]:
    """`read_usage` in batches of about `batch_rows` rows: (file row of the first, batch).

    Memory is bounded by the batch, not the file: Polars' streaming engine reads the file
    piecewise (Parquet row groups, CSV / JSONL chunks). Batches come in file order.
    """
    frame = scan_table(path)
    axis = time_axis(frame, str(path), trace_start)
    batches = iter(frame.collect_batches(chunk_size=batch_rows))
    first_row = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a reader failure mid-file: "not readable"
            raise _reader_error(path, exc) from exc
        yield first_row, to_usage(
            batch, str(path), provider=provider, model=model, trace_start=trace_start, axis=axis
        )
        first_row += batch.height

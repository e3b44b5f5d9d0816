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
from pathlib import Path

import polars as pl

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


def read_table(path: Path) -> pl.DataFrame:
    """Read a Parquet, CSV or JSONL file; any reader failure becomes one contract error line."""
    if not path.is_file():
        raise UsageContractError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        if suffix == ".csv":
            return pl.read_csv(path, infer_schema_length=10_000)
        if suffix in (".jsonl", ".ndjson", ".json"):
            return pl.read_ndjson(path, infer_schema_length=10_000)
    except Exception as exc:  # noqa: BLE001 - any reader failure means "not a readable file"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageContractError(f"{path}: not a readable {suffix[1:]} file ({first})") from exc
    raise UsageContractError(f"{path}: unsupported file type {suffix!r} (parquet, csv, jsonl)")


def _is_mooncake(frame: pl.DataFrame) -> bool:
    return {"input_length", "output_length"} <= set(frame.columns)


def _timestamps(
    frame: pl.DataFrame, column: str, source: str, relative_ms: bool, anchor: dt.datetime
) -> pl.Series:
    """Parse the time column into UTC datetimes (strings, epoch numbers or relative ms)."""
    ts = frame[column]
    if relative_ms:
        if not ts.dtype.is_numeric():
            raise UsageContractError(f"{source}: column {column}: expected milliseconds")
        anchor_us = int(anchor.timestamp() * 1_000_000)
        offsets_us = (ts.cast(pl.Float64) * 1_000 * MOONCAKE_TIME_UNIT_MS).round().cast(pl.Int64)
        return (offsets_us + anchor_us).cast(pl.Datetime("us", "UTC")).alias("ts")
    if ts.dtype == pl.String:
        try:
            parsed = ts.str.strip_chars().str.to_datetime(time_unit="us", strict=True)
        except Exception as exc:  # noqa: BLE001 - polars raises several error types here
            raise UsageContractError(
                f"{source}: column {column}: cannot parse timestamps ({str(exc).splitlines()[0]})"
            ) from exc
        return parsed.alias("ts")
    if ts.dtype.is_numeric():
        x = ts.cast(pl.Float64)
        biggest = x.abs().max() or 0.0
        scale = 1 if biggest > EPOCH_US_ABOVE else 1_000 if biggest > EPOCH_MS_ABOVE else 1_000_000
        return (x * scale).cast(pl.Int64).cast(pl.Datetime("us", "UTC")).alias("ts")
    return ts.alias("ts")


def to_usage(
    frame: pl.DataFrame,
    source: str,
    *,
    provider: str | None = None,
    model: str | None = None,
    trace_start: dt.datetime | None = None,
) -> pl.DataFrame:
    """Rename trace columns to the usage contract and fill what the trace does not carry.

    `provider` / `model` fill the column only when the file has none. `trace_start` anchors
    relative timestamps (Mooncake); for absolute timestamps it shifts the whole trace so its first
    request is at `trace_start` (to cost a past trace at today's prices).
    """
    relative = _is_mooncake(frame) and "ts" not in frame.columns
    renames: dict[str, str] = {}
    for target, aliases in COLUMN_ALIASES.items():
        if target in frame.columns:
            continue
        for alias in aliases:
            if alias in frame.columns and alias not in renames:
                renames[alias] = target
                break
    time_col = next((a for a in COLUMN_ALIASES["ts"] if a in frame.columns), None)
    if time_col is None:
        raise UsageContractError(f"{source}: column ts: missing (no timestamp column)")
    anchor = trace_start or DEFAULT_TRACE_START
    ts = _timestamps(frame, time_col, source, relative, anchor)
    out = frame.drop(time_col).rename({k: v for k, v in renames.items() if k != time_col})
    out = out.with_columns(ts)
    if trace_start is not None and not relative and out.height:
        first = out["ts"].min()
        if isinstance(first, dt.datetime):
            if first.tzinfo is None:
                first = first.replace(tzinfo=dt.UTC)
                out = out.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
            out = out.with_columns(pl.col("ts") + (trace_start - first))
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

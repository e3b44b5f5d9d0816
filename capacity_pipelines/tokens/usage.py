"""The LLM usage contract (DESIGN.md `capacity token-cost`) and its validation.

U: `ts`, `provider`, `model`, `agent` (nullable), `input_tokens`, `output_tokens`,
`cache_read_input_tokens` and `cache_write_input_tokens` (nullable; SUBSETS of input tokens, as in
the OpenTelemetry GenAI conventions), `service_tier` (nullable: standard | batch).

Optional columns the costing also understands: `reasoning_output_tokens` (subset of output),
`requests` (LLM calls the row aggregates; used to find the context tier of aggregated rows),
`cache_write_ttl` (`5m` | `1h`), and any id column (`conversation_id`, `workflow_id`, ...) for the
per-request report. Every other column is carried through untouched.

Bad data stops the run with one line naming the file, the column and the problem: a NaN or
negative token count is a broken exporter, and costing it would publish a wrong number.
"""

from __future__ import annotations

import polars as pl

from capacity_pipelines.forecasting.frames import MAX_PLAUSIBLE_VALUE

TS = "ts"
KEY_COLUMNS = ("provider", "model")
REQUIRED_TOKEN_COLUMNS = ("input_tokens", "output_tokens")
OPTIONAL_TOKEN_COLUMNS = (
    "cache_read_input_tokens",
    "cache_write_input_tokens",
    "reasoning_output_tokens",
    "requests",
)
OPTIONAL_LABEL_COLUMNS = ("agent", "service_tier", "cache_write_ttl")
TOKEN_COLUMNS = REQUIRED_TOKEN_COLUMNS + OPTIONAL_TOKEN_COLUMNS

# Float token counts come from Prometheus increase()/rate() extrapolation; a sub-token excess of
# the cache counters over input is arithmetic noise, not a broken exporter.
SUBSET_TOLERANCE_TOKENS = 0.5


class UsageContractError(ValueError):
    """Usage data breaks the contract; the message is one line naming file, column and problem."""


def _fail(source: str, column: str, problem: str) -> UsageContractError:
    return UsageContractError(f"{source}: column {column}: {problem}")


def validate_usage(usage: pl.DataFrame, source: str = "usage") -> pl.DataFrame:
    """Check columns, types and token counts; return the frame with `ts` in UTC.

    Token columns may be integers or floats (Prometheus increases are floats). Nulls in the
    optional token columns mean zero; nulls in `input_tokens` / `output_tokens` are an error.
    """
    for col in (TS, *KEY_COLUMNS, *REQUIRED_TOKEN_COLUMNS):
        if col not in usage.columns:
            raise _fail(source, col, "missing (required by the usage contract)")

    ts_type = usage.schema[TS]
    if isinstance(ts_type, pl.Datetime):
        ts_expr = (
            pl.col(TS).dt.convert_time_zone("UTC")
            if ts_type.time_zone
            else pl.col(TS).dt.replace_time_zone("UTC")
        )
    elif ts_type == pl.Date:
        ts_expr = pl.col(TS).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    else:
        raise _fail(source, TS, f"wrong type {ts_type}, expected a timestamp")

    for col in (*KEY_COLUMNS, *OPTIONAL_LABEL_COLUMNS):
        if col in usage.columns and usage.schema[col] not in (pl.String, pl.Categorical, pl.Null):
            raise _fail(source, col, f"wrong type {usage.schema[col]}, expected a string")

    present_tokens = [c for c in TOKEN_COLUMNS if c in usage.columns]
    for col in present_tokens:
        dtype = usage.schema[col]
        if not (dtype.is_numeric() or dtype == pl.Null) or dtype.is_decimal():
            raise _fail(source, col, f"wrong type {dtype}, expected a number of tokens")

    checks: dict[str, tuple[str, pl.Expr]] = {}
    checks["ts:are null"] = (TS, pl.col(TS).is_null())
    for col in present_tokens:
        c = pl.col(col)
        if usage.schema[col].is_float():
            checks[f"{col}:are NaN"] = (col, c.is_nan())
            checks[f"{col}:are infinite"] = (col, c.is_infinite())
        checks[f"{col}:are negative"] = (col, c < 0)
        checks[f"{col}:are beyond {MAX_PLAUSIBLE_VALUE:.0e} (a unit error?)"] = (
            col,
            c.abs() > MAX_PLAUSIBLE_VALUE,
        )
        if col in REQUIRED_TOKEN_COLUMNS:
            checks[f"{col}:are null"] = (col, c.is_null())

    def zero_if_absent(col: str) -> pl.Expr:
        return pl.col(col).fill_null(0) if col in usage.columns else pl.lit(0)

    cached = zero_if_absent("cache_read_input_tokens") + zero_if_absent("cache_write_input_tokens")
    if "cache_read_input_tokens" in usage.columns or "cache_write_input_tokens" in usage.columns:
        checks["cache_read_input_tokens:have cache_read + cache_write > input_tokens"] = (
            "cache_read_input_tokens",
            cached > pl.col("input_tokens") + SUBSET_TOLERANCE_TOKENS,
        )
    if "reasoning_output_tokens" in usage.columns:
        checks["reasoning_output_tokens:have reasoning > output_tokens"] = (
            "reasoning_output_tokens",
            pl.col("reasoning_output_tokens").fill_null(0)
            > pl.col("output_tokens") + SUBSET_TOLERANCE_TOKENS,
        )

    counts = usage.select(
        [expr.fill_null(False).sum().alias(name) for name, (_, expr) in checks.items()]
    ).row(0, named=True)
    for name, bad in counts.items():
        if bad:
            column, expr = checks[name]
            first = usage.select(expr.fill_null(False).arg_max()).item()
            problem = name.split(":", 1)[1]
            raise _fail(source, column, f"{bad} row(s) {problem}, first at row {first}")

    return usage.with_columns(ts_expr.cast(pl.Datetime("us", "UTC")).alias(TS))

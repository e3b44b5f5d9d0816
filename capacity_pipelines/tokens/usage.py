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

from capacity_pipelines.common.contracts import Column, ContractError, check_frame, check_rows

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


class UsageContractError(ContractError):
    """Usage data breaks the contract; the message is one line naming file, column and problem."""


# DESIGN.md `capacity token-cost`. Provider and model may be null in exported metrics (a label
# the exporter did not set): such rows are costed as unpriced, not refused. Nulls in the
# optional token columns mean zero.
USAGE_CONTRACT = (
    Column(TS, "timestamp"),
    *(Column(c, "string", nullable=True) for c in KEY_COLUMNS),
    *(Column(c, "string", required=False, nullable=True) for c in OPTIONAL_LABEL_COLUMNS),
    *(Column(c, "number") for c in REQUIRED_TOKEN_COLUMNS),
    *(Column(c, "number", required=False, nullable=True) for c in OPTIONAL_TOKEN_COLUMNS),
)


def validate_usage(usage: pl.DataFrame, source: str = "usage", first_row: int = 0) -> pl.DataFrame:
    """Check columns, types and token counts; return the frame with `ts` in UTC.

    Token columns may be integers or floats (Prometheus increases are floats). An empty frame
    passes (the pipeline may cost an empty day; the CLI refuses an empty file itself).
    `first_row` is the file row of the frame's first row, for callers that read in batches.
    """
    checked = check_frame(
        usage, source, USAGE_CONTRACT, require_rows=False, first_row=first_row,
        error=UsageContractError,
    )  # fmt: skip

    def zero_if_absent(col: str) -> pl.Expr:
        return pl.col(col).fill_null(0) if col in usage.columns else pl.lit(0)

    subsets = []
    if "cache_read_input_tokens" in usage.columns or "cache_write_input_tokens" in usage.columns:
        cached = zero_if_absent("cache_read_input_tokens") + zero_if_absent(
            "cache_write_input_tokens"
        )
        subsets.append((
            "cache_read_input_tokens",
            "have cache_read + cache_write > input_tokens",
            cached > pl.col("input_tokens") + SUBSET_TOLERANCE_TOKENS,
        ))  # fmt: skip
    if "reasoning_output_tokens" in usage.columns:
        subsets.append((
            "reasoning_output_tokens",
            "have reasoning > output_tokens",
            pl.col("reasoning_output_tokens").fill_null(0)
            > pl.col("output_tokens") + SUBSET_TOLERANCE_TOKENS,
        ))  # fmt: skip
    check_rows(usage, source, subsets, first_row=first_row, error=UsageContractError)
    return checked

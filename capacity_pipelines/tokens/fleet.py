"""Token cost over the warehouse's `llm_token_usage` rows.

The warehouse holds tokens per step by cluster, service, provider, model and agent (from
Prometheus); this maps them onto the usage contract, costs them with the price book and
describes the `llm_token_cost` table analysts query.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from capacity_pipelines.tokens.costing import cost_usage
from capacity_pipelines.tokens.prices import PriceBook
from capacity_pipelines.tokens.usage import validate_usage
from capacity_pipelines.warehouse import DerivedTable, table_exists

TOKEN_COST_TABLE = DerivedTable(
    name="llm_token_cost",
    description=(
        "LLM spend per step by service, provider, model and agent: the warehouse's token usage "
        "costed with the price valid at each step (assets/prices/llm). Rows of unpriced models "
        "have cost_usd NULL and unpriced = true, never a zero cost."
    ),
    columns={
        "cluster": "Kubernetes cluster of the calling service.",
        "service": "Service that made the LLM calls.",
        "provider": "LLM provider.",
        "model": "LLM model as requested.",
        "agent": "Agent name; empty when not reported.",
        "ts": "UTC end of the step the row summarises.",
        "input_tokens": "Input tokens in the step (cache reads and writes included).",
        "output_tokens": "Output tokens in the step (reasoning included).",
        "cache_read_input_tokens": "Input tokens read from the prompt cache (subset of input).",
        "cache_write_input_tokens": "Input tokens written to the prompt cache (subset of input).",
        "requests": "LLM calls in the step.",
        "cost_input_usd": "USD for uncached input tokens.",
        "cost_cache_read_usd": "USD for cache-read input tokens.",
        "cost_cache_write_usd": "USD for cache-write input tokens.",
        "cost_output_usd": "USD for output tokens (reasoning included).",
        "discount_pct": "Contract discount applied, in percent.",
        "cost_usd": "Total USD for the row after discount; NULL when unpriced.",
        "price_id": "Price-book price set used (provider/model/tier/context tier/effective date).",
        "unpriced": "True when no price was valid for the row's model, tier and time.",
    },
)


def cost_warehouse_usage(usage: pl.DataFrame, book: PriceBook, source: str) -> pl.DataFrame:
    """Cost `llm_token_usage` rows; returns the `llm_token_cost` columns.

    Prometheus gives no service tier, so every row is the standard tier; optional token columns
    missing from the catalog mapping count as zero.
    """
    frame = usage.with_columns(
        pl.col("ts").dt.replace_time_zone("UTC"),
        pl.when(pl.col("agent") == "").then(None).otherwise(pl.col("agent")).alias("agent"),
    )
    for column in ("cache_read_input_tokens", "cache_write_input_tokens", "requests"):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    costed = cost_usage(validate_usage(frame, source), book)
    return costed.with_columns(pl.col("agent").fill_null("")).select(list(TOKEN_COST_TABLE.columns))


def latest_costed_day_end(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """End (next midnight, UTC) of the last day with costed usage; None when there is none."""
    if not table_exists(con, TOKEN_COST_TABLE.name):
        return None
    (end,) = con.execute(
        f"SELECT date_trunc('day', max(ts) - INTERVAL 1 microsecond) + INTERVAL 1 day "
        f"FROM {TOKEN_COST_TABLE.name}"
    ).fetchone()
    return end

"""Token-cost assets: per-step LLM spend in the warehouse, and the token-cost report."""

from datetime import timedelta

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.defs.partitions import daily_partitions
from capacity_pipelines.defs.resources import ReportsResource, WarehouseResource
from capacity_pipelines.defs.warehouse.assets import WRITES_WAREHOUSE
from capacity_pipelines.ingest.tables import LLM_TOKEN_USAGE_TABLE
from capacity_pipelines.tokens.fleet import (
    TOKEN_COST_TABLE,
    cost_warehouse_usage,
    latest_costed_day_end,
)
from capacity_pipelines.tokens.prices import PriceBookError, load_price_book
from capacity_pipelines.tokens.report import build_report, engine_spend_forecast, write_report
from capacity_pipelines.tokens.usage import UsageContractError

REPORT_DAYS = 30  # the token-cost report looks back a month, like a monthly bill


@dg.asset(
    description="LLM spend per step: llm_token_usage costed with the dated price book, cache "
    "reads and writes billed as subsets of input (never twice), unknown models left unpriced.",
    group_name="tokens",
    kinds={"duckdb", "polars"},
    owners=["team:platform"],
    tags=WRITES_WAREHOUSE,
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[LLM_TOKEN_USAGE_TABLE],
    check_specs=[
        dg.AssetCheckSpec(
            "all_models_priced",
            asset="llm_token_cost",
            description="Every model with traffic has a price (WARN lists the unpriced ones).",
        )
    ],
)
def llm_token_cost(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    window = context.partition_time_window
    try:
        book = load_price_book()
        with warehouse.reader() as con:
            usage = wh.read_window(con, LLM_TOKEN_USAGE_TABLE, window.start, window.end)
        costed = cost_warehouse_usage(usage, book, "warehouse table llm_token_usage")
    except (PriceBookError, UsageContractError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    with warehouse.writer(f"llm_token_cost {window.start:%Y-%m-%d}..{window.end:%Y-%m-%d}") as con:
        rows = wh.replace_derived_window(con, TOKEN_COST_TABLE, window.start, window.end, costed)
    unpriced = costed.filter(pl.col("unpriced"))
    by_model = (
        costed.group_by("provider", "model")
        .agg(
            pl.col("cost_usd").sum().round(2), pl.col("input_tokens").sum(), pl.len().alias("rows")
        )
        .sort("cost_usd", descending=True, nulls_last=True)
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "cost_usd": float(costed["cost_usd"].sum() or 0.0),
            "unpriced_rows": unpriced.height,
            "by_model": dg.MetadataValue.md(markdown_table(by_model, rows=20)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="all_models_priced",
                passed=unpriced.height == 0,
                severity=dg.AssetCheckSeverity.WARN,
                description="all models priced"
                if unpriced.height == 0
                else "unpriced: " + ", ".join(sorted(set(unpriced["model"].to_list()))[:10]),
            )
        ],
    )


@dg.asset(
    description="Token-cost report over the 30 days up to the latest costed day: spend by day, "
    "agent, model and provider, cache hit ratio, 30-day spend forecast, unpriced usage and "
    "savings opportunities with their assumptions (CSV + JSON in reports/latest/token_cost/). "
    "Not partitioned: it always reports on the latest data in the snapshot.",
    group_name="reports",
    kinds={"duckdb", "polars"},
    owners=["team:platform"],
    deps=["warehouse_snapshot"],
)
def token_cost_report(
    warehouse: WarehouseResource, reports: ReportsResource
) -> dg.MaterializeResult:
    with wh.reader(warehouse.snapshot_path) as con:
        end = latest_costed_day_end(con)
        costed = (
            wh.read_window(con, TOKEN_COST_TABLE.name, end - timedelta(days=REPORT_DAYS), end)
            if end is not None
            else None
        )
    if costed is None or costed.height == 0:
        return dg.MaterializeResult(metadata={"rows": 0, "note": "no LLM usage in the window"})
    costed = costed.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    report = build_report(costed, load_price_book(), forecaster=engine_spend_forecast)
    out = reports.latest_dir / "token_cost"
    write_report(report, out)
    summary = report.summary
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(out)),
            "through": str(end),
            "cost_usd": float(summary["cost_usd"] or 0.0),
            "forecast_30d_usd_p50": float(summary["forecast_30d_usd_p50"] or 0.0),
            "cache_hit_ratio": float(summary["cache_hit_ratio"] or 0.0),
            "spend_by_agent": dg.MetadataValue.md(
                markdown_table(report.tables.get("spend_by_agent", pl.DataFrame()), rows=10)
            ),
            "savings": dg.MetadataValue.md(markdown_table(report.tables["savings"], rows=10)),
        }
    )

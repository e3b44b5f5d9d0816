"""Forecast assets: a week of hourly load ahead with upper quantiles, runway, backtests."""

import os
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.charts import forecast_chart, markdown_image
from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.defs.partitions import daily_partitions
from capacity_pipelines.defs.resources import WarehouseResource
from capacity_pipelines.forecasting.fleet import (
    BACKTEST_TABLE,
    FORECAST_TABLE,
    MIN_HISTORY_HOURS,
    RUNWAY_TABLE,
    accuracy_by_family,
    backtest_last_week,
    forecast_load,
    load_series,
)

# Settings both forecast assets share: they read the same series and write the warehouse.
FORECAST_ASSET = dict(
    group_name="forecast",
    kinds={"statsmodels", "lightgbm", "duckdb"},
    owners=["team:capacity"],
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
    deps=["container_usage", "service_traffic", "llm_token_usage"],
)
CHARTS = 3  # forecast plots attached to the materialisation: the series closest to capacity


def _workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _read_series(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    as_of = context.partition_time_window.end
    # Read, then let go of the lock: the engine runs for a while and must not block writers.
    with wh.connect(warehouse.path, wait_s=warehouse.lock_wait_s) as con:
        return as_of, load_series(con, as_of)


@dg.asset(
    description="Hourly forecasts a week ahead for every service's request rate, workload CPU "
    "and memory, and LLM tokens per agent, with calibrated p50-p95; next-week peaks, time to "
    "saturation against limits and runway (tables load_forecast, capacity_runway).",
    **FORECAST_ASSET,
    check_specs=[
        dg.AssetCheckSpec(
            "finite_non_negative",
            asset="load_forecasts",
            description="No NaN, infinite or negative forecast.",
            blocking=True,
        )
    ],
)
def load_forecasts(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    as_of, series = _read_series(context, warehouse)
    if series.history.height == 0:
        context.log.warning(
            f"no series has {MIN_HISTORY_HOURS} hours of history yet: nothing to forecast as of "
            f"{as_of:%Y-%m-%d}; the rest of the run goes on (see skipped_series)"
        )
    result = forecast_load(series, as_of, workers=_workers())
    quantiles = ["point", "p50", "p80", "p90", "p95"]
    bad = result.forecast.filter(
        pl.any_horizontal([~pl.col(q).is_finite() | (pl.col(q) < 0) for q in quantiles])
    ).height
    window = context.partition_time_window
    with wh.connect(warehouse.path, wait_s=warehouse.lock_wait_s) as con:
        rows = wh.replace_derived_window(
            con, FORECAST_TABLE, window.end, _just_after(window.end), result.forecast, "as_of"
        )
        wh.replace_derived_window(
            con, RUNWAY_TABLE, window.end, _just_after(window.end), result.runway, "as_of"
        )
    runway = result.runway.sort("runway_days", nulls_last=True)
    closest = runway.filter(pl.col("family").is_in(["workload_cpu", "workload_memory"]))
    charts = []
    for series_id in closest["series_id"].head(CHARTS):
        png = forecast_chart(
            series.history.filter(pl.col("series_id") == series_id),
            result.forecast.filter(pl.col("series_id") == series_id),
            series_id,
        )
        charts.append(markdown_image(png, series_id))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "series": result.runway.height,
            "skipped_series": dg.MetadataValue.md(markdown_table(series.skipped, rows=20)),
            "runway": dg.MetadataValue.md(
                markdown_table(
                    runway.select("series_id", "peak_p90", "capacity", "runway_days", "note"),
                    rows=15,
                )
            ),
            "forecast_charts": dg.MetadataValue.md("\n\n".join(charts) or "(no chart)"),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="finite_non_negative",
                passed=bad == 0,
                description=f"{bad} bad forecast rows",
                metadata={"bad_rows": bad},
            )
        ],
    )


def _just_after(moment: datetime) -> datetime:
    """End of a one-instant window: the as-of day's rows are exactly those at `moment`."""
    return moment + timedelta(microseconds=1)


@dg.asset(
    description="The engine against seasonal naive on the last week of history (trained on "
    "the weeks before): MASE and p90 coverage per series and family (table forecast_backtest). "
    "WARNs when a family does worse than seasonal naive.",
    **FORECAST_ASSET,
    check_specs=[
        dg.AssetCheckSpec(
            "beats_seasonal_naive",
            asset="forecast_backtests",
            description="Every family's mean MASE is below seasonal naive's.",
        )
    ],
)
def forecast_backtests(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    as_of, series = _read_series(context, warehouse)
    backtest = backtest_last_week(series, as_of, workers=_workers())
    with wh.connect(warehouse.path, wait_s=warehouse.lock_wait_s) as con:
        rows = wh.replace_derived_window(
            con, BACKTEST_TABLE, as_of, _just_after(as_of), backtest, "as_of"
        )
    accuracy = accuracy_by_family(backtest)
    regressed = accuracy.filter(pl.col("regressed"))["family"].to_list()
    metadata: dict = {
        "dagster/row_count": rows,
        "accuracy": dg.MetadataValue.md(markdown_table(accuracy, rows=20)),
    }
    for row in accuracy.iter_rows(named=True):
        metadata[f"mase/{row['family']}"] = float(row["mase_engine"])
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="beats_seasonal_naive",
                passed=not regressed and accuracy.height > 0,
                severity=dg.AssetCheckSeverity.WARN,
                description="regressed: " + ", ".join(regressed)
                if regressed
                else f"{accuracy.height} families better than seasonal naive",
            )
        ],
    )

"""Forecast assets: a week of hourly load ahead with upper quantiles, runway, backtests.

Both are "as of the end of a day": a run computes every day it covers (`as_of_days`), reading
the warehouse, forecasting with no lock held, then writing that day's rows in one short session.
"""

from datetime import datetime

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.charts import forecast_chart, markdown_image
from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.defs.checks import WARN, blocking_failures, check, refuse
from capacity_pipelines.defs.partitions import as_of_days, daily_partitions
from capacity_pipelines.defs.resources import ComputeResource, WarehouseResource
from capacity_pipelines.defs.warehouse.assets import WRITES_WAREHOUSE
from capacity_pipelines.forecasting.fleet import (
    BACKTEST_TABLE,
    FORECAST_TABLE,
    MIN_HISTORY_HOURS,
    RUNWAY_TABLE,
    accuracy_by_family,
    backtest_last_week,
    bad_forecast_rows,
    forecast_load,
    load_series,
)
from capacity_pipelines.ingest.tables import (
    CONTAINER_USAGE_TABLE,
    LLM_TOKEN_USAGE_TABLE,
    SERVICE_TRAFFIC_TABLE,
)

# Settings both forecast assets share: they read the same series and write the warehouse.
FORECAST_ASSET = dict(
    group_name="forecast",
    kinds={"statsmodels", "lightgbm", "duckdb"},
    owners=["team:capacity"],
    tags=WRITES_WAREHOUSE,
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[CONTAINER_USAGE_TABLE, SERVICE_TRAFFIC_TABLE, LLM_TOKEN_USAGE_TABLE],
)
CHARTS = 3  # forecast plots attached to the materialisation: the series closest to capacity


def _read_series(warehouse: WarehouseResource, as_of: datetime):
    with warehouse.reader() as con:
        return load_series(con, as_of)


def _charts(series, result) -> str:
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
    return "\n\n".join(charts) or "(no chart)"


@dg.asset(
    description="Hourly forecasts a week ahead for every service's request rate, workload CPU "
    "and memory, and LLM tokens per agent, with calibrated p50-p95; next-week peaks, time to "
    "saturation against limits and runway (tables load_forecast, capacity_runway). One set per "
    "as-of day: a run over several days computes each of them.",
    **FORECAST_ASSET,
    check_specs=[
        dg.AssetCheckSpec(
            "finite_non_negative",
            asset="load_forecasts",
            description="No NaN, infinite or negative forecast (checked before writing).",
            blocking=True,
        )
    ],
)
def load_forecasts(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, compute: ComputeResource
):
    for as_of in as_of_days(context):
        series = _read_series(warehouse, as_of)
        if series.history.height == 0:
            context.log.warning(
                f"no series has {MIN_HISTORY_HOURS} hours of history yet: nothing to forecast "
                f"as of {as_of:%Y-%m-%d}; the rest of the run goes on (see skipped_series)"
            )
        result = forecast_load(series, as_of, workers=compute.worker_count())
        bad = bad_forecast_rows(result.forecast)
        checks = [
            check(
                "finite_non_negative",
                bad == 0,
                f"{bad} bad forecast rows as of {as_of:%Y-%m-%d}",
                metadata={"bad_rows": bad},
            )
        ]
        if blocking_failures(checks):
            yield from refuse(checks, f"load forecasts as of {as_of:%Y-%m-%d}")
        with warehouse.writer(f"load_forecasts as of {as_of:%Y-%m-%d}") as con:
            rows = wh.replace_as_of(con, FORECAST_TABLE, as_of, result.forecast)
            wh.replace_as_of(con, RUNWAY_TABLE, as_of, result.runway)
    runway = result.runway.sort("runway_days", nulls_last=True)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "as_of": str(as_of),
            "days_computed": len(context.partition_keys),
            "series": result.runway.height,
            "skipped_series": dg.MetadataValue.md(markdown_table(series.skipped, rows=20)),
            "runway": dg.MetadataValue.md(
                markdown_table(
                    runway.select("series_id", "peak_p90", "capacity", "runway_days", "note"),
                    rows=15,
                )
            ),
            "forecast_charts": dg.MetadataValue.md(_charts(series, result)),
        },
        check_results=checks,
    )


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
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, compute: ComputeResource
) -> dg.MaterializeResult:
    for as_of in as_of_days(context):
        backtest = backtest_last_week(
            _read_series(warehouse, as_of), as_of, workers=compute.worker_count()
        )
        with warehouse.writer(f"forecast_backtests as of {as_of:%Y-%m-%d}") as con:
            rows = wh.replace_as_of(con, BACKTEST_TABLE, as_of, backtest)
    accuracy = accuracy_by_family(backtest)
    regressed = accuracy.filter(pl.col("regressed"))["family"].to_list()
    metadata: dict = {
        "dagster/row_count": rows,
        "as_of": str(as_of),
        "days_computed": len(context.partition_keys),
        "accuracy": dg.MetadataValue.md(markdown_table(accuracy, rows=20)),
    }
    for row in accuracy.iter_rows(named=True):
        metadata[f"mase/{row['family']}"] = float(row["mase_engine"])
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            check(
                "beats_seasonal_naive",
                not regressed and accuracy.height > 0,
                "regressed: " + ", ".join(regressed)
                if regressed
                else f"{accuracy.height} families better than seasonal naive",
                WARN,
            )
        ],
    )

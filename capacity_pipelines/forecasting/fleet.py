"""Load series from the warehouse for the forecasting engine, and what comes back out of it.

Capacity questions are asked per service and per workload, hourly, over weeks: this module
turns the warehouse's 5-minute per-pod rows into hourly series with their capacity, runs the
engine, derives peaks and runway, and backtests the engine against seasonal naive on the last
week (the bar it must clear), so the Dagster assets only call and attach metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl

from capacity_pipelines.common.freshness import no_data_since, stale_before
from capacity_pipelines.forecasting.capacity import (
    clipping_notes,
    next_week_peak,
    time_to_saturation,
)
from capacity_pipelines.forecasting.engine import CapacityForecaster, EngineSettings
from capacity_pipelines.forecasting.metrics import mase
from capacity_pipelines.forecasting.models import SeasonalNaive
from capacity_pipelines.warehouse import DerivedTable

HORIZON_HOURS = 168  # a week ahead: the weekly capacity report's horizon
HISTORY_DAYS = 56  # 8 weeks: enough for weekly seasonality, short enough to follow change
MIN_HISTORY_HOURS = 72  # below this a series is listed as too short, not forecast
MAX_MISSING_SHARE = 0.10  # the engine tolerates up to 10 % missing points
SEASON_HOURS = 24  # MASE scale: in-sample seasonal naive with m = 24 on hourly data

# Hourly series per family. `ts` is the start of the hour; a 5-minute row stamped at the end of
# its step belongs to the hour that step lies in, hence the 1-microsecond shift.
_HOUR = "date_trunc('hour', ts - INTERVAL 1 microsecond)"
FAMILY_SQL = {
    "service_request_rate": f"""
        SELECT 'service_request_rate:' || namespace || '/' || service AS series_id,
               {_HOUR} AS ts, avg(request_rate_rps) AS value, NULL::DOUBLE AS capacity,
               NULL::DOUBLE AS throttled
        FROM service_traffic WHERE ts > ? AND ts <= ? GROUP BY ALL""",
    # A request is not a ceiling: CPU and memory have a capacity only where every container
    # of the step has a limit (NULL otherwise: no runway). `throttled` is the worst container's
    # share of throttled CFS periods, the only evidence that CPU use sits at its limit.
    "workload_cpu": f"""
        WITH per_step AS (
            SELECT namespace, workload, ts, sum(cpu_cores) AS cores,
                   CASE WHEN bool_and(cpu_limit_cores IS NOT NULL)
                        THEN sum(cpu_limit_cores) END AS capacity,
                   max(cpu_throttled_ratio) AS throttled
            FROM container_usage WHERE ts > ? AND ts <= ? GROUP BY ALL)
        SELECT 'workload_cpu:' || namespace || '/' || workload AS series_id,
               {_HOUR} AS ts, avg(cores) AS value, max(capacity) AS capacity,
               avg(throttled) AS throttled
        FROM per_step GROUP BY ALL""",
    "workload_memory": f"""
        WITH per_step AS (
            SELECT namespace, workload, ts, sum(memory_working_set_bytes) AS bytes,
                   CASE WHEN bool_and(memory_limit_bytes IS NOT NULL)
                        THEN sum(memory_limit_bytes) END AS capacity
            FROM container_usage WHERE ts > ? AND ts <= ? GROUP BY ALL)
        SELECT 'workload_memory:' || namespace || '/' || workload AS series_id,
               {_HOUR} AS ts, max(bytes) AS value, max(capacity) AS capacity,
               NULL::DOUBLE AS throttled
        FROM per_step GROUP BY ALL""",
    "llm_tokens": f"""
        SELECT 'llm_tokens:' || provider || '/' || model || '/' || agent AS series_id,
               {_HOUR} AS ts, sum(input_tokens + output_tokens) AS value,
               NULL::DOUBLE AS capacity, NULL::DOUBLE AS throttled
        FROM llm_token_usage WHERE ts > ? AND ts <= ? GROUP BY ALL""",
}

FORECAST_TABLE = DerivedTable(
    name="load_forecast",
    description="Hourly load forecasts a week ahead per service, workload and LLM agent, with "
    "calibrated upper quantiles; one set per as-of day.",
    columns={
        "as_of": "UTC end of the history the forecast was made from.",
        "series_id": "family:entity, e.g. workload_cpu:agents/planner.",
        "family": "service_request_rate, workload_cpu, workload_memory or llm_tokens.",
        "ts": "UTC start of the forecast hour.",
        "point": "Point forecast (the combination's mean).",
        "p50": "Median forecast.",
        "p80": "80th percentile (upper quantile).",
        "p90": "90th percentile (upper quantile).",
        "p95": "95th percentile (upper quantile).",
        "model": "Model or combination that produced the forecast.",
        "interval_method": "How the quantiles were calibrated.",
    },
)
RUNWAY_TABLE = DerivedTable(
    name="capacity_runway",
    description="Per series and as-of day: next-week peak (p50, p90), the capacity it is "
    "measured against, when p90 first reaches it and the runway in days, and a note when "
    "usage sits at its limit (then usage understates demand).",
    columns={
        "as_of": "UTC end of the history the forecast was made from.",
        "series_id": "family:entity.",
        "family": "Series family.",
        "peak_p50": "Highest hourly p50 in the next 7 days.",
        "peak_p90": "Highest hourly p90 in the next 7 days.",
        "capacity": "Sum of limits at the end of the history (NULL when a container has none: "
        "a request is not a ceiling, so there is no runway).",
        "saturation_ts": "First forecast hour whose p90 reaches the capacity (NULL: not within "
        "the horizon).",
        "runway_days": "Days from as_of to saturation_ts (NULL: longer than the horizon).",
        "clipped": "True when usage sits at its limit often: demand is higher than usage shows.",
        "note": "Demand-vs-utilisation note.",
    },
)
BACKTEST_TABLE = DerivedTable(
    name="forecast_backtest",
    description="The engine vs seasonal naive on the last week before each as-of day "
    "(trained on the weeks before it): MASE per series, the bar the engine must clear.",
    columns={
        "as_of": "UTC end of the history.",
        "series_id": "family:entity.",
        "family": "Series family.",
        "mase_engine": "MASE of the engine's point forecast (scale: seasonal naive, m = 24).",
        "mase_seasonal_naive": "MASE of the daily seasonal-naive forecast.",
        "coverage_p90": "Share of the week's actuals at or below the engine's p90.",
    },
)


@dataclass(frozen=True)
class WarehouseSeries:
    """Hourly history for the engine, the capacity of each series, and the ones left out."""

    history: pl.DataFrame  # series_id, ts, value
    capacity: pl.DataFrame  # series_id, capacity (latest; only series with a limit)
    skipped: pl.DataFrame  # series_id, reason
    # series_id, ts, throttled: hourly share of throttled CFS periods of workload CPU series
    throttled: pl.DataFrame | None = None


def _family_sql(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The family queries; a catalog without the throttling column reads it as unknown."""
    columns = {
        row[0]
        for row in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'container_usage' "
            "AND schema_name = 'main' AND database_name = current_database()"
        ).fetchall()
    }
    queries = list(FAMILY_SQL.values())
    if "cpu_throttled_ratio" not in columns:
        queries = [q.replace("max(cpu_throttled_ratio)", "NULL::DOUBLE") for q in queries]
    return queries


def load_series(
    con: duckdb.DuckDBPyConnection, as_of: datetime, history_days: int = HISTORY_DAYS
) -> WarehouseSeries:
    """Hourly series of every family over `(as_of - history_days, as_of]`.

    A series whose last point is older than the freshness window is left out with the reason
    "no data since ...": it stopped reporting, and a forecast from its old samples would give a
    runway (and actions) in the past.
    """
    start = as_of - timedelta(days=history_days)
    args = [start.replace(tzinfo=None), as_of.replace(tzinfo=None)]
    frames = [con.execute(sql, args).pl() for sql in _family_sql(con)]
    schema = {
        "series_id": pl.Utf8,
        "ts": pl.Datetime("us"),
        "value": pl.Float64,
        "capacity": pl.Float64,
        "throttled": pl.Float64,
    }
    hourly = pl.concat([f.cast(schema) for f in frames]) if frames else pl.DataFrame(schema=schema)
    hourly = hourly.filter(pl.col("value").is_not_null() & pl.col("value").is_finite())
    stats = hourly.group_by("series_id").agg(
        pl.len().alias("points"),
        ((pl.col("ts").max() - pl.col("ts").min()).dt.total_hours() + 1).alias("span"),
        pl.col("capacity").sort_by("ts").last().alias("capacity"),
        pl.col("ts").max().alias("last_ts"),
    )
    # the last hourly point starts an hour before the last 5-minute sample it holds
    stale = stats.filter(
        pl.col("last_ts") + timedelta(hours=1) < stale_before(as_of)
    ).with_columns(
        pl.col("last_ts")
        .map_elements(lambda ts: no_data_since(ts + timedelta(hours=1)), return_dtype=pl.Utf8)
        .alias("reason")
    )
    fresh = stats.join(stale, on="series_id", how="anti")
    too_short = fresh.filter(pl.col("points") < MIN_HISTORY_HOURS).with_columns(
        pl.format("{} hours of history (< {})", "points", pl.lit(MIN_HISTORY_HOURS)).alias("reason")
    )
    gappy = fresh.filter(
        (pl.col("points") >= MIN_HISTORY_HOURS)
        & (pl.col("points") < (1 - MAX_MISSING_SHARE) * pl.col("span"))
    ).with_columns(pl.format("{} of {} hours present", "points", "span").alias("reason"))
    skipped = (
        pl.concat([s.select("series_id", "reason") for s in (stale, too_short, gappy)])
        .sort("series_id")
    )
    kept = stats.join(skipped, on="series_id", how="anti")
    kept_hours = hourly.join(kept.select("series_id"), on="series_id").sort("series_id", "ts")
    history = kept_hours.select("series_id", "ts", "value")
    throttled = kept_hours.filter(pl.col("throttled").is_not_null()).select(
        "series_id", "ts", "throttled"
    )
    capacity = kept.select("series_id", "capacity").filter(pl.col("capacity").is_not_null())
    return WarehouseSeries(
        history=history, capacity=capacity, skipped=skipped, throttled=throttled
    )


# Per family: what the series measures, its axis unit and the divisor into that unit.
SERIES_UNITS = {
    "workload_cpu": ("CPU", "cores", 1.0),
    "workload_memory": ("memory", "GiB", float(2**30)),
    "service_request_rate": ("request rate", "requests/s", 1.0),
    "llm_tokens": ("LLM tokens", "million tokens/h", 1e6),
}


def chart_labels(series_id: str, days_shown: int = 14) -> tuple[str, str, float]:
    """(title, axis unit, divisor) of a series' forecast chart, for people: `agents/summarizer
    memory: last 14 days and next 7 (p50–p95 band)` in GiB, not `workload_memory:...` in 1e9."""
    family, _, entity = series_id.partition(":")
    label, unit, scale = SERIES_UNITS.get(family, (family, "", 1.0))
    title = f"{entity} {label}: last {days_shown} days and next 7 (p50–p95 band)"
    return title, unit, scale


def family_of(series_id: pl.Expr) -> pl.Expr:
    """The family prefix of a series id."""
    return series_id.str.split(":").list.first()


# Workload series without a limit on every container: what the runway table says instead.
NO_LIMIT_NOTES = {
    "workload_cpu": "no runway: not every container has a CPU limit (a request is not a "
    "ceiling; CPU beyond it is borrowed from the node)",
    "workload_memory": "no runway: not every container has a memory limit (a request is not a "
    "ceiling; memory beyond it is taken from the node)",
}


@dataclass(frozen=True)
class LoadForecast:
    forecast: pl.DataFrame
    runway: pl.DataFrame


_QUANTILES = ("point", "p50", "p80", "p90", "p95")
# Column types of the two tables, for a day on which nothing can be forecast yet.
FORECAST_SCHEMA = {
    "as_of": pl.Datetime("us"),
    "series_id": pl.Utf8,
    "family": pl.Utf8,
    "ts": pl.Datetime("us"),
    **dict.fromkeys(_QUANTILES, pl.Float64),
    "model": pl.Utf8,
    "interval_method": pl.Utf8,
}
RUNWAY_SCHEMA = {
    "as_of": pl.Datetime("us"),
    "series_id": pl.Utf8,
    "family": pl.Utf8,
    **dict.fromkeys(("peak_p50", "peak_p90", "capacity"), pl.Float64),
    "saturation_ts": pl.Datetime("us"),
    "runway_days": pl.Float64,
    "clipped": pl.Boolean,
    "note": pl.Utf8,
}


def forecast_load(
    series: WarehouseSeries, as_of: datetime, horizon: int = HORIZON_HOURS, workers: int = 2
) -> LoadForecast:
    """Forecast every series `horizon` hours ahead; peaks, saturation against capacity, notes.

    With no series long enough yet (a new install's first days), both frames are empty: the
    day's run goes on, and the rest of the graph works with what there is.
    """
    if series.history.height == 0:
        return LoadForecast(
            forecast=pl.DataFrame(schema=FORECAST_SCHEMA), runway=pl.DataFrame(schema=RUNWAY_SCHEMA)
        )
    engine = CapacityForecaster(EngineSettings(workers=workers)).fit(series.history)
    forecast = engine.predict(horizon)
    as_of_naive = as_of.replace(tzinfo=None)
    peaks = next_week_peak(forecast)
    saturation = time_to_saturation(forecast, series.capacity, "p90", now=as_of_naive)
    limits = series.capacity.rename({"capacity": "limit"})
    notes = clipping_notes(
        series.history.join(limits, on="series_id"), limits, throttled=series.throttled
    )
    family = family_of(pl.col("series_id"))
    runway = (
        peaks.join(saturation.drop("quantile", "saturates"), on="series_id", how="left")
        .join(notes.select("series_id", "clipped", "note"), on="series_id", how="left")
        .with_columns(
            pl.lit(as_of_naive).alias("as_of"),
            family.alias("family"),
            pl.col("clipped").fill_null(False),
            pl.when(pl.col("capacity").is_null() & family.is_in(list(NO_LIMIT_NOTES)))
            .then(family.replace_strict(NO_LIMIT_NOTES, default=None))
            .otherwise(pl.col("note").fill_null(""))
            .alias("note"),
        )
    )
    forecast = forecast.with_columns(
        pl.lit(as_of_naive).alias("as_of"), family_of(pl.col("series_id")).alias("family")
    )
    return LoadForecast(forecast=forecast, runway=runway)


def bad_forecast_rows(forecast: pl.DataFrame) -> int:
    """Rows with a NaN, infinite or negative point or quantile: none may reach the warehouse."""
    quantiles = ["point", "p50", "p80", "p90", "p95"]
    return forecast.filter(
        pl.any_horizontal([~pl.col(q).is_finite() | (pl.col(q) < 0) for q in quantiles])
    ).height


def backtest_last_week(
    series: WarehouseSeries, as_of: datetime, horizon: int = HORIZON_HOURS, workers: int = 2
) -> pl.DataFrame:
    """Train on all but the last `horizon` hours, score the engine and seasonal naive on them.

    Series without two weeks of history before the held-out week are left out: there is
    nothing honest to score them on.
    """
    history = series.history
    cut = history.group_by("series_id").agg(pl.col("ts").max().alias("last"))
    history = history.join(cut, on="series_id").with_columns(
        (pl.col("ts") > pl.col("last") - pl.duration(hours=horizon)).alias("held_out")
    )
    train = history.filter(~pl.col("held_out"))
    long_enough = (
        train.group_by("series_id").len().filter(pl.col("len") >= 2 * HORIZON_HOURS)["series_id"]
    )
    train = train.filter(pl.col("series_id").is_in(long_enough.implode()))
    schema = {c: pl.Float64 for c in ("mase_engine", "mase_seasonal_naive", "coverage_p90")}
    if train.height == 0:
        # Same columns as a scored week, so the table write and the accuracy check still work.
        return pl.DataFrame(
            schema={"as_of": pl.Datetime("us"), "series_id": pl.Utf8, "family": pl.Utf8, **schema}
        )
    engine = CapacityForecaster(EngineSettings(workers=workers)).fit(
        train.select("series_id", "ts", "value")
    )
    forecast = engine.predict(horizon)
    actual = history.filter(pl.col("held_out")).select("series_id", "ts", "value")
    rows = []
    naive = SeasonalNaive("day")
    for (series_id,), group in forecast.group_by("series_id", maintain_order=True):
        insample = train.filter(pl.col("series_id") == series_id)["value"].to_numpy()
        joined = group.join(
            actual.filter(pl.col("series_id") == series_id), on=["series_id", "ts"], how="left"
        )
        truth = joined["value"].to_numpy().astype(float)
        snaive = naive.forecast(insample, (SEASON_HOURS,), len(truth))
        observed = np.isfinite(truth)
        rows.append(
            {
                "series_id": series_id,
                "mase_engine": mase(truth, joined["point"].to_numpy(), insample, SEASON_HOURS),
                "mase_seasonal_naive": mase(truth, snaive, insample, SEASON_HOURS),
                "coverage_p90": float(
                    (truth[observed] <= joined["p90"].to_numpy()[observed]).mean()
                )
                if observed.any()
                else None,
            }
        )
    return pl.DataFrame(rows, schema={"series_id": pl.Utf8, **schema}).with_columns(
        pl.lit(as_of.replace(tzinfo=None)).alias("as_of"),
        family_of(pl.col("series_id")).alias("family"),
    )


def accuracy_by_family(backtest: pl.DataFrame) -> pl.DataFrame:
    """Mean MASE per family for the engine and seasonal naive, and whether the engine regressed."""
    return (
        backtest.group_by("family")
        .agg(
            pl.len().alias("series"),
            pl.col("mase_engine").mean().round(3),
            pl.col("mase_seasonal_naive").mean().round(3),
            (pl.col("mase_engine") < pl.col("mase_seasonal_naive"))
            .mean()
            .round(3)
            .alias("share_better_than_naive"),
            pl.col("coverage_p90").mean().round(3),
        )
        .with_columns((pl.col("mase_engine") > pl.col("mase_seasonal_naive")).alias("regressed"))
        .sort("family")
    )

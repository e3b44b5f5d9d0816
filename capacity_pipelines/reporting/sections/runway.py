"""The capacity runway section: how long each workload's limits last, with charts and accuracy.

Its own module because it is the report's largest section and the only one that draws forecast
charts; `runway_risks` is also what the summary compares week over week.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from capacity_pipelines.common.charts import forecast_chart
from capacity_pipelines.forecasting.fleet import (
    BACKTEST_TABLE,
    FORECAST_TABLE,
    RUNWAY_TABLE,
    accuracy_by_family,
    chart_labels,
)
from capacity_pipelines.reporting.model import Chart, ReportTable, Section
from capacity_pipelines.reporting.sections.reads import ReportWindow, Unavailable
from capacity_pipelines.reporting.sections.text import (
    FAMILY_NAMES,
    RUNWAY_AT_RISK_DAYS,
    entity,
    in_unit,
    percent,
    runway_text,
    text_table,
    utc_day,
)

RUNWAY_CHARTS = 4  # forecast charts for the series closest to their capacity
CHART_HISTORY_DAYS = 14  # the charts show two weeks of history before the forecast


def runway_risks(window: ReportWindow, as_of: datetime | None) -> dict[str, str]:
    """Entities whose forecast p90 reaches capacity inside the horizon, with the reason."""
    runway = window.rows_at(RUNWAY_TABLE.name, as_of)
    if runway.height == 0:
        return {}
    risky = runway.filter(
        pl.col("runway_days").is_not_null() & (pl.col("runway_days") <= RUNWAY_AT_RISK_DAYS)
    ).sort("runway_days")
    return {
        entity(row["series_id"]): f"{FAMILY_NAMES.get(row['family'], row['family'])} runway "
        f"{runway_text(row['runway_days'])}"
        for row in risky.iter_rows(named=True)
    }


def runway_section(window: ReportWindow) -> Section:
    """Runway per service against its limits, with forecast charts and the backtest accuracy."""
    section = Section("runway", "Capacity runway")
    as_of = window.week_as_of(RUNWAY_TABLE.name)
    every = window.rows_at(RUNWAY_TABLE.name, as_of)
    runway = every.filter(pl.col("capacity").is_not_null())
    unlimited = every.filter(
        pl.col("capacity").is_null() & pl.col("family").is_in(["workload_cpu", "workload_memory"])
    ).sort("series_id")
    if runway.height == 0:
        raise Unavailable(f"no series with a capacity in {RUNWAY_TABLE.name} at {utc_day(as_of)}")
    runway = runway.with_columns(
        (pl.col("peak_p90") / pl.col("capacity")).alias("utilisation_p90")
    ).sort(["runway_days", "utilisation_p90"], descending=[False, True], nulls_last=True)
    display = text_table(
        {
            "workload": [entity(s) for s in runway["series_id"]],
            "resource": [FAMILY_NAMES.get(f, f) for f in runway["family"]],
            "next-week peak p50": [
                in_unit(f, v) for f, v in zip(runway["family"], runway["peak_p50"], strict=True)
            ],
            "peak p90": [
                in_unit(f, v) for f, v in zip(runway["family"], runway["peak_p90"], strict=True)
            ],
            "capacity": [
                in_unit(f, v) for f, v in zip(runway["family"], runway["capacity"], strict=True)
            ],
            "p90 / capacity": [percent(v) for v in runway["utilisation_p90"]],
            "runway": [runway_text(v) for v in runway["runway_days"]],
            "saturates at": [
                "" if v is None else utc_day(v) for v in runway["saturation_ts"].to_list()
            ],
            "note": [v or "" for v in runway["note"].to_list()],
        }
    )
    section.tables.append(ReportTable("capacity_runway", "Runway against limits", display, runway))
    risks = runway_risks(window, as_of)
    section.facts = {"as_of": as_of, "at_risk": risks}
    section.bullets.append(
        f"Forecast made from history up to {utc_day(as_of)}; runway = days until the hourly p90 "
        f"forecast first reaches the sum of limits, within {RUNWAY_AT_RISK_DAYS:.0f} days."
    )
    if unlimited.height:
        section.bullets.append(
            f"No runway for {unlimited.height} series without a limit on every container (a "
            "request is not a ceiling; use beyond it is borrowed from the node, and rightsizing "
            "raises requests use exceeds): "
            + ", ".join(
                f"{entity(s)} {FAMILY_NAMES.get(f, f)}"
                for s, f in zip(unlimited["series_id"], unlimited["family"], strict=True)
            )
            + "."
        )
    section.bullets.append(
        f"{len(risks)} of {runway.height} series reach capacity within the week: "
        + (", ".join(f"{k} ({v})" for k, v in risks.items()) if risks else "none")
        + "."
    )
    section.charts.extend(_runway_charts(window, as_of, runway, section))
    _backtest_bullets(window, section)
    return section


def _runway_charts(
    window: ReportWindow, as_of: datetime, runway: pl.DataFrame, section: Section
) -> list[Chart]:
    """Forecast charts of the series closest to capacity; a bullet says why when there are none."""
    if window.table_status(FORECAST_TABLE.name):
        section.bullets.append(f"No forecast charts: {window.table_status(FORECAST_TABLE.name)}.")
        return []
    chosen = runway["series_id"].head(RUNWAY_CHARTS).to_list()
    forecast = window.forecast_rows(as_of, chosen)
    try:
        history = window.series_history(as_of, CHART_HISTORY_DAYS)
    except duckdb.Error as error:
        section.bullets.append(f"No history for the charts: {str(error).splitlines()[0]}")
        return []
    charts = []
    for series_id in chosen:
        future = forecast.filter(pl.col("series_id") == series_id)
        past = history.filter(pl.col("series_id") == series_id)
        if future.height and past.height:
            title, unit, scale = chart_labels(series_id, CHART_HISTORY_DAYS)
            png = forecast_chart(past, future, title, unit=unit, scale=scale)
            charts.append(Chart(title, png=png))
    return charts


def _backtest_bullets(window: ReportWindow, section: Section) -> None:
    """How accurate the forecasts behind the runway were, against the seasonal-naive baseline."""
    as_of = window.as_of(BACKTEST_TABLE.name)
    if as_of is None:
        section.bullets.append("Forecast accuracy: no backtest yet.")
        return
    accuracy = accuracy_by_family(window.rows_at(BACKTEST_TABLE.name, as_of))
    parts = [
        f"{FAMILY_NAMES.get(r['family'], r['family'])} MASE {r['mase_engine']:.2f} vs "
        f"{r['mase_seasonal_naive']:.2f} naive, p90 covers {percent(r['coverage_p90'])}"
        for r in accuracy.iter_rows(named=True)
    ]
    section.bullets.append(
        "Forecast accuracy on the last week (lower MASE is better): " + "; ".join(parts) + "."
    )
    section.facts["mase_by_family"] = {
        r["family"]: r["mase_engine"] for r in accuracy.iter_rows(named=True)
    }

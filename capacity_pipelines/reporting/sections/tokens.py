"""The LLM token cost section: this week's spend by agent and model, its trend and forecast.

One module per section; the spend totals are also the summary's LLM figures. The spend
forecaster is injected through the window (the asset passes the forecasting engine).
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from capacity_pipelines.common.charts import forecast_chart
from capacity_pipelines.common.formatting import usd, usd_per_month
from capacity_pipelines.reporting.model import Chart, ReportTable, Section
from capacity_pipelines.reporting.sections.reads import ReportWindow, Unavailable
from capacity_pipelines.reporting.sections.text import change, percent, text_table
from capacity_pipelines.reporting.svg import bar_chart
from capacity_pipelines.tokens.fleet import TOKEN_COST_TABLE
from capacity_pipelines.tokens.report import daily_spend_history, spend_by

TOKEN_TREND_DAYS = 28  # four weekly cycles of daily spend behind the trend and forecast
TOKEN_FORECAST_DAYS = 14


def token_section(window: ReportWindow) -> Section:
    """LLM spend by agent and model this week, its daily trend and the forecast."""
    section = Section("tokens", "LLM token cost")
    window.require(TOKEN_COST_TABLE.name)
    week = window.token_costs(window.start, window.end)
    if week.height == 0:
        raise Unavailable(f"no {TOKEN_COST_TABLE.name} rows in {window.week.label}")
    previous = window.token_costs(window.start - timedelta(days=7), window.start)
    spend = float(week["cost_usd"].sum() or 0.0)
    spend_before = float(previous["cost_usd"].sum() or 0.0) if previous.height else None
    unpriced = int(week["unpriced"].sum() or 0)
    section.facts = {"llm_spend_usd": spend, "llm_spend_previous_usd": spend_before}
    section.bullets.append(
        f"LLM spend {usd(spend)} this week"
        + (
            f", {change(spend, spend_before)} vs last week ({usd(spend_before)})"
            if spend_before
            else ""
        )
        + f"; {unpriced:,} unpriced rows (not counted as $0: see the price book)."
    )
    for dimension in ("agent", "model"):
        table = _spend_table(week, previous, dimension, spend)
        section.tables.append(
            ReportTable(f"token_cost_by_{dimension}", f"Spend by {dimension}", *table)
        )
    by_agent = section.tables[0].raw
    section.charts.append(
        Chart(
            "Spend by agent this week (USD)",
            svg=bar_chart(
                [a or "(no agent)" for a in by_agent["agent"].to_list()],
                by_agent["cost_usd"].fill_null(0.0).to_list(),
                usd,
                "Spend by agent this week",
            ),
        )
    )
    _spend_trend(window, section)
    return section


def _spend_table(
    week: pl.DataFrame, previous: pl.DataFrame, dimension: str, total: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Spend by `dimension` (agent or model) this week beside last week's: display and raw."""
    now = spend_by(week, dimension)
    before = spend_by(previous, dimension) if previous.height else pl.DataFrame()
    before_map = (
        dict(zip(before[dimension].to_list(), before["cost_usd"].to_list(), strict=True))
        if before.height
        else {}
    )
    raw = now.with_columns(
        pl.col(dimension)
        .replace_strict(before_map, default=None, return_dtype=pl.Float64)
        .alias("cost_previous_week_usd")
    )
    display = text_table(
        {
            dimension: [v or "(none)" for v in raw[dimension].to_list()],
            "spend": [usd(v) for v in raw["cost_usd"]],
            "share": [percent(v) for v in raw["share"]],
            "vs last week": [
                change(a, b)
                for a, b in zip(raw["cost_usd"], raw["cost_previous_week_usd"], strict=True)
            ],
            "input tokens": [f"{v / 1e6:,.1f}M" for v in raw["input_tokens"].fill_null(0)],
            "output tokens": [f"{v / 1e6:,.1f}M" for v in raw["output_tokens"].fill_null(0)],
        }
    )
    return display, raw


def _spend_trend(window: ReportWindow, section: Section) -> None:
    """Daily spend of the last weeks, its forecast and a chart; a bullet when too short."""
    history_rows = window.token_costs(window.end - timedelta(days=TOKEN_TREND_DAYS), window.end)
    history, method = daily_spend_history(history_rows)
    if history.height < 2:
        section.bullets.append(f"No spend forecast: {method}.")
        return
    forecast = window.forecaster(history, TOKEN_FORECAST_DAYS)
    week_ahead = forecast.sort("ts").head(7)
    p50, p90 = float(week_ahead["p50"].sum()), float(week_ahead["p90"].sum())
    model = str(forecast["model"][0]) if "model" in forecast.columns and forecast.height else ""
    section.facts["llm_forecast_next_week_p50_usd"] = p50
    section.facts["llm_forecast_next_week_p90_usd"] = p90
    section.bullets.append(
        f"Next 7 days forecast: {usd(p50)} (p50), {usd(p90)} (p90), from {method} "
        f"(model: {model or 'n/a'}). Monthly run rate: {usd_per_month(p50 * 30 / 7)}."
    )
    title = f"LLM spend per day: last {TOKEN_TREND_DAYS} days and next {TOKEN_FORECAST_DAYS}"
    section.charts.append(Chart(title, png=forecast_chart(history, forecast, title)))

"""Report content of token cost: pure functions from costed usage to Polars frames and dicts.

Spend by day / agent / model / provider with trends, cost per user request with the multi-agent
amplification factor and the LLM-call fan-out, cache hit ratio, a 30-day spend forecast with an
interval, budget thresholds with their projected crossing date, unpriced volume and savings.

The spend forecast takes a pluggable `forecaster` with the DESIGN.md forecast contract
(history `series_id, ts, value` and a horizon in, `series_id, ts, point, p50, p80, p90, p95` out),
so the project's forecasting engine can replace the simple built-in projection without this
module importing it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from capacity_pipelines.common.files import replaced_folder_on_success
from capacity_pipelines.tokens.costing import unpriced_summary
from capacity_pipelines.tokens.prices import PriceBook
from capacity_pipelines.tokens.savings import SavingsAssumptions, savings_opportunities

# Columns that identify one user request end to end, most specific first.
REQUEST_ID_COLUMNS = ("conversation_id", "workflow_id", "session_id", "request_id", "trace_id")
# Column and value that mark the single-agent path of a service, when the service labels it.
SINGLE_AGENT_COLUMN = "workflow_type"
SINGLE_AGENT_VALUE = "single_agent"
SPEND_SERIES_ID = "llm_spend_usd_per_day"
# Standard normal quantiles of the forecast's upper levels.
Z_BY_QUANTILE = {"p50": 0.0, "p80": 0.8416, "p90": 1.2816, "p95": 1.6449}
# Fewest days for a weekday profile: two of each weekday.
MIN_DAYS_FOR_WEEKLY_PROFILE = 14
# Windows shorter than this are projected as a daily run rate instead of a daily series.
MIN_DAYS_FOR_DAILY_SERIES = 2
# Shortest window extrapolated to a daily run rate: below a minute, a burst of a few requests
# would be multiplied by more than 1,440 into a daily figure nobody should plan with.
MIN_RUN_RATE_WINDOW_S = 60.0

SpendForecaster = Callable[[pl.DataFrame, int], pl.DataFrame]


def _tokens(frame: pl.DataFrame, col: str) -> pl.Expr:
    if col in frame.columns:
        return pl.col(col).cast(pl.Float64).fill_null(0.0)
    return pl.lit(0.0)


def _calls(frame: pl.DataFrame) -> pl.Expr:
    """Sum of LLM calls: `requests` when rows are aggregated, else one per row."""
    if "requests" in frame.columns:
        return pl.col("requests").cast(pl.Float64).fill_null(1.0).sum()
    return pl.len().cast(pl.Float64)


def find_request_column(frame: pl.DataFrame) -> str | None:
    """The first user-request id column present (conversation, workflow, session, ...)."""
    return next((c for c in REQUEST_ID_COLUMNS if c in frame.columns), None)


def _aggregates(frame: pl.DataFrame) -> list[pl.Expr]:
    return [
        pl.col("cost_usd").sum().alias("cost_usd"),
        _tokens(frame, "input_tokens").sum().alias("input_tokens"),
        _tokens(frame, "output_tokens").sum().alias("output_tokens"),
        _tokens(frame, "cache_read_input_tokens").sum().alias("cache_read_input_tokens"),
        _calls(frame).alias("llm_calls"),
        pl.col("unpriced").sum().alias("unpriced_rows"),
    ]


def spend_by_day(costed: pl.DataFrame) -> pl.DataFrame:
    """Daily spend and tokens with the 7-day rolling mean and the day-over-day change."""
    return (
        costed.group_by(pl.col("ts").dt.truncate("1d").alias("day"))
        .agg(_aggregates(costed))
        .sort("day")
        .with_columns(
            pl.col("cost_usd").rolling_mean(7, min_samples=1).alias("cost_usd_7d_mean"),
            (pl.col("cost_usd") / pl.col("cost_usd").shift(1) - 1.0).alias("change_vs_prev_day"),
        )
    )


def spend_by(costed: pl.DataFrame, dimension: str) -> pl.DataFrame:
    """Spend per value of `dimension` (agent, model, provider) with its share and trend.

    Trend = spend in the second half of the window over the first half, minus one: a simple,
    robust signal of which agent or model is growing, for windows of any length.
    """
    if dimension not in costed.columns:
        return pl.DataFrame()
    start, end = costed["ts"].min(), costed["ts"].max()
    mid = start + (end - start) / 2 if start is not None else None
    total = costed["cost_usd"].sum() or 0.0
    second = pl.col("ts") >= mid
    return (
        costed.group_by(dimension)
        .agg(
            *_aggregates(costed),
            pl.col("cost_usd").filter(~second).sum().alias("cost_first_half_usd"),
            pl.col("cost_usd").filter(second).sum().alias("cost_second_half_usd"),
        )
        .with_columns(
            (pl.col("cost_usd") / total if total else pl.lit(None, pl.Float64)).alias("share"),
            pl.when(pl.col("cost_first_half_usd") > 0)
            .then(pl.col("cost_second_half_usd") / pl.col("cost_first_half_usd") - 1.0)
            .alias("trend_second_vs_first_half"),
        )
        .sort("cost_usd", descending=True, nulls_last=True)
    )


def cache_hit_ratio(costed: pl.DataFrame, by: Sequence[str] = ()) -> pl.DataFrame:
    """Cache-read share of input tokens (cache reads are a subset of input: OTel rule)."""
    group = [c for c in by if c in costed.columns]
    aggs = [
        _tokens(costed, "input_tokens").sum().alias("input_tokens"),
        _tokens(costed, "cache_read_input_tokens").sum().alias("cache_read_input_tokens"),
        _tokens(costed, "cache_write_input_tokens").sum().alias("cache_write_input_tokens"),
    ]
    frame = costed.group_by(group).agg(aggs) if group else costed.select(aggs)
    return frame.with_columns(
        pl.when(pl.col("input_tokens") > 0)
        .then(pl.col("cache_read_input_tokens") / pl.col("input_tokens"))
        .alias("cache_hit_ratio")
    )


def request_costs(
    costed: pl.DataFrame, request_column: str | None = None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Cost, tokens and LLM-call fan-out per user request, and the amplification factor.

    Amplification = mean tokens per multi-agent request / mean tokens per single-agent request.
    The single-agent path is the requests labelled `workflow_type == "single_agent"` when the data
    has that label, else the requests that involved exactly one agent.
    """
    request_column = request_column or find_request_column(costed)
    if request_column is None or request_column not in costed.columns:
        calls = costed.select(_calls(costed)).item() or 0.0
        tokens = costed.select(
            (_tokens(costed, "input_tokens") + _tokens(costed, "output_tokens")).sum()
        ).item()
        return pl.DataFrame(), {
            "request_column": None,
            "note": "no request id column: cost per user request and fan-out need one of "
            + ", ".join(REQUEST_ID_COLUMNS),
            "llm_calls": calls,
            "tokens_per_llm_call": tokens / calls if calls else None,
            "cost_per_llm_call_usd": (costed["cost_usd"].sum() / calls) if calls else None,
        }
    aggs = [
        *_aggregates(costed),
        (_tokens(costed, "input_tokens") + _tokens(costed, "output_tokens")).sum().alias("tokens"),
        pl.col("ts").min().alias("first_ts"),
    ]
    if "agent" in costed.columns:
        aggs.append(pl.col("agent").n_unique().alias("agents"))
    if SINGLE_AGENT_COLUMN in costed.columns:
        aggs.append(
            (pl.col(SINGLE_AGENT_COLUMN) == SINGLE_AGENT_VALUE).any().alias("single_agent_path")
        )
    per_request = costed.group_by(request_column).agg(aggs).sort("first_ts")
    summary: dict[str, Any] = {
        "request_column": request_column,
        "requests": per_request.height,
        "cost_per_request_mean_usd": per_request["cost_usd"].mean(),
        "cost_per_request_p50_usd": per_request["cost_usd"].quantile(0.5),
        "cost_per_request_p95_usd": per_request["cost_usd"].quantile(0.95),
        "tokens_per_request_mean": per_request["tokens"].mean(),
        "llm_calls_per_request_mean": per_request["llm_calls"].mean(),
        "llm_calls_per_request_p95": per_request["llm_calls"].quantile(0.95),
    }
    if "single_agent_path" in per_request.columns:
        single = pl.col("single_agent_path")
        baseline = f"{SINGLE_AGENT_COLUMN} == {SINGLE_AGENT_VALUE}"
    elif "agents" in per_request.columns:
        single = pl.col("agents") <= 1
        baseline = "requests served by exactly one agent"
    else:
        single, baseline = None, None
    amplification = None
    if single is not None:
        means = per_request.select(
            pl.col("tokens").filter(single).mean().alias("single"),
            pl.col("tokens").filter(~single).mean().alias("multi"),
        ).row(0, named=True)
        if means["single"] and means["multi"] is not None:
            amplification = means["multi"] / means["single"]
        summary["tokens_per_single_agent_request"] = means["single"]
        summary["tokens_per_multi_agent_request"] = means["multi"]
    summary["amplification_factor"] = amplification
    summary["amplification_baseline"] = baseline
    return per_request, summary


def daily_spend_history(costed: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Daily spend as a forecast history (`series_id, ts, value`) and how it was built.

    Windows of less than two days (an hour of trace) become one daily run-rate point: the spend
    scaled to 24 h. A last day that ends more than an hour before midnight is dropped from longer
    windows, so a partial day does not read as a drop in spend.
    """
    priced = costed.filter(pl.col("cost_usd").is_not_null())
    if priced.height == 0:
        return pl.DataFrame(
            schema={"series_id": pl.String, "ts": pl.Datetime("us", "UTC"), "value": pl.Float64}
        ), "no priced usage"
    start, end = priced["ts"].min(), priced["ts"].max()
    span_s = (end - start).total_seconds()
    if span_s < MIN_DAYS_FOR_DAILY_SERIES * 86_400:
        if span_s < MIN_RUN_RATE_WINDOW_S:
            return pl.DataFrame(
                schema={"series_id": pl.String, "ts": pl.Datetime("us", "UTC"), "value": pl.Float64}
            ), f"no projection: {span_s:.0f} s window is shorter than {MIN_RUN_RATE_WINDOW_S:.0f} s"
        rate = priced["cost_usd"].sum() * 86_400 / span_s
        day = end.replace(hour=0, minute=0, second=0, microsecond=0)
        history = pl.DataFrame(
            {"series_id": [SPEND_SERIES_ID], "ts": [day], "value": [rate]},
            schema={"series_id": pl.String, "ts": pl.Datetime("us", "UTC"), "value": pl.Float64},
        )
        return history, (
            f"daily run rate from a {span_s / 3600:.2f} h window (no interval: window too short)"
        )
    daily = spend_by_day(priced)
    last_day = daily["day"].max()
    if end < last_day + dt.timedelta(hours=23):
        daily = daily.filter(pl.col("day") < last_day)
    history = daily.select(
        pl.lit(SPEND_SERIES_ID).alias("series_id"),
        pl.col("day").alias("ts"),
        pl.col("cost_usd").alias("value"),
    )
    return history, f"{history.height} daily totals"


def linear_spend_forecast(history: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """Default spend projection: least-squares linear trend, weekday profile when >= 14 days.

    Interval: normal prediction interval of the linear fit (residual spread, widened with the
    distance from the mean day). One point gives a flat run rate with no interval. Deliberately
    simple and documented; pass the forecasting engine as `forecaster` for a backtested model.
    """
    rows: list[dict[str, Any]] = []
    for (series_id,), group in history.sort("ts").group_by("series_id", maintain_order=True):
        y = group["value"].cast(pl.Float64).to_list()
        last = group["ts"].max()
        n = len(y)
        mean_t = (n - 1) / 2
        sxx = sum((t - mean_t) ** 2 for t in range(n))
        slope = sum((t - mean_t) * (v - sum(y) / n) for t, v in enumerate(y)) / sxx if sxx else 0.0
        intercept = sum(y) / n - slope * mean_t
        fitted = [intercept + slope * t for t in range(n)]
        weekday = [1.0] * 7
        if n >= MIN_DAYS_FOR_WEEKLY_PROFILE:
            ratios: dict[int, list[float]] = {}
            for ts, v, f in zip(group["ts"], y, fitted, strict=True):
                if f > 0:
                    ratios.setdefault(ts.weekday(), []).append(v / f)
            weekday = [sum(r) / len(r) if (r := ratios.get(d)) else 1.0 for d in range(7)]
            fitted = [f * weekday[ts.weekday()] for ts, f in zip(group["ts"], fitted, strict=True)]
        dof = n - 2 - (6 if n >= MIN_DAYS_FOR_WEEKLY_PROFILE else 0)
        sigma = (
            math.sqrt(sum((v - f) ** 2 for v, f in zip(y, fitted, strict=True)) / dof)
            if dof > 0
            else 0.0
        )
        for h in range(1, horizon + 1):
            t = n - 1 + h
            ts = last + dt.timedelta(days=h)
            point = max(0.0, (intercept + slope * t) * weekday[ts.weekday()])
            se = sigma * math.sqrt(1 + 1 / n + ((t - mean_t) ** 2 / sxx if sxx else 0.0))
            row = {"series_id": series_id, "ts": ts, "point": point}
            row.update({q: max(0.0, point + z * se) for q, z in Z_BY_QUANTILE.items()})
            row["model"] = "linear_trend" + ("+weekday" if n >= 14 else "") if n > 1 else "flat"
            rows.append(row)
    return pl.DataFrame(rows)


MIN_DAYS_FOR_ENGINE = 14  # two weekly cycles: below this the engine has nothing to backtest


def engine_spend_forecast(history: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """Daily spend forecast from the forecasting engine (backtested combination, calibrated
    quantiles), falling back to the report's documented linear trend on short histories.
    """
    # Imported here: statsmodels and LightGBM load only when a forecast is actually made.
    from capacity_pipelines.forecasting import CapacityForecaster, EngineSettings

    if history.height < MIN_DAYS_FOR_ENGINE:
        return linear_spend_forecast(history, horizon)
    utc = history["ts"].dtype.time_zone if isinstance(history["ts"].dtype, pl.Datetime) else None
    naive = history.with_columns(pl.col("ts").dt.replace_time_zone(None)) if utc else history
    forecast = CapacityForecaster(EngineSettings(workers=1)).fit(naive).predict(horizon)
    if utc:
        forecast = forecast.with_columns(pl.col("ts").dt.replace_time_zone(utc))
    return forecast.select("series_id", "ts", "point", "p50", "p80", "p90", "p95", "model")


def spend_forecast(
    costed: pl.DataFrame, horizon_days: int = 30, forecaster: SpendForecaster | None = None
) -> tuple[pl.DataFrame, str]:
    """Daily spend for the next `horizon_days` with p50..p95, and how the history was built."""
    history, method = daily_spend_history(costed)
    if history.height == 0:
        return pl.DataFrame(), method
    forecast = (forecaster or linear_spend_forecast)(history, horizon_days)
    return forecast, method


@dataclass(frozen=True)
class BudgetThreshold:
    """A monthly spend limit (calendar month, UTC) to warn about before it is crossed."""

    name: str
    monthly_usd: float


def budget_crossings(
    costed: pl.DataFrame, forecast: pl.DataFrame, thresholds: Sequence[BudgetThreshold]
) -> pl.DataFrame:
    """Projected date each monthly budget is crossed: month-to-date actual + forecast.

    `crossing_date_p50` uses the median daily forecast; `crossing_date_p95` the daily p95, summed
    (an upper bound of the cumulative p95, so the earliest plausible date). Null = not crossed
    within the forecast horizon. The unobserved rest of the last observed day counts pro rata at
    that day's forecast (or the first forecast day's), so a partial day is neither lost nor
    counted twice.
    """
    if not thresholds or costed.height == 0:
        return pl.DataFrame()
    last = costed["ts"].max()
    last_day = last.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = last_day.replace(day=1)
    mtd = costed.filter(pl.col("ts") >= month_start)["cost_usd"].sum() or 0.0
    rest_of_day = 1.0 - (last - last_day).total_seconds() / 86_400
    rows = []
    for th in thresholds:
        row: dict[str, Any] = {
            "budget": th.name,
            "monthly_usd": th.monthly_usd,
            "month_to_date_usd": mtd,
        }
        for q in ("p50", "p95"):
            crossing = last.date() if mtd >= th.monthly_usd else None
            if crossing is None and forecast.height:
                today = forecast.filter(pl.col("ts") == last_day)
                today_rate = (today if today.height else forecast.sort("ts").head(1))[q][0]
                start = mtd + rest_of_day * today_rate
                if start >= th.monthly_usd:
                    crossing = last.date()
                else:
                    # Only the forecast days of the same calendar month count toward its budget.
                    in_month = (
                        forecast.filter(
                            (pl.col("ts") > last_day)
                            & (pl.col("ts").dt.month() == month_start.month)
                            & (pl.col("ts").dt.year() == month_start.year)
                        )
                        .sort("ts")
                        .with_columns((pl.col(q).cum_sum() + start).alias("cumulative"))
                    )
                    hit = in_month.filter(pl.col("cumulative") >= th.monthly_usd)
                    crossing = hit["ts"].min().date() if hit.height else None
            row[f"crossing_date_{q}"] = crossing
        rows.append(row)
    return pl.DataFrame(rows)


@dataclass
class TokenCostReport:
    """All report content: named frames plus a JSON-able summary."""

    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


def build_report(
    costed: pl.DataFrame,
    book: PriceBook,
    *,
    thresholds: Sequence[BudgetThreshold] = (),
    assumptions: SavingsAssumptions | None = None,
    forecaster: SpendForecaster | None = None,
    horizon_days: int = 30,
) -> TokenCostReport:
    """Every piece of report content from one costed frame."""
    report = TokenCostReport()
    t = report.tables
    t["spend_by_day"] = spend_by_day(costed)
    for dim in ("agent", "model", "provider"):
        if dim in costed.columns:
            t[f"spend_by_{dim}"] = spend_by(costed, dim)
    t["cache_hit_ratio_by_model"] = cache_hit_ratio(costed, ["provider", "model"])
    if "agent" in costed.columns:
        t["cache_hit_ratio_by_agent"] = cache_hit_ratio(costed, ["agent"])
    t["unpriced"] = unpriced_summary(costed, book)
    per_request, request_summary = request_costs(costed)
    if per_request.height:
        t["cost_per_request"] = per_request
    forecast, method = spend_forecast(costed, horizon_days, forecaster)
    t["spend_forecast"] = forecast
    t["budget"] = budget_crossings(costed, forecast, thresholds)
    t["savings"] = savings_opportunities(
        costed, book, assumptions, request_column=request_summary.get("request_column")
    )
    overall_cache = cache_hit_ratio(costed).row(0, named=True)
    report.summary = {
        "rows": costed.height,
        "window_start": str(costed["ts"].min()),
        "window_end": str(costed["ts"].max()),
        "cost_usd": costed["cost_usd"].sum(),
        "unpriced_rows": int(costed["unpriced"].sum()),
        "unpriced_input_tokens": float(t["unpriced"]["input_tokens"].sum()),
        "unpriced_output_tokens": float(t["unpriced"]["output_tokens"].sum()),
        "cache_hit_ratio": overall_cache["cache_hit_ratio"],
        "forecast_history": method,
        "forecast_30d_usd_p50": float(forecast["p50"].sum()) if forecast.height else None,
        "forecast_30d_usd_p95": float(forecast["p95"].sum()) if forecast.height else None,
        "requests": request_summary,
    }
    return report


def write_report_files(report: TokenCostReport, folder: Path) -> None:
    """Write each table as CSV and the summary as JSON into the existing `folder`."""
    for name, frame in report.tables.items():
        if frame.width:
            frame.write_csv(folder / f"{name}.csv")
    (folder / "summary.json").write_text(json.dumps(report.summary, indent=2, default=str))


def write_report(report: TokenCostReport, directory: Path) -> None:
    """Write the report into `directory`, all or nothing.

    Files go to a temporary sibling folder that replaces `directory` only when complete.
    """
    with replaced_folder_on_success(Path(directory)) as staged:
        write_report_files(report, staged)

"""Gather the weekly report's sections from the read-only warehouse snapshot.

Derived tables are windowed by `as_of` (a day boundary): week W reads the latest `as_of` at or
before W's end, and "what changed" compares with the latest `as_of` at or before the previous
week's end. Raw tables (usage, tokens) are read for the week itself, `ts` in `(start, end]`
(a 5-minute row is stamped at the end of its step). A section whose table is missing or empty
becomes a "not available yet: <why>" box; the report is still written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl

from capacity_pipelines.common.charts import forecast_chart
from capacity_pipelines.common.formatting import cores, iec_bytes, usd, usd_per_month
from capacity_pipelines.forecasting.fleet import (
    BACKTEST_TABLE,
    FORECAST_TABLE,
    HORIZON_HOURS,
    RUNWAY_TABLE,
    accuracy_by_family,
    load_series,
)
from capacity_pipelines.ingest.catalog import Catalog, load_catalog
from capacity_pipelines.ingest.coverage import table_coverage
from capacity_pipelines.reporting.model import Chart, ReportTable, Section, WeeklyReport
from capacity_pipelines.reporting.svg import bar_chart
from capacity_pipelines.reporting.weeks import ReportWeek
from capacity_pipelines.rightsizing.prices import GIB, load_compute_prices
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE
from capacity_pipelines.tokens.fleet import TOKEN_COST_TABLE
from capacity_pipelines.tokens.report import daily_spend_history, linear_spend_forecast, spend_by

# Tables being built by the bottleneck and recommendation domains (names from their contracts).
BOTTLENECK_TABLE = "bottleneck_outlook"
RECOMMENDATIONS_TABLE = "recommendations"

RUNWAY_AT_RISK_DAYS = HORIZON_HOURS / 24  # a runway inside the forecast horizon is a risk
BOTTLENECK_AT_RISK_PROBABILITY = 0.5  # "likely": the classifier's more-likely-than-not line
RUNWAY_CHARTS = 4  # forecast charts for the series closest to their capacity
TOP_RECOMMENDATIONS = 10
TOP_RIGHTSIZING = 15
TOKEN_TREND_DAYS = 28  # four weekly cycles of daily spend behind the trend and forecast
TOKEN_FORECAST_DAYS = 14
STALE_AFTER = timedelta(days=1)  # extraction is daily: a day behind the week's end is stale
LOW_COVERAGE = 0.95  # below this share of expected points a table has gaps worth a look
HOURS_PER_WEEK = 168

SpendForecaster = Callable[[pl.DataFrame, int], pl.DataFrame]


class Unavailable(Exception):
    """A section's input is missing or empty; the message says why."""


# What reading a table of the wrong shape raises (a missing column, a type that does not cast).
READ_ERRORS = (duckdb.Error, pl.exceptions.PolarsError, KeyError, TypeError)


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"


@dataclass(frozen=True)
class _Window:
    """What every section builder needs: the snapshot, the week and the as-of days used."""

    con: duckdb.DuckDBPyConnection
    week: ReportWeek
    catalog: Catalog | None
    forecaster: SpendForecaster

    @property
    def start(self) -> datetime:
        return self.week.start.replace(tzinfo=None)

    @property
    def end(self) -> datetime:
        return self.week.end.replace(tzinfo=None)

    def table_status(self, table: str) -> str | None:
        """None when `table` has rows, else why it cannot be used."""
        exists = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND table_name = ?",
            [table],
        ).fetchone()[0]
        if not exists:
            return f"table {table} is not in the warehouse snapshot"
        if self.con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] == 0:
            return f"table {table} is empty"
        return None

    def require(self, table: str) -> None:
        why = self.table_status(table)
        if why:
            raise Unavailable(why)

    def as_of(self, table: str, end: datetime | None = None) -> datetime | None:
        """Latest `as_of` of `table` at or before `end` (default: the week's end)."""
        if self.table_status(table):
            return None
        return self.con.execute(
            f'SELECT max(as_of) FROM "{table}" WHERE as_of <= ?', [end or self.end]
        ).fetchone()[0]

    def previous_as_of(self, table: str) -> datetime | None:
        """The as-of day last week's report used, or None when it is this week's too."""
        current = self.as_of(table)
        previous = self.as_of(table, self.end - timedelta(days=7))
        return previous if previous is not None and previous != current else None

    def rows_at(self, table: str, as_of: datetime | None) -> pl.DataFrame:
        if as_of is None:
            return pl.DataFrame()
        return self.con.execute(f'SELECT * FROM "{table}" WHERE as_of = ?', [as_of]).pl()

    def raw_week(self, table: str, start: datetime, end: datetime) -> pl.DataFrame:
        return self.con.execute(
            f'SELECT * FROM "{table}" WHERE ts > ? AND ts <= ? ORDER BY ts', [start, end]
        ).pl()


def _text_table(columns: dict[str, list]) -> pl.DataFrame:
    """A table of formatted strings for people (typed as text even when it has no rows)."""
    return pl.DataFrame(columns, schema={name: pl.Utf8 for name in columns})


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.0%}"


def _change(now: float | None, before: float | None) -> str:
    if now is None or not before:
        return "n/a"
    return f"{now / before - 1:+.1%}"


def _day(value: datetime | None) -> str:
    return "n/a" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _entity(series_id: str) -> str:
    return series_id.split(":", 1)[-1]


def _load(family: str, value: float | None) -> str:
    """A forecast value in its family's unit."""
    if value is None or value != value:
        return "n/a"
    if family == "workload_cpu":
        return cores(value)
    if family == "workload_memory":
        return iec_bytes(value)
    if family == "service_request_rate":
        return f"{value:,.1f} req/s"
    return f"{value / 1e6:,.2f}M tokens/h" if value >= 1e6 else f"{value:,.0f} tokens/h"


FAMILY_NAMES = {
    "workload_cpu": "CPU",
    "workload_memory": "memory",
    "service_request_rate": "request rate",
    "llm_tokens": "LLM tokens",
}


def _runway_text(days: float | None) -> str:
    if days is None or days != days:
        return f"> {RUNWAY_AT_RISK_DAYS:.0f} days"
    return "at capacity now" if days <= 0 else f"{days:.1f} days"


# ---------------------------------------------------------------------------------- risks


def runway_risks(window: _Window, as_of: datetime | None) -> dict[str, str]:
    """Entities whose forecast p90 reaches capacity inside the horizon, with the reason."""
    runway = window.rows_at(RUNWAY_TABLE.name, as_of)
    if runway.height == 0:
        return {}
    risky = runway.filter(
        pl.col("runway_days").is_not_null() & (pl.col("runway_days") <= RUNWAY_AT_RISK_DAYS)
    ).sort("runway_days")
    return {
        _entity(row["series_id"]): f"{FAMILY_NAMES.get(row['family'], row['family'])} runway "
        f"{_runway_text(row['runway_days'])}"
        for row in risky.iter_rows(named=True)
    }


def bottleneck_risks(window: _Window, as_of: datetime | None) -> dict[str, str]:
    """Services with a likely bottleneck (any horizon), with the class and probability."""
    outlook = window.rows_at(BOTTLENECK_TABLE, as_of)
    if outlook.height == 0:
        return {}
    likely = outlook.filter(
        (pl.col("bottleneck_class") != "none")
        & (pl.col("probability") >= BOTTLENECK_AT_RISK_PROBABILITY)
    ).sort("probability", descending=True)
    risks: dict[str, str] = {}
    for row in likely.iter_rows(named=True):
        name = f"{row['namespace']}/{row['service']}"
        risks.setdefault(
            name,
            f"{row['bottleneck_class']} bottleneck {_pct(row['probability'])} within "
            f"{row['horizon']}",
        )
    return risks


def _merge_risks(*risks: dict[str, str]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for found in risks:
        for name, reason in found.items():
            merged.setdefault(name, []).append(reason)
    return merged


# ------------------------------------------------------------------------------- sections


def runway_section(window: _Window) -> Section:
    """Runway per service against its limits, with forecast charts and the backtest accuracy."""
    section = Section("runway", "Capacity runway")
    window.require(RUNWAY_TABLE.name)
    as_of = window.as_of(RUNWAY_TABLE.name)
    if as_of is None:
        raise Unavailable(f"no {RUNWAY_TABLE.name} rows at or before {_day(window.end)}")
    runway = window.rows_at(RUNWAY_TABLE.name, as_of).filter(pl.col("capacity").is_not_null())
    if runway.height == 0:
        raise Unavailable(f"no series with a capacity in {RUNWAY_TABLE.name} at {_day(as_of)}")
    runway = runway.with_columns(
        (pl.col("peak_p90") / pl.col("capacity")).alias("utilisation_p90")
    ).sort(["runway_days", "utilisation_p90"], descending=[False, True], nulls_last=True)
    display = _text_table(
        {
            "workload": [_entity(s) for s in runway["series_id"]],
            "resource": [FAMILY_NAMES.get(f, f) for f in runway["family"]],
            "next-week peak p50": [
                _load(f, v) for f, v in zip(runway["family"], runway["peak_p50"], strict=True)
            ],
            "peak p90": [
                _load(f, v) for f, v in zip(runway["family"], runway["peak_p90"], strict=True)
            ],
            "capacity": [
                _load(f, v) for f, v in zip(runway["family"], runway["capacity"], strict=True)
            ],
            "p90 / capacity": [_pct(v) for v in runway["utilisation_p90"]],
            "runway": [_runway_text(v) for v in runway["runway_days"]],
            "saturates at": [
                "" if v is None else _day(v) for v in runway["saturation_ts"].to_list()
            ],
            "note": [v or "" for v in runway["note"].to_list()],
        }
    )
    section.tables.append(ReportTable("capacity_runway", "Runway against limits", display, runway))
    risks = runway_risks(window, as_of)
    section.facts = {"as_of": as_of, "at_risk": risks}
    section.bullets.append(
        f"Forecast made from history up to {_day(as_of)}; runway = days until the hourly p90 "
        f"forecast first reaches the sum of limits (requests where no limit), within "
        f"{RUNWAY_AT_RISK_DAYS:.0f} days."
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
    window: _Window, as_of: datetime, runway: pl.DataFrame, section: Section
) -> list[Chart]:
    if window.table_status(FORECAST_TABLE.name):
        section.bullets.append(f"No forecast charts: {window.table_status(FORECAST_TABLE.name)}.")
        return []
    chosen = runway["series_id"].head(RUNWAY_CHARTS).to_list()
    forecast = window.con.execute(
        f'SELECT * FROM "{FORECAST_TABLE.name}" WHERE as_of = ? AND list_contains(?, series_id)',
        [as_of, chosen],
    ).pl()
    try:
        history = load_series(window.con, as_of.replace(tzinfo=UTC), history_days=14).history
    except duckdb.Error as error:
        section.bullets.append(f"No history for the charts: {str(error).splitlines()[0]}")
        return []
    charts = []
    for series_id in chosen:
        future = forecast.filter(pl.col("series_id") == series_id)
        past = history.filter(pl.col("series_id") == series_id)
        if future.height and past.height:
            title = f"{series_id}: last 14 days and next 7 (p50–p95 band)"
            charts.append(Chart(title, png=forecast_chart(past, future, title)))
    return charts


def _backtest_bullets(window: _Window, section: Section) -> None:
    as_of = window.as_of(BACKTEST_TABLE.name)
    if as_of is None:
        section.bullets.append("Forecast accuracy: no backtest yet.")
        return
    accuracy = accuracy_by_family(window.rows_at(BACKTEST_TABLE.name, as_of))
    parts = [
        f"{FAMILY_NAMES.get(r['family'], r['family'])} MASE {r['mase_engine']:.2f} vs "
        f"{r['mase_seasonal_naive']:.2f} naive, p90 covers {_pct(r['coverage_p90'])}"
        for r in accuracy.iter_rows(named=True)
    ]
    section.bullets.append(
        "Forecast accuracy on the last week (lower MASE is better): " + "; ".join(parts) + "."
    )
    section.facts["mase_by_family"] = {
        r["family"]: r["mase_engine"] for r in accuracy.iter_rows(named=True)
    }


def bottleneck_section(window: _Window) -> Section:
    """Where the next bottleneck is likely, per service and horizon."""
    section = Section("bottlenecks", "Bottleneck outlook")
    window.require(BOTTLENECK_TABLE)
    as_of = window.as_of(BOTTLENECK_TABLE)
    if as_of is None:
        raise Unavailable(f"no {BOTTLENECK_TABLE} rows at or before {_day(window.end)}")
    outlook = window.rows_at(BOTTLENECK_TABLE, as_of)
    likely = outlook.filter(pl.col("bottleneck_class") != "none").sort(
        "probability", descending=True
    )
    services = outlook.select("namespace", "service").unique().height
    section.facts = {"as_of": as_of, "at_risk": bottleneck_risks(window, as_of)}
    section.bullets.append(
        f"Outlook from {_day(as_of)} for {services} services: {likely.height} service-horizon "
        f"pairs with a bottleneck class other than none; "
        f"{len(section.facts['at_risk'])} services at or above "
        f"{BOTTLENECK_AT_RISK_PROBABILITY:.0%} probability."
    )
    display = _text_table(
        {
            "service": [f"{r['namespace']}/{r['service']}" for r in likely.iter_rows(named=True)],
            "horizon": likely["horizon"].cast(pl.Utf8).to_list(),
            "bottleneck": likely["bottleneck_class"].cast(pl.Utf8).to_list(),
            "probability": [_pct(v) for v in likely["probability"]],
            "expected at": [_day(v) if v else "" for v in likely["expected_at"].to_list()],
            "evidence": [v or "" for v in likely["evidence"].cast(pl.Utf8).to_list()],
            "method": likely["method"].cast(pl.Utf8).to_list(),
        }
    )
    section.tables.append(ReportTable("bottleneck_outlook", "Likely bottlenecks", display, likely))
    return section


def rightsizing_section(window: _Window) -> Section:
    """Container requests to change, largest risks and savings first."""
    section = Section("rightsizing", "Rightsizing")
    window.require(RIGHTSIZING_TABLE.name)
    as_of = window.as_of(RIGHTSIZING_TABLE.name)
    if as_of is None:
        raise Unavailable(f"no {RIGHTSIZING_TABLE.name} rows at or before {_day(window.end)}")
    rows = window.rows_at(RIGHTSIZING_TABLE.name, as_of).sort("rank")
    sized = rows.filter(pl.col("status") == "ok")
    savings = float(sized.filter(pl.col("monthly_saving_usd") > 0)["monthly_saving_usd"].sum())
    costs = float(-sized.filter(pl.col("monthly_saving_usd") < 0)["monthly_saving_usd"].sum())
    top = sized.head(TOP_RIGHTSIZING)
    display = _text_table(
        {
            "rank": [str(v) for v in top["rank"]],
            "container": top["container_id"].to_list(),
            "kind": top["kind"].to_list(),
            "CPU request": [
                f"{cores(a)} → {cores(b)}"
                for a, b in zip(top["current_cpu_request"], top["cpu_request"], strict=True)
            ],
            "memory request": [
                f"{iec_bytes(a)} → {iec_bytes(b)}"
                for a, b in zip(top["current_memory_request"], top["memory_request"], strict=True)
            ],
            "confidence": [_pct(v) for v in top["confidence"]],
            "saving": [usd_per_month(v) for v in top["monthly_saving_usd"]],
            "rationale": [v or "" for v in top["rationale"].to_list()],
        }
    )
    section.tables.append(ReportTable("rightsizing", "Recommended requests", display, rows))
    section.bullets.append(
        f"{sized.height} containers sized from 14 days of history up to {_day(as_of)}: "
        f"{usd_per_month(savings)} to save by sizing down, {usd_per_month(costs)} to add where "
        f"containers are at risk; {rows.height - sized.height} without a recommendation."
    )
    section.facts = {"as_of": as_of, "savings_usd_month": savings, "risk_cost_usd_month": costs}
    return section


def _costed(window: _Window, start: datetime, end: datetime) -> pl.DataFrame:
    frame = window.raw_week(TOKEN_COST_TABLE.name, start, end)
    return frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC")) if frame.height else frame


def token_section(window: _Window) -> Section:
    """LLM spend by agent and model this week, its daily trend and the forecast."""
    section = Section("tokens", "LLM token cost")
    window.require(TOKEN_COST_TABLE.name)
    week = _costed(window, window.start, window.end)
    if week.height == 0:
        raise Unavailable(f"no {TOKEN_COST_TABLE.name} rows in {window.week.label}")
    previous = _costed(window, window.start - timedelta(days=7), window.start)
    spend = float(week["cost_usd"].sum() or 0.0)
    spend_before = float(previous["cost_usd"].sum() or 0.0) if previous.height else None
    unpriced = int(week["unpriced"].sum() or 0)
    section.facts = {"llm_spend_usd": spend, "llm_spend_previous_usd": spend_before}
    section.bullets.append(
        f"LLM spend {usd(spend)} this week"
        + (
            f", {_change(spend, spend_before)} vs last week ({usd(spend_before)})"
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
    display = _text_table(
        {
            dimension: [v or "(none)" for v in raw[dimension].to_list()],
            "spend": [usd(v) for v in raw["cost_usd"]],
            "share": [_pct(v) for v in raw["share"]],
            "vs last week": [
                _change(a, b)
                for a, b in zip(raw["cost_usd"], raw["cost_previous_week_usd"], strict=True)
            ],
            "input tokens": [f"{v / 1e6:,.1f}M" for v in raw["input_tokens"].fill_null(0)],
            "output tokens": [f"{v / 1e6:,.1f}M" for v in raw["output_tokens"].fill_null(0)],
        }
    )
    return display, raw


def _spend_trend(window: _Window, section: Section) -> None:
    history_rows = _costed(window, window.end - timedelta(days=TOKEN_TREND_DAYS), window.end)
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


def recommendations_section(window: _Window) -> Section:
    """The top ranked recommendations and where their review stands."""
    section = Section("recommendations", "Top recommendations")
    window.require(RECOMMENDATIONS_TABLE)
    as_of = window.as_of(RECOMMENDATIONS_TABLE)
    if as_of is None:
        raise Unavailable(f"no {RECOMMENDATIONS_TABLE} rows at or before {_day(window.end)}")
    rows = window.rows_at(RECOMMENDATIONS_TABLE, as_of)
    open_rows = rows.filter(pl.col("status") == "open").sort("rank")
    top = open_rows.head(TOP_RECOMMENDATIONS)
    reviews = open_rows.group_by("review_status").len().sort("review_status")
    worth = open_rows.filter(
        (pl.col("review_status") != "rejected") & (pl.col("impact_usd_month") > 0)
    )
    savings = float(worth["impact_usd_month"].sum() or 0.0)
    section.facts = {
        "as_of": as_of,
        "savings_usd_month": savings,
        "ids": set(open_rows["recommendation_id"].to_list()),
        "review_status": dict(reviews.iter_rows()),
    }
    section.bullets.append(
        f"{open_rows.height} open recommendations ranked on {_day(as_of)}; review status: "
        + (", ".join(f"{k} {v}" for k, v in reviews.iter_rows()) or "none")
        + f". Not rejected and saving money: {usd_per_month(savings)}."
    )
    display = _text_table(
        {
            "rank": [str(v) for v in top["rank"]],
            "target": [str(v) for v in top["target"]],
            "action": [str(v) for v in top["action"]],
            "impact": [usd_per_month(v) for v in top["impact_usd_month"]],
            "confidence": [_pct(v) for v in top["confidence"]],
            "priority": [f"{v:.1f}" if isinstance(v, float) else str(v) for v in top["priority"]],
            "review": [str(v) for v in top["review_status"]],
            "evidence": [str(v or "") for v in top["evidence"]],
        }
    )
    section.tables.append(ReportTable("recommendations", "Ranked recommendations", display, top))
    return section


def data_quality_section(window: _Window) -> Section:
    """Coverage, gaps and stale sources behind this week's numbers."""
    section = Section("data-quality", "Data quality")
    catalog = window.catalog or load_catalog()
    missing = [t for t in catalog.tables if window.table_status(t)]
    present = replace(catalog, tables={k: v for k, v in catalog.tables.items() if k not in missing})
    coverage = table_coverage(window.con, present) if present.tables else pl.DataFrame()
    rows = []
    for row in coverage.iter_rows(named=True):
        problems = []
        if row["last_point"] is None or row["last_point"] < window.end - STALE_AFTER:
            problems.append(f"stale: last point {_day(row['last_point'])}")
        if row["mean_coverage"] < LOW_COVERAGE:
            problems.append(f"gaps: {row['mean_coverage']:.1%} of expected points")
        rows.append(
            {
                "table": row["table"],
                "rows": f"{row['rows']:,}",
                "series": f"{row['entities']:,}",
                "first point": _day(row["first_point"]),
                "last point": _day(row["last_point"]),
                "coverage": f"{row['mean_coverage']:.1%}",
                "status": "; ".join(problems) or "ok",
            }
        )
    for name in missing:
        rows.append(
            {
                "table": name,
                "rows": "0",
                "series": "0",
                "first point": "",
                "last point": "",
                "coverage": "",
                "status": window.table_status(name),
            }
        )
    columns = ("table", "rows", "series", "first point", "last point", "coverage", "status")
    display = pl.DataFrame(rows, schema={c: pl.Utf8 for c in columns})
    section.tables.append(ReportTable("data_quality", "Extracted tables", display, coverage))
    derived = []
    for table in (
        RUNWAY_TABLE.name,
        FORECAST_TABLE.name,
        BACKTEST_TABLE.name,
        RIGHTSIZING_TABLE.name,
        BOTTLENECK_TABLE,
        RECOMMENDATIONS_TABLE,
    ):
        why = window.table_status(table)
        as_of = None if why else window.as_of(table)
        if why is None and as_of is None:
            why = f"no as-of day at or before {_day(window.end)}"
        elif as_of is not None and as_of < window.end - STALE_AFTER:
            why = f"stale: computed {(window.end - as_of).days} days before the week's end"
        derived.append({"table": table, "as_of used": _day(as_of), "status": why or "ok"})
    used = pl.DataFrame(derived, schema={c: pl.Utf8 for c in ("table", "as_of used", "status")})
    section.tables.append(ReportTable("derived_tables", "Derived tables used", used, used))
    problems = [r for r in rows + derived if r["status"] != "ok"]
    section.facts = {"problems": [f"{r['table']}: {r['status']}" for r in problems]}
    section.bullets.append(
        f"{len(rows)} extracted and {len(derived)} derived tables checked; "
        + (f"{len(problems)} need attention." if problems else "all complete and fresh.")
    )
    return section


# ------------------------------------------------------------------------ executive summary


def _compute_spend(window: _Window) -> float | None:
    """The week's requested CPU and memory at compute list prices (what the fleet reserves)."""
    if window.table_status("container_usage"):
        return None
    steps, mean_cores, mean_bytes = window.con.execute(
        "WITH per_step AS (SELECT ts, sum(cpu_request_cores) AS c, "
        "sum(memory_request_bytes) AS m FROM container_usage WHERE ts > ? AND ts <= ? "
        "GROUP BY ts) SELECT count(*), avg(c), avg(m) FROM per_step",
        [window.start, window.end],
    ).fetchone()
    if not steps:
        return None
    price = load_compute_prices().price(on=window.week.monday)
    hourly = (mean_cores or 0.0) * price.usd_per_vcpu_hour + (
        mean_bytes or 0.0
    ) / GIB * price.usd_per_gib_hour
    return hourly * HOURS_PER_WEEK


def summary_section(window: _Window, sections: dict[str, Section]) -> tuple[Section, dict]:
    """Spend, savings available, services at risk and what changed since last week."""
    section = Section("summary", "Executive summary")
    tokens, rightsizing = sections["tokens"], sections["rightsizing"]
    recommendations = sections["recommendations"]
    llm = tokens.facts.get("llm_spend_usd")
    llm_before = tokens.facts.get("llm_spend_previous_usd")
    try:
        compute = _compute_spend(window)
    except READ_ERRORS:
        compute = None
    if recommendations.unavailable is None:
        savings, savings_from = recommendations.facts["savings_usd_month"], "open recommendations"
    elif rightsizing.unavailable is None:
        savings, savings_from = rightsizing.facts["savings_usd_month"], "rightsizing"
    else:
        savings, savings_from = None, "no savings source yet"
    # From the sections, which already turned a malformed table into an "unavailable" box.
    at_risk = _merge_risks(
        sections["runway"].facts.get("at_risk", {}),
        sections["bottlenecks"].facts.get("at_risk", {}),
    )
    summary = {
        "week": window.week.label,
        "llm_spend_usd": llm,
        "llm_spend_previous_week_usd": llm_before,
        "compute_spend_usd": compute,
        "savings_available_usd_month": savings,
        "savings_source": savings_from,
        "services_at_risk": {k: "; ".join(v) for k, v in at_risk.items()},
    }
    total = (llm or 0.0) + (compute or 0.0) if llm is not None or compute is not None else None
    section.bullets.append(
        f"Spend this week: {usd(total)} = LLM {usd(llm)} + compute {usd(compute)} "
        "(requested CPU and memory at list price)."
    )
    section.bullets.append(f"Savings available: {usd_per_month(savings)} (from {savings_from}).")
    section.bullets.append(
        f"Services at risk: {len(at_risk)}"
        + (": " + "; ".join(f"{k} ({', '.join(v)})" for k, v in at_risk.items()) if at_risk else "")
        + "."
    )
    try:
        changes = _changes(window, sections, at_risk, llm, llm_before, savings, savings_from)
    except READ_ERRORS as error:
        changes = [f"could not compare with last week: {_first_line(error)}"]
    summary["changes"] = changes
    section.bullets.extend(f"Since last week: {c}" for c in changes)
    summary["headline"] = (
        f"{window.week.label}: spend {usd(total)} (LLM {usd(llm)}), savings available "
        f"{usd_per_month(savings)}, {len(at_risk)} services at risk"
    )
    kpis = pl.DataFrame(
        {
            "measure": ["LLM spend", "compute spend", "savings available", "services at risk"],
            "this week": [usd(llm), usd(compute), usd_per_month(savings), str(len(at_risk))],
            "last week": [usd(llm_before), "", "", ""],
            "change": [_change(llm, llm_before), "", "", ""],
        }
    )
    section.tables.append(ReportTable("summary", "Headline numbers", kpis, kpis))
    return section, summary


def _changes(window, sections, at_risk, llm, llm_before, savings, savings_from) -> list[str]:
    changes = []
    if llm_before:
        changes.append(f"LLM spend {_change(llm, llm_before)} ({usd(llm_before)} → {usd(llm)}).")
    else:
        changes.append("no LLM spend recorded last week to compare with.")
    runway_before = window.previous_as_of(RUNWAY_TABLE.name)
    bottleneck_before = window.previous_as_of(BOTTLENECK_TABLE)
    if runway_before is None and bottleneck_before is None:
        changes.append("no earlier as-of day of the forecasts to compare risks with.")
    else:
        before = _merge_risks(
            runway_risks(window, runway_before), bottleneck_risks(window, bottleneck_before)
        )
        new, gone = sorted(set(at_risk) - set(before)), sorted(set(before) - set(at_risk))
        changes.append(
            f"newly at risk: {', '.join(new) or 'none'}; no longer at risk: "
            f"{', '.join(gone) or 'none'}."
        )
    table = RECOMMENDATIONS_TABLE if savings_from == "open recommendations" else None
    if table and (before_as_of := window.previous_as_of(table)) is not None:
        old = window.rows_at(table, before_as_of).filter(pl.col("status") == "open")
        old_ids = set(old["recommendation_id"].to_list())
        new_ids = sections["recommendations"].facts["ids"] - old_ids
        worth = old.filter(
            (pl.col("review_status") != "rejected") & (pl.col("impact_usd_month") > 0)
        )
        before_savings = float(worth["impact_usd_month"].sum() or 0.0)
        changes.append(
            f"{len(new_ids)} new recommendations; savings available "
            f"{usd_per_month(before_savings)} → {usd_per_month(savings)}."
        )
    elif (
        savings_from == "rightsizing"
        and (before_as_of := window.previous_as_of(RIGHTSIZING_TABLE.name)) is not None
    ):
        old = window.rows_at(RIGHTSIZING_TABLE.name, before_as_of)
        before_savings = float(
            old.filter((pl.col("status") == "ok") & (pl.col("monthly_saving_usd") > 0))[
                "monthly_saving_usd"
            ].sum()
        )
        changes.append(
            f"rightsizing savings {usd_per_month(before_savings)} → {usd_per_month(savings)}."
        )
    return changes


# ---------------------------------------------------------------------------------- report

SECTION_BUILDERS: dict[str, tuple[str, Callable[[_Window], Section]]] = {
    "runway": ("Capacity runway", runway_section),
    "bottlenecks": ("Bottleneck outlook", bottleneck_section),
    "rightsizing": ("Rightsizing", rightsizing_section),
    "tokens": ("LLM token cost", token_section),
    "recommendations": ("Top recommendations", recommendations_section),
    "data-quality": ("Data quality", data_quality_section),
}


def gather_report(
    con: duckdb.DuckDBPyConnection,
    week: ReportWeek,
    source: str,
    catalog: Catalog | None = None,
    forecaster: SpendForecaster = linear_spend_forecast,
    now: datetime | None = None,
) -> WeeklyReport:
    """Every section of `week`'s report from an open (read-only) snapshot connection.

    `forecaster` projects daily LLM spend (the Dagster asset passes the forecasting engine; the
    default is the token report's documented linear trend, fast enough for tests).
    """
    window = _Window(con, week, catalog, forecaster)
    sections: dict[str, Section] = {}
    for key, (title, build) in SECTION_BUILDERS.items():
        try:
            sections[key] = build(window)
        except Unavailable as why:
            sections[key] = Section(key, title, unavailable=str(why))
        except READ_ERRORS as error:
            # A table with the wrong shape must not take the whole report down: say which.
            sections[key] = Section(key, title, unavailable=_first_line(error))
    summary_box, summary = summary_section(window, sections)
    summary["sections_unavailable"] = {
        s.key: s.unavailable for s in sections.values() if s.unavailable
    }
    summary["data_quality_problems"] = sections["data-quality"].facts.get("problems", [])
    return WeeklyReport(
        week=week,
        generated_at=now or datetime.now(UTC),
        source=source,
        sections=[summary_box, *sections.values()],
        summary=summary,
    )

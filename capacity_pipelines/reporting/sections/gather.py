"""Gather the weekly report: build every section, turn a failed one into a box, add the summary.

Apart from the sections so that the rule "a missing or malformed table costs one section, never
the report" is written once, around every builder alike.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import duckdb

from capacity_pipelines.ingest.catalog import Catalog
from capacity_pipelines.reporting.model import Section, WeeklyReport
from capacity_pipelines.reporting.sections.anomalies import anomalies_section
from capacity_pipelines.reporting.sections.bottlenecks import bottleneck_section
from capacity_pipelines.reporting.sections.data_quality import data_quality_section
from capacity_pipelines.reporting.sections.reads import (
    READ_ERRORS,
    ReportWindow,
    SpendForecaster,
    Unavailable,
    first_line,
)
from capacity_pipelines.reporting.sections.recommendations import recommendations_section
from capacity_pipelines.reporting.sections.rightsizing import rightsizing_section
from capacity_pipelines.reporting.sections.runway import runway_section
from capacity_pipelines.reporting.sections.summary import summary_section
from capacity_pipelines.reporting.sections.tokens import token_section
from capacity_pipelines.reporting.weeks import ReportWeek
from capacity_pipelines.tokens.report import linear_spend_forecast

SECTION_BUILDERS: dict[str, tuple[str, Callable[[ReportWindow], Section]]] = {
    "runway": ("Capacity runway", runway_section),
    "bottlenecks": ("Bottleneck outlook", bottleneck_section),
    "anomalies": ("What was unusual this week", anomalies_section),
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
    window = ReportWindow(con, week, catalog, forecaster)
    sections: dict[str, Section] = {}
    for key, (title, build) in SECTION_BUILDERS.items():
        try:
            sections[key] = build(window)
        except Unavailable as why:
            sections[key] = Section(key, title, unavailable=str(why))
        except READ_ERRORS as error:
            # A table with the wrong shape must not take the whole report down: say which.
            sections[key] = Section(key, title, unavailable=first_line(error))
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

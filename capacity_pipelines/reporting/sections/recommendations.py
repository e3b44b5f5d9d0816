"""The top recommendations section: the ranked list and where its SRE review stands.

One module per section; `open_savings` is also what the summary's savings figure and its
week-over-week comparison use, so both count the same recommendations.
"""

from __future__ import annotations

import polars as pl

from capacity_pipelines.common.formatting import usd_per_month
from capacity_pipelines.recommendations.findings import EVIDENCE_CHARS
from capacity_pipelines.recommendations.findings.schema import one_line
from capacity_pipelines.recommendations.headline import savings_headline
from capacity_pipelines.recommendations.tables import RECOMMENDATIONS_TABLE
from capacity_pipelines.reporting.model import ReportTable, Section
from capacity_pipelines.reporting.sections.reads import ReportWindow
from capacity_pipelines.reporting.sections.text import percent, text_table, utc_day

TOP_RECOMMENDATIONS = 10


def open_savings(open_rows: pl.DataFrame) -> float:
    """$ per month of open recommendations that save money and were not rejected, measured
    and estimated together (the summary states them apart: `savings_headline`)."""
    headline = savings_headline(open_rows)
    return headline.measured_usd_month + headline.estimated_usd_month


def _basis(rows: pl.DataFrame) -> list[str | None]:
    """measured / estimated per row (rows of an older release have no basis)."""
    if "saving_basis" not in rows.columns:
        return [None] * rows.height
    return rows["saving_basis"].to_list()


def recommendations_section(window: ReportWindow) -> Section:
    """The top ranked recommendations and where their review stands."""
    section = Section("recommendations", "Top recommendations")
    as_of = window.week_as_of(RECOMMENDATIONS_TABLE.name)
    rows = window.rows_at(RECOMMENDATIONS_TABLE.name, as_of)
    open_rows = rows.filter(pl.col("status") == "open").sort("rank")
    top = open_rows.head(TOP_RECOMMENDATIONS)
    reviews = open_rows.group_by("review_status").len().sort("review_status")
    headline = savings_headline(open_rows)
    savings = headline.measured_usd_month + headline.estimated_usd_month
    section.facts = {
        "as_of": as_of,
        "savings_usd_month": savings,
        "headline": headline,
        "ids": set(open_rows["recommendation_id"].to_list()),
        "review_status": dict(reviews.iter_rows()),
    }
    section.bullets.append(
        f"{open_rows.height} open recommendations ranked on {utc_day(as_of)}; review status: "
        + (", ".join(f"{k} {v}" for k, v in reviews.iter_rows()) or "none")
        + f". Not rejected and saving money: {headline.text()}."
    )
    display = text_table(
        {
            "rank": [str(v) for v in top["rank"]],
            "target": [str(v) for v in top["target"]],
            "action": [str(v) for v in top["action"]],
            "impact": [
                usd_per_month(v) + (f" ({b})" if b else "")
                for v, b in zip(top["impact_usd_month"], _basis(top), strict=True)
            ],
            "confidence": [percent(v) for v in top["confidence"]],
            "priority": [f"{v:.1f}" if isinstance(v, float) else str(v) for v in top["priority"]],
            "review": [str(v) for v in top["review_status"]],
            "evidence": [one_line(v, EVIDENCE_CHARS) for v in top["evidence"]],
        }
    )
    section.tables.append(ReportTable("recommendations", "Ranked recommendations", display, top))
    return section

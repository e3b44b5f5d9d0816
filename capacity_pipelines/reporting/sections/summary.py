"""The executive summary: spend, savings available, services at risk, what changed since last week.

Its own module because it is built last, from the other sections' facts (so a table they found
malformed is not read twice), plus the week's compute spend and last week's as-of days.
"""

from __future__ import annotations

import polars as pl

from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.common.formatting import usd, usd_per_month
from capacity_pipelines.forecasting.fleet import RUNWAY_TABLE
from capacity_pipelines.ingest.tables import CONTAINER_USAGE_TABLE
from capacity_pipelines.recommendations.tables import RECOMMENDATIONS_TABLE
from capacity_pipelines.reporting.model import ReportTable, Section
from capacity_pipelines.reporting.sections.bottlenecks import bottleneck_risks
from capacity_pipelines.reporting.sections.reads import READ_ERRORS, ReportWindow, first_line
from capacity_pipelines.reporting.sections.recommendations import open_savings
from capacity_pipelines.reporting.sections.rightsizing import sizing_down_savings
from capacity_pipelines.reporting.sections.runway import runway_risks
from capacity_pipelines.reporting.sections.text import change
from capacity_pipelines.rightsizing.prices import GIB, load_compute_prices
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE

HOURS_PER_WEEK = 168


def merge_risks(*risks: dict[str, str]) -> dict[str, list[str]]:
    """Services at risk from several sections -> every reason given for each service."""
    merged: dict[str, list[str]] = {}
    for found in risks:
        for name, reason in found.items():
            merged.setdefault(name, []).append(reason)
    return merged


def _compute_spend(window: ReportWindow) -> float | None:
    """The week's requested CPU and memory at compute list prices (what the fleet reserves)."""
    if window.table_status(CONTAINER_USAGE_TABLE):
        return None
    steps, mean_cores, mean_bytes = window.requested_resources()
    if not steps:
        return None
    price = load_compute_prices().price(on=window.week.monday)
    hourly = (mean_cores or 0.0) * price.usd_per_vcpu_hour + (
        mean_bytes or 0.0
    ) / GIB * price.usd_per_gib_hour
    return hourly * HOURS_PER_WEEK


def summary_section(window: ReportWindow, sections: dict[str, Section]) -> tuple[Section, dict]:
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
    measured = estimated = expected = None
    if recommendations.unavailable is None:
        savings, savings_from = recommendations.facts["savings_usd_month"], "open recommendations"
        headline = recommendations.facts["headline"]
        measured, estimated = headline.measured_usd_month, headline.estimated_usd_month
        expected = headline.expected_usd_month
    elif rightsizing.unavailable is None:
        # rightsizing prices requests sized from observed usage: all of it is measured
        savings, savings_from = rightsizing.facts["savings_usd_month"], "rightsizing"
        measured = savings
    else:
        savings, savings_from = None, "no savings source yet"
    # From the sections, which already turned a malformed table into an "unavailable" box.
    at_risk = merge_risks(
        sections["runway"].facts.get("at_risk", {}),
        sections["bottlenecks"].facts.get("at_risk", {}),
    )
    summary = {
        "week": window.week.label,
        "llm_spend_usd": llm,
        "llm_spend_previous_week_usd": llm_before,
        "compute_spend_usd": compute,
        # measured and estimated together: quote it only with the split below
        "savings_available_usd_month": savings,
        "savings_measured_usd_month": measured,
        "savings_estimated_usd_month": estimated,
        "savings_expected_usd_month": expected,
        "savings_source": savings_from,
        "services_at_risk": {k: "; ".join(v) for k, v in at_risk.items()},
    }
    total = (llm or 0.0) + (compute or 0.0) if llm is not None or compute is not None else None
    section.bullets.append(
        f"Spend this week: {usd(total)} = LLM {usd(llm)} + compute {usd(compute)} "
        "(requested CPU and memory at list price)."
    )
    # Measured first: estimates rest on assumed shares and would drown it (99.9 % of the
    # demo's summed "savings available" was assumption).
    section.bullets.append(
        f"Savings measured: {usd_per_month(measured)} (from {savings_from}, priced from observed "
        "usage)"
        + (
            f"; estimated on stated assumptions: {usd_per_month(estimated)} more, expected value "
            f"{usd_per_month(expected)} (saving x confidence)"
            if estimated
            else ""
        )
        + "."
    )
    section.bullets.append(
        f"Services at risk: {len(at_risk)}"
        + (": " + "; ".join(f"{k} ({', '.join(v)})" for k, v in at_risk.items()) if at_risk else "")
        + "."
    )
    try:
        changes = _changes(window, sections, at_risk, llm, llm_before, savings, savings_from)
    except READ_ERRORS as error:
        changes = [f"could not compare with last week: {first_line(error)}"]
    summary["changes"] = changes
    section.bullets.extend(f"Since last week: {c}" for c in changes)
    summary["headline"] = (
        f"{window.week.label}: spend {usd(total)} (LLM {usd(llm)}), measured savings "
        f"{usd_per_month(measured)} (estimated {usd_per_month(estimated)} more), "
        f"{len(at_risk)} services at risk"
    )
    kpis = pl.DataFrame(
        {
            "measure": ["LLM spend", "compute spend", "savings measured",
                        "savings estimated (assumptions)", "expected value of savings",
                        "services at risk"],  # fmt: skip
            "this week": [usd(llm), usd(compute), usd_per_month(measured),
                          usd_per_month(estimated), usd_per_month(expected),
                          str(len(at_risk))],  # fmt: skip
            "last week": [usd(llm_before), "", "", "", "", ""],
            "change": [change(llm, llm_before), "", "", "", "", ""],
        }
    )
    section.tables.append(ReportTable("summary", "Headline numbers", kpis, kpis))
    return section, summary


def _changes(window, sections, at_risk, llm, llm_before, savings, savings_from) -> list[str]:
    """What moved since last week's report: LLM spend, services at risk, savings available."""
    changes = []
    if llm_before:
        changes.append(f"LLM spend {change(llm, llm_before)} ({usd(llm_before)} → {usd(llm)}).")
    else:
        changes.append("no LLM spend recorded last week to compare with.")
    runway_before = window.previous_as_of(RUNWAY_TABLE.name)
    bottleneck_before = window.previous_as_of(BOTTLENECK_TABLE.name)
    if runway_before is None and bottleneck_before is None:
        changes.append("no earlier as-of day of the forecasts to compare risks with.")
    else:
        before = merge_risks(
            runway_risks(window, runway_before), bottleneck_risks(window, bottleneck_before)
        )
        new, gone = sorted(set(at_risk) - set(before)), sorted(set(before) - set(at_risk))
        changes.append(
            f"newly at risk: {', '.join(new) or 'none'}; no longer at risk: "
            f"{', '.join(gone) or 'none'}."
        )
    table = RECOMMENDATIONS_TABLE.name if savings_from == "open recommendations" else None
    if table and (before_as_of := window.previous_as_of(table)) is not None:
        old = window.rows_at(table, before_as_of).filter(pl.col("status") == "open")
        old_ids = set(old["recommendation_id"].to_list())
        new_ids = sections["recommendations"].facts["ids"] - old_ids
        before_savings = open_savings(old)
        changes.append(
            f"{len(new_ids)} new recommendations; savings available "
            f"{usd_per_month(before_savings)} → {usd_per_month(savings)}."
        )
    elif (
        savings_from == "rightsizing"
        and (before_as_of := window.previous_as_of(RIGHTSIZING_TABLE.name)) is not None
    ):
        old = window.rows_at(RIGHTSIZING_TABLE.name, before_as_of)
        before_savings = sizing_down_savings(old)
        changes.append(
            f"rightsizing savings {usd_per_month(before_savings)} → {usd_per_month(savings)}."
        )
    return changes

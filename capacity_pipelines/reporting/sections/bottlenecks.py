"""The bottleneck outlook section: where the next bottleneck is likely, per service and horizon.

Its own module, beside the runway, because `bottleneck_risks` feeds the summary's "services at
risk" and its week-over-week comparison as well as this section.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.reporting.model import ReportTable, Section
from capacity_pipelines.reporting.sections.reads import ReportWindow
from capacity_pipelines.reporting.sections.text import percent, text_table, utc_day

BOTTLENECK_AT_RISK_PROBABILITY = 0.5  # "likely": the classifier's more-likely-than-not line


def bottleneck_risks(window: ReportWindow, as_of: datetime | None) -> dict[str, str]:
    """Services with a likely bottleneck (any horizon), with the class and probability."""
    outlook = window.rows_at(BOTTLENECK_TABLE.name, as_of)
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
            f"{row['bottleneck_class']} bottleneck {percent(row['probability'])} within "
            f"{row['horizon']}",
        )
    return risks


def bottleneck_section(window: ReportWindow) -> Section:
    """Where the next bottleneck is likely, per service and horizon."""
    section = Section("bottlenecks", "Bottleneck outlook")
    as_of = window.week_as_of(BOTTLENECK_TABLE.name)
    outlook = window.rows_at(BOTTLENECK_TABLE.name, as_of)
    likely = outlook.filter(pl.col("bottleneck_class") != "none").sort(
        "probability", descending=True
    )
    services = outlook.select("namespace", "service").unique().height
    section.facts = {"as_of": as_of, "at_risk": bottleneck_risks(window, as_of)}
    section.bullets.append(
        f"Outlook from {utc_day(as_of)} for {services} services: {likely.height} service-horizon "
        f"pairs with a bottleneck class other than none; "
        f"{len(section.facts['at_risk'])} services at or above "
        f"{BOTTLENECK_AT_RISK_PROBABILITY:.0%} probability."
    )
    display = text_table(
        {
            "service": [f"{r['namespace']}/{r['service']}" for r in likely.iter_rows(named=True)],
            "horizon": likely["horizon"].cast(pl.Utf8).to_list(),
            "bottleneck": likely["bottleneck_class"].cast(pl.Utf8).to_list(),
            "probability": [percent(v) for v in likely["probability"]],
            "expected at": [utc_day(v) if v else "" for v in likely["expected_at"].to_list()],
            "evidence": [v or "" for v in likely["evidence"].cast(pl.Utf8).to_list()],
            "method": likely["method"].cast(pl.Utf8).to_list(),
        }
    )
    section.tables.append(ReportTable("bottleneck_outlook", "Likely bottlenecks", display, likely))
    return section

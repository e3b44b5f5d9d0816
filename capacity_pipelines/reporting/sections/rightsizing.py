"""The rightsizing section: container requests to change, largest risks and savings first.

One module per section; its savings total is also the summary's fallback savings figure when
no recommendations have been ranked yet.
"""

from __future__ import annotations

import re

import polars as pl

from capacity_pipelines.common.formatting import cores, iec_bytes, usd_per_month
from capacity_pipelines.recommendations.tables import RECOMMENDATIONS_TABLE
from capacity_pipelines.reporting.model import ReportTable, Section
from capacity_pipelines.reporting.sections.reads import ReportWindow
from capacity_pipelines.reporting.sections.text import percent, text_table, utc_day
from capacity_pipelines.rightsizing.tables import HISTORY_DAYS, RIGHTSIZING_TABLE

TOP_RIGHTSIZING = 15


def sizing_down_savings(rows: pl.DataFrame) -> float:
    """$ per month saved by the size-downs of one as-of day (size-ups cost, they are apart)."""
    sized = rows.filter((pl.col("status") == "ok") & (pl.col("monthly_saving_usd") > 0))
    return float(sized["monthly_saving_usd"].sum())


def rightsizing_section(window: ReportWindow) -> Section:
    """Container requests to change, largest risks and savings first."""
    section = Section("rightsizing", "Rightsizing")
    as_of = window.week_as_of(RIGHTSIZING_TABLE.name)
    rows = window.rows_at(RIGHTSIZING_TABLE.name, as_of).sort("rank")
    sized = rows.filter(pl.col("status") == "ok")
    savings = sizing_down_savings(rows)
    costs = float(-sized.filter(pl.col("monthly_saving_usd") < 0)["monthly_saving_usd"].sum())
    top = sized.head(TOP_RIGHTSIZING)
    display = text_table(
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
            "confidence": [percent(v) for v in top["confidence"]],
            "saving": [usd_per_month(v) for v in top["monthly_saving_usd"]],
            "rationale": [v or "" for v in top["rationale"].to_list()],
        }
    )
    section.tables.append(ReportTable("rightsizing", "Recommended requests", display, rows))
    section.bullets.append(
        f"{sized.height} containers sized from {HISTORY_DAYS} days of history up to "
        f"{utc_day(as_of)}: "
        f"{usd_per_month(savings)} to save by sizing down, {usd_per_month(costs)} to add where "
        f"containers are at risk; {rows.height - sized.height} without a recommendation."
    )
    withheld = _withheld_cuts(window)
    if withheld:
        section.bullets.append(
            f"The ranked list withholds {len(withheld)} of these cuts, where throttling, a runway "
            "or OOM kills say the workload is short of that resource: " + "; ".join(withheld)
            + " (see Top recommendations)."
        )
    section.facts = {"as_of": as_of, "savings_usd_month": savings, "risk_cost_usd_month": costs}
    return section


# How reconciliation words a withdrawn cut in the evidence of the item that won over it.
_WITHHELD = re.compile(r"withheld: (.+?) of (\S+) \(")


def _withheld_cuts(window: ReportWindow) -> list[str]:
    """`container: change` of the request cuts the week's recommendations withdrew."""
    as_of = window.as_of(RECOMMENDATIONS_TABLE.name)
    if as_of is None:
        return []
    rows = window.rows_at(RECOMMENDATIONS_TABLE.name, as_of).filter(pl.col("status") == "open")
    found = {
        f"{target} {change}"
        for evidence in rows["evidence"].drop_nulls()
        for change, target in _WITHHELD.findall(evidence)
    }
    return sorted(found)

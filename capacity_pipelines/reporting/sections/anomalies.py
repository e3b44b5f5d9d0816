"""What was unusual this week: the hours the anomaly detector flagged, strongest first.

Read from the `anomalies` table, one as-of day per day of the week, so the section shows what
the daily runs said at the time (each hour scored from the hours before it), not a re-scoring
with hindsight.
"""

from __future__ import annotations

import polars as pl

from capacity_pipelines.anomalies.fleet import ANOMALY_TABLE
from capacity_pipelines.reporting.model import ReportTable, Section
from capacity_pipelines.reporting.sections.reads import ReportWindow
from capacity_pipelines.reporting.sections.text import (
    FAMILY_NAMES,
    entity,
    in_unit,
    text_table,
    utc_day,
)

SHOWN_ANOMALIES = 15


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def anomalies_section(window: ReportWindow) -> Section:
    """The week's flagged hours (series, hour, kind, value, score, evidence) and a count."""
    section = Section("anomalies", "What was unusual this week")
    window.require(ANOMALY_TABLE.name)
    week = window.con.execute(
        f'SELECT * FROM "{ANOMALY_TABLE.name}" WHERE as_of > ? AND as_of <= ?',
        [window.start, window.end],
    ).pl()
    flagged = week.filter(pl.col("is_anomaly")).sort("score", descending=True)
    days = week["as_of"].n_unique() if week.height else 0
    series = week["series_id"].n_unique() if week.height else 0
    section.facts = {"anomalies": flagged.height, "days_scored": days}
    if flagged.height == 0:
        section.bullets.append(
            f"Nothing unusual: {_count(week.height, 'hour')} of {series} series scored over "
            f"{_count(days, 'day')}, none beyond its own 30-day record."
        )
        return section
    kinds = flagged.group_by("kind").len().sort("len", descending=True)
    section.bullets.append(
        f"{_count(flagged.height, 'unusual hour')} in {flagged['series_id'].n_unique()} of "
        f"{series} series over {_count(days, 'scored day')} ("
        + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in kinds.iter_rows())
        + "). Each hour is scored from the hours before it: a spike is an incident or a "
        "one-off, a level shift or trend change may be new demand (check the runway)."
    )
    top = flagged.head(SHOWN_ANOMALIES)
    display = text_table(
        {
            "series": [entity(s) for s in top["series_id"]],
            "what": [FAMILY_NAMES.get(f, f) for f in top["family"]],
            "hour": [utc_day(t) for t in top["ts"].to_list()],
            "kind": [k.replace("_", " ") for k in top["kind"]],
            "value": [in_unit(f, v) for f, v in zip(top["family"], top["value"], strict=True)],
            "score": [f"{s:.2f}" for s in top["score"]],
            "evidence": top["evidence"].to_list(),
        }
    )
    section.tables.append(ReportTable("anomalies", "Strongest anomalies", display, flagged))
    return section

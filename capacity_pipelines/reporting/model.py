"""What a report is made of: sections holding plain text, tables and charts.

Everything here is plain data; escaping happens when it is rendered (render.py), so a label
value from the warehouse can never become markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from capacity_pipelines.reporting.weeks import ReportWeek


@dataclass(frozen=True)
class ReportTable:
    """A table for people (`display`: formatted strings) and its raw rows for CSV/JSON exports."""

    name: str  # file stem of the CSV export, e.g. "rightsizing"
    title: str
    display: pl.DataFrame
    raw: pl.DataFrame


@dataclass(frozen=True)
class Chart:
    """A chart: a PNG (from `common.charts`) or an SVG built with escaped labels."""

    title: str
    png: bytes | None = None
    svg: str | None = None


@dataclass
class Section:
    """One section of the report; `unavailable` says why it could not be built (shown as a box)."""

    key: str
    title: str
    bullets: list[str] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    unavailable: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # numbers for the summary and JSON


@dataclass
class WeeklyReport:
    """The whole report for one week, ready to render."""

    week: ReportWeek
    generated_at: datetime
    source: str
    sections: list[Section]
    summary: dict[str, Any]  # headline numbers (JSON export, webhook)

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)

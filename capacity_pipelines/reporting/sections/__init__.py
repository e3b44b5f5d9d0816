"""Gather the weekly report's sections from the read-only warehouse snapshot.

Derived tables are windowed by `as_of` (a day boundary): week W reads the latest `as_of` at or
before W's end, and "what changed" compares with the latest `as_of` at or before the previous
week's end. Raw tables (usage, tokens) are read for the week itself, `ts` in `(start, end]`
(a 5-minute row is stamped at the end of its step). A section whose table is missing or empty
becomes a "not available yet: <why>" box; the report is still written.

The package keeps the snapshot reads (`reads`, all the SQL, behind `ReportWindow`) apart from
the section builders (one module per section, `summary` last, `text` for the shared
formatting) and from `gather`, which runs them. The names other modules import are re-exported
here, so `from capacity_pipelines.reporting.sections import gather_report` keeps working.
"""

from capacity_pipelines.reporting.sections.bottlenecks import (
    BOTTLENECK_AT_RISK_PROBABILITY,
    bottleneck_risks,
    bottleneck_section,
)
from capacity_pipelines.reporting.sections.data_quality import data_quality_section
from capacity_pipelines.reporting.sections.gather import SECTION_BUILDERS, gather_report
from capacity_pipelines.reporting.sections.reads import (
    READ_ERRORS,
    ReportWindow,
    SpendForecaster,
    Unavailable,
)
from capacity_pipelines.reporting.sections.recommendations import recommendations_section
from capacity_pipelines.reporting.sections.rightsizing import rightsizing_section
from capacity_pipelines.reporting.sections.runway import runway_risks, runway_section
from capacity_pipelines.reporting.sections.summary import summary_section
from capacity_pipelines.reporting.sections.text import RUNWAY_AT_RISK_DAYS
from capacity_pipelines.reporting.sections.tokens import token_section

__all__ = [
    "BOTTLENECK_AT_RISK_PROBABILITY",
    "READ_ERRORS",
    "RUNWAY_AT_RISK_DAYS",
    "SECTION_BUILDERS",
    "ReportWindow",
    "SpendForecaster",
    "Unavailable",
    "bottleneck_risks",
    "bottleneck_section",
    "data_quality_section",
    "gather_report",
    "recommendations_section",
    "rightsizing_section",
    "runway_risks",
    "runway_section",
    "summary_section",
    "token_section",
]

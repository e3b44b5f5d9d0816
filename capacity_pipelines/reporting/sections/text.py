"""How numbers, days and series read in the report: the formatting every section shares.

One module so that a percentage, a runway or a day is written the same way in every table and
bullet of the report (and in the summary that quotes them).
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from capacity_pipelines.common.formatting import cores, iec_bytes
from capacity_pipelines.forecasting.fleet import HORIZON_HOURS

RUNWAY_AT_RISK_DAYS = HORIZON_HOURS / 24  # a runway inside the forecast horizon is a risk


def text_table(columns: dict[str, list]) -> pl.DataFrame:
    """A table of formatted strings for people (typed as text even when it has no rows)."""
    return pl.DataFrame(columns, schema={name: pl.Utf8 for name in columns})


def percent(value: float | None) -> str:
    """A share as a whole percentage; n/a for a missing or NaN value."""
    return "n/a" if value is None or value != value else f"{value:.0%}"


def change(now: float | None, before: float | None) -> str:
    """Relative change since `before` (+12.3%); n/a without a non-zero `before`."""
    if now is None or not before:
        return "n/a"
    return f"{now / before - 1:+.1%}"


def utc_day(value: datetime | None) -> str:
    """A naive-UTC warehouse timestamp as people read it, with its zone."""
    return "n/a" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def entity(series_id: str) -> str:
    """What a forecast series is about: `workload_cpu:ns/name` -> `ns/name`."""
    return series_id.split(":", 1)[-1]


def in_unit(family: str, value: float | None) -> str:
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


def runway_text(days: float | None) -> str:
    """Days of runway; beyond the horizon says so instead of a number the forecast lacks."""
    if days is None or days != days:
        return f"> {RUNWAY_AT_RISK_DAYS:.0f} days"
    return "at capacity now" if days <= 0 else f"{days:.1f} days"

"""The one shape every finding producer emits, and the small helpers they share to fill it.

Kept apart from the producers so that scoring, the benchmark and each producer depend on the
shape alone, not on one another: a new source of findings is a new module that imports this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from capacity_pipelines.forecasting.fleet import HORIZON_HOURS

HORIZON_DAYS = HORIZON_HOURS / 24  # capacity_runway looks as far ahead as the forecasts (a week)

FINDING_SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.Utf8,
    "target": pl.Utf8,
    "namespace": pl.Utf8,
    "service": pl.Utf8,
    "action": pl.Utf8,
    "evidence": pl.Utf8,
    "evidence_value": pl.Float64,
    "source_table": pl.Utf8,
    "impact_usd_month": pl.Float64,
    "slo_risk_avoided": pl.Float64,
    "runway_days_gained": pl.Float64,
    "confidence": pl.Float64,
    "history_days": pl.Float64,
    "forecast_uncertainty": pl.Float64,
    "headroom_after": pl.Float64,
    "workloads": pl.Int64,
    # When the action is due (a forecast saturation, an expected bottleneck); NULL: no deadline.
    "deadline": pl.Datetime("us"),
    # The newest sample of the target's data: advice on a target that stopped reporting is void.
    "evidence_last_seen": pl.Datetime("us"),
    # Which way the action moves the target's CPU and memory (up | down | NULL): one target gets
    # one direction per resource (collect.reconcile_directions).
    "cpu_direction": pl.Utf8,
    "memory_direction": pl.Utf8,
    # measured (from observed usage or labelled traffic) | estimated (an assumed share or
    # ratio) | NULL (no saving): the headline keeps the two apart.
    "saving_basis": pl.Utf8,
    # A rightsizing finding's per-resource changes ("CPU request 500m -> 430m") and the CPU
    # part's share of its saving: what reconciliation withdraws when another finding on the
    # same resource points the other way.
    "cpu_change": pl.Utf8,
    "memory_change": pl.Utf8,
    "cpu_saving_share": pl.Float64,
    # A size-up of a request use already exceeds: listed whatever it costs (the request is
    # wrong), without an SLO risk of its own.
    "use_above_request": pl.Boolean,
}


@dataclass
class Findings:
    """Every finding of one as-of day, notes on what could not be looked at, the newest sample
    of each target (`reads.LastSeen`) and the findings reconciliation withdrew, with why."""

    frame: pl.DataFrame
    notes: list[str] = field(default_factory=list)
    last_seen: Any = None
    withdrawn: dict[tuple, str] = field(default_factory=dict)


def empty_findings() -> pl.DataFrame:
    """No findings, typed: concatenates with any producer's output."""
    return pl.DataFrame(schema=FINDING_SCHEMA)


def finding_frame(rows: list[dict]) -> pl.DataFrame:
    """Producer rows -> the finding schema; a finding names one workload unless it says more."""
    defaults = {"workloads": 1}
    full = [{c: row.get(c, defaults.get(c)) for c in FINDING_SCHEMA} for row in rows]
    return pl.DataFrame(full, schema=FINDING_SCHEMA) if full else empty_findings()


def one_line(text: str | None, limit: int | None = None) -> str:
    """Evidence on one line; with a `limit`, at most that many characters (an ellipsis says it
    was cut). The table keeps evidence whole: lists cut it for display, the detail view not."""
    line = " ".join(str(text or "").split())
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"


def finite(value: float | None) -> bool:
    """A number a ratio can be taken of: not missing, not NaN."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))

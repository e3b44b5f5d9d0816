"""Data-quality verdicts on an extracted window: completeness, gaps, sign, freshness, and
utilisation readings that cannot be labelled.

Pure functions returning plain verdicts, so the same rules back the Dagster asset checks, the
CLI and the weekly report's data-quality section.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from capacity_pipelines.common.utilisation import (
    CONTAINER_READINGS,
    NO_CAPACITY,
    count_problems,
)
from capacity_pipelines.ingest.extract import ExtractedTable

FULL_COVERAGE = 0.9  # a series is "complete" with at least 90 % of its expected points
COMPLETE_SERIES_SHARE = 0.8  # below this share of complete series the window WARNs


@dataclass(frozen=True)
class Verdict:
    """Outcome of one rule: passed or not, how bad (`warn`/`error`) and what it saw."""

    name: str
    passed: bool
    severity: str
    description: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)


def completeness(extracted: ExtractedTable) -> Verdict:
    """Expected points per series in the window, gaps, and an ERROR when nothing came back.

    Pods start and stop within a day, so incomplete series only WARN. An empty window also
    WARNs: a team without LLM metrics has an empty token table every day, and the writer keeps
    the previous rows rather than wiping a window the source no longer holds.
    """
    frame, table = extracted.frame, extracted.table
    if frame.height == 0:
        return Verdict(
            "completeness",
            False,
            "warn",
            f"no rows for {table.name} in the window from {extracted.source}; "
            "the warehouse keeps what it had",
            {"rows": 0, "series": 0, "expected_points_per_series": extracted.expected_points},
        )
    expected = max(extracted.expected_points, 1)
    step_s = (extracted.end - extracted.start).total_seconds() / expected
    per_series = frame.group_by(list(table.key)).agg(
        pl.len().alias("len"), pl.col("ts").min().alias("first"), pl.col("ts").max().alias("last")
    )
    # A pod that started or stopped within the window (rollout, HPA, restart) expects points
    # only while it existed: churn is how Kubernetes works, holes inside a life are gaps.
    lifetime = ((pl.col("last") - pl.col("first")).dt.total_seconds() / step_s + 1).clip(1)
    per_series = per_series.with_columns(
        (pl.col("len") / lifetime).clip(upper_bound=1.0).alias("coverage"),
        (pl.col("len") < expected).alias("short"),
    )
    coverage = per_series["coverage"]
    complete_share = float((coverage >= FULL_COVERAGE).mean())
    gaps = int((coverage < 1.0).sum())
    churned = int(per_series.filter(pl.col("short") & (pl.col("coverage") >= 1.0)).height)
    passed = complete_share >= COMPLETE_SERIES_SHARE
    return Verdict(
        "completeness",
        passed,
        "warn",
        f"{complete_share:.0%} of series have >= {FULL_COVERAGE:.0%} of their points while they "
        f"existed; {churned} series started or stopped within the window (pod churn)",
        {
            "rows": frame.height,
            "series": per_series.height,
            "expected_points_per_series": extracted.expected_points,
            "mean_coverage": round(float(coverage.mean()), 4),
            "complete_series_share": round(complete_share, 4),
            "series_with_gaps": gaps,
            "series_churned": churned,
        },
    )


def non_negative(extracted: ExtractedTable) -> Verdict:
    """Usage, rates, sizes and token counts can never be negative: a negative is a bug upstream."""
    columns = extracted.table.value_columns
    if extracted.frame.height == 0:
        return Verdict("non_negative", True, "error", "no rows to check", {})
    counts = extracted.frame.select([(pl.col(c) < 0).sum().alias(c) for c in columns]).row(
        0, named=True
    )
    bad = {c: int(n) for c, n in counts.items() if n}
    return Verdict(
        "non_negative",
        not bad,
        "error",
        "no negative values" if not bad else f"negative values in {', '.join(bad)}",
        {f"negative_{c}": n for c, n in bad.items()} or {"negative_values": 0},
    )


def freshness(extracted: ExtractedTable, step_s: float, tolerance_steps: int = 3) -> Verdict:
    """Does the data reach the end of the window? A stale source stops early."""
    if extracted.frame.height == 0:
        return Verdict("freshness", False, "warn", "no data in the window", {})
    last = extracted.frame["ts"].max()
    end = extracted.end.replace(tzinfo=None)
    lag_s = (end - last).total_seconds() - step_s
    passed = lag_s <= tolerance_steps * step_s
    return Verdict(
        "freshness",
        passed,
        "warn",
        f"latest point {last:%Y-%m-%d %H:%M} UTC, {max(lag_s, 0) / 60:.0f} min before window end",
        {"latest_point": f"{last:%Y-%m-%dT%H:%M:%S}Z", "lag_minutes": round(max(lag_s, 0) / 60, 1)},
    )


def utilisation_verdict(extracted: ExtractedTable) -> Verdict:
    """Rows whose CPU or memory use against its limit is not a reading, counted per reason.

    The bottleneck labels skip them (`common/utilisation.py`): a limit of 0 (cAdvisor's "unset",
    a stopped VM) or usage far above the limit would otherwise be labelled a saturated resource.
    Those WARN. A container without a limit is normal (many teams set no CPU limit): it is
    counted, for the metadata, but passes.
    """
    problems = count_problems(extracted.frame, CONTAINER_READINGS)
    if not any({r.used, r.capacity} <= set(extracted.frame.columns) for r in CONTAINER_READINGS):
        return Verdict("utilisation_readings", True, "warn", "no usage against a limit here", {})
    counts = {
        f"{resource}_{reason}": int(rows)
        for resource, reason, rows in problems.iter_rows()
    }
    readings = {r.resource: r for r in CONTAINER_READINGS}
    bad = problems.filter(pl.col("reason") != NO_CAPACITY)
    description = (
        "; ".join(
            f"{rows:,} rows: {readings[resource].reason(reason)}"
            for resource, reason, rows in bad.iter_rows()
        )
        if bad.height
        else "every usage against a limit is a plausible reading"
    )
    return Verdict(
        "utilisation_readings",
        bad.height == 0,
        "warn",
        description,
        counts or {"rows_not_readings": 0},
    )


def verdicts(extracted: ExtractedTable, step_s: float) -> list[Verdict]:
    """All data-quality verdicts for one extracted window."""
    return [
        completeness(extracted),
        non_negative(extracted),
        freshness(extracted, step_s),
        utilisation_verdict(extracted),
    ]

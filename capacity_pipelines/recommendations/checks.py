"""Checks on a day's recommendations, run with the asset (and callable from a notebook)."""

from __future__ import annotations

import math
from datetime import datetime

import polars as pl

from capacity_pipelines.common.freshness import stale_before
from capacity_pipelines.recommendations.headline import SavingsHeadline


def without_evidence(table: pl.DataFrame) -> list[str]:
    """Ids of recommendations whose evidence is empty: a reviewer could not judge them."""
    empty = table.filter(pl.col("evidence").fill_null("").str.strip_chars() == "")
    return empty["recommendation_id"].to_list()


def duplicate_ids(table: pl.DataFrame) -> list[str]:
    """Ids that appear more than once in one day: a decision would apply to two actions."""
    return sorted(
        table.filter(pl.col("recommendation_id").is_duplicated())["recommendation_id"].unique()
    )


# --- invariants: a violation is a statement the list would make that is not true ------------


def _open(table: pl.DataFrame) -> pl.DataFrame:
    return table.filter(pl.col("status") == "open")


def past_deadlines(table: pl.DataFrame, as_of: datetime) -> list[str]:
    """Ids whose deadline lies before the day they were made for ("before Mon 26 Oct" said on
    30 Nov): every row, superseded ones included."""
    late = table.filter(pl.col("deadline") < as_of.replace(tzinfo=None))
    return late["recommendation_id"].to_list()


def opposite_directions(table: pl.DataFrame) -> list[str]:
    """`namespace/service resource` of open rows on one workload that move one resource both
    up and down (scale out while lowering the request): one target, one direction."""
    found = []
    for column, resource in (("cpu_direction", "CPU"), ("memory_direction", "memory")):
        both = (
            _open(table)
            .filter(pl.col(column).is_not_null())
            .group_by("namespace", "service")
            .agg(pl.col(column).n_unique().alias("directions"))
            .filter(pl.col("directions") > 1)
            .sort("namespace", "service")
        )
        found += [f"{r['namespace']}/{r['service']} {resource}" for r in both.iter_rows(named=True)]
    return found


def stale_evidence(table: pl.DataFrame, as_of: datetime) -> list[str]:
    """Ids of open rows whose target's newest sample is older than the freshness window."""
    stale = _open(table).filter(pl.col("evidence_last_seen") < stale_before(as_of))
    return stale["recommendation_id"].to_list()


def headline_mismatch(table: pl.DataFrame, headline: SavingsHeadline) -> list[str]:
    """The headline's measured part against the measured rows summed here, row by row: an
    estimate counted as measured (or a measured saving left out) makes the headline a claim
    the list does not support."""
    measured = 0.0
    for row in _open(table).iter_rows(named=True):
        if row.get("review_status") == "rejected" or row.get("saving_basis") != "measured":
            continue
        if row["impact_usd_month"] is not None and row["impact_usd_month"] > 0:
            measured += row["impact_usd_month"]
    if math.isclose(measured, headline.measured_usd_month, rel_tol=1e-9, abs_tol=0.005):
        return []
    return [f"headline measured {headline.measured_usd_month:.2f} != items {measured:.2f}"]

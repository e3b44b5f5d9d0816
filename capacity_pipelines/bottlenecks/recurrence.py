"""How often a fleet's bottlenecks come back: episodes of the USE-rule labels, and the chance
that one seen comes back within a horizon, learned from the fleet's own past.

Shared by the outlook (a rule that expects a class back states this chance, not a coin flip)
and the recommendations (a bottleneck seen last week and over). Pure Polars, no Dagster.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import polars as pl

WATCH_DAYS = 7  # each episode is watched this long after its end for a recurrence

# Hours without a class that end an episode of it (as `benchmarks/recs_bench.py` counts them).
EPISODE_GAP_HOURS = 24


def bottleneck_episodes(labelled: pl.DataFrame) -> pl.DataFrame:
    """Labelled service-hours -> episodes (namespace, service, bottleneck_class, start, end):
    runs of one class on one service, a gap of `EPISODE_GAP_HOURS` or more ending each."""
    hours = labelled.filter(pl.col("bottleneck_class") != "none").sort(
        "namespace", "service", "bottleneck_class", "window_start"
    )
    key = ["namespace", "service", "bottleneck_class"]
    gap = pl.col("window_start").diff().over(key)
    return (
        hours.with_columns(
            ((gap.is_null()) | (gap >= timedelta(hours=EPISODE_GAP_HOURS)))
            .cum_sum()
            .over(key)
            .alias("episode")
        )
        .group_by(*key, "episode")
        .agg(pl.col("window_start").min().alias("start"), pl.col("window_start").max().alias("end"))
        .drop("episode")
        .sort(*key, "start")
    )


# Before anything is learned, a bottleneck seen and not fixed recurs within the week at even
# odds: one recurrence per 7 / ln 2 days watched (the prior's weight: one event, ~10 days).
PRIOR_RECURRENCES, PRIOR_DAYS = 1.0, WATCH_DAYS / math.log(2)


def recurrence_rate(
    labelled: pl.DataFrame, as_of: datetime, since: datetime
) -> tuple[float, int, float]:
    """The chance that a bottleneck seen on this fleet comes back within `WATCH_DAYS`, learned
    from the episodes that began at or after `since`: (chance, recurrences, days watched).

    Each episode that is over (`EPISODE_GAP_HOURS` without its class) is watched from its end
    for `WATCH_DAYS`, until the next episode of its class on its service (a recurrence), or
    until `as_of` (an episode that ended two days ago counts two days of watching, so evidence
    builds up from the first days instead of after a week). Recurrences
    per day watched are a Poisson rate with a Gamma prior (`PRIOR_RECURRENCES` in `PRIOR_DAYS`:
    even odds with no past); the chance is 1 - exp(-rate x WATCH_DAYS). A fixed "seen once,
    recurs" constant made most of the demo's "at risk" statements false (its incidents happen
    once; `benchmarks/results/recommendations.md`).
    """
    end, since = as_of.replace(tzinfo=None), since.replace(tzinfo=None)
    key = ["namespace", "service", "bottleneck_class"]
    week = timedelta(days=WATCH_DAYS)
    watched = (
        bottleneck_episodes(labelled)
        .with_columns(pl.col("start").shift(-1).over(key).alias("next_start"))
        # only episodes that are over: less than a gap ago, the next hour may still belong to it
        .filter(
            (pl.col("start") >= since) & (pl.col("end") <= end - timedelta(hours=EPISODE_GAP_HOURS))
        )
        .with_columns(
            (
                pl.col("next_start").is_not_null() & (pl.col("next_start") <= pl.col("end") + week)
            ).alias("recurred"),
            pl.min_horizontal(
                pl.col("next_start").fill_null(end), pl.col("end") + week, pl.lit(end)
            ).alias("until"),
        )
    )
    recurrences = int(watched["recurred"].sum())
    days = float(
        watched.select(
            ((pl.col("until") - pl.col("end")).dt.total_seconds() / 86_400).clip(0.0).sum()
        ).item()
    )
    rate = (recurrences + PRIOR_RECURRENCES) / (days + PRIOR_DAYS)
    return 1.0 - math.exp(-rate * WATCH_DAYS), recurrences, days


def recurrence_chance(
    labelled: pl.DataFrame, as_of: datetime, since: datetime, horizon_days: float
) -> float:
    """The chance that a bottleneck seen on this fleet comes back within `horizon_days`, from
    the same learned rate as `recurrence_rate`."""
    week_chance = recurrence_rate(labelled, as_of, since)[0]
    rate = -math.log(1.0 - week_chance) / WATCH_DAYS
    return 1.0 - math.exp(-rate * horizon_days)

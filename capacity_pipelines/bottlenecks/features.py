"""Features known ahead of time, and the class that followed, for every service and origin hour.

At an origin hour t the classifier may only see windows before t: recent saturation (last hour,
day, week), trends, what happened at the same time last week (a seasonal-naive forecast of the
coming day, relative to capacity), a trend projection of memory against its limit, how often
each class recurred at the horizon's scale, and the time of week. The target is the class of
the first labelled window in `[t, t + horizon)`: what breaks first. `expected_at` is that
window's start.
"""

from __future__ import annotations

import polars as pl

from capacity_pipelines.bottlenecks.labels import RULES
from capacity_pipelines.bottlenecks.signals import KEY

# Signals whose recent level and seasonal repeat are features (absent ones are left out).
SATURATION_SIGNALS = (
    "cpu_throttled_ratio_max",
    "cpu_limit_util_max",
    "memory_limit_util_max",
    "latency_ratio",
    "in_flight_ratio",
    "llm_quota_ratio",
    "llm_rate_limited_share",
    "llm_latency_share",
    "network_util_max",
)
LABEL_CLASSES = tuple(r.bottleneck_class for r in RULES)
DAY, WEEK = 24, 168
TREND_HOURS = 24  # memory trend fitted on the last day: long enough to see a leak through noise
MIN_HISTORY_HOURS = 24  # an origin needs a day of history before its features mean anything


def _past(expr: pl.Expr) -> pl.Expr:
    """The expression evaluated on the windows strictly before the origin."""
    return expr.shift(1).over(KEY)


def _slope(column: str, hours: int) -> pl.Expr:
    # Least-squares slope per hour over the last `hours` windows, from rolling moments.
    x = pl.int_range(pl.len()).over(KEY).cast(pl.Float64)
    y = pl.col(column)
    valid = y.is_not_null()
    xv, yv = pl.when(valid).then(x), y

    def mean(e: pl.Expr) -> pl.Expr:
        return e.rolling_mean(hours, min_samples=max(3, hours // 4)).over(KEY)

    cov = mean(xv * yv) - mean(xv) * mean(yv)
    var = mean(xv * xv) - mean(xv) ** 2
    return pl.when(var > 0).then(cov / var)


def origin_features(labelled: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
    """One row per service and origin hour: features from the past, target from the future.

    `labelled` is `labels.label_windows` output on a complete hourly grid per service. The
    target columns (`target`, `expected_at`, `target_evidence`) are null where the horizon runs
    past the data; those rows are what the outlook predicts for.
    """
    frame = labelled.sort([*KEY, "window_start"])
    signals = [s for s in SATURATION_SIGNALS if s in frame.columns]
    exprs: list[pl.Expr] = [
        pl.col("window_start").alias("origin"),
        pl.col("window_start").dt.hour().alias("hour_of_day"),
        pl.col("window_start").dt.weekday().alias("day_of_week"),
        _past(pl.int_range(pl.len()) + 1).alias("history_hours"),
    ]
    for s in signals:
        value = pl.col(s)
        exprs += [
            _past(value).alias(f"{s}_last"),
            _past(value.rolling_max(DAY, min_samples=1)).alias(f"{s}_max_24h"),
            _past(value.rolling_max(WEEK, min_samples=1)).alias(f"{s}_max_7d"),
            # Seasonal naive: what the same stretch looked like a week ago, as a forecast.
            value.rolling_max(min(horizon_hours, WEEK), min_samples=1)
            .shift(WEEK - min(horizon_hours, WEEK) + 1)
            .over(KEY)
            .alias(f"{s}_last_week"),
        ]
    if "memory_limit_util_max" in frame.columns:
        # A leak shows over a week; the day's slope mostly follows the daily cycle.
        weekly = _past(_slope("memory_limit_util_max", WEEK))
        daily_peak = _past(pl.col("memory_limit_util_max").rolling_max(DAY, min_samples=1))
        exprs += [
            _past(_slope("memory_limit_util_max", TREND_HOURS)).alias("memory_trend_per_hour"),
            weekly.alias("memory_weekly_trend_per_hour"),
            (daily_peak + weekly.clip(lower_bound=0).fill_null(0) * horizon_hours)
            .clip(0.0, 2.0)
            .alias("memory_projected"),
        ]
    # Recurrence at the horizon's own scale: the share of the last week's horizon-long blocks
    # (7 days for a 24 h horizon, the whole week for 7 days) that held the class, over the
    # blocks the history has. One spike last Tuesday recurs weekly, not daily.
    block = min(horizon_hours, WEEK)
    blocks = max(WEEK // block, 1)
    for cls in LABEL_CLASSES:
        hit = (pl.col("bottleneck_class") == cls).cast(pl.Float64)
        in_block = [
            hit.rolling_max(block, min_samples=1).shift(1 + k * block).over(KEY)
            for k in range(blocks)
        ]
        seen = pl.sum_horizontal(b.is_not_null().cast(pl.Float64) for b in in_block)
        exprs += [
            _past(hit.rolling_sum(DAY, min_samples=1)).alias(f"{cls}_hours_24h"),
            _past(hit.rolling_sum(WEEK, min_samples=1)).alias(f"{cls}_hours_7d"),
            pl.when(seen > 0)
            .then(pl.sum_horizontal(b.fill_null(0.0) for b in in_block) / seen)
            .alias(f"{cls}_recurrence"),
        ]
    return (
        frame.with_columns(exprs)
        .with_columns(_targets(horizon_hours))
        .filter(pl.col("history_hours") >= MIN_HISTORY_HOURS)
    )


def _targets(horizon_hours: int) -> list[pl.Expr]:
    # Start of the first labelled window in [t, t + horizon): a reverse rolling minimum.
    labelled_at = pl.when(pl.col("bottleneck_class") != "none").then(pl.col("window_start"))
    first_at = labelled_at.reverse().rolling_min(horizon_hours, min_samples=1).reverse().over(KEY)
    complete = (
        pl.col("window_start").shift(-(horizon_hours - 1)).over(KEY).is_not_null()
    )  # the whole horizon lies inside the data
    row_at = pl.int_range(pl.len()).over(KEY)
    first_idx = (
        pl.when(pl.col("bottleneck_class") != "none")
        .then(row_at)
        .reverse()
        .rolling_min(horizon_hours, min_samples=1)
        .reverse()
        .over(KEY)
    )
    cls_at_first = pl.col("bottleneck_class").gather(first_idx.fill_null(0)).over(KEY)
    ev_at_first = pl.col("evidence").gather(first_idx.fill_null(0)).over(KEY)
    return [
        pl.when(complete)
        .then(pl.when(first_at.is_not_null()).then(cls_at_first).otherwise(pl.lit("none")))
        .alias("target"),
        pl.when(complete).then(first_at).alias("expected_at"),
        pl.when(complete & first_at.is_not_null()).then(ev_at_first).alias("target_evidence"),
    ]


def feature_columns(features: pl.DataFrame) -> list[str]:
    """The model's inputs: everything `origin_features` derived, nothing from the future."""
    derived = (
        "_last",
        "_max_24h",
        "_max_7d",
        "_last_week",
        "_hours_24h",
        "_hours_7d",
        "_recurrence",
    )
    fixed = [
        "hour_of_day",
        "day_of_week",
        "memory_trend_per_hour",
        "memory_weekly_trend_per_hour",
        "memory_projected",
    ]
    return [c for c in features.columns if c.endswith(derived) or c in fixed]

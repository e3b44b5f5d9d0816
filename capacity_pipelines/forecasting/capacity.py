"""Capacity outputs built on forecasts: next-week peak, time to saturation, runway, clipping.

Planners size for the peak, not the mean, and want to know *when* demand crosses a limit with
a stated confidence: hence peaks of p50 and p90 and a saturation time read off an upper
quantile. A metric pinned at its limit (CPU at 100 %, a rate limiter) only shows how much was
served, not how much was asked for: such series get a "demand vs utilisation" note.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

WEEK = timedelta(days=7)
# Share of samples at (within `CLIP_TOLERANCE` of) the limit above which a series is called
# clipped: a healthy service touches its limit rarely; 5 % of an 8-week window is ~2.8 days.
CLIP_SHARE = 0.05
CLIP_TOLERANCE = 0.01
# kubernetes-mixin's CPUThrottlingHigh alert: 25 % of CFS periods throttled is "at the limit".
THROTTLED_SHARE = 0.25


def next_week_peak(forecast: pl.DataFrame) -> pl.DataFrame:
    """Per series, the highest p50 and p90 in the first 7 days of the forecast, with times."""
    first = forecast.group_by("series_id").agg(pl.col("ts").min().alias("start"))
    week = forecast.join(first, on="series_id").filter(pl.col("ts") < pl.col("start") + WEEK)
    return (
        week.group_by("series_id")
        .agg(
            pl.col("p50").max().alias("peak_p50"),
            pl.col("ts").sort_by("p50").last().alias("peak_p50_ts"),
            pl.col("p90").max().alias("peak_p90"),
            pl.col("ts").sort_by("p90").last().alias("peak_p90_ts"),
        )
        .sort("series_id")
    )


def time_to_saturation(forecast: pl.DataFrame, capacity: pl.DataFrame | float,
                       quantile: str = "p90", now: object | None = None) -> pl.DataFrame:
    """First forecast step at which `quantile` reaches the capacity, and the runway in days.

    `capacity` is one number for all series or a frame `series_id, capacity`. The runway is
    counted from `now` (default: one step before the first forecast timestamp, i.e. the end of
    the history) and is never negative. Series that do not saturate within the horizon get
    null `saturation_ts` and `runway_days`, and `saturates` False: the runway is then "longer
    than the horizon", which is a different statement from "infinite".
    """
    if quantile not in forecast.columns:
        raise ValueError(f"forecast has no column {quantile!r}")
    if isinstance(capacity, int | float):
        limits = forecast.select("series_id").unique().with_columns(
            pl.lit(float(capacity)).alias("capacity"))
    else:
        limits = capacity.select("series_id", pl.col("capacity").cast(pl.Float64))
    frame = forecast.join(limits, on="series_id", how="inner").sort("series_id", "ts")
    step = frame.group_by("series_id").agg(
        pl.col("ts").min().alias("first_ts"),
        (pl.col("ts").sort().diff().median()).alias("step"),
    )
    crossings = (
        frame.filter(pl.col(quantile) >= pl.col("capacity"))
        .group_by("series_id")
        .agg(pl.col("ts").min().alias("saturation_ts"))
    )
    out = limits.join(step, on="series_id").join(crossings, on="series_id", how="left")
    origin = (pl.lit(now).cast(pl.Datetime("us")) if now is not None
              else pl.col("first_ts") - pl.col("step").fill_null(timedelta(0)))
    return (
        out.with_columns(origin.alias("origin_ts"))
        # A series whose history ends before `now` forecasts hours already gone: a crossing
        # there means "at capacity now", never a negative runway or a deadline in the past.
        .with_columns(
            pl.when(pl.col("saturation_ts") < pl.col("origin_ts"))
            .then(pl.col("origin_ts"))
            .otherwise(pl.col("saturation_ts"))
            .alias("saturation_ts")
        )
        .with_columns(
            ((pl.col("saturation_ts") - pl.col("origin_ts")).dt.total_seconds() / 86_400.0)
            .alias("runway_days"),
            pl.col("saturation_ts").is_not_null().alias("saturates"),
            pl.lit(quantile).alias("quantile"),
        )
        .select("series_id", "capacity", "quantile", "saturation_ts", "runway_days",
                "saturates")
        .sort("series_id")
    )


def clipping_notes(history: pl.DataFrame, limits: pl.DataFrame | float | None = None,
                   throttled: pl.DataFrame | None = None) -> pl.DataFrame:
    """Flag series that sit at their limit often enough that usage understates demand.

    Without explicit `limits` the series' own maximum is the candidate limit (a plateau at the
    top is the signature of clipping). `throttled` (`series_id, ts, throttled`: share of
    throttled CFS periods) replaces "value at the limit" for the series it holds: an hourly CPU
    mean never touches its limit while the kernel throttles the bursts, and only throttling
    shows that the limit, not the demand, set the usage. Returns `series_id, clipped_share,
    clipped, note`.
    """
    if limits is None:
        frame = history.with_columns(pl.col("value").max().over("series_id").alias("limit"))
    elif isinstance(limits, int | float):
        frame = history.with_columns(pl.lit(float(limits)).alias("limit"))
    else:
        frame = history.join(limits.select("series_id", pl.col("limit").cast(pl.Float64)),
                             on="series_id")
    at_limit = pl.col("value") >= pl.col("limit") - CLIP_TOLERANCE * pl.col("limit").abs()
    throttled_ids = (throttled["series_id"].unique().implode() if throttled is not None
                     else pl.Series([], dtype=pl.Utf8).implode())
    measured = frame.filter(~pl.col("series_id").is_in(throttled_ids))
    summary = measured.group_by("series_id").agg(
        at_limit.mean().alias("clipped_share"), pl.lit("of samples at the limit").alias("what"))
    if throttled is not None and throttled.height:
        by_throttling = (
            throttled.join(frame.select("series_id").unique(), on="series_id")
            .group_by("series_id")
            .agg((pl.col("throttled") >= THROTTLED_SHARE).mean().alias("clipped_share"),
                 pl.lit(f"of hours throttled (>= {THROTTLED_SHARE:.0%} of CFS periods) at the "
                        "CPU limit").alias("what"))
        )
        summary = pl.concat([summary, by_throttling])
    return summary.with_columns(
        (pl.col("clipped_share") >= CLIP_SHARE).alias("clipped"),
    ).with_columns(
        pl.when(pl.col("clipped"))
        .then(pl.format("demand vs utilisation: {}% {}; the forecast shows served load, true "
                        "demand is higher", (pl.col("clipped_share") * 100).round(1), "what"))
        .otherwise(pl.lit(""))
        .alias("note")
    ).drop("what").sort("series_id")

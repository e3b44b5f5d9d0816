"""The outlook and its backtest on a user's own metrics, without a warehouse: the file contract of
`capacity bottlenecks`.

A user with a usage export (one row per series and sample: CPU and memory used and their
capacities, optionally the signals of the other classes) gets the same outlook the
`bottleneck_outlook` asset states, or its walk-forward backtest, and the hourly labels it was
trained and scored on, so they can score it against their own baselines. The steps are the
asset's (`signals.with_baselines` -> `labels.label_windows` -> `features.origin_features` ->
`outlook.fit_predict`); only the reading of the input differs.

What a reading is follows `common/utilisation.py`: a capacity of 0 or null, or a null usage, is
missing data (the hour keeps its place in the grid and is labelled from what else it has); a
usage far above its capacity is a bad reading, counted and never a label. No look-ahead: an
origin's features come from rows with `ts < origin`, and the model that predicts it was trained
at the start of its UTC day on targets whose horizon ended by then, as the daily asset would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from capacity_pipelines.bottlenecks.features import origin_features
from capacity_pipelines.bottlenecks.labels import label_windows
from capacity_pipelines.bottlenecks.outlook import fit_predict, outlook_recurrence
from capacity_pipelines.bottlenecks.signals import KEY, with_baselines
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_CLASSES, HORIZONS
from capacity_pipelines.common.contracts import Column, ContractError, check_frame, check_rows
from capacity_pipelines.common.utilisation import (
    CPU_UTIL_MAX,
    MEMORY_UTIL_MAX,
    Reading,
    count_problems,
    reading_utilisation,
)

# U: the usage file. Capacities may change over time; null = unknown, 0 = switched off.
USAGE_CONTRACT = (
    Column("series_id", "string"),
    Column("ts", "timestamp"),
    Column("cpu_cores", "number", nullable=True),
    Column("cpu_capacity_cores", "number", nullable=True),
    Column("memory_bytes", "number", nullable=True),
    Column("memory_capacity_bytes", "number", nullable=True),
    # Optional signals of the other classes (absent: the class is not labelled or listed).
    Column("cpu_throttled_ratio", "number", required=False, nullable=True),
    Column("oom_kills", "number", required=False, nullable=True),
    Column("latency_seconds", "number", required=False, nullable=True),
    Column("requests_in_flight", "number", required=False, nullable=True),
    Column("llm_rate_limited_share", "number", required=False, nullable=True),
)
SHARES = ("cpu_throttled_ratio", "llm_rate_limited_share")  # fractions: 0..1
USAGE_DOCS = {
    "series_id": "A container, pod, VM or service: one outlook per series.",
    "ts": "Sample time, UTC-zoned (naive timestamps are refused: their zone is a guess).",
    "cpu_cores": "CPU used (cores, mean over the sample's step); null = not measured.",
    "cpu_capacity_cores": "CPU the series may use (limit or provisioned cores); 0 = switched "
    "off, null = unknown.",
    "memory_bytes": "Memory used (working set, bytes); null = not measured.",
    "memory_capacity_bytes": "Memory limit or provisioned memory (bytes); 0 / null as above.",
    "cpu_throttled_ratio": "Optional: share of CFS periods throttled (0..1); 25 % labels cpu.",
    "oom_kills": "Optional: OOM kills in the step; one labels memory.",
    "latency_seconds": "Optional: request latency (one percentile, consistently); 3x its usual "
    "level while CPU is not above its usual level labels io_database.",
    "requests_in_flight": "Optional (with latency_seconds): requests in flight; twice the usual "
    "with latency half again above usual labels queueing.",
    "llm_rate_limited_share": "Optional: share of LLM calls answered 429 (0..1); 1 % labels "
    "llm_provider.",
}
# The warehouse's column names, so the asset's labelling and features apply unchanged.
READINGS = {
    "cpu_limit_util_max": Reading("cpu", "cpu_cores", "cpu_capacity_cores", CPU_UTIL_MAX),
    "memory_limit_util_max": Reading(
        "memory", "memory_bytes", "memory_capacity_bytes", MEMORY_UTIL_MAX
    ),
}
NAMESPACE = ""  # series are keyed by id alone; the asset's key is (namespace, service)
BACKTEST_WARMUP_DAYS = 7  # origins from the series' first UTC midnight plus a week
BACKTEST_TAIL_HOURS = 24  # ... up to 24 h before its data ends


@dataclass(frozen=True)
class OptionalSignal:
    """An optional U column: the hourly signal the rules read, and the classes it enables."""

    column: str
    signal: str
    aggregate: str  # max, sum or mean over the hour
    classes: tuple[str, ...]
    needs: tuple[str, ...] = ()


OPTIONAL_SIGNALS = (
    OptionalSignal("cpu_throttled_ratio", "cpu_throttled_ratio_max", "max", ()),
    OptionalSignal("oom_kills", "oom_kills", "sum", ()),
    OptionalSignal("latency_seconds", "latency_p95_seconds", "mean", ("io_database",)),
    OptionalSignal(
        "requests_in_flight", "in_flight_requests", "mean", ("queueing",), ("latency_seconds",)
    ),
    OptionalSignal("llm_rate_limited_share", "llm_rate_limited_share", "mean", ("llm_provider",)),
)


@dataclass
class Usage:
    """A checked usage file as hourly windows per series, and what it said about its rows."""

    windows: pl.DataFrame  # one row per series and hour of its span (a complete grid)
    classes: tuple[str, ...]  # the classes every outlook lists, 'none' last
    dropped: pl.DataFrame  # rows that are not readings: resource, reason, rows
    last_ts: datetime
    step: timedelta


def check_usage(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Refuse a usage frame that breaks the contract (one line naming file and column)."""
    if "ts" in frame.columns:
        dtype = frame.schema["ts"]
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
            raise ContractError(
                f"{source}: column ts: timestamps have no time zone (write them UTC-zoned, e.g. "
                "Datetime('us', 'UTC'); a naive time could be any zone)"
            )
        if dtype == pl.Date:
            raise ContractError(f"{source}: column ts: dates, expected timestamps")
    # NaN is missing data here (a source that divided by a capacity of 0), as in the gate.
    frame = frame.with_columns(
        pl.when(pl.col(c).is_nan()).then(None).otherwise(pl.col(c)).alias(c)
        for c, dtype in frame.schema.items()
        if dtype.is_float()
    )
    # Repeated (series_id, ts) rows are kept: exports that merge scrapes repeat samples, and an
    # hour's label reads its highest reading, which a repeat cannot change.
    frame = check_frame(frame, source, USAGE_CONTRACT)
    check_rows(
        frame,
        source,
        [(c, "are above 1 (a share of 0..1 was expected)", pl.col(c) > 1) for c in SHARES
         if c in frame.columns],
    )  # fmt: skip
    return frame


def usage_classes(columns: list[str]) -> tuple[str, ...]:
    """The classes the columns can establish, in `BOTTLENECK_CLASSES` order, 'none' last: from
    the schema alone, so every origin of every series lists the same classes."""
    present = {"cpu", "memory", "none"}
    for signal in OPTIONAL_SIGNALS:
        if signal.column in columns and all(n in columns for n in signal.needs):
            present.update(signal.classes)
    return tuple(c for c in BOTTLENECK_CLASSES if c in present)


def _median_step(frame: pl.DataFrame) -> timedelta:
    samples = frame.select("series_id", "ts").unique().sort("series_id", "ts")
    steps = samples.select(pl.col("ts").diff().over("series_id")).to_series()
    step = steps.drop_nulls().median()
    return step if isinstance(step, timedelta) and step > timedelta(0) else timedelta(hours=1)


def usage_windows(frame: pl.DataFrame) -> Usage:
    """Hourly windows per series from checked usage rows (`check_usage`).

    An hour holds the rows with `window_start <= ts < window_start + 1 h`. CPU and memory become
    the highest utilisation reading of the hour (capacity 0 / null and bad readings dropped);
    the optional signals their hourly max, sum or mean; the seasonal baselines of latency,
    requests in flight and CPU used are added as in the asset.
    """
    columns = frame.columns
    aggregates = [
        *(reading_utilisation(r).max().alias(name) for name, r in READINGS.items()),
        pl.col("cpu_capacity_cores")
        .filter(pl.col("cpu_capacity_cores") > 0)
        .max()
        .alias("cpu_limit_cores"),
        pl.col("memory_capacity_bytes")
        .filter(pl.col("memory_capacity_bytes") > 0)
        .max()
        .alias("memory_limit_bytes"),
        pl.col("cpu_cores").mean(),
    ]
    for signal in OPTIONAL_SIGNALS:
        if signal.column in columns:
            aggregates.append(
                getattr(pl.col(signal.column), signal.aggregate)().alias(signal.signal)
            )
    hourly = (
        frame.with_columns(
            pl.col("ts").dt.replace_time_zone(None).dt.truncate("1h").alias("window_start"),
            pl.lit(NAMESPACE).alias("namespace"),
            pl.col("series_id").cast(pl.Utf8).alias("service"),
        )
        .group_by(*KEY, "window_start")
        .agg(aggregates)
    )
    windows = with_baselines(hourly)
    dropped = count_problems(frame, tuple(READINGS.values()))
    return Usage(
        windows=windows,
        classes=usage_classes(columns),
        dropped=dropped,
        last_ts=frame["ts"].max().replace(tzinfo=None),
        step=_median_step(frame),
    )


def next_origin(usage: Usage) -> datetime:
    """The hour after the file's last complete hour (an hour is complete when its last step is
    there; a partial last hour is left out, its rows are not used)."""
    hour = usage.last_ts.replace(minute=0, second=0, microsecond=0)
    end_of_data = usage.last_ts + usage.step
    return hour + timedelta(hours=1) if end_of_data >= hour + timedelta(hours=1) else hour


def backtest_origins(windows: pl.DataFrame) -> pl.DataFrame:
    """Per series, every hourly origin from its first UTC midnight plus a week up to 24 h before
    its data ends (the end of its last hour)."""
    bounds = (
        windows.group_by(KEY)
        .agg(
            (
                pl.col("window_start").min().dt.truncate("1d")
                + timedelta(days=BACKTEST_WARMUP_DAYS)
            ).alias("lo"),
            (pl.col("window_start").max() + timedelta(hours=1 - BACKTEST_TAIL_HOURS)).alias("hi"),
        )
        .filter(pl.col("lo") <= pl.col("hi"))
    )
    return (
        bounds.with_columns(pl.datetime_ranges("lo", "hi", interval="1h").alias("origin"))
        .explode("origin")
        .select(*KEY, "origin")
    )


def _long(
    test: pl.DataFrame, proba: pl.DataFrame, classes: tuple[str, ...], horizon: str
) -> pl.DataFrame:
    """Wide probabilities over `BOTTLENECK_CLASSES` -> the contract's long rows over `classes`
    (renormalised: the classes U cannot establish carry no probability)."""
    listed = proba.select(classes)
    total = listed.sum_horizontal()
    listed = listed.with_columns(
        pl.when(total > 0).then(pl.col(c) / total).otherwise(float(c == "none")).alias(c)
        for c in classes
    )
    wide = pl.concat([test.select(pl.col("service").alias("series_id"), "origin"), listed],
                     how="horizontal")  # fmt: skip
    return wide.unpivot(index=["series_id", "origin"], variable_name="class",
                        value_name="probability").with_columns(
        pl.lit(horizon).alias("horizon")
    )  # fmt: skip


def _with_origin_rows(labelled: pl.DataFrame, origin: datetime) -> pl.DataFrame:
    """Every series' grid extended up to `origin` (empty hours), so each has an origin row."""
    services = labelled.group_by(KEY).agg(pl.col("window_start").max().alias("last"))
    extra = (
        services.with_columns(
            pl.datetime_ranges(
                pl.col("last") + timedelta(hours=1), pl.lit(origin), interval="1h"
            ).alias("window_start")
        )
        .explode("window_start")
        .drop_nulls("window_start")
        .drop("last")
        .with_columns(
            pl.lit("none").alias("bottleneck_class"),
            pl.lit("").alias("evidence"),
            pl.lit("").alias("metrics"),
        )
    )
    return pl.concat([labelled, extra], how="diagonal_relaxed").sort([*KEY, "window_start"])


def outlook_now(usage: Usage, labelled: pl.DataFrame) -> pl.DataFrame:
    """O without --backtest: one origin (`next_origin`) per series and horizon."""
    origin = next_origin(usage)
    history = labelled.filter(pl.col("window_start") < origin)
    grid = _with_origin_rows(history, origin)
    parts = []
    for horizon, hours in HORIZONS.items():
        features = origin_features(grid, hours)
        train = features.filter(pl.col("target").is_not_null())
        now = features.filter(pl.col("origin") == origin)
        proba, _, _ = fit_predict(train, now, hours, outlook_recurrence(history, origin, hours))
        parts.append(_long(now, proba, usage.classes, horizon))
    return _contract_order(pl.concat(parts))


def backtest(usage: Usage, labelled: pl.DataFrame) -> pl.DataFrame:
    """O with --backtest: every origin of `backtest_origins`, walk-forward.

    Each UTC day's origins are predicted by the outlook as the asset would run at that day's
    midnight: trained on origins whose horizon ended by then, with the recurrence chance of
    the labels before it, features from the hours before each origin.
    """
    wanted = backtest_origins(labelled)
    parts = []
    for horizon, hours in HORIZONS.items():
        features = origin_features(labelled, hours)
        known = features.filter(pl.col("target").is_not_null())
        asked = features.join(wanted, on=[*KEY, "origin"], how="semi")
        days = asked.select(pl.col("origin").dt.truncate("1d").unique().sort()).to_series()
        for day in days.to_list():
            test = asked.filter(
                (pl.col("origin") >= day) & (pl.col("origin") < day + timedelta(days=1))
            )
            train = known.filter(pl.col("origin") + pl.duration(hours=hours) <= day)
            past = labelled.filter(pl.col("window_start") < day)
            proba, _, _ = fit_predict(train, test, hours, outlook_recurrence(past, day, hours))
            parts.append(_long(test, proba, usage.classes, horizon))
    if not parts:
        return empty_outlook()
    return _contract_order(pl.concat(parts))


OUTLOOK_SCHEMA = {
    "series_id": pl.Utf8,
    "origin": pl.Datetime("us", "UTC"),
    "horizon": pl.Utf8,
    "class": pl.Utf8,
    "probability": pl.Float64,
}
LABELS_SCHEMA = {"series_id": pl.Utf8, "hour": pl.Datetime("us", "UTC"), "class": pl.Utf8}


def empty_outlook() -> pl.DataFrame:
    """O with no rows (no series has an origin): the contract's columns still."""
    return pl.DataFrame(schema=OUTLOOK_SCHEMA)


def _contract_order(frame: pl.DataFrame) -> pl.DataFrame:
    order = {c: i for i, c in enumerate(BOTTLENECK_CLASSES)}
    return (
        frame.with_columns(
            pl.col("origin").dt.replace_time_zone("UTC").cast(pl.Datetime("us", "UTC")),
            pl.col("class").replace_strict(order, return_dtype=pl.Int32).alias("_order"),
        )
        .sort("series_id", "origin", "horizon", "_order")
        .select(list(OUTLOOK_SCHEMA))
    )


def labels_table(labelled: pl.DataFrame) -> pl.DataFrame:
    """L: the class of every hour of every series' grid ('none' where no rule fired or the hour
    had no reading)."""
    return (
        labelled.select(
            pl.col("service").alias("series_id"),
            pl.col("window_start")
            .dt.replace_time_zone("UTC")
            .cast(pl.Datetime("us", "UTC"))
            .alias("hour"),
            pl.col("bottleneck_class").alias("class"),
        )  # fmt: skip
        .sort("series_id", "hour")
        .select(list(LABELS_SCHEMA))
    )


def label_usage(usage: Usage) -> pl.DataFrame:
    """The USE-rule labels of every hour of `usage`'s windows."""
    return label_windows(usage.windows)

"""The outlook's track record: what it said on past as-of days against what followed, next to
7-day persistence ("last week repeats") on the same origins.

What is scored is what the outlook actually said: the rows the `bottleneck_outlook` table holds
for the as-of days of the last four weeks whose horizon has ended, not a replay of today's code
over the past. The truth is the outlook's own target (`features.origin_features`: the class of
the first labelled hour in `[origin, origin + horizon)`, else `none`), from the USE-rule labels
the asset has at hand for its own outlook. 7-day persistence at the same origin names the class
labelled in most hours of the 7 days before it (ties: the earlier class in `BOTTLENECK_CLASSES`)
and states it as the product's simple methods do (`classifier.RULE_PROBABILITY` on it, the rest
on `none`; `none` at 1 when it names nothing), as `benchmarks/bottleneck_bench.py` scores it.

An origin is scored only when the labelled history holds its whole horizon and the whole week
before it (else persistence would be judged on a shorter week than its name says). With the
asset's four weeks of history that is the last three weeks of as-of days: at most 21 daily
origins at 24 h, 15 at 7 d. Consecutive days' 7-day horizons overlap, so 15 of them are about
three weeks of evidence, not fifteen: the verdict waits for `MIN_SCORED_ORIGINS` and is
conservative (see `verdict`). The labels of the history's first days have a shorter seasonal
baseline (`signals.BASELINE_DAYS`), which can only hide symptom labels from the earliest
persistence origins. Pure Polars, no Dagster.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from capacity_pipelines.bottlenecks.classifier import RULE_PROBABILITY
from capacity_pipelines.bottlenecks.features import origin_features
from capacity_pipelines.bottlenecks.signals import KEY
from capacity_pipelines.bottlenecks.tables import (
    BOTTLENECK_CLASSES,
    BOTTLENECK_TABLE,
    HORIZONS,
)

TRACK_RECORD_DAYS = 28  # issue 24: "the backtest score of the last four weeks"
PERSISTENCE_HOURS = 7 * 24  # "last week repeats"
PERSISTENCE_STATED = RULE_PROBABILITY  # on the class it names, as the outlook's simple methods
# Our choice: two weeks of daily outlooks before a verdict. Fewer consecutive days say little
# (the 7-day horizons of neighbouring days overlap), so the section names those services instead.
MIN_SCORED_ORIGINS = 14
# Our choice: Brier scores within half the last digit the report shows (two decimals) are a tie.
BRIER_TIE = 0.005
METHODS = ("outlook", "persistence_7d")  # the `method` column (BOTTLENECK_BACKTEST_TABLE)
LABEL_CLASSES = tuple(c for c in BOTTLENECK_CLASSES if c != "none")

_SAID_SCHEMA = {
    "as_of": pl.Datetime("us"),
    "namespace": pl.Utf8,
    "service": pl.Utf8,
    "horizon": pl.Utf8,
    "bottleneck_class": pl.Utf8,
    "probabilities": pl.Utf8,
}
RECORD_SCHEMA = {
    "as_of": pl.Datetime("us"),
    "namespace": pl.Utf8,
    "service": pl.Utf8,
    "horizon": pl.Utf8,
    "method": pl.Utf8,
    "origins": pl.Int64,
    "first_origin": pl.Datetime("us"),
    "last_origin": pl.Datetime("us"),
    "correct": pl.Int64,
    "brier": pl.Float64,
    "bottleneck_origins": pl.Int64,
    "caught": pl.Int64,
    "false_alarms": pl.Int64,
}


def read_said(con: duckdb.DuckDBPyConnection, as_of: datetime) -> pl.DataFrame:
    """The stored outlooks of the `TRACK_RECORD_DAYS` before `as_of` (none before the table
    exists: a first run has no track record)."""
    as_of = as_of.replace(tzinfo=None)
    try:
        said = con.execute(
            f"SELECT {', '.join(_SAID_SCHEMA)} FROM {BOTTLENECK_TABLE.name} "
            "WHERE as_of >= ? AND as_of < ?",
            [as_of - timedelta(days=TRACK_RECORD_DAYS), as_of],
        ).pl()
    except duckdb.CatalogException:
        return pl.DataFrame(schema=_SAID_SCHEMA)
    return said.cast(_SAID_SCHEMA) if said.height else pl.DataFrame(schema=_SAID_SCHEMA)


def _persistence_class() -> pl.Expr:
    """The class labelled in most hours of the week before (`{class}_hours_7d`), else `none`;
    a tie goes to the earlier class (built from the last class back, so earlier ones win)."""
    counts = {c: pl.col(f"{c}_hours_7d").fill_null(0.0) for c in LABEL_CLASSES}
    most = pl.max_horizontal(*counts.values())
    chosen: pl.Expr = pl.lit("none")
    for cls in reversed(LABEL_CLASSES):
        chosen = pl.when((most > 0) & (counts[cls] == most)).then(pl.lit(cls)).otherwise(chosen)
    return chosen


def scored_origins(
    said: pl.DataFrame, labelled: pl.DataFrame | None, as_of: datetime
) -> pl.DataFrame:
    """One row per stored outlook that can be scored at `as_of`, in long form per method:
    namespace, service, horizon, origin, target, method, said (the class it named) and
    `p_{class}` (the probability it stated for each class)."""
    as_of = as_of.replace(tzinfo=None)
    if labelled is None or labelled.height == 0 or said.height == 0:
        return _empty_scored()
    hours = labelled.select(*KEY, "window_start", "bottleneck_class", "evidence")
    probabilities = pl.Struct({c: pl.Float64 for c in BOTTLENECK_CLASSES})
    parts = []
    for horizon, horizon_hours in HORIZONS.items():
        rows = said.filter(
            (pl.col("horizon") == horizon)
            & (pl.col("as_of") >= as_of - timedelta(days=TRACK_RECORD_DAYS))
            & (pl.col("as_of") + timedelta(hours=horizon_hours) <= as_of)
        )
        if rows.height == 0:
            continue
        # The outlook's own target; the origin needs its whole horizon and a whole week before
        # it in the labelled history (origin_features leaves the target null past the data).
        truth = (
            origin_features(hours, horizon_hours)
            .filter(
                pl.col("target").is_not_null()
                & (pl.col("history_hours") >= PERSISTENCE_HOURS)
                & (pl.col("origin") + timedelta(hours=horizon_hours) <= as_of)
            )
            .select(*KEY, "origin", "target", _persistence_class().alias("persistence"))
        )
        truth = truth.with_columns(pl.col("origin").cast(pl.Datetime("us")))
        joined = rows.rename({"as_of": "origin"}).join(truth, on=[*KEY, "origin"], how="inner")
        if joined.height == 0:
            continue
        stated = joined.with_columns(
            pl.col("probabilities").str.json_decode(probabilities).alias("_p")
        ).unnest("_p")
        outlook = stated.select(
            *KEY,
            "horizon",
            "origin",
            "target",
            pl.lit("outlook").alias("method"),
            pl.col("bottleneck_class").alias("said"),
            *(pl.col(c).fill_null(0.0).alias(f"p_{c}") for c in BOTTLENECK_CLASSES),
        )
        named = pl.col("persistence")
        persistence = joined.select(
            *KEY,
            "horizon",
            "origin",
            "target",
            pl.lit("persistence_7d").alias("method"),
            named.alias("said"),
            *(
                pl.when(named == "none")
                .then(pl.lit(1.0 if c == "none" else 0.0))
                .when(named == c)
                .then(pl.lit(PERSISTENCE_STATED))
                .otherwise(pl.lit(1.0 - PERSISTENCE_STATED if c == "none" else 0.0))
                .alias(f"p_{c}")
                for c in BOTTLENECK_CLASSES
            ),
        )
        parts += [outlook, persistence]
    return pl.concat(parts) if parts else _empty_scored()


def _empty_scored() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "namespace": pl.Utf8,
            "service": pl.Utf8,
            "horizon": pl.Utf8,
            "origin": pl.Datetime("us"),
            "target": pl.Utf8,
            "method": pl.Utf8,
            "said": pl.Utf8,
            **{f"p_{c}": pl.Float64 for c in BOTTLENECK_CLASSES},
        }
    )


def track_record(
    said: pl.DataFrame, labelled: pl.DataFrame | None, as_of: datetime
) -> pl.DataFrame:
    """Per service, horizon and method, the scores of the outlooks scorable at `as_of` (rows
    shaped like `BOTTLENECK_BACKTEST_TABLE`; no row where nothing could be scored).

    `correct`: origins where the named class is the one that followed; `brier`: the mean
    multi-class Brier score of the stated probabilities (sum over classes of (p - 1{class
    followed})², 0 perfect, 2 sure and wrong); `caught`: origins a bottleneck followed and the
    method named its class; `false_alarms`: origins it named a bottleneck and none followed.
    """
    scored = scored_origins(said, labelled, as_of)
    if scored.height == 0:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    squared = [
        (pl.col(f"p_{c}") - (pl.col("target") == c).cast(pl.Float64)) ** 2
        for c in BOTTLENECK_CLASSES
    ]
    followed = pl.col("target") != "none"
    record = (
        scored.with_columns(pl.sum_horizontal(squared).alias("_brier"))
        .group_by(*KEY, "horizon", "method")
        .agg(
            pl.len().alias("origins"),
            pl.col("origin").min().alias("first_origin"),
            pl.col("origin").max().alias("last_origin"),
            (pl.col("said") == pl.col("target")).sum().alias("correct"),
            pl.col("_brier").mean().alias("brier"),
            followed.sum().alias("bottleneck_origins"),
            (followed & (pl.col("said") == pl.col("target"))).sum().alias("caught"),
            (~followed & (pl.col("said") != "none")).sum().alias("false_alarms"),
        )
        .with_columns(pl.lit(as_of.replace(tzinfo=None)).alias("as_of"))
    )
    return record.select(list(RECORD_SCHEMA)).cast(RECORD_SCHEMA).sort(*KEY, "horizon", "method")


VERDICTS = ("did not beat", "matched", "beat", "too little history")


def verdict(
    origins: int,
    correct: int | None,
    brier: float | None,
    persistence_correct: int | None,
    persistence_brier: float | None,
) -> str:
    """Whether the outlook beat 7-day persistence on one service and horizon.

    `beat` claims trust, so it needs both: a Brier score lower by more than `BRIER_TIE` (its
    probabilities) and right at least as often (its named class). `matched`: a tie on both (a
    quiet service both called quiet). Anything else `did not beat`; fewer than
    `MIN_SCORED_ORIGINS` scored origins give no verdict.
    """
    scores = (correct, brier, persistence_correct, persistence_brier)
    if origins < MIN_SCORED_ORIGINS or None in scores:
        return "too little history"
    gain = persistence_brier - brier
    if gain > BRIER_TIE and correct >= persistence_correct:
        return "beat"
    if abs(gain) <= BRIER_TIE and correct == persistence_correct:
        return "matched"
    return "did not beat"


def comparison(record: pl.DataFrame, services: pl.DataFrame) -> pl.DataFrame:
    """The outlook and 7-day persistence side by side for every (namespace, service, horizon)
    in `services` (those without a scored origin get 0 origins), with the `verdict`; sorted
    with the services it did not beat first."""
    wanted = services.select(*KEY, "horizon").unique()
    pair = [*KEY, "horizon"]
    # Both methods are scored on the same origins: the outlook's side carries their count.
    outlook = record.filter(pl.col("method") == "outlook").select(
        *pair,
        "origins",
        "first_origin",
        "last_origin",
        "bottleneck_origins",
        "correct",
        "brier",
        "caught",
        "false_alarms",
    )
    persistence = record.filter(pl.col("method") == "persistence_7d").select(
        *pair,
        *(
            pl.col(c).alias(f"persistence_{c}")
            for c in ("correct", "brier", "caught", "false_alarms")
        ),
    )
    joined = (
        wanted.join(outlook, on=pair, how="left")
        .join(persistence, on=pair, how="left")
        .with_columns(pl.col("origins").fill_null(0))
    )
    verdicts = [
        verdict(
            r["origins"], r["correct"], r["brier"], r["persistence_correct"], r["persistence_brier"]
        )
        for r in joined.iter_rows(named=True)
    ]
    order = {v: i for i, v in enumerate(VERDICTS)}
    return (
        joined.with_columns(pl.Series("verdict", verdicts, dtype=pl.Utf8))
        .with_columns(pl.col("verdict").replace_strict(order, return_dtype=pl.Int64).alias("_o"))
        .sort("_o", *KEY, "horizon")
        .drop("_o")
    )


def fleet_scores(record: pl.DataFrame, eligible: pl.DataFrame | None = None) -> dict[str, dict]:
    """Per method, pooled over the (service, horizon) pairs in `eligible` (default: all):
    origins, share right, origin-weighted Brier score, origins a bottleneck followed and how
    many of them the method caught."""
    if eligible is not None:
        record = record.join(eligible.select(*KEY, "horizon"), on=[*KEY, "horizon"], how="semi")
    out = {}
    for method in METHODS:
        part = record.filter(pl.col("method") == method)
        origins = int(part["origins"].sum()) if part.height else 0
        if origins == 0:
            continue
        out[method] = {
            "origins": origins,
            "accuracy": float(part["correct"].sum()) / origins,
            "brier": float((part["brier"] * part["origins"]).sum()) / origins,
            "bottleneck_origins": int(part["bottleneck_origins"].sum()),
            "caught": int(part["caught"].sum()),
        }
    return out

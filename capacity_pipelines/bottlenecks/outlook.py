"""The bottleneck outlook: per service and horizon, what breaks first, how likely, when, and why.

Pipeline of pure steps: hourly signals (`signals.py`) -> USE-rule labels (`labels.py`) ->
origin features and targets (`features.py`) -> LightGBM, the rule fallback or persistence,
whichever did best on the latest training origins (`classifier.py`) -> one row per service and
horizon at `as_of`, shaped like `BOTTLENECK_TABLE`. The forecasting engine's runway
(`capacity_runway`: when the p90 forecast of a workload's CPU or memory reaches its capacity)
sets `expected_at` and joins the evidence when it agrees with the predicted class. The latest
evaluation (the 24 h model trained on all but the last week, scored on that week's origins)
goes with it, for the asset's metadata.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import numpy as np
import polars as pl

from capacity_pipelines.bottlenecks.classifier import (
    BottleneckClassifier,
    most_likely,
    persistence_predict,
    rules_predict,
    trainable,
)
from capacity_pipelines.bottlenecks.features import origin_features
from capacity_pipelines.bottlenecks.labels import (
    MEMORY_LIMIT_UTIL,
    RULE_METRICS,
    available_classes,
    label_windows,
)
from capacity_pipelines.bottlenecks.recurrence import WATCH_DAYS, recurrence_chance
from capacity_pipelines.bottlenecks.signals import (
    KEY,
    TRAFFIC_COLUMNS,
    USAGE_COLUMNS,
    container_signals_by_piece,
    service_windows,
)
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_CLASSES, HORIZONS
from capacity_pipelines.common.freshness import stale_before

EVALUATION_DAYS = 7  # the latest week is held out to score the 24 h model before each outlook
HISTORY_DAYS = 28  # labelled history the asset trains on: the demo's four weeks
VALIDATION_SHARE = 0.25  # latest share of training origins that chooses the method
RUNWAY_CLASS = {"workload_cpu": "cpu", "workload_memory": "memory"}


@dataclass
class Evaluation:
    """Scores of a model on held-out origins (time-based split)."""

    labels: list[str]
    confusion: np.ndarray
    macro_f1: float
    recall: dict[str, float]
    test_origins: int
    method: str

    def markdown(self) -> str:
        """The confusion matrix as Markdown (rows: actual, columns: predicted)."""
        head = "| actual \\ predicted | " + " | ".join(self.labels) + " |"
        rule = "|---|" + "---|" * len(self.labels)
        rows = [
            f"| {actual} | " + " | ".join(str(int(v)) for v in self.confusion[i]) + " |"
            for i, actual in enumerate(self.labels)
        ]
        return "\n".join([head, rule, *rows])

    @property
    def accuracy(self) -> float:
        """Share of origins predicted right (the tie-breaker between equal macro-F1s)."""
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else 0.0


@dataclass
class Outlook:
    """The outlook rows plus what a person needs to trust them."""

    table: pl.DataFrame
    notes: list[str] = field(default_factory=list)
    evaluation: Evaluation | None = None
    labelled: pl.DataFrame | None = None


def evaluate(truth: list[str], predicted: list[str], method: str) -> Evaluation:
    """Macro-F1 over the classes present in truth or prediction, recall per true class."""
    labels = [c for c in BOTTLENECK_CLASSES if c in set(truth) | set(predicted)]
    index = {c: i for i, c in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=int)
    for t, p in zip(truth, predicted, strict=True):
        confusion[index[t], index[p]] += 1
    f1s, recall = [], {}
    for i, c in enumerate(labels):
        tp = confusion[i, i]
        actual, said = confusion[i].sum(), confusion[:, i].sum()
        if actual:
            recall[c] = float(tp / actual)
        precision = tp / said if said else 0.0
        rec = tp / actual if actual else 0.0
        f1s.append(2 * precision * rec / (precision + rec) if precision + rec else 0.0)
    return Evaluation(
        labels=labels,
        confusion=confusion,
        macro_f1=float(np.mean(f1s)) if f1s else 0.0,
        recall=recall,
        test_origins=len(truth),
        method=method,
    )


# Candidates in order of preference: a tie goes to the earlier one.
SIMPLE_METHODS = {"rules": rules_predict, "persistence": persistence_predict}


def validation_split(train: pl.DataFrame, horizon_hours: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Earlier and recent training origins: per service (services need not share one calendar,
    as in the classifier's calibration), its latest `VALIDATION_SHARE` of origins validate, and
    the ones whose horizon ended before them train."""
    position = pl.col("origin").rank("ordinal").over(KEY) / pl.len().over(KEY)
    train = train.with_columns(
        pl.col("origin").filter(position > 1 - VALIDATION_SHARE).min().over(KEY).alias("_cut")
    )
    earlier = train.filter(
        pl.col("origin") + pl.duration(hours=horizon_hours) <= pl.col("_cut")
    ).drop("_cut")
    recent = train.filter(pl.col("origin") >= pl.col("_cut")).drop("_cut")
    return earlier, recent


def calibrated(
    predict: Callable[[pl.DataFrame], pl.DataFrame],
    recent: pl.DataFrame,
    test: pl.DataFrame,
    fallback: pl.DataFrame | None = None,
    keep_alarms: bool = False,
) -> pl.DataFrame:
    """A simple method's probabilities, measured on the validation origins.

    The rules and persistence name one class; alone, their stated 0.5 (or 1.0 for `none`) says
    nothing about how often that is right. Here each predicted class gets the distribution of
    what actually followed when the method predicted it on `recent` (one pseudo-count on the
    predicted class and on `none`, so a handful of origins cannot give 0 or 1). When a predicted
    class was never predicted there, the method's own probabilities stand (or `fallback`'s
    row, when given: the rules' with the fleet's recurrence chance). A class right less
    often than `none` followed it stops being the most likely one: that is calibration, as the
    model's `none` is. With `keep_alarms` (chosen on the record by `keeps_alarms`), it stays
    named at even odds with `none` instead: calibration then says how sure, not which class.
    """
    said = most_likely(predict(recent)).to_list()
    followed: dict[str, dict[str, float]] = {}
    for predicted, actual in zip(said, recent["target"].to_list(), strict=True):
        counts = followed.setdefault(predicted, {predicted: 1.0, "none": 1.0})
        counts[actual] = counts.get(actual, 0.0) + 1.0
    raw = predict(test)
    stand = (fallback if fallback is not None else raw).iter_rows(named=True)
    rows = []
    for predicted, own in zip(most_likely(raw).to_list(), stand, strict=True):
        counts = followed.get(predicted)
        if counts is None:
            rows.append(own)
            continue
        total = sum(counts.values())
        row = {c: counts.get(c, 0.0) / total for c in BOTTLENECK_CLASSES}
        if keep_alarms and predicted != "none" and row[predicted] < row["none"]:
            row[predicted] = row["none"] = (row[predicted] + row["none"]) / 2  # ties name it
        rows.append(row)
    return pl.DataFrame(rows, schema=dict.fromkeys(BOTTLENECK_CLASSES, pl.Float64))


def keeps_alarms(
    predict: Callable[[pl.DataFrame], pl.DataFrame], earlier: pl.DataFrame, recent: pl.DataFrame
) -> bool:
    """Whether the classes a method names should stay named after calibration: on the latest
    origins of the record, did its own classes (kept) score a macro-F1 at least as high as the
    classes left after calibrating on the earlier ones? Calibration turned rare classes into
    `none` where they were right less than half the time (memory recall near zero, issue 24);
    for macro-F1 a class named with a fair precision is worth more than never naming it. With
    no split to judge on, they stay named (the rules' own behaviour)."""
    if earlier.height == 0 or recent.height == 0:
        return True
    truth = recent["target"].to_list()
    kept = evaluate(truth, most_likely(predict(recent)).to_list(), "kept")
    dropped = evaluate(
        truth, most_likely(calibrated(predict, earlier, recent)).to_list(), "calibrated"
    )
    return kept.macro_f1 >= dropped.macro_f1


def choose_method(train: pl.DataFrame, horizon_hours: int) -> tuple[str, str]:
    """Which of the model, the rules and persistence to trust at this horizon, and why.

    The model is fitted on the earlier training origins and all three are scored on the latest
    `VALIDATION_SHARE` of each service's (a time split, with the horizon as a gap, never the
    test data): a model that cannot beat a simple method on its own recent past should not
    replace it, and a service pinned at its limit for days is better described by persistence
    than by either. When the origins before the validation ones are too few to train the model
    (a short history asked about a long horizon), the model cannot be checked, so only the two
    simple methods compete.
    """
    return _choose(*validation_split(train, horizon_hours))


def _choose(earlier: pl.DataFrame, recent: pl.DataFrame) -> tuple[str, str]:
    if recent.height == 0:
        return "rules", "rules used: no training origins to validate on"
    truth = recent["target"].to_list()
    scores: dict[str, Evaluation] = {}
    checked, why_not = trainable(earlier)
    if checked:
        model = BottleneckClassifier().fit(earlier)
        scores["lightgbm"] = evaluate(
            truth, most_likely(model.predict_proba(recent)).to_list(), "lightgbm"
        )
    for name, predict in SIMPLE_METHODS.items():
        scores[name] = evaluate(truth, most_likely(predict(recent)).to_list(), name)
    # Macro-F1 first; equal macro-F1s (few episodes in the validation origins make them common)
    # go to the method right on more origins, then to the earlier candidate.
    chosen = max(scores, key=lambda m: (round(scores[m].macro_f1, 9), scores[m].accuracy))
    names = {"lightgbm": "model", "rules": "rules", "persistence": "persistence"}
    verdict = f"on the latest {VALIDATION_SHARE:.0%} of training origins: macro-F1 " + ", ".join(
        f"{names[m]} {e.macro_f1:.2f} ({e.accuracy:.0%} right)" for m, e in scores.items()
    )
    if not checked:
        verdict += f"; the model not checked: before those origins, {why_not}"
    return chosen, f"{names[chosen]} chosen ({verdict})"


def fit_predict(
    train: pl.DataFrame,
    test: pl.DataFrame,
    horizon_hours: int = HORIZONS["24h"],
    recurrence: float | None = None,
) -> tuple[pl.DataFrame, str, list[str]]:
    """Probabilities for `test` from a model trained on `train`, or from the rules when the
    history is too thin, or from whichever simple method did better on the latest training
    origins. `recurrence`: what the rules state for a class expected back where nothing
    calibrates them (`rules_predict`)."""
    ok, why = trainable(train)
    if not ok:
        # Too little to train on, but every origin with a known outcome still says how often
        # the rules were right (a VM pinned at its limit: nearly always, not a coin flip).
        rules = rules_predict(test, recurrence)
        known = train.filter(pl.col("target").is_not_null())
        if known.height == 0:
            return rules, "rules", [f"rule-based outlook: {why}"]

        def predict(frame: pl.DataFrame) -> pl.DataFrame:
            return rules_predict(frame, recurrence)

        keep = keeps_alarms(predict, *validation_split(known, horizon_hours))
        stated = calibrated(predict, known, test, rules, keep_alarms=keep)
        return stated, "rules", [f"rule-based outlook: {why}; stated as often as they were right"]
    earlier, recent = validation_split(train, horizon_hours)
    method, why = _choose(earlier, recent)
    if method in SIMPLE_METHODS:
        fallback = rules_predict(test, recurrence) if method == "rules" else None
        return calibrated(SIMPLE_METHODS[method], recent, test, fallback), method, [why]
    model = BottleneckClassifier().fit(train)
    return model.predict_proba(test), "lightgbm", [*model.notes, why]


def _with_origin_rows(labelled: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    # One empty window at `as_of` per service: its features come from the past only.
    services = labelled.select(KEY).unique()
    extra = services.with_columns(
        pl.lit(as_of).cast(labelled.schema["window_start"]).alias("window_start"),
        pl.lit("none").alias("bottleneck_class"),
        pl.lit("").alias("evidence"),
        pl.lit("").alias("metrics"),
    )
    return pl.concat([labelled, extra], how="diagonal_relaxed").sort([*KEY, "window_start"])


def latest_evaluation(labelled: pl.DataFrame, as_of: datetime) -> Evaluation | None:
    """The 24 h model trained before the last week and scored on that week's origins."""
    features = origin_features(labelled, HORIZONS["24h"]).filter(pl.col("target").is_not_null())
    split = as_of - timedelta(days=EVALUATION_DAYS)
    train = features.filter(pl.col("origin") + pl.duration(hours=HORIZONS["24h"]) <= split)
    test = features.filter(pl.col("origin") >= split)
    if test.height == 0 or train.height == 0:
        return None
    proba, method, _ = fit_predict(train, test)
    return evaluate(test["target"].to_list(), most_likely(proba).to_list(), method)


def _evidence(row: dict, cls: str, hours: int, as_of: datetime, history: pl.DataFrame):
    """Evidence line, metrics and expected start for a predicted class at one service."""
    metrics = RULE_METRICS.get(cls, "")
    runway = row.get(f"runway_{cls}")
    if runway is not None and runway < as_of + timedelta(hours=hours):
        return (
            f"load forecast p90 reaches the {cls.upper() if cls == 'cpu' else cls} capacity at "
            f"{runway:%Y-%m-%d %H:%M} UTC",
            metrics + ",load_forecast.p90",
            runway,
        )
    peak = row.get("memory_limit_util_max_max_24h")
    trend = row.get("memory_weekly_trend_per_hour")
    if cls == "memory" and peak is not None and trend is not None and trend > 0:
        to_go = max(0.0, (MEMORY_LIMIT_UTIL - peak) / trend)
        if to_go <= hours:
            return (
                f"working set peaked at {peak:.0%} of its memory limit in the last day, rising "
                f"{trend * 24:.1%} of the limit a day: near the limit in ~{to_go:.0f} h",
                metrics,
                as_of + timedelta(hours=to_go),
            )
    seen = history.filter(pl.col("bottleneck_class") == cls).sort("window_start")
    if seen.height:
        last = seen.row(-1, named=True)
        expected = last["window_start"] + timedelta(days=7)
        expected = expected if as_of <= expected < as_of + timedelta(hours=hours) else None
        return (
            f"last seen {last['window_start']:%Y-%m-%d %H:%M}: {last['evidence']}",
            metrics,
            expected,
        )
    return f"signals resemble past {cls} episodes of other services", metrics, None


def _runway_columns(runway: pl.DataFrame | None, services: pl.DataFrame) -> pl.DataFrame:
    if runway is None or runway.height == 0:
        return services
    rows = runway.filter(pl.col("saturation_ts").is_not_null()).with_columns(
        pl.col("series_id").str.split(":").list.first().alias("family"),
        pl.col("series_id")
        .str.split(":")
        .list.last()
        .str.split("/")
        .list.first()
        .alias("namespace"),
        pl.col("series_id").str.split(":").list.last().str.split("/").list.last().alias("service"),
    )
    for family, cls in RUNWAY_CLASS.items():
        part = (
            rows.filter(pl.col("family") == family)
            .group_by(KEY)
            .agg(pl.col("saturation_ts").min().alias(f"runway_{cls}"))
        )
        services = services.join(part, on=KEY, how="left")
    return services


# Horizons whose rule expects a class back (`{class}_recurrence`: any event in the week) and
# states the fleet's recurrence chance where nothing calibrates it. The 24 h rule's class
# recurs daily: one long episode, not a recurrence the chance could speak for.
RECURRENCE_HORIZONS = {HORIZONS["7d"]}


def outlook_recurrence(labelled: pl.DataFrame, as_of: datetime, hours: int) -> float | None:
    """The chance the rules state for a class expected back within `hours`, learned from the
    episodes of the two weeks before `as_of` (None where the horizon's rule is not a
    recurrence)."""
    if hours not in RECURRENCE_HORIZONS:
        return None
    since = as_of - timedelta(days=2 * WATCH_DAYS)
    return recurrence_chance(labelled, as_of, since, hours / 24)


def build_outlook(
    windows: pl.DataFrame, as_of: datetime, runway: pl.DataFrame | None = None
) -> Outlook:
    """The outlook at `as_of` from hourly service windows (and the forecast runway if given)."""
    as_of = as_of.replace(tzinfo=None)
    windows = windows.filter(pl.col("window_start") < as_of)
    _, class_notes = available_classes(windows)
    notes = list(class_notes)
    if windows.height == 0:
        return Outlook(table=_empty(), notes=[*notes, "no service windows before as_of"])
    labelled = label_windows(windows)
    with_origin = _with_origin_rows(labelled, as_of)
    # A service with no window in the freshness window stopped reporting: no outlook for it
    # (its history still trains the model).
    reporting = (
        windows.group_by(KEY)
        .agg(pl.col("window_start").max().alias("last"))
        .filter(pl.col("last") + timedelta(hours=1) >= stale_before(as_of))
        .select(KEY)
    )
    rows = []
    for horizon, hours in HORIZONS.items():
        features = origin_features(with_origin, hours)
        train = features.filter(pl.col("target").is_not_null())
        now = features.filter(pl.col("origin") == as_of).join(reporting, on=KEY, how="semi")
        now = _runway_columns(runway, now)
        proba, method, model_notes = fit_predict(
            train, now, hours, outlook_recurrence(labelled, as_of, hours)
        )
        notes += [f"{horizon}: {n}" for n in model_notes]
        predicted = most_likely(proba).to_list()
        for i, row in enumerate(now.iter_rows(named=True)):
            cls = predicted[i]
            # Full precision: rounded values would no longer sum to 1 (the asset checks that).
            probs = {c: float(proba[c][i]) for c in BOTTLENECK_CLASSES}
            if cls == "none":
                evidence, metrics, expected = "no saturation seen or forecast", "", None
            else:
                history = labelled.filter(
                    (pl.col("namespace") == row["namespace"])
                    & (pl.col("service") == row["service"])
                )
                evidence, metrics, expected = _evidence(row, cls, hours, as_of, history)
            rows.append(
                {
                    "as_of": as_of,
                    "namespace": row["namespace"],
                    "service": row["service"],
                    "horizon": horizon,
                    "bottleneck_class": cls,
                    "probability": probs[cls],
                    "probabilities": json.dumps(probs),
                    "expected_at": expected,
                    "evidence": evidence,
                    "metrics": metrics,
                    "method": method,
                    "note": "; ".join([*class_notes, *model_notes]),
                }
            )
    table = pl.DataFrame(rows, schema=_SCHEMA).sort(["horizon", "namespace", "service"])
    return Outlook(
        table=table,
        notes=notes,
        evaluation=latest_evaluation(labelled, as_of),
        labelled=labelled,
    )


_SCHEMA = {
    "as_of": pl.Datetime("us"),
    "namespace": pl.Utf8,
    "service": pl.Utf8,
    "horizon": pl.Utf8,
    "bottleneck_class": pl.Utf8,
    "probability": pl.Float64,
    "probabilities": pl.Utf8,
    "expected_at": pl.Datetime("us"),
    "evidence": pl.Utf8,
    "metrics": pl.Utf8,
    "method": pl.Utf8,
    "note": pl.Utf8,
}


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=_SCHEMA)


# Only the columns the signals use. The 5-minute per-pod usage rows are by far the largest
# read here (2,000 containers x 4 weeks is 12 M rows), and the pod names, cluster and requests
# the signals never look at were most of their memory (benchmarks/results/scale.md).
SIGNAL_COLUMNS = {
    "container_usage": ("namespace", "workload", "container", "ts", *USAGE_COLUMNS),
    "service_traffic": ("namespace", "service", "ts", *TRAFFIC_COLUMNS),
    "llm_token_usage": None,  # every column: optional ones (429s, call seconds) add signals
    "workload_replicas": ("namespace", "workload", "ts", "replicas"),
}


def _read(con: duckdb.DuckDBPyConnection, sql: str, args: list) -> pl.DataFrame:
    try:
        return con.execute(sql, args).pl()
    except duckdb.CatalogException:
        return pl.DataFrame()  # table not extracted (yet): its classes degrade with a note


def _read_window(
    con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...] | None, args: list
) -> pl.DataFrame:
    """`table`'s rows in the window, with those of `columns` it has (a catalog may omit some)."""
    try:
        present = [row[0] for row in con.execute(f'DESCRIBE "{table}"').fetchall()]
    except duckdb.CatalogException:
        return pl.DataFrame()
    chosen = [c for c in present if columns is None or c in columns]
    select = ", ".join(f'"{c}"' for c in chosen)
    return _read(con, f'SELECT {select} FROM "{table}" WHERE ts > ? AND ts <= ?', args)


def read_inputs(
    con: duckdb.DuckDBPyConnection, as_of: datetime, history_days: int = HISTORY_DAYS
) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """Hourly service windows over `(as_of - history_days, as_of]` and the latest runway."""
    as_of = as_of.replace(tzinfo=None)
    first = as_of - timedelta(days=history_days)
    args = [first, as_of]
    tables = {
        name: _read_window(con, name, columns, args)
        for name, columns in SIGNAL_COLUMNS.items()
        if name != "container_usage"
    }
    # Container signals are hourly, so day-long reads give the same rows with one day of the
    # largest table in memory at a time instead of four weeks.
    days = [(first + timedelta(days=d), first + timedelta(days=d + 1)) for d in range(history_days)]
    usage_signals = container_signals_by_piece(
        _read_window(con, "container_usage", SIGNAL_COLUMNS["container_usage"], [lo, hi])
        for lo, hi in days
    )
    # A runway older than the freshness window describes the fleet as it was (a day whose
    # forecast found nothing to forecast writes no rows): its saturations are not this day's.
    runway = _read(
        con,
        "SELECT * FROM capacity_runway WHERE as_of = "
        "(SELECT max(as_of) FROM capacity_runway WHERE as_of <= ? AND as_of >= ?)",
        [as_of, stale_before(as_of)],
    )
    windows = service_windows(
        pl.DataFrame(),
        tables["service_traffic"],
        tables["llm_token_usage"],
        replicas=tables["workload_replicas"],
        usage_signals=usage_signals,
    )
    return windows, runway if runway.height else None


def probability_problems(table: pl.DataFrame) -> list[str]:
    """`service/horizon` of rows whose probabilities leave 0..1 or do not sum to 1 (1e-6)."""
    bad = []
    for row in table.iter_rows(named=True):
        probs = list(json.loads(row["probabilities"]).values())
        if abs(sum(probs) - 1) > 1e-6 or min(probs) < 0 or max(probs) > 1:
            bad.append(f"{row['service']}/{row['horizon']}")
    return bad


def unexplained(table: pl.DataFrame) -> pl.DataFrame:
    """Outlook rows naming a bottleneck without evidence or metrics behind it."""
    return table.filter(
        (pl.col("bottleneck_class") != "none")
        & (
            (pl.col("evidence").fill_null("").str.len_chars() == 0)
            | (pl.col("metrics").fill_null("").str.len_chars() == 0)
        )
    )

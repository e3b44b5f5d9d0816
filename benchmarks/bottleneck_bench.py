"""Bottleneck benchmark: USE-rule labels against the demo's injected episodes, and the outlook
classifier on held-out time, on the demo fleet and on real series.

Run from the repository root (builds a demo warehouse in a temporary home unless one is given):

    nice .venv/bin/python benchmarks/bottleneck_bench.py [--warehouse PATH]

(a) Demo fleet (`assets/demo/`, ground truth in `episodes.json`):
  1. Labels vs truth: every service-hour labelled by the rules, compared with the episode
     classes (cpu_throttling -> cpu, oom_kill -> memory over the kill hour and the 6 h before
     it, latency_incident -> io_database, hpa_scale_out -> queueing; rollouts are not
     bottlenecks). The rules are not trained, so every window is held out.
  2. Outlook, walk-forward: for each day D from the second week on, the classifier is trained
     on the origins whose horizon ended by D and predicts every origin hour of day D, as the
     daily asset does. Targets are the rule labels (what breaks first within the horizon).
(b) Real series from `../shared/data` (research-only ones read in place, never copied), each a
  "service" whose only signals are CPU and/or memory utilisation against capacity, so only
  `cpu`, `memory` and `none` can be established from the data itself: NAB EC2 / RDS CPU %,
  Bitbrains VM CPU and memory, Alibaba 2018 machine CPU and memory, Alibaba GenAI pod memory.
  Split per series in time: the first 60 % of each series trains, origins after it test.
  Cross-check: NAB's labelled anomaly windows against the cpu labels.
Both: the share of saturation episodes (a labelled run after >= 24 h without that class) that
the 7-day outlook flagged with the right class at the origin 24 h before the episode began.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from capacity_pipelines.bottlenecks.classifier import (  # noqa: E402
    most_likely,
    persistence_predict,
    rules_predict,
)
from capacity_pipelines.bottlenecks.features import origin_features  # noqa: E402
from capacity_pipelines.bottlenecks.labels import label_windows  # noqa: E402
from capacity_pipelines.bottlenecks.outlook import (  # noqa: E402
    Evaluation,
    evaluate,
    fit_predict,
    outlook_recurrence,
    read_inputs,
)
from capacity_pipelines.bottlenecks.signals import KEY  # noqa: E402
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_CLASSES, HORIZONS  # noqa: E402
from capacity_pipelines.common.utilisation import (  # noqa: E402
    CPU_UTIL_MAX,
    MEMORY_UTIL_MAX,
    REASONS,
    Reading,
    count_problems,
    utilisation,
)

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
DEMO_END = datetime(2026, 10, 26)
DEMO_FIRST_TEST_DAY = datetime(2026, 10, 5)  # one week of history before the first outlook
OOM_LEAD_HOURS = 6  # leak at ~1 MiB / 5 min spends ~6 h in the last 5 % of a 1.5 GiB limit
EPISODE_CLASS = {
    "cpu_throttling": "cpu",
    "oom_kill": "memory",
    "latency_incident": "io_database",
    "hpa_scale_out": "queueing",
}
REAL_TRAIN_SHARE = 0.6
NEW_EPISODE_GAP_H = 24
FLAG_LEAD_H = 24


# --- demo ---------------------------------------------------------------------------------
def demo_windows(warehouse: Path | None) -> tuple[pl.DataFrame, str]:
    """Hourly windows of the demo warehouse, and the asset's own line from `capacity demo`."""
    if warehouse is not None:
        with duckdb.connect(str(warehouse), read_only=True) as con:
            windows, _ = read_inputs(con, DEMO_END, history_days=28)
        return windows, "(not run: --warehouse given)"
    with tempfile.TemporaryDirectory(prefix="bottleneck_bench_") as home:
        run = subprocess.run(
            [str(REPO / ".venv" / "bin" / "capacity"), "demo"],
            check=True,
            env={**os.environ, "CAPACITY_HOME": home},
            capture_output=True,
            text=True,
        )
        asset_line = next(
            (line.strip() for line in run.stdout.splitlines() if "bottleneck_outlook" in line),
            "(bottleneck_outlook not in the demo job)",
        )
        windows, _ = demo_windows(Path(home) / "warehouse_snapshot.duckdb")
    return windows, asset_line


def demo_truth(labelled: pl.DataFrame) -> pl.DataFrame:
    """Truth classes per service-hour from episodes.json (a set: episodes may overlap)."""
    episodes = json.loads((REPO / "assets" / "demo" / "episodes.json").read_text())["episodes"]
    rows = []
    for ep in episodes:
        cls = EPISODE_CLASS.get(ep["kind"])
        if cls is None or ep["service"] is None:
            continue
        start = datetime.fromisoformat(ep["start"].replace("Z", "")).replace(tzinfo=None)
        end = datetime.fromisoformat(ep["end"].replace("Z", "")).replace(tzinfo=None)
        if cls == "memory":  # the kill hour and the hours the working set sat at the limit
            start, end = start - timedelta(hours=OOM_LEAD_HOURS), start + timedelta(minutes=1)
        hour = start.replace(minute=0, second=0)
        while hour < end:
            rows.append({"service": ep["service"], "window_start": hour, "truth": cls})
            hour += timedelta(hours=1)
    truth = pl.DataFrame(rows).unique().group_by("service", "window_start").agg(pl.col("truth"))
    joined = labelled.join(truth, on=["service", "window_start"], how="left").with_columns(
        pl.col("truth").fill_null(pl.lit(["none"], dtype=pl.List(pl.Utf8)))
    )
    # Correct when the label is any of the hour's truth classes; else the first truth class.
    return joined.with_columns(
        pl.when(pl.col("truth").list.contains(pl.col("bottleneck_class")))
        .then(pl.col("bottleneck_class"))
        .otherwise(pl.col("truth").list.first())
        .alias("truth_class")
    )


def _stated(proba: pl.DataFrame) -> pl.Series:
    """The class the outlook states: its `decided` column (per-class thresholds) where the code
    measured has one, else the most likely class (the code before issue 24)."""
    return proba["decided"] if "decided" in proba.columns else most_likely(proba)


def _predictions(
    train: pl.DataFrame, test: pl.DataFrame, hours: int, recurrence: float | None = None
) -> pl.DataFrame:
    """The outlook's prediction next to two baselines on the same origins: the rule fallback,
    and persistence (the class labelled most in the last 24 h, else none)."""
    proba, method, _ = fit_predict(train, test, hours, recurrence)
    return test.select(*KEY, "origin", "target").with_columns(
        _stated(proba).alias("predicted"),
        pl.Series("probability", proba.select(BOTTLENECK_CLASSES).to_numpy().max(axis=1)),
        pl.lit(method).alias("method"),
        most_likely(rules_predict(test)).alias("rules"),
        most_likely(persistence_predict(test)).alias("persistence"),
    )


def _memory_disagreements(scored: pl.DataFrame) -> list[str]:
    """Where memory labels and the episode list disagree, and how full memory was there."""
    lines = []
    for what, mask in (
        (
            "labelled memory, not in an OOM episode's last 6 h",
            (pl.col("bottleneck_class") == "memory") & (pl.col("truth_class") != "memory"),
        ),
        (
            "in an OOM episode's last 6 h, not labelled memory",
            (pl.col("truth_class") == "memory") & (pl.col("bottleneck_class") != "memory"),
        ),
    ):
        rows = scored.filter(mask)
        if rows.height:
            util = rows["memory_limit_util_max"]
            lines.append(
                f"- {what}: {rows.height} hours ({', '.join(sorted(set(rows['service'])))}), "
                f"working set {util.min():.1%} to {util.max():.1%} of the limit"
            )
    return [*lines, ""] if lines else []


def walk_forward(labelled: pl.DataFrame, hours: int, first_day: datetime) -> pl.DataFrame:
    """Daily retrain as the asset does: train on horizons ended by D, predict day D's origins."""
    features = origin_features(labelled, hours)
    known = features.filter(pl.col("target").is_not_null())
    out = []
    day = first_day
    last = features["origin"].max()
    while last is not None and day <= last:
        train = known.filter(pl.col("origin") + pl.duration(hours=hours) <= day)
        test = features.filter(
            (pl.col("origin") >= day) & (pl.col("origin") < day + timedelta(days=1))
        )
        if test.height and train.height:
            # the recurrence chance the asset would state that day, from the labels before it
            past = labelled.filter(pl.col("window_start") < day)
            chance = outlook_recurrence(past, day, hours)
            out.append(_predictions(train, test, hours, chance))
        day += timedelta(days=1)
    return pl.concat(out) if out else pl.DataFrame(schema={"service": pl.Utf8})


def walk_forward_per_source(labelled: pl.DataFrame, hours: int) -> pl.DataFrame:
    """Walk-forward on the real series, one source at a time (their calendars are years apart):
    daily retrain from each source's eighth day, as the asset would run on it."""
    parts = []
    for (source,) in labelled.select("namespace").unique().sort("namespace").iter_rows():
        own = labelled.filter(pl.col("namespace") == source)
        first = (own["window_start"].min() + timedelta(days=7)).replace(hour=0)
        result = walk_forward(own, hours, first)
        if result.height:
            parts.append(result)
    return pl.concat(parts) if parts else pl.DataFrame(schema={"service": pl.Utf8})


def split_in_time(labelled: pl.DataFrame, hours: int, share: float) -> pl.DataFrame:
    """Per series: origins in the first `share` of its span train (horizon ended), later test."""
    features = origin_features(labelled, hours)
    spans = labelled.group_by(KEY).agg(
        (
            pl.col("window_start").min()
            + (pl.col("window_start").max() - pl.col("window_start").min()) * share
        ).alias("split")
    )
    features = features.join(spans, on=KEY)
    train = features.filter(
        pl.col("target").is_not_null()
        & (pl.col("origin") + pl.duration(hours=hours) <= pl.col("split"))
    )
    test = features.filter(pl.col("origin") >= pl.col("split"))
    if test.height == 0:
        return pl.DataFrame(schema={"service": pl.Utf8})
    return _predictions(train, test, hours)


def episodes(labelled: pl.DataFrame, per_incident: bool = False) -> pl.DataFrame:
    """Starts of saturation episodes: a class labelled after >= 24 h without it.

    With `per_incident`, the gap counts across classes: an incident starts with the first
    labelled hour after >= 24 h without any, and takes that hour's class. That is the reading
    the outlook's target has ("what breaks first"): a VM whose memory saturates at 09:00 and
    its CPU at 15:00 the same day is one incident whose first bottleneck is memory, and an
    outlook that named memory for it was right. Both counts are reported.
    """
    rows = []
    for (namespace, service), group in labelled.sort("window_start").group_by(
        KEY, maintain_order=True
    ):
        last_seen: dict[str, datetime] = {}
        for row in group.iter_rows(named=True):
            cls, at = row["bottleneck_class"], row["window_start"]
            if cls == "none":
                continue
            key = "any" if per_incident else cls
            previous = last_seen.get(key)
            if previous is None or at - previous > timedelta(hours=NEW_EPISODE_GAP_H):
                rows.append({"namespace": namespace, "service": service, "start": at, "cls": cls})
            last_seen[key] = at
    return pl.DataFrame(
        rows,
        schema={
            "namespace": pl.Utf8,
            "service": pl.Utf8,
            "start": pl.Datetime("us"),
            "cls": pl.Utf8,
        },
    )


def precedents(labelled: pl.DataFrame, outlook_7d: pl.DataFrame) -> list[str]:
    """Per scored incident: how many hours of its class were labelled anywhere before it.

    A model or rule learns classes from past labels. An incident whose class was never
    labelled before it (in any service) cannot be named ahead by anything trained on the past;
    one whose class was seen only in other services, with nothing in its own service's recent
    metrics, is a one-off as far as the history can tell.
    """
    starts = episodes(labelled, per_incident=True)
    scored = (
        starts.join(outlook_7d.select(*KEY, "origin"), on=KEY)
        .filter(
            (pl.col("origin") <= pl.col("start") - pl.duration(hours=FLAG_LEAD_H))
            & (pl.col("origin") >= pl.col("start") - pl.duration(hours=HORIZONS["7d"]))
        )
        .select(*KEY, "start", "cls")
        .unique()
        .sort("start")
    )
    lines = [
        "| service | incident start | class | hours of that class labelled before it: "
        "anywhere / in this service |",
        "|---|---|---|---|",
    ]
    for namespace, service, start, cls in scored.iter_rows():
        before = labelled.filter(
            (pl.col("window_start") < start) & (pl.col("bottleneck_class") == cls)
        )
        own = before.filter((pl.col("namespace") == namespace) & (pl.col("service") == service))
        lines.append(
            f"| {service} | {start:%Y-%m-%d %H:%M} | {cls} | {before.height} / {own.height} |"
        )
    return [*lines, ""]


def flag_rate(
    labelled: pl.DataFrame, outlook_7d: pl.DataFrame, per_incident: bool = False
) -> dict[str, int]:
    """Episodes with a held-out origin 24 h to 7 days before their start, and how many the 7-day
    outlook flagged with the right class: at the origin exactly 24 h before (`at_24h`), or at
    any origin from 7 days to 24 h before (`by_24h`), the issue's "at least 24 h before"."""
    starts = episodes(labelled, per_incident)
    candidates = starts.join(outlook_7d, on=KEY, how="inner").filter(
        (pl.col("origin") <= pl.col("start") - pl.duration(hours=FLAG_LEAD_H))
        & (pl.col("origin") >= pl.col("start") - pl.duration(hours=HORIZONS["7d"]))
    )
    per_episode = candidates.group_by(*KEY, "start", "cls").agg(
        (pl.col("predicted") == pl.col("cls")).any().alias("by_24h"),
        (
            (pl.col("predicted") == pl.col("cls"))
            & (pl.col("origin") == pl.col("start") - pl.duration(hours=FLAG_LEAD_H))
        )
        .any()
        .alias("at_24h"),
        (pl.col("origin") == pl.col("start") - pl.duration(hours=FLAG_LEAD_H))
        .any()
        .alias("has_24h"),
    )
    return {
        "episodes": per_episode.height,
        "by_24h": int(per_episode["by_24h"].sum()),
        "with_origin_24h": int(per_episode["has_24h"].sum()),
        "at_24h": int(per_episode["at_24h"].sum()),
    }


def _flag_lines(title: str, flags: dict[str, int], incidents: dict[str, int]) -> list[str]:
    lines = [f"### {title}", ""]
    for what, f in (("episodes (per class)", flags), ("incidents (any class)", incidents)):
        n = f["episodes"]
        if not n:
            lines.append(f"- {what}: none with a held-out origin before it")
            continue
        lines += [
            f"- {n} {what} with held-out origins 7 days to 24 h before their start; flagged "
            f"with the right class at some origin >= 24 h before: **{f['by_24h']} "
            f"({f['by_24h'] / n:.0%})**; at the origin exactly 24 h before "
            f"({f['with_origin_24h']} have it): {f['at_24h']}",
        ]
    return [*lines, ""]


# --- outlook against baselines, per source ----------------------------------------------
# Baselines sit beside the outlook on the same origins. Each is defined here, not in the
# product, so a change to the outlook cannot move the bar it is measured against. The rules and
# both persistences state the product's own convention (0.5 on the named class, the rest on
# `none`; 1.0 on `none` when they name nothing); climatology states each series' own past
# frequencies of the target.
METHODS = ("outlook", "rules", "persistence_24h", "persistence_7d", "climatology")
BASELINES = METHODS[1:]
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 24
STATED = 0.5  # the rules' and persistence's stated probability of a named class


def _named(frame: pl.DataFrame, suffix: str) -> pl.DataFrame:
    """Persistence over a window: the class labelled in most hours of it, else `none`."""
    present = [c for c in BOTTLENECK_CLASSES if f"{c}_hours_{suffix}" in frame.columns]
    hours = (
        frame.select(pl.col(f"{c}_hours_{suffix}").fill_null(0.0) for c in present).to_numpy()
        if present
        else np.zeros((frame.height, 0))
    )
    out = np.zeros((frame.height, len(BOTTLENECK_CLASSES)))
    none = BOTTLENECK_CLASSES.index("none")
    for i, counts in enumerate(hours):
        if counts.size and counts.max() > 0:
            out[i, BOTTLENECK_CLASSES.index(present[int(counts.argmax())])] = STATED
            out[i, none] = 1 - STATED
        else:
            out[i, none] = 1.0
    return out


def _climatology(train: pl.DataFrame, hourly: pl.DataFrame, test: pl.DataFrame) -> np.ndarray:
    """Each series' own past target frequencies (origins whose horizon ended before the day);
    before a series has any, its past hourly label frequencies (`hourly`: windows before the
    day), so the baseline is never a blind `none` at 1."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for frame, column in ((hourly, "bottleneck_class"), (train, "target")):  # targets win
        freq = (
            frame.group_by(*KEY, column)
            .len()
            .with_columns((pl.col("len") / pl.col("len").sum().over(KEY)).alias("p"))
        )
        own: dict[tuple[str, str], dict[str, float]] = {}
        for ns, svc, cls, _, p in freq.iter_rows():
            own.setdefault((ns, svc), {})[cls] = p
        table.update(own)
    out = np.zeros((test.height, len(BOTTLENECK_CLASSES)))
    for i, (ns, svc) in enumerate(test.select(KEY).iter_rows()):
        for cls, p in table.get((ns, svc), {"none": 1.0}).items():
            out[i, BOTTLENECK_CLASSES.index(cls)] = p
    return out


def compare_walk_forward(labelled: pl.DataFrame, hours: int, first_day: datetime) -> pl.DataFrame:
    """Walk-forward, daily retrain as the asset does, with every baseline on the same origins.

    One row per scored origin (target known): `target`, and per method its stated probability
    of every class (`{method}__{class}`).
    """
    features = origin_features(labelled, hours)
    known = features.filter(pl.col("target").is_not_null())
    out = []
    day = first_day
    last = known["origin"].max()
    while last is not None and day <= last:
        train = known.filter(pl.col("origin") + pl.duration(hours=hours) <= day)
        test = known.filter(
            (pl.col("origin") >= day) & (pl.col("origin") < day + timedelta(days=1))
        )
        day += timedelta(days=1)
        if test.height == 0 or train.height == 0:
            continue
        past = labelled.filter(pl.col("window_start") < day)
        proba, _, _ = fit_predict(train, test, hours, outlook_recurrence(past, day, hours))
        said = np.array([BOTTLENECK_CLASSES.index(c) for c in _stated(proba).to_list()])
        stated = {
            "outlook": proba.select(BOTTLENECK_CLASSES).to_numpy(),
            "rules": rules_predict(test).select(BOTTLENECK_CLASSES).to_numpy(),
            "persistence_24h": _named(test, "24h"),
            "persistence_7d": _named(test, "7d"),
            "climatology": _climatology(train, past, test),
        }
        out.append(
            test.select(*KEY, "origin", "target")
            .with_columns(
                pl.Series(f"{m}__{c}", p[:, j])
                for m, p in stated.items()
                for j, c in enumerate(BOTTLENECK_CLASSES)
            )
            .with_columns(pl.Series("outlook__said", said))
        )
    return pl.concat(out) if out else pl.DataFrame()


def compare_per_source(labelled: pl.DataFrame, hours: int) -> pl.DataFrame:
    """`compare_walk_forward` per source from its eighth day (their calendars are years apart)."""
    parts = []
    for (source,) in labelled.select("namespace").unique().sort("namespace").iter_rows():
        own = labelled.filter(pl.col("namespace") == source)
        first = (own["window_start"].min() + timedelta(days=7)).replace(hour=0)
        result = compare_walk_forward(own, hours, first)
        if result.height:
            parts.append(result)
    return pl.concat(parts) if parts else pl.DataFrame()


def _per_series(frame: pl.DataFrame, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per series: confusion matrix of the method's most likely class, Brier sum, origins."""
    k = len(BOTTLENECK_CLASSES)
    index = {c: i for i, c in enumerate(BOTTLENECK_CLASSES)}
    series = frame.select(KEY).unique(maintain_order=True).rows()
    confusion = np.zeros((len(series), k, k))
    brier = np.zeros(len(series))
    count = np.zeros(len(series))
    for s, (ns, svc) in enumerate(series):
        rows = frame.filter((pl.col("namespace") == ns) & (pl.col("service") == svc))
        p = rows.select(f"{method}__{c}" for c in BOTTLENECK_CLASSES).to_numpy()
        y = np.array([index[t] for t in rows["target"].to_list()])
        onehot = np.eye(k)[y]
        # The outlook states its decided class (per-class thresholds) when it has one.
        said_column = f"{method}__said"
        said = rows[said_column].to_numpy() if said_column in rows.columns else p.argmax(axis=1)
        np.add.at(confusion[s], (y, said), 1)
        brier[s] = ((p - onehot) ** 2).sum()
        count[s] = len(y)
    return confusion, brier, count


def _macro_f1(confusion: np.ndarray) -> np.ndarray:
    """Macro-F1 over the classes present in truth or prediction (as `outlook.evaluate`);
    `confusion` is (..., k, k)."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1)
    actual, said = confusion.sum(axis=-1), confusion.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(actual + said > 0, 2 * tp / (actual + said), 0.0)
    present = (actual + said) > 0
    return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def score_sources(frame: pl.DataFrame, pooled_name: str | None) -> dict[str, dict]:
    """Per source (and pooled, resampling series within each source): every method's macro-F1
    and multi-class Brier score with a seeded bootstrap 90 % interval over series."""
    out: dict[str, dict] = {}
    sources = sorted(frame["namespace"].unique().to_list())
    groups = [[s] for s in sources] + ([sources] if pooled_name and len(sources) > 1 else [])
    for group in groups:
        name = group[0] if len(group) == 1 else pooled_name
        part = frame.filter(pl.col("namespace").is_in(group))
        strata = part.select(KEY).unique(maintain_order=True)["namespace"].to_list()
        rng = np.random.default_rng(_seed(name))
        weights = np.zeros((BOOTSTRAP_DRAWS, len(strata)))
        for source in group:
            members = np.flatnonzero(np.array(strata) == source)
            draws = rng.choice(members, size=(BOOTSTRAP_DRAWS, len(members)))
            for b in range(BOOTSTRAP_DRAWS):
                np.add.at(weights[b], draws[b], 1)
        entry = {"series": len(strata), "origins": part.height, "methods": {}}
        for method in METHODS:
            confusion, brier, count = _per_series(part, method)
            boot_f1 = _macro_f1(np.einsum("bs,skl->bkl", weights, confusion))
            boot_brier = (weights @ brier) / (weights @ count)
            entry["methods"][method] = {
                "macro_f1": float(_macro_f1(confusion.sum(axis=0))),
                "macro_f1_90": [float(np.quantile(boot_f1, q)) for q in (0.05, 0.95)],
                "brier": float(brier.sum() / count.sum()),
                "brier_90": [float(np.quantile(boot_brier, q)) for q in (0.05, 0.95)],
            }
        out[name] = entry
    return out


def _seed(name: str) -> int:
    # One fixed stream per source: adding a source does not move another one's interval.
    return BOOTSTRAP_SEED + sum(name.encode())


LABELS = {
    "outlook": "outlook",
    "rules": "rules",
    "persistence_24h": "persistence 24 h",
    "persistence_7d": "persistence 7 d",
    "climatology": "climatology",
}


def _cell(m: dict, metric: str) -> str:
    lo, hi = m[f"{metric}_90"]
    return f"{m[metric]:.3f} [{lo:.3f}, {hi:.3f}]"


def comparison_lines(scores: dict, before: dict | None) -> list[str]:
    """Per horizon: a macro-F1 table and a Brier table, one row per source, the pooled last;
    with `before`, the outlook's earlier numbers beside its current ones."""
    lines: list[str] = []
    for horizon in HORIZONS:
        per_source = scores.get(horizon, {})
        if not per_source:
            continue
        for metric, title, better in (
            ("macro_f1", "macro-F1 (higher is better)", "outlook >= best baseline"),
            ("brier", "multi-class Brier score (lower is better)", "outlook <= climatology"),
        ):
            head = ["source", "series", "origins"]
            if before is not None:
                head.append("outlook BEFORE")
            head += [LABELS[m] for m in METHODS]
            head += ["best baseline"] if metric == "macro_f1" else []
            head.append(better)
            lines += [
                f"#### {horizon}: {title}, 90 % bootstrap interval over series",
                "",
                "| " + " | ".join(head) + " |",
                "|" + "---|" * len(head),
            ]
            for source, entry in per_source.items():
                methods = entry["methods"]
                row = [source, str(entry["series"]), str(entry["origins"])]
                if before is not None:
                    old = before.get(horizon, {}).get(source)
                    row.append(_cell(old["methods"]["outlook"], metric) if old else "n/a")
                row += [_cell(methods[m], metric) for m in METHODS]
                outlook = methods["outlook"][metric]
                if metric == "macro_f1":
                    best = max(BASELINES, key=lambda m: methods[m][metric])
                    row.append(f"{LABELS[best]} {methods[best][metric]:.3f}")
                    met = outlook >= methods[best][metric] - 1e-9
                else:
                    met = outlook <= methods["climatology"][metric] + 1e-9
                row.append("yes" if met else "**no**")
                lines.append("| " + " | ".join(row) + " |")
            lines.append("")
    return lines


# --- real series --------------------------------------------------------------------------
def _hourly(frame: pl.DataFrame, service: str, namespace: str) -> pl.DataFrame:
    columns = [c for c in ("cpu_limit_util_max", "memory_limit_util_max") if c in frame.columns]
    return (
        frame.with_columns(pl.col("ts").dt.truncate("1h").alias("window_start"))
        .group_by("window_start")
        .agg(pl.col(c).max() for c in columns)
        .with_columns(pl.lit(namespace).alias("namespace"), pl.lit(service).alias("service"))
        .sort("window_start")
    )


def _complete(windows: pl.DataFrame) -> pl.DataFrame:
    bounds = windows.group_by(KEY).agg(
        pl.col("window_start").min().alias("lo"), pl.col("window_start").max().alias("hi")
    )
    grid = (
        bounds.with_columns(pl.datetime_ranges("lo", "hi", interval="1h").alias("window_start"))
        .explode("window_start")
        .drop("lo", "hi")
    )
    return grid.join(windows, on=[*KEY, "window_start"], how="left").sort([*KEY, "window_start"])


# What each real source measures, as utilisation readings: usage over a capacity column and the
# bound a real reading stays under (common/utilisation.py: the warehouse path's gate). Sources
# that give a percentage are read against a capacity of 100 %; Bitbrains gives MHz and KB.
BITBRAINS_READINGS = (
    Reading("cpu", "cpu_usage_mhz", "cpu_capacity_mhz", CPU_UTIL_MAX),
    Reading("memory", "mem_usage_kb", "mem_capacity_kb", MEMORY_UTIL_MAX),
)


def _gated(
    frame: pl.DataFrame, readings: dict[str, Reading], source: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`frame` with one utilisation column per `readings` key (null where the row is not a
    reading: capacity 0 or null, or usage above the bound), and the rows not readings, counted
    per resource and reason for `source`."""
    gated = frame.with_columns(
        utilisation(r.used, r.capacity, r.plausible_max).alias(column)
        for column, r in readings.items()
    )
    problems = count_problems(frame, tuple(readings.values())).with_columns(
        pl.lit(source).alias("source")
    )
    return gated, problems


def bitbrains_windows(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hourly windows per Bitbrains VM, and its rows that are not readings.

    A VM switched off reports a provisioned capacity of 0 (dividing by it gave NaN and inf),
    and the trace records memory used at up to 64x the provisioned memory: neither is a
    saturated VM, so both stay out of the labels and are counted instead.
    """
    gated, problems = _gated(
        frame.with_columns(pl.from_epoch("timestamp_s").alias("ts")),
        dict(zip(("cpu_limit_util_max", "memory_limit_util_max"), BITBRAINS_READINGS, strict=True)),
        "bitbrains",
    )
    windows = [
        _hourly(group, f"bitbrains/vm{vm}", "bitbrains")
        for (vm,), group in gated.group_by("vm_id", maintain_order=True)
    ]
    return pl.concat(windows, how="diagonal_relaxed"), problems


def _percent(resource: str, used: str, capacity: str) -> Reading:
    return Reading(resource, used, capacity, CPU_UTIL_MAX if resource == "cpu" else MEMORY_UTIL_MAX)


def real_windows() -> tuple[pl.DataFrame, dict[str, pl.DataFrame], pl.DataFrame]:
    """Hourly windows of every real source, NAB's anomaly windows, and per source the rows
    that are not utilisation readings (dropped before labelling)."""
    frames, problems = [], []
    for path in sorted((DATA / "nab_aws").glob("*cpu_utilization_*.csv")):
        nab, bad = _gated(
            pl.read_csv(path, try_parse_dates=True).with_columns(
                pl.col("timestamp").alias("ts"), pl.lit(100.0).alias("capacity_percent")
            ),
            {"cpu_limit_util_max": _percent("cpu", "value", "capacity_percent")},
            "nab",
        )
        frames.append(_hourly(nab, f"nab/{path.stem}", "nab"))
        problems.append(bad)
    bitbrains, bad = bitbrains_windows(pl.read_csv(DATA / "bitbrains_rnd_6vms_2013-07.csv.gz"))
    frames.append(bitbrains)
    problems.append(bad)
    alibaba, bad = _gated(
        pl.read_csv(
            DATA / "alibaba_v2018_machine_usage_3machines.csv", infer_schema_length=100_000
        ).with_columns(
            (pl.datetime(2018, 1, 1) + pl.duration(seconds=pl.col("time_stamp"))).alias("ts"),
            pl.lit(100.0).alias("capacity_percent"),
        ),
        {
            "cpu_limit_util_max": _percent("cpu", "cpu_util_percent", "capacity_percent"),
            "memory_limit_util_max": _percent("memory", "mem_util_percent", "capacity_percent"),
        },
        "alibaba2018",
    )
    problems.append(bad)
    for (machine,), group in alibaba.group_by("machine_id", maintain_order=True):
        frames.append(_hourly(group, f"alibaba2018/{machine}", "alibaba2018"))
    genai, bad = _gated(
        pl.read_csv(DATA / "gentd26_pod_memory_util_10pods.csv").with_columns(
            pl.from_epoch(pl.col("timestamp_anon").cast(pl.Int64)).alias("ts"),
            pl.lit(1.0).alias("capacity_fraction"),
        ),
        {"memory_limit_util_max": _percent("memory", "value", "capacity_fraction")},
        "gentd26",
    )
    problems.append(bad)
    for (pod,), group in genai.group_by("container_ip", maintain_order=True):
        frames.append(_hourly(group, f"gentd26/{pod[:8]}", "gentd26"))
    windows = _complete(pl.concat(frames, how="diagonal_relaxed"))
    anomalies = json.loads((DATA / "nab_aws" / "anomaly_windows.json").read_text())
    nab_windows = {}
    for name, spans in anomalies.items():
        stem = Path(name).stem
        if "cpu_utilization" in stem:
            nab_windows[f"nab/{stem}"] = pl.DataFrame(
                [
                    {"lo": datetime.fromisoformat(a), "hi": datetime.fromisoformat(b)}
                    for a, b in spans
                ]
            )
    return windows, nab_windows, pl.concat(problems)


def readings_table(problems: pl.DataFrame) -> list[str]:
    """Per source, resource and reason: rows dropped before labelling (zero rows listed too)."""
    sources = ("nab", "bitbrains", "alibaba2018", "gentd26")
    counts = {
        (s, r, why): n
        for r, why, n, s in problems.select("resource", "reason", "rows", "source").iter_rows()
    }
    lines = [
        "Rows that are not utilisation readings, dropped before labelling "
        f"(`capacity_pipelines/common/utilisation.py`: capacity 0 or null is missing data; CPU "
        f"above {CPU_UTIL_MAX:g}x or memory above {MEMORY_UTIL_MAX:g}x its capacity is a bad "
        "reading):",
        "",
        "| source | " + " | ".join(REASONS) + " |",
        "|---|" + "---|" * len(REASONS),
    ]
    for source in sources:
        cells = []
        for why in REASONS:
            cells.append(
                " / ".join(
                    f"{resource} {counts.get((source, resource, why), 0)}"
                    for resource in ("cpu", "memory")
                )
            )
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def nab_cross_check(labelled: pl.DataFrame, spans: dict[str, pl.DataFrame]) -> list[str]:
    lines = []
    for service, frame in spans.items():
        rows = labelled.filter(pl.col("service") == service)
        cpu = rows.filter(pl.col("bottleneck_class") == "cpu")
        inside = 0
        windows_hit = 0
        for lo, hi in frame.iter_rows():
            within = (cpu["window_start"] >= lo.replace(minute=0)) & (cpu["window_start"] < hi)
            inside += int(within.sum())
            windows_hit += int(within.any())
        lines.append(
            f"| {service} | {frame.height} | {windows_hit} | {cpu.height} | {inside} | "
            f"{rows.height} |"
        )
    return lines


READING = [
    "## Reading",
    "",
    "- The rule labels find every injected CPU, database and HPA queueing episode in the hour "
    "it happens (nowcast). Memory disagreements are about the truth window, not the rule: the "
    "summarizer's leak rides a daily cycle, so its working set sits at >= 95 % of the limit "
    "through the afternoon before each kill and dips below it in the night hours the episode "
    "window (last 6 h) covers; see the two lines under the confusion matrix.",
    "- The demo's injected CPU, database and HPA episodes are one-off events (a TLS storm, one "
    "re-index, one test-suite run, one database incident, one busy period). The precedent table "
    "under the flag counts shows what the history held before each: queueing and io_database "
    "were never labelled anywhere before their only incident, so no model or rule that learns "
    "from past labels can name them ahead, and their recall is 0 for any such method; the CPU "
    "incidents had never happened in their own service. Only the summarizer's memory leak "
    "recurs, and both its incidents are flagged ahead. The demo's every-class-recall goal is "
    "out of reach by construction, not by a weak model.",
    "- Each horizon's method is chosen on the latest 25 % of each service's training origins: "
    "the model, the rules or persistence (what saturated in the last day comes back), by "
    "macro-F1, then accuracy. Where too few origins precede the validation ones to train the "
    "model (a 7-day horizon on two weeks of history), the model is not checked and only the two "
    "simple methods compete.",
    "- On the real series the 24 h model is chosen and beats both baselines on the same "
    "origins; these series are saturated for long stretches (NAB 825cc2's CPU, the Alibaba "
    "machines' memory), so persistence is a strong baseline. The 7-day split leaves only the "
    "Bitbrains VMs (the others are shorter than 60 % + 7 days), whose saturation is a handful of "
    "isolated hours: the flag counts rest on 2 incidents (3 per-class episodes: on 2013-07-30 "
    "vm242's memory saturates at 09:00 and its CPU at 15:00; the outlook, which names what "
    "breaks first, named memory).",
    "- The walk-forward protocol on the real series is harder at 24 h: most of its days have "
    "one or two weeks of history, too few labelled episodes to train the model, so the rules "
    "answer on most origins. Memory recall is 0.26: the Bitbrains VMs' memory saturations are "
    "isolated hours with nothing ahead of them, and the rules' memory-trend projection raises "
    "false memory alarms there (64). Recurrence is measured at the horizon's scale (a class in "
    "half the week's horizon-long blocks): counting any hour of the last week, as before, the "
    "rules raised 225 false alarms on the same origins and the outlook scored 0.659. At 7 days "
    "the same protocol meets the goals and flags 4 of 5 episodes (4 of 4 incidents).",
    "- Calibration: when the rules or persistence answer, each predicted class carries the "
    "distribution of what followed that prediction on the validation origins (the model's own "
    "`none` is calibrated the same way). With the fixed 0.5 / 1.0 they stated before, the "
    "weighted gap between stated probability and share right was 0.037 / 0.211 (demo 24 h / "
    "7 d), 0.020 / 0.087 (real split) and 0.023 / 0.111 (real walk-forward), measured with "
    "this benchmark at commit 1bed629.",
    "- network and llm_provider cannot be established from these data (no throughput against "
    "link capacity, no 429s, no quota, no LLM call duration), so they are absent here.",
    "",
]


# --- reporting ----------------------------------------------------------------------------
def _score(frame: pl.DataFrame, truth: str, predicted: str, method: str) -> Evaluation:
    frame = frame.filter(pl.col(truth).is_not_null())
    return evaluate(frame[truth].to_list(), frame[predicted].to_list(), method)


def _section(title: str, score: Evaluation, extra: str = "") -> list[str]:
    recall = ", ".join(f"{c} {r:.2f}" for c, r in score.recall.items())
    return [
        f"### {title}",
        "",
        f"- windows / origins scored: {score.test_origins}; method: {score.method}{extra}",
        f"- **macro-F1 {score.macro_f1:.3f}**; recall per class: {recall}",
        "",
        score.markdown(),
        "",
    ]


def _goal_of(what: str, score: Evaluation) -> tuple[str, str, bool]:
    worst = min(score.recall.items(), key=lambda kv: kv[1])
    value = f"macro-F1 {score.macro_f1:.3f}, lowest recall {worst[0]} {worst[1]:.2f}"
    return what, value, score.macro_f1 >= 0.80 and worst[1] >= 0.70


def _goal(what: str, result: pl.DataFrame) -> tuple[str, str, bool]:
    return _goal_of(what, _score(result, "target", "predicted", "outlook"))


def _flag_goal(what: str, flags: dict[str, int], unit: str) -> tuple[str, str, bool]:
    n = flags["episodes"]
    share = flags["by_24h"] / n if n else 0.0
    return f"{what}, {unit} flagged >= 24 h ahead", f"{flags['by_24h']}/{n}", share >= 0.70


def _baselines(result: pl.DataFrame) -> list[str]:
    lines = ["Baselines on the same origins:", ""]
    for name in ("rules", "persistence"):
        score = _score(result, "target", name, name)
        recall = ", ".join(f"{c} {r:.2f}" for c, r in score.recall.items())
        lines.append(f"- {name}: macro-F1 {score.macro_f1:.3f}; recall {recall}")
    return [*lines, ""]


def _reliability(result: pl.DataFrame) -> list[str]:
    """Stated probability of the predicted class against how often it was right, per method and
    for alarms (a bottleneck predicted) and all-clears (`none`) apart: calibrated means equal."""
    scored = result.filter(pl.col("target").is_not_null()).with_columns(
        (pl.col("predicted") == pl.col("target")).alias("right"),
        pl.when(pl.col("predicted") == "none")
        .then(pl.lit("none"))
        .otherwise(pl.lit("alarm"))
        .alias("kind"),
    )
    table = (
        scored.group_by("method", "kind")
        .agg(
            pl.len().alias("n"),
            pl.col("probability").mean().alias("stated"),
            pl.col("right").mean().alias("right"),
        )
        .sort("method", "kind")
    )
    gap = float(
        (table["n"] * (table["stated"] - table["right"]).abs()).sum() / max(table["n"].sum(), 1)
    )
    return [
        "Calibration (stated probability of the predicted class vs share right):",
        "",
        "| method | predicted | origins | stated | right |",
        "|---|---|---|---|---|",
        *[
            f"| {m} | {k} | {n} | {stated:.2f} | {right:.2f} |"
            for m, k, n, stated, right in table.iter_rows()
        ],
        "",
        f"- gap |stated - right|, weighted by origins: **{gap:.3f}**",
        "",
    ]


def _methods(frame: pl.DataFrame) -> str:
    counts = dict(frame.group_by("method").len().iter_rows())
    return ", ".join(f"{m} on {n} origins" for m, n in sorted(counts.items()))


def _outlook_sections(
    what: str,
    outlooks: dict[str, pl.DataFrame],
    labelled: pl.DataFrame,
    title: str,
    flag_title: str,
    protocol: str,
) -> tuple[list[str], list[tuple[str, str, bool]]]:
    """Report lines and goal rows for one protocol's 24 h and 7 d outlooks and its flags."""
    lines: list[str] = []
    goals: list[tuple[str, str, bool]] = []
    for horizon, result in outlooks.items():
        if result.height == 0:
            lines += [f"### Outlook {horizon}{title}: no series long enough", ""]
            continue
        scored = result.filter(pl.col("target").is_not_null()).select(KEY).unique().height
        lines += _section(
            f"Outlook {horizon}{title}",
            _score(result, "target", "predicted", protocol),
            f" ({_methods(result)}"
            + (f"; series scored: {scored}" if protocol == "time split" else "")
            + ")",
        )
        lines += _baselines(result)
        lines += _reliability(result)
        goals.append(_goal(f"{what}, outlook {horizon}", result))
    flags = flag_rate(labelled, outlooks["7d"])
    incidents = flag_rate(labelled, outlooks["7d"], per_incident=True)
    lines += _flag_lines(flag_title, flags, incidents)
    goals.append(_flag_goal(what, flags, "episodes (per class)"))
    goals.append(_flag_goal(what, incidents, "incidents (any class)"))
    return lines, goals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, help="demo warehouse (default: build one)")
    parser.add_argument("--out", type=Path, default=RESULTS / "bottlenecks.md")
    parser.add_argument(
        "--scores-out",
        type=Path,
        default=RESULTS / "bottleneck_scores.json",
        help="per-source scores of the outlook and the baselines (JSON)",
    )
    parser.add_argument(
        "--before", type=Path, help="an earlier --scores-out: its outlook shown beside this one"
    )
    args = parser.parse_args()
    started = time.monotonic()
    command = (
        "nice .venv/bin/python benchmarks/bottleneck_bench.py"
        + (f" --warehouse {args.warehouse}" if args.warehouse else "")
        + (f" --before {args.before}" if args.before else "")
    )
    out = [
        "# Bottleneck labels and outlook",
        "",
        f"Command (repository root): `{command}`",
        "",
    ]

    goals: list[tuple[str, str, bool]] = []
    windows, asset_line = demo_windows(args.warehouse)
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    out += [
        f"Code at commit `{commit}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, 2-core machine shared "
        "with other jobs. The asset on the whole demo fleet, from `capacity demo`'s progress "
        f"line: `{asset_line}`.",
        "",
    ]
    labelled = label_windows(windows)
    scored = demo_truth(labelled)
    out += ["## (a) Demo fleet", ""]
    rules_score = _score(scored, "truth_class", "bottleneck_class", "rules")
    out += _section("Rule labels vs injected episodes (every service-hour)", rules_score)
    goals.append(_goal_of("demo, rule labels vs injected episodes", rules_score))
    out += _memory_disagreements(scored)
    demo_outlooks = {
        horizon: walk_forward(labelled, hours, DEMO_FIRST_TEST_DAY)
        for horizon, hours in HORIZONS.items()
    }
    lines, demo_goals = _outlook_sections(
        "demo",
        demo_outlooks,
        labelled,
        ", walk-forward daily retrain (targets: rule labels)",
        "Episodes flagged ahead by the 7-day outlook (demo)",
        "walk-forward",
    )
    out += [
        *lines,
        "Incidents scored above, and what the history before each held of its class:",
        "",
        *precedents(labelled, demo_outlooks["7d"]),
    ]
    goals += demo_goals
    demo_as_source = labelled.with_columns(
        pl.concat_str("namespace", pl.lit("/"), "service").alias("service"),
        pl.lit("demo").alias("namespace"),
    )
    scores: dict[str, dict] = {
        horizon: score_sources(
            compare_walk_forward(demo_as_source, hours, DEMO_FIRST_TEST_DAY), None
        )
        for horizon, hours in HORIZONS.items()
    }
    out += ["## (b) Real series (`../shared/data`)", ""]
    if not DATA.exists():
        out += [f"{DATA} is absent: skipped.", ""]
    else:
        real, nab_spans, not_readings = real_windows()
        out += readings_table(not_readings)
        real_labelled = label_windows(real)
        counts = (
            real_labelled.group_by("namespace", "bottleneck_class")
            .len()
            .sort("namespace", "bottleneck_class")
        )
        out += [
            f"{real_labelled.select(KEY).unique().height} series, "
            f"{real_labelled.height} service-hours; rule labels per source:",
            "",
            "| source | class | hours |",
            "|---|---|---|",
            *[f"| {a} | {b} | {c} |" for a, b, c in counts.iter_rows()],
            "",
        ]
        split = {
            horizon: split_in_time(real_labelled, hours, REAL_TRAIN_SHARE)
            for horizon, hours in HORIZONS.items()
        }
        lines, real_goals = _outlook_sections(
            "real",
            split,
            real_labelled,
            f", first {REAL_TRAIN_SHARE:.0%} of each series trains",
            "Real saturation episodes flagged ahead by the 7-day outlook",
            "time split",
        )
        out += lines
        goals += real_goals
        out += [
            "### The same real series, walk-forward (second protocol)",
            "",
            "A second protocol on the same data: per source, retrained daily from its eighth "
            "day, as the asset would run (early days have a week of history, so the rule "
            "fallback answers more often). It scores more origins and more episodes than the "
            "60 % split.",
            "",
        ]
        walked = {
            horizon: walk_forward_per_source(real_labelled, hours)
            for horizon, hours in HORIZONS.items()
        }
        lines, walked_goals = _outlook_sections(
            "real walk-forward",
            walked,
            real_labelled,
            ", walk-forward daily retrain",
            "Flagged ahead by the walk-forward 7-day outlook",
            "walk-forward",
        )
        out += lines
        goals += walked_goals
        for horizon, hours in HORIZONS.items():
            scores[horizon].update(
                score_sources(compare_per_source(real_labelled, hours), "pooled (real sources)")
            )
        out += [
            "### NAB labelled anomaly windows vs cpu labels (cross-check)",
            "",
            "| series | anomaly windows | windows with a cpu hour | cpu hours | cpu hours "
            "inside windows | hours |",
            "|---|---|---|---|---|---|",
            *nab_cross_check(real_labelled, nab_spans),
            "",
        ]
    out += [
        "## Goals of the issue, from the numbers above",
        "",
        "Goals: macro-F1 >= 0.80 and every class recall >= 0.70 on held-out data; the 7-day "
        "outlook flags >= 70 % of saturation episodes at least 24 h before they start.",
        "",
        "| evaluation | result | goal met |",
        "|---|---|---|",
        *[f"| {what} | {value} | {'yes' if met else '**no**'} |" for what, value, met in goals],
        "",
        *READING,
        f"Wall time: {time.monotonic() - started:.0f} s.",
        "",
    ]
    before = json.loads(args.before.read_text()) if args.before else None
    args.scores_out.write_text(json.dumps(scores, indent=1) + "\n")
    comparison = [
        "## Outlook against the baselines, per source (walk-forward, same origins)",
        "",
        "Per source, retrained daily from its eighth day as the asset runs (the demo from "
        f"{DEMO_FIRST_TEST_DAY:%Y-%m-%d}); every origin with a known target is scored, no "
        "sub-sampling. Baselines: the rules alone; persistence over the last 24 h and over the "
        "last 7 days (the class labelled in most hours of the window, else none), stating 0.5 "
        "on the class they name as the rules do; climatology (each series' own frequencies of "
        "the target on the origins whose horizon ended before the day; before it has any, its "
        "hourly label frequencies up to that day). Macro-F1 of the stated class (the "
        "outlook's, after its per-class thresholds where the code has them; the most likely "
        "class for the others) over the classes present in truth or prediction; Brier = mean "
        "over origins of the sum over classes of (p - y)^2. Intervals: "
        f"{BOOTSTRAP_DRAWS} bootstrap draws of series (within each source for the pooled row), "
        "seeded. Goal (issue 24): outlook macro-F1 >= the best baseline's, Brier <= "
        "climatology's, on every source at both horizons."
        + (f" `outlook BEFORE`: from `{args.before}`." if before else ""),
        "",
        *comparison_lines(scores, before),
    ]
    # The per-source comparison goes first: it is the headline.
    out[6:6] = comparison
    text = "\n".join(out)
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

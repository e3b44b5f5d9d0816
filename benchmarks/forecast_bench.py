"""Forecasting benchmark: the capacity engine vs seasonal naive, statsforecast and mlforecast.

Run from the repository root (the research-only data is read in place, never copied):

    nice .venv/bin/python benchmarks/forecast_bench.py            # full run, ~15-25 min
    nice .venv/bin/python benchmarks/forecast_bench.py --quick    # smoke run, ~2 min

Three parts, one process, one report (`benchmarks/results/forecasting.md`):
(a) real hourly series built from ../shared/data (application-server traffic, ServeGen, NAB,
    NASA; 5/10-min data averaged or summed to hourly), rolling origin: up to 4 weekly origins per
    series, horizon 168 h, history up to 8 weeks (at least 1 week);
(b) M4 Hourly: 414 series, horizon 48, OWA against Naive2 (Makridakis et al. 2020);
(c) speed: 1,000 hourly series x 8 weeks -> 168 h, synthesised by perturbing windows of the real
    application-server series (level, trend, noise, level shift).
Peers (statsforecast, mlforecast) are dev-only dependencies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from capacity_pipelines.forecasting.engine import (  # noqa: E402
    PER_SERIES,
    POOLED,
    CapacityForecaster,
    EngineSettings,
)
from capacity_pipelines.forecasting.metrics import (  # noqa: E402
    mase,
    mase_scale,
    naive2,
    scaled_pinball,
    smape,
)

QUANTILES = (0.5, 0.8, 0.9, 0.95)
QCOLS = ("p50", "p80", "p90", "p95")
M = 24  # MASE scale: in-sample seasonal naive, daily cycle on hourly data (issue 3)
HOUR_US = 3_600_000_000
REAL_HORIZON = 168
REAL_MAX_HISTORY = 8 * 168
REAL_MIN_HISTORY = 168
REAL_ORIGINS = 4
M4_HORIZON = 48
SEED = 7


# ----------------------------------------------------------------------------- data


@dataclass
class Task:
    """One forecast problem: a history window and the actuals after it."""

    series_id: str
    start_us: int
    history: np.ndarray
    actual: np.ndarray


def _hourly(ts: pl.Series, values: pl.Series, how: str) -> tuple[int, np.ndarray]:
    frame = pl.DataFrame({"ts": ts, "value": values}).sort("ts")
    agg = pl.col("value").sum() if how == "sum" else pl.col("value").mean()
    hourly = frame.group_by_dynamic("ts", every="1h").agg(agg, pl.len().alias("n"))
    full = pl.datetime_range(hourly["ts"].min(), hourly["ts"].max(), "1h", eager=True)
    hourly = pl.DataFrame({"ts": full}).join(hourly, on="ts", how="left")
    v = hourly["value"].to_numpy().astype(float)
    if how == "sum":  # a partial hour would look like a dip: drop hours with missing samples
        expected = hourly["n"].drop_nulls().max()
        v[(hourly["n"].fill_null(0) < expected).to_numpy()] = np.nan
    start = int(hourly["ts"].cast(pl.Datetime("us")).cast(pl.Int64)[0])
    return start, v


def real_series(data: Path) -> dict[str, tuple[int, np.ndarray]]:
    """Hourly series from ../shared/data, keyed by a descriptive id."""
    out: dict[str, tuple[int, np.ndarray]] = {}
    app = pl.read_csv(data / "app_server_requests_hourly_2015_2016.csv").with_columns(
        pl.datetime("year", "month", "day", "hour").alias("ts"))
    out["app_server/requests"] = _hourly(app["ts"], app["requests"].cast(pl.Float64), "sum")
    serve = pl.read_csv(data / "servegen_m-small_aggregate_10min.csv").with_columns(
        (pl.datetime(2025, 1, 6) + pl.duration(seconds=pl.col("ts"))).alias("time"))
    for column in ("total_rate_rps", "active_clients", "est_input_tokens_per_s",
                   "est_output_tokens_per_s"):
        out[f"servegen/{column}"] = _hourly(serve["time"], serve[column], "mean")
    for path in sorted((data / "nab_aws").glob("*.csv")):
        nab = pl.read_csv(path).with_columns(pl.col("timestamp").str.to_datetime())
        how = "sum" if ("request_count" in path.name or "network" in path.name) else "mean"
        out[f"nab/{path.stem}"] = _hourly(nab["timestamp"], nab["value"].cast(pl.Float64), how)
    nasa = pl.read_csv(data / "nasa_http_jul1995_5min.csv").with_columns(
        pl.col("timestamp_edt").str.to_datetime(),
        pl.when(pl.col("outage_flag") == 1).then(None).otherwise(pl.col("requests"))
        .alias("requests"))
    out["nasa/http_requests"] = _hourly(nasa["timestamp_edt"], nasa["requests"], "sum")
    return out


def real_tasks(series: dict[str, tuple[int, np.ndarray]], origins: int) -> list[list[Task]]:
    """Rolling origin: origin j is (j weeks + 1 horizon) before the end of each series."""
    batches: list[list[Task]] = [[] for _ in range(origins)]
    for sid, (start, values) in series.items():
        for j in range(origins):
            origin = values.size - REAL_HORIZON - j * 168
            if origin < REAL_MIN_HISTORY:
                break
            first = max(0, origin - REAL_MAX_HISTORY)
            history = values[first:origin]
            while history.size and np.isnan(history[0]):
                history, first = history[1:], first + 1
            batches[j].append(Task(f"{sid}@o{j}", start + first * HOUR_US, history,
                                   values[origin:origin + REAL_HORIZON]))
    return [b for b in batches if b]


def m4_tasks(data: Path, limit: int | None) -> list[Task]:
    """M4 Hourly train/test as tasks (synthetic timestamps: M4 gives none)."""
    train = pl.read_csv(data / "m4_hourly" / "Hourly-train.csv", infer_schema=False)
    test = pl.read_csv(data / "m4_hourly" / "Hourly-test.csv", infer_schema=False)
    tasks = []
    start = int(np.datetime64("2017-01-02T00:00", "us").astype(np.int64))
    for row_train, row_test in zip(train.iter_rows(), test.iter_rows(), strict=True):
        history = np.array([float(v) for v in row_train[1:] if v], dtype=float)
        actual = np.array([float(v) for v in row_test[1:]], dtype=float)
        tasks.append(Task(row_train[0], start, history, actual))
    return tasks[:limit] if limit else tasks


def speed_tasks(series: dict[str, tuple[int, np.ndarray]], count: int) -> list[Task]:
    """Synthetic fleet: perturbed 8-week windows of the application-server series."""
    rng = np.random.default_rng(SEED)
    start, base = series["app_server/requests"]
    n = REAL_MAX_HISTORY
    tasks = []
    for i in range(count):
        offset = int(rng.integers(0, base.size - n - REAL_HORIZON))
        window = base[offset:offset + n].copy()
        window = np.interp(np.arange(n), np.flatnonzero(np.isfinite(window)),
                           window[np.isfinite(window)])
        level = float(np.exp(rng.normal(0.0, 1.5)))
        trend = 1.0 + rng.uniform(-0.3, 0.3) * np.arange(n) / n
        noise = rng.normal(1.0, rng.uniform(0.01, 0.15), n)
        y = np.maximum(window * level * trend * noise, 0.0)
        if rng.random() < 0.2:  # a level shift somewhere in the last three weeks
            y[n - int(rng.integers(24, 504)):] *= rng.uniform(0.6, 1.6)
        tasks.append(Task(f"synthetic/{i:04d}", start + offset * HOUR_US, y, np.empty(0)))
    return tasks


def long_frame(tasks: list[Task]) -> pl.DataFrame:
    """Tasks -> the engine's long input frame (missing points simply absent)."""
    ids, ts, values = [], [], []
    for t in tasks:
        ok = np.isfinite(t.history)
        idx = np.flatnonzero(ok)
        ids.append(np.repeat(t.series_id, idx.size))
        ts.append(t.start_us + idx * HOUR_US)
        values.append(t.history[ok])
    return pl.DataFrame({
        "series_id": np.concatenate(ids), "ts": np.concatenate(ts), "value": np.concatenate(values),
    }).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def nixtla_frame(tasks: list[Task]) -> object:
    """Tasks -> pandas `unique_id, ds, y` with gaps linearly interpolated (peers need none)."""
    import pandas as pd

    parts = []
    for t in tasks:
        y = t.history.copy()
        ok = np.isfinite(y)
        y = np.interp(np.arange(y.size), np.flatnonzero(ok), y[ok])
        ds = pd.to_datetime(t.start_us + np.arange(y.size) * HOUR_US, unit="us")
        parts.append(pd.DataFrame({"unique_id": t.series_id, "ds": ds, "y": y}))
    return pd.concat(parts, ignore_index=True)


# ----------------------------------------------------------------------------- methods

Forecasts = dict[str, dict[str, np.ndarray]]  # series_id -> {"point": .., "p50": .., ...}


def _as_forecasts(frame: pl.DataFrame) -> Forecasts:
    return {sid: {c: g[c].to_numpy() for c in ("point", *QCOLS)}
            for (sid,), g in frame.group_by("series_id")}


def run_engine(tasks: list[Task], h: int, stash: dict[str, Forecasts]) -> Forecasts:
    """The engine with pooled intervals; per-series intervals from the same run go to stash."""
    engine = CapacityForecaster(EngineSettings(interval_method=POOLED))
    frame = engine.fit(long_frame(tasks)).predict(h, QUANTILES)
    stash[PER_SERIES] = _as_forecasts(engine.with_intervals(PER_SERIES))
    return _as_forecasts(frame)


def _statsforecast(tasks: list[Task], h: int, make_models: Callable[[int], list]) -> Forecasts:
    from statsforecast import StatsForecast

    out: Forecasts = {}
    # Season lengths must fit the history: group tasks by what their length allows.
    groups: dict[int, list[Task]] = {}
    for t in tasks:
        groups.setdefault(2 * 168 if t.history.size >= 2 * 168 else 0, []).append(t)
    for min_len, group in groups.items():
        models = make_models(min_len)
        sf = StatsForecast(models=models, freq="h", n_jobs=2)
        pred = sf.forecast(df=nixtla_frame(group), h=h, level=[60, 80, 90])
        name = repr(models[0])
        for sid, g in pred.groupby("unique_id"):
            point = g[name].to_numpy()
            out[str(sid)] = {"point": point, "p50": point,
                             "p80": g[f"{name}-hi-60"].to_numpy(),
                             "p90": g[f"{name}-hi-80"].to_numpy(),
                             "p95": g[f"{name}-hi-90"].to_numpy()}
    return out


def run_snaive(tasks: list[Task], h: int, season: int) -> Forecasts:
    from statsforecast.models import SeasonalNaive

    return _statsforecast(tasks, h, lambda n: [SeasonalNaive(season_length=season
                                                             if n or season == 24 else 24)])


def run_autoets(tasks: list[Task], h: int) -> Forecasts:
    from statsforecast.models import AutoETS

    return _statsforecast(tasks, h, lambda n: [AutoETS(season_length=24)])


def run_mstl(tasks: list[Task], h: int) -> Forecasts:
    from statsforecast.models import MSTL, AutoETS

    return _statsforecast(tasks, h, lambda n: [MSTL(season_length=[24, 168] if n else [24],
                                                    trend_forecaster=AutoETS(model="ZZN"))])


def run_mlforecast(tasks: list[Task], h: int) -> Forecasts:
    import lightgbm as lgb
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean
    from mlforecast.target_transforms import LocalStandardScaler
    from mlforecast.utils import PredictionIntervals

    out: Forecasts = {}
    groups: dict[bool, list[Task]] = {}
    for t in tasks:
        groups.setdefault(t.history.size >= 2 * 168 + 2 * h, []).append(t)
    for long_enough, group in groups.items():
        lags = [1, 24, 168] if long_enough else [1, 24]
        fcst = MLForecast(
            models={"lgbm": lgb.LGBMRegressor(n_estimators=300, learning_rate=0.05,
                                              num_leaves=31, num_threads=1, random_state=SEED,
                                              verbosity=-1)},
            freq="h", lags=lags, lag_transforms={1: [RollingMean(window_size=24)]},
            date_features=["hour", "dayofweek"], target_transforms=[LocalStandardScaler()],
        )
        intervals = PredictionIntervals(n_windows=2, h=h) if long_enough else None
        fcst.fit(nixtla_frame(group), prediction_intervals=intervals)
        pred = fcst.predict(h, level=[60, 80, 90] if long_enough else None)
        for sid, g in pred.groupby("unique_id"):
            point = g["lgbm"].to_numpy()
            q = {c: g[f"lgbm-hi-{lv}"].to_numpy() if long_enough else point
                 for c, lv in (("p80", 60), ("p90", 80), ("p95", 90))}
            out[str(sid)] = {"point": point, "p50": point, **q}
    return out


def run_naive2(tasks: list[Task], h: int) -> Forecasts:
    out: Forecasts = {}
    for t in tasks:
        point = naive2(t.history, h, M)
        out[t.series_id] = {"point": point, **{c: point for c in QCOLS}}
    return out


# ----------------------------------------------------------------------------- measuring


class PeakRSS:
    """Peak resident memory of this process and all its descendants, sampled every 50 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree_rss(pid: int) -> int:
        total = 0
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    for child in children.read().split():
                        total += PeakRSS._tree_rss(int(child))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._tree_rss(os.getpid()))
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Score:
    """Accumulated accuracy of one method on one data set."""

    mase: list[float] = field(default_factory=list)
    smape: list[float] = field(default_factory=list)
    pinball: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in QCOLS})
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QCOLS, 0))
    points: int = 0
    peak_error: list[float] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss: int = 0
    series: int = 0
    failures: int = 0
    by_series: dict[str, float] = field(default_factory=dict)


def score_into(score: Score, tasks: list[Task], forecasts: Forecasts) -> None:
    for t in tasks:
        f = forecasts.get(t.series_id)
        if f is None or not np.all(np.isfinite(f["point"])):
            score.failures += 1
            continue
        ok = np.isfinite(t.actual)
        scale = mase_scale(t.history[np.isfinite(t.history)], M)
        value = mase(t.actual, f["point"], t.history[np.isfinite(t.history)], M)
        score.mase.append(value)
        score.by_series[t.series_id] = value
        score.smape.append(smape(t.actual, f["point"]))
        for q, c in zip(QUANTILES, QCOLS, strict=True):
            score.pinball[c].append(scaled_pinball(t.actual, f[c], q, scale))
            score.hits[c] += int(np.sum(t.actual[ok] <= f[c][ok]))
        score.points += int(ok.sum())
        peak = np.nanmax(t.actual)
        score.peak_error.append(abs(float(np.max(f["p50"])) - peak) / max(abs(peak), 1e-9))


def measure(name: str, fn: Callable[[], Forecasts], score: Score, tasks: list[Task]) -> None:
    logging.info("running %s on %d series", name, len(tasks))
    with PeakRSS() as rss:
        started = time.perf_counter()
        try:
            forecasts = fn()
        except Exception as error:  # noqa: BLE001 - a failing peer is reported, not fatal
            logging.exception("%s failed: %s", name, error)
            forecasts = {}
        score.seconds += time.perf_counter() - started
    score.peak_rss = max(score.peak_rss, rss.peak)
    score.series += len(tasks)
    score_into(score, tasks, forecasts)


# ----------------------------------------------------------------------------- report


def table(scores: dict[str, Score], baseline: str, m4: dict[str, Score] | None = None) -> str:
    head = ("| method | mean MASE | median MASE | beats " + baseline + " | sMAPE | "
            "pinball 50/80/90/95 (scaled) | coverage p50/p80/p90/p95 | peak APE | series/s | "
            "peak RSS MB | failures |")
    lines = [head, "|" + "---|" * head.count("|")[:-1] if False else
             "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    base = scores[baseline].by_series
    for name, s in scores.items():
        if not s.mase:
            lines.append(f"| {name} | failed | | | | | | | | | {s.failures} |")
            continue
        wins = [s.by_series[k] < base[k] for k in s.by_series if k in base]
        pin = "/".join(f"{np.mean(s.pinball[c]):.3f}" for c in QCOLS)
        cov = "/".join(f"{100 * s.hits[c] / max(s.points, 1):.1f}" for c in QCOLS)
        speed = f"{s.series / s.seconds:.1f}" if s.seconds > 0.01 else "(same run)"
        memory = f"{s.peak_rss / 2**20:.0f}" if s.seconds > 0.01 else "(same run)"
        lines.append(
            f"| {name} | {np.mean(s.mase):.3f} | {np.median(s.mase):.3f} | "
            f"{100 * np.mean(wins):.0f} % | {np.mean(s.smape):.2f} | {pin} | {cov} | "
            f"{100 * np.mean(s.peak_error):.1f} % | {speed} | {memory} | {s.failures} |")
    return "\n".join(lines)


PEERS = ("statsforecast AutoETS", "statsforecast MSTL", "mlforecast LightGBM")


def hindsight_section(scores: dict[str, Score]) -> str:
    """Per-origin MASE of every method, and the best of them chosen after seeing the actuals.

    The issue's goal is a mean, and a mean over few origins is at the mercy of the largest one.
    Picking, per origin, whichever method turned out best is a bound no selection among them
    learned from the past can beat: if it misses the goal, selecting cannot reach it, and a
    weighting would have to beat the best of them by a wide margin on the other origins.
    """
    # Per-series conformal shares the pooled run's points: one column for both.
    ran = {name: s.by_series for name, s in scores.items()
           if s.by_series and name != "engine (per-series conformal)"}
    peers = {name: float(np.mean(list(ran[name].values()))) for name in PEERS if name in ran}
    if not peers:
        return "(peers skipped: no hindsight bound)"
    ids = sorted(set.intersection(*(set(v) for v in ran.values())))
    names = list(ran)
    head = "| series@origin | " + " | ".join(names) + " | best |"
    lines = [head, "|" + "|".join(["---"] * (len(names) + 2)) + "|"]
    best = []
    for sid in ids:
        values = [ran[n][sid] for n in names]
        best.append(min(values))
        cells = " | ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {sid} | {cells} | {best[-1]:.2f} |")
    peer, peer_mean = min(peers.items(), key=lambda kv: kv[1])
    worst = max(ids, key=lambda sid: min(ran[n][sid] for n in names))
    floor = min(ran[n][worst] for n in names) / len(ids)
    return "\n".join([
        *lines,
        "",
        f"- Best single peer: {peer}, mean MASE {peer_mean:.3f}; the goal (10 % below) is "
        f"{0.9 * peer_mean:.3f}.",
        f"- Hindsight best of these {len(names)} methods per origin: mean MASE "
        f"{np.mean(best):.3f} ({'meets' if np.mean(best) <= 0.9 * peer_mean else 'misses'} "
        "the goal).",
        f"- The largest origin, {worst}, adds at least {floor:.3f} to every method's mean "
        f"(its best MASE / {len(ids)} origins).",
    ])


def owa_table(scores: dict[str, Score]) -> str:
    ref = scores["naive2"]
    lines = ["| method | sMAPE | MASE | OWA vs Naive2 |", "|---|---|---|---|"]
    for name, s in scores.items():
        if not s.mase:
            continue
        owa = 0.5 * (np.mean(s.smape) / np.mean(ref.smape) + np.mean(s.mase) / np.mean(ref.mase))
        lines.append(f"| {name} | {np.mean(s.smape):.3f} | {np.mean(s.mase):.3f} | {owa:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "forecasting.md")
    parser.add_argument("--skip-peers", action="store_true", help="engine and baselines only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("capacity_pipelines").setLevel(logging.ERROR)
    if not args.data.is_dir():
        print(f"forecast_bench: {args.data} not found (research data is not redistributed)",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    series = real_series(args.data)
    batches = real_tasks(series, 1 if args.quick else REAL_ORIGINS)
    m4 = m4_tasks(args.data, 40 if args.quick else None)
    speed = speed_tasks(series, 100 if args.quick else 1000)

    stash: dict[str, Forecasts] = {}

    def methods(h: int) -> dict[str, Callable[[list[Task]], Forecasts]]:
        table_ = {
            "engine (pooled conformal)": lambda t: run_engine(t, h, stash),
            # same run, same points: only the intervals differ (no time of its own)
            "engine (per-series conformal)": lambda t: stash.pop(PER_SERIES),
            "seasonal naive 24": lambda t: run_snaive(t, h, 24),
            "seasonal naive 168": lambda t: run_snaive(t, h, 168),
        }
        if not args.skip_peers:
            table_.update({
                "statsforecast AutoETS": lambda t: run_autoets(t, h),
                "statsforecast MSTL": lambda t: run_mstl(t, h),
                "mlforecast LightGBM": lambda t: run_mlforecast(t, h),
            })
        return table_

    real_scores = {name: Score() for name in methods(REAL_HORIZON)}
    for batch in batches:
        for name, fn in methods(REAL_HORIZON).items():
            measure(name, lambda fn=fn, batch=batch: fn(batch), real_scores[name], batch)
    m4_scores = {name: Score() for name in ["naive2", *methods(M4_HORIZON)]}
    all_methods = {"naive2": lambda t: run_naive2(t, M4_HORIZON), **methods(M4_HORIZON)}
    for name, fn in all_methods.items():
        measure(name, lambda fn=fn: fn(m4), m4_scores[name], m4)
    speed_score = Score()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        frame = CapacityForecaster().fit(long_frame(speed)).predict(REAL_HORIZON, QUANTILES)
        speed_seconds = time.perf_counter() - t0
    speed_score.peak_rss = rss.peak
    finite = bool(np.isfinite(frame.select(["point", *QCOLS]).to_numpy()).all())
    negative = int((frame.select(["point", *QCOLS]).to_numpy() < 0).sum())
    total = time.perf_counter() - started

    command = "nice .venv/bin/python benchmarks/forecast_bench.py" + (
        " --quick" if args.quick else "") + (" --skip-peers" if args.skip_peers else "")
    n_real = sum(len(b) for b in batches)
    ids = sorted({t.series_id.split("@")[0] for b in batches for t in b})
    report = f"""# Forecasting benchmark ({'quick smoke run' if args.quick else 'full run'})

Command (repository root): `{command}`
Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()};
run took {total / 60:.1f} min. Every number below comes from this one run.

## (a) Real hourly series, rolling origin

{len(ids)} series ({', '.join(ids)}), {n_real} forecast origins (up to {REAL_ORIGINS} weekly
origins per series where the span allows; horizon {REAL_HORIZON} h, history up to 8 weeks, at
least 1 week). MASE scale: in-sample seasonal naive, m = 24. Pinball loss divided by the same
scale. Coverage: share of actuals at or below the quantile, pooled over all points (nominal
50/80/90/95). Peak APE: |max p50 forecast - max actual| / max actual over the horizon.
"beats" = share of origins with MASE below the baseline's.

{table(real_scores, "seasonal naive 168")}

### Per origin, and the best method chosen in hindsight

{hindsight_section(real_scores)}

## (b) M4 Hourly ({len(m4)} series, horizon {M4_HORIZON})

{table(m4_scores, "naive2")}

{owa_table(m4_scores)}

## (c) Speed: {len(speed)} hourly series x 8 weeks -> 168 h (engine, 2 workers)

| series | wall time | series/s | peak RSS (all processes) | all finite | negative values |
|---|---|---|---|---|---|
| {len(speed)} | {speed_seconds:.1f} s | {len(speed) / speed_seconds:.1f} | \
{rss.peak / 2**20:.0f} MB | {finite} | {negative} |
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    summary = {"real": {k: float(np.mean(v.mase)) if v.mase else None
                        for k, v in real_scores.items()},
               "speed_s": speed_seconds}
    print(report)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

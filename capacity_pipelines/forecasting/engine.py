"""The forecasting engine: backtested combination of local and global models, calibrated
upper quantiles, guard rails.

How one `predict(h)` works:
1. every candidate (seasonal naive, MSTL, Fourier+ETS, SARIMAX for short seasons, the LightGBM
   global model) forecasts each series from the full history and from `backtest_folds` earlier
   origins (rolling origin, one horizon apart); local models run in worker processes, the global
   model in the parent with LightGBM's own threads;
2. each series weights its best `top_k` candidates by inverse squared backtest MASE, shrunk
   towards the candidates' median MASE across all series, because two folds per series are too
   few to choose reliably on their own;
3. backtest errors of the combination, divided by the series' seasonal-naive scale, are pooled
   across series per horizon bucket and their empirical quantiles give p50..p95 (split-conformal
   with pooled, scale-normalised residuals; per-series conformal is available for comparison);
4. a forecast that is not finite or leaves the history's range by more than
   `explosion_factor` ranges falls back to seasonal naive, logged; non-negative metrics are
   clipped at zero.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Self

import numpy as np
import polars as pl

from capacity_pipelines.forecasting.frames import (
    MIN_SEASONS,
    RegularSeries,
    forecast_frame,
    to_regular,
    usable_periods,
)
from capacity_pipelines.forecasting.global_lgbm import LightGBMSettings, fit_predict_global
from capacity_pipelines.forecasting.models import SeasonalNaive, local_methods

logger = logging.getLogger(__name__)

DEFAULT_QUANTILES = (0.5, 0.8, 0.9, 0.95)
POOLED = "pooled_conformal"
PER_SERIES = "per_series_conformal"
# A backtest origin needs at least this many steps of history before it to say anything.
MIN_BACKTEST_HISTORY = 16
# A shortened backtest fold must still see this many steps to say anything about the model.
MIN_BACKTEST_STEPS = 12
# Below this many pooled errors in a horizon bucket the bucket borrows all buckets' errors.
MIN_BUCKET_ERRORS = 40
# Worker processes only pay off (spawn + import ~1-2 s each) above this many series.
PARALLEL_MIN_SERIES = 24
EPSILON = 1e-9


@dataclass(frozen=True)
class EngineSettings:
    """Engine knobs; defaults are what the benchmark measures."""

    backtest_folds: int = 2
    top_k: int = 3
    # Weight of the cross-series median in each series' model score (0 = per series only).
    shrinkage: float = 0.5
    interval_method: str = POOLED
    workers: int = 2
    use_lightgbm: bool = True
    explosion_factor: float = 3.0
    lightgbm: LightGBMSettings = field(default_factory=LightGBMSettings)


def quantile_column(q: float) -> str:
    """Column name of a quantile: 0.9 -> 'p90'."""
    return f"p{round(q * 100)}"


def seasonal_scale(series: RegularSeries) -> float:
    """In-sample mean absolute seasonal-naive error: the MASE denominator, used to normalise
    errors so that they can be pooled across series of any size."""
    periods = usable_periods(series.n, series.step_s)
    lag = periods[0] if periods else 1
    y = series.values
    if y.size > lag:
        diffs = np.abs(y[lag:] - y[:-lag])
        diffs = diffs[np.isfinite(diffs)]
        if diffs.size and diffs.mean() > EPSILON:
            return float(diffs.mean())
    level = float(np.nanmean(np.abs(y)))
    return level if level > EPSILON else 1.0


def is_sane(forecast: np.ndarray | None, history: np.ndarray, factor: float) -> bool:
    """True when the forecast is finite and stays within `factor` history ranges of it."""
    if forecast is None or not np.all(np.isfinite(forecast)):
        return False
    low, high = float(np.min(history)), float(np.max(history))
    span = max(high - low, abs(high), EPSILON)
    return bool(forecast.min() >= low - factor * span and forecast.max() <= high + factor * span)


def _fold_cuts(n: int, h: int, folds: int, step_s: int) -> list[int]:
    """History lengths at the backtest origins.

    Origins one horizon apart when the history allows at least one; otherwise (a history
    shorter than horizon + two seasons, e.g. a one-week-old service asked for a week) the
    folds are spaced evenly over what there is and scored on the steps they can see, so the
    series still gets its own weights and spread instead of borrowing everybody else's.
    """
    periods = usable_periods(n, step_s)
    min_history = max(MIN_BACKTEST_HISTORY, MIN_SEASONS * periods[0] + 1 if periods else 0)
    full = [n - f * h for f in range(1, folds + 1) if n - f * h >= min_history]
    if full:
        return full
    stride = (n - min_history) // folds
    if stride < MIN_BACKTEST_STEPS:
        return []
    return [n - f * stride for f in range(1, folds + 1)]


def _local_forecasts(task: tuple[list[tuple[np.ndarray, int, list[int]]], int]
                     ) -> list[dict[str, dict[int, np.ndarray | None]]]:
    """Worker: every local method at the full history (cut = n) and at each backtest cut."""
    items, h = task
    results = []
    for filled, step_s, cuts in items:
        methods = local_methods(usable_periods(filled.size, step_s))
        per_method: dict[str, dict[int, np.ndarray | None]] = {}
        for method in methods:
            per_method[method.name] = {}
            for cut in [filled.size, *cuts]:
                y = filled[:cut]
                try:
                    forecast = method.forecast(y, usable_periods(cut, step_s), h)
                except Exception as error:  # noqa: BLE001 - any model failure means fallback
                    logger.warning("%s failed on a %d-step history: %s", method.name, cut, error)
                    forecast = None
                per_method[method.name][cut] = forecast
        results.append(per_method)
    return results


class CapacityForecaster:
    """Backtested model combination with pooled conformal upper quantiles.

    `fit(history)` validates and regularises; `predict(h, quantiles)` does the work, because the
    backtest and the calibration depend on the horizon. After `predict`, `backtest_` holds each
    series' per-model backtest MASE and combination weight.
    """

    name = "capacity_engine"

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        self._series: list[RegularSeries] = []
        self.backtest_: pl.DataFrame | None = None
        self._calibration: tuple | None = None

    def fit(self, history: pl.DataFrame, source: str = "history") -> Self:
        """Validate the long frame and put each series on its regular grid.

        `source` names the history in error messages (the file, for `capacity forecast`).
        """
        self._series = to_regular(history, source)
        return self

    def fit_series(self, series: Sequence[RegularSeries]) -> Self:
        """Use already-regularised series (benchmarks and callers that hold arrays)."""
        self._series = list(series)
        return self

    # -- candidate forecasts ---------------------------------------------------------------

    def _run_candidates(self, h: int, cuts: list[list[int]]
                        ) -> tuple[list[dict[str, dict[int, np.ndarray | None]]],
                                   list[dict[int, np.ndarray | None]]]:
        """Local methods per series and the global model, each keyed by history length.

        Local methods run in worker processes once there are enough series to repay the
        process start-up; the global model trains in the parent meanwhile.
        """
        items = [(s.filled, s.step_s, c) for s, c in zip(self._series, cuts, strict=True)]
        workers = self.settings.workers
        if workers <= 1 or len(items) < PARALLEL_MIN_SERIES:
            return _local_forecasts((items, h)), self._run_global(h, cuts)
        chunk = max(1, math.ceil(len(items) / (workers * 8)))
        tasks = [(items[i:i + chunk], h) for i in range(0, len(items), chunk)]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_local_forecasts, task) for task in tasks]
            try:
                global_results = self._run_global(h, cuts)
                local_results = [r for future in futures for r in future.result()]
            except BaseException:
                # Interrupted (a canceled run) or failed: stop after the chunks in flight
                # instead of computing every queued one before the error can leave.
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        return local_results, global_results

    def _run_global(self, h: int, cuts: list[list[int]]) -> list[dict[int, np.ndarray | None]]:
        """The LightGBM global model, trained once per backtest fold and once on everything."""
        out: list[dict[int, np.ndarray | None]] = [{} for _ in self._series]
        if not self.settings.use_lightgbm:
            return out
        depth = max((len(c) for c in cuts), default=0)
        for fold in range(depth + 1):
            members = [i for i, c in enumerate(cuts) if fold == 0 or len(c) >= fold]
            cut_of = {i: self._series[i].n if fold == 0 else cuts[i][fold - 1] for i in members}
            truncated = [self._series[i].truncated(cut_of[i]) for i in members]
            forecasts = fit_predict_global(truncated, h, self.settings.lightgbm)
            for i, forecast in zip(members, forecasts, strict=True):
                out[i][cut_of[i]] = forecast
        return out

    # -- prediction ------------------------------------------------------------------------

    def predict(self, h: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> pl.DataFrame:
        """Forecast `h` steps: `series_id, ts, point, p.., model, interval_method`."""
        if h < 1:
            raise ValueError(f"horizon must be >= 1, got {h}")
        if any(not 0.0 < q < 1.0 for q in quantiles):
            raise ValueError(f"quantiles must lie in (0, 1), got {list(quantiles)}")
        if not self._series:
            raise ValueError("call fit() before predict()")
        quantiles = sorted(quantiles)
        series = self._series
        cuts = [_fold_cuts(s.n, h, self.settings.backtest_folds, s.step_s) for s in series]
        local, global_ = self._run_candidates(h, cuts)
        candidates = []
        for s, per_method, per_global in zip(series, local, global_, strict=True):
            merged = dict(per_method)
            if per_global and per_global.get(s.n) is not None:
                merged["lightgbm"] = per_global
            candidates.append(self._guard(s, merged, h))
        scales = [seasonal_scale(s) for s in series]
        # Shortened folds (see `_fold_cuts`) only score the first steps: good enough for the
        # error spread, too optimistic about fast-reacting models to choose weights with, so
        # those series take the cross-series ranking instead of their own.
        full = [bool(c) and s.n - c[0] >= h for s, c in zip(series, cuts, strict=True)]
        scores = [self._scores(s, c, cut, scale, h) if ok else {}
                  for s, c, cut, scale, ok in zip(series, candidates, cuts, scales, full,
                                                  strict=True)]
        medians = self._median_scores(scores)
        points, errors, labels, rows = [], [], [], []
        for s, cand, cut, scale, score in zip(series, candidates, cuts, scales, scores,
                                              strict=True):
            weights = self._weights(score, medians, cand)
            point = sum(w * cand[m][s.n] for m, w in weights.items())
            label = "combo:" + ",".join(f"{m}={w:.2f}" for m, w in weights.items())
            if not is_sane(point, s.filled, self.settings.explosion_factor):
                logger.warning("series %s: combination not sane, falling back to seasonal naive",
                               s.series_id)
                point, label = cand["snaive_day"][s.n], "fallback:snaive_day"
                weights = {"snaive_day": 1.0}
            points.append(point)
            labels.append(label)
            errors.append(self._fold_errors(s, cand, cut, scale, score, medians, weights, h))
            rows.extend({"series_id": s.series_id, "model": m,
                         "backtest_mase": score.get(m, math.nan),
                         "weight": weights.get(m, 0.0)} for m in cand)
        self.backtest_ = pl.DataFrame(rows, schema={"series_id": pl.String, "model": pl.String,
                                                    "backtest_mase": pl.Float64,
                                                    "weight": pl.Float64})
        self._calibration = (h, quantiles, points, scales, errors, labels)
        return self.with_intervals(self.settings.interval_method)

    def with_intervals(self, interval_method: str) -> pl.DataFrame:
        """The last prediction's points with quantiles from `interval_method`.

        Re-uses the stored backtest errors, so pooled and per-series calibration can be
        compared on exactly the same point forecasts without refitting anything.
        """
        if self._calibration is None:
            raise ValueError("call predict() first")
        h, quantiles, points, scales, errors, labels = self._calibration
        offsets = self._quantile_offsets(errors, quantiles, h, interval_method)
        columns: dict[str, list[np.ndarray]] = {"point": list(points)}
        for j, q in enumerate(quantiles):
            columns[quantile_column(q)] = [p + scale * off[:, j]
                                           for p, scale, off in zip(points, scales, offsets,
                                                                    strict=True)]
        self._finish(columns, quantiles)
        frame = forecast_frame(self._series, columns, h, {"model": labels})
        return frame.with_columns(pl.lit(interval_method).alias("interval_method"))

    def _guard(self, s: RegularSeries, merged: dict[str, dict[int, np.ndarray | None]],
               h: int) -> dict[str, dict[int, np.ndarray]]:
        """Replace failed or exploding candidate forecasts with seasonal naive (logged)."""
        naive = SeasonalNaive("day")
        guarded: dict[str, dict[int, np.ndarray]] = {}
        for name, by_cut in merged.items():
            guarded[name] = {}
            for cut, forecast in by_cut.items():
                history = s.filled[:cut]
                if not is_sane(forecast, history, self.settings.explosion_factor):
                    logger.warning("series %s: %s failed or exploded at origin %d; "
                                   "using seasonal naive", s.series_id, name, cut)
                    forecast = naive.forecast(history, usable_periods(cut, s.step_s), h)
                if s.non_negative:
                    forecast = np.maximum(forecast, 0.0)
                guarded[name][cut] = forecast
        return guarded

    @staticmethod
    def _scores(s: RegularSeries, cand: dict[str, dict[int, np.ndarray]], cuts: list[int],
                scale: float, h: int) -> dict[str, float]:
        """Per-model mean backtest MASE over the folds (only observed actuals count)."""
        scores = {}
        for name, by_cut in cand.items():
            errs = []
            for cut in cuts:
                actual = s.values[cut:cut + h]
                forecast = by_cut.get(cut)
                if forecast is None:
                    continue
                ok = np.isfinite(actual)
                if ok.any():
                    errs.append(np.abs(actual[ok] - forecast[: actual.size][ok]).mean() / scale)
            if errs:
                scores[name] = float(np.mean(errs))
        return scores

    @staticmethod
    def _median_scores(scores: list[dict[str, float]]) -> dict[str, float]:
        names = {m for score in scores for m in score}
        return {m: float(np.median([sc[m] for sc in scores if m in sc])) for m in names}

    def _weights(self, score: dict[str, float], medians: dict[str, float],
                 cand: dict[str, dict[int, np.ndarray]]) -> dict[str, float]:
        """Inverse squared (shrunk) MASE over the best `top_k` candidates, summing to 1."""
        lam = self.settings.shrinkage
        shrunk = {}
        for m in cand:
            if m in score and m in medians:
                shrunk[m] = (1 - lam) * score[m] + lam * medians[m]
            elif m in medians:
                shrunk[m] = medians[m]
        if not shrunk:  # no backtest anywhere: equal weights over everything available
            return {m: 1.0 / len(cand) for m in sorted(cand)}
        best = sorted(shrunk, key=lambda m: (shrunk[m], m))[: self.settings.top_k]
        inverse = {m: 1.0 / max(shrunk[m], EPSILON) ** 2 for m in best}
        total = sum(inverse.values())
        return {m: inverse[m] / total for m in best}

    def _fold_errors(self, s: RegularSeries, cand: dict[str, dict[int, np.ndarray]],
                     cuts: list[int], scale: float, score: dict[str, float],
                     medians: dict[str, float], weights: dict[str, float], h: int
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Scale-normalised combination errors per fold, as (steps, errors) pairs.

        With two or more folds the weights for fold f come from the other folds, so the
        calibration errors are out-of-sample for the model choice too.
        """
        out = []
        for cut in cuts:
            if len(cuts) > 1 and score:
                others = [c for c in cuts if c != cut]
                fold_score = self._scores(s, cand, others, scale, h)
                fold_weights = self._weights(fold_score, medians, cand)
            else:
                fold_weights = weights
            forecast = sum(w * cand[m][cut] for m, w in fold_weights.items() if cut in cand[m])
            actual = s.values[cut:cut + h]
            ok = np.isfinite(actual)
            steps = np.arange(1, actual.size + 1)
            out.append((steps[ok], (actual[ok] - np.asarray(forecast)[: actual.size][ok]) / scale))
        return out

    @staticmethod
    def _quantile_offsets(errors: list[list[tuple[np.ndarray, np.ndarray]]],
                          quantiles: Sequence[float], h: int,
                          interval_method: str) -> list[np.ndarray]:
        """Per series: an (h, len(quantiles)) array of error quantiles in MASE-scale units.

        Pooled: each series' errors are divided by its own backtest mean absolute error
        (`spread`), pooled across series per horizon bucket, and the pooled quantiles are
        multiplied back by the series' spread. Series differ in how predictable they are, so
        pooling raw scaled errors would give calm series the bands of noisy ones.
        """
        width = max(1, math.ceil(h / 7))
        buckets = (np.arange(1, h + 1) - 1) // width
        n_buckets = int(buckets.max()) + 1
        def spread(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
            errs = np.concatenate([p[1] for p in pairs]) if pairs else np.empty(0)
            return float(np.mean(np.abs(errs))) if errs.size else math.nan

        spreads = [spread(e) for e in errors]
        known = [x for x in spreads if np.isfinite(x) and x > EPSILON]
        typical = float(np.median(known)) if known else 1.0
        # a series whose backtest was (nearly) perfect still gets a tenth of a typical spread
        spreads = [max(x, 0.1 * typical) if np.isfinite(x) else typical for x in spreads]
        # Cross-fitting: each fold's errors are normalised by the spread of the *other* folds,
        # so the pooled distribution includes the noise of estimating a spread from few errors
        # (normalising by a spread fitted on the same errors narrows it and under-covers).
        normalised = []
        for series_errors, own in zip(errors, spreads, strict=True):
            for j, (steps, errs) in enumerate(series_errors):
                others = series_errors[:j] + series_errors[j + 1:]
                held_out = spread(others)
                held_out = max(held_out, 0.1 * typical) if np.isfinite(held_out) else own
                normalised.append((steps, errs / held_out))

        def table(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
            if not pairs or not sum(p[1].size for p in pairs):
                return None
            steps = np.concatenate([p[0] for p in pairs])
            errs = np.concatenate([p[1] for p in pairs])
            everything = np.quantile(errs, quantiles)
            rows = []
            for b in range(n_buckets):
                in_bucket = errs[(steps - 1) // width == b]
                rows.append(np.quantile(in_bucket, quantiles)
                            if in_bucket.size >= MIN_BUCKET_ERRORS else everything)
            return np.asarray(rows)[buckets]

        pooled = table(normalised)
        if pooled is None:
            # No series could be backtested: a symmetric band of two scales at most.
            pooled = np.tile(np.asarray([(q - 0.5) * 4.0 for q in quantiles]), (h, 1))
        if interval_method == POOLED:
            return [pooled * own for own in spreads]
        if interval_method != PER_SERIES:
            raise ValueError(f"unknown interval_method {interval_method!r}")
        out = []
        for series_errors, own_spread in zip(errors, spreads, strict=True):
            own = table([(np.ones_like(p[0]), p[1]) for p in series_errors])  # one bucket
            out.append(pooled * own_spread if own is None else np.tile(own[0], (h, 1)))
        return out

    def _finish(self, columns: dict[str, list[np.ndarray]], quantiles: Sequence[float]) -> None:
        """Quantiles non-decreasing in level; no negatives for non-negative metrics."""
        names = [quantile_column(q) for q in quantiles]
        for i, s in enumerate(self._series):
            stacked = np.maximum.accumulate(np.column_stack([columns[n][i] for n in names]),
                                            axis=1)
            for j, name in enumerate(names):
                columns[name][i] = stacked[:, j]
            if s.non_negative:
                for name in ["point", *names]:
                    columns[name][i] = np.maximum(columns[name][i], 0.0)

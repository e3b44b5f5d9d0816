"""Per-series ("local") forecasting methods and the one model interface.

Each local method is a small class whose `forecast(y, periods, h)` maps one gap-filled history
to `h` point forecasts. `LocalModel` lifts any of them to the common interface over long
frames: `fit(history)` then `predict(h, quantiles)`. The engine calls `forecast` directly inside
worker processes, so a method must be picklable and free of state between calls.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Protocol, Self

import numpy as np
import polars as pl

from capacity_pipelines.forecasting.frames import (
    RegularSeries,
    forecast_frame,
    to_regular,
    usable_periods,
)

# SARIMAX state-space fits grow with the season length; a 24-step season already costs
# seconds per series and a 168-step one minutes (issue 3), so it is reserved for short seasons
# such as day-of-week on daily data.
SARIMAX_MAX_SEASON = 12
# Harmonics per seasonal period in the Fourier regression: enough for a two-peaked working day,
# few enough not to chase noise (Hyndman & Athanasopoulos, FPP3 §12.1 pick K by AIC; we cap).
FOURIER_HARMONICS = {"short": 6, "long": 4}


class Forecaster(Protocol):
    """The model interface every method and the engine itself implement."""

    name: str

    def fit(self, history: pl.DataFrame) -> Self:
        """Learn from a long `series_id, ts, value` frame."""
        ...

    def predict(self, h: int, quantiles: Sequence[float] = ()) -> pl.DataFrame:
        """`h` future steps per series: `series_id, ts, point` (+ one column per quantile)."""
        ...


class LocalMethod(Protocol):
    """A per-series method: gap-filled history -> `h` point forecasts."""

    name: str

    def forecast(self, y: np.ndarray, periods: tuple[int, ...], h: int) -> np.ndarray:
        """Point forecasts for the `h` steps after `y`; `periods` are the usable seasons."""
        ...


def repeat_last_cycle(values: np.ndarray, period: int, h: int) -> np.ndarray:
    """Continue a seasonal pattern by repeating its last full cycle."""
    cycle = values[-period:]
    return np.resize(cycle, h) if h else np.empty(0)


class Naive:
    """Last observed value carried forward: the method of last resort."""

    name = "naive"

    def forecast(self, y: np.ndarray, periods: tuple[int, ...], h: int) -> np.ndarray:
        """Repeat the last value."""
        return np.full(h, y[-1], dtype=float)


class SeasonalNaive:
    """Repeat the last day (`cycle="day"`) or week (`cycle="week"`): the bar to clear."""

    def __init__(self, cycle: str = "day") -> None:
        if cycle not in ("day", "week"):
            raise ValueError(f"cycle must be 'day' or 'week', got {cycle!r}")
        self.cycle = cycle
        self.name = f"snaive_{cycle}"

    def forecast(self, y: np.ndarray, periods: tuple[int, ...], h: int) -> np.ndarray:
        """Repeat the last cycle; the last value when the cycle is not covered."""
        index = 0 if self.cycle == "day" else 1
        if len(periods) > index and y.size >= periods[index]:
            return repeat_last_cycle(y, periods[index], h)
        return Naive().forecast(y, periods, h)


def _damped_level_trend(y: np.ndarray, h: int, trend: bool) -> np.ndarray:
    """Holt's damped-trend (or simple) exponential smoothing via statsmodels.

    Damping keeps a week-long extrapolation of a recent slope from running away, which is the
    usual cause of "absurd" capacity forecasts.
    """
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ExponentialSmoothing(
            y, trend="add" if trend else None, damped_trend=trend,
            initialization_method="heuristic" if y.size >= 10 else "estimated",
        )
        return np.asarray(model.fit().forecast(h), dtype=float)


class MSTLForecaster:
    """statsmodels MSTL (daily + weekly), damped Holt on the seasonally adjusted series.

    The same decomposition-then-ETS recipe as statsforecast's MSTL. `iterate=2` with one inner
    STL pass is ~5x faster than the defaults on 8 weeks of hourly data with the same fit.
    """

    name = "mstl"

    def forecast(self, y: np.ndarray, periods: tuple[int, ...], h: int) -> np.ndarray:
        """Decompose, continue each season's last cycle, extrapolate the rest with damped Holt."""
        from statsmodels.tsa.seasonal import MSTL

        if not periods:
            return _damped_level_trend(y, h, trend=y.size >= 10)
        result = MSTL(y, periods=periods, iterate=2, stl_kwargs={"inner_iter": 1}).fit()
        seasonal = np.asarray(result.seasonal, dtype=float).reshape(y.size, -1)
        adjusted = y - seasonal.sum(axis=1)
        future = _damped_level_trend(adjusted, h, trend=True)
        for j, period in enumerate(periods):
            future = future + repeat_last_cycle(seasonal[:, j], period, h)
        return future


def fourier_terms(index: np.ndarray, periods: tuple[int, ...]) -> np.ndarray:
    """Sine/cosine regressors for each period (short periods get more harmonics)."""
    columns = []
    for j, period in enumerate(periods):
        harmonics = FOURIER_HARMONICS["short" if j == 0 else "long"]
        for k in range(1, min(harmonics, period // 2) + 1):
            angle = 2.0 * math.pi * k * index / period
            columns.extend([np.sin(angle), np.cos(angle)])
    return np.column_stack(columns) if columns else np.empty((index.size, 0))


class FourierETS:
    """Fourier regression for the seasons, simple exponential smoothing for the level.

    The static seasonal shape (fitted over the whole window) complements MSTL's evolving one:
    it is robust to a single odd day, while MSTL follows a changing shape.
    """

    name = "fourier_ets"

    def forecast(self, y: np.ndarray, periods: tuple[int, ...], h: int) -> np.ndarray:
        """Least-squares Fourier seasonality plus an exponentially smoothed level."""
        if not periods:
            return _damped_level_trend(y, h, trend=False)
        index = np.arange(y.size + h, dtype=float)
        regressors = fourier_terms(index, periods)
        design = np.column_stack([np.ones(y.size), regressors[: y.size]])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        seasonal = regressors @ coef[1:]
        level = _damped_level_trend(y - seasonal[: y.size], h, trend=False)
        return level + seasonal[y.size:]


class SARIMAXForecaster:
    """Seasonal ARIMA(1,0,1)(0,1,1)_m, only for short seasons (see `SARIMAX_MAX_SEASON`)."""

    name = "sarimax"

    def forecast(self, y: np.ndarray, periods: tuple[int, ...], h: int) -> np.ndarray:
        """Fit the airline-like model on the shortest season; refuse long seasons."""
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        if not periods or periods[0] > SARIMAX_MAX_SEASON:
            raise ValueError(f"SARIMAX is reserved for seasons <= {SARIMAX_MAX_SEASON} steps")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = SARIMAX(y, order=(1, 0, 1), seasonal_order=(0, 1, 1, periods[0]))
            return np.asarray(model.fit(disp=False, maxiter=50).forecast(h), dtype=float)


def local_methods(periods: tuple[int, ...]) -> list[LocalMethod]:
    """The local candidates worth running for a series with these usable seasons."""
    if not periods:  # seasonal naive degrades to the last value here
        return [SeasonalNaive("day"), FourierETS()]
    methods: list[LocalMethod] = [SeasonalNaive("day"), MSTLForecaster(), FourierETS()]
    if len(periods) > 1:
        methods.insert(1, SeasonalNaive("week"))
    if periods[0] <= SARIMAX_MAX_SEASON:
        methods.append(SARIMAXForecaster())
    return methods


class LocalModel:
    """Adapter: one `LocalMethod` applied to each series of a long frame.

    Quantiles are not produced here: a single method has no calibrated error model. Wrap the
    point forecaster in the engine (`CapacityForecaster`), whose pooled conformal errors give
    them; asking for quantiles raises instead of returning an uncalibrated band.
    """

    def __init__(self, method: LocalMethod) -> None:
        self.method = method
        self.name = method.name
        self._series: list[RegularSeries] = []

    def fit(self, history: pl.DataFrame) -> Self:
        """Validate and regularise the history; local methods do their work in `predict`."""
        self._series = to_regular(history)
        return self

    def predict(self, h: int, quantiles: Sequence[float] = ()) -> pl.DataFrame:
        """Point forecasts per series."""
        if quantiles:
            raise ValueError(f"{self.name} gives point forecasts only; use CapacityForecaster "
                             "for calibrated quantiles")
        points = []
        for series in self._series:
            periods = usable_periods(series.n, series.step_s)
            points.append(self.method.forecast(series.filled, periods, h))
        return forecast_frame(self._series, {"point": points}, h)


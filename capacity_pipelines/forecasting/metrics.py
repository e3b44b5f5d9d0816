"""Forecast accuracy measures, as defined by the M4 competition and common practice.

MASE, sMAPE and OWA follow Makridakis, Spiliotis & Assimakopoulos (2020), "The M4 Competition:
100,000 time series and 61 forecasting methods", IJF 36(1); Naive2 is their seasonally adjusted
naive benchmark (classical multiplicative decomposition, applied when the lag-m autocorrelation
passes a 90 % test).
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-9
# One-sided 90 % normal quantile used by the M4 seasonality test.
M4_SEASONALITY_Z = 1.645


def mase_scale(insample: np.ndarray, m: int) -> float:
    """Mean absolute in-sample seasonal-naive error (lag m), ignoring missing points."""
    y = np.asarray(insample, dtype=float)
    lag = m if y.size > m else 1
    diffs = np.abs(y[lag:] - y[:-lag])
    diffs = diffs[np.isfinite(diffs)]
    return float(diffs.mean()) if diffs.size and diffs.mean() > EPSILON else EPSILON


def mase(actual: np.ndarray, forecast: np.ndarray, insample: np.ndarray, m: int) -> float:
    """Mean absolute scaled error over the observed actuals."""
    ok = np.isfinite(actual)
    return float(np.abs(actual[ok] - forecast[ok]).mean() / mase_scale(insample, m))


def smape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Symmetric MAPE in percent (M4 definition, 0..200)."""
    ok = np.isfinite(actual)
    a, f = actual[ok], forecast[ok]
    return float(np.mean(200.0 * np.abs(a - f) / np.maximum(np.abs(a) + np.abs(f), EPSILON)))


def scaled_pinball(actual: np.ndarray, quantile_forecast: np.ndarray, q: float,
                   scale: float) -> float:
    """Mean pinball (quantile) loss at level q, divided by the MASE scale."""
    ok = np.isfinite(actual)
    diff = actual[ok] - quantile_forecast[ok]
    return float(np.mean(np.maximum(q * diff, (q - 1.0) * diff)) / scale)


def is_seasonal(y: np.ndarray, m: int) -> bool:
    """M4 seasonality test: lag-m autocorrelation beyond its 90 % band."""
    if y.size < 3 * m:
        return False
    centred = y - y.mean()
    denom = float(np.sum(centred**2)) or EPSILON
    acf = np.array([np.sum(centred[k:] * centred[:-k]) / denom for k in range(1, m + 1)])
    limit = M4_SEASONALITY_Z * np.sqrt((1 + 2 * np.sum(acf[:-1] ** 2)) / y.size)
    return bool(abs(acf[-1]) > limit)


def naive2(y: np.ndarray, h: int, m: int) -> np.ndarray:
    """M4's Naive2: naive on the classically (multiplicatively) deseasonalised series."""
    y = np.asarray(y, dtype=float)
    if not is_seasonal(y, m) or np.any(y <= 0):
        return np.full(h, y[-1])
    # centred 2xm moving average for even m
    kernel = np.r_[0.5, np.ones(m - 1), 0.5] / m if m % 2 == 0 else np.ones(m) / m
    trend = np.convolve(y, kernel, mode="valid")
    offset = (y.size - trend.size) // 2
    ratios = y[offset:offset + trend.size] / trend
    phase = (np.arange(trend.size) + offset) % m
    index = np.array([ratios[phase == p].mean() for p in range(m)])
    index = index / index.mean()
    deseasonalised = y / index[np.arange(y.size) % m]
    future_phase = np.arange(y.size, y.size + h) % m
    return deseasonalised[-1] * index[future_phase]

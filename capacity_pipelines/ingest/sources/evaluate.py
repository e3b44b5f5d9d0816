"""Evaluate catalog queries over raw samples with Prometheus 2.x semantics.

The file source must give the same rows as a live Prometheus answering the rendered PromQL, so
this module mirrors the parts of the PromQL engine the catalog uses: closed range windows
`[t - range, t]`, `rate()` with Prometheus' extrapolation and counter-reset handling,
`*_over_time`, aggregation by labels, `label_replace` aliases and `histogram_quantile`.
Each series is evaluated with numpy over the whole evaluation grid at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from capacity_pipelines.ingest.catalog import ColumnQuery, Selector, TableSpec
from capacity_pipelines.ingest.sources.openmetrics import RawSamples


class UnsupportedQueryError(ValueError):
    """A catalog column carries raw PromQL, which only a live Prometheus can answer."""


def _windows(ts: np.ndarray, grid: np.ndarray, range_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Index bounds [lo, hi) of the samples inside each closed window [t - range, t]."""
    lo = np.searchsorted(ts, grid - range_s - 1e-9, side="left")
    hi = np.searchsorted(ts, grid + 1e-9, side="right")
    return lo, hi


def _avg_over_time(ts, values, grid, range_s):
    lo, hi = _windows(ts, grid, range_s)
    csum = np.concatenate(([0.0], np.cumsum(values)))
    n = hi - lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (csum[hi] - csum[lo]) / n
    out[n == 0] = np.nan
    return out


def _max_over_time(ts, values, grid, range_s):
    lo, hi = _windows(ts, grid, range_s)
    out = np.full(grid.shape, np.nan)
    ok = hi > lo
    if ok.any():
        padded = np.concatenate((values, [np.nan]))
        bounds = np.empty(2 * ok.sum(), dtype=np.int64)
        bounds[0::2], bounds[1::2] = lo[ok], hi[ok]
        out[ok] = np.maximum.reduceat(padded, bounds)[0::2]
    return out


def _rate(ts, values, grid, range_s, per_second=True):
    """Prometheus 2.x `extrapolatedRate` for counters (promql/functions.go)."""
    lo, hi = _windows(ts, grid, range_s)
    out = np.full(grid.shape, np.nan)
    ok = (hi - lo) >= 2
    if not ok.any():
        return out
    drops = np.concatenate(([0.0], np.where(values[1:] < values[:-1], values[:-1], 0.0)))
    adjusted = values + np.cumsum(drops)
    first, last = lo[ok], hi[ok] - 1
    result = adjusted[last] - adjusted[first]
    t_first, t_last = ts[first], ts[last]
    range_start, range_end = grid[ok] - range_s, grid[ok]
    to_start = t_first - range_start
    to_end = range_end - t_last
    sampled = t_last - t_first
    avg_gap = sampled / (last - first)
    first_value = values[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        to_zero = sampled * (first_value / result)
    use_zero = (result > 0) & (first_value >= 0) & (to_zero < to_start)
    to_start = np.where(use_zero, to_zero, to_start)
    threshold = avg_gap * 1.1
    interval = (
        sampled
        + np.where(to_start < threshold, to_start, avg_gap / 2)
        + np.where(to_end < threshold, to_end, avg_gap / 2)
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        result = result * (interval / sampled)
    out[ok] = result / range_s if per_second else result
    return out


def _matched(samples: RawSamples, selector: Selector) -> list[str]:
    return [
        key for key in samples.for_metric(selector.metric) if selector.matches(samples.labels[key])
    ]


def _group_key(
    labels: dict[str, str], by: Iterable[str], aliases: dict[str, tuple[str, ...]]
) -> tuple[str, ...]:
    """Output labels of a series after `label_replace` aliases (first non-empty source wins)."""
    key = []
    for label in by:
        value = labels.get(label, "")
        for source in reversed(aliases.get(label, ())):
            if labels.get(source, ""):
                value = labels[source]
        key.append(value)
    return tuple(key)


def _per_series(
    samples: RawSamples, keys: list[str], fn, grid, range_s, **kw
) -> dict[str, np.ndarray]:
    if not keys:
        return {}
    parts = samples.frame.filter(pl.col("series").is_in(keys)).partition_by(
        "series", as_dict=True, maintain_order=True
    )
    out = {}
    for (key,), part in parts.items():
        ts = part["ts"].to_numpy()
        values = part["value"].to_numpy()
        out[key] = fn(ts, values, grid, range_s, **kw)
    return out


def _aggregate(
    values: dict[str, np.ndarray],
    samples: RawSamples,
    by: tuple[str, ...],
    aliases: dict[str, tuple[str, ...]],
    agg: str,
    n: int,
) -> dict[tuple[str, ...], np.ndarray]:
    groups: dict[tuple[str, ...], list[np.ndarray]] = {}
    for key, series_values in values.items():
        groups.setdefault(_group_key(samples.labels[key], by, aliases), []).append(series_values)
    out = {}
    for group, members in groups.items():
        stack = np.vstack(members) if members else np.full((1, n), np.nan)
        present = ~np.isnan(stack)
        any_present = present.any(axis=0)
        with np.errstate(invalid="ignore"):
            if agg == "sum":
                result = np.where(present, stack, 0.0).sum(axis=0)
            elif agg == "max":
                result = np.where(present, stack, -np.inf).max(axis=0)
            elif agg == "min":
                result = np.where(present, stack, np.inf).min(axis=0)
            else:
                result = np.where(present, stack, 0.0).sum(axis=0) / present.sum(axis=0)
        result[~any_present] = np.nan
        out[group] = result
    return out


def _bucket_quantile(q: float, bounds: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Prometheus `bucketQuantile` for every column of a (buckets x times) count matrix."""
    n_times = counts.shape[1]
    out = np.full(n_times, np.nan)
    for j in range(n_times):
        present = ~np.isnan(counts[:, j])
        b_bounds, b_counts = bounds[present], counts[present, j]
        if len(b_bounds) < 2 or not np.isposinf(b_bounds[-1]):
            continue
        b_counts = np.maximum.accumulate(b_counts)  # ensureMonotonic
        observations = b_counts[-1]
        if observations == 0:
            continue
        rank = q * observations
        b = (
            int(np.argmax(b_counts[:-1] >= rank))
            if (b_counts[:-1] >= rank).any()
            else len(b_counts) - 1
        )
        if b == len(b_counts) - 1:
            out[j] = b_bounds[-2]
            continue
        if b == 0 and b_bounds[0] <= 0:
            out[j] = b_bounds[0]
            continue
        start, end, count = 0.0, b_bounds[b], b_counts[b]
        if b > 0:
            start = b_bounds[b - 1]
            count -= b_counts[b - 1]
            rank -= b_counts[b - 1]
        out[j] = start + (end - start) * (rank / count)
    return out


def evaluate_column(
    samples: RawSamples,
    table: TableSpec,
    query: ColumnQuery,
    grid: np.ndarray,
    step_s: float,
    window_s: float,
) -> dict[tuple[str, ...], np.ndarray]:
    """Values of one catalog column per output label set over the evaluation grid (epoch s).

    Missing points are NaN, as absent samples are in PromQL.
    """
    if query.op == "promql" or query.selector is None:
        raise UnsupportedQueryError(
            f"column {table.name}.{query.column} uses raw PromQL; only a live Prometheus can "
            "evaluate it (use the structured op/selector form to read it from files)"
        )
    by, aliases, n = table.source_labels, query.label_aliases, len(grid)
    keys = _matched(samples, query.selector)
    if query.op == "gauge":
        per = _per_series(samples, keys, _avg_over_time, grid, step_s)
        return _aggregate(per, samples, by, aliases, query.agg, n)
    if query.op == "max_over_time":
        per = _per_series(samples, keys, _max_over_time, grid, step_s)
        return _aggregate(per, samples, by, aliases, query.agg, n)
    if query.op in ("rate", "increase_per_step"):
        per = _per_series(samples, keys, _rate, grid, window_s)
        result = _aggregate(per, samples, by, aliases, query.agg, n)
        if query.op == "increase_per_step":
            result = {k: v * step_s for k, v in result.items()}
        return result
    if query.op == "ratio_of_rates":
        assert query.denominator is not None
        numerator = _aggregate(
            _per_series(samples, keys, _rate, grid, window_s), samples, by, aliases, "sum", n
        )
        den_keys = _matched(samples, query.denominator)
        denominator = _aggregate(
            _per_series(samples, den_keys, _rate, grid, window_s), samples, by, aliases, "sum", n
        )
        out = {}
        for group in numerator.keys() & denominator.keys():
            with np.errstate(invalid="ignore", divide="ignore"):
                out[group] = numerator[group] / denominator[group]
        return out
    if query.op == "histogram_quantile":
        per = _per_series(samples, keys, _rate, grid, window_s)
        by_le = (*by, "le")
        buckets = _aggregate(per, samples, by_le, aliases, "sum", n)
        grouped: dict[tuple[str, ...], list[tuple[float, np.ndarray]]] = {}
        for group, series_values in buckets.items():
            grouped.setdefault(group[:-1], []).append((float(group[-1]), series_values))
        out = {}
        for group, members in grouped.items():
            members.sort(key=lambda item: item[0])
            bounds = np.array([b for b, _ in members])
            counts = np.vstack([v for _, v in members])
            out[group] = _bucket_quantile(query.quantile or 0.5, bounds, counts)
        return out
    raise UnsupportedQueryError(f"unknown op {query.op!r}")

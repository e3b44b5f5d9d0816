"""Long-format history frames -> regular per-series arrays, and back.

Every model works on regular grids (one value per step, NaN where a point is missing), so the
conversion, the validation and the frequency inference happen once, here. The public contract
is the long format `series_id, ts, value` (see DESIGN.md, `capacity forecast`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from capacity_pipelines.common.contracts import (
    Column,
    ContractError,
    check_frame,
    column_error,
)

SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY
# Above this share of missing grid points a series is noise, not history: refuse it rather than
# forecast from interpolation. The engine is specified to tolerate <= 10 % (issue 3).
MAX_MISSING_SHARE = 0.5
# A season is only estimable when the history holds at least two full cycles of it (issue 3:
# "short series (< 2 seasons) get simple methods").
MIN_SEASONS = 2

HISTORY_COLUMNS = ("series_id", "ts", "value")
# DESIGN.md `capacity forecast`: H is `series_id` (str), `ts` (timestamp), `value` (float); a
# history may go below zero (a balance, a temperature), so negative values are allowed.
HISTORY_CONTRACT = (
    Column("series_id", "string"),
    Column("ts", "timestamp"),
    Column("value", "number", negative=True),
)
# Hampel identifier for isolated spikes (Pearson 2002): a point further than HAMPEL_K robust
# step sizes from the median of its 2*HAMPEL_HALF_WINDOW+1 neighbours is replaced by
# that median in the models' input. The textbook k = 3 would also flatten genuine short load
# peaks; 8 only removes measurement artefacts such as NAB's labelled anomaly spikes.
HAMPEL_HALF_WINDOW = 3
HAMPEL_K = 8.0
# Standard deviation of a normal variable per unit of median absolute deviation.
MAD_TO_SIGMA = 1.4826


class HistoryError(ContractError):
    """Input history that cannot be forecast; the message names the column and the problem."""


@dataclass(frozen=True)
class RegularSeries:
    """One series on a regular time grid.

    `values` holds NaN where the grid has no observation (backtests score against these);
    `filled` is what the models consume: gaps linearly interpolated, isolated spikes removed.
    `start_s` and `step_s` are epoch seconds (UTC) so calendar features need no timezone
    library.
    """

    series_id: str
    start_s: int
    step_s: int
    values: np.ndarray
    filled: np.ndarray

    @property
    def n(self) -> int:
        """Number of grid steps in the history (observed or not)."""
        return int(self.values.shape[0])

    @property
    def missing_share(self) -> float:
        """Share of grid points without an observation."""
        return float(np.isnan(self.values).mean()) if self.n else 0.0

    @property
    def non_negative(self) -> bool:
        """True when no observed value is below zero (counts, rates, utilisation, bytes)."""
        observed = self.values[~np.isnan(self.values)]
        return bool(observed.size and observed.min() >= 0.0)

    def truncated(self, n: int) -> RegularSeries:
        """The first `n` steps: the history as it was known at an earlier forecast origin."""
        return RegularSeries(self.series_id, self.start_s, self.step_s, self.values[:n],
                             self.filled[:n])


def seasonal_periods(step_s: int) -> tuple[int, ...]:
    """Daily and weekly cycle lengths in steps for a sampling interval, when they are whole.

    Capacity metrics follow the working day and the working week; longer cycles (yearly) need
    more history than a capacity forecast is ever given.
    """
    periods = []
    for cycle_s in (SECONDS_PER_DAY, SECONDS_PER_WEEK):
        if step_s < cycle_s and cycle_s % step_s == 0 and cycle_s // step_s >= 2:
            periods.append(cycle_s // step_s)
    return tuple(periods)


def usable_periods(n: int, step_s: int) -> tuple[int, ...]:
    """Seasonal periods that the history covers at least `MIN_SEASONS` times."""
    return tuple(p for p in seasonal_periods(step_s) if n > MIN_SEASONS * p)


def validate_history(history: pl.DataFrame, source: str = "history",
                     allow_missing_values: bool = True) -> pl.DataFrame:
    """Check the history contract; return the frame sorted with `ts` as UTC-naive µs.

    The checks are the shared file contract (`common.contracts`); what is the forecaster's own
    is what NaN means. With `allow_missing_values` NaN/null/inf values are dropped first
    (treated as missing points: the warehouse may hold gaps); the CLI sets it to False because a
    file full of NaN is more likely a broken export than a gap. The zone is dropped after the
    conversion to UTC because the models' grid arithmetic works on epoch microseconds.
    Raises `HistoryError` with one line: `<source>: column <name>: <problem>`.
    """
    frame = history
    if allow_missing_values and "value" in frame.columns and frame.schema["value"].is_numeric():
        frame = frame.filter(pl.col("value").cast(pl.Float64).is_finite())
        if frame.height == 0 and history.height:
            raise HistoryError(column_error(source, "value", "no finite values"))
    frame = check_frame(frame, source, HISTORY_CONTRACT, unique_key=("series_id", "ts"),
                        error=HistoryError)
    return frame.select(
        pl.col("series_id").cast(pl.String),
        pl.col("ts").dt.replace_time_zone(None),
        pl.col("value").cast(pl.Float64),
    ).sort("series_id", "ts")


def infer_step_seconds(ts_us: np.ndarray) -> int:
    """Sampling interval in seconds: the most common gap between consecutive timestamps.

    The mode, not the minimum, so a stray extra sample or a few gaps do not change the grid.
    """
    if ts_us.size < 2:
        raise HistoryError("a series needs at least 2 points to infer its frequency")
    gaps = np.diff(ts_us) // 1_000_000
    gaps = gaps[gaps > 0]
    values, counts = np.unique(gaps, return_counts=True)
    return int(values[np.argmax(counts)])


def to_regular(history: pl.DataFrame, source: str = "history") -> list[RegularSeries]:
    """Validated long frame -> one `RegularSeries` per `series_id` (sorted by id).

    Points are snapped to the grid of the inferred step anchored at the first timestamp; points
    that snap onto the same slot are averaged.
    """
    frame = validate_history(history, source)
    out = []
    for (series_id,), group in frame.group_by("series_id", maintain_order=True):
        ts_us = group["ts"].cast(pl.Int64).to_numpy()
        values = group["value"].to_numpy()
        if ts_us.size < 3:
            raise HistoryError(column_error(
                source, "ts", f"series '{series_id}' has {ts_us.size} points, at least 3 needed"))
        step_s = infer_step_seconds(ts_us)
        slots = np.rint((ts_us - ts_us[0]) / (step_s * 1_000_000)).astype(np.int64)
        n = int(slots[-1]) + 1
        sums = np.bincount(slots, weights=values, minlength=n)
        counts = np.bincount(slots, minlength=n)
        grid = np.full(n, np.nan)
        grid[counts > 0] = sums[counts > 0] / counts[counts > 0]
        missing = float(np.isnan(grid).mean())
        if missing > MAX_MISSING_SHARE:
            raise HistoryError(column_error(
                source, "ts", f"series '{series_id}' misses {missing:.0%} of its {step_s} s grid "
                f"(limit {MAX_MISSING_SHARE:.0%})"))
        observed = ~np.isnan(grid)
        idx = np.arange(n)
        filled = despike(np.interp(idx, idx[observed], grid[observed]))
        out.append(RegularSeries(str(series_id), int(ts_us[0] // 1_000_000), step_s, grid,
                                 filled))
    return out


def despike(y: np.ndarray) -> np.ndarray:
    """Replace isolated spikes by their local median (see `HAMPEL_K`)."""
    width = 2 * HAMPEL_HALF_WINDOW + 1
    if y.size < width:
        return y
    windows = np.lib.stride_tricks.sliding_window_view(np.pad(y, HAMPEL_HALF_WINDOW, "edge"),
                                                       width)
    local_median = np.median(windows, axis=1)
    residual = y - local_median
    # Scale from step-to-step changes: residuals from a running median are exactly zero along
    # monotone stretches of a daily cycle, so their MAD is often zero.
    changes = np.abs(np.diff(y))
    sigma = MAD_TO_SIGMA * float(np.median(changes)) or float(np.mean(changes))
    if sigma <= 0.0:
        return y
    return np.where(np.abs(residual) > HAMPEL_K * sigma, local_median, y)


def future_timestamps(series: RegularSeries, h: int) -> np.ndarray:
    """The `h` grid timestamps after the history, as datetime64[us]."""
    steps = np.arange(series.n, series.n + h, dtype=np.int64)
    return ((series.start_s + steps * series.step_s) * 1_000_000).astype("datetime64[us]")


def forecast_frame(series: Sequence[RegularSeries], columns: dict[str, list[np.ndarray]],
                   h: int, labels: dict[str, list[str]] | None = None) -> pl.DataFrame:
    """Assemble per-series forecast arrays into the long output frame (`series_id, ts, ...`)."""
    data: dict[str, object] = {
        "series_id": np.repeat([s.series_id for s in series], h),
        "ts": np.concatenate([future_timestamps(s, h) for s in series]) if series
        else np.array([], dtype="datetime64[us]"),
    }
    for name, arrays in columns.items():
        data[name] = np.concatenate(arrays) if arrays else np.array([], dtype=float)
    for name, values in (labels or {}).items():
        data[name] = np.repeat(values, h)
    return pl.DataFrame(data).with_columns(pl.col("ts").cast(pl.Datetime("us")))

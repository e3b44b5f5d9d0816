"""Streaming anomaly scores: how unusual each point is, judged from the points before it only.

Every point is looked at through three views, each a robust z-score against the past:

- **level**: the value against the median and inter-quartile spread of the previous `window`
  points (a spike or a dip);
- **shift**: the mean of the last `shift_points` points against the same statistics taken
  before them (a level shift, a trend bending away: sustained, where one point is not);
- **seasonal**: the value's change since the same time yesterday or the day before, whichever
  is smaller, against the spread of day-over-day changes (a day that does not look like
  yesterday), used only while the series' own past
  says it repeats daily (lag-one-day autocorrelation at least `seasonal_gate`, refreshed once a
  day): on a series without a daily cycle that view only adds false alarms.

A view's z-score becomes a *novelty ratio*: the z-score over the largest one the view produced in
the previous `memory` points, or over `least_record` when that is larger. Ratio 1 means "as
unusual as the most unusual point of the last month"; the score is ratio / (1 + ratio), so 0.5
is that point and a score at or above `THRESHOLD` (chosen once, below) is an anomaly. Dividing
by the series' own record is what makes one threshold fit series of any scale and noise (a CPU
percentage, a request count, a temperature): no per-series tuning. The floor is what keeps
plain noise quiet: in its first days a series breaks its own short record often (i.i.d. noise
sets a new maximum about once every t points), and a point within 5 robust spreads of what was
expected is not an incident however young the series is. A view speaks only after it has seen
`window` points. The point's score is the highest of its views, and its kind comes from the
view that gave it (`kind_of`).

Nothing here reads a later point: every rolling statistic is shifted by one, so the score of a
point is the same whether or not later points exist (tested), and the detector can run on live
data. The parameters are in points, not in hours, because they are sample sizes for robust
statistics; their defaults were set once and are the same for every series. The threshold
`THRESHOLD` is the one NAB's optimiser chose on its 34 public files for the standard profile
(`benchmarks/anomaly_bench.py`), the way NAB fixes one threshold per detector for a corpus;
the floor costs 2.5 points of NAB's standard score there and removes every false alarm from two
weeks of noise (`benchmarks/results/anomalies.md`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

KINDS = ("spike", "dip", "level_shift", "trend_change", "none")
THRESHOLD = 0.509  # 3.7 % beyond the record (NAB optimiser, 34 files, standard profile)
DAY_S = 86_400
SUSTAINED_Z = 3.0  # the median of a view's last points this far off: a new level, not a blip
_TINY = 1e-12


@dataclass(frozen=True)
class DetectorSettings:
    """Sample sizes of the views; the defaults are used for every series (see the module)."""

    window: int = 288  # points of past behind the level statistics (a day at 5 minutes)
    shift_points: int = 12  # points averaged by the shift view (an hour at 5 minutes)
    memory: int = 8_640  # points a view's record looks back (30 days at 5 minutes)
    seasonal_gate: float = 0.7  # daily autocorrelation above which the seasonal view is used
    min_samples: int = 12  # points before any robust statistic is computed
    least_record: float = 5.0  # |z| a view's record starts from: below it, never an anomaly


@dataclass(frozen=True)
class SeriesScores:
    """Per point: score in [0, 1], the view that gave it, and the sign of its deviation."""

    score: np.ndarray
    view: np.ndarray  # "level" | "shift" | "seasonal" | "" (no view has spoken yet)
    sign: np.ndarray  # +1 above what was expected, -1 below
    sustained: np.ndarray  # the view's median z over the last `shift_points` (all known) is off


def _past(values: np.ndarray, lag: int = 1) -> pl.Series:
    """`values` `lag` points later, NaN as null (polars' rolling statistics skip nulls, not NaN)."""
    return pl.Series(values, dtype=pl.Float64).fill_nan(None).shift(lag)


def _robust_z(
    observed: np.ndarray, reference: np.ndarray, settings: DetectorSettings, floor: np.ndarray,
    lag: int = 1, divide: float = 1.0, centred: bool = True,
) -> np.ndarray:
    """(observed - median) / spread, both over the `window` points of `reference` that end
    `lag` points before each one. The spread is the inter-quartile range scaled to a standard
    deviation, floored by the mean step of the past (a flat or two-valued series has IQR 0).
    Not `centred`, the centre is 0: for differences, where no change is what is expected
    (their median over the last day would make yesterday's step the expected change)."""
    past = _past(reference, lag)
    kwargs = {"window_size": settings.window, "min_samples": settings.min_samples}
    median = past.rolling_median(**kwargs).to_numpy() if centred else 0.0
    spread = (
        past.rolling_quantile(0.75, "linear", **kwargs).to_numpy()
        - past.rolling_quantile(0.25, "linear", **kwargs).to_numpy()
    ) / 1.349
    scale = np.fmax(spread, floor) / divide
    with np.errstate(invalid="ignore", divide="ignore"):
        return (observed - median) / np.fmax(scale, _TINY)


def _novelty(z: np.ndarray, settings: DetectorSettings) -> np.ndarray:
    """|z| over the largest |z| of the previous `memory` points; 0 until the view has seen
    `window` points (NaN = the view did not speak at that point)."""
    size = np.abs(z)
    seen = np.cumsum(~np.isnan(size))
    record = _past(size).rolling_max(settings.memory, min_samples=1).to_numpy()
    record = np.fmax(np.nan_to_num(record), max(settings.least_record, _TINY))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.nan_to_num(size) / record
    return np.where(seen > settings.window, ratio, 0.0)


def daily_period(ts: np.ndarray) -> int:
    """Points per day from the median step (0 when the step is a day or more)."""
    if ts.size < 2:
        return 0
    step = float(np.median(np.diff(ts).astype("timedelta64[us]").astype(np.int64))) / 1e6
    return int(round(DAY_S / step)) if 0 < step < DAY_S else 0


def _day_over_day(x: np.ndarray, period: int) -> tuple[np.ndarray, np.ndarray]:
    """Each point's change against the same time on each of the two days before, whichever is
    smaller (with its sign), and the plain day-over-day changes the spread is learned from. A
    point is unusual only when it is unlike both days: an incident yesterday does not return
    as a false alarm today (its echo), nor does a step taken yesterday."""

    def lagged(days: int) -> np.ndarray:
        out = np.full(x.size, np.nan)
        out[days * period :] = x[: -days * period]
        return out

    plain, older = x - lagged(1), x - lagged(2)
    closer = np.where(np.abs(older) < np.abs(plain), older, plain)
    observed = np.where(np.isnan(older), plain, closer)
    return observed, plain


def _repeats_daily(values: np.ndarray, period: int, gate: float) -> np.ndarray:
    """Whether the past (three days at least) says the series repeats daily: lag-one-day
    autocorrelation of everything before the day, refreshed at each day's first point."""
    out = np.zeros(values.size, dtype=bool)
    for end in range(3 * period, values.size, period):
        past = values[:end] - values[:end].mean()
        energy = float(past @ past)
        rho = float(past[period:] @ past[:-period]) / energy if energy > 0 else 0.0
        out[end : end + period] = rho >= gate
    return out


def score_series(
    ts: np.ndarray, values: np.ndarray, settings: DetectorSettings | None = None
) -> SeriesScores:
    """Scores of one series sorted by time (`ts` datetime64, `values` float; NaN = missing:
    scored 0, and left out of every statistic)."""
    settings = settings or DetectorSettings()
    n = values.size
    x = np.asarray(values, dtype=float)
    missing = np.isnan(x)
    # Missing readings stay missing: the rolling statistics skip them (a filled-in value would
    # be a flat line across a daily cycle, and the points after the gap would look sustained).
    step = np.abs(np.diff(x, prepend=x[:1]))
    known_steps = _past(~np.isnan(step)).cum_sum().to_numpy()
    floor = np.nan_to_num(_past(np.nan_to_num(step)).cum_sum().to_numpy() / known_steps) + _TINY

    level = _robust_z(x, x, settings, floor)
    k = settings.shift_points
    recent = _past(x, 0).rolling_mean(k, min_samples=1).to_numpy()
    shift = _robust_z(recent, x, settings, floor, lag=k, divide=math.sqrt(k))
    views = {"level": level, "shift": shift}
    period = daily_period(ts)
    if 2 <= period < n // 4:
        seasonal = _robust_z(*_day_over_day(x, period), settings, floor, centred=False)
        views["seasonal"] = np.where(
            _repeats_daily(np.nan_to_num(x, nan=float(np.nanmean(x))), period,
                           settings.seasonal_gate),
            seasonal,
            np.nan,
        )

    names = list(views)
    ratios = np.vstack([_novelty(views[name], settings) for name in names])
    best = ratios.argmax(axis=0)
    ratio = ratios[best, np.arange(n)]
    deviation = np.vstack([np.nan_to_num(views[name]) for name in names])[best, np.arange(n)]
    recent_median = np.vstack(
        [_past(views[name], 0).rolling_median(k, min_samples=k).to_numpy() for name in names]
    )[best, np.arange(n)]
    score = np.where(missing, 0.0, ratio / (1.0 + ratio))
    view = np.where(ratio > 0, np.asarray(names, dtype=object)[best], "")
    return SeriesScores(
        score=score,
        view=view,
        sign=np.where(deviation >= 0, 1, -1),
        sustained=np.abs(np.nan_to_num(recent_median)) > SUSTAINED_Z,
    )


def ramps(recent: np.ndarray) -> bool:
    """Whether the points up to an anomaly are better described by a bend (flat, then a slope:
    a leak, a growing backlog) than by a step (flat, then another level: a deploy, a
    failover): least squares of each, the break allowed anywhere with two points a side."""
    t = np.arange(recent.size, dtype=float)
    best = {"bend": np.inf, "step": np.inf}
    for split in range(2, recent.size - 1):
        after = t >= split
        for shape, change in (("bend", np.where(after, t - split + 1, 0.0)), ("step", after)):
            design = np.column_stack([np.ones_like(t), change.astype(float)])
            fitted = design @ np.linalg.lstsq(design, recent, rcond=None)[0]
            best[shape] = min(best[shape], float(((recent - fitted) ** 2).sum()))
    return best["bend"] < best["step"]


def kind_of(x: np.ndarray, scores: SeriesScores, is_anomaly: np.ndarray,
            points: int = 2 * DetectorSettings.shift_points) -> np.ndarray:  # fmt: skip
    """Per point: `none` unless it is an anomaly. A deviation that is sustained (the shift view
    gave it, or the median of its view over the last `shift_points` points is `SUSTAINED_Z`
    off too) is a `trend_change` when a line fits the last `points` points better than a step
    (`ramps`), else a `level_shift`; a momentary one is a `spike` above or a `dip` below.
    The first point of a step looks like a spike, and is called one: the kind is decided from
    the points up to it, like the score."""
    kinds = np.full(x.size, "none", dtype=object)
    for i in np.flatnonzero(is_anomaly):
        if scores.view[i] == "shift" or scores.sustained[i]:
            recent = x[max(0, i - points + 1) : i + 1]
            recent = recent[~np.isnan(recent)]
            kinds[i] = "trend_change" if recent.size >= 5 and ramps(recent) else "level_shift"
        else:
            kinds[i] = "spike" if scores.sign[i] > 0 else "dip"
    return kinds


def detect(history: pl.DataFrame, settings: DetectorSettings | None = None) -> pl.DataFrame:
    """`series_id, ts, value` (ts UTC) -> the same rows with `score`, `is_anomaly` (score >=
    `THRESHOLD`) and `kind`, sorted by series and time; rows with the same time keep their
    order and are scored as consecutive points."""
    parts = []
    for (series_id,), group in history.sort("series_id", "ts", maintain_order=True).group_by(
        "series_id", maintain_order=True
    ):
        values = group["value"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        scores = score_series(group["ts"].to_numpy(), values, settings)
        flagged = scores.score >= THRESHOLD
        parts.append(
            pl.DataFrame(
                {
                    "series_id": [series_id] * group.height,
                    "ts": group["ts"],
                    "score": scores.score,
                    "is_anomaly": flagged,
                    "kind": kind_of(values, scores, flagged).astype(str),
                }
            )
        )
    if not parts:
        return pl.DataFrame(schema=ANOMALY_SCHEMA)
    return pl.concat(parts).cast(ANOMALY_SCHEMA)  # type: ignore[arg-type]


ANOMALY_SCHEMA = {
    "series_id": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "score": pl.Float64,
    "is_anomaly": pl.Boolean,
    "kind": pl.Enum(KINDS),
}

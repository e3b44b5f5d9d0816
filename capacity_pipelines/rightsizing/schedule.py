"""Time-of-day CPU requests (opt-in, `capacity rightsize --schedule`).

Kubernetes resizes a running pod's CPU in place (the pod `resize` subresource, beta and on by
default since 1.33), so a request may follow the day: low at night, high at the daily peak.

- Shape: each hour's level is the container's own recommender (the candidate its backtest
  chose, or the fallback) on the samples of that UTC hour, with the same recent-level floor and
  forecast growth as the constant request; the request is the highest level of the hour and
  the hours either side (up before a peak, down after it). Each hour is sized at the same
  percentile as the constant request, so the schedule moves slack out of the quiet hours
  without spending more of the violation budget. (Pooling each hour's samples with its
  neighbours' and scaling the shape to the constant's violations of the last week was tried
  first: it cut more slack on Bitbrains but left more samples above the request than the
  constant did.)
- Evidence: the same schedule is replayed at backtest origins with a week of history before
  them (built from the samples before each origin, scored on the days after it) next to the
  constant request. It is used only when it left at most `MAX_VIOLATION_RATIO` times the
  constant's violations there (or `MAX_EXTRA_VIOLATIONS` more, at low rates) and less slack.
  Otherwise, and for HPA-scaled workloads (the HPA already follows the day) and histories too
  short to backtest, the 24 hours keep the constant request, and the rationale says why.

Output: the recommendation frame's columns plus `hour_utc` (0-23), 24 rows per container.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from capacity_pipelines.rightsizing.backtest import Choice, backtest_origins
from capacity_pipelines.rightsizing.candidates import MIN_POD_SAMPLES, SECONDS_PER_HOUR
from capacity_pipelines.rightsizing.forecasts import ForecastView
from capacity_pipelines.rightsizing.history import SECONDS_PER_DAY, ContainerHistory
from capacity_pipelines.rightsizing.quantities import round_cpu_up
from capacity_pipelines.rightsizing.signals import scales_horizontally
from capacity_pipelines.rightsizing.strategies import MIN_CPU_CORES, ForecastAwareStrategy

HOURS_PER_DAY = 24
# Each hour's request is the highest of its own level and its neighbours': up an hour before a
# peak, down an hour after it (pooling the neighbours' samples instead would under-cover the
# first busy hour with the quiet hour before it).
NEIGHBOUR_HOURS = 1
# An hour with fewer samples than this keeps the constant request's level.
MIN_HOUR_SAMPLES = 2 * MIN_POD_SAMPLES
# The history a schedule's backtest origin needs before it: an hour of the day is seen once a
# day, so a schedule needs a week to say anything about each hour.
SCHEDULE_MIN_TRAIN_DAYS = 7.0
# A schedule whose backtest left more than this many times the constant request's violations
# (or, at low rates where a ratio is noise, more than this many extra percentage points) is
# not used: it would spend more risk than the profile chose.
MAX_VIOLATION_RATIO = 1.1
MAX_EXTRA_VIOLATIONS = 0.005


@dataclass(frozen=True)
class HourlySchedule:
    """A container's 24 CPU requests by UTC hour (None: keep the constant) and why."""

    requests: list[float] | None
    reason: str


def hours_around(hour: int) -> set[int]:
    """The UTC hours whose levels bound `hour`'s request."""
    return {(hour + k) % HOURS_PER_DAY for k in range(-NEIGHBOUR_HOURS, NEIGHBOUR_HOURS + 1)}


def _filtered(history: ContainerHistory, keep: np.ndarray) -> ContainerHistory:
    """The history with only the samples where `keep` (replicas untouched)."""
    arrays = {
        name: getattr(history, name)[keep]
        for name in ("ts_s", "pod", "cpu_cores", "memory_bytes", "cpu_throttled_ratio",
                     "oom_killed", "memory_limit_bytes", "restarts")
        if getattr(history, name) is not None
    }  # fmt: skip
    return dataclasses.replace(history, **arrays)


def _hour_of_day(ts_s: np.ndarray) -> np.ndarray:
    return ((ts_s % SECONDS_PER_DAY) // SECONDS_PER_HOUR).astype(np.int64)


def hourly_levels(
    strategy: ForecastAwareStrategy,
    history: ContainerHistory,
    forecast: ForecastView | None,
    choice: Choice | None,
    confidence: float,
) -> tuple[np.ndarray, float]:
    """(24 hourly levels, the constant level), in cores, before throttling and rounding."""
    constant, _ = strategy.cpu_level(history, forecast, choice, confidence)
    hour = _hour_of_day(history.ts_s)
    own = np.full(HOURS_PER_DAY, constant)
    for h in range(HOURS_PER_DAY):
        part = _filtered(history, hour == h)
        if part.ts_s.size >= MIN_HOUR_SAMPLES:
            own[h], _ = strategy.cpu_level(part, forecast, choice, confidence)
    levels = np.array([max(own[k] for k in hours_around(h)) for h in range(HOURS_PER_DAY)])
    return levels, constant


def _backtest(
    strategy: ForecastAwareStrategy, history: ContainerHistory, choice: Choice | None,
    confidence: float,
) -> tuple[float, float, float, float] | None:  # fmt: skip
    """(schedule violation rate, constant's, schedule slack share, constant's) over the
    backtest origins, each built from the samples before its origin; None when too short."""
    windows = strategy.settings.windows
    end = float(history.ts_s.max()) + 1.0
    horizon, origins = backtest_origins(history.ts_s, end, windows, SCHEDULE_MIN_TRAIN_DAYS)
    if not origins:
        return None
    totals = np.zeros(6)  # violations, slack and requested: schedule, then constant
    samples = 0
    for origin in origins:
        before = _filtered(history, history.ts_s < origin)
        after = (history.ts_s >= origin) & (history.ts_s < origin + horizon * SECONDS_PER_DAY)
        use = history.cpu_cores[after]
        if use.size == 0:
            continue
        samples += use.size
        levels, constant = hourly_levels(strategy, before, None, choice, confidence)
        for offset, request in ((0, levels[_hour_of_day(history.ts_s[after])]), (3, constant)):
            request = np.broadcast_to(request, use.shape)
            totals[offset] += float(np.sum(use > request))
            totals[offset + 1] += float(np.maximum(request - use, 0.0).sum())
            totals[offset + 2] += float(request.sum())
    if samples == 0 or totals[2] <= 0 or totals[5] <= 0:
        return None
    return totals[0] / samples, totals[3] / samples, totals[1] / totals[2], totals[4] / totals[5]


def hourly_cpu_requests(
    strategy: ForecastAwareStrategy,
    history: ContainerHistory,
    forecast: ForecastView | None,
    choice: Choice | None,
    throttled_p90: float | None,
) -> HourlySchedule:
    """24 CPU requests (cores, rounded) by UTC hour when the container's own backtest supports
    a schedule; otherwise None (keep the constant request) with the reason."""
    if history.ts_s.size < 3 or history.history_days < strategy.settings.min_history_days:
        return HourlySchedule(None, "no schedule: too little history")
    if scales_horizontally(history.replica_series()[1]):
        return HourlySchedule(None, "no schedule: the HPA already follows the day")
    confidence, _ = strategy.confidence(history)
    tested = _backtest(strategy, history, choice, confidence)
    if tested is None:
        return HourlySchedule(None, "no schedule: history too short to backtest one")
    scheduled, constant, scheduled_idle, constant_idle = tested
    evidence = (
        f"backtest {scheduled:.1%} of samples above and {scheduled_idle:.0%} idle vs "
        f"{constant:.1%} and {constant_idle:.0%} for the constant request"
    )
    allowed = max(MAX_VIOLATION_RATIO * constant, constant + MAX_EXTRA_VIOLATIONS)
    if scheduled > allowed + 1e-12 or scheduled_idle >= constant_idle:
        return HourlySchedule(None, f"no schedule: {evidence}")
    levels, _ = hourly_levels(strategy, history, forecast, choice, confidence)
    requests = []
    for level in levels:
        level, _ = strategy.unthrottled(float(level), history, throttled_p90)
        requests.append(round_cpu_up(max(level, MIN_CPU_CORES)))
    return HourlySchedule(requests, f"schedule by UTC hour ({evidence})")

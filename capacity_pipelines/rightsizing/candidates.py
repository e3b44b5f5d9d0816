"""Candidate CPU recommenders, one small class each, among which each container's backtest
chooses (Google Autopilot, EuroSys 2020: several recommenders, the one with the lowest cost on
the job's own recent past wins).

Every candidate sizes each pod on its own samples and returns the busiest pod's level (KRR
`simple` takes the maximum over pods of each pod's percentile): the request applies to every
pod, so a quiet replica must not dilute a busy one. A candidate sees only samples before the
instant it recommends at, so the same code serves the backtest and the recommendation.

A new candidate is a new class with a `name`, a `describe()` and a `level(samples)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3_600
# A pod with fewer samples than this (a rollout's surge pod, a pod killed minutes after start)
# says little about a percentile; it still counts when no pod has more.
MIN_POD_SAMPLES = 12
# VPA recommender: CPU histogram half-life 24 h, target percentile 0.9, safety margin 15 %
# (CPUHistogramDecayHalfLife, targetCPUPercentile, --recommendation-margin-fraction).
VPA_HALF_LIFE_DAYS = 1.0
VPA_TARGET_QUANTILE = 0.9
VPA_SAFETY_MARGIN = 0.15


@dataclass(frozen=True)
class CpuSamples:
    """One container's CPU samples (all pods) and the instant a recommendation is made at.

    `pod` holds integer pod codes (0, 1, ...); `at_s` is the end of the history the candidate
    may read.
    `rank` is each sample's position in `by_value` (the whole history's cores, sorted), kept
    through every subset: a quantile of any subset is then a cumulative sum, not a new sort
    (the backtest takes hundreds of quantiles per container).
    """

    ts_s: np.ndarray
    pod: np.ndarray
    cores: np.ndarray
    at_s: float
    rank: np.ndarray | None = None
    by_value: np.ndarray | None = None

    @classmethod
    def of(cls, ts_s: np.ndarray, pod: np.ndarray, cores: np.ndarray, at_s: float) -> CpuSamples:
        """Samples with their ranks computed once."""
        order = np.argsort(cores, kind="stable")
        rank = np.empty(order.size, dtype=np.int64)
        rank[order] = np.arange(order.size)
        return cls(ts_s, pod, cores, at_s, rank, cores[order])

    def subset(self, keep: np.ndarray, at_s: float | None = None) -> CpuSamples:
        """The samples where `keep`, ranks kept."""
        return CpuSamples(
            self.ts_s[keep], self.pod[keep], self.cores[keep],
            self.at_s if at_s is None else at_s,
            None if self.rank is None else self.rank[keep], self.by_value,
        )  # fmt: skip

    def window(self, days: float, at_s: float | None = None) -> CpuSamples:
        """The samples of the `days` before `at_s` (default: this window's end)."""
        end = self.at_s if at_s is None else at_s
        return self.subset((self.ts_s < end) & (self.ts_s >= end - days * SECONDS_PER_DAY), end)

    def age_days(self) -> np.ndarray:
        """Age of each sample at `at_s`, in days."""
        return (self.at_s - self.ts_s) / SECONDS_PER_DAY

    def quantile(self, q: float, weights: np.ndarray | None = None) -> float:
        """The `q` quantile of these samples' cores (each counting `weights` times; default
        once): the smallest sample value with at least q of the weight at or below it."""
        if self.cores.size == 0:
            return float("nan")
        weights = np.ones(self.cores.size) if weights is None else weights
        if self.rank is None:
            return weighted_quantile(self.cores, weights, q)
        dense = np.zeros(self.by_value.size)
        dense[self.rank] = weights
        cumulative = np.cumsum(dense)
        position = np.searchsorted(cumulative, q * cumulative[-1])
        return float(self.by_value[min(position, self.by_value.size - 1)])


class CpuRecommender(Protocol):
    """What the backtest and the strategy need from a candidate."""

    name: str

    def describe(self) -> str:
        """What the candidate computes, for rationales and the docs."""
        ...

    def level(self, samples: CpuSamples) -> float:
        """CPU request (cores) from `samples`; NaN when there are none."""
        ...


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The `q` quantile of `values` where each value counts `weights` times."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    position = np.searchsorted(cumulative, q * cumulative[-1])
    return float(values[order][min(position, values.size - 1)])


def busiest_pod(samples: CpuSamples, statistic) -> float:
    """`statistic(pod_samples)` of every pod with enough samples, the largest (NaN if empty)."""
    if samples.cores.size == 0:
        return float("nan")
    sized = np.flatnonzero(np.bincount(samples.pod) >= MIN_POD_SAMPLES)  # pods are 0..n codes
    if sized.size <= 1:
        return statistic(samples)
    levels = []
    for code in sized:
        levels.append(statistic(samples.subset(samples.pod == code)))
    return float(max(levels))


@dataclass(frozen=True)
class PercentileRecommender:
    """A percentile of each pod's samples, weighted by recency (half-life), busiest pod."""

    quantile: float
    half_life_days: float

    @property
    def name(self) -> str:
        return f"p{self.quantile * 100:g}/{self.half_life_days:g}d"

    def describe(self) -> str:
        return (
            f"p{self.quantile * 100:g} of each pod's samples weighted with a "
            f"{self.half_life_days:g}-day half-life, busiest pod"
        )

    def level(self, samples: CpuSamples) -> float:
        def statistic(pod: CpuSamples) -> float:
            return pod.quantile(self.quantile, np.power(0.5, pod.age_days() / self.half_life_days))

        return busiest_pod(samples, statistic)


@dataclass(frozen=True)
class DecayedHistogramRecommender:
    """The VPA recommender's target: p90 of samples decaying with a 24 h half-life, + 15 %."""

    name: str = "vpa-p90"

    def describe(self) -> str:
        return (
            f"VPA-style p{VPA_TARGET_QUANTILE * 100:g} with a {VPA_HALF_LIFE_DAYS * 24:g} h "
            f"half-life + {VPA_SAFETY_MARGIN:.0%}, busiest pod"
        )

    def level(self, samples: CpuSamples) -> float:
        def statistic(pod: CpuSamples) -> float:
            weights = np.power(0.5, pod.age_days() / VPA_HALF_LIFE_DAYS)
            return pod.quantile(VPA_TARGET_QUANTILE, weights)

        return busiest_pod(samples, statistic) * (1.0 + VPA_SAFETY_MARGIN)


@dataclass(frozen=True)
class PeakRecommender:
    """The highest sample of the last `days`: no sample of that window above the request."""

    days: float = 7.0

    @property
    def name(self) -> str:
        return f"peak/{self.days:g}d"

    def describe(self) -> str:
        return f"peak of the last {self.days:g} days"

    def level(self, samples: CpuSamples) -> float:
        recent = samples.window(self.days)
        return float(recent.cores.max()) if recent.cores.size else float("nan")


@dataclass(frozen=True)
class TrendRecommender:
    """Forecast-aware: a recency-weighted percentile raised by the growth of its daily level.

    The daily level (the percentile of each day's samples) gets a Theil-Sen slope, robust to a
    few odd days; a rising slope is projected half a horizon ahead, the middle of the week the
    request will live. Declines are left to the forecasting engine, which must show evidence.
    """

    quantile: float = 0.95
    half_life_days: float = 3.0
    horizon_days: float = 7.0
    # a slope from fewer days than this is noise
    min_days: int = 4

    @property
    def name(self) -> str:
        return f"trend-p{self.quantile * 100:g}"

    def describe(self) -> str:
        return (
            f"p{self.quantile * 100:g} ({self.half_life_days:g}-day half-life) plus the "
            f"Theil-Sen growth of its daily level over half a {self.horizon_days:g}-day horizon"
        )

    def level(self, samples: CpuSamples) -> float:
        base = PercentileRecommender(self.quantile, self.half_life_days).level(samples)
        if samples.cores.size == 0:
            return base
        day = np.floor(samples.age_days()).astype(np.int64)
        days = np.flatnonzero(np.bincount(day))
        if days.size < self.min_days:
            return base
        daily = np.array([samples.subset(day == d).quantile(self.quantile) for d in days])
        x = -days.astype(float)  # older days have larger ages: time runs the other way
        i, j = np.triu_indices(x.size, k=1)
        slope = float(np.median((daily[j] - daily[i]) / (x[j] - x[i])))
        return base + max(0.0, slope) * self.horizon_days / 2.0


# The wide set of the issue (percentiles at two half-lives, the VPA's decayed histogram, a peak,
# a trend): measured in the benchmark, where choosing among them per container lost to one
# uniform percentile (a handful of backtest origins cannot tell them apart reliably).
WIDE_CANDIDATES = (
    *(f"p{q}/{h}d" for h in (1, 3) for q in (80, 90, 95, 98, 99)),
    "vpa-p90",
    "peak/7d",
    "trend-p95",
)
_PERCENTILE = re.compile(r"^p(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)d$")
_TREND = re.compile(r"^trend-p(\d+(?:\.\d+)?)$")
_PEAK = re.compile(r"^peak/(\d+(?:\.\d+)?)d$")


def profile_candidates(quantile: float) -> tuple[CpuRecommender, ...]:
    """The candidates a profile's containers choose among: the profile's percentile with a
    3-day half-life (the default), with a 1-day half-life (for containers whose recent past
    predicts best) and raised by its own trend (for growing containers)."""
    return (
        PercentileRecommender(quantile, 3.0),
        PercentileRecommender(quantile, 1.0),
        TrendRecommender(quantile),
    )


def candidate(name: str) -> CpuRecommender:
    """The candidate called `name`: `p95/3d` (percentile / half-life), `trend-p95`,
    `peak/7d` or `vpa-p90`."""
    if name == DecayedHistogramRecommender.name:
        return DecayedHistogramRecommender()
    if match := _PERCENTILE.match(name):
        return PercentileRecommender(float(match[1]) / 100, float(match[2]))
    if match := _TREND.match(name):
        return TrendRecommender(float(match[1]) / 100)
    if match := _PEAK.match(name):
        return PeakRecommender(float(match[1]))
    raise ValueError(
        f"unknown CPU recommender {name!r} (expected e.g. p95/3d, trend-p95, peak/7d, vpa-p90)"
    )

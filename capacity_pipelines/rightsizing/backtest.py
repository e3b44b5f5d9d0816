"""Backtests on each container's own past, and the per-container choice of CPU recommender.

The backtest replays what the recommender would have done: at each of the last few daily
origins it sizes the container from the samples before the origin only (the same window and
recent-level floor the recommendation uses), then scores that request on the following
`horizon` days: slack (cores requested and idle), violations (samples above the request) and
churn (how much the request moved from one origin to the next).

The choice spends a fleet-wide violation budget where it is cheap (Autopilot's weighted cost
of slack, overruns and changes, with one price for a violation across the fleet):
each container takes the candidate with the lowest `slack + price x violations + change_weight
x churn`, and the price is the lowest at which the pooled backtest violation rate meets the risk
profile's target. Slack is counted in cores, not as a share, because idle cores are what costs
money: a bursty 8-core service saves more by a lower percentile than a 50m sidecar.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from capacity_pipelines.rightsizing.candidates import (
    SECONDS_PER_DAY,
    CpuRecommender,
    CpuSamples,
)
from capacity_pipelines.rightsizing.profiles import RiskProfile

# Prices tried for a violation, in multiples of the fleet's mean use per sample (cores): from
# "a violation costs a thousandth of a mean sample" to "ten thousand".
PRICE_GRID = np.geomspace(1e-3, 1e4, 241)


@dataclass(frozen=True)
class BacktestWindows:
    """Where the backtest's origins fall (days); the recommender uses the same window."""

    window_days: float = 14.0  # history each sizing reads (KRR's history_duration: 336 h)
    horizon_days: float = 7.0  # how far ahead each origin is scored: the week a request lives
    origins: int = 7  # daily origins, the latest `horizon_days` before the end
    min_origins: int = 3  # fewer origins are not backtested at all (one week is one draw)
    min_train_days: float = 2.0  # an origin needs this much history before it: two daily cycles
    min_horizon_days: float = 1.0  # the horizon shrinks to this for short histories
    steady_days: float = 1.0  # the recent window whose level is the floor


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's backtest on one container (sums over all origins)."""

    name: str
    slack: float  # core-samples requested and not used
    requested: float  # core-samples requested
    violations: int  # samples above the request
    samples: int
    churn: float  # sum of |request change| between consecutive origins x test samples

    @property
    def violation_rate(self) -> float:
        """Share of test samples above the request."""
        return self.violations / self.samples if self.samples else 0.0

    @property
    def slack_share(self) -> float:
        """Share of the requested core-samples left idle."""
        return self.slack / self.requested if self.requested > 0 else 0.0


@dataclass(frozen=True)
class CpuBacktest:
    """All candidates' backtests on one container."""

    origins: int
    horizon_days: float
    scores: dict[str, CandidateScore]


@dataclass(frozen=True)
class Choice:
    """The candidate a container's backtest chose, and the price of a violation it faced."""

    candidate: str
    score: CandidateScore
    price: float  # cores of slack one violating sample is worth, fleet-wide
    backtest: CpuBacktest

    def describe(self) -> str:
        """Rationale fragment: the choice and its backtest next to the runner-up's."""
        s = self.score
        text = (
            f"recommender {self.candidate} chosen by backtest ({self.backtest.origins} daily "
            f"origins, {self.backtest.horizon_days:g} d ahead: {s.violation_rate:.1%} of samples "
            f"above, {s.slack_share:.0%} idle"
        )
        others = sorted(
            (c for c in self.backtest.scores.values() if c.name != self.candidate),
            key=lambda c: c.slack + self.price * c.violations,
        )
        if others:
            o = others[0]
            text += f"; next best {o.name}: {o.violation_rate:.1%} above, {o.slack_share:.0%} idle"
        return text + ")"


def floored_level(
    candidate: CpuRecommender, samples: CpuSamples, windows: BacktestWindows
) -> tuple[float, float]:
    """(request, recent level): the candidate on the sizing window, never below the same
    candidate on the last `steady_days` (the busiest pod's recent steady level)."""
    level = candidate.level(samples.window(windows.window_days))
    recent = candidate.level(samples.window(windows.steady_days))
    if np.isfinite(recent):
        level = max(level, recent) if np.isfinite(level) else recent
    return level, recent


def backtest_origins(
    ts_s: np.ndarray, end_s: float, windows: BacktestWindows, min_train_days: float
) -> tuple[float, list[float]]:
    """Test horizon (days) and the origins (epoch s), latest first; empty when the history
    cannot give `windows.min_origins` origins of at least `min_horizon_days` each.

    The horizon shrinks (never below `min_horizon_days`) so that a short history still gets
    `min_origins` origins: one origin is one draw of the future, too few to choose on.
    """
    if ts_s.size == 0:
        return 0.0, []
    history_days = (end_s - float(ts_s.min())) / SECONDS_PER_DAY
    spare = history_days - min_train_days - (windows.min_origins - 1)
    horizon = min(windows.horizon_days, spare)
    if horizon < windows.min_horizon_days - 1e-9:
        return 0.0, []
    origins = []
    for j in range(windows.origins):
        origin = end_s - (horizon + j) * SECONDS_PER_DAY
        if (origin - float(ts_s.min())) / SECONDS_PER_DAY < min_train_days - 1e-6:
            break
        origins.append(origin)
    if len(origins) < windows.min_origins:
        return 0.0, []
    return horizon, origins


def cpu_backtest(
    samples: CpuSamples, candidates: Sequence[CpuRecommender], windows: BacktestWindows
) -> CpuBacktest | None:
    """Every candidate replayed at each origin and scored on the horizon after it; None when
    the history is too short for one origin."""
    horizon, origins = backtest_origins(
        samples.ts_s, samples.at_s, windows, windows.min_train_days
    )
    if not origins:
        return None
    totals = {c.name: [0.0, 0.0, 0, 0, 0.0] for c in candidates}
    previous: dict[str, float] = {}
    for origin in sorted(origins):
        before = dataclasses.replace(samples, at_s=origin)  # windows end at the origin
        after = samples.cores[
            (samples.ts_s >= origin) & (samples.ts_s < origin + horizon * SECONDS_PER_DAY)
        ]
        if after.size == 0:
            continue
        for c in candidates:
            request, _ = floored_level(c, before, windows)
            if not np.isfinite(request):
                continue
            total = totals[c.name]
            total[0] += float(np.maximum(request - after, 0.0).sum())
            total[1] += request * after.size
            total[2] += int((after > request).sum())
            total[3] += after.size
            if c.name in previous:
                total[4] += abs(request - previous[c.name]) * after.size
            previous[c.name] = request
    scores = {
        name: CandidateScore(name, t[0], t[1], t[2], t[3], t[4])
        for name, t in totals.items()
        if t[3] > 0
    }
    if not scores:
        return None
    return CpuBacktest(len(origins), horizon, scores)


def memory_growth(
    ts_s: np.ndarray, memory_bytes: np.ndarray, end_s: float, windows: BacktestWindows,
    min_train_days: float,
) -> tuple[float, int] | None:  # fmt: skip
    """(worst growth, origins): at each origin with `min_train_days` before it, the peak of
    the following horizon over the peak of the sizing window before it, minus one; None when
    the history allows no origin. A peak that fell counts as 0 growth."""
    horizon, origins = backtest_origins(ts_s, end_s, windows, min_train_days)
    growth = []
    for origin in origins:
        before = memory_bytes[(ts_s < origin) & (ts_s >= origin - windows.window_days
                                                  * SECONDS_PER_DAY)]  # fmt: skip
        after = memory_bytes[(ts_s >= origin) & (ts_s < origin + horizon * SECONDS_PER_DAY)]
        if before.size and after.size and before.max() > 0:
            growth.append(max(0.0, float(after.max() / before.max()) - 1.0))
    if not growth:
        return None
    return max(growth), len(growth)


def choose_recommenders(
    backtests: Mapping[str, CpuBacktest],
    profile: RiskProfile,
    change_weight: float,
    default: str | None = None,
    challenger_margin: float = 0.0,
) -> dict[str, Choice]:
    """Per container, the candidate with the lowest backtest cost at one fleet-wide price of a
    violation: the lowest price whose pooled violation rate meets `profile`'s target.

    Candidates above the profile's per-container violation cap are not eligible (unless none
    is: then the one with the fewest violations). When even the highest price misses the
    target, the highest price is used (the fewest violations the candidates allow). The
    `default` candidate keeps a container unless another one's cost is lower by more than
    `challenger_margin` of it: a few backtest origins are noisy, and a candidate that won by a
    hair on them is as likely to lose on the next week.
    """
    ids = sorted(backtests)
    if not ids:
        return {}
    names = sorted({n for i in ids for n in backtests[i].scores})
    shape = (len(ids), len(names))
    slack, requested, violations, samples, churn = (np.zeros(shape) for _ in range(5))
    eligible = np.zeros(shape, dtype=bool)
    for row, container in enumerate(ids):
        for col, name in enumerate(names):
            score = backtests[container].scores.get(name)
            if score is None:
                continue
            slack[row, col], violations[row, col] = score.slack, score.violations
            requested[row, col] = score.requested
            samples[row, col], churn[row, col] = score.samples, score.churn
            eligible[row, col] = score.violation_rate <= profile.cpu_container_violation_cap
        present = samples[row] > 0
        if not (eligible[row] & present).any():
            rates = np.where(present, violations[row] / np.maximum(samples[row], 1), np.inf)
            eligible[row, int(np.argmin(rates))] = True
        eligible[row] &= present
    # the price's unit: the fleet's mean request per sample, so the grid fits any fleet's scale
    unit = max(requested.sum() / max(samples.sum(), 1.0), 1e-6)
    rows = np.arange(len(ids))
    incumbent = names.index(default) if default in names else None
    for price in PRICE_GRID * unit:
        cost = np.where(eligible, slack + price * violations + change_weight * churn, np.inf)
        picks = np.argmin(cost, axis=1)
        if incumbent is not None:
            held = eligible[:, incumbent] & (
                cost[rows, picks] >= (1.0 - challenger_margin) * cost[:, incumbent]
            )
            picks = np.where(held, incumbent, picks)
        pooled = violations[rows, picks].sum() / max(samples[rows, picks].sum(), 1.0)
        if pooled <= profile.cpu_violation_target:
            break
    return {
        container: Choice(
            names[picks[row]],
            backtests[container].scores[names[picks[row]]],
            float(price),
            backtests[container],
        )
        for row, container in enumerate(ids)
    }

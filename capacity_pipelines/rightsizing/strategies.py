"""The project's recommender: the risk profile's percentile read per container the way its own
backtest prefers, a forecast for the coming week, memory above every peak its own past showed.

`ForecastAwareStrategy` sets, per container (all pods, past and present):
- CPU request: the profile's percentile of each pod's samples, busiest pod (KRR takes the
  maximum over pods), read by the candidate (`candidates.py`: a 3-day or 1-day recency
  half-life, or raised by its own trend) that the container's backtest chose under the
  profile's fleet violation budget (`backtest.py`; the issue's wide set of percentiles, decayed
  histogram and peak can be chosen among too, `candidates.WIDE_CANDIDATES`). Never below the
  same candidate over the last day (the busiest pod's recent steady level). The forecasting
  engine's ratio of next week's mean to last week's mean (like with like) raises the request
  for growth and lowers it, down to that recent level at most, only for an evidenced decline.
  Throttled containers (usage censored by the limit) are raised; HPA-scaled workloads get the
  per-replica load at the HPA's target utilisation instead. Too short to backtest: the 3-day
  percentile plus a margin that widens as confidence falls.
- Memory request: the peak working set of the sizing window (or the forecast's coming-week
  peak, when higher) plus the worst growth the container's own backtest showed plus the
  profile's margin. After an OOM kill, above the limit it died at (the VPA's bump); never above
  a current limit the whole history stayed well below without an OOM kill (that limit is
  proven), and never cut with less than `min_memory_cut_days` of history.
- Limits from the namespace's / workload's `LimitsRule`; floors and rounding to Kubernetes
  quantities (rounding first, then the cap, so a cap is never exceeded by rounding).

KRR's `simple` strategy and the VPA recommender are re-implemented in
`benchmarks/rightsizing_baselines.py` for comparison, not offered here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from capacity_pipelines.rightsizing.backtest import (
    BacktestWindows,
    Choice,
    choose_recommenders,
    cpu_backtest,
    floored_level,
    memory_growth,
)
from capacity_pipelines.rightsizing.candidates import (
    CpuRecommender,
    CpuSamples,
    PercentileRecommender,
    TrendRecommender,
    candidate,
    profile_candidates,
)
from capacity_pipelines.rightsizing.forecasts import (
    ForecastSettings,
    ForecastView,
    forecast_views,
    why_no_forecast,
)
from capacity_pipelines.rightsizing.history import SECONDS_PER_DAY, ContainerHistory
from capacity_pipelines.rightsizing.policy import LimitsRule
from capacity_pipelines.rightsizing.profiles import DEFAULT_PROFILE, RiskProfile, risk_profile
from capacity_pipelines.rightsizing.quantities import MIB, round_cpu_up, round_memory_up
from capacity_pipelines.rightsizing.signals import (
    count_oom_kills,
    hpa_level,
    oom_limit,
    scales_horizontally,
)

# VPA recommender flags --pod-recommendation-min-cpu-millicores=25 and
# --pod-recommendation-min-memory-mb=250 (the VPA multiplies "MB" by 1024*1024).
MIN_CPU_CORES = 0.025
MIN_MEMORY_BYTES = 250 * MIB
# VPA recommender: after an OOM kill the memory sample is max(1.2 x memory at death,
# memory at death + 100 MB) (oomBumpUpRatio, oomMinBumpUp in model/container.go).
OOM_BUMP_RATIO = 1.2
OOM_MIN_BUMP_BYTES = 100 * MIB
# kubernetes-mixin's CPUThrottlingHigh alert fires above 25 % throttled CFS periods.
THROTTLING_ALERT_RATIO = 0.25
# A working set that stays below 90 % of its limit was not squeezed by it (near the limit the
# kernel reclaims page cache and the observed peak understates the demand).
PROVEN_LIMIT_SHARE = 0.9
# KRR's default history_duration is 336 h: two weeks of history earn full length confidence.
FULL_CONFIDENCE_DAYS = 14.0
# KRR and VPA both add 15 % to memory (KRR memory_buffer_percentage, VPA safety-margin-fraction):
# the margin when the history is too short to measure the container's own growth.
MEMORY_SAFETY_MARGIN = 0.15
# The recency half-life of the fallback percentile (no backtest possible): a three-week-old
# burst weighs 1/8 of today's.
FALLBACK_HALF_LIFE_DAYS = 3.0


@dataclass(frozen=True)
class ForecastAwareSettings:
    """Settings of `ForecastAwareStrategy`; defaults are what the benchmark measures."""

    # risk profile (profiles.py): conservative, balanced or aggressive, or a custom RiskProfile
    profile: str | RiskProfile = DEFAULT_PROFILE
    # names of the candidate CPU recommenders (candidates.py, e.g. "p95/3d", "vpa-p90");
    # None = the profile's (its percentile at two half-lives and with its trend). One name
    # gives a uniform recommender; `candidates.WIDE_CANDIDATES` the wide set.
    candidates: tuple[str, ...] | None = None
    windows: BacktestWindows = field(default_factory=BacktestWindows)
    # weight of churn (request moves between backtest origins) in the choice's cost: a change
    # costs a tenth of the same cores idle over a horizon (Autopilot also charges changes)
    change_weight: float = 0.1
    # another candidate replaces the profile's default percentile only when its backtest cost
    # is lower by more than this share (a handful of origins is a noisy judge)
    challenger_margin: float = 0.1
    # CPU margin at zero confidence, only when the history is too short to backtest
    cpu_low_confidence_margin: float = 0.30
    # below this much history: no recommendation, listed as insufficient data
    min_history_days: float = 1.0
    # below this much history memory is never cut (KRR users ask for a week): one day of a
    # StatefulSet says nothing about its weekly compaction peak
    min_memory_cut_days: float = 7.0
    # backtested memory growth counted at most this much (a step change is not a trend)
    max_memory_growth: float = 0.5
    # forecasts need two daily cycles plus a backtest origin
    min_forecast_days: float = 3.0
    forecast_horizon_days: float = 7.0
    # the forecast's upper quantile: its mean must stay below last week's for a decline
    forecast_quantile: str = "p80"
    # how far the forecast may move the CPU level (declines are trusted less than growth)
    min_forecast_ratio: float = 0.8
    max_forecast_ratio: float = 2.0
    # hourly series with fewer observed hours than this are not forecast (the engine refuses
    # series that miss more than half their grid; the margin keeps one gappy container from
    # failing the whole batch)
    min_forecast_hour_coverage: float = 0.6
    # the memory forecast may raise the level above the history's peak by at most this factor
    max_memory_forecast_ratio: float = 1.5
    # a throttled container's request grows by its p90 throttled share, at most this factor
    max_throttling_bump: float = 2.0
    # worker processes of the forecasting engine (it only spawns them for >= 24 series)
    forecast_workers: int = 2
    use_lightgbm: bool = False


@dataclass(frozen=True)
class Recommendation:
    """One container's recommendation (cores / bytes) with its reasons."""

    status: str  # "ok" or "insufficient_data"
    cpu_request: float | None
    cpu_limit: float | None
    memory_request: float | None
    memory_limit: float | None
    confidence: float
    rationale: str
    forecast_used: bool
    hpa: bool
    oom_kills: int
    throttled_p90: float | None
    recommender: str | None = None  # the CPU recommender used (chosen or fallback)


def cpu_samples(history: ContainerHistory) -> CpuSamples:
    """The history's CPU samples for the candidates (pods as integer codes), ending after the
    last sample."""
    pods = history.pod
    if pods.size and (pods == pods[0]).all():  # one pod (or none named): no sort of strings
        codes = np.zeros(pods.size, dtype=np.int64)
    else:
        _, codes = np.unique(pods.astype(str), return_inverse=True)
    end = float(history.ts_s.max()) + 1.0 if history.ts_s.size else 0.0
    return CpuSamples.of(history.ts_s, codes, history.cpu_cores, end)


class ForecastAwareStrategy:
    """The project's recommender (see the module docstring for the reasoning)."""

    name = "forecast_aware"

    def __init__(self, settings: ForecastAwareSettings | None = None) -> None:
        self.settings = settings or ForecastAwareSettings()
        profile = self.settings.profile
        self.profile = profile if isinstance(profile, RiskProfile) else risk_profile(profile)
        names = self.settings.candidates
        self.candidates: tuple[CpuRecommender, ...] = (
            profile_candidates(self.profile.cpu_quantile)
            if names is None
            else tuple(candidate(n) for n in names)
        )

    # -- forecasts and choices over the fleet ----------------------------------------------

    @property
    def forecast_settings(self) -> ForecastSettings:
        """How the forecasting engine is run for these settings."""
        s = self.settings
        return ForecastSettings(
            s.min_forecast_days, s.forecast_horizon_days, s.forecast_quantile,
            s.min_forecast_hour_coverage, s.forecast_workers, s.use_lightgbm,
        )  # fmt: skip

    def why_no_forecast(self, history: ContainerHistory) -> str | None:
        """The reason this container's history cannot be forecast, or None when it can."""
        return why_no_forecast(history, self.forecast_settings)

    def forecasts(self, histories: Sequence[ContainerHistory]) -> dict[str, ForecastView]:
        """The engine's view of each forecastable container's coming week (`forecasts.py`)."""
        return forecast_views(histories, self.forecast_settings)

    def choose(self, histories: Sequence[ContainerHistory]) -> dict[str, Choice]:
        """Backtest every candidate on each container's own past and choose per container
        under the profile's fleet violation budget. HPA-scaled containers and histories too
        short for one backtest origin are left out (they get the HPA rule or the fallback)."""
        backtests = {}
        for history in histories:
            if history.ts_s.size < 3 or history.history_days < self.settings.min_history_days:
                continue
            if scales_horizontally(history.replica_series()[1]):
                continue
            backtest = cpu_backtest(cpu_samples(history), self.candidates, self.settings.windows)
            if backtest is not None:
                backtests[history.container_id] = backtest
        default = self.cpu_recommender(None).name
        return choose_recommenders(
            backtests, self.profile, self.settings.change_weight, default,
            self.settings.challenger_margin,
        )  # fmt: skip

    # -- one container ---------------------------------------------------------------------

    def confidence(self, history: ContainerHistory) -> tuple[float, float]:
        """(confidence 0..1, volatility): grows with history length, shrinks with volatility
        (coefficient of variation of the daily CPU p95 and memory peaks) and gaps."""
        days = history.history_days
        length = min(1.0, days / FULL_CONFIDENCE_DAYS)
        day_index = (history.ts_s - history.ts_s.min()) // SECONDS_PER_DAY
        frame = pl.DataFrame(
            {"day": day_index, "cpu": history.cpu_cores, "memory": history.memory_bytes}
        )
        daily = frame.group_by("day").agg(
            pl.col("cpu").quantile(0.95).alias("cpu"), pl.col("memory").max().alias("memory")
        )
        volatility = 0.0
        if daily.height >= 2:
            for column in ("cpu", "memory"):
                values = daily[column].to_numpy()
                mean = float(values.mean())
                if mean > 0:
                    volatility = max(volatility, float(values.std() / mean))
        confidence = length * history.coverage / (1.0 + volatility)
        return round(min(1.0, max(0.0, confidence)), 3), volatility

    def cpu_recommender(self, choice: Choice | None) -> CpuRecommender:
        """The chosen candidate, or the profile's fallback percentile without a backtest."""
        if choice is not None:
            return next(c for c in self.candidates if c.name == choice.candidate)
        return PercentileRecommender(self.profile.cpu_quantile, FALLBACK_HALF_LIFE_DAYS)

    def cpu_level(
        self,
        history: ContainerHistory,
        forecast: ForecastView | None,
        choice: Choice | None,
        confidence: float,
    ) -> tuple[float, list[str]]:
        """CPU level (cores, before throttling and rounding) of a container that is not
        HPA-scaled, with its reasons."""
        s = self.settings
        recommender = self.cpu_recommender(choice)
        samples = cpu_samples(history)
        window_level = recommender.level(samples.window(s.windows.window_days))
        level, recent = floored_level(recommender, samples, s.windows)
        reasons = []
        if choice is not None:
            reasons.append(choice.describe())
        else:
            margin = s.cpu_low_confidence_margin * (1.0 - confidence)
            reasons.append(
                f"history too short to backtest: {recommender.describe()}, +{margin:.0%} at "
                f"confidence {confidence:.2f}"
            )
            window_level, recent, level = (
                v * (1.0 + margin) for v in (window_level, recent, level)
            )
        reasons.append(
            f"{recommender.name} over {s.windows.window_days:g} d {window_level * 1000:.0f}m"
        )
        if recent > window_level:
            reasons.append(
                f"raised to the busiest pod's last {s.windows.steady_days:g} d level "
                f"{recent * 1000:.0f}m"
            )
        if forecast is None:
            return level, reasons
        said = (
            f"forecast next {s.forecast_horizon_days:g} d: mean CPU x{forecast.cpu_ratio:.2f} "
            "of last week's"
        )
        if isinstance(recommender, TrendRecommender):
            reasons.append(said + ", not applied (the trend recommender projects growth itself)")
        elif forecast.cpu_ratio > 1.0:
            ratio = min(s.max_forecast_ratio, forecast.cpu_ratio)
            level *= ratio
            reasons.append(said + f", applied x{ratio:.2f}")
        elif forecast.cpu_decline_evidenced:
            # a decline lowers the window's level, never below the recent level: a decline
            # that is real shows in the last day, and then that floor is lower too
            ratio = max(s.min_forecast_ratio, forecast.cpu_ratio)
            level = max(window_level * ratio, recent)
            reasons.append(
                said + f", even its {s.forecast_quantile} below: x{ratio:.2f} down to at most "
                "the recent level"
            )
        else:
            reasons.append(said + ", no evidence of a decline: not applied")
        return level, reasons

    def memory_request(
        self, history: ContainerHistory, forecast: ForecastView | None, oom_kills: int
    ) -> tuple[float, list[str]]:
        """Memory request (bytes, rounded, capped, never cut on a short history) and reasons."""
        s = self.settings
        start = history.ts_s.max() - s.windows.window_days * SECONDS_PER_DAY
        in_window = history.ts_s >= start
        peak = float(np.max(history.memory_bytes[in_window]))
        level = peak
        reasons = [f"memory peak {peak / MIB:.0f}Mi over {s.windows.window_days:g} d"]
        if forecast is not None and forecast.memory_peak_bytes > peak:
            level = min(forecast.memory_peak_bytes, s.max_memory_forecast_ratio * peak)
            reasons.append(f"forecast peak {level / MIB:.0f}Mi")
        end = float(history.ts_s.max()) + 1.0
        growth = memory_growth(
            history.ts_s, history.memory_bytes, end, s.windows, s.min_memory_cut_days
        )
        if growth is not None:
            grew = min(growth[0], s.max_memory_growth)
            margin = grew + self.profile.memory_margin
            reasons.append(
                f"memory +{margin:.0%} (backtested growth {grew:.0%} over {growth[1]} origins "
                f"+ {self.profile.memory_margin:.0%})"
            )
        else:
            margin = max(MEMORY_SAFETY_MARGIN, self.profile.memory_margin)
            reasons.append(f"memory +{margin:.0%} (history too short to backtest its growth)")
        request = level * (1.0 + margin)
        current = history.current
        cap = None
        if (
            not oom_kills
            and current.memory_limit
            and level < PROVEN_LIMIT_SHARE * current.memory_limit < request
        ):
            # the container ran its whole history under this limit without an OOM kill and
            # never came close to it: the limit is proven, a margin above it buys nothing seen
            cap = current.memory_limit
        if oom_kills:
            died_at = oom_limit(history)
            bumped = max(died_at * OOM_BUMP_RATIO, died_at + OOM_MIN_BUMP_BYTES)
            request = max(request, bumped)
            reasons.append(f"{oom_kills} OOM kill(s) at {died_at / MIB:.0f}Mi: memory above it")
        # round first, then cap: a cap is a promise that rounding must not break
        request = round_memory_up(max(request, MIN_MEMORY_BYTES))
        if cap is not None and request > cap:
            request = cap
            reasons.append(
                f"memory capped at the current limit {cap / MIB:.0f}Mi "
                "(no OOM kill under it, peak below 90 %)"
            )
        days = history.history_days
        if (
            days < s.min_memory_cut_days
            and current.memory_request
            and request < current.memory_request
        ):
            request = current.memory_request
            reasons.append(
                f"memory not cut: {days:.1f} d of history (< {s.min_memory_cut_days:g} d "
                "needed to cut memory)"
            )
        return request, reasons

    def recommend(
        self,
        history: ContainerHistory,
        forecast: ForecastView | None,
        rule: LimitsRule,
        choice: Choice | None = None,
    ) -> Recommendation:
        """Requests and limits for one container, with a one-line rationale."""
        s = self.settings
        days = history.history_days
        oom_kills = count_oom_kills(history)
        throttled = history.cpu_throttled_ratio
        throttled_p90 = (
            float(np.nanquantile(throttled, 0.9))
            if throttled is not None and np.isfinite(throttled).any()
            else None
        )
        if days < s.min_history_days or history.ts_s.size < 3:
            current = history.current
            return Recommendation(
                "insufficient_data",
                current.cpu_request,
                current.cpu_limit,
                current.memory_request,
                current.memory_limit,
                0.0,
                f"insufficient data: {days * 24:.1f} h of history (< {s.min_history_days * 24:g}"
                " h needed); keep the current resources",
                False,
                False,
                oom_kills,
                throttled_p90,
            )
        confidence, volatility = self.confidence(history)
        reasons = [f"{days:.1f} d of history, volatility {volatility:.2f}", self.profile.describe()]
        if history.coverage < 0.9:
            reasons.append(f"{1 - history.coverage:.0%} of samples missing")

        replica_ts, replicas = history.replica_series()
        hpa = scales_horizontally(replicas)
        if hpa:
            cpu_level, hpa_reason = hpa_level(history, replica_ts, replicas, rule)
            cpu_margin = s.cpu_low_confidence_margin * (1.0 - confidence)
            cpu_request = cpu_level * (1.0 + cpu_margin)
            reasons += [hpa_reason, f"margin CPU {cpu_margin:.0%}"]
            recommender = "hpa"
        else:
            if forecast is None:
                why = self.why_no_forecast(history) or "the forecasting engine refused the series"
                reasons.append(f"no forecast ({why}): history only")
            cpu_request, cpu_reasons = self.cpu_level(history, forecast, choice, confidence)
            reasons += cpu_reasons
            recommender = self.cpu_recommender(choice).name

        cpu_request, throttling_reason = self.unthrottled(cpu_request, history, throttled_p90)
        if throttling_reason:
            reasons.append(throttling_reason)
        memory_request, memory_reasons = self.memory_request(history, forecast, oom_kills)
        reasons += memory_reasons
        cpu_request = round_cpu_up(max(cpu_request, MIN_CPU_CORES))
        cpu_limit, memory_limit = rule.limits(cpu_request, memory_request)
        if cpu_limit is not None:
            cpu_limit = round_cpu_up(cpu_limit)
        # a limit equal to the request keeps the request's (possibly capped) value
        memory_limit = (
            memory_request if memory_limit <= memory_request else round_memory_up(memory_limit)
        )
        reasons.append(rule.describe())
        current = history.current
        for name, new, old in (
            ("CPU", cpu_request, current.cpu_request),
            ("memory", memory_request, current.memory_request),
        ):
            if old and new > old:
                reasons.insert(0, f"sizes {name} up {new / old - 1:.0%}")
        return Recommendation(
            "ok",
            cpu_request,
            cpu_limit,
            memory_request,
            memory_limit,
            confidence,
            "; ".join(reasons),
            forecast is not None,
            hpa,
            oom_kills,
            throttled_p90,
            recommender,
        )

    def unthrottled(
        self, cpu_request: float, history: ContainerHistory, throttled_p90: float | None
    ) -> tuple[float, str | None]:
        """The request raised for a throttled container (its usage is censored by the limit),
        never below the current request then; the reason, or None when not throttled."""
        if throttled_p90 is None or throttled_p90 <= THROTTLING_ALERT_RATIO:
            return cpu_request, None
        bump = min(self.settings.max_throttling_bump, 1.0 + throttled_p90)
        cpu_request *= bump
        if history.current.cpu_request:
            cpu_request = max(cpu_request, history.current.cpu_request)
        return cpu_request, f"throttled p90 {throttled_p90:.0%}: usage censored, CPU x{bump:.2f}"



def epoch_seconds(ts: pl.Series) -> np.ndarray:
    """UTC-naive or aware timestamps -> float epoch seconds."""
    if isinstance(ts.dtype, pl.Datetime) and ts.dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return ts.dt.cast_time_unit("us").cast(pl.Int64).to_numpy() / 1e6

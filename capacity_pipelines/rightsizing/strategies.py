"""Recommendation strategies: small classes with declared, documented settings.

`ForecastAwareStrategy` is the project's recommender. Per container (all pods, past and
present) it sets:
- CPU request: a recency-weighted high quantile of per-pod usage (what the next weeks look
  like if they resemble the recent past), scaled by the forecasting engine's view of the coming
  week (ratio of the forecast's upper quantile to the recent history, same quantile on both
  sides), plus a margin that widens as confidence falls; raised when the container was
  throttled (its observed usage is censored by the limit); for HPA-scaled workloads, the
  per-replica load divided by the HPA's target utilisation instead.
- Memory request: the peak working set over the whole history or the forecast's upper quantile
  of the coming week's hourly peaks, whichever is higher, plus a margin; above the limit the
  container was OOM-killed at, bumped like the VPA does; never above a current limit that the
  whole history stayed well below without an OOM kill (that limit is proven).
- Limits from the namespace's / workload's `LimitsRule`; floors and rounding to Kubernetes
  quantities.

A new strategy is a new class with its own settings and the same `forecasts` / `recommend`
methods. KRR's `simple` strategy and the VPA recommender are re-implemented in
`benchmarks/rightsizing_bench.py` for comparison, not offered here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from capacity_pipelines.common.formatting import safe_text
from capacity_pipelines.forecasting import CapacityForecaster, EngineSettings, HistoryError
from capacity_pipelines.rightsizing.history import SECONDS_PER_DAY, ContainerHistory
from capacity_pipelines.rightsizing.policy import LimitsRule
from capacity_pipelines.rightsizing.quantities import MIB, round_cpu_up, round_memory_up

logger = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3_600
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
# A rollout's surge pods last minutes; a replica count away from its usual value for at least
# a tenth of the history is an autoscaler, not a rollout.
HPA_MIN_SHARE_OFF_MODE = 0.1
# A working set that stays below 90 % of its limit was not squeezed by it (near the limit the
# kernel reclaims page cache and the observed peak understates the demand).
PROVEN_LIMIT_SHARE = 0.9
# KRR's default history_duration is 336 h: two weeks of history earn full length confidence.
FULL_CONFIDENCE_DAYS = 14.0
# KRR and VPA both add 15 % to memory (KRR memory_buffer_percentage, VPA safety-margin-fraction).
MEMORY_SAFETY_MARGIN = 0.15


@dataclass(frozen=True)
class ForecastAwareSettings:
    """Settings of `ForecastAwareStrategy`; defaults are what the benchmark measures."""

    # quantile of recency-weighted per-pod CPU samples the request covers
    cpu_quantile: float = 0.95
    # half-life of the sample weights: a burst from three weeks ago weighs 1/8 of today's, so a
    # one-off incident fades within the KRR-length window instead of pinning the request for
    # all of it (the VPA uses 24 h, which forgets the weekly cycle; 3 d keeps it)
    half_life_days: float = 3.0
    # CPU margin added at zero confidence (scaled by 1 - confidence)
    cpu_low_confidence_margin: float = 0.30
    # memory margin on top of MEMORY_SAFETY_MARGIN at zero confidence
    memory_low_confidence_margin: float = 0.15
    # below this much history: no recommendation, listed as insufficient data
    min_history_days: float = 1.0
    # forecasts need two daily cycles plus a backtest origin
    min_forecast_days: float = 3.0
    forecast_horizon_days: float = 7.0
    # the forecast quantile compared with the history (an upper quantile: the coming week's risk)
    forecast_quantile: str = "p80"
    # how far the forecast may move the CPU level (declines are trusted less than growth)
    min_forecast_ratio: float = 0.9
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
class ForecastView:
    """What the forecast says about one container's coming week."""

    cpu_ratio: float  # forecast upper quantile / same quantile of the last week's hourly CPU
    memory_peak_bytes: float  # highest forecast upper quantile of the hourly memory peak
    method: str


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


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The `q` quantile of `values` where each value counts `weights` times."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    position = np.searchsorted(cumulative, q * cumulative[-1])
    return float(values[order][min(position, values.size - 1)])


def oom_kill_mask(history: ContainerHistory) -> np.ndarray:
    """Samples at which an OOM kill happened.

    kube-state-metrics keeps "last terminated: OOMKilled" set until the next termination, so a
    flag alone is a state, not an event: with restart counts, a kill is a step with restarts
    and the flag (the warehouse's definition); without them, the first sample of each run of
    flags in a pod.
    """
    if history.oom_killed is None:
        return np.zeros(history.ts_s.size, dtype=bool)
    flagged = history.oom_killed > 0
    if history.restarts is not None and np.isfinite(history.restarts).any():
        return flagged & (np.nan_to_num(history.restarts) > 0)
    starts = np.zeros_like(flagged)
    for pod in np.unique(history.pod):
        index = np.flatnonzero(history.pod == pod)
        run = flagged[index]
        starts[index] = run & ~np.concatenate([[False], run[:-1]])
    return starts


def count_oom_kills(history: ContainerHistory) -> int:
    """Number of OOM kills in the history (see `oom_kill_mask`)."""
    return int(oom_kill_mask(history).sum())


def scales_horizontally(replicas: np.ndarray) -> bool:
    """True when the replica count moves (an HPA at work), not just during rollouts.

    A rolling update briefly runs surge pods next to the old ones; only a count that differs
    from its most common value for `HPA_MIN_SHARE_OFF_MODE` of the time counts as scaling.
    """
    counts = np.round(replicas[np.isfinite(replicas)])
    if counts.size == 0 or counts.max() - counts.min() < 1:
        return False
    values, frequency = np.unique(counts, return_counts=True)
    return bool(1.0 - frequency.max() / counts.size >= HPA_MIN_SHARE_OFF_MODE)


def hourly(ts_s: np.ndarray, values: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Values binned to whole UTC hours (`mean` or `max`); returns (hour starts, values)."""
    frame = pl.DataFrame({"hour": (ts_s // SECONDS_PER_HOUR) * SECONDS_PER_HOUR, "v": values})
    agg = pl.col("v").mean() if how == "mean" else pl.col("v").max()
    out = frame.group_by("hour").agg(agg).sort("hour")
    return out["hour"].to_numpy(), out["v"].to_numpy()


class ForecastAwareStrategy:
    """The project's recommender (see the module docstring for the reasoning)."""

    name = "forecast_aware"

    def __init__(self, settings: ForecastAwareSettings | None = None) -> None:
        self.settings = settings or ForecastAwareSettings()

    # -- forecasts -------------------------------------------------------------------------

    def why_no_forecast(self, history: ContainerHistory) -> str | None:
        """The reason this container's history cannot be forecast, or None when it can."""
        if history.history_days < self.settings.min_forecast_days:
            return f"history < {self.settings.min_forecast_days:g} d"
        hours = np.unique(history.ts_s // SECONDS_PER_HOUR)
        span = hours.max() - hours.min() + 1
        if hours.size / span < self.settings.min_forecast_hour_coverage:
            return f"only {hours.size / span:.0%} of hours observed"
        return None

    def _forecast_frame(self, histories: Sequence[ContainerHistory]) -> pl.DataFrame:
        """Hourly per-replica CPU (mean) and memory (max) series of the forecastable containers."""
        frames = []
        for history in histories:
            if self.why_no_forecast(history) is not None:
                continue
            for kind, values, how in (
                ("cpu", history.cpu_cores, "mean"),
                ("memory", history.memory_bytes, "max"),
            ):
                hours, series = hourly(history.ts_s, values, how)
                frames.append(
                    pl.DataFrame(
                        {
                            "series_id": f"{history.container_id}\x1f{kind}",
                            "ts": (hours * 1_000_000).astype("datetime64[us]"),
                            "value": series,
                        }
                    )
                )
        if not frames:
            return pl.DataFrame(
                schema={"series_id": pl.String, "ts": pl.Datetime("us"), "value": pl.Float64}
            )
        return pl.concat(frames)

    def forecasts(self, histories: Sequence[ContainerHistory]) -> dict[str, ForecastView]:
        """Run the forecasting engine once over every container with enough history.

        Returns the per-container view; containers missing from it get history-only advice
        (and their rationale says so). When the engine refuses the batch, each container is
        retried alone, so one odd series costs only its own forecast.
        """
        try:
            return self._forecast_batch(histories)
        except HistoryError as error:
            logger.warning(
                "rightsizing batch forecast refused (%s); retrying per container", safe_text(error)
            )
        out: dict[str, ForecastView] = {}
        for history in histories:
            try:
                out.update(self._forecast_batch([history]))
            except HistoryError as error:
                # ids and messages carry labels: escaped before they reach a terminal
                logger.warning(
                    "no forecast for %s: %s", safe_text(history.container_id), safe_text(error)
                )
        return out

    def _forecast_batch(self, histories: Sequence[ContainerHistory]) -> dict[str, ForecastView]:
        frame = self._forecast_frame(histories)
        if frame.height == 0:
            return {}
        horizon = max(1, round(self.settings.forecast_horizon_days * 24))
        engine = CapacityForecaster(
            EngineSettings(
                workers=self.settings.forecast_workers, use_lightgbm=self.settings.use_lightgbm
            )
        )
        forecast = engine.fit(frame).predict(horizon)
        column = self.settings.forecast_quantile
        q = self.settings.cpu_quantile
        out: dict[str, ForecastView] = {}
        for history in histories:
            cpu = forecast.filter(pl.col("series_id") == f"{history.container_id}\x1fcpu")
            memory = forecast.filter(pl.col("series_id") == f"{history.container_id}\x1fmemory")
            if cpu.height == 0 or memory.height == 0:
                continue
            hours, recent = hourly(history.ts_s, history.cpu_cores, "mean")
            last_week = recent[hours >= hours.max() - 7 * SECONDS_PER_DAY]
            base = float(np.quantile(last_week, q))
            ahead = float(np.quantile(cpu[column].to_numpy(), q))
            ratio = ahead / base if base > 0 else 1.0
            out[history.container_id] = ForecastView(
                cpu_ratio=ratio,
                memory_peak_bytes=float(memory[column].max()),
                method=str(cpu["model"][0]),
            )
        return out

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

    def recommend(
        self, history: ContainerHistory, forecast: ForecastView | None, rule: LimitsRule
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
        reasons = [f"{days:.1f} d of history, volatility {volatility:.2f}"]
        if history.coverage < 0.9:
            reasons.append(f"{1 - history.coverage:.0%} of samples missing")

        age_days = (history.ts_s.max() - history.ts_s) / SECONDS_PER_DAY
        weights = np.power(0.5, age_days / s.half_life_days)
        cpu_margin = s.cpu_low_confidence_margin * (1.0 - confidence)

        replica_ts, replicas = history.replica_series()
        hpa = scales_horizontally(replicas)
        if hpa:
            cpu_level, hpa_reason = self._hpa_level(history, replica_ts, replicas, rule)
            reasons.append(hpa_reason)
        else:
            cpu_level = weighted_quantile(history.cpu_cores, weights, s.cpu_quantile)
            reasons.append(
                f"recency-weighted CPU p{s.cpu_quantile * 100:g} {cpu_level * 1000:.0f}m"
            )

        memory_peak = float(np.max(history.memory_bytes))
        memory_level = memory_peak
        if forecast is not None:
            ratio = min(s.max_forecast_ratio, max(s.min_forecast_ratio, forecast.cpu_ratio))
            cpu_level *= ratio
            memory_level = max(
                memory_peak,
                min(forecast.memory_peak_bytes, s.max_memory_forecast_ratio * memory_peak),
            )
            reasons.append(
                f"forecast {s.forecast_quantile} next {s.forecast_horizon_days:g} d:"
                f" CPU x{ratio:.2f}, memory peak {memory_level / MIB:.0f}Mi"
            )
        else:
            why = self.why_no_forecast(history) or "the forecasting engine refused the series"
            reasons.append(f"no forecast ({why}): history quantiles only")

        cpu_request = cpu_level * (1.0 + cpu_margin)
        if throttled_p90 is not None and throttled_p90 > THROTTLING_ALERT_RATIO:
            bump = min(s.max_throttling_bump, 1.0 + throttled_p90)
            cpu_request *= bump
            if history.current.cpu_request:
                cpu_request = max(cpu_request, history.current.cpu_request)
            reasons.append(f"throttled p90 {throttled_p90:.0%}: usage censored, CPU x{bump:.2f}")

        memory_margin = MEMORY_SAFETY_MARGIN + s.memory_low_confidence_margin * (1.0 - confidence)
        memory_request = memory_level * (1.0 + memory_margin)
        current_limit = history.current.memory_limit
        if (
            not oom_kills
            and current_limit
            and memory_level < PROVEN_LIMIT_SHARE * current_limit < memory_request
        ):
            # the container ran its whole history under this limit without an OOM kill and
            # never came close to it: the limit is proven, a margin above it buys nothing seen
            memory_request = current_limit
            reasons.append(
                f"memory capped at the current limit {current_limit / MIB:.0f}Mi "
                "(no OOM kill under it, peak below 90 %)"
            )
        if oom_kills:
            died_at = self._oom_limit(history)
            bumped = max(died_at * OOM_BUMP_RATIO, died_at + OOM_MIN_BUMP_BYTES)
            memory_request = max(memory_request, bumped)
            reasons.append(f"{oom_kills} OOM kill(s) at {died_at / MIB:.0f}Mi: memory above it")

        cpu_request = round_cpu_up(max(cpu_request, MIN_CPU_CORES))
        memory_request = round_memory_up(max(memory_request, MIN_MEMORY_BYTES))
        cpu_limit, memory_limit = rule.limits(cpu_request, memory_request)
        if cpu_limit is not None:
            cpu_limit = round_cpu_up(cpu_limit)
        memory_limit = round_memory_up(memory_limit)
        reasons.append(f"margin CPU {cpu_margin:.0%} memory {memory_margin:.0%}; {rule.describe()}")
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
        )

    @staticmethod
    def _hpa_level(
        history: ContainerHistory, replica_ts: np.ndarray, replicas: np.ndarray, rule: LimitsRule
    ) -> tuple[float, str]:
        """Per-replica load at the HPA's target utilisation.

        The HPA scales on usage / request: sizing the request for the peak per-pod usage would
        stop it from ever scaling out, and sizing for the total would waste every replica. The
        per-replica load while the HPA was scaled out (replicas above their minimum), divided by
        the target utilisation, keeps its behaviour and the pod's size consistent.
        """
        frame = pl.DataFrame({"ts": history.ts_s, "cpu": history.cpu_cores})
        total = frame.group_by("ts").agg(pl.col("cpu").sum()).sort("ts")
        at = np.clip(np.searchsorted(replica_ts, total["ts"].to_numpy(), side="right") - 1, 0, None)
        count = np.maximum(replicas[at], 1.0)
        per_replica = total["cpu"].to_numpy() / count
        scaled = count > np.nanmin(replicas)
        load = float(np.mean(per_replica[scaled] if scaled.any() else per_replica))
        target = rule.hpa_target_utilization
        reason = (
            f"HPA scaling {np.nanmin(replicas):g}-{np.nanmax(replicas):g} replicas: per-replica "
            f"load {load * 1000:.0f}m at {target:.0%} target utilisation"
        )
        return load / target, reason

    @staticmethod
    def _oom_limit(history: ContainerHistory) -> float:
        """The memory limit the container died at (or its working set then, when unknown)."""
        killed = oom_kill_mask(history)
        if history.memory_limit_bytes is not None:
            limits = history.memory_limit_bytes[killed]
            limits = limits[np.isfinite(limits)]
            if limits.size:
                return float(limits.max())
        if history.current.memory_limit:
            return float(history.current.memory_limit)
        return float(np.max(history.memory_bytes[killed]))


def epoch_seconds(ts: pl.Series) -> np.ndarray:
    """UTC-naive or aware timestamps -> float epoch seconds."""
    if isinstance(ts.dtype, pl.Datetime) and ts.dtype.time_zone is not None:
        ts = ts.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return ts.dt.cast_time_unit("us").cast(pl.Int64).to_numpy() / 1e6

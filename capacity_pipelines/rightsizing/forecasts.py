"""What the forecasting engine says about each container's coming week.

One engine run over every forecastable container: hourly per-pod CPU (the mean of the hour's
samples) and memory (the hour's peak). The CPU view compares like with like: the forecast's
mean over the horizon against the mean of the last week of the same hourly series, so a
stationary series gives a ratio of about 1, whatever its noise (the old ratio of a p80 forecast
to last week's p95 sat on its 0.9 floor for any stationary series). A decline only counts when
even the forecast's upper quantile, averaged the same way, stays below the last week's mean.
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

logger = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3_600
SEPARATOR = "\x1f"  # between container id and series kind: no label can hold it unescaped


@dataclass(frozen=True)
class ForecastView:
    """What the forecast says about one container's coming week."""

    # mean of the forecast's point over the horizon / mean of the last week (hourly means)
    cpu_ratio: float
    # the forecast's upper quantile, averaged the same way, is below the last week's mean
    cpu_decline_evidenced: bool
    # highest point forecast of the hourly memory peak: the expected trend; the uncertainty
    # around it is the container's own backtested growth (intervals pooled over many series
    # are too wide for a flat working set and too narrow for a leaking one)
    memory_peak_bytes: float
    method: str


@dataclass(frozen=True)
class ForecastSettings:
    """How the engine is run for rightsizing (from `ForecastAwareSettings`)."""

    min_days: float
    horizon_days: float
    upper_quantile: str  # e.g. "p80": the column whose mean must stay below for a decline
    min_hour_coverage: float
    workers: int
    use_lightgbm: bool


def hourly(ts_s: np.ndarray, values: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Values binned to whole UTC hours (`mean` or `max`); returns (hour starts, values)."""
    frame = pl.DataFrame({"hour": (ts_s // SECONDS_PER_HOUR) * SECONDS_PER_HOUR, "v": values})
    agg = pl.col("v").mean() if how == "mean" else pl.col("v").max()
    out = frame.group_by("hour").agg(agg).sort("hour")
    return out["hour"].to_numpy(), out["v"].to_numpy()


def why_no_forecast(history: ContainerHistory, settings: ForecastSettings) -> str | None:
    """The reason this container's history cannot be forecast, or None when it can."""
    if history.history_days < settings.min_days:
        return f"history < {settings.min_days:g} d"
    hours = np.unique(history.ts_s // SECONDS_PER_HOUR)
    span = hours.max() - hours.min() + 1
    if hours.size / span < settings.min_hour_coverage:
        return f"only {hours.size / span:.0%} of hours observed"
    return None


def _series_frame(
    histories: Sequence[ContainerHistory], settings: ForecastSettings
) -> pl.DataFrame:
    """Hourly CPU (mean) and memory (max) series of the forecastable containers."""
    frames = []
    for history in histories:
        if why_no_forecast(history, settings) is not None:
            continue
        for kind, values, how in (
            ("cpu", history.cpu_cores, "mean"),
            ("memory", history.memory_bytes, "max"),
        ):
            hours, series = hourly(history.ts_s, values, how)
            frames.append(
                pl.DataFrame(
                    {
                        "series_id": f"{history.container_id}{SEPARATOR}{kind}",
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


def _batch(
    histories: Sequence[ContainerHistory], settings: ForecastSettings
) -> dict[str, ForecastView]:
    frame = _series_frame(histories, settings)
    if frame.height == 0:
        return {}
    horizon = max(1, round(settings.horizon_days * 24))
    engine = CapacityForecaster(
        EngineSettings(workers=settings.workers, use_lightgbm=settings.use_lightgbm)
    )
    forecast = engine.fit(frame).predict(horizon)
    column = settings.upper_quantile
    out: dict[str, ForecastView] = {}
    for history in histories:
        cpu = forecast.filter(pl.col("series_id") == f"{history.container_id}{SEPARATOR}cpu")
        memory = forecast.filter(
            pl.col("series_id") == f"{history.container_id}{SEPARATOR}memory"
        )
        if cpu.height == 0 or memory.height == 0:
            continue
        hours, recent = hourly(history.ts_s, history.cpu_cores, "mean")
        last_week = float(np.mean(recent[hours >= hours.max() - 7 * SECONDS_PER_DAY]))
        ahead = float(cpu["point"].mean())
        upper = float(cpu[column].mean())
        out[history.container_id] = ForecastView(
            cpu_ratio=ahead / last_week if last_week > 0 else 1.0,
            cpu_decline_evidenced=last_week > 0 and upper < last_week,
            memory_peak_bytes=float(memory["point"].max()),
            method=str(cpu["model"][0]),
        )
    return out


def forecast_views(
    histories: Sequence[ContainerHistory], settings: ForecastSettings
) -> dict[str, ForecastView]:
    """Run the engine once over every container with enough history.

    Containers missing from the result get history-only advice (their rationale says why).
    When the engine refuses the batch, each container is retried alone, so one odd series
    costs only its own forecast.
    """
    try:
        return _batch(histories, settings)
    except HistoryError as error:
        logger.warning(
            "rightsizing batch forecast refused (%s); retrying per container", safe_text(error)
        )
    out: dict[str, ForecastView] = {}
    for history in histories:
        try:
            out.update(_batch([history], settings))
        except HistoryError as error:
            # ids and messages carry labels: escaped before they reach a terminal
            logger.warning(
                "no forecast for %s: %s", safe_text(history.container_id), safe_text(error)
            )
    return out

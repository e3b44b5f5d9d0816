"""Load forecasting for capacity planning: pure Python, no Dagster import.

Long-format frames (`series_id, ts, value`) in, forecasts with calibrated upper quantiles out;
`CapacityForecaster` is the engine, `capacity` holds the peak / saturation / runway outputs.
"""

from capacity_pipelines.forecasting.engine import (
    DEFAULT_QUANTILES,
    CapacityForecaster,
    EngineSettings,
)
from capacity_pipelines.forecasting.frames import HistoryError

__all__ = ["DEFAULT_QUANTILES", "CapacityForecaster", "EngineSettings", "HistoryError"]

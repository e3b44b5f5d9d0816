"""Container rightsizing: forecast-aware CPU and memory requests with $ impact and patches.

Pure Python, no Dagster import. `recommend_usage` serves the `capacity rightsize` file contract,
`recommend_from_warehouse` serves the `container_rightsizing` asset (frames shaped like the
warehouse's `container_usage` and `workload_replicas`); both return one row per container,
ranked, including the containers without enough data. `rightsize_usage` also returns the opt-in
hour-of-day schedule; risk profiles (`PROFILES`) set the trade-off between slack and risk.
"""

from capacity_pipelines.rightsizing.checks import risky_cuts
from capacity_pipelines.rightsizing.policy import LimitsPolicy, PolicyError, load_policy
from capacity_pipelines.rightsizing.prices import ComputePriceBook, load_compute_prices
from capacity_pipelines.rightsizing.profiles import PROFILES, RiskProfile, risk_profile
from capacity_pipelines.rightsizing.recommend import (
    InputError,
    recommend_from_warehouse,
    recommend_usage,
    rightsize_usage,
)
from capacity_pipelines.rightsizing.strategies import ForecastAwareSettings, ForecastAwareStrategy

__all__ = [
    "ComputePriceBook",
    "ForecastAwareSettings",
    "ForecastAwareStrategy",
    "InputError",
    "LimitsPolicy",
    "PROFILES",
    "PolicyError",
    "RiskProfile",
    "load_compute_prices",
    "load_policy",
    "recommend_from_warehouse",
    "recommend_usage",
    "rightsize_usage",
    "risk_profile",
    "risky_cuts",
]

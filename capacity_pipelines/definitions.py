"""Dagster entry point: load the `defs/` folder and apply cross-cutting policy once."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path

import dagster as dg

# Daily assets are refreshed by the 02:00 UTC extraction of the previous day: a day plus the
# run's slack is on time, a missed night shows as a warning, two missed nights as stale.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=50), warn_window=timedelta(hours=26)
)


def _with_default_freshness(spec: dg.AssetSpec) -> dg.AssetSpec:
    # An asset that declares its own cadence (the weekly report) keeps it.
    return dg.apply_freshness_policy(spec, DAILY_FRESHNESS, overwrite_existing=False)


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs")
    with warnings.catch_warnings():
        # map_asset_specs is "preview" in 1.13 (pinned); the warning would print on every load.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return loaded.map_asset_specs(func=_with_default_freshness)

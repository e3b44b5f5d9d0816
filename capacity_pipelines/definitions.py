"""Dagster entry point: load the `defs/` folder and apply cross-cutting policy once."""

from __future__ import annotations

import importlib
import warnings
from datetime import timedelta
from pathlib import Path

import dagster as dg

from capacity_pipelines.common import paths

# Daily assets are refreshed by the 02:00 UTC extraction of the previous day: a day plus the
# run's slack is on time, a missed night shows as a warning, two missed nights as stale.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=50), warn_window=timedelta(hours=26)
)


def _with_default_freshness(spec: dg.AssetSpec) -> dg.AssetSpec:
    # An asset that declares its own cadence (the weekly report) keeps it.
    return dg.apply_freshness_policy(spec, DAILY_FRESHNESS, overwrite_existing=False)


def _load_defs_folder() -> dg.Definitions:
    """The `defs/` folder's definitions.

    In a clone pyproject.toml's `[tool.dg]` names the project, as for the `dg` CLI. An installed
    wheel has no pyproject.toml around the package, so the same tree is built from the package
    itself (project root: the folder holding the package, as in a clone).
    """
    if paths.IN_CLONE:
        return dg.load_from_defs_folder(path_within_project=Path(__file__).parent / "defs")
    return dg.ComponentTree(
        defs_module=importlib.import_module("capacity_pipelines.defs"),
        project_root=Path(__file__).resolve().parents[1],
        code_location_name="capacity_pipelines",
    ).build_defs()


@dg.definitions
def defs() -> dg.Definitions:
    loaded = _load_defs_folder()
    with warnings.catch_warnings():
        # map_asset_specs is "preview" in 1.13 (pinned); the warning would print on every load.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return loaded.map_asset_specs(func=_with_default_freshness)

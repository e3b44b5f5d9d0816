"""Dagster entry point: load the `defs/` folder and apply cross-cutting policy once.

Policies: a freshness window for every daily asset, and the analysts' snapshot built downstream
of every asset tagged as a warehouse writer (so the snapshot is published once all of a run's
writes are in, and a new writer cannot be left out of it).
"""

from __future__ import annotations

import importlib
import warnings
from datetime import timedelta
from pathlib import Path

import dagster as dg

from capacity_pipelines.common import paths
from capacity_pipelines.defs.warehouse.assets import WRITES_WAREHOUSE, build_snapshot_asset

# Daily assets are refreshed by the 02:00 UTC extraction of the previous day: a day plus the
# run's slack is on time, a missed night shows as a warning, two missed nights as stale.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=50), warn_window=timedelta(hours=26)
)


def warehouse_writers(definitions: dg.Definitions) -> list[dg.AssetKey]:
    """Every asset tagged as writing the warehouse."""
    return sorted(
        spec.key
        for assets in definitions.assets or []
        if isinstance(assets, dg.AssetsDefinition)
        for spec in assets.specs
        if all(spec.tags.get(k) == v for k, v in WRITES_WAREHOUSE.items())
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
    # Built here, not in its module: its inputs are every writer the folder defines (deps added
    # to a spec afterwards show in the lineage but do not order the steps of a run).
    snapshot = build_snapshot_asset(warehouse_writers(loaded))
    combined = dg.Definitions.merge(loaded, dg.Definitions(assets=[snapshot]))
    with warnings.catch_warnings():
        # map_asset_specs is "preview" in 1.13 (pinned); the warning would print on every load.
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return combined.map_asset_specs(func=_with_default_freshness)

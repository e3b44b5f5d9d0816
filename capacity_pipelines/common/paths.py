"""Where the project's static files and run-time outputs live.

Static files ship in the repository's top-level `assets/` folder (no Python there); run-time
outputs go under one home folder (`CAPACITY_HOME`, default `./var`) so a user can find the
warehouse, its published snapshot and the reports in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = REPO_ROOT / "assets"
DEMO_DIR = ASSETS_DIR / "demo"
DEFAULT_CATALOG = ASSETS_DIR / "metric_catalog.yaml"


def capacity_home() -> Path:
    """Root folder for run-time outputs: `$CAPACITY_HOME` or `./var` under the repository."""
    return Path(os.environ.get("CAPACITY_HOME", REPO_ROOT / "var")).resolve()


def warehouse_path() -> Path:
    """The DuckDB file written only by pipeline runs."""
    return Path(os.environ.get("CAPACITY_WAREHOUSE", capacity_home() / "warehouse.duckdb"))


def snapshot_path() -> Path:
    """The read-only copy published for analysts after each successful run."""
    return Path(os.environ.get("CAPACITY_SNAPSHOT", capacity_home() / "warehouse_snapshot.duckdb"))


def reports_dir() -> Path:
    """Folder for published reports (`<ISO week>/` and `latest/`)."""
    return Path(os.environ.get("CAPACITY_REPORTS", capacity_home() / "reports"))


def decisions_path() -> Path:
    """The SRE decisions store: user data, kept apart from the rebuildable warehouse."""
    default = warehouse_path().with_name("decisions.duckdb")
    return Path(os.environ.get("CAPACITY_DECISIONS", default))

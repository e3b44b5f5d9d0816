"""Where the project's static files and run-time outputs live.

Static files ship in the repository's top-level `assets/` folder (no Python there). In a clone
(an editable install included) they are read from that folder; an installed wheel carries the
same files as the data-only package `capacity_pipelines._assets` (see setup.py), found through
`importlib.resources`. Run-time outputs go under one home folder (`CAPACITY_HOME`; default
`var/` in the clone, `./var` in the working folder otherwise) so a user can find the warehouse,
its published snapshot and the reports in one place.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# A clone has its pyproject.toml beside the package; an installed package sits in site-packages.
IN_CLONE = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "assets").is_dir()


def _installed_assets() -> Path:
    """The wheel's copy of `assets/`: the folder of the `capacity_pipelines._assets` package."""
    # A data folder without __init__.py is a namespace package, for which `files` returns a
    # MultiplexedPath (not a Path); a file inside it is a plain Path.
    catalog = resources.files("capacity_pipelines._assets").joinpath("metric_catalog.yaml")
    return Path(str(catalog)).parent


ASSETS_DIR = REPO_ROOT / "assets" if IN_CLONE else _installed_assets()
DEMO_DIR = ASSETS_DIR / "demo"
DEFAULT_CATALOG = ASSETS_DIR / "metric_catalog.yaml"


def capacity_home() -> Path:
    """Root folder for run-time outputs: `$CAPACITY_HOME`, else `var/` (see the docstring)."""
    default = REPO_ROOT / "var" if IN_CLONE else Path.cwd() / "var"
    return Path(os.environ.get("CAPACITY_HOME", default)).resolve()


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

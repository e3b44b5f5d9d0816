"""Packaging that pyproject.toml cannot express: the top-level `assets/` folder shipped as data.

The product's layout keeps the static files in `assets/` beside the package (DESIGN.md), but
an installed wheel has no repository around it. So `assets/` is mapped to the data-only package
`capacity_pipelines._assets` (no Python in it), which `common/paths.py` reads through
`importlib.resources` when the clone's folder is absent. Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["capacity_pipelines*"]), "capacity_pipelines._assets"],
    package_dir={"capacity_pipelines._assets": "assets"},
    package_data={"capacity_pipelines._assets": ["**/*"]},
)

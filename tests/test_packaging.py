"""The package outside the clone: a wheel installed into a fresh venv runs `capacity demo`.

An editable install of a clone finds `assets/` beside the package; a user who runs
`pip install .` (or installs a wheel) has no clone around the package, so the wheel must carry
the static files itself. The wheel is built from a copy of the sources (pip writes `build/` and
an `.egg-info` into the folder it builds, which must not appear in the clone while other tests
read it), installed without dependencies into a new venv that borrows the test venv's
site-packages through a `.pth` file, and run from a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from capacity_pipelines.common.paths import REPO_ROOT

SOURCES = ("pyproject.toml", "setup.py", "README.md", "capacity_pipelines", "assets")


def _run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, check=False, **kwargs
    )
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    dist = tmp_path / "dist"
    # No build isolation: the test venv's setuptools (a dev extra) builds it, no network.
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", dist, source)  # fmt: skip
    (wheel,) = dist.glob("capacity_pipelines-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path) -> Path:
    """A venv whose third-party packages come from the test venv, but not the clone.

    A `.pth` line only appends a folder to sys.path: `.pth` files inside that folder are not
    run, so the test venv's editable-install finder (which maps the package to the clone)
    stays inactive, and the venv's own site-packages comes first.
    """
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "test_venv_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


@pytest.mark.timeout(900)
def test_wheel_installed_outside_the_clone_runs_the_demo(tmp_path: Path):
    wheel = _build_wheel(tmp_path)
    venv = _fresh_venv(tmp_path)
    python = venv / "bin" / "python"
    # pip itself is borrowed from the test venv; it installs into the new venv (sys.prefix).
    # --ignore-installed: the editable install of the clone is visible through the .pth line,
    # and pip must neither uninstall it nor take it for this wheel.
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed",
         wheel)  # fmt: skip

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAGSTER_HOME")}
    env |= {"CAPACITY_HOME": str(tmp_path / "home"), "PATH": f"{venv / 'bin'}:{env['PATH']}"}
    where = _run(
        python, "-c",
        "import capacity_pipelines; from capacity_pipelines.common import paths; "
        "print(capacity_pipelines.__file__); print(paths.ASSETS_DIR); print(paths.IN_CLONE)",
        cwd=elsewhere, env=env,
    ).stdout.split()  # fmt: skip
    package, assets, in_clone = Path(where[0]), Path(where[1]), where[2]
    assert package.is_relative_to(venv) and assets.is_relative_to(venv), where
    assert in_clone == "False"
    assert (assets / "demo" / "fleet.om.xz").is_file()

    demo = _run(venv / "bin" / "capacity", "demo", "--days", "2", cwd=elsewhere, env=env,
                timeout=800)  # fmt: skip
    report = Path(demo.stdout.strip().splitlines()[-1])
    assert report.is_file() and report.is_relative_to(tmp_path / "home"), demo.stdout[-2000:]
    assert report.name == "capacity_report.html"
    assert not list(elsewhere.iterdir())  # CAPACITY_HOME set: nothing lands in the cwd

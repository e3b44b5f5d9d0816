"""Shared fixtures: the shared research data folder and a real Prometheus server."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.prometheus_server import prometheus_available

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent (research data lives beside the repository only)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def require_prometheus() -> None:
    if not prometheus_available():
        pytest.skip("needs the Debian prometheus package (prometheus + promtool on PATH)")


@pytest.fixture(scope="session")
def accepted_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CAPACITY_HOME after one `capacity demo --days 8` and two accepted recommendations
    (tests copy it with `tests.capacity_process.copy_home`; about a minute, once)."""
    from tests.capacity_process import accepted_home as seeded

    return seeded(tmp_path_factory.mktemp("accepted"))

"""Predictive alerts against a real Alertmanager (the Debian `prometheus-alertmanager` binary,
started here on 127.0.0.1 with a free port, a temporary storage folder and a null receiver).

The conditions come from real warehouse tables (the `test_alerts` fixtures written with the
warehouse's own `replace_as_of`); the sync runs three times as the pipeline would on three days.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import requests
import yaml

from capacity_pipelines import warehouse as wh
from capacity_pipelines.alerts import (
    RUNWAY_ALERT,
    AlertmanagerClient,
    AlertSettings,
    current_alerts,
    read_latest,
    sync_alerts,
)
from capacity_pipelines.forecasting.fleet import RUNWAY_TABLE
from tests import test_alerts
from tests.prometheus_server import free_port
from tests.test_alerts import AS_OF, REPORT, RUNWAY_ROWS, runway_frame

pytestmark = pytest.mark.integration
warehouse_file = test_alerts.warehouse_file  # the same two as-of days of real tables
BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path):
    """A running Alertmanager; its URL. Stopped (killed if need be) when the test ends."""
    if BINARY is None:
        pytest.skip("prometheus-alertmanager not found (Debian package prometheus-alertmanager)")
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        yaml.safe_dump({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
    )
    port = free_port()
    log = tmp_path / "alertmanager.log"
    process = subprocess.Popen(
        [
            BINARY,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port: a single test instance
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {log.read_text()[-2000:]}")
            try:
                if requests.get(f"{url}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"alertmanager not ready: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ours(url: str) -> list[dict]:
    """Our active alerts as Alertmanager lists them, sorted by labels."""
    answer = requests.get(
        f"{url}/api/v2/alerts", params={"filter": 'source="capacity_pipelines"'}, timeout=5
    )
    answer.raise_for_status()
    return sorted(answer.json(), key=lambda a: sorted(a["labels"].items()))


def _alerts(path: Path, now: datetime):
    with duckdb.connect(str(path), read_only=True) as con:
        return current_alerts(read_latest(con), AlertSettings(), now, REPORT)


def test_post_deduplicate_and_resolve(alertmanager, warehouse_file):
    client = AlertmanagerClient(alertmanager, retries=0, timeout_s=5)
    first = datetime.now(UTC)
    alerts = _alerts(warehouse_file, first)
    result = sync_alerts(client, alerts, first)
    assert result.warning is None
    assert (result.firing, result.resolved, result.posted) == (4, 0, 4)

    held = _ours(alertmanager)
    assert len(held) == 4
    assert {json_labels(a) for a in held} == {json_labels(a.payload()) for a in alerts}
    cpu = next(a for a in held if a["labels"].get("resource") == "cpu")
    assert cpu["labels"]["alertname"] == RUNWAY_ALERT
    assert cpu["labels"]["severity"] == "critical"
    assert cpu["labels"]["source"] == "capacity_pipelines"
    assert "3.90 cores" in cpu["annotations"]["description"]
    assert cpu["annotations"]["report"] == f"{REPORT}#runway"
    assert cpu["status"]["state"] == "active"
    started = {json_labels(a): a["startsAt"] for a in held}

    # The next day's run: same conditions, no duplicate, first-seen time kept, end moved on.
    time.sleep(1.1)
    second = datetime.now(UTC)
    result = sync_alerts(client, _alerts(warehouse_file, second), second)
    assert (result.firing, result.resolved, result.posted, result.warning) == (4, 0, 4, None)
    again = _ours(alertmanager)
    assert len(again) == 4
    assert {json_labels(a): a["startsAt"] for a in again} == started
    assert all(a["endsAt"] > b["endsAt"] for a, b in zip(again, held, strict=True))

    # The planner's CPU runway is no longer short: its alert is resolved, the others stay.
    with duckdb.connect(str(warehouse_file)) as con:
        wh.replace_as_of(con, RUNWAY_TABLE, AS_OF, runway_frame(AS_OF, RUNWAY_ROWS[1:]))
    third = datetime.now(UTC)
    result = sync_alerts(client, _alerts(warehouse_file, third), third)
    assert (result.firing, result.resolved, result.posted, result.warning) == (3, 1, 4, None)
    time.sleep(0.2)  # resolved = endsAt (now) in the past
    remaining = _ours(alertmanager)
    assert len(remaining) == 3
    assert not any(a["labels"].get("resource") == "cpu" for a in remaining)
    assert {json_labels(a): a["startsAt"] for a in remaining}.items() <= started.items()


def test_alertmanager_down_is_a_warning(alertmanager):
    closed = free_port()
    client = AlertmanagerClient(f"http://ops:s3cret@127.0.0.1:{closed}", retries=1, timeout_s=2)
    now = datetime.now(UTC)
    result = sync_alerts(client, [], now)
    assert result.posted == 0
    assert result.warning == (
        f"Alertmanager http://127.0.0.1:{closed} unreachable (ConnectionError): alerts not posted"
    )
    assert _ours(alertmanager) == []  # the live one was never touched


def json_labels(alert: dict) -> tuple:
    return tuple(sorted(alert["labels"].items()))

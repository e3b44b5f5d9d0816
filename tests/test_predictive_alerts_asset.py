"""The `predictive_alerts` asset in process: rules written, alerts posted only with a URL, a dead
Alertmanager a warning (the run succeeds), an older as-of day never posted."""

from __future__ import annotations

import dagster as dg
import yaml

from capacity_pipelines.alerts import RULES_FILE
from capacity_pipelines.defs.alerts.assets import predictive_alerts
from capacity_pipelines.defs.resources import (
    AlertmanagerResource,
    ReportsResource,
    WarehouseResource,
)
from tests import test_alerts
from tests.prometheus_server import free_port

warehouse_file = test_alerts.warehouse_file  # runway, outlook and forecast as of 2026-10-11
PARTITION = "2026-10-10"  # its as-of moment is the end of the day: 2026-10-11 00:00 UTC


def _run(path, tmp_path, alertmanager: AlertmanagerResource, partition: str = PARTITION):
    resources = {
        "warehouse": WarehouseResource(path=str(path), snapshot_path=str(tmp_path / "snap.duckdb")),
        "reports": ReportsResource(reports_dir=str(tmp_path / "reports")),
        "alertmanager": alertmanager,
    }
    result = dg.materialize([predictive_alerts], resources=resources, partition_key=partition)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("predictive_alerts")
    return {k: v.value for k, v in materialization.metadata.items()}


def test_without_url_rules_are_written_and_nothing_is_posted(warehouse_file, tmp_path, capfd):
    metadata = _run(warehouse_file, tmp_path, AlertmanagerResource())
    log = capfd.readouterr().err  # Dagster's console logger
    rules = tmp_path / "reports" / "latest" / RULES_FILE
    assert metadata["alerts_firing"] == 4 and metadata["alerts_posted"] == 0
    assert metadata["rules"] == str(rules) and metadata["rules_series"] == 1
    document = yaml.safe_load(rules.read_text())
    assert document["groups"][0]["rules"][0]["labels"]["series_id"] == (
        "workload_cpu:agents/planner"
    )
    assert f"CAPACITY_ALERTMANAGER_URL not set: alerts not posted; rules written to {rules}" in (
        log
    )


def test_dead_alertmanager_warns_and_the_run_succeeds(warehouse_file, tmp_path, capfd):
    port = free_port()
    url = f"http://sre:t0ps3cret@127.0.0.1:{port}"
    metadata = _run(warehouse_file, tmp_path, AlertmanagerResource(url=url, retries=0))
    log = capfd.readouterr().err
    assert metadata["alerts_posted"] == 0
    assert metadata["alertmanager"] == f"http://127.0.0.1:{port}"
    assert f"Alertmanager http://127.0.0.1:{port} unreachable" in log
    assert "t0ps3cret" not in log


def test_an_older_day_posts_nothing(warehouse_file, tmp_path):
    port = free_port()  # closed: a post attempt would show as a warning and alerts_posted
    metadata = _run(
        warehouse_file, tmp_path, AlertmanagerResource(url=f"http://127.0.0.1:{port}"), "2026-10-09"
    )
    assert "not the newest day" in metadata["note"]
    assert "alerts_posted" not in metadata
    assert not (tmp_path / "reports" / "latest" / RULES_FILE).exists()

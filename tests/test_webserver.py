"""The Dagster UI, started the real way on 127.0.0.1, shows the assets, checks, jobs, schedules."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from capacity_pipelines.common.paths import REPO_ROOT
from tests.prometheus_server import free_port

QUERY = """{
  assetNodes { assetKey { path } groupName description
    assetChecksOrError { ... on AssetChecks { checks { name } } } }
  repositoriesOrError { ... on RepositoryConnection { nodes {
    jobs { name } schedules { name cronSchedule executionTimezone } } } }
}"""


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CAPACITY_HOME": str(home)}
    log = (home / "webserver.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-w",
            str(REPO_ROOT / "workspace.yaml"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, (home / "webserver.log").read_text()[-2000:]
            try:
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_graphql_lists_assets_checks_jobs_and_schedules(webserver):
    answer = requests.post(f"{webserver}/graphql", json={"query": QUERY}, timeout=60).json()
    assert not answer.get("errors"), answer.get("errors")
    data = answer["data"]
    assets = {tuple(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    for name in (
        "container_usage",
        "llm_token_cost",
        "load_forecasts",
        "warehouse_snapshot",
        "weekly_capacity_report",
    ):
        assert (name,) in assets and assets[(name,)]["description"]
    assert assets[("container_usage",)]["groupName"] == "ingest"
    assert assets[("weekly_capacity_report",)]["groupName"] == "reports"
    checks = {
        (node["assetKey"]["path"][0], check["name"])
        for node in data["assetNodes"]
        for check in node["assetChecksOrError"]["checks"]
    }
    assert ("container_usage", "non_negative") in checks
    assert ("forecast_backtests", "beats_seasonal_naive") in checks
    assert ("container_rightsizing", "no_risky_cuts") in checks
    assert ("weekly_capacity_report", "all_sections_available") in checks
    assert ("weekly_capacity_report", "summary_delivered") in checks
    [repo] = data["repositoriesOrError"]["nodes"]
    assert {"daily_capacity_pipeline", "weekly_capacity_report_job"} <= {
        j["name"] for j in repo["jobs"]
    }
    schedules = {s["name"]: s for s in repo["schedules"]}
    assert schedules["daily_capacity_pipeline_schedule"]["cronSchedule"] == "0 2 * * *"
    weekly = schedules["weekly_capacity_report_schedule"]
    assert (weekly["cronSchedule"], weekly["executionTimezone"]) == ("0 6 * * 1", "UTC")


def test_graphql_shows_owners_kinds_and_freshness(webserver):
    query = """{ assetNodes { assetKey { path } owners { ... on TeamAssetOwner { team } }
      kinds isMaterializable freshnessPolicy: internalFreshnessPolicy { __typename } } }"""
    answer = requests.post(f"{webserver}/graphql", json={"query": query}, timeout=60).json()
    assert not answer.get("errors"), answer.get("errors")
    nodes = {tuple(n["assetKey"]["path"]): n for n in answer["data"]["assetNodes"]}
    report = nodes[("weekly_capacity_report",)]
    assert report["owners"] == [{"team": "capacity"}] and "html" in report["kinds"]
    # Every asset carries a freshness policy, so the UI can flag the stale ones.
    assert all(n["freshnessPolicy"] for n in nodes.values() if n["isMaterializable"])


def test_ui_is_bound_to_loopback_only(webserver):
    port = int(webserver.rsplit(":", 1)[1])
    listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
    sockets = [line.split()[3] for line in listening.splitlines()[1:] if line.split()]
    mine = [s for s in sockets if s.endswith(f":{port}")]
    assert mine and all(s.startswith("127.0.0.1:") for s in mine)

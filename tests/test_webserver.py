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


def _listening(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2)
    except requests.RequestException:
        return False
    return True


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc), at any depth."""
    children: dict[int, set[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), set()).add(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.timeout(300)
def test_capacity_ui_stops_everything_it_started_on_sigterm(tmp_path):
    """`kill <pid>` of `capacity ui` used to leave the webserver, daemon and code server running."""
    import signal

    port = free_port()
    env = {**os.environ, "CAPACITY_HOME": str(tmp_path)}
    env.pop("DAGSTER_HOME", None)
    ui = subprocess.Popen(
        [sys.executable, "-m", "capacity_pipelines.cli", "ui", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not _listening(port):
            assert ui.poll() is None and time.monotonic() < deadline, "the UI did not start"
            time.sleep(1)
        started = _descendants(ui.pid)
        assert started  # the webserver, the daemon, the code server
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if ui.poll() is None:
            ui.kill()
    assert not _listening(port)
    deadline = time.monotonic() + 10  # a process killed a moment ago may still be exiting
    while (alive := {pid for pid in started if _running(pid)}) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive, f"left running: {alive}"


def _running(pid: int) -> bool:
    """True for a live process (a zombie waiting to be reaped has already stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

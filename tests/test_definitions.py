"""The Dagster definitions: what the UI shows, and assets materialised in process."""

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from capacity_pipelines.common.paths import REPO_ROOT
from capacity_pipelines.definitions import defs as build_defs
from tests.pipeline import pipeline_resources
from tests.synthetic_fleet import write_container_fleet

INGEST = ["container_usage", "llm_token_usage", "service_traffic", "workload_replicas"]


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return build_defs()


def test_assets_checks_jobs_and_schedules_are_listed(definitions):
    graph = definitions.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(INGEST) | {"warehouse_snapshot"} <= keys
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    for table in INGEST:
        assert {(table, "completeness"), (table, "non_negative"), (table, "freshness")} <= checks
    assert definitions.resolve_job_def("daily_capacity_pipeline") is not None
    schedule = definitions.resolve_schedule_def("daily_capacity_pipeline_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone in (None, "UTC")
    for table in INGEST:
        node = graph.get(dg.AssetKey(table))
        assert node.group_name == "ingest"
        assert node.description


def test_no_asset_holds_a_pool_for_its_compute(definitions):
    """Writers serialise on the warehouse's lock around the write only; a pool held for the
    whole body would serialise minutes of forecasting (and a killed run kept its slot)."""
    graph = definitions.resolve_asset_graph()
    held = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    assert not {k: p for k, p in held.items() if p}


AS_OF = {"load_forecasts", "forecast_backtests", "container_rightsizing", "bottleneck_outlook",
         "anomalies", "recommendations"}  # fmt: skip
LATEST = {"warehouse_snapshot", "data_quality_report", "token_cost_report"}


def test_partitions_follow_what_each_answer_is(definitions):
    """Per-day data and as-of answers are daily; "latest" publications are not partitioned."""
    graph = definitions.resolve_asset_graph()
    partitions = {
        k.to_user_string(): graph.get(k).partitions_def for k in graph.get_all_asset_keys()
    }
    daily = {k for k, p in partitions.items() if isinstance(p, dg.DailyPartitionsDefinition)}
    assert set(INGEST) | AS_OF | {"llm_token_cost", "predictive_alerts"} == daily
    assert all(partitions[k] is None for k in LATEST)
    assert isinstance(partitions["weekly_capacity_report"], dg.WeeklyPartitionsDefinition)


def test_daily_job_refreshes_everything_the_weekly_report_reads(definitions):
    """Extraction alone would leave forecasts, rightsizing and recommendations stale."""
    graph = definitions.resolve_asset_graph()
    job = definitions.resolve_job_def("daily_capacity_pipeline")
    in_job = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    everything = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert in_job == everything - {"weekly_capacity_report"}
    snapshot = graph.get(dg.AssetKey("warehouse_snapshot"))
    assert {k.to_user_string() for k in snapshot.parent_keys} >= AS_OF
    report = graph.get(dg.AssetKey("weekly_capacity_report"))
    assert {k.to_user_string() for k in report.parent_keys} == {"warehouse_snapshot"}


def _daily_job_run(definitions, tmp_path: Path, **execute) -> dg.ExecuteInProcessResult:
    from capacity_pipelines.defs.schedules import daily_pipeline_job

    export = tmp_path / "fleet.om"
    start = datetime(2026, 9, 28, tzinfo=UTC)
    write_container_fleet(
        export, containers=3, start_s=int(start.timestamp()), days=4, interval_s=300
    )
    local = dg.Definitions(
        assets=list(definitions.assets),
        asset_checks=list(definitions.asset_checks or []),
        jobs=[daily_pipeline_job],
        resources=pipeline_resources(tmp_path, [export]),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = local.resolve_job_def("daily_capacity_pipeline").execute_in_process(
            instance=instance, raise_on_error=False, **execute
        )
    assert result.success, [
        e.step_failure_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]
    return result


def test_daily_job_runs_one_partition_end_to_end(definitions, tmp_path: Path):
    """The scheduled run as the daemon launches it: one job, one partition, every asset."""
    result = _daily_job_run(definitions, tmp_path, partition_key="2026-09-29")
    done = {
        e.asset_key.to_user_string()
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }
    assert {"container_usage", "container_rightsizing", "load_forecasts", "recommendations"} <= done
    assert "weekly_capacity_report" not in done
    con = duckdb.connect(str(tmp_path / "snap.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM container_rightsizing").fetchone()[0] > 0


def test_a_ranged_run_computes_every_as_of_day_it_marks(definitions, tmp_path: Path):
    """A green partition means that day's answer exists: a run over three days writes three
    as-of days of every answer and marks exactly those three keys."""
    keys = ["2026-09-29", "2026-09-30", "2026-10-01"]
    result = _daily_job_run(
        definitions,
        tmp_path,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
    )
    marked: dict[str, set] = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION":
            marked.setdefault(event.asset_key.to_user_string(), set()).add(event.partition)
    for asset in AS_OF:
        assert marked[asset] == set(keys), asset
    assert marked["warehouse_snapshot"] == {None}
    for asset in AS_OF:  # early days may have nothing to forecast or recommend, but were run
        mats = result.asset_materializations_for_node(asset)
        [last] = [m for m in mats if m.partition == keys[-1]]
        assert last.metadata["days_computed"].value == 3
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    days = con.execute("SELECT DISTINCT as_of::DATE::VARCHAR FROM container_rightsizing ORDER BY 1")
    assert [d for (d,) in days.fetchall()] == ["2026-09-30", "2026-10-01", "2026-10-02"]


def test_every_asset_that_writes_the_warehouse_is_upstream_of_the_snapshot(
    definitions, tmp_path: Path, monkeypatch
):
    """Found by watching the writes of a real run, not by trusting the tags."""
    from capacity_pipelines import warehouse

    writers: set[str] = set()
    original = warehouse.writer

    def watched(*args, **kwargs):
        writers.add(dg.AssetExecutionContext.get().asset_key.to_user_string())
        return original(*args, **kwargs)

    monkeypatch.setattr(warehouse, "writer", watched)
    _daily_job_run(definitions, tmp_path, partition_key="2026-09-29")
    snapshot = definitions.resolve_asset_graph().get(dg.AssetKey("warehouse_snapshot"))
    upstream = {k.to_user_string() for k in snapshot.parent_keys}
    assert set(INGEST) | AS_OF <= writers  # the watch saw the writes
    assert writers <= upstream


def test_extraction_has_retries_and_single_run_backfills(definitions):
    assets = {a.key.to_user_string(): a for a in definitions.assets}
    usage = assets["container_usage"]
    assert usage.backfill_policy == dg.BackfillPolicy.single_run()
    node_def = usage.node_def
    assert node_def.retry_policy is not None and node_def.retry_policy.max_retries >= 1


def test_materialise_partition_writes_rows_and_reports_checks(definitions, tmp_path: Path):
    export = tmp_path / "fleet.om"
    start = datetime(2026, 9, 28, tzinfo=UTC)
    write_container_fleet(
        export, containers=3, start_s=int(start.timestamp()), days=2, interval_s=300
    )
    snap = tmp_path / "snap.duckdb"
    resources = pipeline_resources(tmp_path, [export])
    assets = list(definitions.assets)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            assets,
            selection=["container_usage", "warehouse_snapshot", "data_quality_report"],
            resources=resources,
            partition_key="2026-09-29",
            instance=instance,
        )
    assert result.success
    [mat] = result.asset_materializations_for_node("container_usage")
    assert mat.metadata["dagster/row_count"].value == 3 * 288
    assert mat.metadata["series"].value == 3
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["completeness"].passed
    assert evaluations["non_negative"].passed
    assert evaluations["freshness"].passed
    con = duckdb.connect(str(snap), read_only=True)
    assert con.execute("SELECT count(*) FROM container_usage").fetchone()[0] == 3 * 288
    assert con.execute("SELECT min(ts)::DATE FROM container_usage").fetchone()[0].isoformat() == (
        "2026-09-29"
    )
    report = (tmp_path / "reports" / "latest" / "data_quality.md").read_text()
    assert "| container_usage | 864 | 3 |" in report


def test_malformed_export_fails_fast_without_retries(definitions, tmp_path: Path):
    export = tmp_path / "bad.om"
    export.write_text('# TYPE m gauge\nm{a="1" 5 100\n# EOF\n')
    resources = pipeline_resources(tmp_path, [export])
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            list(definitions.assets),
            selection=["container_usage"],
            resources=resources,
            partition_key="2026-09-29",
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"{export}:2" in failures[0].step_failure_data.error.message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not (tmp_path / "wh.duckdb").exists()


def test_dg_check_defs_passes():
    dg_cli = Path(sys.executable).with_name("dg")
    proc = subprocess.run(
        [str(dg_cli), "check", "defs"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr

"""Assets downstream of extraction over a real warehouse: forecasts, runway, backtests and
rightsizing written, exported and checked."""

from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest

from capacity_pipelines.definitions import defs as build_defs
from tests.pipeline import pipeline_resources
from tests.synthetic_fleet import write_container_fleet

START = datetime(2026, 9, 28, tzinfo=UTC)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("forecast")
    export = root / "fleet.om"
    write_container_fleet(export, 3, int(START.timestamp()), days=22, interval_s=300)
    resources = pipeline_resources(root, [export])
    assets = list(build_defs().assets)
    tags = {
        "dagster/asset_partition_range_start": "2026-09-28",
        "dagster/asset_partition_range_end": "2026-10-19",
    }
    with dg.DagsterInstance.ephemeral() as instance:
        ingest = dg.materialize(
            assets,
            selection=["container_usage"],
            resources=resources,
            instance=instance,
            tags=tags,
        )
        assert ingest.success
        # The as-of answers of the last day, as the daily run computes them after a catch-up.
        result = dg.materialize(
            assets,
            selection=["load_forecasts", "forecast_backtests", "container_rightsizing"],
            resources=resources,
            instance=instance,
            partition_key="2026-10-19",
            # a non-default risk profile, as a user sets it in the launchpad
            run_config={"ops": {"container_rightsizing": {"config": {"profile": "conservative"}}}},
        )
    return result, root


def test_forecasts_and_runway_are_written(run):
    result, root = run
    assert result.success
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    as_of, series, hours, bad = con.execute(
        "SELECT any_value(as_of), count(DISTINCT series_id), count(*) / count(DISTINCT series_id),"
        " count(*) FILTER (WHERE NOT isfinite(p95) OR p95 < p50 OR point < 0) FROM load_forecast"
    ).fetchone()
    assert as_of == datetime(2026, 10, 20)  # the end of the last partition
    assert series == 6  # CPU and memory of the three workloads
    assert hours == 168 and bad == 0
    runway = con.execute(
        "SELECT series_id, peak_p90, capacity FROM capacity_runway ORDER BY series_id"
    ).fetchall()
    assert [r[0].split(":")[0] for r in runway] == ["workload_cpu"] * 3 + ["workload_memory"] * 3
    assert all(r[1] > 0 for r in runway)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["finite_non_negative"].passed
    [mat] = result.asset_materializations_for_node("load_forecasts")[-1:]
    assert "data:image/png;base64," in mat.metadata["forecast_charts"].value


def test_backtest_scores_engine_against_seasonal_naive(run):
    result, root = run
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT family, count(*), avg(mase_engine), avg(mase_seasonal_naive) "
        "FROM forecast_backtest GROUP BY family ORDER BY family"
    ).fetchall()
    assert [r[0] for r in rows] == ["workload_cpu", "workload_memory"]
    assert all(r[1] == 3 and r[2] > 0 and r[3] > 0 for r in rows)
    evaluation = next(
        e for e in result.get_asset_check_evaluations() if e.check_name == "beats_seasonal_naive"
    )
    engine_better = all(r[2] < r[3] for r in rows)
    assert evaluation.passed == engine_better


def test_rightsizing_recommends_every_container_and_exports_patches(run):
    result, root = run
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT container, status, current_cpu_request, cpu_request, confidence, rationale, "
        "profile, recommender FROM container_rightsizing ORDER BY container"
    ).fetchall()
    assert [r[0] for r in rows] == ["app0", "app1", "app2"]  # none silently skipped
    for _, status, current, recommended, confidence, rationale, profile, recommender in rows:
        assert status == "ok" and 0 < confidence <= 1 and rationale
        assert current > 0 and recommended > 0
        assert profile == "conservative" and "profile conservative" in rationale
        assert "chosen by backtest" in rationale and recommender  # 14 days read: backtested
    [mat] = result.asset_materializations_for_node("container_rightsizing")[-1:]
    assert mat.metadata["profile"].value == "conservative"
    exports = root / "reports" / "latest" / "rightsizing"
    assert any(p.suffix == ".csv" for p in exports.iterdir())
    [evaluation] = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "no_risky_cuts"
    ]
    assert evaluation.severity.value == "WARN"


def test_backtests_on_a_short_history_write_an_empty_week_and_warn(tmp_path):
    """Three days of history: nothing to score, but the asset still writes and reports why."""
    export = tmp_path / "fleet.om"
    write_container_fleet(export, 2, int(START.timestamp()), days=3, interval_s=300)
    resources = pipeline_resources(tmp_path, [export])
    assets = list(build_defs().assets)
    tags = {
        "dagster/asset_partition_range_start": "2026-09-28",
        "dagster/asset_partition_range_end": "2026-09-30",
    }
    with dg.DagsterInstance.ephemeral() as instance:
        for selection in (["container_usage"], ["forecast_backtests"]):
            result = dg.materialize(
                assets, selection=selection, resources=resources, instance=instance, tags=tags
            )
            assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    with duckdb.connect(str(resources["warehouse"].path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM forecast_backtest").fetchone() == (0,)

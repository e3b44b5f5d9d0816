"""The `recommendations` asset in a real Dagster run: rows, checks, metadata, and decisions that
survive a re-run and a ranged backfill."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import duckdb
import pytest

from capacity_pipelines.defs.recommendations.assets import recommendations
from capacity_pipelines.defs.resources import WarehouseResource
from capacity_pipelines.recommendations.cli import main as recs_main
from capacity_pipelines.recommendations.identity import recommendation_id
from tests.test_recommendations import DAY1, write_inputs

PLANNER = recommendation_id("rightsize_down", "agents/planner/planner")
POSTGRES = recommendation_id("fix_database_bottleneck", "service platform/postgres")


def _materialize(root, instance, **kwargs):
    return dg.materialize(
        [recommendations],
        resources={
            "warehouse": WarehouseResource(
                path=str(root / "wh.duckdb"), snapshot_path=str(root / "snap.duckdb")
            )
        },
        instance=instance,
        **kwargs,
    )


def _rows(root, sql, args=(), store="wh.duckdb"):
    with duckdb.connect(str(root / store), read_only=True) as con:
        return con.execute(sql, list(args)).fetchall()


def _decisions(root):
    return _rows(root, DECISIONS_SQL, store="decisions.duckdb")


DECISIONS_SQL = "SELECT * FROM recommendation_decisions ORDER BY decided_at"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("recs_asset")
    # inputs for the as-of days of partitions 2026-10-01 .. 2026-10-04 (as_of = day end)
    for offset in range(-4, 1):
        write_inputs(root / "wh.duckdb", DAY1 + timedelta(days=offset))
    with dg.DagsterInstance.ephemeral() as instance:
        first = _materialize(root, instance, partition_key="2026-10-04")
        yield root, instance, first


def test_rows_checks_and_ranked_table_metadata(home):
    root, _, result = home
    assert result.success
    [materialization] = result.asset_materializations_for_node("recommendations")
    metadata = materialization.metadata
    assert metadata["dagster/row_count"].value == 3
    table = metadata["top"].value
    assert [r.data["rank"] for r in table.records] == [1, 2, 3]
    assert {r.data["recommendation_id"] for r in table.records} >= {PLANNER, POSTGRES}
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["evidence_for_every_recommendation"].passed
    assert checks["unique_ids"].passed
    as_of = _rows(root, "SELECT DISTINCT as_of FROM recommendations")
    assert [str(a) for (a,) in as_of] == ["2026-10-05 00:00:00"]  # the partition's end
    # a run only reads the decisions: it creates no store and no table in the warehouse
    assert not (root / "decisions.duckdb").exists()
    tables = _rows(root, "SELECT table_name FROM duckdb_tables()")
    assert ("recommendation_decisions",) not in tables


def test_decision_survives_rerun_and_backfill(home, capsys):
    root, instance, _ = home
    args = ["--warehouse", str(root / "wh.duckdb"), "--snapshot", str(root / "snap.duckdb")]
    assert recs_main([*args, "accept", PLANNER, "--by", "alice", "-m", "saves $120"]) == 0
    assert recs_main([*args, "reject", POSTGRES[:8], "--by", "bob", "-m", "DBA owns it"]) == 0
    before = _decisions(root)
    assert len(before) == 2

    rerun = _materialize(root, instance, partition_key="2026-10-04")
    backfill = _materialize(
        root,
        instance,
        tags={
            "dagster/asset_partition_range_start": "2026-10-01",
            "dagster/asset_partition_range_end": "2026-10-04",
        },
    )
    assert rerun.success and backfill.success
    after = _decisions(root)
    assert after == before  # not one decision lost or rewritten
    status = dict(
        _rows(
            root,
            "SELECT recommendation_id, review_status FROM recommendations "
            "WHERE as_of = '2026-10-05'",
        )
    )
    assert status[PLANNER] == "accepted" and status[POSTGRES] == "rejected"
    capsys.readouterr()
    assert recs_main([*args, "list"]) == 0
    listed = capsys.readouterr().out
    assert PLANNER in listed and POSTGRES not in listed  # rejected and unchanged: hidden


def _lie(kind: str, table, as_of):
    """One row of a real run's table changed into a statement that is not true."""
    import polars as pl

    first = table.filter(pl.col("status") == "open").head(1)
    rest = table.filter(pl.col("recommendation_id") != first["recommendation_id"][0])
    naive = as_of.replace(tzinfo=None)
    if kind == "no_deadline_in_the_past":
        first = first.with_columns(pl.lit(naive - timedelta(days=2)).alias("deadline"))
    elif kind == "fresh_evidence":
        first = first.with_columns(pl.lit(naive - timedelta(days=3)).alias("evidence_last_seen"))
    elif kind == "one_direction_per_resource":
        twin = first.with_columns(
            pl.lit("rec-0123456789").alias("recommendation_id"),
            pl.lit("down").alias("cpu_direction"),
        )
        first = pl.concat([first.with_columns(pl.lit("up").alias("cpu_direction")), twin])
    return pl.concat([first, rest])


@pytest.mark.parametrize(
    "check",
    ["no_deadline_in_the_past", "fresh_evidence", "one_direction_per_resource",
     "measured_headline_adds_up"],
)  # fmt: skip
def test_a_list_that_would_say_something_untrue_is_not_written(tmp_path, monkeypatch, check):
    """Each invariant is blocking: the run fails on it and the day's rows are not written."""
    from capacity_pipelines.defs.recommendations import assets
    from capacity_pipelines.recommendations.headline import SavingsHeadline

    write_inputs(tmp_path / "wh.duckdb", DAY1 - timedelta(days=1))
    real_build = assets.build_recommendations

    def build(con, as_of, **kwargs):
        run = real_build(con, as_of, **kwargs)
        if check != "measured_headline_adds_up":
            run.table = _lie(check, run.table, as_of)
        return run

    monkeypatch.setattr(assets, "build_recommendations", build)
    if check == "measured_headline_adds_up":  # a headline that counts estimates as measured
        monkeypatch.setattr(
            assets,
            "savings_headline",
            lambda rows: SavingsHeadline(1e6, 0.0, 0.0, 1, 0),
        )
    with dg.DagsterInstance.ephemeral() as instance:
        result = _materialize(tmp_path, instance, partition_key="2026-10-04",
                              raise_on_error=False)  # fmt: skip
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations[check].passed
    assert all(e.passed for name, e in evaluations.items() if name != check)
    tables = _rows(tmp_path, "SELECT table_name FROM duckdb_tables()")
    if ("recommendations",) in tables:
        assert _rows(tmp_path, "SELECT count(*) FROM recommendations")[0][0] == 0

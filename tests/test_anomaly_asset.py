"""The `anomalies` asset: a small fleet extracted into a real warehouse, the asset materialised
for a day, its rows, checks and metadata read back; and `score_fleet` on hourly series."""

from datetime import datetime, timedelta

import dagster as dg
import duckdb
import numpy as np
import polars as pl

from capacity_pipelines.anomalies.fleet import ANOMALY_TABLE, score_fleet
from capacity_pipelines.definitions import defs as build_defs
from tests.pipeline import pipeline_resources
from tests.test_bottleneck_asset import HOSTILE, _fleet, _ingest

AS_OF = datetime(2026, 3, 1)
HOURS = 28 * 24


def _hourly(incident_hours_ago: int | None = None) -> pl.DataFrame:
    """Two services' request rates: a daily cycle with 3 % noise, four weeks up to AS_OF."""
    ts = [AS_OF - timedelta(hours=HOURS - i) for i in range(HOURS)]
    frames = []
    for seed, name in enumerate(("requests:shop/cart", "requests:shop/search")):
        rng = np.random.default_rng(seed)
        value = 100 + 40 * np.sin(2 * np.pi * np.arange(HOURS) / 24) + rng.normal(0, 3, HOURS)
        if incident_hours_ago is not None and name.endswith("cart"):
            value[HOURS - incident_hours_ago] += 80
        frames.append(pl.DataFrame({"series_id": name, "ts": ts, "value": value}))
    return pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def test_every_hour_of_the_day_is_stored_and_an_incident_is_flagged_with_evidence():
    scored = score_fleet(_hourly(incident_hours_ago=5), AS_OF)
    assert scored.columns == list(ANOMALY_TABLE.columns)
    assert scored.group_by("series_id").len().sort("series_id")["len"].to_list() == [24, 24]
    assert scored["ts"].min() == AS_OF - timedelta(hours=24)
    assert scored["ts"].max() == AS_OF - timedelta(hours=1)
    assert scored["family"].unique().to_list() == ["requests"]
    flagged = scored.filter(pl.col("is_anomaly"))
    assert flagged.select("series_id", "ts", "kind").rows() == [
        ("requests:shop/cart", AS_OF - timedelta(hours=5), "spike")
    ]
    assert "x the series' largest of the last 30 days" in flagged["evidence"][0]
    assert scored.filter(~pl.col("is_anomaly"))["evidence"].to_list() == [""] * 47


def test_a_day_is_scored_from_the_hours_before_it_only():
    history = _hourly(incident_hours_ago=5)
    before = score_fleet(history, AS_OF - timedelta(days=1))
    later = history.with_columns(
        pl.when(pl.col("ts") >= AS_OF - timedelta(days=1)).then(0.0).otherwise("value")
        .alias("value")
    )  # fmt: skip
    assert score_fleet(later, AS_OF - timedelta(days=1)).equals(before)


def test_the_asset_writes_its_day_checks_before_writing_and_escapes_labels(tmp_path):
    export = tmp_path / "fleet.om"
    _fleet(export)
    resources = pipeline_resources(tmp_path, [export])
    assets = list(build_defs().assets)
    with dg.DagsterInstance.ephemeral() as instance:
        _ingest(assets, resources, instance)
        for _ in range(2):  # a re-run replaces its day, never duplicates it
            result = dg.materialize(
                assets, selection=["anomalies"], resources=resources, instance=instance,
                partition_key="2026-10-09",
            )  # fmt: skip
    assert result.success
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT as_of, series_id, count(*), min(ts), max(ts) FROM anomalies "
        "GROUP BY ALL ORDER BY series_id"
    ).fetchall()
    assert {r[0] for r in rows} == {datetime(2026, 10, 10)}
    assert all(r[2] == 24 for r in rows)
    assert any(HOSTILE in r[1] for r in rows)  # every series, hostile labels kept verbatim
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["scores_in_range"].passed
    [mat] = result.asset_materializations_for_node("anomalies")
    assert mat.metadata["series"].value == len(rows)
    assert "<script>" not in mat.metadata["flagged"].value

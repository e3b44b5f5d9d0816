"""The bottleneck outlook in the pipeline: a small fleet extracted into a real warehouse, the
asset materialised, its rows, checks and metadata read back."""

import json
from datetime import UTC, datetime

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from capacity_pipelines.definitions import defs as build_defs
from tests.pipeline import pipeline_resources

START = datetime(2026, 9, 28, tzinfo=UTC)
DAYS = 12
STEP = 300
GIB = 2**30
HOSTILE = "<script>alert(1)</script>"  # a service label an attacker could set


def _fleet(path) -> None:
    """Two services with recurring, learnable saturation and one with only traffic.

    - shop/cart: memory leak, working set climbs to its 1 GiB limit every 2 days, then restarts.
    - shop/search: throttled 60 % of CFS periods 14:00-16:00 UTC every day at its 1-core limit.
    """
    start = int(START.timestamp())
    steps = DAYS * 86400 // STEP
    ts = start + np.arange(steps) * STEP
    hour = (ts % 86400) / 3600
    busy = (hour >= 14) & (hour < 16)
    cart_ws = 0.55 * GIB + 0.46 * GIB * ((ts - start) % (2 * 86400)) / (2 * 86400)
    periods = np.cumsum(np.full(steps, 3000.0))  # 100 ms CFS periods in 5 minutes
    throttled = np.cumsum(np.where(busy, 1800.0, 10.0))
    search_cpu = np.cumsum(np.where(busy, 0.99, 0.3) * STEP)
    cart_cpu = np.cumsum(np.full(steps, 0.2) * STEP)
    requests = np.cumsum(np.full(steps, 10.0 * STEP))
    lines = []

    def family(name: str, kind: str, series: list[tuple[str, np.ndarray]]) -> None:
        lines.append(f"# TYPE {name} {kind}")
        sample = f"{name}_total" if kind == "counter" else name
        for labels, values in series:
            lines.extend(
                f"{sample}{{{labels}}} {v:.6g} {t}" for t, v in zip(ts, values, strict=True)
            )

    pod = {
        "cart": 'namespace="shop",pod="cart-7d9f8b6c5d-x2x4z",container="cart"',
        "search": 'namespace="shop",pod="search-7d9f8b6c5d-q8q9r",container="search"',
    }
    family(
        "container_cpu_usage_seconds",
        "counter",
        [(pod["cart"], cart_cpu), (pod["search"], search_cpu)],
    )
    family("container_memory_working_set_bytes", "gauge", [(pod["cart"], cart_ws)])
    family("container_cpu_cfs_periods", "counter", [(pod["search"], periods)])
    family("container_cpu_cfs_throttled_periods", "counter", [(pod["search"], throttled)])
    ones = np.ones(steps)
    family(
        "kube_pod_container_resource_limits",
        "gauge",
        [
            (pod["cart"] + ',resource="memory",unit="byte"', ones * GIB),
            (pod["search"] + ',resource="cpu",unit="core"', ones),
        ],
    )
    family(
        "http_server_requests",
        "counter",
        [
            (f'namespace="shop",service="{name}",status_code="200"', requests)
            for name in ("cart", "search", HOSTILE)
        ],
    )
    path.write_text("\n".join(lines) + "\n# EOF\n")


def _ingest(assets: list, resources: dict, instance: dg.DagsterInstance) -> None:
    """Extract the fleet's twelve days (usage and traffic) into the warehouse."""
    ingest = dg.materialize(
        assets,
        selection=["container_usage", "service_traffic"],
        resources=resources,
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2026-09-28",
            "dagster/asset_partition_range_end": "2026-10-09",
        },
    )
    assert ingest.success


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bottlenecks")
    export = root / "fleet.om"
    _fleet(export)
    resources = pipeline_resources(root, [export])
    assets = list(build_defs().assets)
    with dg.DagsterInstance.ephemeral() as instance:
        _ingest(assets, resources, instance)
        results = [
            dg.materialize(
                assets,
                selection=["bottleneck_outlook"],
                resources=resources,
                instance=instance,
                partition_key="2026-10-09",
            )
            for _ in range(2)  # twice: a re-run replaces its day, never duplicates it
        ]
    return results[-1], root


def _outlook(root) -> dict:
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT service, horizon, bottleneck_class, probability, probabilities, expected_at, "
        "evidence, metrics, method, note, as_of FROM bottleneck_outlook"
    ).fetchall()
    names = [
        "service",
        "horizon",
        "bottleneck_class",
        "probability",
        "probabilities",
        "expected_at",
        "evidence",
        "metrics",
        "method",
        "note",
        "as_of",
    ]
    return {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in rows}


def test_one_row_per_service_and_horizon_at_the_partition_end(run):
    result, root = run
    assert result.success
    rows = _outlook(root)
    assert sorted(rows) == sorted(
        (s, h) for s in ("cart", "search", HOSTILE) for h in ("24h", "7d")
    )
    assert {r["as_of"] for r in rows.values()} == {datetime(2026, 10, 10)}
    for row in rows.values():
        probabilities = json.loads(row["probabilities"])
        assert abs(sum(probabilities.values()) - 1) < 1e-6
        assert probabilities[row["bottleneck_class"]] == pytest.approx(row["probability"])


def test_recurring_saturation_is_forecast_with_its_evidence(run):
    _, root = run
    rows = _outlook(root)
    search = rows[("search", "24h")]
    assert search["bottleneck_class"] == "cpu"
    assert "throttled" in search["evidence"] and "cpu_throttled_ratio" in search["metrics"]
    cart = rows[("cart", "7d")]
    assert cart["bottleneck_class"] == "memory"
    assert "memory limit" in cart["evidence"]
    assert rows[(HOSTILE, "7d")]["bottleneck_class"] == "none"


def test_missing_families_are_noted_not_fatal(run):
    _, root = run
    note = _outlook(root)[("cart", "24h")]["note"]
    assert "llm_provider: not labelled" in note and "network: not labelled" in note


def test_checks_and_metadata(run):
    result, _ = run
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["probabilities_sum_to_one"].passed
    assert checks["bottlenecks_have_evidence"].passed
    [mat] = result.asset_materializations_for_node("bottleneck_outlook")
    metadata = mat.metadata
    assert "actual \\ predicted" in metadata["confusion_matrix"].value
    assert 0.0 <= metadata["macro_f1"].value <= 1.0
    outlook = metadata["outlook"].value
    assert "&lt;script&gt;" in outlook and "<script>" not in outlook


def test_no_look_ahead_in_the_asset(tmp_path):
    """Rewriting every usage row after a day's end leaves that day's outlook as it was."""
    export = tmp_path / "fleet.om"
    _fleet(export)
    resources = pipeline_resources(tmp_path, [export])
    assets = list(build_defs().assets)

    def outlook_of_day() -> list[tuple]:
        result = dg.materialize(
            assets,
            selection=["bottleneck_outlook"],
            resources=resources,
            instance=instance,
            partition_key="2026-10-05",
        )
        assert result.success
        con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
        try:
            return con.execute(
                "SELECT * EXCLUDE (note) FROM bottleneck_outlook "
                "WHERE as_of = TIMESTAMP '2026-10-06' ORDER BY service, horizon"
            ).fetchall()
        finally:
            con.close()

    with dg.DagsterInstance.ephemeral() as instance:
        _ingest(assets, resources, instance)
        before = outlook_of_day()
        con = duckdb.connect(str(tmp_path / "wh.duckdb"))
        try:
            changed = con.execute(
                "UPDATE container_usage SET cpu_cores = 0.0, "
                "memory_working_set_bytes = memory_limit_bytes * 0.99 "
                "WHERE ts > TIMESTAMP '2026-10-06'"
            ).fetchone()[0]
        finally:
            con.close()
        assert changed > 0
        after = outlook_of_day()
    assert len(before) == 6  # three services, two horizons
    assert after == before


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """The same fleet with a daily outlook stored for six days (one ranged run, as a backfill
    computes them): the last day scores the earlier ones."""
    root = tmp_path_factory.mktemp("bottleneck_history")
    export = root / "fleet.om"
    _fleet(export)
    resources = pipeline_resources(root, [export])
    assets = list(build_defs().assets)
    with dg.DagsterInstance.ephemeral() as instance:
        for selection, first in (
            (["container_usage", "service_traffic"], "2026-09-28"),
            (["bottleneck_outlook"], "2026-10-04"),
        ):
            result = dg.materialize(
                assets,
                selection=selection,
                resources=resources,
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": first,
                    "dagster/asset_partition_range_end": "2026-10-09",
                },
            )
            assert result.success
    return result, root


def test_the_track_record_scores_the_stored_outlooks_against_persistence(history):
    result, root = history
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    record = con.execute(
        "SELECT as_of, service, horizon, method, origins, first_origin, last_origin, correct, "
        "brier, bottleneck_origins, caught, false_alarms FROM bottleneck_backtest"
    ).pl()
    said = con.execute(
        "SELECT as_of, service, bottleneck_class FROM bottleneck_outlook "
        "WHERE horizon = '24h' AND as_of < '2026-10-10'"
    ).pl()
    con.close()
    # Origins need a week of labels before them (the data starts 09-28) and their horizon
    # over: each day from 10-06 scores the 24 h outlooks stored since 10-05, one more a day;
    # no 7-day horizon has ended yet.
    origins = record.group_by("as_of").agg(pl.col("origins").unique()).sort("as_of")
    assert origins.rows() == [(datetime(2026, 10, d), [d - 5]) for d in range(6, 11)]
    assert set(record["horizon"]) == {"24h"}
    record = record.filter(pl.col("as_of") == datetime(2026, 10, 10))
    assert sorted(record.select("service", "method").rows()) == sorted(
        (s, m) for s in ("cart", "search", HOSTILE) for m in ("outlook", "persistence_7d")
    )
    assert set(record["origins"]) == {5}
    assert set(record["first_origin"]) == {datetime(2026, 10, 5)}
    assert set(record["last_origin"]) == {datetime(2026, 10, 9)}
    rows = {(r["service"], r["method"]): r for r in record.iter_rows(named=True)}
    # search is throttled every afternoon: cpu follows every origin, and last week repeats it.
    persistence = rows[("search", "persistence_7d")]
    assert (persistence["bottleneck_origins"], persistence["correct"]) == (5, 5)
    assert persistence["brier"] == pytest.approx(0.5)
    # The outlook is scored on what it stored, not on a replay.
    stored = said.filter(pl.col("service") == "search")
    assert rows[("search", "outlook")]["correct"] == (stored["bottleneck_class"] == "cpu").sum()
    # Nothing follows on the service with traffic only: persistence is sure and right.
    quiet = rows[(HOSTILE, "persistence_7d")]
    assert (quiet["correct"], quiet["brier"], quiet["false_alarms"]) == (5, 0.0, 0)
    # One materialisation per day; the metadata describes the last one.
    mat = result.asset_materializations_for_node("bottleneck_outlook")[-1]
    table = mat.metadata["track_record"].value
    assert "too little history" in table
    assert "&lt;script&gt;" in table and "<script>" not in table
    assert mat.metadata["track_record/persistence_7d/origins"].value == 15

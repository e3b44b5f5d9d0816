"""Rightsizing recommender: OOM, trend, short history, HPA, gaps, quantities, policies, patches,
the risky-cut check and the price book. Synthetic containers; no research data needed."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from capacity_pipelines.rightsizing import (
    ForecastAwareSettings,
    ForecastAwareStrategy,
    PolicyError,
    load_compute_prices,
    load_policy,
    recommend_from_warehouse,
    recommend_usage,
    risky_cuts,
)
from capacity_pipelines.rightsizing.outputs import ranked_markdown, workload_patches
from capacity_pipelines.rightsizing.policy import LimitsRule
from capacity_pipelines.rightsizing.quantities import (
    format_cpu,
    format_memory,
    parse_cpu,
    parse_memory,
    round_cpu_up,
    round_memory_up,
)
from capacity_pipelines.rightsizing.workloads import Workload

MIB = 1024**2
GIB = 1024**3
START = dt.datetime(2025, 3, 3)
STEP_MIN = 15
PER_DAY = 24 * 60 // STEP_MIN


def usage_frame(
    container_id: str, days: float, cpu, memory, seed: int = 0, **extra
) -> pl.DataFrame:
    """One container's U rows every 15 min; `cpu` / `memory` map the step index to a value."""
    rng = np.random.default_rng(seed)
    n = int(days * PER_DAY)
    index = np.arange(n)
    data = {
        "container_id": [container_id] * n,
        "ts": [START + dt.timedelta(minutes=STEP_MIN * int(i)) for i in index],
        "cpu_cores": np.maximum(cpu(index) + 0.01 * rng.standard_normal(n), 0.0),
        "memory_bytes": np.maximum(memory(index) + 2 * MIB * rng.standard_normal(n), 0.0),
    }
    for name, values in extra.items():
        data[name] = values(index)
    return pl.DataFrame(data)


def daily(level: float, swing: float):
    return lambda i: level + swing * np.sin(2 * np.pi * i / PER_DAY)


def spec_frame(rows: dict[str, tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "container_id": list(rows),
            "cpu_request": [r[0] for r in rows.values()],
            "cpu_limit": [r[1] for r in rows.values()],
            "memory_request": [r[2] for r in rows.values()],
            "memory_limit": [r[3] for r in rows.values()],
        },
        schema={
            "container_id": pl.String,
            "cpu_request": pl.Float64,
            "cpu_limit": pl.Float64,
            "memory_request": pl.Float64,
            "memory_limit": pl.Float64,
        },
    )


@pytest.fixture(scope="module")
def fleet() -> pl.DataFrame:
    """One recommendation run over the shapes the issue asks about (forecasts run once)."""
    usage = pl.concat(
        [
            usage_frame("shop/steady/app", 21, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i),
            usage_frame(
                "shop/rising/app",
                21,
                lambda i: 0.1 + 0.4 * i / (21 * PER_DAY) + 0.05 * np.sin(2 * np.pi * i / PER_DAY),
                lambda i: 300 * MIB + 0 * i,
                seed=1,
            ),
            usage_frame("shop/young/app", 7, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i, 2),
            usage_frame("shop/newborn/app", 2, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i, 3),
            usage_frame("shop/tiny/app", 0.5, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i, 4),
            usage_frame(
                "shop/gappy/app", 21, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i, 5
            ).filter(pl.int_range(pl.len()) % 10 < 6),
        ]
    )
    spec = spec_frame(
        {
            "shop/steady/app": (2.0, 4.0, 2 * GIB, 2 * GIB),
            "shop/rising/app": (0.2, None, 512 * MIB, 512 * MIB),
            "shop/young/app": (2.0, None, 2 * GIB, 2 * GIB),
            "shop/newborn/app": (2.0, None, 2 * GIB, 2 * GIB),
            "shop/tiny/app": (2.0, None, 2 * GIB, 2 * GIB),
        }
    )
    return recommend_usage(usage, spec)


def row(frame: pl.DataFrame, container_id: str) -> dict:
    return frame.filter(pl.col("container_id") == container_id).row(0, named=True)


def test_every_container_is_listed_and_the_table_is_ranked(fleet: pl.DataFrame):
    assert fleet.height == 6
    assert fleet["rank"].to_list() == list(range(1, 7))
    groups = {"risk": 0, "save": 1, "unpriced": 2, "no_change": 3, "insufficient_data": 4}
    order = [groups[k] for k in fleet["kind"]]
    assert order == sorted(order)
    assert fleet["kind"][0] == "risk"  # the rising container is sized up: a risk comes first
    tiny = row(fleet, "shop/tiny/app")
    assert tiny["status"] == "insufficient_data" and tiny["kind"] == "insufficient_data"
    assert tiny["confidence"] == 0.0 and "insufficient data" in tiny["rationale"]
    assert tiny["cpu_request"] == 2.0  # keeps the current spec, listed, not skipped
    assert "no current requests known" in row(fleet, "shop/gappy/app")["rationale"]
    table = ranked_markdown(fleet, top=3)
    assert table.count("\n") == 4 and "shop/rising/app" in table


def test_steady_container_is_cut_to_its_load_and_saves_money(fleet: pl.DataFrame):
    steady = row(fleet, "shop/steady/app")
    assert steady["kind"] == "save" and steady["forecast_used"]
    # p95 of 0.3 + 0.1 sin(.) is ~0.4 cores: request between that and a modest margin
    assert 0.38 <= steady["cpu_request"] <= 0.55
    # above the observed peak, with less than KRR's 15 % on a flat working set
    assert 400 * MIB * 1.01 <= steady["memory_request"] <= 400 * MIB * 1.15
    assert steady["cpu_limit"] is None  # default policy: no CPU limit
    assert steady["memory_limit"] == steady["memory_request"]
    prices = load_compute_prices()
    price = prices.price()
    expected = prices.monthly_usd(2.0, 2 * GIB, price) - prices.monthly_usd(
        steady["cpu_request"], steady["memory_request"], price
    )
    assert steady["monthly_saving_usd"] == pytest.approx(expected)
    assert steady["price_id"] == price.price_id
    assert steady["confidence"] > 0.8


def test_rising_trend_is_sized_for_the_coming_week(fleet: pl.DataFrame):
    rising = row(fleet, "shop/rising/app")
    assert rising["forecast_used"] and "forecast" in rising["rationale"]
    # the last day's p95 is ~0.55 cores; a backward-looking p95 over three weeks is ~0.5
    assert rising["cpu_request"] >= 0.55
    assert rising["kind"] == "risk" and rising["monthly_saving_usd"] < 0  # sizing up costs


def test_a_week_of_data_gets_lower_confidence_and_two_days_no_forecast(fleet: pl.DataFrame):
    steady, young, newborn = (row(fleet, f"shop/{n}/app") for n in ("steady", "young", "newborn"))
    assert young["status"] == "ok" and young["forecast_used"]
    assert newborn["confidence"] < young["confidence"] < steady["confidence"]
    assert young["confidence"] <= 0.5  # 7 of the 14 days that earn full length confidence
    assert not newborn["forecast_used"] and "no forecast" in newborn["rationale"]
    # lower confidence widens the CPU margin on the same load
    assert newborn["cpu_request"] >= young["cpu_request"] >= steady["cpu_request"] - 0.011


def test_missing_samples_lower_confidence_but_still_recommend(fleet: pl.DataFrame):
    gappy, steady = row(fleet, "shop/gappy/app"), row(fleet, "shop/steady/app")
    assert gappy["status"] == "ok"
    assert gappy["confidence"] < steady["confidence"]
    assert "missing" in gappy["rationale"]
    assert gappy["cpu_request"] == pytest.approx(steady["cpu_request"], abs=0.06)


def warehouse_rows(
    workload: str, pods: list[str], days: float, cpu, memory, **columns
) -> pl.DataFrame:
    """`container_usage`-shaped rows, one per pod per 15-min step."""
    n = int(days * PER_DAY)
    frames = []
    for p, pod in enumerate(pods):
        index = np.arange(n)
        data = {
            "cluster": "c1",
            "namespace": "shop",
            "workload": workload,
            "pod": pod,
            "container": "app",
            "ts": [START + dt.timedelta(minutes=STEP_MIN * int(i)) for i in index],
            "cpu_cores": cpu(index, p),
            "memory_working_set_bytes": memory(index, p),
            "cpu_throttled_ratio": np.zeros(n),
            "cpu_request_cores": np.full(n, 1.0),
            "cpu_limit_cores": np.full(n, np.nan),
            "memory_request_bytes": np.full(n, 512.0 * MIB),
            "memory_limit_bytes": np.full(n, 512.0 * MIB),
            "restarts": np.zeros(n),
            "oom_killed": np.zeros(n),
        }
        for name, values in columns.items():
            data[name] = values(index, p)
        frames.append(pl.DataFrame(data).with_columns(pl.col("cpu_limit_cores").fill_nan(None)))
    return pl.concat(frames)


def test_oom_history_bumps_memory_above_the_limit_it_died_at():
    usage = warehouse_rows(
        "cache",
        ["cache-a", "cache-b"],
        2,
        lambda i, p: np.full(i.size, 0.2),
        lambda i, p: np.full(i.size, 480.0 * MIB),
        oom_killed=lambda i, p: (i == 50).astype(float) * (p == 0),
        restarts=lambda i, p: (i == 50).astype(float) * (p == 0),
    )
    frame = recommend_from_warehouse(usage)
    cache = frame.row(0, named=True)
    assert cache["container_id"] == "c1/shop/cache/app"
    assert cache["oom_kills"] == 1 and cache["kind"] == "risk" and frame["rank"][0] == 1
    # VPA's OOM bump: max(1.2 x 512Mi, 512Mi + 100Mi)
    assert cache["memory_request"] >= 1.2 * 512 * MIB
    assert cache["memory_limit"] >= cache["memory_request"]
    assert "OOM" in cache["rationale"]
    assert cache["current_memory_limit"] == 512 * MIB  # the latest spec from the warehouse rows


def test_throttled_container_is_not_cut_below_its_request():
    usage = warehouse_rows(
        "encoder",
        ["encoder-a"],
        2,
        lambda i, p: np.full(i.size, 0.5),  # pinned at its 0.5 limit: the real demand is unknown
        lambda i, p: np.full(i.size, 300.0 * MIB),
        cpu_throttled_ratio=lambda i, p: np.full(i.size, 0.6),
        cpu_limit_cores=lambda i, p: np.full(i.size, 0.5),
    )
    encoder = recommend_from_warehouse(usage).row(0, named=True)
    assert encoder["throttled_p90"] == pytest.approx(0.6)
    assert encoder["cpu_request"] >= 1.0 and encoder["kind"] == "risk"
    assert "throttled" in encoder["rationale"]


def test_hpa_workload_is_sized_for_per_replica_load_at_target_utilisation():
    # total load follows the day (1 to 4 cores); the HPA keeps ~0.35 cores per pod by running
    # 3 to 12 replicas. Pods that scaled in have no samples then (they no longer exist).
    days = 2
    n = days * PER_DAY
    index = np.arange(n)
    total = 2.5 + 1.5 * np.sin(2 * np.pi * index / PER_DAY)
    replicas = np.clip(np.ceil(total / 0.35), 3, 12)
    pods = [f"api-{k}" for k in range(12)]
    usage = warehouse_rows(
        "api",
        pods,
        days,
        lambda i, p: total / replicas,
        lambda i, p: np.full(i.size, 200.0 * MIB),
    ).filter(
        pl.col("pod").str.extract(r"(\d+)$").cast(pl.Int64)
        < pl.lit(pl.Series(np.tile(replicas, len(pods))))
    )
    replica_frame = pl.DataFrame(
        {
            "cluster": "c1",
            "namespace": "shop",
            "workload": "api",
            "ts": [START + dt.timedelta(minutes=STEP_MIN * int(i)) for i in index],
            "replicas": replicas,
        }
    )
    policy = load_policy(None)
    api = recommend_from_warehouse(usage, replica_frame, policy=policy).row(0, named=True)
    assert api["hpa"] and "HPA" in api["rationale"]
    per_replica = float(np.mean((total / replicas)[replicas > 3]))
    # at most the low-confidence margin (two days of history) on top of load / target
    assert per_replica / 0.7 <= api["cpu_request"] <= per_replica / 0.7 * 1.3 + 0.01
    assert api["cpu_request"] < 1.0  # nowhere near the 4-core total
    assert api["replicas"] == pytest.approx(replicas.mean())


def test_warehouse_gaps_are_dropped_and_an_all_gap_container_is_listed():
    usage = warehouse_rows(
        "web", ["web-a"], 2, lambda i, p: np.full(i.size, 0.2), lambda i, p: np.full(i.size, 1e8)
    )
    gaps = usage.with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0)
        .then(None)
        .otherwise(pl.col("cpu_cores"))
        .alias("cpu_cores")
    )
    ghost = warehouse_rows(
        "ghost",
        ["ghost-a"],
        1,
        lambda i, p: np.full(i.size, np.nan),
        lambda i, p: np.full(i.size, np.nan),
    )
    frame = recommend_from_warehouse(pl.concat([gaps, ghost]))
    assert sorted(frame["container_id"]) == ["c1/shop/ghost/app", "c1/shop/web/app"]
    assert row(frame, "c1/shop/ghost/app")["status"] == "insufficient_data"
    web = row(frame, "c1/shop/web/app")
    assert web["status"] == "ok" and "missing" in web["rationale"]


@pytest.mark.parametrize(
    ("cores", "rounded", "text"),
    [
        (0.0001, 0.01, "10m"),
        (0.241, 0.25, "250m"),
        (0.25, 0.25, "250m"),
        (1.0, 1.0, "1"),
        (1.01, 1.05, "1050m"),
        (2.0, 2.0, "2"),
    ],
)
def test_cpu_rounds_up_to_kubernetes_quantities(cores: float, rounded: float, text: str):
    assert round_cpu_up(cores) == pytest.approx(rounded)
    assert format_cpu(round_cpu_up(cores)) == text
    assert parse_cpu(text) == pytest.approx(rounded)


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (500 * MIB, "512Mi"),
        (512 * MIB, "512Mi"),
        (1 * GIB, "1Gi"),
        (1 * GIB + 1, "1088Mi"),
        (2 * GIB - 5, "2Gi"),
        (1, "16Mi"),
    ],
)
def test_memory_rounds_up_to_kubernetes_quantities(nbytes: float, text: str):
    assert format_memory(round_memory_up(nbytes)) == text
    assert parse_memory(text) >= nbytes
    assert parse_memory("1G") == 1e9 and format_memory(None) is None


def test_limits_policies_and_their_precedence(tmp_path: Path):
    assert LimitsRule("no_cpu_limit").limits(0.5, 1e9) == (None, 1e9)
    assert LimitsRule("ratio", 2.0, 1.5).limits(0.5, 1e9) == (1.0, 1.5e9)
    assert LimitsRule("guaranteed").limits(0.5, 1e9) == (0.5, 1e9)
    path = tmp_path / "policy.yaml"
    path.write_text(
        "default: {mode: ratio, cpu_factor: 3}\n"
        "namespaces:\n  batch: {mode: guaranteed}\n"
        "workloads:\n  batch/etl: {mode: no_cpu_limit, hpa_target_utilization: 0.5}\n"
    )
    policy = load_policy(path)
    assert policy.rule("shop", "api").limits(1.0, 1e9) == (3.0, 1.5e9)
    assert policy.rule("batch", "report").mode == "guaranteed"
    etl = policy.rule("batch", "etl")
    assert etl.mode == "no_cpu_limit" and etl.hpa_target_utilization == 0.5
    usage = usage_frame("batch/report/app", 2, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i)
    report = recommend_usage(usage, policy=policy).row(0, named=True)
    assert report["cpu_limit"] == report["cpu_request"]
    assert report["memory_limit"] == report["memory_request"]
    assert report["limits_policy"].startswith("Guaranteed")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("default: {mode: burstable}\n", "mode must be one of"),
        ("default: {mode: ratio, cpu_factor: 0.5}\n", "cpu_factor must be a number >= 1"),
        ("namespaces: {a: {colour: red}}\n", "unknown keys"),
        ("limits: {}\n", "unknown top-level keys"),
    ],
)
def test_bad_policy_files_are_refused(tmp_path: Path, text: str, message: str):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_patches_hold_only_changed_fields_as_strategic_merge_yaml():
    usage = pl.concat(
        [
            usage_frame("shop/api/app", 2, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i),
            usage_frame("shop/api/sidecar", 2, daily(0.02, 0.0), lambda i: 100 * MIB + 0 * i),
            usage_frame("shop/db/postgres", 2, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i),
        ]
    )
    first = recommend_usage(usage)
    api = row(first, "shop/api/app")
    sidecar = row(first, "shop/api/sidecar")
    # the sidecar already runs at the recommendation; the app has a CPU limit to drop
    spec = spec_frame(
        {
            "shop/api/app": (2.0, 4.0, api["memory_request"], api["memory_limit"]),
            "shop/api/sidecar": (
                sidecar["cpu_request"],
                None,
                sidecar["memory_request"],
                sidecar["memory_limit"],
            ),
        }
    )
    patch_set = workload_patches(recommend_usage(usage, spec))
    assert patch_set.refused == []
    patches = {w.key: p.text for w, p in patch_set.by_workload().items()}
    assert set(patches) == {"shop/api", "shop/db"}
    text = patches["shop/api"]
    assert "kubectl patch deployment api -n shop --type strategic" in text
    assert patch_set.by_workload()[Workload("shop", "api")].file_name == "shop__api.yaml"
    body = yaml.safe_load(text)
    containers = body["spec"]["template"]["spec"]["containers"]
    assert containers == [
        {
            "name": "app",
            "resources": {
                "requests": {"cpu": api["cpu_request_quantity"]},
                "limits": {"cpu": None},
            },
        }
    ]
    db = yaml.safe_load(patches["shop/db"])["spec"]["template"]["spec"]["containers"][0]
    assert db["name"] == "postgres"
    assert set(db["resources"]["requests"]) == {"cpu", "memory"}
    assert db["resources"]["limits"] == {"memory": db["resources"]["requests"]["memory"]}


def test_risky_cut_check_flags_big_cuts_at_low_confidence_only():
    frame = pl.DataFrame(
        {
            "container_id": ["a", "b", "c", "d"],
            "status": ["ok", "ok", "ok", "insufficient_data"],
            "confidence": [0.3, 0.9, 0.3, 0.0],
            "cpu_request": [0.2, 0.2, 0.9, 1.0],
            "current_cpu_request": [1.0, 1.0, 1.0, 1.0],
            "memory_request": [1e9, 1e9, 1e9, 1e9],
            "current_memory_request": [1e9, 1e9, None, 1e9],
        }
    )
    flagged = risky_cuts(frame)
    assert flagged["container_id"].to_list() == ["a"]
    assert flagged["cpu_cut_share"][0] == pytest.approx(0.8)


def test_compute_price_book_has_dated_sourced_rates():
    book = load_compute_prices()
    for name in ("aws/m6i", "aws/m7i", "gcp/n2", "gcp/e2"):
        price = book.price(name)
        assert 0.005 < price.usd_per_vcpu_hour < 0.1 and 0.001 < price.usd_per_gib_hour < 0.01
        assert price.source
    assert book.hours_per_month == 730
    n2 = book.price("gcp/n2")
    assert book.monthly_usd(1.0, GIB, n2) == pytest.approx((0.031611 + 0.004237) * 730)
    with pytest.raises(ValueError, match="no compute price"):
        book.price("aws/m6i", dt.date(2019, 1, 1))


def test_strategy_settings_are_declared_and_change_the_result():
    # too short to backtest: the profile's fallback percentile decides
    short = usage_frame("shop/api/app", 2, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i)
    balanced = recommend_usage(short).row(0, named=True)["cpu_request"]
    aggressive = ForecastAwareStrategy(ForecastAwareSettings(profile="aggressive"))
    assert recommend_usage(short, strategy=aggressive).row(0, named=True)["cpu_request"] < balanced
    # long enough to backtest: only the candidates named in the settings compete
    usage = usage_frame("shop/api/app", 7, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i)
    p80 = ForecastAwareStrategy(ForecastAwareSettings(candidates=("p80/3d",)))
    only = recommend_usage(usage, strategy=p80).row(0, named=True)
    assert only["recommender"] == "p80/3d" and "p80/3d chosen by backtest" in only["rationale"]
    assert only["cpu_request"] < recommend_usage(usage).row(0, named=True)["cpu_request"]


def test_rightsizing_package_does_not_import_dagster():
    code = (
        "import sys, capacity_pipelines.rightsizing, capacity_pipelines.rightsizing.cli;"
        " sys.exit('dagster' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_gappy_container_loses_only_its_own_forecast():
    steady = usage_frame("jobs/api/app", 4, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i)
    # a batch job that runs one day in three: most hours of its span have no sample
    batch = usage_frame("jobs/nightly/app", 9, daily(0.5, 0.1), lambda i: 400 * MIB + 0 * i)
    batch = batch.filter((pl.int_range(pl.len()) // PER_DAY) % 3 == 0)
    frame = recommend_usage(pl.concat([steady, batch]))
    nightly, api = row(frame, "jobs/nightly/app"), row(frame, "jobs/api/app")
    assert nightly["status"] == "ok" and not nightly["forecast_used"]
    assert "of hours observed" in nightly["rationale"]
    assert api["forecast_used"]


def test_file_contract_uses_pods_and_replicas_columns_for_hpa():
    n = 2 * PER_DAY
    index = np.arange(n)
    replicas = np.where((index // 16) % 2 == 0, 2.0, 4.0)
    rows = []
    for k in range(4):
        live = replicas > k
        rows.append(
            pl.DataFrame(
                {
                    "container_id": "shop/api/app",
                    "pod": f"api-{k}",
                    "ts": [START + dt.timedelta(minutes=STEP_MIN * int(i)) for i in index[live]],
                    "cpu_cores": np.full(int(live.sum()), 0.28),
                    "memory_bytes": np.full(int(live.sum()), 300.0 * MIB),
                    "replicas": replicas[live],
                }
            )
        )
    api = recommend_usage(pl.concat(rows)).row(0, named=True)
    assert api["hpa"] and api["replicas"] == pytest.approx(replicas.mean())
    assert 0.4 <= api["cpu_request"] <= 0.4 * 1.3 + 0.01  # 0.28 cores per replica at 70 %


def test_rollout_surge_pods_are_not_mistaken_for_an_hpa():
    # one replica; a rollout runs the new pod beside the old one for an hour, then replaces it
    old = usage_frame("shop/api/app", 2, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i)
    old = old.with_columns(
        pl.when(pl.int_range(pl.len()) < PER_DAY + 4)
        .then(pl.lit("api-old"))
        .otherwise(pl.lit("api-new"))
        .alias("pod")
    )
    surge = old.filter(pl.int_range(pl.len()).is_between(PER_DAY, PER_DAY + 3))
    usage = pl.concat([old, surge.with_columns(pl.lit("api-new").alias("pod"))])
    api = recommend_usage(usage).row(0, named=True)
    assert not api["hpa"] and "HPA" not in api["rationale"]
    assert api["cpu_request"] >= 0.38  # sized for the per-pod p95, not a per-replica mean


def test_a_proven_memory_limit_is_not_raised_without_an_oom():
    usage = usage_frame("shop/api/app", 2, daily(0.3, 0.1), lambda i: 900 * MIB + 0 * i)
    spec = spec_frame({"shop/api/app": (1.0, None, 1.0 * GIB, 1.0 * GIB)})
    api = recommend_usage(usage, spec).row(0, named=True)
    assert api["memory_request"] == GIB and "capped at the current limit" in api["rationale"]
    # the same usage pressed against a smaller limit is sized above it
    tight = spec_frame({"shop/api/app": (1.0, None, 900.0 * MIB, 900.0 * MIB)})
    squeezed = recommend_usage(usage, tight).row(0, named=True)
    assert squeezed["memory_request"] > 900 * MIB and squeezed["kind"] == "risk"
    assert squeezed["rationale"].startswith("sizes memory up")


def test_the_example_policy_file_loads():
    example = Path(__file__).resolve().parents[1] / "assets/rightsizing/limits_policy.example.yaml"
    policy = load_policy(example)
    assert policy.rule("payments", "ledger").mode == "guaranteed"
    assert policy.rule("batch", "etl").limits(1.0, 1e9) == (2.0, 1.5e9)
    assert policy.rule("agents", "planner").hpa_target_utilization == 0.6
    assert policy.rule("shop", "api").mode == "no_cpu_limit"


def test_changes_too_small_to_roll_out_get_no_patch():
    usage = usage_frame("shop/api/app", 2, daily(0.3, 0.1), lambda i: 400 * MIB + 0 * i)
    first = recommend_usage(usage).row(0, named=True)
    # current requests 3 % above the recommendation: cheaper by less than 5 %, not worth it
    spec = spec_frame(
        {
            "shop/api/app": (
                first["cpu_request"] * 1.03,
                None,
                first["memory_request"] * 1.03,
                first["memory_request"] * 1.03,
            )
        }
    )
    frame = recommend_usage(usage, spec)
    assert frame["kind"].to_list() == ["no_change"]
    assert workload_patches(frame).patches == []


def test_oom_kills_are_events_not_the_persistent_status():
    # kube-state-metrics keeps "last terminated: OOMKilled" until the next termination
    flags = {0: (50, 60), 1: (20, 200), 2: (30, 200)}
    kills = {0: (50,), 1: (20,), 2: (30, 70)}  # pod c is OOM-killed again while flagged
    usage = warehouse_rows(
        "cache",
        ["cache-a", "cache-b", "cache-c"],
        2,
        lambda i, p: np.full(i.size, 0.2),
        lambda i, p: np.full(i.size, 480.0 * MIB),
        oom_killed=lambda i, p: ((i >= flags[p][0]) & (i < flags[p][1])).astype(float),
        restarts=lambda i, p: np.isin(i, kills[p]).astype(float),
    )
    assert recommend_from_warehouse(usage).row(0, named=True)["oom_kills"] == 4
    # without restart counts: the first sample of each run of flags per pod
    runs = (
        usage.drop("restarts")
        .rename({"memory_working_set_bytes": "memory_bytes"})
        .select(
            pl.concat_str(["namespace", "workload", "container"], separator="/").alias(
                "container_id"
            ),
            "pod",
            "ts",
            "cpu_cores",
            "memory_bytes",
            "oom_killed",
        )
    )
    assert recommend_usage(runs).row(0, named=True)["oom_kills"] == 3

"""Bottleneck labels, features and classifier on hand-made windows (pure, no Dagster)."""

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from capacity_pipelines.bottlenecks.classifier import (
    BottleneckClassifier,
    most_likely,
    persistence_predict,
    rules_predict,
)
from capacity_pipelines.bottlenecks.features import feature_columns, origin_features
from capacity_pipelines.bottlenecks.labels import available_classes, label_windows
from capacity_pipelines.bottlenecks.outlook import (
    VALIDATION_SHARE,
    build_outlook,
    calibrated,
    choose_method,
    evaluate,
    keeps_alarms,
    probability_problems,
    unexplained,
)
from capacity_pipelines.bottlenecks.signals import (
    KEY,
    container_signals,
    llm_signals,
    service_windows,
    with_baselines,
)
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_CLASSES, BOTTLENECK_TABLE, HORIZONS

T0 = datetime(2026, 10, 1)


def _label(**signals) -> tuple[str, str]:
    row = pl.DataFrame([{"namespace": "ns", "service": "svc", "window_start": T0, **signals}])
    out = label_windows(row).row(0, named=True)
    return out["bottleneck_class"], out["evidence"]


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        # memory: near the limit, or an OOM kill; not at 80 %
        ({"memory_limit_util_max": 0.97, "memory_limit_bytes": 2**30}, "memory"),
        ({"memory_limit_util_max": 0.50, "oom_kills": 1.0}, "memory"),
        ({"memory_limit_util_max": 0.80, "oom_kills": 0.0}, "none"),
        # cpu: throttled a quarter of periods or more, or used >= 90 % of the limit
        ({"cpu_throttled_ratio_max": 0.40, "cpu_limit_cores": 0.5}, "cpu"),
        ({"cpu_throttled_ratio_max": 0.05, "cpu_limit_util_max": 0.95}, "cpu"),
        ({"cpu_throttled_ratio_max": 0.10, "cpu_limit_util_max": 0.60}, "none"),
        # io_database: latency 3x usual while CPU stays at its usual level
        ({"latency_ratio": 4.0, "cpu_ratio": 0.8}, "io_database"),
        ({"latency_ratio": 4.0, "cpu_ratio": 2.5}, "none"),  # CPU rose with it: not waiting
        ({"latency_ratio": 2.0, "cpu_ratio": 0.8}, "none"),
        # queueing: twice the usual requests in flight with latency up by half
        ({"in_flight_ratio": 3.0, "latency_ratio": 2.0, "in_flight_requests": 90.0}, "queueing"),
        ({"in_flight_ratio": 3.0, "latency_ratio": 1.0, "in_flight_requests": 90.0}, "none"),
        # llm_provider: 429s, quota, or provider latency dominating
        ({"llm_rate_limited_share": 0.05}, "llm_provider"),
        ({"llm_quota_ratio": 0.95}, "llm_provider"),
        ({"llm_latency_share": 0.9, "latency_ratio": 2.0}, "llm_provider"),
        ({"llm_rate_limited_share": 0.001, "llm_quota_ratio": 0.5}, "none"),
        ({"llm_latency_share": 0.9, "latency_ratio": 1.0}, "none"),  # slow as usual: no episode
        # network
        ({"network_util_max": 0.9}, "network"),
        ({"network_util_max": 0.5}, "none"),
    ],
)
def test_each_rule_fires_only_on_its_window(signals, expected):
    cls, evidence = _label(**signals)
    assert cls == expected
    assert bool(evidence) == (expected != "none")


def test_a_full_resource_wins_over_its_symptoms_and_evidence_names_it():
    cls, evidence = _label(
        cpu_throttled_ratio_max=0.38,
        cpu_container="envoy",
        cpu_limit_cores=0.5,
        in_flight_ratio=4.0,
        latency_ratio=3.0,
    )
    assert cls == "cpu"
    assert evidence == "envoy throttled 38% of CFS periods at its 0.5 cores CPU limit"
    cls, evidence = _label(
        memory_limit_util_max=0.99,
        memory_container="summarizer",
        memory_limit_bytes=1.5 * 2**30,
        cpu_throttled_ratio_max=0.5,
    )
    assert cls == "memory" and "summarizer" in evidence and "1.5Gi" in evidence


def test_missing_families_degrade_to_fewer_classes_with_a_note():
    windows = pl.DataFrame(
        {
            "namespace": ["ns"] * 2,
            "service": ["svc"] * 2,
            "window_start": [T0, T0 + timedelta(hours=1)],
            "cpu_throttled_ratio_max": [0.5, 0.0],
        }
    )
    classes, notes = available_classes(windows)
    assert classes == ("cpu", "none")
    assert {n.split(":")[0] for n in notes} == {
        "memory",
        "io_database",
        "llm_provider",
        "network",
        "queueing",
    }
    assert label_windows(windows)["bottleneck_class"].to_list() == ["cpu", "none"]


def test_container_signals_keep_the_saturated_container_and_its_limit():
    ts = [T0 + timedelta(minutes=5 * i) for i in range(1, 13)]
    rows = []
    for t in ts:
        for container, throttled, limit in (("app", 0.05, 2.0), ("envoy", 0.6, 0.5)):
            rows.append(
                {
                    "cluster": "c",
                    "namespace": "ns",
                    "workload": "gw",
                    "pod": "gw-1",
                    "container": container,
                    "ts": t,
                    "cpu_cores": limit * 0.9,
                    "memory_working_set_bytes": 100.0,
                    "cpu_throttled_ratio": throttled,
                    "cpu_request_cores": limit,
                    "cpu_limit_cores": limit,
                    "memory_request_bytes": 200.0,
                    "memory_limit_bytes": 400.0,
                    "restarts": 0.0,
                    "oom_killed": 0.0,
                }
            )
    out = container_signals(pl.DataFrame(rows))
    assert out.height == 1  # twelve 5-minute steps ending within one hour
    row = out.row(0, named=True)
    assert row["cpu_container"] == "envoy" and row["cpu_limit_cores"] == 0.5
    assert row["cpu_throttled_ratio_max"] == pytest.approx(0.6)
    assert row["memory_limit_util_max"] == pytest.approx(0.25)
    assert row["cpu_cores"] == pytest.approx(0.9 * 2.5)


def test_warehouse_read_day_by_day_gives_the_signals_of_the_whole_window(tmp_path):
    """read_inputs cuts the usage table into days to bound memory; the rows must not change."""
    import duckdb

    from capacity_pipelines.bottlenecks.outlook import read_inputs

    rng = np.random.default_rng(5)
    steps = [T0 + timedelta(minutes=5 * i) for i in range(1, 3 * 288 + 1)]  # 3 days, 5-min
    usage = pl.DataFrame(
        [
            {
                "cluster": "c",
                "namespace": "ns",
                "workload": workload,
                "pod": f"{workload}-{pod}",
                "container": "app",
                "ts": t,
                "cpu_cores": float(rng.uniform(0.1, 1.0)),
                "memory_working_set_bytes": float(rng.uniform(100, 400)),
                "cpu_throttled_ratio": float(rng.uniform(0, 0.3)),
                "cpu_request_cores": 0.5,
                "cpu_limit_cores": 1.0,
                "memory_request_bytes": 200.0,
                "memory_limit_bytes": 400.0,
                "restarts": 0.0,
                "oom_killed": 0.0,
            }
            for t in steps
            for workload in ("api", "worker")
            for pod in (1, 2)
        ]
    )
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.execute("CREATE TABLE container_usage AS SELECT * FROM usage")
    as_of = T0 + timedelta(days=3)
    windows, runway = read_inputs(con, as_of, history_days=3)
    whole = service_windows(usage, pl.DataFrame(), pl.DataFrame())
    key = ["namespace", "service", "window_start"]
    assert runway is None
    assert windows.height == whole.height == 2 * 72  # two services, 72 hours, none lost at a cut
    got, want = windows.sort(key), whole.select(windows.columns).sort(key)
    for column in windows.columns:
        if got[column].dtype.is_float():
            assert np.allclose(got[column].to_numpy(), want[column].to_numpy(), equal_nan=True)
        else:
            assert got[column].equals(want[column]), column


def test_baseline_is_the_median_of_the_same_hour_on_previous_days():
    hours = 24 * 4
    in_flight = np.full(hours, 10.0)
    in_flight[[3, 27, 51]] = [10.0, 20.0, 30.0]  # 03:00 on days 1-3
    in_flight[75] = 60.0  # 03:00 on day 4
    windows = pl.DataFrame(
        {
            "namespace": "ns",
            "service": "svc",
            "window_start": [T0 + timedelta(hours=h) for h in range(hours)],
            "in_flight_requests": in_flight,
        }
    )
    out = with_baselines(windows)
    assert out["in_flight_ratio"][75] == pytest.approx(60.0 / 20.0)
    assert out["in_flight_ratio"][:24].is_null().all()  # no previous day yet


def test_token_quota_turns_into_an_llm_provider_label():
    tokens = pl.DataFrame(
        {
            "service": ["coder"] * 12,
            "provider": ["anthropic"] * 12,
            "model": ["claude-sonnet-4"] * 12,
            "ts": [T0 + timedelta(minutes=5 * i) for i in range(1, 13)],
            "input_tokens": [450_000.0] * 12,  # 90,000 per minute
            "output_tokens": [25_000.0] * 12,  # 5,000 per minute
        }
    )
    llm = llm_signals(tokens, {"anthropic/claude-sonnet-4": 100_000})
    assert llm["llm_tokens_per_minute"][0] == pytest.approx(95_000)
    assert llm["llm_quota_ratio"][0] == pytest.approx(0.95)
    windows = llm.with_columns(pl.lit("agents").alias("namespace"))
    assert label_windows(windows)["bottleneck_class"][0] == "llm_provider"


def _history(days: int = 14, seed: int = 3) -> pl.DataFrame:
    """Hourly windows: `batch` throttles 13:00-15:00 daily, `web` leaks memory over 3-day
    cycles, `db` stays quiet."""
    rng = np.random.default_rng(seed)
    hours = days * 24
    starts = [T0 + timedelta(hours=h) for h in range(hours)]
    hour = np.arange(hours) % 24
    frames = []
    for service in ("batch", "web", "db"):
        throttled = rng.uniform(0, 0.05, hours)
        memory = rng.uniform(0.3, 0.4, hours)
        if service == "batch":
            throttled = np.where((hour >= 13) & (hour < 15), 0.6, throttled)
        if service == "web":
            memory = 0.5 + 0.5 * (np.arange(hours) % 72) / 71
        frames.append(
            pl.DataFrame(
                {
                    "namespace": "ns",
                    "service": service,
                    "window_start": starts,
                    "cpu_throttled_ratio_max": throttled,
                    "cpu_limit_util_max": throttled,
                    "memory_limit_util_max": memory,
                }
            )
        )
    return pl.concat(frames)


def test_targets_come_from_the_future_and_features_only_from_the_past():
    labelled = label_windows(_history())
    features = origin_features(labelled, 24)
    at = features.filter(
        (pl.col("service") == "batch") & (pl.col("origin") == T0 + timedelta(days=3, hours=10))
    ).row(0, named=True)
    assert at["target"] == "cpu"
    assert at["expected_at"] == T0 + timedelta(days=3, hours=13)
    # Changing the future leaves the features at the origin unchanged.
    altered = labelled.with_columns(
        pl.when(pl.col("window_start") >= T0 + timedelta(days=3, hours=10))
        .then(0.0)
        .otherwise(pl.col("cpu_throttled_ratio_max"))
        .alias("cpu_throttled_ratio_max")
    )
    again = origin_features(
        label_windows(altered.drop("bottleneck_class", "evidence", "metrics")), 24
    )
    columns = feature_columns(features)
    key = (pl.col("service") == "batch") & (pl.col("origin") == at["origin"])
    assert features.filter(key).select(columns).equals(again.filter(key).select(columns))
    # The last day's origins have no complete horizon: no target.
    assert features.filter(pl.col("origin") > T0 + timedelta(days=13))["target"].null_count() > 0


def test_classifier_is_deterministic_and_learns_a_daily_episode():
    features = origin_features(label_windows(_history()), 24)
    split = T0 + timedelta(days=10)
    train = features.filter(pl.col("origin") + pl.duration(hours=24) <= split)
    test = features.filter((pl.col("origin") >= split) & pl.col("target").is_not_null())
    first = BottleneckClassifier().fit(train).predict_proba(test)
    second = BottleneckClassifier().fit(train).predict_proba(test)
    assert first.equals(second)
    assert first.columns == list(BOTTLENECK_CLASSES)
    assert np.allclose(first.sum_horizontal().to_numpy(), 1.0)
    predicted = [BOTTLENECK_CLASSES[i] for i in first.to_numpy().argmax(axis=1)]
    score = evaluate(test["target"].to_list(), predicted, "lightgbm")
    assert score.recall["cpu"] >= 0.7 and score.recall["memory"] >= 0.7


def test_rule_fallback_projects_a_memory_trend_and_recurrence():
    features = origin_features(label_windows(_history(days=4)), 24)
    last = features.filter(pl.col("origin") == features["origin"].max()).sort("service")
    probs = rules_predict(last)
    by_service = dict(zip(last["service"], probs.to_dicts(), strict=True))
    assert max(by_service["batch"], key=by_service["batch"].get) == "cpu"
    assert by_service["db"]["none"] == 1.0
    assert np.allclose(probs.sum_horizontal().to_numpy(), 1.0)


def test_rule_recurrence_is_measured_at_the_horizons_scale():
    # `spike` throttled for one hour six days ago; `daily` every afternoon.
    hours = 8 * 24
    starts = [T0 + timedelta(hours=h) for h in range(hours)]
    hour = np.arange(hours) % 24
    spike = np.full(hours, 0.01)
    spike[2 * 24 + 14] = 0.6
    daily = np.where((hour >= 13) & (hour < 15), 0.6, 0.01)
    windows = pl.concat(
        pl.DataFrame(
            {
                "namespace": "ns",
                "service": name,
                "window_start": starts,
                "cpu_throttled_ratio_max": values,
                "cpu_limit_util_max": values,
                "memory_limit_util_max": 0.3,
            }
        )
        for name, values in (("spike", spike), ("daily", daily))
    )
    labelled = label_windows(windows)
    predicted = {}
    for horizon in (24, 168):
        features = origin_features(labelled, horizon)
        last = features.filter(pl.col("origin") == features["origin"].max()).sort("service")
        predicted[horizon] = dict(
            zip(last["service"], most_likely(rules_predict(last)).to_list(), strict=True)
        )
        # the share of the week's horizon-long blocks that held cpu
        recurrence = dict(zip(last["service"], last["cpu_recurrence"], strict=True))
        if horizon == 24:
            assert recurrence["daily"] == 1.0 and recurrence["spike"] == pytest.approx(1 / 7)
    # One spike in a week is not a daily event, but it is a weekly one.
    assert predicted[24] == {"daily": "cpu", "spike": "none"}
    assert predicted[168] == {"daily": "cpu", "spike": "cpu"}


def test_outlook_falls_back_to_rules_on_thin_history_and_fills_the_table():
    windows = _history(days=2)
    outlook = build_outlook(windows, T0 + timedelta(days=2))
    table = outlook.table
    assert set(BOTTLENECK_TABLE.columns) <= set(table.columns)
    assert table.height == 3 * 2
    assert set(table["method"]) == {"rules"}
    assert any("rule-based outlook" in n for n in outlook.notes)
    assert table.filter(pl.col("bottleneck_class") != "none")["evidence"].str.len_chars().min() > 0


def test_outlook_without_container_metrics_still_runs():
    traffic = pl.DataFrame(
        {
            "cluster": "c",
            "namespace": "ns",
            "service": "api",
            "ts": [T0 + timedelta(minutes=5 * i) for i in range(1, 12 * 24 * 3)],
            "request_rate_rps": 5.0,
            "error_rate_rps": 0.0,
            "latency_p50_seconds": 0.1,
            "latency_p95_seconds": 0.3,
            "latency_p99_seconds": 0.5,
            "in_flight_requests": 2.0,
        }
    )
    windows = service_windows(pl.DataFrame(), traffic, pl.DataFrame())
    outlook = build_outlook(windows, T0 + timedelta(days=3))
    assert set(outlook.table["bottleneck_class"]) == {"none"}
    assert "memory: not labelled" in outlook.table["note"][0]


def test_evaluation_scores_by_hand():
    truth = ["cpu", "cpu", "none", "none", "memory"]
    predicted = ["cpu", "none", "none", "none", "cpu"]
    score = evaluate(truth, predicted, "lightgbm")
    assert score.labels == ["cpu", "memory", "none"]
    assert score.recall == {"cpu": 0.5, "memory": 0.0, "none": 1.0}
    # F1: cpu 2*(.5*.5)/1 = .5, memory 0, none 2*(2/3*1)/(5/3) = .8
    assert score.macro_f1 == pytest.approx((0.5 + 0.0 + 0.8) / 3)
    assert score.confusion.tolist() == [[1, 0, 1], [1, 0, 0], [0, 0, 2]]


def test_two_classes_train_a_binary_model_and_still_return_every_class():
    batch = label_windows(_history().filter(pl.col("service") == "batch"))
    features = origin_features(batch, 6)  # six hours ahead: some origins see no episode
    known = features.filter(pl.col("target").is_not_null())
    assert set(known["target"]) == {"cpu", "none"}
    proba = BottleneckClassifier().fit(known).predict_proba(known.tail(30))
    assert proba.columns == list(BOTTLENECK_CLASSES)
    assert np.allclose(proba.sum_horizontal().to_numpy(), 1.0)
    assert proba["memory"].max() == 0.0 and proba["cpu"].max() > 0.5


def test_trained_outlook_probabilities_sum_to_one_as_stored():
    outlook = build_outlook(_history(days=14), T0 + timedelta(days=14))
    # 24 h: the model, checked on the latest training origins; 7 d: two weeks leave too few
    # origins before the validation ones to check a model, so a simple method answers.
    methods = dict(outlook.table.select("horizon", "method").unique().iter_rows())
    assert methods["24h"] == "lightgbm" and methods["7d"] in ("rules", "persistence")
    assert probability_problems(outlook.table) == []
    assert unexplained(outlook.table).height == 0


def test_llm_429s_and_call_time_become_llm_provider_signals_when_exported():
    steps = [T0 + timedelta(minutes=5 * i) for i in range(1, 13)]
    tokens = pl.DataFrame(
        {
            "service": "coder",
            "provider": "anthropic",
            "model": "claude-sonnet-4",
            "ts": steps,
            "input_tokens": 1000.0,
            "output_tokens": 100.0,
            "requests": 100.0,
            "rate_limited_requests": 5.0,
            "operation_seconds": 2400.0,  # 8 LLM calls in flight on average
        }
    )
    traffic = pl.DataFrame(
        {
            "cluster": "c",
            "namespace": "agents",
            "service": "coder",
            "ts": steps,
            "request_rate_rps": 1.0,
            "error_rate_rps": 0.0,
            "latency_p50_seconds": 8.0,
            "latency_p95_seconds": 20.0,
            "in_flight_requests": 10.0,
        }
    )
    windows = service_windows(pl.DataFrame(), traffic, tokens)
    row = windows.row(0, named=True)
    assert row["llm_rate_limited_share"] == pytest.approx(0.05)
    assert row["llm_latency_share"] == pytest.approx(0.8)
    labelled = label_windows(windows).row(0, named=True)
    assert labelled["bottleneck_class"] == "llm_provider"
    assert labelled["evidence"] == "5.0% of LLM calls rate-limited (429)"
    assert "llm_provider" in available_classes(windows)[0]


def test_a_catalog_without_throttling_or_limits_labels_memory_only_with_a_note():
    steps = [T0 + timedelta(minutes=5 * i) for i in range(1, 13)]
    usage = pl.DataFrame(
        {
            "cluster": "c",
            "namespace": "ns",
            "workload": "api",
            "pod": "api-0",
            "container": "api",
            "ts": steps,
            "cpu_cores": 0.5,
            "memory_working_set_bytes": 990.0,
            "memory_limit_bytes": 1000.0,
        }
    )  # no cpu_throttled_ratio, cpu_limit_cores, restarts or oom_killed columns
    windows = service_windows(usage, pl.DataFrame(), pl.DataFrame())
    classes, notes = available_classes(windows)
    assert classes == ("memory", "none")
    assert any(n.startswith("cpu: not labelled") for n in notes)
    assert label_windows(windows)["bottleneck_class"].to_list() == ["memory"]


def test_forecast_runway_sets_expected_start_and_joins_the_evidence():
    as_of = T0 + timedelta(days=14)
    runway = pl.DataFrame(
        {
            "series_id": ["workload_memory:ns/web", "workload_cpu:ns/db"],
            "saturation_ts": [as_of + timedelta(hours=10), as_of + timedelta(days=3)],
        }
    )
    outlook = build_outlook(_history(days=14), as_of, runway).table
    web = outlook.filter((pl.col("service") == "web") & (pl.col("horizon") == "24h")).row(
        0, named=True
    )
    assert web["bottleneck_class"] == "memory"
    assert web["expected_at"] == as_of + timedelta(hours=10)
    assert web["evidence"].startswith("load forecast p90 reaches the memory capacity")
    assert "load_forecast.p90" in web["metrics"]


def test_queueing_evidence_names_a_scale_out():
    cls, evidence = _label(
        in_flight_ratio=4.0,
        latency_ratio=2.0,
        in_flight_requests=358.0,
        replicas_min=2.0,
        replicas_max=5.0,
    )
    assert cls == "queueing"
    assert evidence == "358 requests in flight (4.0x usual), latency 2.0x usual; replicas 2 -> 5"


def test_choose_method_follows_the_latest_training_origins_and_says_why():
    features = origin_features(label_windows(_history()), 24)
    train = features.filter(pl.col("target").is_not_null())
    method, why = choose_method(train, 24)
    # Re-derive the documented rule: score all three on each service's latest quarter of
    # training origins; best macro-F1 wins, then accuracy, then the model, rules, persistence.
    parts = []
    for _, group in train.sort("origin").group_by(KEY, maintain_order=True):
        n = group.height
        cut = group["origin"][next(i for i in range(n) if (i + 1) / n > 1 - VALIDATION_SHARE)]
        parts.append(
            (
                group.filter(pl.col("origin") + pl.duration(hours=24) <= cut),
                group.filter(pl.col("origin") >= cut),
            )
        )
    earlier = pl.concat([e for e, _ in parts])
    recent = pl.concat([r for _, r in parts]).sort(["origin", *KEY])
    recent_in_order = train.join(recent.select(*KEY, "origin"), on=[*KEY, "origin"])
    truth = recent_in_order["target"].to_list()
    model = BottleneckClassifier().fit(earlier).predict_proba(recent_in_order)
    scores = {
        "lightgbm": evaluate(truth, most_likely(model).to_list(), "m"),
        "rules": evaluate(truth, most_likely(rules_predict(recent_in_order)).to_list(), "r"),
        "persistence": evaluate(
            truth, most_likely(persistence_predict(recent_in_order)).to_list(), "p"
        ),
    }
    best = max((round(e.macro_f1, 9), e.accuracy) for e in scores.values())
    assert method == next(
        m for m, e in scores.items() if (round(e.macro_f1, 9), e.accuracy) == best
    )
    for name, e in (
        ("model", scores["lightgbm"]),
        ("rules", scores["rules"]),
        ("persistence", scores["persistence"]),
    ):
        assert f"{name} {e.macro_f1:.2f} ({e.accuracy:.0%} right)" in why
    assert choose_method(train, 24) == (method, why)  # deterministic
    # Too little history before the validation origins to train the model: it is not
    # checked, so only the simple methods compete, and the note says why.
    last = train["origin"].max()
    short = train.filter(pl.col("origin") >= last - timedelta(days=2))
    method, why = choose_method(short, 24)
    assert method in ("rules", "persistence")
    assert "the model not checked: before those origins" in why


def test_simple_methods_state_how_often_they_were_right_on_the_validation_origins():
    def always_cpu(frame: pl.DataFrame) -> pl.DataFrame:
        probs = {c: [0.0] * frame.height for c in BOTTLENECK_CLASSES}
        probs["cpu"] = [0.5] * frame.height
        probs["none"] = [0.5] * frame.height
        return pl.DataFrame(probs)

    recent = pl.DataFrame({"target": ["cpu", "cpu", "cpu", "none"]})
    probs = calibrated(always_cpu, recent, pl.DataFrame({"target": [None, None]}))
    # right 3 times in 4, plus one pseudo-count on cpu and one on none: 4/6 and 2/6
    assert probs["cpu"].to_list() == pytest.approx([4 / 6] * 2)
    assert probs["none"].to_list() == pytest.approx([2 / 6] * 2)
    assert probs.select(BOTTLENECK_CLASSES).sum_horizontal().to_list() == pytest.approx([1, 1])
    # Wrong most of the time: `none` becomes the most likely class.
    wrong = pl.DataFrame({"target": ["none", "none", "none", "cpu"]})
    assert most_likely(calibrated(always_cpu, wrong, recent.head(1))).to_list() == ["none"]
    # A class the method never predicted on the validation origins keeps its own probabilities.
    never = calibrated(
        persistence_predict,
        pl.DataFrame({"target": ["none"]}).with_columns(pl.lit(0.0).alias("cpu_hours_24h")),
        pl.DataFrame({"cpu_hours_24h": [3.0]}),
    )
    assert never["cpu"].to_list() == [0.5] and never["none"].to_list() == [0.5]


def test_persistence_expects_what_saturated_most_in_the_last_day():
    frame = pl.DataFrame(
        {
            "cpu_hours_24h": [0.0, 3.0, 5.0, None],
            "memory_hours_24h": [0.0, 7.0, 5.0, None],
        }
    )
    probs = persistence_predict(frame)
    assert most_likely(probs).to_list() == ["none", "memory", "cpu", "none"]  # tie: earlier
    assert probs["memory"][1] == pytest.approx(0.5) and probs["none"][1] == pytest.approx(0.5)
    assert probs["none"][0] == 1.0 and probs["none"][3] == 1.0
    sums = probs.select(BOTTLENECK_CLASSES).sum_horizontal()
    assert sums.to_list() == pytest.approx([1.0] * 4)
    # No label counts at all (no family measured): nothing persists.
    assert most_likely(persistence_predict(pl.DataFrame({"x": [1.0]}))).to_list() == ["none"]


def test_a_class_expected_back_states_the_fleets_recurrence_chance_not_a_coin_flip():
    """The 7-day rule expects a class seen in the week back. Where nothing calibrates it, it
    states the fleet's learned recurrence chance (here under 0.5, so the class is no longer the
    likeliest and no list calls it 'at risk'); a class going on in the last 24 h and the memory
    projection keep the rule's own probability."""
    from capacity_pipelines.bottlenecks.classifier import RULE_PROBABILITY

    frame = pl.DataFrame(
        {
            "cpu_hours_7d": [3.0, 3.0, 0.0],
            "cpu_hours_24h": [0.0, 2.0, 0.0],
            "memory_projected": [None, None, 1.2],
        }
    )
    plain = rules_predict(frame)
    learned = rules_predict(frame, recurrence=0.2)
    assert plain["cpu"].to_list()[:2] == [RULE_PROBABILITY, RULE_PROBABILITY]
    assert learned["cpu"].to_list()[:2] == [pytest.approx(0.2), RULE_PROBABILITY]
    assert learned["none"][0] == pytest.approx(0.8)
    assert most_likely(learned).to_list() == ["none", "cpu", "memory"]
    assert learned["memory"][2] == RULE_PROBABILITY  # the projection is not a recurrence


def test_the_outlook_recurrence_is_learned_for_the_7_day_rule_only():
    from capacity_pipelines.bottlenecks.outlook import outlook_recurrence
    from capacity_pipelines.bottlenecks.recurrence import PRIOR_DAYS, WATCH_DAYS

    as_of = datetime(2026, 10, 20)
    hours = [as_of - timedelta(days=d) for d in (12, 9)]  # two episodes, none since
    labelled = pl.DataFrame(
        {
            "namespace": ["shop", "shop"],
            "service": ["cart", "api"],
            "window_start": hours,
            "bottleneck_class": ["cpu", "cpu"],
        }
    )
    assert outlook_recurrence(labelled, as_of, HORIZONS["24h"]) is None
    # 7 + 7 days watched, no recurrence: one prior event in PRIOR_DAYS + 14 days
    expected = 1 - np.exp(-WATCH_DAYS / (PRIOR_DAYS + 14))
    assert outlook_recurrence(labelled, as_of, HORIZONS["7d"]) == pytest.approx(expected)
    # nothing learned yet: even odds
    assert outlook_recurrence(labelled.head(0), as_of, HORIZONS["7d"]) == pytest.approx(0.5)


def _record(said: list[str], truth: list[str]) -> pl.DataFrame:
    """Origins of one service: what a simple method said (`said`) and what followed."""
    return pl.DataFrame(
        {"namespace": "ns", "service": "svc", "said": said, "target": truth},
    )


def _saying(frame: pl.DataFrame) -> pl.DataFrame:
    """A simple method that names the class in `said` at even odds (as the rules do)."""
    return pl.DataFrame(
        [
            {c: (0.5 if c in (s, "none") else 0.0) if s != "none" else float(c == "none")
             for c in BOTTLENECK_CLASSES}
            for s in frame["said"]
        ],
        schema=dict.fromkeys(BOTTLENECK_CLASSES, pl.Float64),
    )  # fmt: skip


def test_alarms_right_two_times_in_five_stay_named_when_the_record_says_so():
    # Right 4 of 10 times on the earlier origins: calibration alone would say none (5/12 vs
    # 7/12) and erase the class; on the latest origins naming it scored the higher macro-F1.
    earlier = _record(["cpu"] * 10 + ["none"] * 30, ["cpu"] * 4 + ["none"] * 36)
    recent = _record(["cpu"] * 5 + ["none"] * 15, ["cpu"] * 2 + ["none"] * 18)
    assert keeps_alarms(_saying, earlier, recent)
    kept = calibrated(_saying, earlier, recent.head(1), keep_alarms=True)
    assert most_likely(kept).to_list() == ["cpu"]
    assert kept["cpu"][0] == pytest.approx(kept["none"][0])
    assert most_likely(calibrated(_saying, earlier, recent.head(1))).to_list() == ["none"]


def test_alarms_mostly_wrong_everywhere_are_calibrated_away():
    # Said cpu at every origin, right 3 times in 10: never naming it scores better.
    earlier = _record(["cpu"] * 40, ["cpu"] * 12 + ["none"] * 28)
    recent = _record(["cpu"] * 20, ["cpu"] * 6 + ["none"] * 14)
    assert not keeps_alarms(_saying, earlier, recent)

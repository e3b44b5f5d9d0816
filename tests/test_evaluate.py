"""PromQL semantics of the file source, checked against hand-computed values."""

import numpy as np
import polars as pl
import pytest

from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.sources.evaluate import _bucket_quantile, _rate, evaluate_column
from capacity_pipelines.ingest.sources.openmetrics import RawSamples, canonical_series


def _samples(series: dict[str, tuple[dict[str, str], list[float], list[float]]]) -> RawSamples:
    frames, labels = [], {}
    for name, (lab, ts, values) in series.items():
        lab = {"__name__": name.split("#")[0], **lab}
        key = canonical_series(lab)
        labels[key] = lab
        frames.append(pl.DataFrame({"series": key, "ts": ts, "value": values}))
    return RawSamples(frame=pl.concat(frames), labels=labels)


def test_rate_of_a_steady_counter_is_its_slope():
    ts = np.arange(0, 3600, 60.0)
    values = 2.5 * ts  # 2.5 per second
    out = _rate(ts, values, np.array([1800.0, 3540.0]), 300)
    assert out == pytest.approx([2.5, 2.5])


def test_rate_handles_a_counter_reset():
    ts = np.array([0.0, 60, 120, 180, 240, 300])
    values = np.array([100.0, 160, 220, 10, 70, 130])  # restarted after 220, counted up to 10
    # samples cover [0, 300] exactly; Prometheus adds the value before the reset:
    # increase = 130 - 100 + 220 = 250 over 300 s
    out = _rate(ts, values, np.array([300.0]), 300)
    assert out[0] == pytest.approx(250 / 300)


def test_rate_extrapolates_like_prometheus():
    # Window [0, 300], samples at 30..270 every 60s: 5 samples, sampled interval 240 s.
    ts = np.array([30.0, 90, 150, 210, 270])
    values = np.array([1000.0, 1060, 1120, 1180, 1240])
    # durationToStart 30 < 1.1*60, durationToEnd 30: extrapolate to 300 s. 240 * 300/240 / 300
    assert _rate(ts, values, np.array([300.0]), 300)[0] == pytest.approx(1.0)


def test_rate_needs_two_samples():
    out = _rate(np.array([0.0, 600]), np.array([1.0, 2.0]), np.array([300.0, 600.0]), 300)
    assert np.isnan(out[0]) and np.isnan(out[1])


def test_bucket_quantile_interpolates_within_the_bucket():
    bounds = np.array([0.1, 0.5, 1.0, np.inf])
    counts = np.array([[10.0], [60.0], [90.0], [100.0]])
    # rank 50 falls in (0.1, 0.5]: 0.1 + 0.4 * (50-10)/50
    assert _bucket_quantile(0.5, bounds, counts)[0] == pytest.approx(0.42)
    # rank 95 is beyond the last finite bucket: its upper bound
    assert _bucket_quantile(0.95, bounds, counts)[0] == pytest.approx(1.0)


def test_gauge_groups_sum_and_gaps_stay_gaps():
    catalog = load_catalog()
    table = catalog.table("service_traffic")
    query = next(q for q in table.columns if q.column == "in_flight_requests")
    base = {"cluster": "c", "namespace": "n", "service": "api"}
    samples = _samples(
        {
            "http_server_active_requests#a": ({**base, "pod": "a"}, [0.0, 300, 600], [1.0, 2, 3]),
            "http_server_active_requests#b": ({**base, "pod": "b"}, [0.0, 300], [10.0, 20]),
        }
    )
    grid = np.array([300.0, 600, 1200])
    out = evaluate_column(samples, table, query, grid, 300, 900)
    values = out[("c", "n", "api")]
    # t=300: avg(a over [0,300]) + avg(b over [0,300]) = 1.5 + 15
    assert values[0] == pytest.approx(16.5)
    assert values[1] == pytest.approx(2.5 + 20)
    assert np.isnan(values[2])  # nothing in [900, 1200]: a gap, not a zero


def test_provider_alias_prefers_new_label():
    catalog = load_catalog()
    table = catalog.table("llm_token_usage")
    query = next(q for q in table.columns if q.column == "input_tokens")
    ts = list(np.arange(0, 1200, 60.0))
    old = {"gen_ai_system": "openai", "gen_ai_request_model": "gpt-4o", "service": "s"}
    new = {
        "gen_ai_provider_name": "anthropic",
        "gen_ai_system": "x",
        "service": "s",
        "gen_ai_request_model": "claude-sonnet-4",
    }
    name = "gen_ai_client_inference_usage_input_tokens_total"
    samples = _samples(
        {f"{name}#1": (old, ts, [t * 10 for t in ts]), f"{name}#2": (new, ts, [t for t in ts])}
    )
    out = evaluate_column(samples, table, query, np.array([900.0]), 300, 900)
    assert out[("", "s", "openai", "gpt-4o", "")][0] == pytest.approx(10 * 300)
    assert out[("", "s", "anthropic", "claude-sonnet-4", "")][0] == pytest.approx(300)

"""Forecasting engine: seasonality, calibration, guard rails, determinism, capacity outputs.

Real data: five weeks of application-server traffic (MIT, see the fixture's ATTRIBUTION file).
Everything runs in-process (fewer series than the engine's parallel threshold) to stay fast.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from capacity_pipelines.forecasting import CapacityForecaster, EngineSettings, HistoryError
from capacity_pipelines.forecasting.capacity import (
    clipping_notes,
    next_week_peak,
    time_to_saturation,
)
from capacity_pipelines.forecasting.engine import _fold_cuts, is_sane
from capacity_pipelines.forecasting.frames import despike, seasonal_periods, to_regular
from capacity_pipelines.forecasting.global_lgbm import LightGBMGlobal
from capacity_pipelines.forecasting.metrics import mase, naive2, smape
from capacity_pipelines.forecasting.models import (
    FourierETS,
    LocalModel,
    MSTLForecaster,
    SeasonalNaive,
    local_methods,
)

FIXTURE = Path(__file__).parent / "fixtures" / "app_server_requests_hourly_5weeks.csv"
WEEK = 168
START = datetime(2024, 1, 1)


def app_traffic() -> np.ndarray:
    return pl.read_csv(FIXTURE)["requests"].cast(pl.Float64).to_numpy()


def long_frame(series: dict[str, np.ndarray], step: timedelta = timedelta(hours=1)
               ) -> pl.DataFrame:
    rows = []
    for sid, values in series.items():
        ts = [START + i * step for i in range(values.size)]
        rows.append(pl.DataFrame({"series_id": sid, "ts": ts, "value": values}))
    return pl.concat(rows).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def perturbed_fleet(count: int, seed: int = 3) -> dict[str, np.ndarray]:
    """Real traffic with per-series level, noise and phase: a small realistic fleet."""
    rng = np.random.default_rng(seed)
    base = app_traffic()
    fleet = {}
    for i in range(count):
        shift = int(rng.integers(0, 24))
        y = np.roll(base, shift) * np.exp(rng.normal(0, 1)) * rng.normal(1, 0.05, base.size)
        fleet[f"svc-{i}"] = np.maximum(y, 0)
    return fleet


def fast_engine(**kwargs: object) -> CapacityForecaster:
    return CapacityForecaster(EngineSettings(workers=1, **kwargs))


# -- seasonality on real data --------------------------------------------------------------


@pytest.mark.parametrize("model", [MSTLForecaster(), FourierETS(), SeasonalNaive("week")],
                         ids=lambda m: m.name)
def test_local_models_recover_daily_and_weekly_cycle(model: object) -> None:
    y = app_traffic()
    history, actual = y[: 4 * WEEK], y[4 * WEEK: 5 * WEEK]
    forecast = LocalModel(model).fit(long_frame({"app": history})).predict(WEEK)["point"]
    forecast = forecast.to_numpy()
    daily_naive = mase(actual, np.resize(history[-24:], WEEK), history, 24)
    assert mase(actual, forecast, history, 24) < daily_naive
    # the weekday/weekend shape: hourly profile correlates with the actual week
    assert np.corrcoef(forecast, actual)[0, 1] > 0.85


def test_engine_beats_daily_naive_on_real_traffic() -> None:
    y = app_traffic()
    history, actual = y[: 4 * WEEK], y[4 * WEEK: 5 * WEEK]
    out = fast_engine().fit(long_frame({"app": history})).predict(WEEK)
    point = out["point"].to_numpy()
    assert mase(actual, point, history, 24) < mase(actual, np.resize(history[-24:], WEEK),
                                                   history, 24)
    assert out.columns == ["series_id", "ts", "point", "p50", "p80", "p90", "p95", "model",
                           "interval_method"]
    assert out["ts"].min() == START + timedelta(hours=4 * WEEK)


def test_lightgbm_global_model_learns_across_series() -> None:
    fleet = {k: v[: 4 * WEEK] for k, v in perturbed_fleet(4).items()}
    actual = perturbed_fleet(4)["svc-0"][4 * WEEK: 5 * WEEK]
    out = LightGBMGlobal().fit(long_frame(fleet)).predict(WEEK)
    point = out.filter(pl.col("series_id") == "svc-0")["point"].to_numpy()
    assert np.corrcoef(point, actual)[0, 1] > 0.85


# -- calibration and guard rails -----------------------------------------------------------


def test_upper_quantiles_cover_and_are_ordered() -> None:
    # Six services whose histories end on six different days, so the 48 h actuals are not
    # one shared stretch of time.
    base = app_traffic()
    rng = np.random.default_rng(5)
    fleet = {f"svc-{i}": base[i * 24: i * 24 + 3 * WEEK + 48] * np.exp(rng.normal(0, 1))
             for i in range(6)}
    history = {k: v[: 3 * WEEK] for k, v in fleet.items()}
    out = fast_engine().fit(long_frame(history)).predict(48)
    q = out.select("p50", "p80", "p90", "p95").to_numpy()
    assert np.all(np.diff(q, axis=1) >= 0)
    actual = np.concatenate([fleet[s][3 * WEEK:]
                             for s in out["series_id"].unique(maintain_order=True)])
    coverage = (actual <= out["p95"].to_numpy()).mean()
    # 288 points, strongly dependent: a loose band that still catches a broken calibration
    assert 0.75 <= coverage <= 1.0
    assert (actual <= out["p50"].to_numpy()).mean() < coverage


@pytest.mark.parametrize("interval_method", ["pooled_conformal", "per_series_conformal"])
def test_interval_methods_produce_finite_bands(interval_method: str) -> None:
    history = {k: v[: 3 * WEEK] for k, v in perturbed_fleet(3).items()}
    out = fast_engine(interval_method=interval_method).fit(long_frame(history)).predict(24)
    assert out["interval_method"].unique().to_list() == [interval_method]
    assert np.isfinite(out.select("point", "p95").to_numpy()).all()


def test_no_negative_forecast_for_a_falling_non_negative_metric() -> None:
    hours = np.arange(3 * WEEK)
    falling = np.maximum(50.0 - hours * 0.2, 0.0) + 5 * (np.sin(hours * 2 * np.pi / 24) > 0.9)
    out = fast_engine().fit(long_frame({"queue": falling})).predict(WEEK)
    assert out.select(pl.min_horizontal("point", "p50", "p80", "p90", "p95").min()).item() >= 0


def test_nan_ridden_input_is_tolerated() -> None:
    rng = np.random.default_rng(0)
    y = app_traffic()[: 3 * WEEK].copy()
    y[rng.choice(y.size, size=int(0.10 * y.size), replace=False)] = np.nan
    frame = long_frame({"app": y})
    frame = frame.filter(pl.int_range(pl.len()) % 97 != 5)  # and some rows simply absent
    out = fast_engine().fit(frame).predict(WEEK)
    assert out.height == WEEK
    assert np.isfinite(out.select("point", "p50", "p80", "p90", "p95").to_numpy()).all()


def test_level_shift_is_followed() -> None:
    y = app_traffic()[: 4 * WEEK].copy()
    y[-2 * WEEK:] *= 2.0  # capacity doubled two weeks ago
    out = fast_engine().fit(long_frame({"app": y})).predict(WEEK)
    assert out["point"].mean() > 1.6 * y[: 2 * WEEK].mean()


@pytest.mark.parametrize("length", [5, 30, 47])
def test_short_series_get_simple_methods(length: int) -> None:
    y = app_traffic()[:length]
    out = fast_engine().fit(long_frame({"new-service": y})).predict(24)
    assert out.height == 24
    assert np.isfinite(out.select("point", "p95").to_numpy()).all()
    assert not any(m in out["model"][0] for m in ("mstl", "lightgbm", "snaive_week"))


def test_exploding_model_falls_back_to_seasonal_naive(monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(MSTLForecaster, "forecast",
                        lambda self, y, periods, h: np.full(h, 1e15))
    y = app_traffic()[: 3 * WEEK]
    out = fast_engine().fit(long_frame({"app": y})).predict(WEEK)
    assert out["point"].max() < 3 * y.max()
    assert "mstl failed or exploded" in caplog.text


@pytest.mark.parametrize("forecast, ok", [
    (np.array([1.0, 2.0]), True),
    (np.array([1.0, np.nan]), False),
    (np.array([1.0, np.inf]), False),
    (np.array([1.0, 1e9]), False),
    (None, False),
])
def test_sanity_check(forecast: np.ndarray | None, ok: bool) -> None:
    assert is_sane(forecast, np.array([0.0, 10.0]), 3.0) is ok


@pytest.mark.parametrize("n, h, cuts", [
    (8 * WEEK, WEEK, [7 * WEEK, 6 * WEEK]),  # two full-horizon folds
    (WEEK + 100, WEEK, [100]),  # one full fold fits, the second would leave < 2 days
    (WEEK + 1, WEEK, [109, 49]),  # none fits: two shortened folds over what there is
    (40, WEEK, [28, 16]),  # no season yet: folds keep 16 steps of history
    (30, WEEK, []),  # too little to backtest
])
def test_backtest_origins(n: int, h: int, cuts: list[int]) -> None:
    assert _fold_cuts(n, h, 2, 3600) == cuts


def test_same_input_same_output() -> None:
    history = long_frame({k: v[: 4 * WEEK] for k, v in perturbed_fleet(4).items()})
    first = fast_engine().fit(history).predict(WEEK)
    second = fast_engine().fit(history).predict(WEEK)
    assert "lightgbm" in "".join(first["model"].to_list())
    assert first.equals(second)


def test_worker_processes_give_the_in_process_result() -> None:
    from capacity_pipelines.forecasting.engine import PARALLEL_MIN_SERIES

    fleet = {k: v[: 2 * WEEK + 24] for k, v in perturbed_fleet(PARALLEL_MIN_SERIES).items()}
    history = long_frame(fleet)
    in_process = fast_engine().fit(history).predict(24)
    parallel = CapacityForecaster(EngineSettings(workers=2)).fit(history).predict(24)
    assert in_process.equals(parallel)


# -- input handling ------------------------------------------------------------------------


@pytest.mark.parametrize("step, periods", [
    (timedelta(minutes=5), (288, 2016)),
    (timedelta(hours=1), (24, 168)),
    (timedelta(days=1), (7,)),
    (timedelta(weeks=1), ()),
])
def test_frequency_is_inferred(step: timedelta, periods: tuple[int, ...]) -> None:
    series = to_regular(long_frame({"s": np.arange(40.0)}, step=step))[0]
    assert series.step_s == step.total_seconds()
    assert seasonal_periods(series.step_s) == periods


def test_daily_data_uses_sarimax_for_the_weekly_season() -> None:
    names = [m.name for m in local_methods((7,))]
    assert "sarimax" in names
    rng = np.random.default_rng(1)
    days = np.arange(10 * 7)
    y = 100 + 20 * (days % 7 < 5) + rng.normal(0, 2, days.size)
    out = fast_engine().fit(long_frame({"daily": y}, step=timedelta(days=1))).predict(14)
    assert np.isfinite(out["point"].to_numpy()).all()


@pytest.mark.parametrize("frame, message", [
    (pl.DataFrame({"series_id": ["a"], "ts": [START]}), "column value: missing"),
    (pl.DataFrame({"series_id": [1], "ts": [START], "value": [1.0]}), "column series_id:"),
    (pl.DataFrame({"series_id": ["a"], "ts": ["2024-01-01"], "value": [1.0]}), "column ts:"),
    (pl.DataFrame({"series_id": ["a", "a", "a"], "ts": [START] * 3, "value": [1.0] * 3}),
     "column ts: 3 duplicate"),
    (pl.DataFrame({"series_id": ["a", "a"], "ts": [START, START + timedelta(hours=1)],
                   "value": [1.0, 2.0]}), "at least 3"),
])
def test_bad_input_is_named(frame: pl.DataFrame, message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        fast_engine().fit(frame)


@pytest.mark.parametrize("kind", ["spike", "level_shift", "daily_peak"])
def test_despike_removes_spikes_but_keeps_shifts_and_peaks(kind: str) -> None:
    y = app_traffic()[:WEEK].copy()
    if kind == "spike":
        normal_max = y.max()
        y[100] = 50 * normal_max
        assert despike(y)[100] < normal_max
    elif kind == "level_shift":
        y[100:] *= 3
        assert np.array_equal(despike(y)[95:106], y[95:106])
    else:
        assert np.allclose(despike(y).max(), y.max(), rtol=0.02)


def test_series_with_mostly_gaps_is_refused() -> None:
    y = np.full(200, np.nan)
    y[np.arange(200) % 10 < 3] = 1.0  # hourly runs of 3 points, then 7 hours missing
    with pytest.raises(HistoryError, match="misses"):
        fast_engine().fit(long_frame({"sparse": y}))


# -- capacity outputs ----------------------------------------------------------------------


def forecast_of(values: list[float], sid: str = "db") -> pl.DataFrame:
    ts = [START + timedelta(hours=i) for i in range(len(values))]
    v = np.asarray(values)
    return pl.DataFrame({"series_id": sid, "ts": ts, "point": v, "p50": v, "p80": v + 1,
                         "p90": v + 2, "p95": v + 3}).with_columns(pl.col("ts")
                                                                   .cast(pl.Datetime("us")))


@pytest.mark.parametrize("capacity, quantile, runway", [
    (52.0, "p90", 2.0),  # p90 = value + 2 hits 52 at value 50 = step 48 -> 48 h after t0-1h
    (52.0, "p50", 4.0),  # p50 hits 52 at step 96
    (10.0, "p90", 1 / 24),  # already saturated at the first step
    (500.0, "p90", None),  # not within the horizon
])
def test_runway_arithmetic(capacity: float, quantile: str, runway: float | None) -> None:
    values = [2.0 + 0.5 * i for i in range(200)]  # +0.5 per hour from 2.0 (at t0)
    forecast = forecast_of(values)
    # shift so the origin (one step before t0) is exact: value at step k (1-based) = 1.5 + 0.5k
    out = time_to_saturation(forecast.with_columns(pl.col("ts")), capacity, quantile)
    row = out.row(0, named=True)
    if runway is None:
        assert row["saturates"] is False and row["runway_days"] is None
    else:
        expected_step = next(i for i, v in enumerate(values)
                             if v + {"p50": 0, "p90": 2}[quantile] >= capacity) + 1
        assert row["runway_days"] == pytest.approx(expected_step / 24)
        assert row["saturates"] is True


def test_time_to_saturation_per_series_capacity() -> None:
    forecast = pl.concat([forecast_of([1.0] * 48, "a"), forecast_of([10.0] * 48, "b")])
    limits = pl.DataFrame({"series_id": ["a", "b"], "capacity": [100.0, 5.0]})
    out = time_to_saturation(forecast, limits)
    assert out["saturates"].to_list() == [False, True]


def test_next_week_peak_only_looks_at_the_first_week() -> None:
    values = [1.0] * 200
    values[30] = 7.0
    values[190] = 99.0  # after the first week
    out = next_week_peak(forecast_of(values)).row(0, named=True)
    assert out["peak_p50"] == 7.0 and out["peak_p90"] == 9.0
    assert out["peak_p50_ts"] == START + timedelta(hours=30)


@pytest.mark.parametrize("values, limit, clipped", [
    ([10.0, 50.0, 100.0, 100.0, 100.0, 60.0] * 10, 100.0, True),
    (list(np.linspace(0, 100, 200)), 100.0, False),
    ([30.0, 40.0, 55.0, 55.0, 55.0] * 10, None, True),  # plateau at its own max
])
def test_clipping_note(values: list[float], limit: float | None, clipped: bool) -> None:
    history = pl.DataFrame({"series_id": "cpu", "value": values})
    row = clipping_notes(history, limit).row(0, named=True)
    assert row["clipped"] is clipped
    assert ("demand vs utilisation" in row["note"]) is clipped


# -- metrics -------------------------------------------------------------------------------


def test_metrics_against_hand_values() -> None:
    actual, forecast = np.array([100.0, 200.0]), np.array([110.0, 180.0])
    assert smape(actual, forecast) == pytest.approx(100 * (10 / 210 + 20 / 380))
    insample = np.arange(48.0)  # lag-24 differences are all 24
    assert mase(actual, forecast, insample, 24) == pytest.approx(15.0 / 24.0)
    seasonal = np.tile(np.r_[np.ones(12), 3 * np.ones(12)], 10) * 10
    assert naive2(seasonal, 24, 24) == pytest.approx(seasonal[-24:])


@pytest.mark.research_data
def test_engine_on_research_series(shared_data: Path) -> None:
    nab = pl.read_csv(shared_data / "nab_aws" / "rds_cpu_utilization_cc0c53.csv")
    frame = nab.select(pl.lit("rds").alias("series_id"),
                       pl.col("timestamp").str.to_datetime().alias("ts"),
                       pl.col("value").cast(pl.Float64))
    out = fast_engine().fit(frame).predict(288)
    assert out["ts"].diff().drop_nulls().unique().to_list() == [timedelta(minutes=5)]
    assert np.isfinite(out.select("point", "p95").to_numpy()).all()

"""The streaming anomaly detector and `capacity anomalies` (issue 19, item 1).

Synthetic series with a known anomaly (a spike, a dip, a level step, a ramp) on a noisy daily
cycle, seeded so they are the same every run; one real NAB file when ../shared is beside the
repository. The command runs in process through `capacity_pipelines.cli.main`, and once as the
installed console script.
"""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from capacity_pipelines.anomalies.detector import THRESHOLD, detect, score_series
from capacity_pipelines.cli import main

START = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
DAYS = 14
AT = 10 * 288 + 100  # where the anomaly goes: day 10, 08:20


def _daily(seed: int = 7, points: int = DAYS * 288) -> np.ndarray:
    """A service's request rate: a daily cycle (100 +- 40) with 3 % noise."""
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.arange(points) / 288
    return 100 + 40 * np.sin(phase) + rng.normal(0, 3, points)


def _ts(points: int) -> np.ndarray:
    first = np.datetime64(START.replace(tzinfo=None), "us")
    return first + np.arange(points) * np.timedelta64(STEP)


def _history(values: np.ndarray, series_id: str = "gateway") -> pl.DataFrame:
    return pl.DataFrame(
        {"series_id": series_id, "ts": _ts(values.size), "value": values}
    ).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def _flagged(values: np.ndarray) -> pl.DataFrame:
    return detect(_history(values)).with_row_index("i").filter(pl.col("is_anomaly"))


def test_a_spike_and_a_dip_are_flagged_where_they_are_and_nowhere_else():
    values = _daily()
    values[AT] += 60  # an incident: 20 noise-sigmas above the cycle
    values[AT + 1000] -= 60
    flagged = _flagged(values)
    assert flagged.filter(pl.col("i") == AT)["kind"].to_list() == ["spike"]
    assert flagged.filter(pl.col("i") == AT + 1000)["kind"].to_list() == ["dip"]
    # nothing else in two weeks of a daily cycle: not the incident's echo a day later (the day
    # over day view compares with the day before), not the noise of a quiet day
    assert flagged["i"].to_list() == [AT, AT + 1000]


def test_a_level_step_is_a_level_shift_and_a_ramp_a_trend_change():
    step = _daily()
    step[AT:] += 25  # a deploy doubles the base load: 8 sigma, but inside the daily range
    flagged = _flagged(step)
    # flagged within the hour, as a level shift once it has lasted (its first points look like
    # a spike: nothing later is known)
    assert AT <= flagged["i"][0] < AT + 12
    assert "level_shift" in flagged.filter(pl.col("i") < AT + 12)["kind"].to_list()
    assert flagged["i"].max() < AT + 288  # and it is not reported again the next day

    ramp = np.random.default_rng(3).normal(50, 1, DAYS * 288)  # a flat, non-seasonal series
    ramp[AT:] += 0.5 * np.arange(ramp.size - AT)  # a leak starts: half a sigma per point
    flagged = _flagged(ramp)
    assert flagged["i"][0] >= AT  # two weeks of noise before it: no false alarm
    assert flagged["i"][0] < AT + 24 and flagged["kind"][0] == "trend_change"


def test_no_look_ahead_scores_of_a_prefix_are_the_scores_of_the_whole():
    values = _daily()
    values[AT] += 60
    whole = score_series(_ts(values.size), values).score
    for cut in (AT - 1, AT + 1, 12 * 288):
        prefix = score_series(_ts(cut), values[:cut]).score
        np.testing.assert_array_equal(prefix, whole[:cut])
    later = values.copy()
    later[AT + 1 :] = 0.0  # whatever comes after does not move a single earlier score
    np.testing.assert_array_equal(score_series(_ts(later.size), later).score[: AT + 1],
                                  whole[: AT + 1])  # fmt: skip


def test_one_threshold_fits_every_scale_scores_do_not_change_with_units():
    values = _daily()
    values[AT] += 60
    base = score_series(_ts(values.size), values).score
    for scale, offset in ((1e-6, 0.0), (2**30, 5e9), (0.01, -3.0)):
        scaled = score_series(_ts(values.size), values * scale + offset).score
        np.testing.assert_allclose(scaled, base, atol=1e-6)


def test_missing_readings_are_kept_and_never_flagged():
    values = _daily()
    values[AT : AT + 30] = np.nan
    values[AT + 30] += 60
    scored = detect(_history(values))
    assert scored.height == values.size
    gap = scored[AT : AT + 30]
    assert gap["score"].to_list() == [0.0] * 30 and not gap["is_anomaly"].any()
    assert scored.row(AT + 30, named=True)["kind"] == "spike"


def test_series_are_scored_apart():
    quiet = _daily(seed=1)
    noisy = _daily(seed=2) * 50  # another scale, and an incident
    noisy[AT] += 3000
    both = pl.concat([_history(quiet, "a"), _history(noisy, "b")])
    scored = detect(both.sample(fraction=1.0, shuffle=True, seed=0))  # any row order
    alone = detect(_history(quiet, "a"))
    assert scored.filter(pl.col("series_id") == "a")["score"].equals(alone["score"])
    assert scored.filter(pl.col("is_anomaly"), pl.col("series_id") == "b")["ts"].to_list() == [
        _history(noisy)["ts"][AT]
    ]


def _run(tmp_path: Path, history: pl.DataFrame | None, name: str = "h.parquet"):
    source = tmp_path / name
    if history is not None:
        history.write_parquet(source)
    out = tmp_path / "a.parquet"
    code = main(["anomalies", "--history", str(source), "--out", str(out)])
    return code, out


def test_the_command_writes_one_row_per_input_row_in_utc(tmp_path, capsys):
    values = _daily()
    values[AT] += 60
    history = _history(values).with_columns(pl.col("ts").dt.replace_time_zone(None))  # naive=UTC
    history = pl.concat([history, history[AT : AT + 1]])  # a repeated sample is scored too
    code, out = _run(tmp_path, history)
    assert code == 0
    scored = pl.read_parquet(out)
    assert scored.columns == ["series_id", "ts", "score", "is_anomaly", "kind"]
    assert scored.height == values.size + 1
    assert str(scored.schema["ts"]) == "Datetime(time_unit='us', time_zone='UTC')"
    assert scored["score"].is_between(0, 1).all()
    assert scored.filter(pl.col("is_anomaly"))["score"].min() >= THRESHOLD
    assert "anomalies (spike" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda h: h.drop("value"), "column value: missing"),
        (lambda h: h.with_columns(pl.col("value").cast(pl.String)), "column value"),
        (lambda h: h.with_columns(value=pl.lit(float("inf"))), "column value"),
        (lambda h: h.rename({"ts": "time"}), "column ts: missing"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_column_and_nothing_written(
    tmp_path, capsys, change, says
):
    code, out = _run(tmp_path, change(_history(_daily())))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not out.exists()
    assert len(err) == 1 and str(tmp_path / "h.parquet") in err[0] and says in err[0], err


def test_an_unreadable_file_is_refused(tmp_path, capsys):
    (tmp_path / "h.parquet").write_text("series_id,ts,value\n")
    code, out = _run(tmp_path, None)
    assert code == 2 and not out.exists()
    assert "h.parquet" in capsys.readouterr().err


def test_installed_command_runs(tmp_path):
    source = tmp_path / "h.parquet"
    _history(_daily()).write_parquet(source)
    run = subprocess.run(
        [str(Path(sys.executable).parent / "capacity"), "anomalies", "--history", str(source),
         "--out", str(tmp_path / "a.parquet")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"wrote {DAYS * 288} rows for 1 series" in run.stdout


def test_a_real_incident_is_found_without_look_ahead(shared_data):
    """NAB's machine temperature: the catastrophic failure at the end of the file is scored as
    an anomaly inside NAB's labelled window, from the points before it only."""
    frame = pl.read_csv(
        shared_data / "nab/data/realKnownCause/machine_temperature_system_failure.csv.gz",
        try_parse_dates=True,
    )
    history = frame.select(
        series_id=pl.lit("machine"), ts=pl.col("timestamp").dt.replace_time_zone("UTC"),
        value="value",
    )  # fmt: skip
    labels = json.loads((shared_data / "nab/labels/combined_windows.json").read_text())
    start, end = labels["realKnownCause/machine_temperature_system_failure.csv"][-1]
    window = [datetime.fromisoformat(t).replace(tzinfo=UTC) for t in (start, end)]
    scored = detect(history)
    inside = scored.filter(pl.col("ts").is_between(*window), pl.col("is_anomaly"))
    assert inside.height > 0
    cut = history.filter(pl.col("ts") <= inside["ts"][0])
    assert detect(cut).filter(pl.col("is_anomaly"))["ts"].to_list()[-1] == inside["ts"][0]


def test_on_nab_it_beats_the_windowed_gaussian_in_every_profile(shared_data):
    """NAB's 34 public files, scored with the checked reimplementation of NAB's scorer
    (`benchmarks/nab.py`), one threshold per profile over all files as NAB prescribes."""
    from benchmarks import nab

    corpus = nab.load_corpus(shared_data / "nab")
    ours = nab.normalised_scores(
        [(f, score_series(f.timestamps.astype("datetime64[us]"), f.values).score) for f in corpus]
    )
    baseline = nab.normalised_scores([(f, nab.windowed_gaussian(f.values)) for f in corpus])
    assert all(ours[p] > baseline[p] + 3 for p in nab.PROFILES), (ours, baseline)

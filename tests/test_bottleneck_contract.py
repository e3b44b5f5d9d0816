"""`capacity bottlenecks`: the outlook and its backtest on a usage file (issue 24's contract).

Real files through the real command (in process through `capacity_pipelines.cli.main`, and once
as the installed console script): the shape of O and L, the origins, honest labels, missing data
kept in the contract, bad input refused naming file and column, and no look-ahead.
"""

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from capacity_pipelines.cli import main

START = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=5)
GIB = 2**30


def _usage(days: int = 16, start: datetime = START) -> pl.DataFrame:
    """Two series with learnable saturation, 5-minute rows.

    - `api`: 2-core limit, CPU at 0.5 cores except 95 % of it 14:00-15:00 UTC every day.
    - `cache`: 4 GiB limit, working set climbing from 50 % to 97 % every 3 days (a leak that
      restarts), CPU idle.
    """
    steps = days * 288
    ts = [start + i * STEP for i in range(steps)]
    hour = np.array([t.hour for t in ts])
    since = np.arange(steps) * STEP.total_seconds()
    api_cpu = np.where(hour == 14, 1.9, 0.5)
    leak = 0.5 + 0.47 * (since % (3 * 86400)) / (3 * 86400)
    frames = [
        pl.DataFrame(
            {
                "series_id": "api",
                "ts": ts,
                "cpu_cores": api_cpu,
                "cpu_capacity_cores": 2.0,
                "memory_bytes": 0.3 * GIB,
                "memory_capacity_bytes": 1.0 * GIB,
            }
        ),
        pl.DataFrame(
            {
                "series_id": "cache",
                "ts": ts,
                "cpu_cores": 0.1,
                "cpu_capacity_cores": 1.0,
                "memory_bytes": leak * 4 * GIB,
                "memory_capacity_bytes": 4.0 * GIB,
            }
        ),
    ]
    return pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def _run(tmp_path: Path, usage: pl.DataFrame, *extra: str) -> tuple[int, Path, Path]:
    source = tmp_path / "usage.parquet"
    usage.write_parquet(source)
    out, labels = tmp_path / "outlook.parquet", tmp_path / "labels.parquet"
    code = main(
        ["bottlenecks", "--usage", str(source), "--out", str(out), "--labels-out", str(labels),
         *extra]
    )  # fmt: skip
    return code, out, labels


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backtest")
    code, out, labels = _run(folder, _usage(), "--backtest")
    assert code == 0
    return pl.read_parquet(out), pl.read_parquet(labels)


def test_outlook_is_one_row_per_class_summing_to_one(tmp_path):
    code, out, labels = _run(tmp_path, _usage())
    assert code == 0
    outlook = pl.read_parquet(out)
    assert outlook.schema == pl.Schema(
        {
            "series_id": pl.Utf8,
            "origin": pl.Datetime("us", "UTC"),
            "horizon": pl.Utf8,
            "class": pl.Utf8,
            "probability": pl.Float64,
        }
    )
    # One origin: the hour after the last complete hour (the data ends at 23:55 on day 16).
    assert outlook["origin"].unique().to_list() == [START + timedelta(days=16)]
    per = outlook.group_by("series_id", "origin", "horizon").agg(
        pl.col("class").sort(), pl.col("probability").sum()
    )
    assert per.height == 4  # 2 series x 2 horizons
    assert all(c == ["cpu", "memory", "none"] for c in per["class"].to_list())
    assert np.allclose(per["probability"].to_numpy(), 1.0)
    assert outlook["probability"].is_between(0.0, 1.0).all()
    # The daily CPU peak at 14:00 is within the next 24 h of midnight; the leak is in 7 days.
    by = {(r["series_id"], r["horizon"], r["class"]): r["probability"] for r in outlook.to_dicts()}
    assert by[("api", "24h", "cpu")] > by[("api", "24h", "none")]
    assert by[("cache", "7d", "memory")] > by[("cache", "7d", "none")]


def test_a_partial_last_hour_is_left_out(tmp_path):
    usage = _usage().filter(pl.col("ts") < START + timedelta(days=15, hours=10, minutes=30))
    code, out, _ = _run(tmp_path, usage)
    assert code == 0
    assert pl.read_parquet(out)["origin"].unique().to_list() == [
        START + timedelta(days=15, hours=10)
    ]


def test_backtest_origins_run_from_the_eighth_day_to_a_day_before_the_end(backtest):
    outlook, _ = backtest
    for horizon in ("24h", "7d"):
        origins = (
            outlook.filter(pl.col("horizon") == horizon)
            .group_by("series_id")
            .agg(
                pl.col("origin").min().alias("first"),
                pl.col("origin").max().alias("last"),
                pl.col("origin").n_unique().alias("n"),
            )
        )
        for row in origins.to_dicts():
            assert row["first"] == START + timedelta(days=7)
            assert row["last"] == START + timedelta(days=15)  # data ends at day 16, minus 24 h
            assert row["n"] == 8 * 24 + 1
    sums = outlook.group_by("series_id", "origin", "horizon").agg(
        pl.col("probability").sum(), pl.len()
    )
    assert np.allclose(sums["probability"].to_numpy(), 1.0)
    assert set(sums["len"].to_list()) == {3}


def test_backtest_beats_a_blind_none_on_learnable_saturation(backtest):
    """The daily CPU peak is named the most likely class at most 24 h origins before it."""
    outlook, labels = backtest
    api = outlook.filter((pl.col("series_id") == "api") & (pl.col("horizon") == "24h"))
    named = api.sort("probability", descending=True).group_by("origin").agg(pl.col("class").first())
    assert (named["class"] == "cpu").mean() > 0.9  # a peak is always within the next 24 h
    cpu_hours = labels.filter((pl.col("series_id") == "api") & (pl.col("class") == "cpu"))
    assert cpu_hours.height == 16
    assert set(cpu_hours["hour"].dt.hour().to_list()) == {14}


def test_labels_cover_every_hour_and_name_cpu_at_90_percent(tmp_path):
    usage = _usage(days=2).with_columns(
        # api at 90 % of its limit in one 5-minute step of 03:00, at 85 % all of 05:00
        pl.when((pl.col("series_id") == "api") & (pl.col("ts") == START + timedelta(hours=3)))
        .then(1.8)
        .when((pl.col("series_id") == "api") & (pl.col("ts").dt.hour() == 5))
        .then(1.7)
        .otherwise(pl.col("cpu_cores"))
        .alias("cpu_cores")
    )
    code, _, labels_path = _run(tmp_path, usage)
    assert code == 0
    labels = pl.read_parquet(labels_path)
    assert labels.schema == pl.Schema(
        {"series_id": pl.Utf8, "hour": pl.Datetime("us", "UTC"), "class": pl.Utf8}
    )
    assert labels.group_by("series_id").len().sort("series_id")["len"].to_list() == [48, 48]
    api = dict(labels.filter(pl.col("series_id") == "api").select("hour", "class").iter_rows())
    assert api[START + timedelta(hours=3)] == "cpu"
    assert api[START + timedelta(hours=5)] == "none"
    assert api[START + timedelta(hours=14)] == "cpu"


def test_missing_data_keeps_the_contract_and_is_never_a_label(tmp_path, capsys):
    usage = _usage().with_columns(
        # cache switched off (capacity 0) on day 10, its capacity unknown on day 11, its usage
        # unmeasured on day 12, and a reading of 64x its memory on day 13.
        pl.when((pl.col("series_id") == "cache") & (pl.col("ts").dt.day() == 10))
        .then(0.0)
        .when((pl.col("series_id") == "cache") & (pl.col("ts").dt.day() == 11))
        .then(None)
        .otherwise(pl.col("memory_capacity_bytes"))
        .alias("memory_capacity_bytes"),
        pl.when((pl.col("series_id") == "cache") & (pl.col("ts").dt.day() == 12))
        .then(None)
        .when((pl.col("series_id") == "cache") & (pl.col("ts").dt.day() == 13))
        .then(64 * 4.0 * GIB)
        .otherwise(pl.col("memory_bytes"))
        .alias("memory_bytes"),
    )
    code, out, labels_path = _run(tmp_path, usage, "--backtest")
    assert code == 0
    assert "memory rows not readings (above_plausible)" in capsys.readouterr().out
    labels = pl.read_parquet(labels_path)
    gap = labels.filter(
        (pl.col("series_id") == "cache") & pl.col("hour").dt.day().is_between(10, 13)
    )
    assert gap.height == 4 * 24 and set(gap["class"]) == {"none"}
    outlook = pl.read_parquet(out)
    cache = outlook.filter(pl.col("series_id") == "cache")
    assert cache.select("origin", "horizon").unique().height == 2 * (8 * 24 + 1)
    assert not cache["probability"].is_nan().any()


def test_repeated_samples_change_nothing(tmp_path):
    usage = _usage(days=9)
    code, out, labels = _run(tmp_path, usage)
    assert code == 0
    once = pl.read_parquet(out), pl.read_parquet(labels)
    twice_folder = tmp_path / "twice"
    twice_folder.mkdir()
    code, out, labels = _run(twice_folder, pl.concat([usage, usage.head(500)]))
    assert code == 0
    assert pl.read_parquet(out).equals(once[0])
    assert pl.read_parquet(labels).equals(once[1])


def test_optional_columns_add_their_classes(tmp_path):
    usage = _usage(days=9).with_columns(
        pl.lit(0.0).alias("cpu_throttled_ratio"),
        pl.lit(0.2).alias("latency_seconds"),
        pl.lit(3.0).alias("requests_in_flight"),
    )
    code, out, _ = _run(tmp_path, usage)
    assert code == 0
    classes = pl.read_parquet(out)["class"].unique().sort().to_list()
    assert classes == ["cpu", "io_database", "memory", "none", "queueing"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda u: u.drop("memory_capacity_bytes"), "column memory_capacity_bytes: missing"),
        (
            lambda u: u.with_columns(pl.col("ts").dt.replace_time_zone(None)),
            "column ts: timestamps have no time zone",
        ),
        (
            lambda u: u.with_columns(
                pl.when(pl.col("ts") == START).then(-1.0).otherwise(pl.col("cpu_cores"))
                .alias("cpu_cores")
            ),
            "column cpu_cores: 2 row(s) are negative",
        ),
        (
            lambda u: u.with_columns(pl.lit(1.5).alias("cpu_throttled_ratio")),
            "column cpu_throttled_ratio:",
        ),
        (lambda u: u.with_columns(pl.col("series_id").cast(pl.Categorical).to_physical()),
         "column series_id: wrong type"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_file_and_column(tmp_path, capsys, change, needle):
    source = tmp_path / "usage.parquet"
    change(_usage(days=2)).write_parquet(source)
    out = tmp_path / "outlook.parquet"
    code = main(["bottlenecks", "--usage", str(source), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert str(source) in err and needle in err
    assert not out.exists()


def test_output_over_the_input_is_refused(tmp_path, capsys):
    source = tmp_path / "usage.parquet"
    _usage(days=2).write_parquet(source)
    before = source.read_bytes()
    assert main(["bottlenecks", "--usage", str(source), "--out", str(source)]) == 2
    assert "usage.parquet" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_no_look_ahead_in_the_backtest(tmp_path, backtest):
    """Changing every row from day 12 on leaves every outlook for origins up to day 12 as it was
    (the model that predicts day D was trained on data before D, features before the origin)."""
    before, _ = backtest
    cut = START + timedelta(days=12)
    rng = np.random.default_rng(7)
    usage = _usage()
    late = usage["ts"] >= cut
    changed = usage.with_columns(
        pl.when(late)
        .then(pl.Series(rng.uniform(0.0, 2.0, usage.height)))
        .otherwise(pl.col("cpu_cores"))
        .alias("cpu_cores"),
        pl.when(late)
        .then(pl.col("memory_capacity_bytes") * 0.99)
        .otherwise(pl.col("memory_bytes"))
        .alias("memory_bytes"),
    )
    code, out, _ = _run(tmp_path, changed, "--backtest")
    assert code == 0
    after = pl.read_parquet(out)
    early = pl.col("origin") <= cut
    assert after.filter(early).equals(before.filter(early))
    assert not after.filter(~early).equals(before.filter(~early))  # the change did matter


def test_installed_command_runs(tmp_path):
    source = tmp_path / "usage.parquet"
    _usage(days=9).write_parquet(source)
    out = tmp_path / "o.parquet"
    run = subprocess.run(
        [str(Path(sys.executable).parent / "capacity"), "bottlenecks", "--usage", str(source),
         "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "classes cpu, memory, none" in run.stdout
    assert pl.read_parquet(out).height == 2 * 2 * 3

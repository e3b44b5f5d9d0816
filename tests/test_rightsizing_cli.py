"""`capacity rightsize`: the file contract, exports, and one-line errors on bad input."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from capacity_pipelines.rightsizing.cli import main

MIB = 1024**2
START = dt.datetime(2025, 3, 3)


def usage(days: float = 2, container_ids: tuple[str, ...] = ("shop/api/app",)) -> pl.DataFrame:
    frames = []
    for k, container_id in enumerate(container_ids):
        n = int(days * 96)
        index = np.arange(n)
        frames.append(
            pl.DataFrame(
                {
                    "container_id": container_id,
                    "ts": [START + dt.timedelta(minutes=15 * int(i)) for i in index],
                    "cpu_cores": 0.3 + 0.1 * np.sin(2 * np.pi * index / 96) + 0.01 * k,
                    "memory_bytes": np.full(n, 400.0 * MIB),
                    "oom_killed": np.zeros(n),
                    "cpu_throttled_ratio": np.zeros(n),
                }
            )
        )
    return pl.concat(frames)


SPEC = pl.DataFrame(
    {
        "container_id": ["shop/api/app"],
        "cpu_request": [2.0],
        "cpu_limit": [None],
        "memory_request": [2.0 * 1024**3],
        "memory_limit": [2.0 * 1024**3],
    },
    schema_overrides={"cpu_limit": pl.Float64},
)


def test_cli_writes_recommendations_and_exports(tmp_path: Path, capsys):
    u, s = tmp_path / "u.parquet", tmp_path / "s.parquet"
    usage(container_ids=("shop/api/app", "shop/worker/app")).write_parquet(u)
    SPEC.write_parquet(s)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "workloads:\n  shop/worker: {mode: ratio, cpu_factor: 2, memory_factor: 1.5}\n"
    )
    out, exports = tmp_path / "r.parquet", tmp_path / "exports"
    code = main(
        [
            "--usage",
            str(u),
            "--spec",
            str(s),
            "--out",
            str(out),
            "--exports",
            str(exports),
            "--policy",
            str(policy),
            "--node-class",
            "gcp/n2",
        ]
    )
    assert code == 0
    result = pl.read_parquet(out)
    for column in (
        "container_id",
        "cpu_request",
        "cpu_limit",
        "memory_request",
        "memory_limit",
        "confidence",
        "rationale",
        "monthly_saving_usd",
        "kind",
        "rank",
    ):
        assert column in result.columns
    assert result.height == 2
    api = result.filter(pl.col("container_id") == "shop/api/app").row(0, named=True)
    worker = result.filter(pl.col("container_id") == "shop/worker/app").row(0, named=True)
    assert api["monthly_saving_usd"] > 0 and api["price_id"].startswith("gcp/n2/")
    assert worker["cpu_limit"] == pytest.approx(2 * worker["cpu_request"], abs=0.011)
    assert worker["monthly_saving_usd"] is None  # no current spec: listed, not priced
    assert "wrote 2 recommendations" in capsys.readouterr().out
    assert json.loads((exports / "rightsizing.json").read_text())[0]["rank"] == 1
    assert pl.read_csv(exports / "rightsizing.csv").height == 2
    assert "shop/api/app" in (exports / "rightsizing.md").read_text()
    patch = yaml.safe_load((exports / "patches" / "shop__api.yaml").read_text())
    assert patch["spec"]["template"]["spec"]["containers"][0]["name"] == "app"
    # a second run replaces the exports folder whole
    assert main(["--usage", str(u), "--out", str(out), "--exports", str(exports)]) == 0
    assert sorted(p.name for p in (exports / "patches").iterdir()) == [
        "shop__api.yaml",
        "shop__worker.yaml",
    ]


def _broken(kind: str) -> pl.DataFrame:
    frame = usage()
    if kind == "missing column":
        return frame.drop("memory_bytes")
    if kind == "wrong type":
        return frame.with_columns(pl.col("cpu_cores").cast(pl.String))
    if kind == "nan":
        return frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(float("nan"))
            .otherwise(pl.col("cpu_cores"))
            .alias("cpu_cores")
        )
    if kind == "inf":
        return frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(float("inf"))
            .otherwise(pl.col("memory_bytes"))
            .alias("memory_bytes")
        )
    if kind == "negative":
        return frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(-0.5)
            .otherwise(pl.col("cpu_cores"))
            .alias("cpu_cores")
        )
    if kind == "duplicate":
        return pl.concat([frame, frame.head(2)])
    if kind == "empty":
        return frame.head(0)
    if kind == "ts not a timestamp":
        return frame.with_columns(pl.col("ts").cast(pl.String))
    if kind == "bad optional":
        return frame.with_columns(pl.lit(-1.0).alias("oom_killed"))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing column", "column memory_bytes: missing (a number"),
        ("wrong type", "column cpu_cores: wrong type String, expected a number"),
        ("nan", "column cpu_cores: 1 row(s) are NaN, first at row 3"),
        ("inf", "column memory_bytes: 1 row(s) are infinite"),
        ("negative", "column cpu_cores: 1 row(s) are negative"),
        ("duplicate", "duplicate (container_id, ts) rows"),
        ("empty", "no rows"),
        ("ts not a timestamp", "column ts: wrong type String, expected a timestamp"),
        ("bad optional", "column oom_killed: 192 row(s) are negative"),
    ],
)
def test_bad_usage_is_one_line_exit_2_and_nothing_written(tmp_path: Path, capsys, kind, message):
    u = tmp_path / "u.parquet"
    _broken(kind).write_parquet(u)
    out, exports = tmp_path / "r.parquet", tmp_path / "exports"
    assert main(["--usage", str(u), "--out", str(out), "--exports", str(exports)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(u) in err and message in err
    assert not out.exists() and not exports.exists()
    assert list(tmp_path.iterdir()) == [u]  # no temporary files left behind


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SPEC.drop("memory_limit"), "column memory_limit: missing"),
        (
            pl.concat([SPEC, SPEC]),
            "container_id: 2 duplicate (container_id) rows, e.g. container_id 'shop/api/app'",
        ),
        (
            SPEC.with_columns(pl.lit(-1.0).alias("cpu_request")),
            "column cpu_request: 1 row(s) are negative",
        ),
    ],
)
def test_bad_spec_is_refused(tmp_path: Path, capsys, spec: pl.DataFrame, message: str):
    u, s = tmp_path / "u.parquet", tmp_path / "s.parquet"
    usage().write_parquet(u)
    spec.write_parquet(s)
    assert main(["--usage", str(u), "--spec", str(s), "--out", str(tmp_path / "r.parquet")]) == 2
    err = capsys.readouterr().err
    assert str(s) in err and message in err and not (tmp_path / "r.parquet").exists()


def test_unreadable_files_and_bad_policy_are_refused(tmp_path: Path, capsys):
    out = tmp_path / "r.parquet"
    assert main(["--usage", str(tmp_path / "absent.parquet"), "--out", str(out)]) == 2
    assert "file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    assert main(["--usage", str(junk), "--out", str(out)]) == 2
    assert "not a readable Parquet file" in capsys.readouterr().err
    u, policy = tmp_path / "u.parquet", tmp_path / "policy.yaml"
    usage().write_parquet(u)
    policy.write_text("default: {mode: sometimes}\n")
    assert main(["--usage", str(u), "--out", str(out), "--policy", str(policy)]) == 2
    assert "mode must be one of" in capsys.readouterr().err
    assert main(["--usage", str(u), "--out", str(out), "--node-class", "aws/z9"]) == 2
    assert "no compute price for node class 'aws/z9'" in capsys.readouterr().err
    assert not out.exists()


def test_capacity_console_script_has_the_rightsize_command(tmp_path: Path):
    u, out = tmp_path / "u.parquet", tmp_path / "r.parquet"
    usage().drop("oom_killed", "cpu_throttled_ratio").write_parquet(u)
    capacity = Path(sys.executable).with_name("capacity")
    command = (
        [str(capacity)] if capacity.exists() else [sys.executable, "-m", "capacity_pipelines.cli"]
    )
    done = subprocess.run(
        [*command, "rightsize", "--usage", str(u), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert pl.read_parquet(out)["container_id"].to_list() == ["shop/api/app"]


def cyclic_usage(days: int, seed: int = 5) -> pl.DataFrame:
    """A service busy by day (0.8 cores, 08-20 UTC) and quiet by night (0.1), and a flat
    sidecar, every 15 min from START."""
    rng = np.random.default_rng(seed)
    n = days * 96
    index = np.arange(n)
    hour = (index % 96) / 4
    busy = np.where((hour >= 8) & (hour < 20), 0.8, 0.1) + 0.03 * rng.standard_normal(n)
    flat = 0.2 + 0.01 * rng.standard_normal(n)
    ts = [START + dt.timedelta(minutes=15 * int(i)) for i in index]
    return pl.concat(
        [
            pl.DataFrame({"container_id": "shop/web/app", "ts": ts,
                          "cpu_cores": np.clip(busy, 0, None), "memory_bytes": np.full(n, 4e8)}),
            pl.DataFrame({"container_id": "shop/web/proxy", "ts": ts,
                          "cpu_cores": np.clip(flat, 0, None), "memory_bytes": np.full(n, 1e8)}),
        ]
    )  # fmt: skip


def test_schedule_and_profile_through_the_console_script(tmp_path: Path):
    u, s = tmp_path / "u.parquet", tmp_path / "s.parquet"
    cyclic_usage(14).write_parquet(u)
    pl.DataFrame(
        {
            "container_id": ["shop/web/app", "shop/web/proxy"],
            "cpu_request": [2.0, 1.0],
            "cpu_limit": [None, None],
            "memory_request": [1.0 * 1024**3, 0.5 * 1024**3],
            "memory_limit": [1.0 * 1024**3, 0.5 * 1024**3],
        },
        schema_overrides={"cpu_limit": pl.Float64},
    ).write_parquet(s)
    capacity = Path(sys.executable).with_name("capacity")
    command = (
        [str(capacity)] if capacity.exists() else [sys.executable, "-m", "capacity_pipelines.cli"]
    )
    exports = tmp_path / "exports"

    def run(out: Path, *extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*command, "rightsize", "--usage", str(u), "--spec", str(s), "--out", str(out),
             "--exports", str(exports), *extra],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done

    constant_out, schedule_out = tmp_path / "r.parquet", tmp_path / "schedule.parquet"
    run(constant_out, "--profile", "conservative")
    conservative = pl.read_parquet(constant_out)
    assert set(conservative["profile"]) == {"conservative"}
    run(constant_out)
    done = run(schedule_out, "--schedule")
    assert "hourly CPU schedule for 1" in done.stdout
    constant, schedule = pl.read_parquet(constant_out), pl.read_parquet(schedule_out)
    # the contract: R's columns plus an integer hour_utc, 24 rows per container
    assert "hour_utc" not in constant.columns and constant.height == 2
    assert schedule.columns == [*constant.columns, "hour_utc"]
    assert schedule["hour_utc"].dtype == pl.Int64
    counts = schedule.group_by("container_id").agg(pl.col("hour_utc").sort()).sort("container_id")
    assert counts["hour_utc"].to_list() == [list(range(24))] * 2
    assert set(schedule["profile"]) == {"balanced"}
    # the conservative profile asks for more CPU than the default (balanced) one
    assert (conservative.sort("container_id")["cpu_request"]
            > constant.sort("container_id")["cpu_request"]).all()  # fmt: skip
    app = schedule.filter(pl.col("container_id") == "shop/web/app").sort("hour_utc")
    by_hour = app["cpu_request"].to_list()
    assert max(by_hour[2:6]) < 0.5 < min(by_hour[10:18])  # quiet nights, busy days
    assert "schedule by UTC hour (backtest" in app["rationale"][0]
    proxy = schedule.filter(pl.col("container_id") == "shop/web/proxy")
    assert proxy["cpu_request"].n_unique() == 1
    assert "no schedule:" in proxy["rationale"][0]
    # exports: resize patches at the hours the request changes, and a rollback to 2 cores
    folder = exports / "schedules" / "shop__web"
    hours = sorted(p.name for p in folder.iterdir())
    assert "rollback.yaml" in hours and len(hours) >= 3
    text = (folder / hours[0]).read_text()
    assert "--subresource resize --type strategic" in text
    body = yaml.safe_load(text)
    assert [c["name"] for c in body["spec"]["containers"]] == ["app"]
    back = yaml.safe_load((folder / "rollback.yaml").read_text())["spec"]["containers"][0]
    assert back["resources"] == {"requests": {"cpu": "2"}}
    assert pl.read_csv(exports / "schedule.csv").height == 48
    # without --schedule the output is unchanged and the previous schedules are removed
    run(constant_out)
    assert pl.read_parquet(constant_out).equals(constant)
    assert not (exports / "schedules").exists() and not (exports / "schedule.csv").exists()

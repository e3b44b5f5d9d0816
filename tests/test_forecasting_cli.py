"""`capacity forecast`: the file contract, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from capacity_pipelines.forecasting.cli import EXIT_BAD_INPUT, OUTPUT_COLUMNS, main, register

START = datetime(2024, 3, 4)


def history(hours: int = 96, series: tuple[str, ...] = ("api", "db")) -> pl.DataFrame:
    frames = []
    for k, sid in enumerate(series):
        t = np.arange(hours)
        values = 100 * (k + 1) + 30 * np.sin(2 * np.pi * t / 24)
        frames.append(pl.DataFrame({
            "series_id": sid,
            "ts": [START + timedelta(hours=int(i)) for i in t],
            "value": values,
        }))
    return pl.concat(frames)


def run(tmp_path: Path, frame: pl.DataFrame | None, horizon: str = "12",
        raw: bytes | None = None) -> tuple[int, Path]:
    source = tmp_path / "H.parquet"
    if frame is not None:
        frame.write_parquet(source)
    elif raw is not None:
        source.write_bytes(raw)
    out = tmp_path / "out" / "F.parquet"
    code = main(["forecast", "--history", str(source), "--horizon", horizon, "--out", str(out),
                 "--workers", "1"])
    return code, out


def test_forecast_writes_the_contract(tmp_path: Path) -> None:
    code, out = run(tmp_path, history())
    assert code == 0
    forecast = pl.read_parquet(out)
    assert tuple(forecast.columns) == OUTPUT_COLUMNS
    assert forecast.height == 2 * 12
    assert forecast.schema["ts"] == pl.Datetime("us", "UTC")  # naive input is read as UTC
    first = forecast.filter(pl.col("series_id") == "api")["ts"].min()
    assert first == (START + timedelta(hours=96)).replace(tzinfo=UTC)
    assert not list(out.parent.glob(".*.tmp"))  # the temporary file was renamed away


def test_register_adds_the_subcommand_to_a_parent_parser() -> None:
    parser = argparse.ArgumentParser(prog="capacity")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["forecast", "--history", "h", "--horizon", "3", "--out", "o"])
    assert args.horizon == 3 and callable(args.func)


def _timestamps_as_text() -> pl.DataFrame:
    return history().with_columns(pl.col("ts").cast(pl.String))


def _with_value(value: float) -> pl.DataFrame:
    frame = history()
    return frame.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(value)
                              .otherwise(pl.col("value")).alias("value"))


@pytest.mark.parametrize("frame, raw, horizon, expected", [
    (None, None, "12", "file not found"),
    (None, b"this is not parquet", "12", "not a readable Parquet file"),
    (history().head(0), None, "12", "no rows"),
    (history().drop("value"), None, "12", "column value: missing"),
    (history().rename({"series_id": "service"}), None, "12", "column series_id: missing"),
    (_timestamps_as_text(), None, "12", "column ts: wrong type String, expected a timestamp"),
    (history().with_columns(pl.col("value").cast(pl.String)), None, "12",
     "column value: wrong type String, expected a number"),
    (_with_value(float("nan")), None, "12", "column value: 1 row(s) are NaN, first at row 7"),
    (_with_value(float("inf")), None, "12", "column value: 1 row(s) are infinite"),
    (pl.concat([history(), history().head(1)]), None, "12",
     "column ts: 2 duplicate (series_id, ts) rows"),
    (history(), None, "0", "--horizon must be 1..10,000 steps, got 0"),
], ids=["missing-file", "not-parquet", "empty", "no-value", "no-series-id", "ts-text",
        "value-text", "nan", "inf", "duplicate-ts", "horizon"])
def test_bad_input_is_one_line_exit_2_and_no_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], frame: pl.DataFrame | None,
        raw: bytes | None, horizon: str, expected: str) -> None:
    code, out = run(tmp_path, frame, horizon, raw)
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT
    assert expected in err
    assert len(err.splitlines()) == 1
    if not expected.startswith("--horizon"):
        assert "H.parquet" in err
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))

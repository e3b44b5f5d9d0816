"""The file-based commands (`forecast`, `rightsize`, `token-cost`) as a user runs them.

Each test starts the real CLI in a subprocess with the interpreter running the tests
(`python -m capacity_pipelines.cli`), on real Parquet files in a temporary folder, and checks
the contract of DESIGN.md: one line naming the path and the problem with exit code 2 for a bad
request, nothing written; UTC in, UTC out.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

UTC = dt.UTC
START = dt.datetime(2025, 3, 3)  # naive: the contract reads it as UTC
HOURS = 72
EXIT_BAD_REQUEST = 2
ERROR_LINE = re.compile(
    r"^capacity (?P<command>[\w-]+): error: (?P<file>/\S+): "
    r"column (?P<column>\w+): (?P<problem>.+)$"
)


def capacity(
    tmp_path: Path, *args: str | Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`capacity ARGS` in a subprocess, from `tmp_path`, with its own CAPACITY_HOME."""
    env = {**os.environ, "CAPACITY_HOME": str(tmp_path / "home")}
    env.pop("CAPACITY_PROMETHEUS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "capacity_pipelines.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused request (exit 2, no traceback, nothing on stdout)."""
    err = proc.stderr.strip()
    assert proc.returncode == EXIT_BAD_REQUEST, (proc.returncode, err[-2000:])
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def history(series: tuple[str, ...] = ("api", "db")) -> pl.DataFrame:
    """Hourly load with a daily cycle, `ts` without a zone."""
    t = np.arange(HOURS)
    return pl.concat(
        pl.DataFrame({
            "series_id": sid,
            "ts": [START + dt.timedelta(hours=int(i)) for i in t],
            "value": 100.0 * (k + 1) + 30 * np.sin(2 * np.pi * t / 24),
        })
        for k, sid in enumerate(series)
    )  # fmt: skip


def container_usage() -> pl.DataFrame:
    """Two days of one container every 15 minutes."""
    n = 2 * 96
    index = np.arange(n)
    return pl.DataFrame({
        "container_id": "shop/api/app",
        "ts": [START + dt.timedelta(minutes=15 * int(i)) for i in index],
        "cpu_cores": 0.3 + 0.1 * np.sin(2 * np.pi * index / 96),
        "memory_bytes": np.full(n, 400.0 * 1024**2),
    })  # fmt: skip


def token_usage(rows: int = 48) -> pl.DataFrame:
    """Hourly LLM usage of two agents on a priced model."""
    return pl.DataFrame({
        "ts": [dt.datetime(2025, 9, 1) + dt.timedelta(hours=i) for i in range(rows)],
        "provider": "openai",
        "model": "gpt-4o",
        "agent": ["planner", "coder"] * (rows // 2),
        "input_tokens": [1_000 + i for i in range(rows)],
        "output_tokens": [100 + i for i in range(rows)],
    })  # fmt: skip


# command -> (input flag, a valid input frame, its main numeric column, extra arguments)
COMMANDS = {
    "forecast": ("--history", history, "value", ["--horizon", "6", "--workers", "1"]),
    "rightsize": ("--usage", container_usage, "cpu_cores", []),
    "token-cost": ("--usage", token_usage, "input_tokens", []),
}


def _nan_at_row_5(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 5)
        .then(float("nan"))
        .otherwise(pl.col(column).cast(pl.Float64))
        .alias(column)
    )


BROKEN = {
    "NaN": (_nan_at_row_5, "1 row(s) are NaN, first at row 5"),
    "text": (lambda f, c: f.with_columns(pl.col(c).cast(pl.String)),
             "wrong type String, expected a number"),
    "missing": (lambda f, c: f.drop(c), "missing (a number; found: "),
}  # fmt: skip


@pytest.mark.parametrize("broken", list(BROKEN))
def test_three_commands_report_a_broken_column_in_one_style(tmp_path: Path, broken: str):
    """One validator, one wording: `<file>: column <name>: <problem>` whichever command reads."""
    breaks, problem = BROKEN[broken]
    for command, (flag, frame, column, extra) in COMMANDS.items():
        source = tmp_path / f"{command}.parquet"
        breaks(frame(), column).write_parquet(source)
        out = tmp_path / f"{command}.out.parquet"
        line = one_error_line(capacity(tmp_path, command, flag, source, "--out", out, *extra))
        match = ERROR_LINE.match(line)
        assert match, line
        assert (match["command"], match["file"], match["column"]) == (command, str(source), column)
        assert match["problem"].startswith(problem), line
        assert not out.exists()


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (history().filter((pl.col("series_id") == "api") | (pl.col("ts") < START
                          + dt.timedelta(hours=2))), "series 'db' has 2 points"),
        # pairs of hours 6 hours apart: 1 h steps, two thirds of the grid empty
        (history().filter((pl.col("series_id") == "api") | (pl.col("ts").dt.hour() % 6 < 2)),
         "series 'db' misses 6"),
    ],
    ids=["too-short", "too-sparse"],
)
def test_forecast_names_the_file_when_one_series_cannot_be_forecast(tmp_path, frame, problem):
    """Problems found while regularising the series (not by the file check) name the file too."""
    source = tmp_path / "H.parquet"
    frame.write_parquet(source)
    out = tmp_path / "F.parquet"
    line = one_error_line(capacity(tmp_path, "forecast", "--history", source, "--horizon", "6",
                                   "--out", out, "--workers", "1"))  # fmt: skip
    assert line.startswith(f"capacity forecast: error: {source}: column ts: {problem}"), line
    assert not out.exists()

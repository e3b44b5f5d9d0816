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
import tempfile
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


# -- an output that is an input -----------------------------------------------------------


def _spell_as_the_input(tmp_path: Path, source: Path, spelling: str) -> str:
    """Another name for `source`: how a user ends up overwriting the input by accident."""
    if spelling == "same":
        return str(source)
    if spelling == "relative":  # the commands run with cwd = tmp_path
        return f"./{source.name}"
    if spelling == "dotdot":
        (tmp_path / "sub").mkdir()
        return str(tmp_path / "sub" / ".." / source.name)
    link = tmp_path / f"{spelling}.parquet"
    if spelling == "symlink":
        link.symlink_to(source)
    else:
        os.link(source, link)
    return str(link)


SAME_FILE_CASES = [
    *((command, "same") for command in COMMANDS),
    *((command, "symlink") for command in COMMANDS),
    ("forecast", "relative"),
    ("forecast", "dotdot"),
    ("forecast", "hardlink"),
]


@pytest.mark.parametrize(("command", "spelling"), SAME_FILE_CASES)
def test_output_that_is_the_input_is_refused(tmp_path: Path, command: str, spelling: str):
    flag, frame, _, extra = COMMANDS[command]
    source = tmp_path / "input.parquet"
    frame().write_parquet(source)
    before = source.read_bytes()
    out = _spell_as_the_input(tmp_path, source, spelling)
    line = one_error_line(capacity(tmp_path, command, flag, source, "--out", out, *extra))
    assert f"{Path(out)}: is the input {source}" in line
    assert source.read_bytes() == before
    assert not [p for p in tmp_path.rglob(".*") if p.name != ".."]  # no temporary file left


@pytest.mark.parametrize(
    ("command", "folder_flag", "layout", "problem"),
    [
        ("token-cost", "--report-dir", "output named like a report file",
         "the command writes summary.json there, which is the output"),
        ("token-cost", "--report-dir", "output is the folder", "lies inside the output"),
        ("rightsize", "--exports", "output named like an export",
         "the command writes rightsizing.csv there, which is the output"),
    ],
)  # fmt: skip
def test_output_folder_that_would_overwrite_an_input_or_the_output_is_refused(
    tmp_path: Path, command: str, folder_flag: str, layout: str, problem: str
):
    """Only the files the command owns are replaced in the folder: one of them may not be an
    input or the other output."""
    flag, frame, _, extra = COMMANDS[command]
    folder = tmp_path / "report"
    folder.mkdir()
    source = tmp_path / "input.parquet"
    frame().write_parquet(source)
    out = {
        "output named like a report file": folder / "summary.json",
        "output named like an export": folder / "rightsizing.csv",
        "output is the folder": tmp_path / "report.parquet",
    }[layout]
    if layout == "output is the folder":
        folder.rmdir()
        folder = out
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    line = one_error_line(
        capacity(tmp_path, command, flag, source, "--out", out, folder_flag, folder, *extra)
    )
    assert f"{folder}: {problem}" in line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize(("command", "folder_flag"),
                         [("token-cost", "--report-dir"), ("rightsize", "--exports")])  # fmt: skip
def test_an_input_and_the_output_may_sit_in_the_export_folder(
    tmp_path: Path, command: str, folder_flag: str
):
    """What the command did not write is never touched: the input and the output file can live
    in the folder the exports go to."""
    flag, frame, _, extra = COMMANDS[command]
    folder = tmp_path / "report"
    folder.mkdir()
    source = folder / "input.parquet"
    frame().write_parquet(source)
    before = source.read_bytes()
    out = folder / "out.parquet"
    done = capacity(tmp_path, command, flag, source, "--out", out, folder_flag, folder, *extra)
    assert done.returncode == 0, done.stderr
    assert source.read_bytes() == before and out.is_file()


# -- paths that cannot be written ---------------------------------------------------------


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A read-only tmpfs: root writes through chmod, not through a read-only mount."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("output is a folder", "is a folder, expected a file path"),
        ("parent is a file", "is a file, not a folder"),
        ("input is a folder", "is a folder, expected a file"),
    ],
)
def test_unusable_path_is_one_line_naming_it(tmp_path: Path, command: str, case: str,
                                             problem: str):  # fmt: skip
    flag, frame, _, extra = COMMANDS[command]
    source = tmp_path / "input.parquet"
    frame().write_parquet(source)
    out = tmp_path / "out.parquet"
    if case == "output is a folder":
        out.mkdir()
    elif case == "parent is a file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out.parquet"
    else:
        source = tmp_path / "folder.parquet"
        source.mkdir()
    named = source if case == "input is a folder" else out
    line = one_error_line(capacity(tmp_path, command, flag, source, "--out", out, *extra))
    assert f"{named}: " in line and problem in line, line
    assert not (out.is_file() or list(tmp_path.glob(".out.parquet.*")))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_read_only_output_folder_is_one_line(tmp_path: Path, read_only_folder: Path, command):
    flag, frame, _, extra = COMMANDS[command]
    source = tmp_path / "input.parquet"
    frame().write_parquet(source)
    out = read_only_folder / "sub" / "out.parquet"
    line = one_error_line(capacity(tmp_path, command, flag, source, "--out", out, *extra))
    assert f"{out}: folder {read_only_folder} is not writable" in line


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs: a write that does not fit fails for real, mid-file."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("command", ["forecast", "token-cost"])
def test_disk_full_while_writing_is_one_line_naming_the_output(tmp_path, full_disk, command):
    """Polars reports ENOSPC as its own error, not an OSError: still one line, no traceback."""
    source = tmp_path / "input.parquet"
    if command == "forecast":
        history().write_parquet(source)
        extra = ["--history", source, "--horizon", "10000", "--workers", "1"]
    else:
        synthetic_token_usage(20_000).write_parquet(source)
        extra = ["--usage", source]
    out = full_disk / "out.parquet"
    line = one_error_line(capacity(tmp_path, command, *extra, "--out", out))
    assert f"{out}: cannot write: " in line and "No space left on device" in line, line
    assert list(full_disk.iterdir()) == []  # the temporary file is gone too


@pytest.mark.parametrize(
    ("command", "folder_flag"), [("token-cost", "--report-dir"), ("rightsize", "--exports")]
)
def test_output_folder_given_as_a_file_is_refused(tmp_path: Path, command, folder_flag):
    flag, frame, _, extra = COMMANDS[command]
    source = tmp_path / "input.parquet"
    frame().write_parquet(source)
    folder = tmp_path / "report"
    folder.write_text("not a folder")
    out = tmp_path / "out.parquet"
    line = one_error_line(
        capacity(tmp_path, command, flag, source, "--out", out, folder_flag, folder, *extra)
    )
    assert f"{folder}: is a file, expected a folder" in line
    assert folder.read_text() == "not a folder" and not out.exists()


def test_missing_parent_folders_of_outputs_are_created(tmp_path: Path):
    source = tmp_path / "usage.parquet"
    token_usage().write_parquet(source)
    out, report = tmp_path / "a" / "b" / "c.parquet", tmp_path / "x" / "y" / "report"
    proc = capacity(tmp_path, "token-cost", "--usage", source, "--out", out, "--report-dir", report)
    assert proc.returncode == 0, proc.stderr
    assert pl.read_parquet(out).height == 48 and (report / "summary.json").is_file()


# -- forecast horizon ---------------------------------------------------------------------


def test_absurd_horizon_is_refused_before_any_work(tmp_path: Path):
    """1e9 steps once allocated ~13 GB before failing; now refused at once, in bounded memory."""
    source = tmp_path / "H.parquet"
    history().write_parquet(source)
    out = tmp_path / "F.parquet"
    proc, peak_mib = run_measured(
        tmp_path, "forecast", "--history", source, "--horizon", "1000000000", "--out", out
    )
    line = one_error_line(proc)
    assert "--horizon must be 1..10,000 steps, got 1,000,000,000" in line
    assert peak_mib < 500, peak_mib
    assert not out.exists()
    # the bound is stated where a user looks for it
    assert "1..10,000" in " ".join(capacity(tmp_path, "forecast", "--help").stdout.split())


def test_horizon_at_the_bound_is_forecast(tmp_path: Path):
    source = tmp_path / "H.parquet"
    history(series=("api",)).write_parquet(source)
    out = tmp_path / "F.parquet"
    proc = capacity(tmp_path, "forecast", "--history", source, "--horizon", "10000",
                    "--out", out, "--workers", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert pl.read_parquet(out).height == 10_000


# Runs a command and writes its peak resident memory (KiB) to argv[1]. A small launcher
# between the test and the command matters: Linux carries the parent's high-water mark into
# the child's ru_maxrss across fork and exec, so measured straight from the test process the
# command would "peak" at whatever the test held when it started the command.
PEAK_RSS_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as peak:
    peak.write(str(usage.ru_maxrss))
sys.exit(child.returncode)
"""


def run_measured(tmp_path: Path, *args: str | Path) -> tuple[subprocess.CompletedProcess, float]:
    """`capacity ARGS` and the peak resident memory of that process alone (MiB)."""
    env = {**os.environ, "CAPACITY_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "capacity_pipelines.cli", *map(str, args)]
    with tempfile.TemporaryDirectory() as folder:  # outside tmp_path: tests check what is there
        peak = Path(folder) / "peak_kib"
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_LAUNCHER, str(peak), *command],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, check=False,
        )  # fmt: skip
        return done, int(peak.read_text()) / 1024


# -- UTC in, UTC out ----------------------------------------------------------------------


def test_forecast_is_utc_in_and_utc_out(tmp_path: Path):
    """A naive `ts` is read as UTC; a zoned one is converted; F's `ts` carries tz=UTC."""
    naive = history(series=("api",))
    berlin = naive.with_columns(
        pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Berlin")
    )
    forecasts = []
    for name, frame in (("naive", naive), ("berlin", berlin)):
        source, out = tmp_path / f"{name}.parquet", tmp_path / f"{name}.forecast.parquet"
        frame.write_parquet(source)
        proc = capacity(tmp_path, "forecast", "--history", source, "--horizon", "6",
                        "--out", out, "--workers", "1")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        forecasts.append(pl.read_parquet(out))
    for forecast in forecasts:
        assert forecast.schema["ts"] == pl.Datetime("us", "UTC")
        first = (START + dt.timedelta(hours=HOURS)).replace(tzinfo=UTC)  # the next hour, in UTC
        assert forecast["ts"].to_list() == [first + dt.timedelta(hours=h) for h in range(6)]
    assert forecasts[0].equals(forecasts[1])


def test_rightsize_reads_the_same_instants_the_same_whatever_the_zone(tmp_path: Path):
    """R has no timestamps: what UTC means here is that a zone changes nothing."""
    naive = container_usage()
    kolkata = naive.with_columns(
        pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("Asia/Kolkata")
    )
    results = []
    for name, frame in (("naive", naive), ("kolkata", kolkata)):
        source, out = tmp_path / f"{name}.parquet", tmp_path / f"{name}.r.parquet"
        frame.write_parquet(source)
        proc = capacity(tmp_path, "rightsize", "--usage", source, "--out", out)
        assert proc.returncode == 0, proc.stderr
        results.append(pl.read_parquet(out))
    assert results[0].height == 1 and results[0].equals(results[1])


def test_token_cost_prices_each_row_at_its_utc_instant(tmp_path: Path):
    """01:00 in Berlin on 2 Oct 2024 is 23:00 UTC on 1 Oct: the gpt-4o price before that day's
    change. A naive time is UTC. C's `ts` carries tz=UTC."""
    berlin = pl.DataFrame({
        "ts": [dt.datetime(2024, 10, 2, 1)],
        "provider": "openai", "model": "gpt-4o", "input_tokens": [1_000], "output_tokens": [10],
    }).with_columns(pl.col("ts").dt.replace_time_zone("Europe/Berlin"))  # fmt: skip
    source = tmp_path / "berlin.parquet"
    berlin.write_parquet(source)
    naive = tmp_path / "naive.csv"
    naive.write_text("ts,provider,model,input_tokens,output_tokens\n"
                     "2024-10-02T01:00:00,openai,gpt-4o,1000,10\n")  # fmt: skip
    costed = {}
    for name, usage in (("berlin", source), ("naive", naive)):
        out = tmp_path / f"{name}.cost.parquet"
        proc = capacity(tmp_path, "token-cost", "--usage", usage, "--out", out)
        assert proc.returncode == 0, proc.stderr
        costed[name] = pl.read_parquet(out).row(0, named=True)
        assert pl.read_parquet_schema(out)["ts"] == pl.Datetime("us", "UTC")
    assert costed["berlin"]["ts"] == dt.datetime(2024, 10, 1, 23, tzinfo=UTC)
    assert costed["berlin"]["price_id"] == "openai/gpt-4o/standard/all/2024-05-13"
    assert costed["naive"]["ts"] == dt.datetime(2024, 10, 2, 1, tzinfo=UTC)
    assert costed["naive"]["price_id"] == "openai/gpt-4o/standard/all/2024-10-02"


# -- token-cost memory --------------------------------------------------------------------


def synthetic_token_usage(rows: int) -> pl.DataFrame:
    """Per-step usage rows of a few models and agents, cache columns included."""
    rng = np.random.default_rng(11)
    models = np.array(["gpt-4o", "gpt-4o-mini", "o3", "in-house-7b"])
    start = int(dt.datetime(2025, 7, 1, tzinfo=UTC).timestamp() * 1e6)
    inputs = rng.integers(100, 50_000, rows)
    return pl.DataFrame({
        "ts": pl.Series(np.sort(rng.integers(start, start + 60 * 86_400_000_000, rows)))
        .cast(pl.Datetime("us", "UTC")),
        "provider": "openai",
        "model": models[rng.integers(0, len(models), rows)],
        "agent": np.array(["planner", "coder", "critic"])[rng.integers(0, 3, rows)],
        "input_tokens": inputs,
        "output_tokens": rng.integers(10, 4_000, rows),
        "cache_read_input_tokens": (inputs * rng.random(rows) * 0.5).astype(np.int64),
    })  # fmt: skip


@pytest.mark.timeout(600)
def test_token_cost_memory_is_bounded_by_the_batch_not_the_file(tmp_path: Path):
    """5x the rows (4 and 20 batches of the default size), about the same peak.

    Costing the whole file at once added ~1 GiB from 0.8 to 4 million rows (peaks of 0.40 and
    1.38 GiB, measured on the code before batching); in batches the peak moves by under 0.1 GiB.
    """
    peaks = {}
    for rows in (800_000, 4_000_000):
        source, out = tmp_path / f"u{rows}.parquet", tmp_path / f"c{rows}.parquet"
        synthetic_token_usage(rows).write_parquet(source)
        proc, peaks[rows] = run_measured(tmp_path, "token-cost", "--usage", source, "--out", out)
        assert proc.returncode == 0, proc.stderr
        assert f"costed {rows} rows" in proc.stdout
    assert pl.scan_parquet(out).select(pl.len()).collect().item() == 4_000_000
    assert peaks[4_000_000] < peaks[800_000] + 250, peaks


def test_token_cost_in_small_batches_gives_the_rows_of_one_pass(tmp_path: Path):
    """Batches change the memory, not the answer; a bad row is named by its row in the file."""
    usage = token_usage()
    source = tmp_path / "usage.csv"
    usage.write_csv(source)
    costed = []
    for batch_rows in ("7", "1000"):
        out = tmp_path / f"c{batch_rows}.parquet"
        proc = capacity(tmp_path, "token-cost", "--usage", source, "--out", out,
                        "--batch-rows", batch_rows)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        costed.append(pl.read_parquet(out))
    assert costed[0].height == usage.height and costed[0].equals(costed[1])
    assert costed[0]["cost_usd"].null_count() == 0

    broken = tmp_path / "broken.csv"
    usage.with_columns(
        pl.when(pl.int_range(pl.len()) == 30).then(-1).otherwise(pl.col("output_tokens"))
        .alias("output_tokens")
    ).write_csv(broken)  # fmt: skip
    out = tmp_path / "c.parquet"
    line = one_error_line(capacity(tmp_path, "token-cost", "--usage", broken, "--out", out,
                                   "--batch-rows", "7"))  # fmt: skip
    assert line.endswith(f"{broken}: column output_tokens: 1 row(s) are negative, first at row 30")
    assert not out.exists() and not list(tmp_path.glob(".c.parquet*"))

"""`capacity anomalies --history H.parquet --out A.parquet`.

H is the history `capacity forecast` reads: `series_id` (str), `ts` (timestamp; UTC, a
timestamp without a zone is read as UTC), `value` (number, may be negative; null or NaN = a
missing reading, scored 0). A has one row per row of H: `series_id`, `ts` (UTC), `score` in
[0, 1], `is_anomaly` (score >= the detector's fixed threshold), `kind` (spike, dip,
level_shift, trend_change, none). Each score is computed from the points before it only
(`anomalies/detector.py`), so running the command on a longer file never changes the scores of
the rows the shorter one had.

Repeated timestamps in a series (real exports have them: NAB's machine temperature repeats 24)
are scored as consecutive points, in file order, one output row per input row. Bad input (a
missing or mistyped column, an infinite value, an unreadable file, an output that would
overwrite the input) ends with one line on stderr naming the file and column, exit code 2, and
no output file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from capacity_pipelines.anomalies.detector import THRESHOLD, detect
from capacity_pipelines.common.contracts import (
    Column,
    ContractError,
    check_frame,
    read_parquet_input,
)
from capacity_pipelines.common.files import PublishError, replaced_on_success
from capacity_pipelines.common.formatting import safe_text
from capacity_pipelines.common.path_checks import PathError, check_output_file

COMMAND = "anomalies"
EXIT_BAD_INPUT = 2
BAD_INPUT = (ContractError, PathError, PublishError)
HISTORY_CONTRACT = (
    Column("series_id", "string"),
    Column("ts", "timestamp"),
    Column("value", "number", nullable=True, negative=True),
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `anomalies` subcommand; its handler is stored as `func` on the namespace."""
    parser = subparsers.add_parser(
        COMMAND,
        help="score every point of a history file for anomalies (no look-ahead)",
        description="Score each point of a history file (series_id, ts, value) from the points "
        f"before it: score in [0, 1], an anomaly at {THRESHOLD} and above, and its kind.",
    )
    parser.add_argument("--history", required=True, type=Path, help="history Parquet file (H)")
    parser.add_argument("--out", required=True, type=Path, help="scores Parquet file (A)")
    parser.set_defaults(func=run_anomalies)
    return parser


def read_history(path: Path) -> pl.DataFrame:
    """H checked against its contract; NaN values are read as missing readings (null)."""
    frame = read_parquet_input(path)
    if "value" in frame.columns and frame.schema["value"].is_float():
        frame = frame.with_columns(pl.col("value").fill_nan(None))
    return check_frame(frame, str(path), HISTORY_CONTRACT)


def run_anomalies(args: argparse.Namespace) -> int:
    """Handler of `capacity anomalies`; returns the process exit code."""
    try:
        check_output_file(args.out, [args.history])
        scored = detect(read_history(args.history))
        with replaced_on_success(args.out) as tmp:
            scored.write_parquet(tmp)
    except BAD_INPUT as error:
        print(f"capacity {COMMAND}: error: {safe_text(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    flagged = scored.filter(pl.col("is_anomaly"))
    kinds = ", ".join(
        f"{kind} {count}" for kind, count in flagged.group_by("kind").len().sort("kind").iter_rows()
    )
    print(
        safe_text(
            f"wrote {scored.height} rows for {scored['series_id'].n_unique()} series to "
            f"{args.out}: {flagged.height} anomalies" + (f" ({kinds})" if kinds else "")
        )
    )
    return 0


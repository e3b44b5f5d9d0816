"""`capacity bottlenecks --usage U.parquet --out O.parquet [--backtest] [--labels-out L.parquet]`.

The bottleneck outlook (what saturates first within 24 h and 7 days) on a user's own metrics,
and its walk-forward backtest, without a warehouse (`bottlenecks/contract.py` does the work).

U: `series_id` (str), `ts` (UTC-zoned timestamp), `cpu_cores`, `cpu_capacity_cores`,
`memory_bytes`, `memory_capacity_bytes` (numbers; capacities may change over time; null =
unknown, 0 = switched off: both are missing data, as is a null usage). Optional columns add
signals and classes: `cpu_throttled_ratio` (0..1), `oom_kills`, `latency_seconds`,
`requests_in_flight` (with latency: `queueing`), `llm_rate_limited_share` (0..1:
`llm_provider`); `latency_seconds` adds `io_database`. With only the required columns the
classes are `cpu`, `memory`, `none`.

O: `series_id`, `origin` (UTC hour start), `horizon` ('24h' | '7d'), `class`, `probability`:
one row per class, 'none' included, probabilities summing to 1 per (series_id, origin,
horizon); every such triple lists the same classes. Without `--backtest`: one origin, the hour
after U's last complete hour. With `--backtest`: every hourly origin from each series' first
UTC midnight plus 7 days up to 24 h before its data ends, each predicted from rows with
`ts < origin` only by a model retrained at that day's midnight from the data before it.

L (`--labels-out`): `series_id`, `hour` (UTC hour start), `class`: the USE-rule label of every
hour, the truth the backtest's targets come from (the class of the first labelled hour in
`[origin, origin + horizon)`, else 'none').

Bad input (a missing column, naive timestamps, negative usage, a share above 1, an unreadable
file, an output that would overwrite the input) ends with one line on stderr naming the file
and column, exit code 2, and nothing written. Repeated (series_id, ts) rows are read, not
refused: an hour's label rests on its highest reading, which a repeated sample cannot change.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from capacity_pipelines.bottlenecks.contract import (
    backtest,
    check_usage,
    label_usage,
    labels_table,
    outlook_now,
    usage_windows,
)
from capacity_pipelines.common.contracts import ContractError, read_parquet_input
from capacity_pipelines.common.files import PublishError, replaced_on_success
from capacity_pipelines.common.formatting import safe_text
from capacity_pipelines.common.path_checks import PathError, check_output_file

COMMAND = "bottlenecks"
EXIT_BAD_INPUT = 2
BAD_INPUT = (ContractError, PathError, PublishError)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `bottlenecks` subcommand; its handler is stored as `func` on the namespace."""
    parser = subparsers.add_parser(
        COMMAND,
        help="bottleneck outlook (24 h, 7 d) and its walk-forward backtest from a usage file",
        description="What saturates first within 24 h and 7 days, per series of a usage file "
        "(series_id, ts UTC, cpu_cores, cpu_capacity_cores, memory_bytes, "
        "memory_capacity_bytes), with a probability per class.",
    )
    parser.add_argument("--usage", required=True, type=Path, help="usage Parquet file (U)")
    parser.add_argument("--out", required=True, type=Path, help="outlook Parquet file (O)")
    parser.add_argument(
        "--backtest",
        action="store_true",
        help="every hourly origin from each series' 8th day, walk-forward (no look-ahead)",
    )
    parser.add_argument("--labels-out", type=Path, help="hourly labels Parquet file (L)")
    parser.set_defaults(func=run_bottlenecks)
    return parser


def _read_usage(path: Path) -> pl.DataFrame:
    return check_usage(read_parquet_input(path), str(path))


def _check_paths(args: argparse.Namespace) -> None:
    check_output_file(args.out, [args.usage])
    if args.labels_out is not None:
        check_output_file(args.labels_out, [args.usage, args.out])


def run_bottlenecks(args: argparse.Namespace) -> int:
    """Handler of `capacity bottlenecks`; returns the process exit code."""
    try:
        _check_paths(args)
        usage = usage_windows(_read_usage(args.usage))
        labelled = label_usage(usage)
        outlook = backtest(usage, labelled) if args.backtest else outlook_now(usage, labelled)
        with replaced_on_success(args.out) as tmp:
            outlook.write_parquet(tmp)
        if args.labels_out is not None:
            with replaced_on_success(args.labels_out) as tmp:
                labels_table(labelled).write_parquet(tmp)
    except BAD_INPUT as error:
        print(f"capacity {COMMAND}: error: {safe_text(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for resource, reason, rows in usage.dropped.iter_rows():
        print(f"capacity {COMMAND}: {rows} {resource} rows not readings ({reason}): missing data")
    origins = outlook.select("series_id", "origin").unique().height
    print(
        safe_text(
            f"wrote {outlook.height} rows to {args.out} ({usage.windows['service'].n_unique()} "
            f"series, {origins} series-origins, classes {', '.join(usage.classes)})"
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `bottlenecks` as a stand-alone command (tests, `python -m`)."""
    parser = argparse.ArgumentParser(prog="capacity")
    register(parser.add_subparsers(dest="command", required=True))
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args([COMMAND, *arguments])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

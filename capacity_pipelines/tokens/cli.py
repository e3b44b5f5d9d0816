"""`capacity token-cost --usage U --out C.parquet [--prices PATH] [--report-dir DIR]`.

U is a Parquet, CSV or JSONL usage file or per-request trace (Azure LLM 2023, Mooncake, generic).

`register(subparsers)` adds the subcommand to the project CLI; `main(argv)` runs it alone.
C is every usage row plus `cost_usd`, its components and `price_id`; `ts` is UTC (a time without
a zone is read as UTC). Bad input ends with one line on stderr naming the file, the column and
the problem, exit code 2, and nothing written: C goes to a temporary file renamed only when
complete. `--report-dir DIR` replaces only the files the previous report wrote there (listed in
`DIR/.capacity-owned.json`), each complete or absent, and leaves anything else in DIR alone (the
usage file, a user's notes). An output that would overwrite an input (any spelling or link of
it), a report file name that is an input or C, a folder where a file is expected or the
reverse, and a parent that cannot be written are refused the same way before any work. Missing
parent folders are created.

Memory: the usage file is read, validated, costed and written in batches of `BATCH_ROWS` rows,
so costing's peak does not grow with the file (benchmarks/results/tokens.md). The report
(`--report-dir`) needs every costed row at once and reads them back whole.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import polars as pl

from capacity_pipelines.common.contracts import ContractError
from capacity_pipelines.common.files import PublishError, replaced_on_success
from capacity_pipelines.common.formatting import safe_text
from capacity_pipelines.common.path_checks import PathError, check_output_file, check_output_folder
from capacity_pipelines.tokens.batches import BATCH_ROWS, cost_usage_file
from capacity_pipelines.tokens.prices import PriceBookError, load_price_book
from capacity_pipelines.tokens.report import (
    BudgetThreshold,
    build_report,
    engine_spend_forecast,
    write_report,
)
from capacity_pipelines.tokens.savings import SavingsAssumptions
from capacity_pipelines.tokens.usage import UsageContractError

EXIT_BAD_INPUT = 2
COMMAND = "token-cost"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `token-cost` subcommand; its handler is stored as `func` on the namespace."""
    parser = subparsers.add_parser(
        COMMAND,
        help="LLM spend per row, agent and model from a dated price book",
        description="Cost LLM usage rows (or a per-request trace) with the price valid at each"
        " row's time; optionally write the token-cost report content.",
    )
    parser.add_argument("--usage", required=True, type=Path, help="usage file: parquet/csv/jsonl")
    parser.add_argument("--out", required=True, type=Path, help="costed rows, Parquet")
    parser.add_argument(
        "--prices",
        type=Path,
        action="append",
        default=[],
        help="override price file or folder (models, contract discounts); repeatable",
    )
    parser.add_argument("--report-dir", type=Path, help="write report tables (CSV) and summary")
    parser.add_argument("--provider", help="provider for trace files without a provider column")
    parser.add_argument("--model", help="model for trace files without a model column")
    parser.add_argument(
        "--trace-start",
        help="ISO time: anchor of relative trace timestamps, or new start of an absolute trace",
    )
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="NAME=USD",
        help="monthly budget threshold for the report, e.g. team=5000; repeatable",
    )
    parser.add_argument(
        "--non-interactive-agent",
        action="append",
        default=[],
        help="agent whose calls could use the batch tier (savings estimate); repeatable",
    )
    parser.add_argument(
        "--batch-rows",
        type=_positive_int,
        default=BATCH_ROWS,
        help=f"usage rows costed at a time; memory grows with it (default {BATCH_ROWS:,})",
    )
    parser.set_defaults(func=run_token_cost)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parse_time(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageContractError(f"--trace-start: not an ISO date/time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _parse_budget(text: str) -> BudgetThreshold:
    name, sep, amount = text.partition("=")
    try:
        usd = float(amount)
    except ValueError:
        usd = float("nan")
    if not sep or not name or not (usd > 0):
        raise UsageContractError(f"--budget: expected NAME=USD with USD > 0, got {text!r}")
    return BudgetThreshold(name=name, monthly_usd=usd)


# What the report writes in `--report-dir` (table CSVs and the summary), as name patterns.
REPORT_FILES = ("*.csv", "summary.json")


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse outputs that would overwrite an input or cannot be written, before any work."""
    inputs = [args.usage, *args.prices]
    check_output_file(args.out, inputs)
    if args.report_dir:
        check_output_folder(args.report_dir, inputs, outputs=[args.out], writes=REPORT_FILES)


def run_token_cost(args: argparse.Namespace) -> int:
    """Handler of `capacity token-cost`; returns the process exit code."""
    try:
        thresholds = [_parse_budget(b) for b in args.budget]
        trace_start = _parse_time(args.trace_start) if args.trace_start else None
        _check_paths(args)
        book = load_price_book(list(args.prices))
        with ExitStack() as stack:
            costed_file = stack.enter_context(replaced_on_success(args.out))
            costed = cost_usage_file(
                args.usage,
                costed_file,
                book,
                provider=args.provider,
                model=args.model,
                trace_start=trace_start,
                batch_rows=args.batch_rows,
            )
            report = None
            if args.report_dir:
                # Per-request costs and prefix reuse need every row at once: the report reads
                # the costed rows back whole (its memory grows with the file; costing's does not).
                report = build_report(
                    pl.read_parquet(costed_file),
                    book,
                    forecaster=engine_spend_forecast,
                    thresholds=thresholds,
                    assumptions=SavingsAssumptions(
                        non_interactive_agents=tuple(args.non_interactive_agent)
                    ),
                )
        # C is in place; the report is published after it (each file complete or absent).
        if report is not None:
            write_report(report, args.report_dir)
    except (ContractError, PathError, PublishError, PriceBookError) as error:
        print(f"capacity {COMMAND}: error: {safe_text(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    unpriced = costed.unpriced_rows
    print(
        f"costed {costed.rows} rows: ${costed.cost_usd:,.4f} for {costed.rows - unpriced} priced"
        " rows"
        + (f"; {unpriced} unpriced rows (cost_usd NULL, see the report)" if unpriced else "")
        + f" -> {args.out}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `token-cost` as a stand-alone command (tests, `python -m`)."""
    parser = argparse.ArgumentParser(prog="capacity")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    argv = list(argv if argv is not None else sys.argv[1:])
    if argv[:1] != [COMMAND]:
        argv.insert(0, COMMAND)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

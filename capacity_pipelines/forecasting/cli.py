"""`capacity forecast --history H.parquet --horizon N --out F.parquet`.

H is the long history `series_id` (str), `ts` (timestamp), `value` (float), one or more series;
each series' step is inferred from its timestamps. F holds, for every series, the N steps after
its last timestamp: `series_id`, `ts`, `point`, `p50`, `p80`, `p90`, `p95`, `model`,
`interval_method`. Timestamps are UTC in and out: `ts` in F carries `tz=UTC`, and a `ts`
without a zone in H is read as UTC.

The horizon is counted in steps of each series and is at most `MAX_HORIZON_STEPS` (10,000):
a year of hourly steps (8,760) fits, as do 34 days of 5-minute steps. F has one row per series
and step, so its size is series x N; the bound refuses a mistyped horizon before any work
instead of allocating gigabytes and failing.

`register(subparsers)` adds the subcommand to the project CLI; `main(argv)` runs it alone.
A bad request (a horizon out of range, an unreadable history, an output that would overwrite
the input or cannot be written) ends with one line on stderr naming the path or the column and
the problem, exit code 2, and no output file: the forecast is written to a temporary file next
to the target and renamed only when complete.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from capacity_pipelines.common.contracts import ContractError, read_parquet_input
from capacity_pipelines.common.files import replaced_on_success
from capacity_pipelines.common.formatting import safe_text
from capacity_pipelines.common.path_checks import PathError, check_output_file
from capacity_pipelines.forecasting.engine import CapacityForecaster, EngineSettings
from capacity_pipelines.forecasting.frames import HistoryError, validate_history

EXIT_BAD_INPUT = 2
OUTPUT_COLUMNS = ("series_id", "ts", "point", "p50", "p80", "p90", "p95", "model",
                  "interval_method")
# See the module docstring: a year of hourly steps; far beyond what any history supports.
MAX_HORIZON_STEPS = 10_000


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `forecast` subcommand; its handler is stored as `func` on the namespace."""
    parser = subparsers.add_parser(
        "forecast", help="forecast load with calibrated upper quantiles",
        description="Forecast each series of a long history file (series_id, ts, value) "
                    "N steps ahead with p50/p80/p90/p95; timestamps are UTC in and out.")
    parser.add_argument("--history", required=True, type=Path, help="input Parquet file")
    parser.add_argument("--horizon", required=True, type=int,
                        help=f"steps to forecast, 1..{MAX_HORIZON_STEPS:,} "
                             "(in each series' own step)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output Parquet file (not the input; parent folders are created)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.set_defaults(func=run_forecast)
    return parser


def _read_history(path: Path) -> pl.DataFrame:
    frame = read_parquet_input(path, HistoryError)
    return validate_history(frame, str(path), allow_missing_values=False)


def run_forecast(args: argparse.Namespace) -> int:
    """Handler of `capacity forecast`; returns the process exit code."""
    try:
        if not 1 <= args.horizon <= MAX_HORIZON_STEPS:
            raise HistoryError(
                f"--horizon must be 1..{MAX_HORIZON_STEPS:,} steps, got {args.horizon:,}"
            )
        check_output_file(args.out, inputs=[args.history])
        history = _read_history(args.history)
        engine = CapacityForecaster(EngineSettings(workers=args.workers)).fit(
            history, source=str(args.history))
        # The engine works in naive UTC; the file contract is explicit about the zone.
        forecast = engine.predict(args.horizon).select(OUTPUT_COLUMNS).with_columns(
            pl.col("ts").dt.replace_time_zone("UTC"))
        with replaced_on_success(args.out) as tmp:
            forecast.write_parquet(tmp)
    except (ContractError, PathError) as error:
        print(f"capacity forecast: error: {safe_text(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {forecast.height} rows for {forecast['series_id'].n_unique()} series "
          f"to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `forecast` as a stand-alone command (tests, `python -m`)."""
    parser = argparse.ArgumentParser(prog="capacity")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

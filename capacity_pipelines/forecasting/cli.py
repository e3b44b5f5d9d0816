"""`capacity forecast --history H.parquet --horizon N --out F.parquet`.

`register(subparsers)` adds the subcommand to the project CLI; `main(argv)` runs it alone.
Bad input ends with one line on stderr naming the file, the column and the problem, exit code 2,
and no output file: the forecast is written to a temporary file next to the target and renamed
only when complete.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from capacity_pipelines.common.files import replaced_on_success
from capacity_pipelines.forecasting.engine import CapacityForecaster, EngineSettings
from capacity_pipelines.forecasting.frames import HistoryError, validate_history

EXIT_BAD_INPUT = 2
OUTPUT_COLUMNS = ("series_id", "ts", "point", "p50", "p80", "p90", "p95", "model",
                  "interval_method")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `forecast` subcommand; its handler is stored as `func` on the namespace."""
    parser = subparsers.add_parser(
        "forecast", help="forecast load with calibrated upper quantiles",
        description="Forecast each series of a long history file (series_id, ts, value) "
                    "N steps ahead with p50/p80/p90/p95.")
    parser.add_argument("--history", required=True, type=Path, help="input Parquet file")
    parser.add_argument("--horizon", required=True, type=int, help="steps to forecast")
    parser.add_argument("--out", required=True, type=Path, help="output Parquet file")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.set_defaults(func=run_forecast)
    return parser


def _read_history(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise HistoryError(f"{path}: file not found")
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # noqa: BLE001 - any reader failure is "not a Parquet file"
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise HistoryError(f"{path}: not a readable Parquet file ({first_line})") from error
    return validate_history(frame, str(path), allow_missing_values=False)


def run_forecast(args: argparse.Namespace) -> int:
    """Handler of `capacity forecast`; returns the process exit code."""
    try:
        if args.horizon < 1:
            raise HistoryError(f"--horizon must be >= 1, got {args.horizon}")
        history = _read_history(args.history)
        engine = CapacityForecaster(EngineSettings(workers=args.workers)).fit(
            history, source=str(args.history))
        forecast = engine.predict(args.horizon).select(OUTPUT_COLUMNS)
    except HistoryError as error:
        print(f"capacity forecast: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out: Path = args.out
    with replaced_on_success(out) as tmp:
        forecast.write_parquet(tmp)
    print(f"wrote {forecast.height} rows for {forecast['series_id'].n_unique()} series to {out}")
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

"""`capacity rightsize --usage U.parquet [--spec S.parquet] --out R.parquet [--exports DIR]
[--policy policy.yaml] [--prices compute.yaml] [--node-class aws/m6i]
[--profile conservative|balanced|aggressive] [--schedule]`.

U needs `container_id, ts, cpu_cores, memory_bytes`; optional U columns are used when present:
`pod` (samples of several pods per container; duplicates are then checked per pod), `workload`,
`namespace`, `container` (otherwise parsed from a `namespace/workload/container` id),
`oom_killed`, `restarts` (with both, an OOM kill is a step with restarts and the flag),
`cpu_throttled_ratio`, `replicas`, `memory_limit_bytes` (the limit at each sample, for the OOM
bump), `workload_kind`. `workload_kind` (nullable string: Deployment, StatefulSet, DaemonSet, ...,
null = unknown) may come in U (one kind per container) or S; S fills U's nulls, a disagreement is
refused. R carries it so patches can name the right object.

`register(subparsers)` adds the subcommand to the project CLI; `main(argv)` runs it alone.
Every container must name a valid Kubernetes namespace, workload and container (DNS-1123; from
those columns or an id of exactly three parts), since the patches carry them to `kubectl`.

Bad input ends with one line on stderr naming the file, the column (or row and label) and the
problem, exit code 2, and nothing written: R goes to a temporary file renamed only when complete.
`--exports DIR` replaces only the files the previous export wrote there (listed in
`DIR/.capacity-owned.json`) and leaves anything else in DIR alone; `patches/` is swapped whole.
An output that would overwrite an input (any spelling or link of it), an export file that is an
input or R, a folder where a file is expected or the reverse, and a parent that cannot be
written are refused the same way before any work. Missing parent folders are created.

With `--schedule`, R is the same columns plus `hour_utc` (int 0-23), 24 rows per container (the
CPU request of each UTC hour; containers whose own backtest does not support a schedule repeat
their constant request, the rationale says why). Without it, R is unchanged.

R has no timestamps; the usage `ts` is read as UTC when it has no zone and converted otherwise,
so the same instants give the same recommendation whatever zone the export used.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from capacity_pipelines.common.contracts import ContractError, read_parquet_input
from capacity_pipelines.common.files import PublishError, replaced_on_success
from capacity_pipelines.common.formatting import safe_text
from capacity_pipelines.common.path_checks import (
    PathError,
    check_output_file,
    check_output_folder,
)
from capacity_pipelines.rightsizing.outputs import EXPORT_NAMES, build_exports, publish_exports
from capacity_pipelines.rightsizing.policy import PolicyError, load_policy
from capacity_pipelines.rightsizing.prices import PriceBookError, load_compute_prices
from capacity_pipelines.rightsizing.profiles import DEFAULT_PROFILE, PROFILES
from capacity_pipelines.rightsizing.recommend import InputError, rightsize_usage, validate_usage
from capacity_pipelines.rightsizing.strategies import ForecastAwareSettings, ForecastAwareStrategy
from capacity_pipelines.rightsizing.workloads import LabelError, check_usage_names

EXIT_BAD_INPUT = 2
BAD_INPUT = (ContractError, LabelError, PathError, PublishError, PolicyError, PriceBookError)
COMMAND = "rightsize"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `rightsize` subcommand; its handler is stored as `func` on the namespace."""
    parser = subparsers.add_parser(
        COMMAND,
        help="forecast-aware CPU / memory requests with $ savings and Kubernetes patches",
        description="Recommend CPU and memory requests and limits per container from its usage "
        "history (container_id, ts, cpu_cores, memory_bytes), priced with the compute price book.",
    )
    parser.add_argument(
        "--usage",
        required=True,
        type=Path,
        help="usage Parquet file (U); optional column workload_kind (Deployment, StatefulSet, "
        "DaemonSet, ...; null = unknown)",
    )
    parser.add_argument(
        "--spec",
        type=Path,
        help="current requests / limits Parquet file (S); may carry workload_kind instead of U",
    )
    parser.add_argument("--out", required=True, type=Path, help="recommendations Parquet (R)")
    parser.add_argument("--exports", type=Path, help="folder for CSV, JSON, table and patches")
    parser.add_argument("--policy", type=Path, help="limits policy YAML (default: no CPU limit)")
    parser.add_argument("--prices", type=Path, help="compute price book YAML (default: built-in)")
    parser.add_argument("--node-class", help="price book node class, e.g. gcp/n2")
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        default=DEFAULT_PROFILE,
        help="risk profile: the CPU violation target and memory margin the recommendations "
        f"aim at (default {DEFAULT_PROFILE}; see docs/rightsizing.md)",
    )
    parser.add_argument(
        "--schedule",
        action="store_true",
        help="opt-in CPU requests by UTC hour of day (in-place pod resize): R gets hour_utc, 24 "
        "rows per container; --exports adds schedule.csv and schedules/ (resize patches by "
        "hour and a rollback)",
    )
    parser.set_defaults(func=run_rightsize)
    return parser


def _read_parquet(path: Path) -> pl.DataFrame:
    return read_parquet_input(path, InputError)


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse outputs that would overwrite an input or cannot be written, before any work."""
    inputs = [args.usage, args.spec, args.policy, args.prices]
    check_output_file(args.out, inputs)
    if args.exports:
        check_output_folder(args.exports, inputs, outputs=[args.out], writes=EXPORT_NAMES)


def run_rightsize(args: argparse.Namespace) -> int:
    """Handler of `capacity rightsize`; returns the process exit code."""
    try:
        _check_paths(args)
        usage = _read_parquet(args.usage)
        # Names first: a bad label is refused before the minutes of forecasting.
        check_usage_names(validate_usage(usage, str(args.usage)), str(args.usage))
        spec = _read_parquet(args.spec) if args.spec else None
        policy = load_policy(args.policy)
        prices = load_compute_prices(args.prices) if args.prices else load_compute_prices()
        if args.node_class:
            prices.price(args.node_class)
        strategy = ForecastAwareStrategy(ForecastAwareSettings(profile=args.profile))
        result = rightsize_usage(
            usage,
            spec,
            strategy=strategy,
            policy=policy,
            prices=prices,
            node_class=args.node_class,
            usage_source=str(args.usage),
            spec_source=str(args.spec),
            schedule=args.schedule,
        )
        frame = result.recommendations
        exports = build_exports(frame, result.schedule) if args.exports else None
        with replaced_on_success(args.out) as tmp:
            (result.schedule if args.schedule else frame).write_parquet(tmp)
        if exports is not None:
            publish_exports(exports, args.exports)
    except BAD_INPUT as error:
        print(f"capacity {COMMAND}: error: {safe_text(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if exports is not None:
        for refused in exports.patches.refused:
            note = f"capacity {COMMAND}: no patch for {refused.workload}: {refused.reason}"
            print(safe_text(note), file=sys.stderr)
    kinds = frame["kind"].value_counts().sort("kind")
    summary = ", ".join(f"{k} {n}" for k, n in kinds.iter_rows())
    saving = frame["monthly_saving_usd"].drop_nulls().sum()
    scheduled = ""
    if result.schedule is not None:
        moving = result.schedule.group_by("container_id").agg(pl.col("cpu_request").n_unique())
        scheduled = f"; hourly CPU schedule for {int((moving['cpu_request'] > 1).sum())}"
    print(
        safe_text(
            f"wrote {frame.height} recommendations to {args.out} ({summary}); "
            f"net ${saving:,.2f}/month{scheduled}"
        )
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `rightsize` as a stand-alone command (tests, `python -m`)."""
    parser = argparse.ArgumentParser(prog="capacity")
    register(parser.add_subparsers(dest="command", required=True))
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args([COMMAND, *arguments])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

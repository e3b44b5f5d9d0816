"""The `capacity` command: run the pipeline, extract a window, open the UI, file-based tools.

Pipeline commands (`pipeline.py`) launch the same Dagster jobs the schedules launch, as runs in
the instance under `CAPACITY_HOME` (supervised by `runs.py`); store commands (`store.py`) back
up and restore the warehouse and the SRE decisions; the file-based commands (`forecast`,
`token-cost`, ...) are registered by their domain packages.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# File-based subcommands that domain packages add with `register(subparsers)`. A domain is
# imported only when its command runs, so `capacity demo` never pays for (or trips over) the
# import of statsmodels, LightGBM or a domain it does not use.
DOMAIN_COMMANDS = {
    "forecast": ("capacity_pipelines.forecasting.cli", "forecast series from a history file"),
    "token-cost": ("capacity_pipelines.tokens.cli", "cost LLM usage with the dated price book"),
    "rightsize": ("capacity_pipelines.rightsizing.cli", "recommend CPU and memory requests"),
    "recs": ("capacity_pipelines.recommendations.cli", "review the ranked recommendations"),
    "bottlenecks": (
        "capacity_pipelines.bottlenecks.cli",
        "bottleneck outlook and its backtest from a usage file",
    ),
    "anomalies": (
        "capacity_pipelines.anomalies.cli",
        "score every point of a history file for anomalies",
    ),
}
EXIT_INTERRUPTED = {2: 130, 15: 143}  # SIGINT, SIGTERM: the shell's 128 + signal number


def _window_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", required=True, help="first day (YYYY-MM-DD, UTC)")
    parser.add_argument("--end", required=True, help="day after the last one (exclusive)")
    parser.add_argument("--prometheus-url", help="default: $CAPACITY_PROMETHEUS_URL")
    parser.add_argument("--files", nargs="+", help="OpenMetrics / long Parquet or CSV exports")


def build_parser(domain: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; `domain` names the one domain command to load fully."""
    from capacity_pipelines.cli import pipeline, store

    parser = argparse.ArgumentParser(
        prog="capacity",
        description="Capacity planning for LLM-backed multi-agent services (Dagster + DuckDB).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole asset graph on the bundled demo fleet")
    demo.add_argument("--days", type=int, default=0, help="only the last N days of the demo")
    demo.set_defaults(func=pipeline.cmd_demo)

    extract = sub.add_parser("extract", help="extract whole days into the warehouse (only)")
    _window_options(extract)
    extract.set_defaults(func=pipeline.cmd_extract)

    run = sub.add_parser(
        "run", help="the daily pipeline (what the schedule runs) for whole days"
    )
    _window_options(run)
    run.set_defaults(func=pipeline.cmd_run)

    report = sub.add_parser("report", help="build one week's capacity report (weekly job)")
    report.add_argument(
        "--week", help="ISO week, e.g. 2026-W43 (default: the last complete week with data)"
    )
    report.set_defaults(func=pipeline.cmd_report)

    ui = sub.add_parser("ui", help="start the Dagster UI on 127.0.0.1")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=pipeline.cmd_ui)

    store.register(sub)

    for name, (module_name, help_text) in DOMAIN_COMMANDS.items():
        if name == domain:
            importlib.import_module(module_name).register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `capacity` console script."""
    from capacity_pipelines.cli.pipeline import UsageError
    from capacity_pipelines.cli.runs import RunFailed, RunInterrupted, interruptible
    from capacity_pipelines.ingest.catalog import CatalogError
    from capacity_pipelines.ingest.sources.base import SourceError
    from capacity_pipelines.ingest.sources.openmetrics import ExportFormatError
    from capacity_pipelines.warehouse import (
        RestoreError,
        WarehouseBusyError,
        WarehouseCorruptError,
    )

    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in DOMAIN_COMMANDS else None).parse_args(argv)
    bad_input = (
        UsageError, CatalogError, SourceError, ExportFormatError, WarehouseBusyError,
        WarehouseCorruptError, RestoreError, FileExistsError,
    )  # fmt: skip
    try:
        with interruptible():
            return args.func(args)
    except bad_input as exc:
        print(f"capacity {args.command}: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        outcome = f"; {exc.outcome}" if exc.outcome else ""
        print(f"capacity {args.command}: interrupted ({exc}){outcome}", file=sys.stderr)
        return EXIT_INTERRUPTED.get(exc.signum, 128 + exc.signum)
    except RunFailed as exc:
        print(f"capacity {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"capacity {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

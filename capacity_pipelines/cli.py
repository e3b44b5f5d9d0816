"""The `capacity` command: run the pipeline, extract a window, open the UI, file-based tools.

Pipeline commands launch real Dagster runs in process (so the warehouse is written only by
Dagster runs and the runs show in the UI afterwards); the file-based commands (`forecast`,
`token-cost`, ...) are registered by their domain packages.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from capacity_pipelines.common import paths

# File-based subcommands that domain packages add with `register(subparsers)`. A domain is
# imported only when its command runs, so `capacity demo` never pays for (or trips over) the
# import of statsmodels, LightGBM or a domain it does not use.
DOMAIN_COMMANDS = {
    "forecast": ("capacity_pipelines.forecasting.cli", "forecast series from a history file"),
    "token-cost": ("capacity_pipelines.tokens.cli", "cost LLM usage with the dated price book"),
    "rightsize": ("capacity_pipelines.rightsizing.cli", "recommend CPU and memory requests"),
    "recs": ("capacity_pipelines.recommendations.cli", "review the ranked recommendations"),
}
DAGSTER_YAML = """\
# Written by `capacity`: a local instance for the demo and the UI.
telemetry:
  enabled: false
concurrency:
  pools:
    default_limit: 1  # the warehouse pool: one writer at a time
run_retries:
  enabled: true
  max_retries: 2
"""


# The run's own log stays in the Dagster instance; the terminal shows progress lines only.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


class UsageError(Exception):
    """Bad command-line input; printed as one line with exit code 2."""


def dagster_home() -> Path:
    """A persistent Dagster instance under CAPACITY_HOME, so CLI runs show up in the UI."""
    home = Path(os.environ.get("DAGSTER_HOME") or paths.capacity_home() / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        raise UsageError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None


def run_partitions(
    first_day: date,
    last_day: date,
    log=print,
    report_week: str | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, int]:
    """Materialise every daily asset for days `first_day..last_day` in one run per asset.

    Assets partitioned otherwise (the weekly report) are skipped, or, when `report_week` (a
    weekly partition key, its Monday) is given, materialised for that week after the others.
    `only` restricts the run to the named assets (still in graph order).
    Returns rows written per table. Raises RuntimeError naming the failing asset.
    """
    import dagster as dg

    from capacity_pipelines.definitions import defs as build_defs

    dagster_home()
    definitions = build_defs()
    assets = list(definitions.assets or [])
    resources = definitions.resources or {}
    graph = definitions.resolve_asset_graph()
    daily = (dg.DailyPartitionsDefinition, type(None))
    order = [
        key
        for key in graph.toposorted_asset_keys
        if graph.get(key).is_materializable
        and (report_week or isinstance(graph.get(key).partitions_def, daily))
        and (only is None or key.to_user_string() in only)
    ]
    tags = {
        "dagster/asset_partition_range_start": first_day.isoformat(),
        "dagster/asset_partition_range_end": last_day.isoformat(),
    }
    rows: dict[str, int] = {}
    with dg.DagsterInstance.get() as instance:
        for index, key in enumerate(order, start=1):
            name = key.to_user_string()
            began = time.monotonic()
            log(f"[{index}/{len(order)}] {name} ...", end="", flush=True)
            weekly = not isinstance(graph.get(key).partitions_def, daily)
            result = dg.materialize(
                assets,
                selection=[key],
                resources=resources,
                instance=instance,
                tags={} if weekly else tags,
                partition_key=report_week if weekly else None,
                raise_on_error=False,
                run_config=QUIET_RUN,
            )
            if not result.success:
                failure = next(
                    (e for e in result.all_events if e.event_type_value == "STEP_FAILURE"), None
                )
                # Dagster wraps the asset's exception: show the innermost cause, one line.
                error = failure.step_failure_data.error if failure else None
                while error is not None and error.cause is not None:
                    error = error.cause
                message = (
                    error.message.strip().split(": ", 1)[-1].splitlines()[0]
                    if error
                    else "see the run in the Dagster UI"
                )
                log(" failed")
                raise RuntimeError(f"{name} failed: {message}")
            # A ranged run reports one materialisation per day, each with the run's row count.
            count = max(
                (
                    int(m.metadata["dagster/row_count"].value)
                    for m in result.asset_materializations_for_node(key.path[-1])
                    if "dagster/row_count" in m.metadata
                ),
                default=0,
            )
            rows[name] = count
            log(
                f" ok ({count:,} rows, {time.monotonic() - began:.1f} s)"
                if count
                else f" ok ({time.monotonic() - began:.1f} s)"
            )
    return rows


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the whole asset graph on the bundled demo fleet."""
    from capacity_pipelines.ingest.sources.files import DEMO_FLEET_FILE, demo_source

    for name in ("CAPACITY_PROMETHEUS_URL", "CAPACITY_EXPORT_FILES"):
        os.environ.pop(name, None)  # the demo never reads a live Prometheus
    first, last = demo_source().time_range()
    first_day = datetime.fromtimestamp(first, UTC).date()
    # the last whole day: a sample at 23:55 closes its day, one at 00:00 opens the next
    last_day = datetime.fromtimestamp(last + 300, UTC).date() - timedelta(days=1)
    if args.days:
        first_day = max(first_day, last_day - timedelta(days=args.days - 1))
    print(f"Demo fleet: {DEMO_FLEET_FILE.relative_to(paths.REPO_ROOT)}")
    from capacity_pipelines.reporting import ReportWeek

    week = ReportWeek.last_complete(last_day)
    print(f"Extracting {first_day} .. {last_day} into {paths.warehouse_path()}")
    print(f"Weekly report for {week.describe()}")
    run_partitions(first_day, last_day, report_week=week.monday.isoformat())
    print()
    print(f"Warehouse:          {paths.warehouse_path()}")
    print(f"Analyst snapshot:   {paths.snapshot_path()}")
    print(f"Dagster instance:   {os.environ['DAGSTER_HOME']}  (open it with `capacity ui`)")
    print(f"Data quality:       {paths.reports_dir() / 'latest' / 'data_quality.md'}")
    print("Weekly capacity report (HTML, opens offline):")
    # Last line: the report's path alone, so scripts can `capacity demo | tail -1`.
    print(paths.reports_dir() / week.label / "capacity_report.html")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    """Extract whole days from Prometheus (or an export) into the warehouse."""
    if args.prometheus_url:
        os.environ["CAPACITY_PROMETHEUS_URL"] = args.prometheus_url
    if args.files:
        os.environ["CAPACITY_EXPORT_FILES"] = ",".join(args.files)
    first, end = _parse_day(args.start), _parse_day(args.end)
    if end <= first:
        raise UsageError(f"--end {end} must be after --start {first} (end is exclusive)")
    print(f"Extracting {first} .. {end - timedelta(days=1)} into {paths.warehouse_path()}")
    run_partitions(first, end - timedelta(days=1))
    print(f"Analyst snapshot: {paths.snapshot_path()}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """Start the Dagster UI bound to 127.0.0.1 (expose it only through an authenticating proxy)."""
    dagster_home()
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(paths.REPO_ROOT / "workspace.yaml"),
        "-h",
        args.host,
        "-p",
        str(args.port),
    ]
    print(
        f"Dagster UI on http://{args.host}:{args.port}  (DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    )
    return subprocess.call(command, cwd=paths.REPO_ROOT)


def cmd_dictionary(args: argparse.Namespace) -> int:
    """Write the warehouse data dictionary (Markdown): extracted and derived tables."""
    from capacity_pipelines.ingest.catalog import load_catalog
    from capacity_pipelines.reporting.dictionary import warehouse_dictionary

    text = warehouse_dictionary(load_catalog(args.catalog))
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    return 0


def build_parser(domain: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; `domain` names the one domain command to load fully."""
    parser = argparse.ArgumentParser(
        prog="capacity",
        description="Capacity planning for LLM-backed multi-agent services (Dagster + DuckDB).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole asset graph on the bundled demo fleet")
    demo.add_argument("--days", type=int, default=0, help="only the last N days of the demo")
    demo.set_defaults(func=cmd_demo)

    extract = sub.add_parser("extract", help="extract whole days into the warehouse")
    extract.add_argument("--start", required=True, help="first day (YYYY-MM-DD, UTC)")
    extract.add_argument("--end", required=True, help="day after the last one (exclusive)")
    extract.add_argument("--prometheus-url", help="default: $CAPACITY_PROMETHEUS_URL")
    extract.add_argument("--files", nargs="+", help="OpenMetrics / long Parquet or CSV exports")
    extract.set_defaults(func=cmd_extract)

    ui = sub.add_parser("ui", help="start the Dagster UI on 127.0.0.1")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)

    dictionary = sub.add_parser("dictionary", help="write the warehouse data dictionary")
    dictionary.add_argument("--catalog", default=None, help="metric catalog YAML")
    dictionary.add_argument("--out", default=str(paths.REPO_ROOT / "docs" / "warehouse.md"))
    dictionary.set_defaults(func=cmd_dictionary)

    for name, (module_name, help_text) in DOMAIN_COMMANDS.items():
        if name == domain:
            importlib.import_module(module_name).register(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `capacity` console script."""
    from capacity_pipelines.ingest.catalog import CatalogError
    from capacity_pipelines.ingest.sources.base import SourceError
    from capacity_pipelines.ingest.sources.openmetrics import ExportFormatError
    from capacity_pipelines.warehouse import WarehouseBusyError

    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in DOMAIN_COMMANDS else None).parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, CatalogError, SourceError, ExportFormatError, WarehouseBusyError) as exc:
        print(f"capacity {args.command}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"capacity {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"capacity {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

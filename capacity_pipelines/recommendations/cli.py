"""`capacity recs list|show|accept|reject|defer|comment`: the SRE review workflow.

The list comes from the published snapshot (falling back to the warehouse opened read-only),
so reviewing never waits for a running pipeline. Decisions are user data with a store of their
own (`decisions.duckdb`, `recommendations/decisions.py`): `list` and `show` read the review
status from it directly, and a decision is appended to it in one small write session, never
touching the warehouse, so it is recorded at once and seen at once.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import duckdb
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common import paths
from capacity_pipelines.common.formatting import plain_number, safe_text, usd_per_month
from capacity_pipelines.recommendations.decisions import (
    adopt_legacy_decisions,
    append_decision,
    load_decisions,
)
from capacity_pipelines.recommendations.findings import EVIDENCE_CHARS, table_columns
from capacity_pipelines.recommendations.findings.schema import one_line
from capacity_pipelines.recommendations.headline import savings_headline
from capacity_pipelines.recommendations.playbook import PlaybookError, load_playbook
from capacity_pipelines.recommendations.review import ReviewError, apply_review, read_decisions
from capacity_pipelines.recommendations.tables import (
    OUTCOMES_TABLE,
    RECOMMENDATIONS_TABLE,
)
from capacity_pipelines.rightsizing.outputs import published_patch

COMMAND = "recs"
EXIT_BAD_INPUT = 2
EXIT_BROKEN_PIPE = 128 + 13  # what the shell reports for a process ended by SIGPIPE
VERBS = {"accept": "accepted", "reject": "rejected", "defer": "deferred", "comment": "commented"}


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `recs` and its subcommands; the handler is stored as `func` on the namespace."""
    parser = subparsers.add_parser(
        COMMAND,
        help="review the ranked recommendations",
        description="List, inspect and decide on the ranked recommendations.",
    )
    parser.add_argument("--warehouse", type=Path, help="warehouse file (default: CAPACITY_HOME)")
    parser.add_argument("--snapshot", type=Path, help="snapshot file (default: CAPACITY_HOME)")
    parser.add_argument(
        "--decisions", type=Path, help="SRE decisions store (default: beside the warehouse)"
    )
    parser.add_argument("--playbook", type=Path, help="playbook YAML (default: assets/)")
    sub = parser.add_subparsers(dest="recs_command", required=True)

    listing = sub.add_parser("list", help="the ranked list (latest day)")
    listing.add_argument("--kind", help="only this playbook kind")
    listing.add_argument("--service", help="only this service (or namespace/service)")
    listing.add_argument("--team", help="only this team")
    listing.add_argument("--status", choices=["pending", "accepted", "rejected", "deferred"])
    listing.add_argument("--all", action="store_true", help="include hidden and superseded ones")
    listing.add_argument("--limit", type=int, default=30, help="rows to show (default 30)")
    output = listing.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON document (a list)")
    output.add_argument("--jsonl", action="store_true", help="one JSON object per line")
    listing.set_defaults(func=run_recs, handler=run_list)

    show = sub.add_parser("show", help="one recommendation with every factor and its history")
    show.add_argument("id", help="recommendation id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true", help="one JSON document")
    show.add_argument(
        "--reports", type=Path, help="reports folder with the patches (default: CAPACITY_HOME)"
    )
    show.set_defaults(func=run_recs, handler=run_show)

    for verb in VERBS:
        decide = sub.add_parser(verb, help=f"{verb} a recommendation")
        decide.add_argument("id", help="recommendation id (a unique prefix is enough)")
        decide.add_argument("-m", "--reason", help="why (stored with the decision)")
        decide.add_argument("--by", help="who decides (default: your login name)")
        decide.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a run")
        decide.add_argument("--json", action="store_true")
        decide.set_defaults(func=run_recs, handler=run_decide, decision=verb)
    return parser


def _warehouse(args) -> Path:
    return Path(args.warehouse) if args.warehouse else paths.warehouse_path()


def _snapshot(args) -> Path:
    return Path(args.snapshot) if args.snapshot else paths.snapshot_path()


def _decisions(args) -> Path:
    if args.decisions:
        return Path(args.decisions)
    if args.warehouse:
        return Path(args.warehouse).with_name("decisions.duckdb")
    return paths.decisions_path()


def _wait(args) -> float:
    return getattr(args, "wait", 5.0)


def _all_decisions(args, con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The store's decisions, plus any still kept by an older warehouse (not yet adopted)."""
    stored = load_decisions(_decisions(args), wait_s=_wait(args))
    legacy = read_decisions(con)
    if legacy.height == 0:
        return stored
    return pl.concat([stored, legacy]).unique(maintain_order=True).sort("decided_at")


def _latest_rows(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    return con.execute(
        f"SELECT * FROM {RECOMMENDATIONS_TABLE.name} WHERE as_of = "
        f"(SELECT max(as_of) FROM {RECOMMENDATIONS_TABLE.name}) ORDER BY rank"
    ).pl()


def read_current(args) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(latest recommendations with live review status, all decisions, where they came from).

    The latest outcome of each accepted recommendation is joined as `outcome` (NULL if none).
    """
    playbook = load_playbook(args.playbook)
    for path in (_snapshot(args), _warehouse(args)):
        if not path.exists():
            continue
        with wh.reader(path, wait_s=_wait(args)) as con:
            if table_columns(con, RECOMMENDATIONS_TABLE.name) is None:
                continue
            recs, decisions = _latest_rows(con), _all_decisions(args, con)
            outcomes = _latest_outcomes(con)
        live = apply_review(
            recs.drop("review_status"), decisions, playbook.settings["reopen_change"]
        )
        live = live.join(outcomes, on="recommendation_id", how="left")
        return live, decisions, str(path)
    raise ReviewError(
        f"no recommendations yet in {_snapshot(args)} or {_warehouse(args)}: run the pipeline "
        "(`capacity demo`) first"
    )


def _latest_outcomes(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    if table_columns(con, OUTCOMES_TABLE.name) is None:
        return pl.DataFrame(schema={"recommendation_id": pl.Utf8, "outcome": pl.Utf8})
    return con.execute(
        f"SELECT recommendation_id, verdict || ': ' || coalesce(detail, '') AS outcome "
        f"FROM {OUTCOMES_TABLE.name} QUALIFY row_number() OVER "
        "(PARTITION BY recommendation_id ORDER BY as_of DESC) = 1"
    ).pl()


def _find(recs: pl.DataFrame, wanted: str) -> dict:
    exact = recs.filter(pl.col("recommendation_id") == wanted)
    hits = (
        exact if exact.height else recs.filter(pl.col("recommendation_id").str.starts_with(wanted))
    )
    if hits.height == 0:
        raise ReviewError(f"no recommendation {wanted!r} in the latest list")
    if hits["recommendation_id"].n_unique() > 1:
        ids = ", ".join(sorted(hits["recommendation_id"].unique())[:5])
        raise ReviewError(f"{wanted!r} is ambiguous: {ids}")
    return hits.row(0, named=True)


def filter_recs(recs: pl.DataFrame, args) -> pl.DataFrame:
    """Apply the list filters; hidden (rejected, unchanged) and superseded only with --all."""
    if not args.all:
        recs = recs.filter(~pl.col("hidden") & (pl.col("status") == "open"))
    if args.kind:
        recs = recs.filter(pl.col("kind") == args.kind)
    if args.service:
        namespace, _, service = args.service.rpartition("/")
        recs = recs.filter(pl.col("service") == service)
        if namespace:
            recs = recs.filter(pl.col("namespace") == namespace)
    if args.team:
        recs = recs.filter(pl.col("team") == args.team)
    if args.status:
        recs = recs.filter(pl.col("review_status") == args.status)
    return recs


def _jsonable(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime | date) else v for k, v in row.items()}


def format_line(r: dict, full: bool = False) -> str:
    """Three lines for people: what and where, impact / effort / risk / confidence, why.

    Targets, actions, evidence and review notes carry labels and user text: escaped first. The
    list cuts long evidence (an ellipsis says so); `full` keeps it whole (the detail view).
    """
    r = {k: safe_text(v) if isinstance(v, str) else v for k, v in r.items()}
    status = r["review_status"] + (f" ({r['review_note']})" if r.get("review_note") else "")
    if r.get("outcome"):
        status += f", checked after the change: {r['outcome']}"
    if r["status"] != "open":
        status = f"{r['status']}, {status}"
    if r["status"] != "open" and r.get("status_reason"):
        status += f": {r['status_reason']}"
    impact = usd_per_month(r["impact_usd_month"])
    if r.get("saving_basis"):
        impact += f" {r['saving_basis']}"
        if r.get("expected_usd_month") is not None:
            impact += f" (expected {usd_per_month(r['expected_usd_month'])})"
    slo = f" | {r['slo_impact']}" if r["slo_impact"] else ""
    evidence = r["evidence"] if full else one_line(r["evidence"], EVIDENCE_CHARS)
    return (
        f"#{r['rank']:<3} {r['recommendation_id']}  {r['kind']}  {r['target']}  "
        f"[{r['team']}]  {status}\n"
        f"     {r['action']}\n"
        f"     impact {impact}{slo} | effort {r['effort_score']:.1f} | risk "
        f"{r['risk_score']:.2f} | confidence {r['confidence']:.2f} | priority "
        f"{r['priority']:.1f} | ROI {r['roi']:.1f}\n"
        f"     why: {evidence}"
    )


def run_list(args) -> int:
    recs, _, source = read_current(args)
    shown = filter_recs(recs, args).head(max(args.limit, 0))
    if args.json:
        print(json.dumps([_jsonable(row) for row in shown.iter_rows(named=True)]))
        return 0
    if args.jsonl:
        for row in shown.iter_rows(named=True):
            print(json.dumps(_jsonable(row)))
        return 0
    as_of = recs["as_of"].max() if recs.height else None
    print(
        f"{shown.height} of {recs.height} recommendations as of {as_of} "
        f"(from {safe_text(source)}); savings listed: {savings_headline(shown).text()}"
    )
    for row in shown.iter_rows(named=True):
        print(format_line(row))
    return 0


def run_show(args) -> int:
    recs, decisions, _ = read_current(args)
    rec = _find(recs, args.id)
    history = decisions.filter(pl.col("recommendation_id") == rec["recommendation_id"])
    if args.json:
        print(
            json.dumps(
                _jsonable(rec)
                | {"decisions": [_jsonable(d) for d in history.iter_rows(named=True)]}
            )
        )
        return 0
    print(format_line(rec, full=True))
    patch = _patch(args, rec)
    if patch is not None:
        print(f"     patch: {safe_text(patch)}  (review it, then apply the kubectl command in "
              "its header)")  # fmt: skip
    print()
    for column in RECOMMENDATIONS_TABLE.columns:
        value = rec.get(column)
        if column == "evidence":
            continue  # printed whole above
        if isinstance(value, float):
            text = plain_number(value)
        elif value is None:
            text = ""
        else:
            text = safe_text(str(value))
        print(f"  {column:<22} {text}")
    print(f"\n  decisions ({history.height}):")
    for d in history.iter_rows(named=True):
        print(f"    {d['decided_at']:%Y-%m-%d %H:%M} {safe_text(d['decision']):<8} "
              f"{safe_text(d['decided_by'])}: {safe_text(d['reason'])}")  # fmt: skip
    return 0


def _patch(args, rec: dict) -> Path | None:
    """The GitOps patch the rightsizing asset published for the row's workload, if any."""
    if rec["target"].count("/") != 2 or rec["target"].startswith(("llm ", "service ")):
        return None  # only container targets have a rightsizing patch
    reports = Path(args.reports) if getattr(args, "reports", None) else paths.reports_dir()
    return published_patch(reports / "latest" / "rightsizing", rec["namespace"], rec["service"])


def _reviewer(args) -> str:
    """Who decides: --by, else the login name ($USER, $LOGNAME, or the password database)."""
    if args.by:
        return args.by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise ReviewError("cannot tell who you are: pass --by NAME") from None


def run_decide(args) -> int:
    who = _reviewer(args)
    recs, _, _ = read_current(args)
    rec = _find(recs, args.id)
    warehouse = _warehouse(args)
    if warehouse.exists():  # an older warehouse's decisions move to the store first
        with contextlib.suppress(wh.WarehouseBusyError):  # or with the next run
            adopt_legacy_decisions(warehouse, _decisions(args), args.wait)
    row = append_decision(_decisions(args), rec, args.decision, who, args.reason, args.wait)
    if args.json:
        print(json.dumps(_jsonable(row)))
    else:
        print(
            f"{rec['recommendation_id']} {VERBS[args.decision]} by {safe_text(row['decided_by'])}"
            f" at {row['decided_at']:%Y-%m-%d %H:%M} UTC: {safe_text(rec['action'])}"
        )
    return 0


def run_recs(args) -> int:
    """Dispatch with one-line errors and exit code 2 for bad input.

    A reader that stops early (`recs list --json | head`) closes the pipe: that is not an
    error, so no traceback; the exit code is the shell's for a process ended by SIGPIPE.
    """
    try:
        code = args.handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python would report the failed flush at exit again: point stdout at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except (ReviewError, PlaybookError, wh.WarehouseBusyError, wh.WarehouseCorruptError) as error:
        print(f"capacity {COMMAND}: error: {safe_text(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """Run `recs` as a stand-alone command (tests, `python -m`)."""
    parser = argparse.ArgumentParser(prog="capacity")
    register(parser.add_subparsers(dest="command", required=True))
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args([COMMAND, *arguments])
    return run_recs(args)


if __name__ == "__main__":
    raise SystemExit(main())

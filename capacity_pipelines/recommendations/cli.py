"""`capacity recs list|show|accept|reject|defer|comment`: the SRE review workflow.

`list` and `show` read the published snapshot (falling back to the warehouse opened read-only),
so they never take the writer lock. Decisions are user data: they are appended to
`recommendation_decisions` through `warehouse.connect` (waiting for a running pipeline to let go
of the lock, with a clear message if it does not), then the analysts' snapshot is republished so
every reader sees the decision at once.
"""

from __future__ import annotations

import argparse
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
from capacity_pipelines.common.formatting import safe_text, usd_per_month
from capacity_pipelines.recommendations.findings import table_columns
from capacity_pipelines.recommendations.playbook import PlaybookError, load_playbook
from capacity_pipelines.recommendations.review import (
    ReviewError,
    apply_review,
    read_decisions,
    record_decision,
)
from capacity_pipelines.recommendations.tables import (
    OUTCOMES_TABLE,
    RECOMMENDATIONS_TABLE,
)

COMMAND = "recs"
EXIT_BAD_INPUT = 2
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
    parser.add_argument("--playbook", type=Path, help="playbook YAML (default: assets/)")
    sub = parser.add_subparsers(dest="recs_command", required=True)

    listing = sub.add_parser("list", help="the ranked list (latest day)")
    listing.add_argument("--kind", help="only this playbook kind")
    listing.add_argument("--service", help="only this service (or namespace/service)")
    listing.add_argument("--team", help="only this team")
    listing.add_argument("--status", choices=["pending", "accepted", "rejected", "deferred"])
    listing.add_argument("--all", action="store_true", help="include hidden and superseded ones")
    listing.add_argument("--limit", type=int, default=30, help="rows to show (default 30)")
    listing.add_argument("--json", action="store_true", help="JSON lines instead of text")
    listing.set_defaults(func=run_recs, handler=run_list)

    show = sub.add_parser("show", help="one recommendation with every factor and its history")
    show.add_argument("id", help="recommendation id (a unique prefix is enough)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=run_recs, handler=run_show)

    for verb in VERBS:
        decide = sub.add_parser(verb, help=f"{verb} a recommendation")
        decide.add_argument("id", help="recommendation id (a unique prefix is enough)")
        decide.add_argument("-m", "--reason", help="why (stored with the decision)")
        decide.add_argument("--by", help="who decides (default $USER)")
        decide.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a run")
        decide.add_argument("--json", action="store_true")
        decide.set_defaults(func=run_recs, handler=run_decide, decision=verb)
    return parser


def _warehouse(args) -> Path:
    return Path(args.warehouse) if args.warehouse else paths.warehouse_path()


def _snapshot(args) -> Path:
    return Path(args.snapshot) if args.snapshot else paths.snapshot_path()


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
    for path, read_only in ((_snapshot(args), True), (_warehouse(args), True)):
        if not path.exists():
            continue
        with wh.connect(path, read_only=read_only, wait_s=5.0) as con:
            if table_columns(con, RECOMMENDATIONS_TABLE.name) is None:
                continue
            recs, decisions = _latest_rows(con), read_decisions(con)
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


def format_line(r: dict) -> str:
    """Three lines for people: what and where, impact / effort / risk / confidence, why.

    Targets, actions, evidence and review notes carry labels and user text: escaped first.
    """
    r = {k: safe_text(v) if isinstance(v, str) else v for k, v in r.items()}
    status = r["review_status"] + (f" ({r['review_note']})" if r.get("review_note") else "")
    if r.get("outcome"):
        status += f", checked after the change: {r['outcome']}"
    if r["status"] != "open":
        status = f"{r['status']}, {status}"
    impact = usd_per_month(r["impact_usd_month"])
    slo = f" | {r['slo_impact']}" if r["slo_impact"] else ""
    return (
        f"#{r['rank']:<3} {r['recommendation_id']}  {r['kind']}  {r['target']}  "
        f"[{r['team']}]  {status}\n"
        f"     {r['action']}\n"
        f"     impact {impact}{slo} | effort {r['effort_score']:.1f} | risk "
        f"{r['risk_score']:.2f} | confidence {r['confidence']:.2f} | priority "
        f"{r['priority']:.1f} | ROI {r['roi']:.1f}\n"
        f"     why: {r['evidence']}"
    )


def run_list(args) -> int:
    recs, _, source = read_current(args)
    shown = filter_recs(recs, args).head(max(args.limit, 0))
    if args.json:
        for row in shown.iter_rows(named=True):
            print(json.dumps(_jsonable(row)))
        return 0
    as_of = recs["as_of"].max() if recs.height else None
    total_saving = shown["impact_usd_month"].clip(lower_bound=0).sum()
    print(
        f"{shown.height} of {recs.height} recommendations as of {as_of} "
        f"(from {safe_text(source)}); savings listed: {usd_per_month(total_saving)}"
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
    print(format_line(rec))
    print()
    for column in RECOMMENDATIONS_TABLE.columns:
        value = rec.get(column)
        text = f"{value:.4g}" if isinstance(value, float) else safe_text(str(value))
        print(f"  {column:<22} {text}")
    print(f"\n  decisions ({history.height}):")
    for d in history.iter_rows(named=True):
        print(f"    {d['decided_at']:%Y-%m-%d %H:%M} {safe_text(d['decision']):<8} "
              f"{safe_text(d['decided_by'])}: {safe_text(d['reason'])}")  # fmt: skip
    return 0


def run_decide(args) -> int:
    who = args.by or os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    warehouse = _warehouse(args)
    if not warehouse.exists():
        raise ReviewError(f"{warehouse}: no warehouse yet; run the pipeline first")
    with wh.connect(warehouse, wait_s=args.wait) as con:
        if table_columns(con, RECOMMENDATIONS_TABLE.name) is None:
            raise ReviewError(f"{warehouse}: no recommendations table yet; run the pipeline first")
        rec = _find(_latest_rows(con), args.id)
        con.execute("BEGIN TRANSACTION")
        try:
            row = record_decision(con, rec, args.decision, who, args.reason)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    # Readers use the snapshot: republish it so the decision shows everywhere at once.
    wh.publish_snapshot(warehouse, _snapshot(args))
    if args.json:
        print(json.dumps(_jsonable(row)))
    else:
        print(
            f"{rec['recommendation_id']} {VERBS[args.decision]} by {safe_text(row['decided_by'])}"
            f" at {row['decided_at']:%Y-%m-%d %H:%M} UTC: {safe_text(rec['action'])}"
        )
    return 0


def run_recs(args) -> int:
    """Dispatch with one-line errors and exit code 2 for bad input."""
    try:
        return args.handler(args)
    except (ReviewError, PlaybookError, wh.WarehouseBusyError) as error:
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

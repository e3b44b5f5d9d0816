"""Time to score and rank many findings, and to build the demo's list from its warehouse.

Scoring is a loop over findings in Python (every factor is computed and kept per row), so this
measures whether that stays interactive at fleet scale: 1k, 10k and 50k synthetic findings
(seeded, kinds and values drawn from the playbook), best of 3 runs each. With `--warehouse`, it
also times `build_recommendations` (reading every input table, token what-ifs included) on a
copy of a demo warehouse.

    .venv/bin/python benchmarks/recs_bench.py [--warehouse $CAPACITY_HOME/warehouse.duckdb]

With `--walk-forward WAREHOUSE [--recompute DIR]`, it measures whether the list's "at risk"
statements come true, on a warehouse where every as-of day of the demo was computed from its
own past (the daily job over the demo's 28 days: `CAPACITY_HOME=/tmp/recs_wf capacity run --start
2026-09-28 --end 2026-10-26`; every as-of read is bounded by its day, so each day's list saw
only what it would have seen that day):

- a statement is an open recommendation with an SLO risk (`slo_risk_avoided > 0`) on a
  workload and a resource class (CPU or memory from its direction, io_database for database
  and cache fixes, llm_provider for quotas, the bottleneck class its evidence names), with the
  horizon it states (24 h for the 24 h outlook, else the 7-day runway and recurrence horizon);
  the report's "services at risk" (runway within the week, outlook >= 50 %) are scored too;
- saturation is what the USE rules label from the metrics after the fact (the bottleneck
  package's `label_windows`: CPU throttled >= 25 % or >= 90 % of its limit, memory at 95 % of
  its limit or OOM-killed, database waits, queueing, provider limits);
- precision: the share of statements (one per list and day) whose workload saturated in that
  class within the stated horizon; statements whose horizon runs past the data are left out;
- `--recompute DIR` first recomputes every day's list with this checkout's code on a copy of
  WAREHOUSE in DIR (the day's inputs as they were computed), to score a change to the list;
  `--recompute-outlook` recomputes each day's bottleneck outlook before it;
- recall: the share of saturation episodes (a labelled run after >= 24 h without that class)
  announced by a list made in the horizon before the episode began.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from capacity_pipelines.recommendations.engine import build_recommendations
from capacity_pipelines.recommendations.findings import FINDING_SCHEMA
from capacity_pipelines.recommendations.playbook import load_playbook, load_teams
from capacity_pipelines.recommendations.scoring import score_findings

SIZES = (1_000, 10_000, 50_000)
REPEATS = 3
SEED = 20261026


def synthetic_findings(n: int, kinds: list[str]) -> pl.DataFrame:
    """`n` findings on distinct targets with values spread like the demo's."""
    rng = random.Random(SEED)
    rows = []
    for i in range(n):
        rows.append(
            {
                "kind": rng.choice(kinds),
                "target": f"ns{i % 40}/wl{i}/c",
                "namespace": f"ns{i % 40}",
                "service": f"wl{i}",
                "action": "do it",
                "evidence": "because",
                "evidence_value": rng.random(),
                "source_table": "bench",
                "impact_usd_month": rng.lognormvariate(4, 2),
                "slo_risk_avoided": rng.random() * 0.5,
                "runway_days_gained": 0.0,
                "confidence": rng.random(),
                "history_days": rng.uniform(1, 28),
                "forecast_uncertainty": rng.random(),
                "headroom_after": rng.uniform(-0.2, 0.6),
                "workloads": rng.randint(1, 4),
            }  # fmt: skip
        )
    return pl.DataFrame(rows, schema=FINDING_SCHEMA)


def best_of(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


# --- walk-forward precision and recall of the "at risk" statements ---------------------------

DAY = timedelta(days=1)
WEEK_HORIZON = timedelta(days=7)
EPISODE_GAP = timedelta(hours=24)
_CLASS_OF_KIND = {"fix_database_bottleneck": "io_database", "add_cache": "io_database",
                  "raise_provider_quota": "llm_provider"}  # fmt: skip


def risk_statements(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every day's open items with an SLO risk, one row per resource class they speak of."""
    rows = con.execute(
        "SELECT as_of, recommendation_id, kind, target, namespace, service, evidence, "
        "cpu_direction, memory_direction, slo_risk_avoided FROM recommendations "
        "WHERE status = 'open' AND slo_risk_avoided > 0"
    ).pl()
    out = []
    for r in rows.iter_rows(named=True):
        evidence = r["evidence"] or ""
        # the resource the SLO risk is claimed for: what the evidence rests on (an OOM kill,
        # a runway at a limit, a bottleneck class), else the direction the action moves
        classes = set(re.findall(
            r"\b(cpu|memory|queueing|network|io_database|llm_provider) bottleneck", evidence
        ))  # fmt: skip
        if "OOM kill" in evidence:
            classes.add("memory")
        for resource, cls in (("CPU p90 peak", "cpu"), ("memory p90 peak", "memory")):
            if resource in evidence:
                classes.add(cls)
        if r["kind"] in _CLASS_OF_KIND:
            classes.add(_CLASS_OF_KIND[r["kind"]])
        if not classes:
            classes.update(
                c
                for c, d in (("cpu", r["cpu_direction"]), ("memory", r["memory_direction"]))
                if d == "up"
            )
        horizon = (
            DAY
            if "within 24h" in (r["evidence"] or "")
            and not re.search(r"reaches capacity|seen \d+ h|OOM", r["evidence"] or "")
            else WEEK_HORIZON
        )
        service = r["service"]
        for cls in sorted(classes):
            out.append({"as_of": r["as_of"], "id": r["recommendation_id"], "kind": r["kind"],
                        "namespace": r["namespace"], "service": service, "cls": cls,
                        "horizon": horizon, "risk": r["slo_risk_avoided"]})  # fmt: skip
    return pl.DataFrame(out, schema=risk_statements_schema())


def report_statements(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Each day's "services at risk" as the weekly report states them (runway within the
    week against limits; outlook class other than none at >= 50 %)."""
    runway = con.execute(
        "SELECT as_of, series_id, family FROM capacity_runway WHERE capacity IS NOT NULL "
        "AND runway_days IS NOT NULL AND runway_days <= 7 "
        "AND family IN ('workload_cpu', 'workload_memory')"
    ).pl()
    rows = [
        {"as_of": r["as_of"], "id": r["series_id"], "kind": "runway",
         "namespace": r["series_id"].split(":", 1)[1].split("/")[0],
         "service": r["series_id"].split("/", 1)[1],
         "cls": "cpu" if r["family"] == "workload_cpu" else "memory", "horizon": WEEK_HORIZON,
         "risk": 1.0}
        for r in runway.iter_rows(named=True)
    ]  # fmt: skip
    outlook = con.execute(
        "SELECT as_of, namespace, service, horizon, bottleneck_class, probability "
        "FROM bottleneck_outlook "
        "WHERE bottleneck_class <> 'none' AND probability >= 0.5"
    ).pl()
    rows += [
        {"as_of": r["as_of"], "id": f"{r['service']}/{r['horizon']}", "kind": "outlook",
         "namespace": r["namespace"], "service": r["service"], "cls": r["bottleneck_class"],
         "horizon": DAY if r["horizon"] == "24h" else WEEK_HORIZON, "risk": r["probability"]}
        for r in outlook.iter_rows(named=True)
    ]  # fmt: skip
    return pl.DataFrame(rows, schema=risk_statements_schema())


def risk_statements_schema() -> dict:
    return {"as_of": pl.Datetime("us"), "id": pl.Utf8, "kind": pl.Utf8, "namespace": pl.Utf8,
            "service": pl.Utf8, "cls": pl.Utf8, "horizon": pl.Duration("us"),
            "risk": pl.Float64}  # fmt: skip


def saturations(con: duckdb.DuckDBPyConnection, end: datetime, days: int) -> pl.DataFrame:
    """Service-hours the USE rules label with a class other than none, over the whole period."""
    from capacity_pipelines.bottlenecks.labels import label_windows
    from capacity_pipelines.bottlenecks.outlook import read_inputs

    windows, _ = read_inputs(con, end.replace(tzinfo=UTC), history_days=days)
    labelled = label_windows(windows)
    return labelled.filter(pl.col("bottleneck_class") != "none").select(
        "namespace", "service", "window_start", pl.col("bottleneck_class").alias("cls")
    )


def episodes(hours: pl.DataFrame) -> pl.DataFrame:
    """Runs of labelled hours per service and class, a new one after >= 24 h without it."""
    ordered = hours.sort("namespace", "service", "cls", "window_start")
    gap = pl.col("window_start").diff().over("namespace", "service", "cls")
    return (
        ordered.with_columns((gap.is_null() | (gap >= EPISODE_GAP)).cum_sum().alias("episode"))
        .group_by("namespace", "service", "cls", "episode")
        .agg(pl.col("window_start").min().alias("start"), pl.len().alias("hours"))
        .sort("start")
    )


def score_statements(statements: pl.DataFrame, hours: pl.DataFrame, data_end: datetime,
                     strict: bool = True) -> dict:  # fmt: skip
    """Precision of statements whose horizon the data covers (`strict`: same class; else any
    saturation of the workload)."""
    judged = statements.filter(pl.col("as_of") + pl.col("horizon") <= data_end)
    keys = ["namespace", "service", "cls"] if strict else ["namespace", "service"]
    hits = judged.join(hours, on=keys, how="left", suffix="_h").filter(
        (pl.col("window_start") >= pl.col("as_of"))
        & (pl.col("window_start") < pl.col("as_of") + pl.col("horizon"))
    )
    true = judged.join(hits.select(*keys, "as_of").unique(), on=[*keys, "as_of"], how="semi")
    return {
        "statements": statements.height,
        "judged": judged.height,
        "true": true.height,
        "precision": true.height / judged.height if judged.height else float("nan"),
    }


def announced(statements: pl.DataFrame, found: pl.DataFrame, first_as_of: datetime) -> dict:
    """Share of episodes starting after the first list that a list made within the stated
    horizon before them announced (same workload and class)."""
    eligible = found.filter(pl.col("start") > first_as_of)
    joined = eligible.join(statements, on=["namespace", "service", "cls"], how="left").filter(
        (pl.col("as_of") <= pl.col("start"))
        & (pl.col("start") < pl.col("as_of") + pl.col("horizon"))
    )
    hit = eligible.join(joined.select("namespace", "service", "cls", "episode").unique(),
                        on=["namespace", "service", "cls", "episode"], how="semi")  # fmt: skip
    return {"episodes": eligible.height, "announced": hit.height,
            "recall": hit.height / eligible.height if eligible.height else float("nan"),
            "missed": eligible.join(hit, on=["namespace", "service", "cls", "episode"],
                                    how="anti")}  # fmt: skip


def walk_forward(warehouse: Path) -> None:
    """Precision and recall tables (Markdown) for the demo walked forward."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        first, last = con.execute("SELECT min(as_of), max(as_of) FROM recommendations").fetchone()
        data_start, data_end = con.execute(
            "SELECT min(ts), max(ts) FROM container_usage"
        ).fetchone()
        days = (data_end - data_start).days + 1
        listed, reported = risk_statements(con), report_statements(con)
        hours = saturations(con, data_end, days)
    found = episodes(hours)
    print(f"As-of days {first:%Y-%m-%d} .. {last:%Y-%m-%d}; data to {data_end:%Y-%m-%d %H:%M}; "
          f"{hours.height} saturated service-hours in {found.height} episodes.")  # fmt: skip
    print()
    print(
        "| statements | made (day x item x class) | judged (horizon inside the data) | "
        "came true | precision | lenient precision (any class) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, frame in (("recommendations with an SLO risk", listed),
                        ("report: services at risk", reported)):  # fmt: skip
        strict, lenient = (
            score_statements(frame, hours, data_end),
            score_statements(frame, hours, data_end, strict=False),
        )
        print(
            f"| {name} | {strict['statements']} | {strict['judged']} | {strict['true']} | "
            f"{strict['precision']:.1%} | {lenient['precision']:.1%} |"
        )
        likely = frame.filter(pl.col("risk") >= 0.5)
        scored = score_statements(likely, hours, data_end)
        print(
            f"| {name}, stated risk >= 50 % | {scored['statements']} | {scored['judged']} | "
            f"{scored['true']} | {scored['precision']:.1%} | "
            f"{score_statements(likely, hours, data_end, strict=False)['precision']:.1%} |"
        )
    print()
    print("| stated SLO risk (recommendations) | judged | mean stated | came true |")
    print("|---|---:|---:|---:|")
    judged = listed.filter(pl.col("as_of") + pl.col("horizon") <= data_end)
    for low, high in ((0.0, 0.5), (0.5, 0.8), (0.8, 1.01)):
        band = judged.filter((pl.col("risk") >= low) & (pl.col("risk") < high))
        if band.height:
            scored = score_statements(band, hours, data_end)
            print(
                f"| {low:.0%}–{min(high, 1):.0%} | {band.height} | {band['risk'].mean():.0%} | "
                f"{scored['precision']:.0%} |"
            )
    print()
    print("| statements by kind and class | judged | came true | precision |")
    print("|---|---:|---:|---:|")
    for (kind, service, cls), group in sorted(
        listed.group_by("kind", "service", "cls"), key=lambda g: g[0]
    ):
        scored = score_statements(group, hours, data_end)
        print(
            f"| {kind} {service} {cls} | {scored['judged']} | {scored['true']} | "
            f"{scored['precision']:.0%} |"
        )
    print()
    print("| recall | episodes after the first list | announced ahead | recall |")
    print("|---|---:|---:|---:|")
    for name, frame in (("recommendations", listed), ("report: services at risk", reported)):
        scored = announced(frame, found, first)
        print(f"| {name} | {scored['episodes']} | {scored['announced']} | {scored['recall']:.1%} |")
    missed = announced(listed, found, first)["missed"]
    print()
    print("Episodes the list did not announce (workload, class, start, hours):")
    for r in missed.iter_rows(named=True):
        print(
            f"- {r['namespace']}/{r['service']} {r['cls']} {r['start']:%a %d %b %H:%M} "
            f"({r['hours']} h)"
        )


def recompute_lists(warehouse: Path, folder: Path, outlook: bool = False) -> Path:
    """A copy of `warehouse` in `folder` whose `recommendations` of every as-of day were
    recomputed by this checkout's asset (its inputs, the forecasts, rightsizing and outlook
    of each day, stay as they were computed): a change to the list is scored on the same
    walked-forward inputs in about a minute instead of the whole daily job's ~11. With
    `outlook`, each day's `bottleneck_outlook` is recomputed first too (it reads only the
    service windows before its day), to score a change to the outlook."""
    import dagster as dg

    from capacity_pipelines.defs.bottlenecks.assets import bottleneck_outlook
    from capacity_pipelines.defs.recommendations.assets import recommendations
    from capacity_pipelines.defs.resources import WarehouseResource

    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    with duckdb.connect(str(copy), read_only=True) as con:
        first, last = con.execute("SELECT min(as_of), max(as_of) FROM recommendations").fetchone()
    # the partition of day D answers as of the end of D
    start, end = (first - timedelta(days=1)).date(), (last - timedelta(days=1)).date()
    resource = WarehouseResource(
        path=str(copy),
        snapshot_path=str(folder / "warehouse_snapshot.duckdb"),
        decisions_path=str(folder / "decisions.duckdb"),
    )
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [bottleneck_outlook, recommendations] if outlook else [recommendations],
            instance=instance,
            resources={"warehouse": resource},
            tags={
                "dagster/asset_partition_range_start": f"{start}",
                "dagster/asset_partition_range_end": f"{end}",
            },
        )
    if not result.success:
        raise SystemExit(f"recomputing the lists of {start} .. {end} failed")
    print(f"Lists of {start} .. {end} recomputed by this checkout into {copy}.")
    return copy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warehouse", type=Path, help="a demo warehouse to time the build on")
    parser.add_argument(
        "--walk-forward", type=Path, help="a warehouse with every as-of day computed"
    )
    parser.add_argument(
        "--recompute",
        type=Path,
        metavar="DIR",
        help="with --walk-forward: first recompute the list of every as-of day with this "
        "checkout's code, on a copy of the warehouse in DIR (the inputs stay as computed)",
    )
    parser.add_argument(
        "--recompute-outlook",
        action="store_true",
        help="with --recompute: recompute each day's bottleneck outlook before its list",
    )
    args = parser.parse_args()
    if args.walk_forward:
        warehouse = args.walk_forward
        if args.recompute:
            warehouse = recompute_lists(warehouse, args.recompute, args.recompute_outlook)
        walk_forward(warehouse)
        return
    playbook, teams = load_playbook(), load_teams()
    kinds = list(playbook.kinds)
    print("| findings | score + rank (best of 3) | per finding |")
    print("|---|---|---|")
    for n in SIZES:
        findings = synthetic_findings(n, kinds)
        seconds = best_of(lambda f=findings: score_findings(f, playbook, teams))
        print(f"| {n:,} | {seconds:.3f} s | {seconds / n * 1e6:.0f} µs |")
    if args.warehouse:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "wh.duckdb"
            shutil.copy(args.warehouse, copy)
            with duckdb.connect(str(copy)) as con:
                as_of = con.execute("SELECT max(as_of) FROM container_rightsizing").fetchone()[0]
                as_of = as_of.replace(tzinfo=UTC)
                run = None

                def build():
                    nonlocal run
                    run = build_recommendations(con, as_of)

                seconds = best_of(build)
        print()
        print(
            f"build_recommendations on {args.warehouse.name} as of {as_of:%Y-%m-%d}: "
            f"{seconds:.2f} s (best of {REPEATS}), {run.table.height} recommendations"
        )


if __name__ == "__main__":
    main()

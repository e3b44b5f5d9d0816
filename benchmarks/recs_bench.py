"""Time to score and rank many findings, and to build the demo's list from its warehouse.

Scoring is a loop over findings in Python (every factor is computed and kept per row), so this
measures whether that stays interactive at fleet scale: 1k, 10k and 50k synthetic findings
(seeded, kinds and values drawn from the playbook), best of 3 runs each. With `--warehouse`, it
also times `build_recommendations` (reading every input table, token what-ifs included) on a
copy of a demo warehouse.

    .venv/bin/python benchmarks/recs_bench.py [--warehouse $CAPACITY_HOME/warehouse.duckdb]
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from datetime import UTC
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warehouse", type=Path, help="a demo warehouse to time the build on")
    args = parser.parse_args()
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

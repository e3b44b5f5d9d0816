"""One as-of day's recommendations: findings -> outcomes -> scores -> identity -> review status.

`build_recommendations` reads the warehouse (it never writes); the asset writes what it returns.
Decisions (their own store, `decisions.py`) are read, never written, here: the review status of
each row is derived from them, so a re-run or a backfill recomputes the same status and no
decision can be lost by a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import polars as pl

from capacity_pipelines.common.freshness import no_data_since, stale_before
from capacity_pipelines.recommendations.findings import (
    Findings,
    collect_findings,
    table_columns,
)
from capacity_pipelines.recommendations.playbook import Playbook, Teams, load_playbook, load_teams
from capacity_pipelines.recommendations.review import apply_review, read_decisions
from capacity_pipelines.recommendations.scoring import score_findings, slo_impact_text
from capacity_pipelines.recommendations.tables import (
    OUTCOMES_TABLE,
    RECOMMENDATIONS_TABLE,
)
from capacity_pipelines.recommendations.validation import learned_priors, validate_accepted


@dataclass
class RecommendationRun:
    """What one run produces: the table rows, the outcomes and notes on skipped inputs."""

    table: pl.DataFrame
    outcomes: pl.DataFrame
    notes: list[str] = field(default_factory=list)


def previous_recommendations(con: duckdb.DuckDBPyConnection, as_of: datetime) -> pl.DataFrame:
    """Rows of the latest as-of day before `as_of` (empty when none)."""
    if table_columns(con, RECOMMENDATIONS_TABLE.name) is None:
        return pl.DataFrame()
    return con.execute(
        f"SELECT * FROM {RECOMMENDATIONS_TABLE.name} WHERE as_of = (SELECT max(as_of) FROM "
        f"{RECOMMENDATIONS_TABLE.name} WHERE as_of < ?)",
        [as_of.replace(tzinfo=None)],
    ).pl()


def _first_seen(con: duckdb.DuckDBPyConnection, as_of: datetime) -> dict[str, datetime]:
    if table_columns(con, RECOMMENDATIONS_TABLE.name) is None:
        return {}
    return dict(
        con.execute(
            f"SELECT recommendation_id, min(first_seen) FROM {RECOMMENDATIONS_TABLE.name} "
            "WHERE as_of < ? GROUP BY ALL",
            [as_of.replace(tzinfo=None)],
        ).fetchall()
    )


def superseded_reasons(gone: pl.DataFrame, findings: Findings, as_of: datetime) -> list[str]:
    """Why each of yesterday's open rows is not open today: its target stopped reporting
    ("no data since ..."), reconciliation withdrew it, or the data no longer supports it."""
    rows = gone.with_columns(pl.lit(None, dtype=pl.Datetime("us")).alias("evidence_last_seen"))
    unknown = [None] * gone.height
    seen = findings.last_seen.of(rows).to_list() if findings.last_seen else unknown
    judged = findings.last_seen.judged(rows).to_list() if findings.last_seen else unknown
    cut = stale_before(as_of)
    reasons = []
    for row, last, told in zip(gone.iter_rows(named=True), seen, judged, strict=True):
        withdrawn = findings.withdrawn.get((row["kind"], row["target"]))
        if told and (last is None or last < cut):
            reasons.append(no_data_since(last))
        elif withdrawn:
            reasons.append(withdrawn)
        else:
            reasons.append(f"no longer found as of {as_of:%Y-%m-%d}: the evidence has gone")
    return reasons


def build_recommendations(
    con: duckdb.DuckDBPyConnection,
    as_of: datetime,
    playbook: Playbook | None = None,
    teams: Teams | None = None,
    decisions: pl.DataFrame | None = None,
) -> RecommendationRun:
    """The ranked `recommendations` rows of `as_of`, plus superseded ones carried over.

    `decisions` are the SRE decisions (from their own store); when not given they are read
    from `con` (a database that holds them itself, as tests and older warehouses do).
    """
    playbook = playbook or load_playbook()
    teams = teams or load_teams()
    as_of_naive = as_of.replace(tzinfo=None)
    findings = collect_findings(con, as_of, playbook)
    if decisions is None:
        decisions = read_decisions(con)
    outcomes = validate_accepted(con, decisions, as_of, playbook)
    scored = score_findings(findings.frame, playbook, teams, learned_priors(outcomes, playbook))
    first_seen = _first_seen(con, as_of)
    current = scored.with_columns(
        pl.lit(as_of_naive).alias("as_of"),
        pl.lit("open").alias("status"),
        pl.lit("").alias("status_reason"),
        pl.when(pl.col("impact_usd_month") > 0)
        .then(pl.col("impact_usd_month") * pl.col("confidence"))
        .otherwise(None)
        .alias("expected_usd_month"),
        pl.Series(
            "slo_impact",
            [
                slo_impact_text(s, r)
                for s, r in scored.select("slo_risk_avoided", "runway_days_gained").iter_rows()
            ],
            dtype=pl.Utf8,
        ),
        pl.col("recommendation_id")
        .replace_strict(first_seen, default=as_of_naive, return_dtype=pl.Datetime("us"))
        .alias("first_seen"),
    )
    columns = list(RECOMMENDATIONS_TABLE.columns)
    derived = [c for c in columns if c != "review_status"]  # review status is derived below
    current = current.select(derived)
    previous = previous_recommendations(con, as_of)
    if previous.height:
        gone = previous.filter(
            (pl.col("status") == "open")
            & ~pl.col("recommendation_id").is_in(current["recommendation_id"].implode())
        )
        if gone.height:
            superseded = gone.with_columns(
                pl.lit(as_of_naive).alias("as_of"),
                pl.lit("superseded").alias("status"),
                pl.lit(None, dtype=pl.Datetime("us")).alias("deadline"),  # no longer due
                pl.Series(
                    "status_reason", superseded_reasons(gone, findings, as_of), dtype=pl.Utf8
                ),
                (pl.col("rank") + current.height + 1_000_000).alias("rank"),
            )
            superseded = superseded.with_columns(
                pl.lit(None, dtype=c.dtype).alias(c.name)
                for c in current.select(derived)
                if c.name not in superseded.columns
            )
            current = pl.concat([current, superseded.select(derived).cast(current.schema)])
    reviewed = apply_review(current, decisions, playbook.settings["reopen_change"])
    table = reviewed.sort("rank").with_columns(
        pl.int_range(1, reviewed.height + 1, dtype=pl.Int64).alias("rank")
    )
    return RecommendationRun(
        table=table.select(columns),
        outcomes=outcomes.with_columns(pl.lit(as_of_naive).alias("as_of")).select(
            list(OUTCOMES_TABLE.columns)
        ),
        notes=findings.notes,
    )

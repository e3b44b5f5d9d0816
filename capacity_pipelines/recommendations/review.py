"""SRE review: decisions (user data) and what they mean for the current list.

Decisions are appended, never updated: the latest accept / reject / defer of an id is its review
status, comments only add to its history. A rejection hides the recommendation until its
evidence value moves by more than the playbook's `reopen_change` share, so a reviewer is asked
again only when the facts changed, not every day.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import polars as pl

from capacity_pipelines.recommendations.findings import table_columns
from capacity_pipelines.recommendations.identity import materially_changed
from capacity_pipelines.recommendations.tables import (
    DECISION_COLUMNS,
    DECISIONS_TABLE,
    ensure_decisions_table,
)

DECISIONS = ("accept", "reject", "defer", "comment")
STATUS_OF = {"accept": "accepted", "reject": "rejected", "defer": "deferred"}
_DECISION_SCHEMA = {
    "decided_at": pl.Datetime("us"), "recommendation_id": pl.Utf8, "decision": pl.Utf8,
    "decided_by": pl.Utf8, "reason": pl.Utf8, "kind": pl.Utf8, "target": pl.Utf8,
    "namespace": pl.Utf8, "service": pl.Utf8, "as_of": pl.Datetime("us"),
    "evidence_fingerprint": pl.Utf8, "evidence_value": pl.Float64,
    "impact_usd_month": pl.Float64, "slo_risk_avoided": pl.Float64,
}  # fmt: skip


class ReviewError(ValueError):
    """A review command that cannot be applied (unknown id, bad decision)."""


def empty_decisions() -> pl.DataFrame:
    """No decisions, with the decisions' columns and types."""
    return pl.DataFrame(schema=_DECISION_SCHEMA)


def read_decisions(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """Every decision of the database `con` is on, oldest first (empty when it has none)."""
    if table_columns(con, DECISIONS_TABLE) is None:
        return empty_decisions()
    columns = ", ".join(f'"{c}"' for c in DECISION_COLUMNS)
    return (
        con.execute(f"SELECT {columns} FROM {DECISIONS_TABLE} ORDER BY decided_at")
        .pl()
        .cast(_DECISION_SCHEMA)
    )


def record_decision(
    con: duckdb.DuckDBPyConnection,
    recommendation: dict,
    decision: str,
    decided_by: str,
    reason: str | None,
    decided_at: datetime | None = None,
) -> dict:
    """Append one decision about `recommendation` (a `recommendations` row); returns it."""
    if decision not in DECISIONS:
        raise ReviewError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    if not decided_by.strip():
        raise ReviewError("who decided is empty: pass --by NAME")
    ensure_decisions_table(con)
    when = (decided_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    row = {
        "decided_at": when,
        "recommendation_id": recommendation["recommendation_id"],
        "decision": decision,
        "decided_by": decided_by.strip(),
        "reason": reason,
        **{
            c: recommendation.get(c)
            for c in (
                "kind",
                "target",
                "namespace",
                "service",
                "as_of",
                "evidence_fingerprint",
                "evidence_value",
                "impact_usd_month",
                "slo_risk_avoided",
            )
        },  # fmt: skip
    }
    placeholders = ", ".join("?" for _ in DECISION_COLUMNS)
    columns = ", ".join(f'"{c}"' for c in DECISION_COLUMNS)
    con.execute(
        f"INSERT INTO {DECISIONS_TABLE} ({columns}) VALUES ({placeholders})",
        [row[c] for c in DECISION_COLUMNS],
    )
    return row


def latest_verdicts(decisions: pl.DataFrame) -> pl.DataFrame:
    """The latest accept / reject / defer per id (comments do not change the status)."""
    return (
        decisions.filter(pl.col("decision") != "comment")
        .with_row_index("_order")
        .sort("decided_at", "_order")
        .group_by("recommendation_id")
        .last()
        .drop("_order")
    )


def apply_review(recs: pl.DataFrame, decisions: pl.DataFrame, reopen_change: float) -> pl.DataFrame:
    """Add review_status, hidden, decided_by, decided_at and review_note to `recs`.

    A rejected recommendation is hidden while its evidence value stayed within `reopen_change`
    of the value it was rejected on; beyond that it is pending again (and says so).
    """
    verdicts = {r["recommendation_id"]: r for r in latest_verdicts(decisions).iter_rows(named=True)}
    statuses, hidden, by, at, notes = [], [], [], [], []
    for rec in recs.select("recommendation_id", "evidence_value").iter_rows(named=True):
        verdict = verdicts.get(rec["recommendation_id"])
        status, hide, note = "pending", False, ""
        if verdict is not None:
            status = STATUS_OF[verdict["decision"]]
            if status == "rejected":
                if materially_changed(
                    verdict["evidence_value"], rec["evidence_value"], reopen_change
                ):
                    status = "pending"
                    note = (
                        f"reopened: evidence {verdict['evidence_value']:.3g} -> "
                        f"{rec['evidence_value']:.3g} since rejected"
                        if verdict["evidence_value"] is not None
                        and rec["evidence_value"] is not None
                        else "reopened: evidence changed since rejected"
                    )
                else:
                    hide = True
        statuses.append(status)
        hidden.append(hide)
        by.append(verdict["decided_by"] if verdict else None)
        at.append(verdict["decided_at"] if verdict else None)
        notes.append(note)
    return recs.with_columns(
        pl.Series("review_status", statuses, dtype=pl.Utf8),
        pl.Series("hidden", hidden, dtype=pl.Boolean),
        pl.Series("decided_by", by, dtype=pl.Utf8),
        pl.Series("decided_at", at, dtype=pl.Datetime("us")),
        pl.Series("review_note", notes, dtype=pl.Utf8),
    )

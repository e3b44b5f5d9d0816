"""The recommendation tables: the ranked list, the SRE decisions and the validated outcomes.

`recommendations` and `recommendation_outcomes` are pipeline output, windowed on `as_of` (a
re-run replaces its own day). `recommendation_decisions` is user data: append-only, written only
by `capacity recs accept|reject|defer|comment`; the pipeline only creates it when missing.
"""

from __future__ import annotations

import duckdb

from capacity_pipelines.warehouse import DerivedTable

RECOMMENDATIONS_TABLE = DerivedTable(
    name="recommendations",
    description="One ranked list of actions per as-of day (rightsizing, runway, bottlenecks, "
    "token costs), scored by impact, effort and risk with every factor shown; ids are stable "
    "across runs (kind + target), superseded ones are kept and marked. Formula: "
    "docs/recommendations.md.",
    columns={
        "as_of": "UTC end of the history the recommendations were made from.",
        "rank": "Position in the review order (1 = first); superseded rows come last.",
        "recommendation_id": "Stable id: hash of kind and target, never of the numbers.",
        "kind": "Playbook kind (assets/playbook.yaml).",
        "target": "What to change, e.g. agents/planner/planner or service platform/postgres.",
        "namespace": "Kubernetes namespace of the target.",
        "service": "Service or workload of the target.",
        "team": "Owning team (assets/teams.yaml).",
        "action": "What to do, one line.",
        "evidence": "Why, one line (the numbers the finding rests on).",
        "source_table": "Warehouse table(s) the finding came from.",
        "impact_usd_month": "Monthly $ impact (+ = saving, - = extra cost; NULL = not priced). "
        "Savings on the same spend are applied one after another (each on what the previous "
        "leave), so they add up.",
        "saving_basis": "measured (priced from observed usage or labelled traffic) or estimated "
        "(an assumed share or ratio); NULL when the row saves nothing.",
        "expected_usd_month": "Expected value of a saving: impact_usd_month x confidence "
        "(NULL when the row saves nothing).",
        "slo_impact": "SLO side of the impact for people: the SLO breach risk the action "
        "avoids (a chance, 0-100 %) and the runway days it gains.",
        "slo_risk_avoided": "0..1: chance of an SLO breach the action removes.",
        "runway_days_gained": "Days of capacity runway the action adds (within the 7-day horizon).",
        "value_usd_month": "impact_usd_month + slo_risk_avoided x the playbook's SLO-breach $.",
        "impact_score": "0..1: log(1 + value) / log(1 + impact_scale_usd_month).",
        "effort_prior": "Playbook effort prior of the kind (points).",
        "effort_scope": "Scope factor: 1 + 0.25 per extra workload touched.",
        "effort_change": "Change factor: code changes cost code_effort_factor, config 1.",
        "effort_learned": "Factor learned from validated outcomes of the kind (1 = none yet).",
        "effort_score": "effort_prior x effort_scope x effort_change x effort_learned.",
        "risk_prior": "Risk prior of the kind (learned from outcomes once there are any).",
        "risk_uncertainty": "Risk from forecast uncertainty ((p95 - p50) / p50).",
        "risk_history": "Risk from a short history (under 14 days).",
        "risk_confidence": "Risk from the finding's low confidence.",
        "risk_headroom": "Risk from little headroom left after the change (under 20 %).",
        "risk_blast": "Risk from the target's criticality and blast radius.",
        "risk_score": "0..1: 1 - product of (1 - each risk factor), prior included.",
        "confidence": "0..1: confidence of the finding.",
        "priority": "100 x impact_score x (1 - risk_score) / sqrt(effort_score).",
        "roi": "12 x value x (1 - risk) / (effort_score x effort_point_usd): yearly return per $.",
        "history_days": "Days of history behind the finding (NULL = not stated).",
        "forecast_uncertainty": "(p95 - p50) / p50 of the forecast, or the usage volatility.",
        "headroom_after": "Share of the new capacity left above the recent peak (NULL = n/a).",
        "workloads": "Workloads the action touches.",
        "deadline": "UTC time the action is due by (forecast saturation, expected bottleneck); "
        "NULL: no deadline. Never before as_of.",
        "evidence_last_seen": "Newest sample of the target's data behind the evidence (UTC).",
        "cpu_direction": "up or down: which way the action moves the target's CPU (NULL: not "
        "at all). One direction per workload and resource.",
        "memory_direction": "up or down: which way the action moves the target's memory.",
        "status": "open, or superseded (no longer produced; kept for its history).",
        "status_reason": "Why a superseded row is no longer open (e.g. no data since ...).",
        "review_status": "pending, accepted, rejected or deferred (latest SRE decision).",
        "evidence_value": "The number a rejection is compared against to reopen it.",
        "evidence_fingerprint": "Hash of kind, target and evidence value (3 significant digits).",
        "first_seen": "First as-of day this recommendation id appeared.",
    },
)

DECISIONS_TABLE = "recommendation_decisions"
DECISION_COLUMNS = {
    "decided_at": ("TIMESTAMP NOT NULL", "UTC time of the decision."),
    "recommendation_id": ("VARCHAR NOT NULL", "The recommendation decided on."),
    "decision": ("VARCHAR NOT NULL", "accept, reject, defer or comment."),
    "decided_by": ("VARCHAR NOT NULL", "Who decided ($USER or --by)."),
    "reason": ("VARCHAR", "Why, in the reviewer's words."),
    "kind": ("VARCHAR", "Kind of the recommendation at decision time."),
    "target": ("VARCHAR", "Target of the recommendation at decision time."),
    "namespace": ("VARCHAR", "Namespace of the target."),
    "service": ("VARCHAR", "Service of the target."),
    "as_of": ("TIMESTAMP", "as_of of the recommendation row that was reviewed."),
    "evidence_fingerprint": ("VARCHAR", "Evidence fingerprint the decision was made on."),
    "evidence_value": ("DOUBLE", "Evidence value the decision was made on."),
    "impact_usd_month": ("DOUBLE", "Expected monthly $ impact at decision time."),
    "slo_risk_avoided": ("DOUBLE", "Expected SLO risk avoided at decision time."),
}

OUTCOMES_TABLE = DerivedTable(
    name="recommendation_outcomes",
    description="Accepted recommendations checked after the change: metrics before vs after "
    "the decision, realised savings and the verdict (effective, ineffective, regressed; "
    "pending while the after-window is too short).",
    columns={
        "as_of": "UTC as-of day of the check.",
        "recommendation_id": "The accepted recommendation.",
        "kind": "Its playbook kind.",
        "target": "Its target.",
        "decided_at": "When it was accepted (the change is assumed applied then).",
        "verdict": "effective, ineffective, regressed or pending.",
        "expected_usd_month": "Monthly $ impact expected at decision time.",
        "realised_usd_month": "Monthly $ impact measured (before - after cost).",
        "latency_p95_before": "Mean p95 latency (s) of the service before.",
        "latency_p95_after": "Mean p95 latency (s) of the service after.",
        "error_ratio_before": "Errors / requests before.",
        "error_ratio_after": "Errors / requests after.",
        "oom_kills_per_day_before": "OOM kills per day before.",
        "oom_kills_per_day_after": "OOM kills per day after.",
        "throttled_before": "Mean CPU throttled ratio before.",
        "throttled_after": "Mean CPU throttled ratio after.",
        "detail": "Why the verdict, one line.",
    },
)


def ensure_decisions_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create the decisions table if missing. Never drops, alters or rewrites it."""
    columns = ", ".join(f'"{name}" {sql}' for name, (sql, _) in DECISION_COLUMNS.items())
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND schema_name = 'main' "
        "AND database_name = current_database()",
        [DECISIONS_TABLE],
    ).fetchone()[0]
    if exists:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS {DECISIONS_TABLE} ({columns})")
        con.execute(
            f"COMMENT ON TABLE {DECISIONS_TABLE} IS 'SRE review decisions (user data, "
            "append-only): written only by capacity recs accept/reject/defer/comment; no "
            "pipeline run deletes or rewrites them.'"
        )
        for name, (_, doc) in DECISION_COLUMNS.items():
            text = doc.replace("'", "''")
            con.execute(f"COMMENT ON COLUMN {DECISIONS_TABLE}.\"{name}\" IS '{text}'")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise

"""Scoring: impact, effort, risk, priority and ROI, every factor a column.

The formula (docs/recommendations.md explains each term and where its constants come from):

    value_usd_month = impact_usd_month + slo_risk_avoided x slo_breach_usd_month
    impact_score    = clip(log(1 + value) / log(1 + impact_scale_usd_month), 0, 1)
    effort_score    = effort_prior x (1 + 0.25 (workloads - 1)) x change_factor x effort_learned
    risk_score      = 1 - (1 - risk_prior)(1 - r_uncertainty)(1 - r_history)(1 - r_confidence)
                          (1 - r_headroom)(1 - r_blast)
    priority        = 100 x impact_score x (1 - risk_score) / sqrt(effort_score)
    roi             = 12 x value x (1 - risk_score) / (effort_score x effort_point_usd)

Risk is a noisy-OR: each factor is an independent way for the change to go wrong, so one bad
factor is enough to make a change risky and no factor can make it safer than its prior. The
ranking is deterministic: priority (rounded to 1e-6), then value, then the id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl

from capacity_pipelines.recommendations.findings import FINDING_SCHEMA
from capacity_pipelines.recommendations.identity import evidence_fingerprint, recommendation_id
from capacity_pipelines.recommendations.playbook import Playbook, Teams

SCOPE_EFFORT_PER_WORKLOAD = 0.25  # each extra workload touched adds a quarter of the prior
FULL_HISTORY_DAYS = 14.0  # rightsizing's history window (KRR default): no history penalty past it
UNKNOWN_HISTORY_DAYS = 7.0  # a finding that does not say counts as a one-week history
# Weights of the risk factors: the largest chance each alone adds (planning assumptions).
W_UNCERTAINTY = 0.5  # (p95 - p50) / p50 of 1 adds 50 %
W_HISTORY = 0.3  # no history at all adds 30 %
W_CONFIDENCE = 0.5  # a finding of confidence 0 adds 50 %
W_HEADROOM = 0.4  # no headroom left after the change adds 40 %
SAFE_HEADROOM = 0.2  # 20 % headroom over the peak is enough (VPA's target is 15 %)
W_BLAST = 0.3  # a critical (3) service that takes down the whole fleet adds 30 %
PRIORITY_DIGITS = 6


def score_findings(
    findings: pl.DataFrame,
    playbook: Playbook,
    teams: Teams,
    learned: Mapping[str, tuple[float, float]] | None = None,
) -> pl.DataFrame:
    """Score and rank findings; `learned` maps kind -> (effort multiplier, risk prior) from
    validated outcomes (validation.learned_priors). Returns one row per finding, rank 1 first."""
    learned = learned or {}
    s = playbook.settings
    rows = []
    for f in findings.iter_rows(named=True):
        kind = playbook.kind(f["kind"])
        owner = teams.owner(f["namespace"], f["service"])
        effort_learned, risk_prior = learned.get(kind.name, (1.0, kind.risk_prior))
        impact_usd = f["impact_usd_month"] if f["impact_usd_month"] is not None else 0.0
        slo = f["slo_risk_avoided"] or 0.0
        value = impact_usd + slo * s["slo_breach_usd_month"]
        impact_score = min(
            1.0, max(0.0, math.log1p(max(value, 0.0)) / math.log1p(s["impact_scale_usd_month"]))
        )
        scope = 1.0 + SCOPE_EFFORT_PER_WORKLOAD * max(0, (f["workloads"] or 1) - 1)
        change = s["code_effort_factor"] if kind.change == "code" else 1.0
        effort = kind.effort_prior * scope * change * effort_learned
        history = f["history_days"] if f["history_days"] is not None else UNKNOWN_HISTORY_DAYS
        confidence = f["confidence"] if f["confidence"] is not None else 0.5
        headroom = f["headroom_after"]
        factors = {
            "risk_uncertainty": min(
                W_UNCERTAINTY, W_UNCERTAINTY * (f["forecast_uncertainty"] or 0)
            ),
            "risk_history": W_HISTORY * max(0.0, 1.0 - history / FULL_HISTORY_DAYS),
            "risk_confidence": W_CONFIDENCE * (1.0 - min(1.0, max(0.0, confidence))),
            "risk_headroom": 0.0
            if headroom is None
            else W_HEADROOM * min(1.0, max(0.0, (SAFE_HEADROOM - headroom) / SAFE_HEADROOM)),
            "risk_blast": W_BLAST * (owner.criticality - 1.0) / 2.0 * owner.blast_radius,
        }
        safe = 1.0 - risk_prior
        for factor in factors.values():
            safe *= 1.0 - factor
        risk = 1.0 - safe
        priority = 100.0 * impact_score * (1.0 - risk) / math.sqrt(max(effort, 1e-3))
        roi = 12.0 * value * (1.0 - risk) / (effort * s["effort_point_usd"])
        rows.append(
            {
                **f,
                "recommendation_id": recommendation_id(f["kind"], f["target"]),
                "evidence_fingerprint": evidence_fingerprint(
                    f["kind"], f["target"], f["evidence_value"]
                ),
                "team": owner.team,
                "criticality": owner.criticality,
                "blast_radius": owner.blast_radius,
                "confidence": confidence,
                "value_usd_month": value,
                "impact_score": impact_score,
                "effort_prior": kind.effort_prior,
                "effort_scope": scope,
                "effort_change": change,
                "effort_learned": effort_learned,
                "effort_score": effort,
                "risk_prior": risk_prior,
                **factors,
                "risk_score": risk,
                "priority": round(priority, PRIORITY_DIGITS),
                "roi": roi,
            }
        )
    # No findings (a new install's first days) still ranks: same columns, zero rows.
    return rank(pl.DataFrame(rows, schema=SCORED_SCHEMA))


def rank(scored: pl.DataFrame) -> pl.DataFrame:
    """Order by priority, then value, then id (so ties never depend on input order)."""
    ordered = scored.sort(
        ["priority", "value_usd_month", "recommendation_id"],
        descending=[True, True, False],
        nulls_last=True,
    )
    return ordered.with_columns(pl.int_range(1, ordered.height + 1, dtype=pl.Int64).alias("rank"))


def slo_impact_text(slo_risk: float | None, runway_gain: float | None) -> str:
    """The SLO side of the impact for people: `SLO breach risk avoided: 62%; +5.1 runway days`
    (a chance the action removes, not a signed score)."""
    parts = []
    if slo_risk:
        parts.append(f"SLO breach risk avoided: {slo_risk:.0%}")
    if runway_gain:
        parts.append(f"+{runway_gain:.1f} runway days")
    return "; ".join(parts)


SCORED_SCHEMA: dict[str, pl.DataType] = {
    **FINDING_SCHEMA,
    "recommendation_id": pl.Utf8,
    "evidence_fingerprint": pl.Utf8,
    "team": pl.Utf8,
    "criticality": pl.Float64,
    "blast_radius": pl.Float64,
    "value_usd_month": pl.Float64,
    "impact_score": pl.Float64,
    "effort_prior": pl.Float64,
    "effort_scope": pl.Float64,
    "effort_change": pl.Float64,
    "effort_learned": pl.Float64,
    "effort_score": pl.Float64,
    "risk_prior": pl.Float64,
    "risk_uncertainty": pl.Float64,
    "risk_history": pl.Float64,
    "risk_confidence": pl.Float64,
    "risk_headroom": pl.Float64,
    "risk_blast": pl.Float64,
    "risk_score": pl.Float64,
    "priority": pl.Float64,
    "roi": pl.Float64,
}

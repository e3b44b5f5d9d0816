"""Findings from `llm_token_cost`: token savings per service and agent (caching, batch tier...).

One module per source of findings. The savings themselves are estimated by the tokens domain
(`tokens/savings.py`); this module only matches them to playbook kinds and words the action.
"""

from __future__ import annotations

import polars as pl

from capacity_pipelines.common.formatting import usd_per_month
from capacity_pipelines.recommendations.findings.schema import (
    empty_findings,
    finding_frame,
    one_line,
)
from capacity_pipelines.recommendations.playbook import Playbook
from capacity_pipelines.tokens.fleet import TOKEN_COST_TABLE

_LLM_ACTIONS = {
    "prompt_caching": "Enable prompt caching for {agent} ({models})",
    "batch_tier": "Move {agent}'s non-interactive calls to the batch tier ({models})",
    "context_compression": "Compress {agent}'s context before each call ({models})",
    "filter_intermediate_messages": "Stop passing intermediate agent messages to {agent}",
    "model_routing": "Route {agent}'s simple queries to a cheaper model ({models})",
}
# Savings re-costed from what the data shows (prefix reuse, agents labelled non-interactive);
# every other basis rests on an assumed share or ratio (intermediate-message filtering counts
# the downstream calls but assumes the share of their input that could go).
MEASURED_BASES = ("measured", "labelled")
MEASURED_CONFIDENCE = 0.8


def _one_after_another(found: list[tuple], window_spend: float) -> list[tuple]:
    """Savings on the same spend, applied one after another: each takes its share of what the
    previous ones leave, so together they never exceed the spend (summed, three 30 % savings
    would claim 90 % where 66 % is what is left to take).

    `found`: (kind, opportunity row, measured) for one agent. Measured savings go first (they
    are the surest), then the larger estimates. Returns (kind, row, measured, saving alone,
    saving applied after the previous ones, names of the previous ones).
    """
    ordered = sorted(found, key=lambda f: (not f[2], -float(f[1]["savings_30d_usd"])))
    left, before, out = 1.0, [], []
    for kind, best, measured in ordered:
        alone = float(best["savings_30d_usd"])
        window_saving = best.get("window_savings_usd")
        share = (
            min(1.0, max(0.0, float(window_saving) / window_spend))
            if window_saving is not None and window_spend > 0
            else 0.0
        )
        out.append((kind, best, measured, alone, alone * left, list(before)))
        left *= 1.0 - share
        before.append(kind.name.replace("_", " "))
    return out


def llm_findings(
    costed: pl.DataFrame, playbook: Playbook, namespaces: dict[str, str], book=None
) -> tuple[pl.DataFrame, list[str]]:
    """Token savings per (service, agent) from `tokens/savings.py`, one finding per kind.

    `costed`: `llm_token_cost` rows of the window (UTC `ts`). Opportunities the data cannot
    estimate (e.g. no request id) are noted, not listed.
    """
    from capacity_pipelines.tokens.prices import load_price_book
    from capacity_pipelines.tokens.savings import SavingsAssumptions, savings_opportunities

    kinds = playbook.by_source("llm_saving")
    if not kinds or costed.height == 0:
        return empty_findings(), []
    book = book or load_price_book()
    batch_agents = [a for k in kinds for a in (k.params.get("non_interactive_agents") or [])]
    assumptions = SavingsAssumptions(non_interactive_agents=tuple(batch_agents))
    rows, notes = [], set()
    least = playbook.settings["min_impact_usd_month"]
    below: dict[str, list[str]] = {}
    span_days = (costed["ts"].max() - costed["ts"].min()).total_seconds() / 86_400
    for (service, agent), group in costed.sort("ts").group_by(
        ["service", "agent"], maintain_order=True
    ):
        priced = group.filter(pl.col("cost_usd").is_not_null())
        if priced.height == 0:
            continue
        opportunities = savings_opportunities(priced, book, assumptions)
        by_model = (
            priced.group_by("model").agg(pl.col("cost_usd").sum()).sort("cost_usd", descending=True)
        )
        models = ", ".join(by_model["model"].head(2).to_list())
        spend_month = float(priced["cost_usd"].sum()) * 30 / max(span_days, 1e-9)
        namespace = namespaces.get(service, "")
        who = agent or service
        target = f"llm {namespace}/{service}" + (f"/{agent}" if agent and agent != service else "")
        last_seen = priced["ts"].max()
        last_seen = last_seen.replace(tzinfo=None) if last_seen.tzinfo else last_seen
        found = []
        for kind in kinds:
            wanted = str(kind.params.get("opportunity", kind.name)).lower()
            matches = [
                r
                for r in opportunities.iter_rows(named=True)
                if r["opportunity"].lower().startswith(wanted)
            ]
            if not matches:
                continue
            best = matches[0]
            if best["savings_30d_usd"] is None:
                notes.add(f"{kind.name}: {best['basis']} ({best['assumptions']})")
                continue
            found.append((kind, best, str(best["basis"]).startswith(MEASURED_BASES)))
        window_spend = float(priced["cost_usd"].sum())
        for kind, best, measured, alone, saving, before in _one_after_another(found, window_spend):
            if saving < least:
                below.setdefault(kind.name, []).append(f"{who} {usd_per_month(saving)}")
                continue
            stacked = (
                f"; {usd_per_month(alone)} alone, {usd_per_month(saving)} on what "
                f"{', '.join(before)} leave{'s' if len(before) == 1 else ''} of the same spend"
                if before
                else ""
            )
            rows.append(
                {
                    "kind": kind.name,
                    "target": target,
                    "namespace": namespace,
                    "service": service,
                    "action": _LLM_ACTIONS.get(kind.name, kind.title + ": {agent}").format(
                        agent=who, models=models
                    ),
                    "evidence": one_line(
                        f"{who} spends {usd_per_month(spend_month)} on {models}; "
                        f"{best['basis']}: {best['assumptions']}{stacked}"
                    ),
                    "evidence_value": saving,
                    "source_table": TOKEN_COST_TABLE.name,
                    "impact_usd_month": saving,
                    "slo_risk_avoided": 0.0,
                    "runway_days_gained": 0.0,
                    "confidence": MEASURED_CONFIDENCE
                    if measured
                    else (kind.confidence if kind.confidence is not None else 0.5),
                    "history_days": span_days,
                    "forecast_uncertainty": None,
                    "headroom_after": None,
                    "evidence_last_seen": last_seen,
                    "saving_basis": "measured" if measured else "estimated",
                }
            )
    for name, agents in below.items():
        notes.add(f"{name}: estimate below {usd_per_month(least)} for {', '.join(agents)}")
    return finding_frame(rows), sorted(notes)

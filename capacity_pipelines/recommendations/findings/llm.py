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
MEASURED_BASES = ("measured", "labelled", "downstream")
MEASURED_CONFIDENCE = 0.8


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
            saving = float(best["savings_30d_usd"])
            if saving < least:
                below.setdefault(kind.name, []).append(f"{who} {usd_per_month(saving)}")
                continue
            measured = str(best["basis"]).startswith(MEASURED_BASES)
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
                        f"{best['basis']}: {best['assumptions']}",
                        240,
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
                }
            )
    for name, agents in below.items():
        notes.add(f"{name}: estimate below {usd_per_month(least)} for {', '.join(agents)}")
    return finding_frame(rows), sorted(notes)

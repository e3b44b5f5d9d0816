"""Findings from `load_forecast`: LLM provider quotas the token forecast is about to reach.

One module per source of findings; quotas come from the playbook (`params.quotas`), the load
from the forecasting domain's hourly token forecasts.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from capacity_pipelines.forecasting.fleet import FORECAST_TABLE
from capacity_pipelines.recommendations.findings.schema import HORIZON_DAYS, finding_frame
from capacity_pipelines.recommendations.playbook import Playbook


def quota_findings(forecast: pl.DataFrame, playbook: Playbook, as_of: datetime) -> pl.DataFrame:
    """Hourly p90 token forecasts summed per provider/model against `params.quotas`."""
    rows = []
    for kind in playbook.by_source("quota"):
        quotas = kind.params.get("quotas") or {}
        if not quotas or forecast.height == 0:
            continue
        tokens = (
            forecast.filter(pl.col("family") == "llm_tokens")
            .with_columns(
                pl.col("series_id")
                .str.split(":")
                .list.get(1)
                .str.split("/")
                .list.slice(0, 2)
                .list.join("/")
                .alias("provider_model")
            )
            .group_by("provider_model", "ts")
            .agg(pl.col("p90").sum(), pl.col("p50").sum())
        )
        for provider_model, quota in quotas.items():
            over = tokens.filter(
                (pl.col("provider_model") == provider_model) & (pl.col("p90") >= float(quota))
            ).sort("ts")
            if over.height == 0:
                continue
            first = over.row(0, named=True)
            days = max(0.0, (first["ts"] - as_of.replace(tzinfo=None)).total_seconds() / 86_400)
            deadline = first["ts"] if days > 0 else None
            when = f"before {deadline:%a %d %b %H:%M} UTC" if deadline else "now"
            rows.append(
                {
                    "kind": kind.name,
                    "target": f"provider {provider_model}",
                    "namespace": "",
                    "service": provider_model,
                    "action": f"Raise the {provider_model} quota above {float(quota):,.0f} "
                    f"tokens/h {when}",
                    "evidence": f"p90 token forecast {first['p90']:,.0f}/h reaches the quota "
                    f"{float(quota):,.0f}/h in {days:.1f} d",
                    "evidence_value": days,
                    "source_table": FORECAST_TABLE.name,
                    "impact_usd_month": None,
                    "slo_risk_avoided": max(0.0, min(1.0, 1.0 - days / HORIZON_DAYS)),
                    "runway_days_gained": max(0.0, HORIZON_DAYS - days),
                    "confidence": 0.7,
                    "history_days": None,
                    "forecast_uncertainty": (first["p90"] - first["p50"]) / first["p50"]
                    if first["p50"]
                    else None,
                    "headroom_after": None,
                    "deadline": deadline,
                }
            )
    return finding_frame(rows)

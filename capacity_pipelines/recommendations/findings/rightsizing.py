"""Findings from `container_rightsizing`: containers to size down (save) or up (at risk).

One module per source of findings, so a change to how rightsizing rows become actions cannot
touch the runway, bottleneck or token producers (and each is tested on a frame, no warehouse).
"""

from __future__ import annotations

import math
import re

import polars as pl

from capacity_pipelines.common.formatting import iec_bytes
from capacity_pipelines.recommendations.findings.schema import finding_frame, finite, one_line
from capacity_pipelines.recommendations.playbook import Playbook
from capacity_pipelines.rightsizing.quantities import format_cpu
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE

RESIZE_SHARE = 0.10  # a request moving less than 10 % is not mentioned in the action
# SLO risk avoided by a size-up: an OOM-killed container has breached already; each kill adds.
OOM_RISK_BASE, OOM_RISK_PER_KILL = 0.4, 0.2
UNDER_REQUEST_RISK = 0.3  # per doubling of a request that use already exceeds (capped at 0.6)


def _change(label: str, current: float | None, new: float | None, fmt) -> tuple[str, float] | None:
    """`label current -> new` and the ratio, or None when the move is too small to mention."""
    if not finite(current) or not finite(new) or current <= 0:
        return None
    ratio = new / current
    if abs(ratio - 1) <= RESIZE_SHARE:
        return None
    return f"{label} {fmt(current)} -> {fmt(new)}", ratio


def _parse(pattern: str, text: str | None) -> float | None:
    """A number only the rationale carries (history length, volatility): no column holds it."""
    match = re.search(pattern, text or "")
    return float(match.group(1)) if match else None


def rightsizing_findings(
    rightsizing: pl.DataFrame, usage_peaks: pl.DataFrame, playbook: Playbook
) -> pl.DataFrame:
    """`container_rightsizing` rows of kind save / risk -> rightsize down / up findings.

    `usage_peaks` (namespace, workload, container, cpu_p95, memory_max) gives the headroom left
    under the recommended requests; it may be empty.
    """
    down = playbook.by_source("rightsizing_down")
    up = playbook.by_source("rightsizing_up")
    peaks = {
        (r["namespace"], r["workload"], r["container"]): r
        for r in usage_peaks.iter_rows(named=True)
    }
    rows = []
    for rec in rightsizing.filter(pl.col("status") == "ok").iter_rows(named=True):
        kinds = down if rec["kind"] == "save" else up if rec["kind"] == "risk" else []
        if not kinds:
            continue
        changes = [
            c
            for c in (
                _change("CPU request", rec["current_cpu_request"], rec["cpu_request"], format_cpu),
                _change(
                    "memory request",
                    rec["current_memory_request"],
                    rec["memory_request"],
                    iec_bytes,
                ),
            )
            if c
        ]
        if not changes:
            continue
        ratios = [ratio for _, ratio in changes]
        verb = "Lower" if max(ratios) < 1 else "Raise" if min(ratios) > 1 else "Resize"
        action = f"{verb} {rec['container']} " + ", ".join(text for text, _ in changes)
        oom = int(rec["oom_kills"] or 0)
        slo = 0.0
        if oom:
            slo = min(1.0, OOM_RISK_BASE + OOM_RISK_PER_KILL * oom)
        raised = [r for r in ratios if r > 1]
        if raised:
            slo = max(slo, min(0.6, UNDER_REQUEST_RISK * math.log2(max(raised))))
        peak = peaks.get((rec["namespace"], rec["workload"], rec["container"]))
        headroom = None
        if peak and finite(rec["cpu_request"]) and finite(rec["memory_request"]):
            use = max(
                (peak["cpu_p95"] or 0.0) / rec["cpu_request"] if rec["cpu_request"] else 0.0,
                (peak["memory_max"] or 0.0) / rec["memory_request"]
                if rec["memory_request"]
                else 0.0,
            )
            headroom = 1.0 - use
        evidence = one_line(
            (f"{oom} OOM kills; " if oom else "") + str(rec["rationale"] or ""), 200
        )
        saving = rec["monthly_saving_usd"]
        rows.append(
            {
                "kind": kinds[0].name,
                "target": f"{rec['namespace']}/{rec['workload']}/{rec['container']}",
                "namespace": rec["namespace"],
                "service": rec["workload"],
                "action": action,
                "evidence": evidence,
                "evidence_value": saving if rec["kind"] == "save" else max(raised or [1.0]),
                "source_table": RIGHTSIZING_TABLE.name,
                "impact_usd_month": saving,
                "slo_risk_avoided": slo,
                "runway_days_gained": 0.0,
                "confidence": rec["confidence"],
                "history_days": _parse(r"([\d.]+) d of history", rec["rationale"]),
                "forecast_uncertainty": _parse(r"volatility ([\d.]+)", rec["rationale"]),
                "headroom_after": headroom,
            }
        )
    return finding_frame(rows)

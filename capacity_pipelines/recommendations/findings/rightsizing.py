"""Findings from `container_rightsizing`: containers to size down (save) or up (at risk).

One module per source of findings, so a change to how rightsizing rows become actions cannot
touch the runway, bottleneck or token producers (and each is tested on a frame, no warehouse).
"""

from __future__ import annotations

import re

import polars as pl

from capacity_pipelines.common.formatting import cores, iec_bytes
from capacity_pipelines.recommendations.findings.schema import finding_frame, finite, one_line
from capacity_pipelines.recommendations.playbook import Playbook
from capacity_pipelines.rightsizing.prices import GIB
from capacity_pipelines.rightsizing.quantities import format_cpu
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE

RESIZE_SHARE = 0.10  # a request moving less than 10 % is not mentioned in the action
# SLO risk avoided by a size-up: an OOM-killed container has breached already; each kill adds.
OOM_RISK_BASE, OOM_RISK_PER_KILL = 0.4, 0.2


def _change(label: str, current: float | None, new: float | None, fmt) -> tuple[str, float] | None:
    """`label current -> new` and the ratio, or None when the move is too small to mention."""
    if not finite(current) or not finite(new) or current <= 0:
        return None
    ratio = new / current
    if abs(ratio - 1) <= RESIZE_SHARE:
        return None
    return f"{label} {fmt(current)} -> {fmt(new)}", ratio


def _limit_changes(rec: dict) -> str:
    """The limits the recommendation changes, for the action: `remove the 1 core CPU limit`,
    `memory limit 1Gi -> 2Gi` (the patch sets them; the action must not hide it)."""
    parts = []
    for label, fmt, now, new in (
        ("CPU limit", cores, rec.get("current_cpu_limit"), rec.get("cpu_limit")),
        ("memory limit", iec_bytes, rec.get("current_memory_limit"), rec.get("memory_limit")),
    ):
        if finite(now) and not finite(new):
            parts.append(f"remove the {fmt(now)} {label}")
        elif finite(now) and finite(new) and abs(new / now - 1) > RESIZE_SHARE:
            parts.append(f"{label} {fmt(now)} -> {fmt(new)}")
        elif not finite(now) and finite(new):
            parts.append(f"set a {fmt(new)} {label}")
    return ", ".join(parts)


def _parse(pattern: str, text: str | None) -> float | None:
    """A number only the rationale carries (history length, volatility): no column holds it."""
    match = re.search(pattern, text or "")
    return float(match.group(1)) if match else None


def _direction(change: tuple[str, float] | None) -> str | None:
    if change is None:
        return None
    return "up" if change[1] > 1 else "down"


def _cpu_share(rec: dict, cpu_usd_per_core: float, memory_usd_per_gib: float) -> float | None:
    """The CPU request change's share of the saving (the price book's per-core and per-GiB
    prices weigh the two changes): what is left when the CPU part is withdrawn."""
    values = [rec["current_cpu_request"], rec["cpu_request"], rec["current_memory_request"],
              rec["memory_request"]]  # fmt: skip
    if not all(finite(v) for v in values):
        return None
    cpu = (values[0] - values[1]) * cpu_usd_per_core
    memory = (values[2] - values[3]) / GIB * memory_usd_per_gib
    total = cpu + memory
    return None if total == 0 else min(1.0, max(0.0, cpu / total))


def rightsizing_findings(
    rightsizing: pl.DataFrame,
    usage_peaks: pl.DataFrame,
    playbook: Playbook,
    unit_prices: tuple[float, float] = (1.0, 1.0),
) -> pl.DataFrame:
    """`container_rightsizing` rows of kind save / risk -> rightsize down / up findings.

    `usage_peaks` (namespace, workload, container, cpu_p95, memory_max) gives the headroom left
    under the recommended requests; it may be empty. `unit_prices` ($ per core, $ per GiB over
    the same period) split a saving between the CPU and the memory change.
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
        cpu_change = _change(
            "CPU request", rec["current_cpu_request"], rec["cpu_request"], format_cpu
        )
        memory_change = _change(
            "memory request", rec["current_memory_request"], rec["memory_request"], iec_bytes
        )
        changes = [c for c in (cpu_change, memory_change) if c]
        if not changes:
            continue
        ratios = [ratio for _, ratio in changes]
        verb = "Lower" if max(ratios) < 1 else "Raise" if min(ratios) > 1 else "Resize"
        action = f"{verb} {rec['container']} " + ", ".join(text for text, _ in changes)
        limits = _limit_changes(rec)
        if limits:  # a request above today's limit only works with the limit changed too
            action += f" ({limits})"
        oom = int(rec["oom_kills"] or 0)
        slo = 0.0
        if oom:
            slo = min(1.0, OOM_RISK_BASE + OOM_RISK_PER_KILL * oom)
        raised = [r for r in ratios if r > 1]
        peak = peaks.get((rec["namespace"], rec["workload"], rec["container"]))
        # Use above a request is not saturation: without a limit nothing caps it, with one the
        # limit binds, not the request. So a raise claims no SLO risk of its own (an OOM kill
        # does, and a runway or bottleneck at a limit joins it with theirs); measured on the
        # demo walked forward, such claims never came true (benchmarks/results/
        # recommendations.md). Where use exceeds the request the raise is still needed.
        exceeded = [
            ratio
            for change, ratio, used, current in (
                (cpu_change, cpu_change and cpu_change[1], peak and peak["cpu_p95"],
                 rec["current_cpu_request"]),
                (memory_change, memory_change and memory_change[1], peak and peak["memory_max"],
                 rec["current_memory_request"]),
            )  # fmt: skip
            if change and ratio > 1 and finite(used) and finite(current) and used > current
        ]

        headroom = None
        if peak and finite(rec["cpu_request"]) and finite(rec["memory_request"]):
            use = max(
                (peak["cpu_p95"] or 0.0) / rec["cpu_request"] if rec["cpu_request"] else 0.0,
                (peak["memory_max"] or 0.0) / rec["memory_request"]
                if rec["memory_request"]
                else 0.0,
            )
            headroom = 1.0 - use
        evidence = one_line((f"{oom} OOM kills; " if oom else "") + str(rec["rationale"] or ""))
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
                "cpu_direction": _direction(cpu_change),
                "memory_direction": _direction(memory_change),
                # measured: the saving prices requests sized from the container's own usage
                "saving_basis": "measured" if finite(saving) and saving > 0 else None,
                "cpu_change": cpu_change[0] if cpu_change else None,
                "memory_change": memory_change[0] if memory_change else None,
                "cpu_saving_share": _cpu_share(rec, *unit_prices),
                "use_above_request": bool(exceeded),
            }
        )
    return finding_frame(rows)

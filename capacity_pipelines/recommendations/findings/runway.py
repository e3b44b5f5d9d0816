"""Findings from `capacity_runway`: workloads whose forecast p90 reaches capacity this week.

One module per source of findings. The runway producer also turns `load_forecast` quantiles
into the forecast uncertainty scoring weighs, because only runway findings use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import polars as pl

from capacity_pipelines.common.formatting import iec_bytes
from capacity_pipelines.forecasting.fleet import RUNWAY_TABLE
from capacity_pipelines.recommendations.findings.schema import (
    HORIZON_DAYS,
    finding_frame,
    one_line,
)
from capacity_pipelines.recommendations.playbook import Playbook

SCALE_OUT_HEADROOM = 0.15  # replicas are sized to keep 15 % headroom over the p90 peak


def forecast_uncertainty(forecast: pl.DataFrame | None) -> pl.DataFrame:
    """Per series, (p95 - p50) / p50 at the forecast's peak (null where p50 is not positive).

    `forecast` is `load_forecast` rows of one as-of day; None or empty gives no rows.
    """
    if forecast is None or forecast.height == 0:
        return pl.DataFrame(schema={"series_id": pl.Utf8, "forecast_uncertainty": pl.Float64})
    return (
        forecast.group_by("series_id")
        .agg(pl.col("p50").max().alias("p50"), pl.col("p95").max().alias("p95"))
        .select(
            "series_id",
            pl.when(pl.col("p50") > 0)
            .then((pl.col("p95") - pl.col("p50")) / pl.col("p50"))
            .otherwise(None)
            .alias("forecast_uncertainty"),
        )
    )


def _unusual(anomalies: pl.DataFrame | None, series_id: str) -> str:
    """`; N unusual hours this week (latest: a level shift Mon 19 Oct 14:00 UTC)`, or ''."""
    if anomalies is None:
        return ""
    hours = anomalies.filter(pl.col("series_id") == series_id)
    if hours.height == 0:
        return ""
    latest = hours.row(-1, named=True)
    what = {"level_shift": "a level shift", "trend_change": "a trend change"}.get(
        latest["kind"], f"a {latest['kind']}"
    )
    count = f"{hours.height} unusual hour" + ("" if hours.height == 1 else "s")
    return f"; {count} this week (latest: {what} {latest['ts']:%a %d %b %H:%M} UTC)"


def runway_findings(
    runway: pl.DataFrame,
    uncertainty: pl.DataFrame,
    workloads: pl.DataFrame,
    playbook: Playbook,
    price_per_pod: Callable[[float, float], float] | None = None,
    anomalies: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Workload CPU / memory series whose p90 reaches capacity within the horizon.

    `uncertainty`: series_id, forecast_uncertainty ((p95 - p50) / p50 at the peak).
    `workloads`: namespace, workload, replicas, hpa, cpu_request_pod, memory_request_pod.
    HPA workloads get the `hpa` kind, the others the `runway` kind. `anomalies` (series_id,
    ts, kind: the week's flagged hours) joins the evidence: a reviewer should know whether the
    history behind a runway holds an incident or a step before trusting it as growth.
    """
    scale = playbook.by_source("runway")
    hpa = playbook.by_source("hpa")
    spread = dict(uncertainty.select("series_id", "forecast_uncertainty").iter_rows())
    info = {(r["namespace"], r["workload"]): r for r in workloads.iter_rows(named=True)}
    rows = []
    # Only series measured against limits have a runway (capacity NULL: no limit, no ceiling).
    close = runway.filter(
        pl.col("family").is_in(["workload_cpu", "workload_memory"])
        & pl.col("capacity").is_not_null()
        & pl.col("runway_days").is_not_null()
        & (pl.col("runway_days") < HORIZON_DAYS)
    )
    for rec in close.iter_rows(named=True):
        entity = rec["series_id"].split(":", 1)[1]
        namespace, _, workload = entity.partition("/")
        w = info.get((namespace, workload), {})
        is_hpa = bool(w.get("hpa"))
        kinds = hpa if is_hpa else scale
        if not kinds:
            continue
        resource = "CPU" if rec["family"] == "workload_cpu" else "memory"
        fmt = (lambda v: f"{v:.2f} cores") if resource == "CPU" else iec_bytes
        replicas = float(w.get("replicas") or 1.0)
        needed = math.ceil(
            replicas * rec["peak_p90"] / max(rec["capacity"], 1e-12) / (1 - SCALE_OUT_HEADROOM)
        )
        extra = max(1, needed - round(replicas))
        cost = None
        if price_per_pod and w.get("cpu_request_pod") is not None:
            cost = -extra * price_per_pod(w["cpu_request_pod"], w["memory_request_pod"] or 0.0)
        days = max(0.0, float(rec["runway_days"]))
        # A runway of zero is "now": a deadline is never stated in the past.
        deadline = rec["saturation_ts"] if days > 0 else None
        when = f"before {deadline:%a %d %b %H:%M} UTC" if deadline else "now"
        if is_hpa:
            action = (
                f"Raise {workload} HPA maxReplicas by {extra} (or lower its target utilisation)"
                f" {when}"
            )
        else:
            action = f"Scale out {workload} by {extra} replica(s) (or add nodes) {when}"
        limits = fmt(rec["capacity"])
        reach = (
            f"reaches capacity {limits} (its limits) in {days:.1f} d"
            if days > 0
            else f"is at or above capacity {limits} (its limits) now"
        )
        evidence = one_line(
            f"{resource} p90 peak {fmt(rec['peak_p90'])} {reach}"
            + (f"; {rec['note']}" if rec.get("note") else "")
            + _unusual(anomalies, rec["series_id"])
        )
        sigma = spread.get(rec["series_id"])
        rows.append(
            {
                "kind": kinds[0].name,
                "target": f"{namespace}/{workload}",
                "namespace": namespace,
                "service": workload,
                "action": action,
                "evidence": evidence,
                "evidence_value": days,
                "source_table": RUNWAY_TABLE.name,
                "impact_usd_month": cost,
                "slo_risk_avoided": max(0.0, min(1.0, 1.0 - days / HORIZON_DAYS)),
                "runway_days_gained": max(0.0, HORIZON_DAYS - days),
                "confidence": max(0.2, min(0.95, 1.0 - (sigma or 0.3))),
                "history_days": None,
                "forecast_uncertainty": sigma,
                "headroom_after": SCALE_OUT_HEADROOM,
                "deadline": deadline,
                "cpu_direction": "up" if resource == "CPU" else None,
                "memory_direction": "up" if resource == "memory" else None,
            }
        )
    return finding_frame(rows)

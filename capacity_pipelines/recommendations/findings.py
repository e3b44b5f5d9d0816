"""Findings: what each domain's warehouse table says is worth doing, in one shape.

A finding is one candidate action (a playbook kind) on one target, with its evidence and the raw
quantities scoring needs: $ per month, SLO risk avoided, runway days gained, the finding's
confidence, history length, forecast uncertainty and headroom left after the change. Each
producer reads one table; a table (or a column family) that is missing is skipped with a note,
never a crash, because the domains are built and deployed independently.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import polars as pl

from capacity_pipelines.common.formatting import iec_bytes, usd_per_month
from capacity_pipelines.recommendations.playbook import ActionKind, Playbook
from capacity_pipelines.rightsizing.quantities import format_cpu

HORIZON_DAYS = 7.0  # capacity_runway looks a week ahead (forecasting HORIZON_HOURS = 168)
LLM_WINDOW_DAYS = 7  # token savings are measured on the last week and scaled to 30 days
USAGE_WINDOW_DAYS = 7  # usage percentiles for "headroom after the change"
RESIZE_SHARE = 0.10  # a request moving less than 10 % is not mentioned in the action
SCALE_OUT_HEADROOM = 0.15  # replicas are sized to keep 15 % headroom over the p90 peak
# SLO risk avoided by a size-up: an OOM-killed container has breached already; each kill adds.
OOM_RISK_BASE, OOM_RISK_PER_KILL = 0.4, 0.2
UNDER_REQUEST_RISK = 0.3  # per doubling of a request that use already exceeds (capped at 0.6)
EVIDENCE_CHARS = 320  # merged evidence stays one readable line (about four terminal lines)

FINDING_SCHEMA: dict[str, pl.DataType] = {
    "kind": pl.Utf8,
    "target": pl.Utf8,
    "namespace": pl.Utf8,
    "service": pl.Utf8,
    "action": pl.Utf8,
    "evidence": pl.Utf8,
    "evidence_value": pl.Float64,
    "source_table": pl.Utf8,
    "impact_usd_month": pl.Float64,
    "slo_risk_avoided": pl.Float64,
    "runway_days_gained": pl.Float64,
    "confidence": pl.Float64,
    "history_days": pl.Float64,
    "forecast_uncertainty": pl.Float64,
    "headroom_after": pl.Float64,
    "workloads": pl.Int64,
}


@dataclass
class Findings:
    """Every finding of one as-of day, and notes on what could not be looked at."""

    frame: pl.DataFrame
    notes: list[str] = field(default_factory=list)


def empty_findings() -> pl.DataFrame:
    return pl.DataFrame(schema=FINDING_SCHEMA)


def _frame(rows: list[dict]) -> pl.DataFrame:
    defaults = {"workloads": 1}
    full = [{c: row.get(c, defaults.get(c)) for c in FINDING_SCHEMA} for row in rows]
    return pl.DataFrame(full, schema=FINDING_SCHEMA) if full else empty_findings()


def _one_line(text: str | None, limit: int = 220) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _finite(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


# --- rightsizing ---------------------------------------------------------------------------


def _change(label: str, current: float | None, new: float | None, fmt) -> tuple[str, float] | None:
    if not _finite(current) or not _finite(new) or current <= 0:
        return None
    ratio = new / current
    if abs(ratio - 1) <= RESIZE_SHARE:
        return None
    return f"{label} {fmt(current)} -> {fmt(new)}", ratio


def _parse(pattern: str, text: str | None) -> float | None:
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
        if peak and _finite(rec["cpu_request"]) and _finite(rec["memory_request"]):
            use = max(
                (peak["cpu_p95"] or 0.0) / rec["cpu_request"] if rec["cpu_request"] else 0.0,
                (peak["memory_max"] or 0.0) / rec["memory_request"]
                if rec["memory_request"]
                else 0.0,
            )
            headroom = 1.0 - use
        evidence = _one_line(
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
                "source_table": "container_rightsizing",
                "impact_usd_month": saving,
                "slo_risk_avoided": slo,
                "runway_days_gained": 0.0,
                "confidence": rec["confidence"],
                "history_days": _parse(r"([\d.]+) d of history", rec["rationale"]),
                "forecast_uncertainty": _parse(r"volatility ([\d.]+)", rec["rationale"]),
                "headroom_after": headroom,
            }
        )
    return _frame(rows)


# --- runway (capacity_runway + load_forecast) ------------------------------------------------


def runway_findings(
    runway: pl.DataFrame,
    uncertainty: pl.DataFrame,
    workloads: pl.DataFrame,
    playbook: Playbook,
    price_per_pod: Callable[[float, float], float] | None = None,
) -> pl.DataFrame:
    """Workload CPU / memory series whose p90 reaches capacity within the horizon.

    `uncertainty`: series_id, forecast_uncertainty ((p95 - p50) / p50 at the peak).
    `workloads`: namespace, workload, replicas, hpa, cpu_request_pod, memory_request_pod.
    HPA workloads get the `hpa` kind, the others the `runway` kind.
    """
    scale = playbook.by_source("runway")
    hpa = playbook.by_source("hpa")
    spread = dict(uncertainty.select("series_id", "forecast_uncertainty").iter_rows())
    info = {(r["namespace"], r["workload"]): r for r in workloads.iter_rows(named=True)}
    rows = []
    close = runway.filter(
        pl.col("family").is_in(["workload_cpu", "workload_memory"])
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
        when = rec["saturation_ts"].strftime("%a %d %b %H:%M") if rec["saturation_ts"] else "now"
        if is_hpa:
            action = (
                f"Raise {workload} HPA maxReplicas by {extra} (or lower its target utilisation)"
                f" before {when} UTC"
            )
        else:
            action = f"Scale out {workload} by {extra} replica(s) (or add nodes) before {when} UTC"
        days = float(rec["runway_days"])
        evidence = _one_line(
            f"{resource} p90 peak {fmt(rec['peak_p90'])} reaches capacity {fmt(rec['capacity'])}"
            f" in {days:.1f} d" + (f"; {rec['note']}" if rec.get("note") else "")
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
                "source_table": "capacity_runway",
                "impact_usd_month": cost,
                "slo_risk_avoided": max(0.0, min(1.0, 1.0 - days / HORIZON_DAYS)),
                "runway_days_gained": max(0.0, HORIZON_DAYS - days),
                "confidence": max(0.2, min(0.95, 1.0 - (sigma or 0.3))),
                "history_days": None,
                "forecast_uncertainty": sigma,
                "headroom_after": SCALE_OUT_HEADROOM,
            }
        )
    return _frame(rows)


# --- bottleneck outlook -----------------------------------------------------------------------

_BOTTLENECK_ACTIONS = {
    "fix_database_bottleneck": "Fix the {service} bottleneck: check slow queries / missing "
    "indexes, connection pool size, or add a read replica",
    "add_cache": "Add or enlarge a cache in front of {service}'s database calls",
    "scale_out": "Scale out {service} before the predicted {cls} saturation",
    "raise_provider_quota": "Raise {service}'s LLM provider quota (rate limits predicted)",
}
# Bottlenecks already seen: the same fixes, worded for what happened rather than what may.
_OBSERVED_ACTIONS = _BOTTLENECK_ACTIONS | {
    "scale_out": "Scale out {service} or raise its {cls} limit ({cls} saturation seen)",
    "raise_provider_quota": "Raise {service}'s LLM provider quota (rate limits hit)",
}


def _bottleneck_kind(kind: ActionKind, cls: str, service: str, databases: set[str]) -> bool:
    """Does `kind` answer a `cls` bottleneck on `service`? (`params.classes`, `databases`,
    `callers_only`: a database's own bottleneck is fixed in the database, its callers cache.)"""
    if cls not in (kind.params.get("classes") or []):
        return False
    if kind.params.get("databases") is not None and service not in kind.params["databases"]:
        return False
    return not (kind.params.get("callers_only") and service in databases)


def bottleneck_findings(
    outlook: pl.DataFrame, playbook: Playbook, observed: bool = False
) -> pl.DataFrame:
    """Predicted bottlenecks (probability >= the playbook minimum) -> the kinds listing the class.

    One finding per service and kind: the likeliest class and horizon win. `observed` rows are
    bottlenecks already seen in the recent history (`recent_bottlenecks`), not predicted ones.
    """
    least = playbook.settings["min_bottleneck_probability"]
    likely = outlook.filter(
        (pl.col("bottleneck_class") != "none") & (pl.col("probability") >= least)
    ).sort(["probability", "horizon"], descending=[True, False])
    kinds = [k for k in playbook.kinds.values() if k.params.get("classes")]
    databases = {d for k in kinds for d in (k.params.get("databases") or [])}
    rows, seen = [], set()
    for rec in likely.iter_rows(named=True):
        cls, service, namespace = rec["bottleneck_class"], rec["service"], rec["namespace"]
        for kind in kinds:
            if not _bottleneck_kind(kind, cls, service, databases) or (kind.name, service) in seen:
                continue
            seen.add((kind.name, service))
            actions = _OBSERVED_ACTIONS if observed else _BOTTLENECK_ACTIONS
            template = actions.get(kind.name, kind.title + " ({service})")
            target = (
                f"{namespace}/{service}"
                if kind.source == "runway"
                else (f"service {namespace}/{service}")
            )
            probability = float(rec["probability"])
            confidence = probability if rec.get("method") == "lightgbm" else 0.8 * probability
            expected = rec.get("expected_at")
            when = f", expected {expected:%a %d %b %H:%M} UTC" if expected else ""
            rows.append(
                {
                    "kind": kind.name,
                    "target": target,
                    "namespace": namespace,
                    "service": service,
                    "action": template.format(service=service, cls=cls),
                    "evidence": _one_line(
                        f"{cls} bottleneck {rec['horizon']}: {rec.get('evidence') or ''}"
                        if observed
                        else f"{cls} bottleneck p={probability:.2f} within {rec['horizon']}"
                        f"{when}: {rec.get('evidence') or ''}"
                    ),
                    "evidence_value": probability,
                    "source_table": "service windows (USE rules)"
                    if observed
                    else "bottleneck_outlook",
                    "impact_usd_month": None,
                    "slo_risk_avoided": probability,
                    "runway_days_gained": 0.0,
                    "confidence": confidence,
                    "history_days": None,
                    "forecast_uncertainty": 1.0 - probability,
                    "headroom_after": None,
                }
            )
    return _frame(rows)


RECENT_DAYS = 7  # a bottleneck seen in the last week and not fixed is worth a line
# A bottleneck already seen is likely to recur: 0.5, plus 0.1 per hour it lasted (at most 0.95).
RECENT_BASE, RECENT_PER_HOUR, RECENT_MAX = 0.5, 0.1, 0.95


def recent_bottlenecks(labelled: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """USE-rule labelled service-hours of the last `RECENT_DAYS` -> outlook-shaped rows.

    `labelled` is `bottlenecks.labels.label_windows` output (namespace, service, window_start,
    bottleneck_class, evidence); the worst hour's evidence is kept.
    """
    end = as_of.replace(tzinfo=None)
    seen = labelled.filter(
        (pl.col("bottleneck_class") != "none")
        & (pl.col("window_start") >= end - timedelta(days=RECENT_DAYS))
        & (pl.col("window_start") < end)
    )
    grouped = seen.group_by("namespace", "service", "bottleneck_class").agg(
        pl.len().alias("hours"),
        pl.col("window_start").max().alias("last"),
        pl.col("evidence").first().alias("worst"),
    )
    return grouped.select(
        "namespace",
        "service",
        "bottleneck_class",
        pl.format("seen {} h in the last {} d", "hours", pl.lit(RECENT_DAYS)).alias("horizon"),
        pl.min_horizontal(
            pl.lit(RECENT_MAX), RECENT_BASE + RECENT_PER_HOUR * pl.col("hours").cast(pl.Float64)
        ).alias("probability"),
        pl.format("last {}; {}", pl.col("last").dt.strftime("%a %d %b %H:%M UTC"), "worst").alias(
            "evidence"
        ),
        pl.lit(None, dtype=pl.Datetime("us")).alias("expected_at"),
        pl.lit("rules").alias("method"),
    ).sort("namespace", "service", "bottleneck_class")


# --- LLM token savings ------------------------------------------------------------------------

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
                    "evidence": _one_line(
                        f"{who} spends {usd_per_month(spend_month)} on {models}; "
                        f"{best['basis']}: {best['assumptions']}",
                        240,
                    ),
                    "evidence_value": saving,
                    "source_table": "llm_token_cost",
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
    return _frame(rows), sorted(notes)


# --- provider quotas --------------------------------------------------------------------------


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
            rows.append(
                {
                    "kind": kind.name,
                    "target": f"provider {provider_model}",
                    "namespace": "",
                    "service": provider_model,
                    "action": f"Raise the {provider_model} quota above {float(quota):,.0f} "
                    f"tokens/h before {first['ts']:%a %d %b %H:%M} UTC",
                    "evidence": f"p90 token forecast {first['p90']:,.0f}/h reaches the quota "
                    f"{float(quota):,.0f}/h in {days:.1f} d",
                    "evidence_value": days,
                    "source_table": "load_forecast",
                    "impact_usd_month": None,
                    "slo_risk_avoided": max(0.0, min(1.0, 1.0 - days / HORIZON_DAYS)),
                    "runway_days_gained": max(0.0, HORIZON_DAYS - days),
                    "confidence": 0.7,
                    "history_days": None,
                    "forecast_uncertainty": (first["p90"] - first["p50"]) / first["p50"]
                    if first["p50"]
                    else None,
                    "headroom_after": None,
                }
            )
    return _frame(rows)


# --- merging and reading the warehouse ----------------------------------------------------------


def fold_runway_into_size_up(findings: pl.DataFrame, playbook: Playbook) -> pl.DataFrame:
    """A workload that runs out of room AND has a size-up recommendation gets ONE action.

    Runway is measured against requests where there is no limit, and a memory or CPU bottleneck
    of one container is its size, so raising the request is the fix; the runway's or the
    bottleneck's SLO risk and evidence join the size-up finding instead of a second line.
    """
    up = {k.name for k in playbook.by_source("rightsizing_up")}
    runway = {k.name for k in playbook.by_source("runway") + playbook.by_source("hpa")}
    sized = findings.filter(pl.col("kind").is_in(list(up)))
    if sized.height == 0:
        return findings
    workload = pl.col("target").str.split("/").list.slice(0, 2).list.join("/")
    folded = findings.filter(
        pl.col("kind").is_in(list(runway))
        & pl.col("target").is_in(sized.select(workload)["target"].to_list())
    )
    if folded.height == 0:
        return findings
    extra = folded.group_by("target").agg(
        pl.col("slo_risk_avoided").max().alias("_slo"),
        pl.col("runway_days_gained").max().alias("_gain"),
        pl.col("evidence").str.join("; ").alias("_ev"),
    )
    updated = (
        sized.with_columns(workload.alias("_wl"))
        .join(extra, left_on="_wl", right_on="target", how="left")
        .with_columns(
            pl.max_horizontal("slo_risk_avoided", pl.col("_slo").fill_null(0.0)).alias(
                "slo_risk_avoided"
            ),
            pl.max_horizontal("runway_days_gained", pl.col("_gain").fill_null(0.0)).alias(
                "runway_days_gained"
            ),
            pl.when(pl.col("_ev").is_not_null())
            .then(pl.format("{}; {}", "_ev", "evidence"))
            .otherwise(pl.col("evidence"))
            .alias("evidence"),
        )
        .select(list(FINDING_SCHEMA))
    )
    rest = findings.filter(~pl.col("kind").is_in(list(up))).join(
        folded.select("kind", "target"), on=["kind", "target"], how="anti"
    )
    return pl.concat([updated, rest])


def merge_duplicates(findings: pl.DataFrame) -> pl.DataFrame:
    """Same kind on the same target from several tables -> one finding (strongest evidence)."""
    if findings.height == 0:
        return findings
    ordered = findings.sort(
        ["kind", "target", "slo_risk_avoided", "impact_usd_month", "source_table"],
        descending=[False, False, True, True, False],
        nulls_last=True,
    )
    return (
        ordered.group_by(["kind", "target"], maintain_order=True)
        .agg(
            pl.col("namespace").first(),
            pl.col("service").first(),
            pl.col("action").first(),
            pl.col("evidence").unique(maintain_order=True).str.join("; "),
            pl.col("evidence_value").first(),
            pl.col("source_table").unique(maintain_order=True).str.join(", "),
            pl.col("impact_usd_month").max(),
            pl.col("slo_risk_avoided").max(),
            pl.col("runway_days_gained").max(),
            pl.col("confidence").max(),
            pl.col("history_days").max(),
            pl.col("forecast_uncertainty").min(),
            pl.col("headroom_after").min(),
            pl.col("workloads").max(),
        )
        .select(list(FINDING_SCHEMA))
    )


def table_columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str] | None:
    """Columns of a warehouse table, or None when it does not exist."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main' "
        "AND database_name = current_database()",
        [table],
    ).fetchall()
    return {r[0] for r in rows} or None


def _latest(
    con: duckdb.DuckDBPyConnection, table: str, as_of: datetime, needed: set[str], notes: list[str]
) -> pl.DataFrame | None:
    """Rows of the latest as-of day at or before `as_of`, or None (with a note)."""
    columns = table_columns(con, table)
    if columns is None:
        notes.append(f"{table}: table not in the warehouse yet; its findings are skipped")
        return None
    missing = sorted(needed - columns)
    if missing:
        notes.append(f"{table}: columns {missing} missing; its findings are skipped")
        return None
    cut = as_of.replace(tzinfo=None)
    return con.execute(
        f'SELECT * FROM "{table}" WHERE as_of = (SELECT max(as_of) FROM "{table}" '
        "WHERE as_of <= ?)",
        [cut],
    ).pl()


RIGHTSIZING_COLUMNS = {
    "as_of", "namespace", "workload", "container", "status", "kind", "current_cpu_request",
    "cpu_request", "current_memory_request", "memory_request", "confidence",
    "monthly_saving_usd", "hpa", "oom_kills", "rationale",
}  # fmt: skip
RUNWAY_COLUMNS = {"as_of", "series_id", "family", "peak_p90", "capacity", "saturation_ts",
                  "runway_days", "note"}  # fmt: skip
OUTLOOK_COLUMNS = {"as_of", "namespace", "service", "horizon", "bottleneck_class",
                   "probability", "evidence"}  # fmt: skip
TOKEN_COLUMNS = {"service", "agent", "provider", "model", "ts", "input_tokens", "output_tokens",
                 "cost_usd"}  # fmt: skip


def _usage_peaks(con, as_of: datetime) -> pl.DataFrame:
    if table_columns(con, "container_usage") is None:
        return pl.DataFrame(
            schema={
                "namespace": pl.Utf8,
                "workload": pl.Utf8,
                "container": pl.Utf8,
                "cpu_p95": pl.Float64,
                "memory_max": pl.Float64,
            }  # fmt: skip
        )
    end = as_of.replace(tzinfo=None)
    return con.execute(
        "SELECT namespace, workload, container, quantile_cont(cpu_cores, 0.95) AS cpu_p95, "
        "max(memory_working_set_bytes) AS memory_max FROM container_usage "
        "WHERE ts > ? AND ts <= ? GROUP BY ALL",
        [end - timedelta(days=USAGE_WINDOW_DAYS), end],
    ).pl()


def _workloads(con, as_of: datetime, rightsizing: pl.DataFrame | None) -> pl.DataFrame:
    schema = {"namespace": pl.Utf8, "workload": pl.Utf8, "replicas": pl.Float64,
              "hpa": pl.Boolean, "cpu_request_pod": pl.Float64,
              "memory_request_pod": pl.Float64}  # fmt: skip
    if table_columns(con, "container_usage") is None:
        return pl.DataFrame(schema=schema)
    end = as_of.replace(tzinfo=None)
    frame = con.execute(
        """WITH recent AS (
             SELECT namespace, workload, pod, ts, sum(cpu_request_cores) AS cpu,
                    sum(memory_request_bytes) AS mem
             FROM container_usage WHERE ts > ? AND ts <= ? GROUP BY ALL),
           per_step AS (SELECT namespace, workload, ts, count(*) AS pods FROM recent GROUP BY ALL)
           SELECT r.namespace, r.workload,
                  arg_max(p.pods, p.ts) AS replicas,
                  max(p.pods) > min(p.pods) AS hpa,
                  arg_max(r.cpu, r.ts) AS cpu_request_pod,
                  arg_max(r.mem, r.ts) AS memory_request_pod
           FROM recent r JOIN per_step p USING (namespace, workload, ts) GROUP BY ALL""",
        [end - timedelta(days=USAGE_WINDOW_DAYS), end],
    ).pl()
    frame = frame.cast({k: v for k, v in schema.items()})
    if rightsizing is not None and rightsizing.height:
        flagged = rightsizing.filter(pl.col("hpa")).select("namespace", "workload").unique()
        frame = frame.with_columns(
            (
                pl.col("hpa")
                | pl.struct("namespace", "workload").is_in(flagged.to_struct().implode())
            ).alias("hpa")
        )
    return frame


def _recent_bottleneck_findings(con, as_of: datetime, playbook: Playbook, notes: list[str]):
    """Bottlenecks seen in the last week, labelled by the bottleneck package's USE rules."""
    try:
        from capacity_pipelines.bottlenecks.labels import label_windows
        from capacity_pipelines.bottlenecks.outlook import read_inputs
    except ImportError as exc:  # the bottleneck package is deployed separately
        notes.append(f"recent bottlenecks skipped: {exc}")
        return empty_findings()
    if not all(table_columns(con, t) for t in ("container_usage", "service_traffic")):
        notes.append("recent bottlenecks skipped: container_usage or service_traffic missing")
        return empty_findings()
    # two weeks, so the last week's hours have their seasonal baselines
    windows, _ = read_inputs(con, as_of, history_days=2 * RECENT_DAYS)
    if windows.height == 0:
        return empty_findings()
    recent = recent_bottlenecks(label_windows(windows), as_of)
    return bottleneck_findings(recent, playbook, observed=True)


def collect_findings(
    con: duckdb.DuckDBPyConnection, as_of: datetime, playbook: Playbook
) -> Findings:
    """Every finding the warehouse supports at `as_of`, merged, above the minimum impact."""
    from capacity_pipelines.rightsizing.prices import load_compute_prices

    notes: list[str] = []
    frames = []
    rightsizing = _latest(con, "container_rightsizing", as_of, RIGHTSIZING_COLUMNS, notes)
    if rightsizing is not None:
        frames.append(rightsizing_findings(rightsizing, _usage_peaks(con, as_of), playbook))
    runway = _latest(con, "capacity_runway", as_of, RUNWAY_COLUMNS, notes)
    if runway is not None:
        uncertainty = pl.DataFrame(
            schema={"series_id": pl.Utf8, "forecast_uncertainty": pl.Float64}
        )
        forecast = _latest(
            con, "load_forecast", as_of, {"as_of", "series_id", "family", "p50", "p90", "p95"},
            notes,
        )  # fmt: skip
        if forecast is not None and forecast.height:
            uncertainty = (
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
            frames.append(quota_findings(forecast, playbook, as_of))
        prices = load_compute_prices()
        price = prices.price()

        def per_pod(cpu: float, mem: float) -> float:
            return prices.monthly_usd(cpu, mem, price)

        frames.append(
            runway_findings(
                runway, uncertainty, _workloads(con, as_of, rightsizing), playbook, per_pod
            )
        )
    outlook = _latest(con, "bottleneck_outlook", as_of, OUTLOOK_COLUMNS, notes)
    if outlook is not None:
        frames.append(bottleneck_findings(outlook, playbook))
    frames.append(_recent_bottleneck_findings(con, as_of, playbook, notes))
    token_columns = table_columns(con, "llm_token_cost")
    if token_columns is None or TOKEN_COLUMNS - token_columns:
        notes.append("llm_token_cost: table or columns missing; token savings are skipped")
    else:
        end = as_of.replace(tzinfo=None)
        costed = con.execute(
            "SELECT * FROM llm_token_cost WHERE ts > ? AND ts <= ? ORDER BY ts",
            [end - timedelta(days=LLM_WINDOW_DAYS), end],
        ).pl()
        namespaces = {}
        if table_columns(con, "service_traffic"):
            namespaces = dict(
                con.execute("SELECT DISTINCT service, namespace FROM service_traffic").fetchall()
            )
        if costed.height:
            costed = costed.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
            llm, llm_notes = llm_findings(costed, playbook, namespaces)
            frames.append(llm)
            notes += llm_notes
    frame = pl.concat(frames) if frames else empty_findings()
    frame = merge_duplicates(fold_runway_into_size_up(frame, playbook))
    frame = frame.with_columns(
        pl.col("evidence").map_elements(
            lambda text: _one_line(text, EVIDENCE_CHARS), return_dtype=pl.Utf8
        )
    )
    least = playbook.settings["min_impact_usd_month"]
    frame = frame.filter(
        (pl.col("impact_usd_month").fill_null(0.0) >= least)
        | (pl.col("slo_risk_avoided").fill_null(0.0) > 0)
    )
    return Findings(frame=frame, notes=notes)

"""Collect: read each domain's table, run its producer, and merge what they found into one list.

Apart from the producers because merging is where sources meet: a workload that runs out of room
and also has a size-up recommendation gets one action, and the same kind on the same target from
several tables becomes one finding with the strongest evidence.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import polars as pl

from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.forecasting.fleet import FORECAST_TABLE, RUNWAY_TABLE
from capacity_pipelines.ingest.tables import CONTAINER_USAGE_TABLE, SERVICE_TRAFFIC_TABLE
from capacity_pipelines.recommendations.findings import reads
from capacity_pipelines.recommendations.findings.bottleneck import (
    RECENT_DAYS,
    bottleneck_findings,
    recent_bottlenecks,
)
from capacity_pipelines.recommendations.findings.llm import llm_findings
from capacity_pipelines.recommendations.findings.quota import quota_findings
from capacity_pipelines.recommendations.findings.rightsizing import rightsizing_findings
from capacity_pipelines.recommendations.findings.runway import (
    forecast_uncertainty,
    runway_findings,
)
from capacity_pipelines.recommendations.findings.schema import (
    FINDING_SCHEMA,
    Findings,
    empty_findings,
    one_line,
)
from capacity_pipelines.recommendations.playbook import Playbook
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE

EVIDENCE_CHARS = 320  # merged evidence stays one readable line (about four terminal lines)


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


def _recent_bottleneck_findings(
    con: duckdb.DuckDBPyConnection, as_of: datetime, playbook: Playbook, notes: list[str]
) -> pl.DataFrame:
    """Bottlenecks seen in the last week, labelled by the bottleneck package's USE rules."""
    try:
        from capacity_pipelines.bottlenecks.labels import label_windows
        from capacity_pipelines.bottlenecks.outlook import read_inputs
    except ImportError as exc:  # the bottleneck package is deployed separately
        notes.append(f"recent bottlenecks skipped: {exc}")
        return empty_findings()
    if not reads.has_service_windows(con):
        missing = f"{CONTAINER_USAGE_TABLE} or {SERVICE_TRAFFIC_TABLE} missing"
        notes.append(f"recent bottlenecks skipped: {missing}")
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
    rightsizing = reads.latest_rows(
        con, RIGHTSIZING_TABLE.name, as_of, reads.RIGHTSIZING_COLUMNS, notes
    )
    if rightsizing is not None:
        frames.append(rightsizing_findings(rightsizing, reads.usage_peaks(con, as_of), playbook))
    runway = reads.latest_rows(con, RUNWAY_TABLE.name, as_of, reads.RUNWAY_COLUMNS, notes)
    if runway is not None:
        forecast = reads.latest_rows(con, FORECAST_TABLE.name, as_of, reads.FORECAST_COLUMNS, notes)
        if forecast is not None and forecast.height:
            frames.append(quota_findings(forecast, playbook, as_of))
        prices = load_compute_prices()
        price = prices.price()

        def per_pod(cpu: float, mem: float) -> float:
            return prices.monthly_usd(cpu, mem, price)

        workloads = reads.workloads(con, as_of, rightsizing)
        frames.append(
            runway_findings(runway, forecast_uncertainty(forecast), workloads, playbook, per_pod)
        )
    outlook = reads.latest_rows(con, BOTTLENECK_TABLE.name, as_of, reads.OUTLOOK_COLUMNS, notes)
    if outlook is not None:
        frames.append(bottleneck_findings(outlook, playbook))
    frames.append(_recent_bottleneck_findings(con, as_of, playbook, notes))
    costed = reads.token_costs(con, as_of, notes)
    if costed is not None and costed.height:
        llm, llm_notes = llm_findings(costed, playbook, reads.service_namespaces(con))
        frames.append(llm)
        notes += llm_notes
    frame = pl.concat(frames) if frames else empty_findings()
    frame = merge_duplicates(fold_runway_into_size_up(frame, playbook))
    frame = frame.with_columns(
        pl.col("evidence").map_elements(
            lambda text: one_line(text, EVIDENCE_CHARS), return_dtype=pl.Utf8
        )
    )
    least = playbook.settings["min_impact_usd_month"]
    frame = frame.filter(
        (pl.col("impact_usd_month").fill_null(0.0) >= least)
        | (pl.col("slo_risk_avoided").fill_null(0.0) > 0)
    )
    return Findings(frame=frame, notes=notes)

"""Collect: read each domain's table, run its producer, and merge what they found into one list.

Apart from the producers because merging is where sources meet: a workload that runs out of room
and also has a size-up recommendation gets one action, and the same kind on the same target from
several tables becomes one finding with the strongest evidence.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.common.freshness import no_data_since, stale_before
from capacity_pipelines.forecasting.fleet import FORECAST_TABLE, RUNWAY_TABLE
from capacity_pipelines.ingest.tables import CONTAINER_USAGE_TABLE, SERVICE_TRAFFIC_TABLE
from capacity_pipelines.recommendations.findings import reads
from capacity_pipelines.recommendations.findings.bottleneck import (
    OBSERVED_SOURCE,
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

# Lists and tables cut evidence to about four terminal lines; the table and `recs show` keep it
# whole (an SRE checking a finding needs every number it rests on).
EVIDENCE_CHARS = 320


def fold_runway_into_size_up(findings: pl.DataFrame, playbook: Playbook) -> pl.DataFrame:
    """A workload that runs out of room AND has a size-up of that same resource gets ONE action.

    Runway and the cpu / memory bottleneck rules are measured against limits, and a size-up
    from rightsizing sets them too (memory limit = request, no CPU limit), so the size-up is
    the fix: the runway's or the bottleneck's SLO risk, deadline and evidence join it instead
    of a second line. A runway of a resource the size-up does not raise stays its own line.
    """
    up = {k.name for k in playbook.by_source("rightsizing_up")}
    runway = {k.name for k in playbook.by_source("runway") + playbook.by_source("hpa")}
    workload = pl.col("target").str.split("/").list.slice(0, 2).list.join("/")
    sized = findings.filter(pl.col("kind").is_in(list(up))).with_columns(workload.alias("_wl"))
    candidates = findings.filter(pl.col("kind").is_in(list(runway)))
    if sized.height == 0 or candidates.height == 0:
        return findings
    pairs = candidates.join(sized.select("_wl", "cpu_direction", "memory_direction"),
                            left_on="target", right_on="_wl", suffix="_up")  # fmt: skip
    same_resource = (
        (pl.col("cpu_direction") == "up") & (pl.col("cpu_direction_up") == "up")
    ) | ((pl.col("memory_direction") == "up") & (pl.col("memory_direction_up") == "up"))
    folded = pairs.filter(same_resource).select(candidates.columns).unique(["kind", "target"])
    if folded.height == 0:
        return findings
    extra = folded.group_by("target").agg(
        pl.col("slo_risk_avoided").max().alias("_slo"),
        pl.col("runway_days_gained").max().alias("_gain"),
        pl.col("evidence").str.join("; ").alias("_ev"),
        pl.col("deadline").min().alias("_deadline"),
    )
    joined = sized.join(extra, left_on="_wl", right_on="target", how="left")
    updated = joined.with_columns(
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
        pl.min_horizontal("deadline", "_deadline").alias("deadline"),
    ).select(list(FINDING_SCHEMA))
    rest = findings.filter(~pl.col("kind").is_in(list(up))).join(
        folded.select("kind", "target"), on=["kind", "target"], how="anti"
    )
    return pl.concat([updated, rest])


_RESOURCES = (("CPU", "cpu_direction", "cpu_change"), ("memory", "memory_direction",
                                                        "memory_change"))  # fmt: skip


def _without(loser: dict, resource: str, column: str, change: str, winner: dict) -> dict | None:
    """`loser` with its `resource` change withdrawn (None when nothing is left of it)."""
    other = next(c for _, d, c in _RESOURCES if d != column)
    if not loser[other]:
        return None
    share = loser["cpu_saving_share"]
    kept = (1.0 - share) if resource == "CPU" else share
    impact = loser["impact_usd_month"]
    container = str(loser["target"]).rsplit("/", 1)[-1]
    verb = "Raise" if loser[next(d for _, d, c in _RESOURCES if c == other)] == "up" else "Lower"
    return loser | {
        column: None,
        change: None,
        "action": f"{verb} {container} {loser[other]} ({resource} request unchanged: see the "
        f"{winner['kind'].replace('_', ' ')} of {winner['target']})",
        "impact_usd_month": impact * kept if impact is not None and share is not None else impact,
        "evidence": f"{loser['evidence']}; {resource} request kept: {winner['action']}",
    }


def reconcile_directions(findings: pl.DataFrame) -> tuple[pl.DataFrame, dict[tuple, str]]:
    """One direction per workload and resource: what says "more" wins over what says "less".

    A workload that is throttled at its CPU limit, runs out of room, or was OOM-killed is short
    of that resource whatever its average use says, so a request cut of the same resource (a
    rightsizing saving) is withdrawn: from the finding when it changes the other resource too,
    otherwise the finding goes. The winner (the finding with the most SLO risk) carries the
    withdrawn cut in its evidence, so the reviewer still sees what rightsizing proposed.
    Returns the findings and, per withdrawn (kind, target), why.
    """
    if findings.height == 0:
        return findings, {}
    rows = findings.to_dicts()
    withdrawn: dict[tuple, str] = {}
    for resource, column, change in _RESOURCES:
        by_workload: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            if row is not None and row[column]:
                by_workload.setdefault((row["namespace"], row["service"]), []).append(i)
        for members in by_workload.values():
            ups = [i for i in members if rows[i][column] == "up"]
            downs = [i for i in members if rows[i][column] == "down"]
            if not ups or not downs:
                continue
            win = max(ups, key=lambda i: (rows[i]["slo_risk_avoided"] or 0.0, rows[i]["kind"]))
            winner = rows[win]
            for i in downs:
                loser = rows[i]
                cut = loser[change] or f"{resource} cut"
                winner["evidence"] = (
                    f"{winner['evidence']}; withheld: {cut} of {loser['target']} "
                    f"(rightsizing on average use; a request cut does not help a workload "
                    f"short of {resource})"
                )
                rows[i] = _without(loser, resource, column, change, winner)
                if rows[i] is None:
                    withdrawn[(loser["kind"], loser["target"])] = (
                        f"withdrawn: {cut} conflicts with {winner['kind'].replace('_', ' ')} of "
                        f"{winner['target']}"
                    )
    kept = [r for r in rows if r is not None]
    frame = pl.DataFrame(kept, schema=FINDING_SCHEMA) if kept else empty_findings()
    return frame, withdrawn


def merge_duplicates(findings: pl.DataFrame) -> pl.DataFrame:
    """Same kind on the same target from several tables -> one finding (strongest evidence;
    between equals, what was seen before what is predicted: its action names what happened)."""
    if findings.height == 0:
        return findings
    seen = (pl.col("source_table") == OBSERVED_SOURCE).alias("_seen")
    ordered = findings.sort(
        ["kind", "target", "slo_risk_avoided", "impact_usd_month", seen, "source_table"],
        descending=[False, False, True, True, True, False],
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
            pl.col("deadline").min(),
            pl.col("evidence_last_seen").max(),
            *(
                pl.col(c).drop_nulls().first()
                for c in ("cpu_direction", "memory_direction", "saving_basis", "cpu_change",
                          "memory_change", "cpu_saving_share", "use_above_request")
            ),  # fmt: skip
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
    # three weeks: each week's hours have their seasonal baselines in the week before, the
    # middle week's episodes (and the week after them) teach how often bottlenecks recur here
    windows, _ = read_inputs(con, as_of, history_days=3 * RECENT_DAYS)
    if windows.height == 0:
        return empty_findings()
    learn_since = as_of.replace(tzinfo=None) - timedelta(days=2 * RECENT_DAYS)
    recent = recent_bottlenecks(label_windows(windows), as_of, learn_since)
    return bottleneck_findings(recent, playbook, observed=True)


def drop_stale(
    findings: pl.DataFrame, seen: reads.LastSeen, as_of: datetime
) -> tuple[pl.DataFrame, dict[str, str]]:
    """Findings on targets that still report; per stale target, "no data since ...".

    Every finding gets `evidence_last_seen` (the newest sample of its target); one older than
    the freshness window is advice about a workload that stopped reporting, and goes.
    """
    if findings.height == 0:
        return findings, {}
    dated = findings.with_columns(seen.of(findings), seen.judged(findings))
    # a target whose table is not in the warehouse at all cannot be judged (and is kept)
    fresh = (pl.col("evidence_last_seen") >= stale_before(as_of)).fill_null(False) | ~pl.col(
        "judged"
    )
    stale = dated.filter(~fresh).drop("judged")
    kept = dated.filter(fresh).drop("judged")
    reasons = {
        row["target"]: no_data_since(row["evidence_last_seen"])
        for row in stale.iter_rows(named=True)
    }
    return kept, reasons


def collect_findings(
    con: duckdb.DuckDBPyConnection, as_of: datetime, playbook: Playbook
) -> Findings:
    """Every finding the warehouse supports at `as_of`: on targets that still report,
    reconciled per workload and resource, merged, above the minimum impact."""
    from capacity_pipelines.rightsizing.prices import load_compute_prices

    notes: list[str] = []
    frames = []
    prices = load_compute_prices()
    price = prices.price()
    rightsizing = reads.latest_rows(
        con, RIGHTSIZING_TABLE.name, as_of, reads.RIGHTSIZING_COLUMNS, notes
    )
    if rightsizing is not None:
        unit_prices = (price.usd_per_vcpu_hour, price.usd_per_gib_hour)
        frames.append(
            rightsizing_findings(rightsizing, reads.usage_peaks(con, as_of), playbook, unit_prices)
        )
    runway = reads.latest_rows(con, RUNWAY_TABLE.name, as_of, reads.RUNWAY_COLUMNS, notes)
    if runway is not None:
        forecast = reads.latest_rows(con, FORECAST_TABLE.name, as_of, reads.FORECAST_COLUMNS, notes)
        if forecast is not None and forecast.height:
            frames.append(quota_findings(forecast, playbook, as_of))

        def per_pod(cpu: float, mem: float) -> float:
            return prices.monthly_usd(cpu, mem, price)

        workloads = reads.workloads(con, as_of, rightsizing)
        frames.append(
            runway_findings(
                runway, forecast_uncertainty(forecast), workloads, playbook, per_pod,
                reads.recent_anomalies(con, as_of),
            )
        )
    outlook = reads.latest_rows(con, BOTTLENECK_TABLE.name, as_of, reads.OUTLOOK_COLUMNS, notes)
    if outlook is not None:
        frames.append(bottleneck_findings(outlook, playbook, as_of=as_of))
    frames.append(_recent_bottleneck_findings(con, as_of, playbook, notes))
    costed = reads.token_costs(con, as_of, notes)
    if costed is not None and costed.height:
        llm, llm_notes = llm_findings(costed, playbook, reads.service_namespaces(con))
        frames.append(llm)
        notes += llm_notes
    frame = pl.concat(frames) if frames else empty_findings()
    seen = reads.last_seen(con, as_of)
    frame, stale = drop_stale(frame, seen, as_of)
    if stale:
        notes.append(
            f"{len(stale)} targets stopped reporting, no advice on them: "
            + "; ".join(f"{t} ({why})" for t, why in sorted(stale.items())[:10])
        )
    frame, withdrawn = reconcile_directions(frame)
    frame = merge_duplicates(fold_runway_into_size_up(frame, playbook))
    frame = frame.with_columns(
        pl.col("evidence").map_elements(one_line, return_dtype=pl.Utf8)
    )
    least = playbook.settings["min_impact_usd_month"]
    frame = frame.filter(
        (pl.col("impact_usd_month").fill_null(0.0) >= least)
        | (pl.col("slo_risk_avoided").fill_null(0.0) > 0)
        | pl.col("use_above_request").fill_null(False)
    )
    return Findings(frame=frame, notes=notes, last_seen=seen, withdrawn=withdrawn)

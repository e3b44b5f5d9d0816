"""The `predictive_alerts` asset: forecasts that matter within days, where SREs look."""

from datetime import UTC, datetime

import dagster as dg

from capacity_pipelines.alerts import SyncResult, current_alerts, read_latest, sync_alerts
from capacity_pipelines.alerts.rules import write_rules
from capacity_pipelines.defs.partitions import as_of_days, daily_partitions
from capacity_pipelines.defs.resources import (
    AlertmanagerResource,
    ReportsResource,
    WarehouseResource,
    configured_catalog,
)
from capacity_pipelines.reporting.publish import REPORT_STEM
from capacity_pipelines.reporting.webhook import report_link


@dg.asset(
    description="Alertmanager alerts from the latest runway (a workload's CPU or memory p90 "
    "reaching its limits within 7 days: CapacityRunwayEnding) and 24 h bottleneck outlook (a "
    "bottleneck class at probability 0.5 or more: BottleneckLikely), posted idempotently when "
    "CAPACITY_ALERTMANAGER_URL is set (first-seen time kept, conditions that stopped "
    "resolved); and Prometheus rules (reports/latest/alerts/capacity.rules.yml) with each "
    "series' forecast p95 band and an alert when live usage runs above it for 15 minutes. "
    "Only the newest as-of day is posted: a backfill of an older day must not replace today's "
    "alerts with last week's.",
    group_name="alerts",
    kinds={"prometheus", "duckdb"},
    owners=["team:sre"],
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["load_forecasts", "bottleneck_outlook"],
)
def predictive_alerts(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    reports: ReportsResource,
    alertmanager: AlertmanagerResource,
) -> dg.MaterializeResult:
    as_of = as_of_days(context)[-1]
    with warehouse.reader() as con:
        latest = read_latest(con, as_of)
        newest = read_latest(con).as_of
    report = report_link(
        "latest", str(reports.latest_dir / f"{REPORT_STEM}.html"), reports.public_base_url
    )
    now = datetime.now(UTC)
    alerts = current_alerts(latest, alertmanager.settings(), now, report)
    client = alertmanager.client()
    if latest.as_of != newest:
        note = f"as of {as_of:%Y-%m-%d} is not the newest day: nothing posted, rules unchanged"
        context.log.info(note)
        return dg.MaterializeResult(metadata={"as_of": str(as_of), "note": note})
    rules, series = write_rules(latest.forecast, configured_catalog(), reports.latest_dir, report)
    if client is None:
        context.log.info(
            f"CAPACITY_ALERTMANAGER_URL not set: alerts not posted; rules written to {rules}"
        )
        result = SyncResult(firing=len(alerts), resolved=0, posted=0)
    else:
        result = sync_alerts(client, alerts, now)
        if result.warning:
            context.log.warning(result.warning)
    return dg.MaterializeResult(
        metadata={
            "as_of": str(as_of),
            "alerts_firing": result.firing,
            "alerts_resolved": result.resolved,
            "alerts_posted": result.posted,
            "alertmanager": client.public_url if client else "(not configured)",
            "rules": dg.MetadataValue.path(str(rules)),
            "rules_series": series,
        }
    )

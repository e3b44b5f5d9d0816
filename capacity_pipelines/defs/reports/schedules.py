"""The weekly report job and its schedule: Monday 06:00 UTC, on the week that just ended."""

from __future__ import annotations

import os

import dagster as dg

from capacity_pipelines.defs.partitions import weekly_partitions
from capacity_pipelines.reporting.weeks import ReportWeek

REPORT_CRON_ENV = "CAPACITY_REPORT_CRON"
# Monday 06:00 UTC: after the 02:00 daily extraction of Sunday, before Europe's Monday morning.
DEFAULT_REPORT_CRON = "0 6 * * 1"

weekly_report_job = dg.define_asset_job(
    "weekly_capacity_report_job",
    selection=dg.AssetSelection.assets("weekly_capacity_report"),
    description="Build, publish and (if configured) deliver one week's capacity report.",
)


def report_week_partition(moment) -> str | None:
    """Partition key of the week that ended by `moment`, or None before the first week."""
    week = ReportWeek.ended_by(moment)
    first = weekly_partitions().start.date()
    return week.monday.isoformat() if week.monday >= first else None


@dg.schedule(
    job=weekly_report_job,
    cron_schedule=os.environ.get(REPORT_CRON_ENV, DEFAULT_REPORT_CRON),
    execution_timezone="UTC",
    name="weekly_capacity_report_schedule",
    description="Reports on the last complete ISO week (Monday to Sunday, UTC). Cron from "
    f"${REPORT_CRON_ENV} (default `{DEFAULT_REPORT_CRON}`).",
)
def weekly_capacity_report_schedule(context: dg.ScheduleEvaluationContext):
    key = report_week_partition(context.scheduled_execution_time)
    if key is None:
        return dg.SkipReason("no complete week since the partitions start")
    # run_key = the week: a second tick in the same week does not report it twice.
    return dg.RunRequest(run_key=key, partition_key=key)

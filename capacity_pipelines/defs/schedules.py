"""The daily pipeline: yesterday's partition of every daily asset, at 02:00 UTC.

Extraction alone is not enough: the weekly report reads forecasts, rightsizing, token costs,
bottlenecks and recommendations from the warehouse, so the daily run refreshes everything built
on the new day too (in graph order; writers take the warehouse's lock only for their write, so
independent assets compute side by side). The weekly report has its own weekly job and
schedule. `capacity run` and `capacity demo` launch this same job.
"""

from __future__ import annotations

import dagster as dg

from capacity_pipelines.defs.partitions import daily_partitions

DAILY_JOB = "daily_capacity_pipeline"
WEEKLY_ASSETS = dg.AssetSelection.assets("weekly_capacity_report")
# Per-day data: a ranged run rewrites every day of its window (catching up history).
PER_DAY_ASSETS = dg.AssetSelection.groups("ingest") | dg.AssetSelection.assets("llm_token_cost")

daily_pipeline_job = dg.define_asset_job(
    DAILY_JOB,
    selection=dg.AssetSelection.all() - WEEKLY_ASSETS,
    partitions_def=daily_partitions(),
    description="Extract one day of metrics, refresh the forecasts, rightsizing, token costs, "
    "bottleneck outlook and recommendations as of its end, and publish the analysts' snapshot "
    "and the daily reports.",
)

daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline_job, hour_of_day=2, minute_of_hour=0, name="daily_capacity_pipeline_schedule"
)

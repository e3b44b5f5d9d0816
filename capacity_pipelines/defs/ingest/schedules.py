"""The daily pipeline: yesterday's partition of every daily asset, at 02:00 UTC.

Extraction alone is not enough: the weekly report reads forecasts, rightsizing, token costs,
bottlenecks and recommendations from the warehouse, so the daily run refreshes everything built
on the new day too (in graph order; the `warehouse` pool keeps writers one at a time). The
weekly report has its own weekly partitions, job and schedule.
"""

from __future__ import annotations

import dagster as dg

WEEKLY_ASSETS = dg.AssetSelection.assets("weekly_capacity_report")

daily_pipeline_job = dg.define_asset_job(
    "daily_capacity_pipeline",
    selection=dg.AssetSelection.all() - WEEKLY_ASSETS,
    description="Extract one day of metrics, refresh the forecasts, rightsizing, token costs, "
    "bottleneck outlook and recommendations built on it, and publish the analysts' snapshot.",
)

daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline_job, hour_of_day=2, minute_of_hour=0, name="daily_capacity_pipeline_schedule"
)

"""Daily extraction: yesterday's partition of every ingest asset, at 02:00 UTC."""

from __future__ import annotations

import dagster as dg

daily_extraction_job = dg.define_asset_job(
    "daily_extraction",
    selection=dg.AssetSelection.groups("ingest"),
    description="Extract one day of metrics into the warehouse and publish the snapshot.",
)

daily_extraction_schedule = dg.build_schedule_from_partitioned_job(
    daily_extraction_job, hour_of_day=2, minute_of_hour=0, name="daily_extraction_schedule"
)

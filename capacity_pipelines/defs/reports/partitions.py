"""The weekly partitioning of the capacity report: ISO weeks, Monday 00:00 UTC."""

from __future__ import annotations

import os

import dagster as dg

from capacity_pipelines.defs.partitions import DEMO_START


def weekly_partitions() -> dg.WeeklyPartitionsDefinition:
    """Weeks starting Monday (day_offset=1) from `CAPACITY_PARTITIONS_START` (default: demo)."""
    return dg.WeeklyPartitionsDefinition(
        start_date=os.environ.get("CAPACITY_PARTITIONS_START", DEMO_START),
        day_offset=1,
        timezone="UTC",
    )

"""The daily partitioning shared by extraction and everything computed per day."""

from __future__ import annotations

import os

import dagster as dg

DEMO_START = "2026-09-28"  # first day of the bundled demo fleet


def daily_partitions() -> dg.DailyPartitionsDefinition:
    """Daily UTC partitions from `CAPACITY_PARTITIONS_START` (default: the demo fleet's start)."""
    return dg.DailyPartitionsDefinition(
        start_date=os.environ.get("CAPACITY_PARTITIONS_START", DEMO_START), timezone="UTC"
    )

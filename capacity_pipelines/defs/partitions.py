"""Partitions: daily for what is computed per day, weekly for the capacity report.

A partition is a promise (STYLE.md): a green square means that key's answer exists. Extraction
rows are per day, so a ranged run rewrites every day of its window. The as-of assets
(forecasts, rightsizing, bottlenecks, recommendations, token costs) compute an answer *as of the
end of a day*; a run that covers several days computes every one of them, oldest first
(`as_of_days`), so nothing is marked that was not computed.
"""

from __future__ import annotations

import os
from datetime import datetime

import dagster as dg

DEMO_START = "2026-09-28"  # first day of the bundled demo fleet
PARTITIONS_START_ENV = "CAPACITY_PARTITIONS_START"


def partitions_start() -> str:
    """First partition day: `CAPACITY_PARTITIONS_START`, default the demo fleet's first day."""
    return os.environ.get(PARTITIONS_START_ENV) or DEMO_START


def daily_partitions() -> dg.DailyPartitionsDefinition:
    """Daily UTC partitions from `partitions_start()`."""
    return dg.DailyPartitionsDefinition(start_date=partitions_start(), timezone="UTC")


def weekly_partitions() -> dg.WeeklyPartitionsDefinition:
    """ISO weeks (Monday 00:00 UTC, `day_offset=1`) from `partitions_start()`."""
    return dg.WeeklyPartitionsDefinition(
        start_date=partitions_start(), day_offset=1, timezone="UTC"
    )


def as_of_days(context: dg.AssetExecutionContext) -> list[datetime]:
    """The as-of moment (end of day, UTC) of every daily partition this run covers, in order."""
    partitions = context.assets_def.partitions_def
    assert isinstance(partitions, dg.TimeWindowPartitionsDefinition)
    return [partitions.time_window_for_partition_key(key).end for key in context.partition_keys]

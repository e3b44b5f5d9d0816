"""How recent a series' last sample must be for advice to rest on it.

A workload that stopped reporting (deleted, renamed, its exporter gone, or a warehouse that
later received days of another fleet) must not keep getting forecasts, runways and actions
built from its old samples: "reaches capacity in -35 days" is what that produces. Every stage
that turns samples into advice (forecasting, the recommendation findings, their checks) applies
the same window, so "fresh" means one thing everywhere.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

# Extraction is daily: a series with no sample during the whole last day it was extracted for
# has stopped reporting. One step of slack is not needed: the day's last sample is at its end.
FRESHNESS_WINDOW = timedelta(days=1)


def stale_before(as_of: datetime, window: timedelta = FRESHNESS_WINDOW) -> datetime:
    """The oldest last-sample time still fresh at `as_of` (naive UTC, as the warehouse stores)."""
    return as_of.replace(tzinfo=None) - window


def no_data_since(last_seen: datetime | None) -> str:
    """Why a stale target gets no advice, for people: `no data since 2026-10-05 23:55 UTC`."""
    if last_seen is None:
        return "no data in the history window"
    return f"no data since {last_seen:%Y-%m-%d %H:%M} UTC"


def fresh_rows(
    frame: pl.DataFrame, keys: list[str], as_of: datetime, window: timedelta = FRESHNESS_WINDOW
) -> pl.DataFrame:
    """Rows of the entities (`keys`) whose newest `ts` is inside the window before `as_of`:
    an entity that stopped reporting gets no recommendation from its old samples."""
    if frame.height == 0:
        return frame
    newest = pl.col("ts").max().over(keys)
    return frame.filter(newest >= stale_before(as_of, window))

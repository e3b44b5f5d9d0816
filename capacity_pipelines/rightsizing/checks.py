"""Checks on a recommendation frame, callable from tests and from the Dagster asset check."""

from __future__ import annotations

import polars as pl

# A cut of more than half a request is what an SRE wants to look at twice...
RISKY_CUT_SHARE = 0.5
# ...when the recommender itself is not sure (short or volatile history).
LOW_CONFIDENCE = 0.5


def risky_cuts(
    recommendations: pl.DataFrame,
    max_cut_share: float = RISKY_CUT_SHARE,
    low_confidence: float = LOW_CONFIDENCE,
) -> pl.DataFrame:
    """Rows that cut the CPU or memory request by more than `max_cut_share` of the current
    request at a confidence below `low_confidence`, with the cut shares.

    The asset check warns (it does not block) when this frame is non-empty: such a cut may be
    right, but it deserves a second look before anyone applies the patch.
    """
    cut = recommendations.filter(pl.col("status") == "ok").with_columns(
        (1 - pl.col("cpu_request") / pl.col("current_cpu_request")).alias("cpu_cut_share"),
        (1 - pl.col("memory_request") / pl.col("current_memory_request")).alias("memory_cut_share"),
    )
    return cut.filter(
        (pl.col("confidence") < low_confidence)
        & (
            (pl.col("cpu_cut_share").fill_null(0.0) > max_cut_share)
            | (pl.col("memory_cut_share").fill_null(0.0) > max_cut_share)
        )
    ).select(
        "container_id",
        "confidence",
        "current_cpu_request",
        "cpu_request",
        "cpu_cut_share",
        "current_memory_request",
        "memory_request",
        "memory_cut_share",
    )

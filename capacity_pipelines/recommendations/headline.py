"""The savings headline: measured and estimated apart, with the expected value beside them.

One function so the weekly report, the review CLI and the asset's metadata state the same
numbers. Measured savings are priced from what the fleet did (requests sized from observed
usage, LLM calls re-costed from labelled traffic); estimated ones rest on an assumed share or
ratio ("30 % of calls routable"). Summing the two into one "savings available" figure made
assumptions look like facts, so the headline leads with the measured number.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from capacity_pipelines.common.formatting import usd_per_month


@dataclass(frozen=True)
class SavingsHeadline:
    """Monthly savings of the open, not rejected recommendations that save money."""

    measured_usd_month: float
    estimated_usd_month: float
    expected_usd_month: float  # sum of saving x confidence, measured and estimated together
    measured_items: int
    estimated_items: int

    def text(self) -> str:
        """`measured $172/mo (4 items); estimated $12.3k/mo on stated assumptions (9 items);
        expected value $5.1k/mo`."""
        def items(n: int) -> str:
            return f"{n} item" if n == 1 else f"{n} items"

        return (
            f"measured {usd_per_month(self.measured_usd_month)} ({items(self.measured_items)}); "
            f"estimated {usd_per_month(self.estimated_usd_month)} on stated assumptions "
            f"({items(self.estimated_items)}); expected value (saving x confidence) "
            f"{usd_per_month(self.expected_usd_month)}"
        )


def saving_rows(rows: pl.DataFrame) -> pl.DataFrame:
    """The rows a headline counts: open, not rejected, saving money."""
    review = pl.col("review_status") if "review_status" in rows.columns else pl.lit("pending")
    return rows.filter(
        (pl.col("status") == "open")
        & (review.fill_null("pending") != "rejected")
        & (pl.col("impact_usd_month").fill_null(0.0) > 0)
    )


def savings_headline(rows: pl.DataFrame) -> SavingsHeadline:
    """The headline of one day's recommendation rows (a row without a basis, written by an
    older release, counts as estimated: it was never shown to be measured)."""
    if "saving_basis" not in rows.columns:
        rows = rows.with_columns(pl.lit(None, dtype=pl.Utf8).alias("saving_basis"))
    saving = saving_rows(rows)
    measured = saving.filter(pl.col("saving_basis").fill_null("") == "measured")
    estimated = saving.filter(pl.col("saving_basis").fill_null("") != "measured")
    confidence = pl.col("confidence").fill_null(0.5).clip(0.0, 1.0)
    return SavingsHeadline(
        measured_usd_month=float(measured["impact_usd_month"].sum()),
        estimated_usd_month=float(estimated["impact_usd_month"].sum()),
        expected_usd_month=float(
            saving.select((pl.col("impact_usd_month") * confidence).sum()).item() or 0.0
        ),
        measured_items=measured.height,
        estimated_items=estimated.height,
    )

"""Checks on a day's recommendations, run with the asset (and callable from a notebook)."""

from __future__ import annotations

import polars as pl


def without_evidence(table: pl.DataFrame) -> list[str]:
    """Ids of recommendations whose evidence is empty: a reviewer could not judge them."""
    empty = table.filter(pl.col("evidence").fill_null("").str.strip_chars() == "")
    return empty["recommendation_id"].to_list()


def duplicate_ids(table: pl.DataFrame) -> list[str]:
    """Ids that appear more than once in one day: a decision would apply to two actions."""
    return sorted(
        table.filter(pl.col("recommendation_id").is_duplicated())["recommendation_id"].unique()
    )

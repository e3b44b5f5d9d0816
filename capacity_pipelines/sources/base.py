"""The source interface shared by Prometheus, exported files and the demo fleet."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import polars as pl

from capacity_pipelines.catalog import ColumnQuery, TableSpec


class SourceError(RuntimeError):
    """A source could not deliver a complete answer; the message names the query or file."""


class MetricSource(ABC):
    """Answers catalog columns over an evaluation grid.

    `fetch_columns` returns, per column, a long frame with the table's source labels (strings,
    "" when absent), `ts` (epoch seconds of the evaluation step) and `value`; absent points are
    simply missing rows, never zeros.
    """

    description: str = "source"

    @abstractmethod
    def fetch_columns(
        self,
        table: TableSpec,
        queries: list[ColumnQuery],
        grid: np.ndarray,
        step_s: float,
        window_s: float,
    ) -> dict[str, pl.DataFrame]:
        """Fetch every query over the grid; raise SourceError rather than return partial data."""


def long_frame(
    labels: tuple[str, ...], rows: dict[tuple[str, ...], np.ndarray], grid: np.ndarray
) -> pl.DataFrame:
    """Build the long frame of one column from per-label-set arrays over the grid."""
    schema = {**{name: pl.Utf8 for name in labels}, "ts": pl.Float64, "value": pl.Float64}
    if not rows:
        return pl.DataFrame(schema=schema)
    parts = []
    for key, values in rows.items():
        keep = ~np.isnan(values)
        if not keep.any():
            continue
        part = {name: [value] * int(keep.sum()) for name, value in zip(labels, key, strict=True)}
        part["ts"] = grid[keep]
        part["value"] = values[keep]
        parts.append(pl.DataFrame(part, schema=schema))
    return pl.concat(parts) if parts else pl.DataFrame(schema=schema)

"""The source interface shared by Prometheus, exported files and the demo fleet."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from capacity_pipelines.ingest.catalog import ColumnQuery, TableSpec


class SourceError(RuntimeError):
    """A source could not deliver a complete answer; the message names the query or file."""


@dataclass(frozen=True)
class SeriesPoints:
    """One column's answer: the labels of each series once, and the points of all of them.

    Labels are per series, values per point: keeping them apart means label handling (default
    cluster, workload rollup, joining columns on the entity) costs per series, not per point,
    which is what makes extraction as fast as decoding the HTTP answers.
    """

    labels: pl.DataFrame  # one row per series: the table's source labels ("" when absent)
    points: pl.DataFrame  # series (UInt32 row of `labels`), ts (Float64 epoch s), value (Float64)

    @staticmethod
    def empty(label_names: Sequence[str]) -> SeriesPoints:
        return SeriesPoints(
            labels=pl.DataFrame(schema={name: pl.Utf8 for name in label_names}),
            points=pl.DataFrame(
                schema={"series": pl.UInt32, "ts": pl.Float64, "value": pl.Float64}
            ),
        )

    @staticmethod
    def concat(parts: Sequence[SeriesPoints], label_names: Sequence[str]) -> SeriesPoints:
        """Stack answers (e.g. time chunks); series indices are offset, labels may repeat."""
        parts = [p for p in parts if p.labels.height]
        if not parts:
            return SeriesPoints.empty(label_names)
        offsets = np.cumsum([0] + [p.labels.height for p in parts[:-1]])
        return SeriesPoints(
            labels=pl.concat([p.labels for p in parts]),
            points=pl.concat(
                [
                    p.points.with_columns(pl.col("series") + pl.lit(int(o), dtype=pl.UInt32))
                    for p, o in zip(parts, offsets, strict=True)
                ]
            ),
        )


class MetricSource(ABC):
    """Answers catalog columns over an evaluation grid.

    `fetch_columns` returns, per column, the series' labels (the table's source labels) and
    their points on the grid; absent points are simply missing, never zeros.
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
    ) -> dict[str, SeriesPoints]:
        """Fetch every query over the grid; raise SourceError rather than return partial data."""


def series_points(
    labels: tuple[str, ...], rows: dict[tuple[str, ...], np.ndarray], grid: np.ndarray
) -> SeriesPoints:
    """Build one column's answer from per-label-set arrays over the grid (NaN = absent)."""
    kept = [(key, values) for key, values in rows.items() if not np.isnan(values).all()]
    if not kept:
        return SeriesPoints.empty(labels)
    label_rows = pl.DataFrame(
        [dict(zip(labels, key, strict=True)) for key, _ in kept],
        schema={name: pl.Utf8 for name in labels},
        orient="row",
    )
    series, ts, value = [], [], []
    for index, (_, values) in enumerate(kept):
        present = ~np.isnan(values)
        series.append(np.full(int(present.sum()), index, dtype=np.uint32))
        ts.append(grid[present])
        value.append(values[present])
    points = pl.DataFrame(
        {"series": np.concatenate(series), "ts": np.concatenate(ts), "value": np.concatenate(value)}
    )
    return SeriesPoints(labels=label_rows, points=points)

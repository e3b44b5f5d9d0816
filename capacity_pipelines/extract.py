"""Extraction: catalog tables over a time window, from any source, in warehouse shape.

A row at `ts` summarises the step that ends at `ts` (PromQL evaluation semantics). Windows are
half-open `[start, end)`, so consecutive daily partitions tile time without overlap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl

from capacity_pipelines.catalog import Catalog, TableSpec
from capacity_pipelines.sources.base import MetricSource

# Kubernetes pod names: Deployment `<name>-<pod-template-hash>-<5>`, StatefulSet `<name>-<n>`,
# DaemonSet / Job / bare ReplicaSet `<name>-<5>`. Hash alphabet from k8s.io/apimachinery
# rand.SafeEncodeString ("bcdfghjklmnpqrstvwxz2456789").
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD = re.compile(rf"^(?P<w>.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$")
_STATEFULSET_POD = re.compile(r"^(?P<w>.+)-\d+$")
_SHORT_SUFFIX_POD = re.compile(rf"^(?P<w>.+)-{_SAFE}{{5}}$")


def pod_to_workload(pod: str) -> str:
    """The workload a pod belongs to, from its generated name (KRR groups pods the same way)."""
    for pattern in (_DEPLOYMENT_POD, _STATEFULSET_POD, _SHORT_SUFFIX_POD):
        match = pattern.match(pod)
        if match:
            return match.group("w")
    return pod


def to_epoch(value: datetime) -> float:
    """Epoch seconds of a datetime; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def evaluation_grid(start: datetime, end: datetime, step_s: float) -> np.ndarray:
    """Step-aligned evaluation times in `[start, end)` as epoch seconds."""
    first = np.ceil(to_epoch(start) / step_s) * step_s
    last = to_epoch(end)
    return np.arange(first, last, step_s, dtype=np.float64)


@dataclass(frozen=True)
class ExtractedTable:
    """One table's rows for a window, with what a person wants to know about them."""

    table: TableSpec
    start: datetime
    end: datetime
    frame: pl.DataFrame
    expected_points: int
    source: str

    @property
    def series_count(self) -> int:
        return self.frame.select(self.table.key).n_unique() if self.frame.height else 0


def _normalise(table: TableSpec, frame: pl.DataFrame, default_cluster: str) -> pl.DataFrame:
    """Fill the default cluster, rename labels and roll pods up to their workload."""
    if "cluster" in frame.columns:
        frame = frame.with_columns(
            pl.when(pl.col("cluster") == "")
            .then(pl.lit(default_cluster))
            .otherwise(pl.col("cluster"))
            .alias("cluster")
        )
    if table.rename:
        frame = frame.rename(table.rename)
    if table.rollup == "pod_to_workload":
        pods = frame["pod"].unique().to_list()  # a few hundred names for millions of rows
        workloads = {pod: pod_to_workload(pod) for pod in pods}
        frame = frame.with_columns(
            pl.col("pod").replace_strict(workloads, return_dtype=pl.Utf8).alias("workload")
        )
    return frame


def _outer(wide: pl.DataFrame, frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Full join of one more column onto the table (the first non-empty column seeds it)."""
    if wide.height == 0:
        missing = [c for c in wide.columns if c not in key]
        return frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in missing)
    return wide.join(frame, on=key, how="full", coalesce=True)


def extract_table(
    source: MetricSource, catalog: Catalog, table_name: str, start: datetime, end: datetime
) -> ExtractedTable:
    """All columns of one catalog table over `[start, end)`, joined on entity and time.

    Rows where every value is missing are dropped (a gap stays a gap, never a zero).
    """
    table = catalog.table(table_name)
    grid = evaluation_grid(start, end, catalog.step_seconds)
    columns = source.fetch_columns(
        table, list(table.columns), grid, catalog.step_seconds, catalog.rate_window_seconds
    )
    key = [*table.key, "ts"]
    wide = pl.DataFrame(schema={**{k: pl.Utf8 for k in table.key}, "ts": pl.Float64})
    for column, frame in columns.items():
        if frame.height == 0:
            wide = wide.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
            continue
        frame = _normalise(table, frame, catalog.default_cluster).select(
            *key, pl.col("value").alias(column)
        )
        # Each column has at most one value per entity and step, so a full join is exact.
        wide = _outer(wide, frame, key)
    wide = wide.with_columns(
        pl.from_epoch((pl.col("ts") * 1000).round().cast(pl.Int64), time_unit="ms")
        .cast(pl.Datetime("us"))
        .alias("ts"),
        *[pl.col(c).cast(pl.Float64) for c in table.value_columns],
    )
    wide = wide.filter(pl.any_horizontal(pl.col(c).is_not_null() for c in table.value_columns))
    wide = wide.select(table.all_columns).sort(key)
    return ExtractedTable(
        table=table,
        start=start,
        end=end,
        frame=wide,
        expected_points=len(grid),
        source=source.description,
    )

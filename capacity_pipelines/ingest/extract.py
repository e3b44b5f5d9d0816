"""Extraction: catalog tables over a time window, from any source, in warehouse shape.

A row at `ts` summarises the step that ends at `ts` (PromQL evaluation semantics). Windows are
half-open `[start, end)`, so consecutive daily partitions tile time without overlap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from capacity_pipelines.ingest.catalog import Catalog, TableSpec
from capacity_pipelines.ingest.owners import fetch_owners
from capacity_pipelines.ingest.sources.base import MetricSource, SeriesPoints

# Kubernetes pod names: Deployment `<name>-<pod-template-hash>-<5>`, StatefulSet `<name>-<n>`,
# DaemonSet / Job / bare ReplicaSet `<name>-<5>`. Hash alphabet from k8s.io/apimachinery
# rand.SafeEncodeString ("bcdfghjklmnpqrstvwxz2456789").
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD = re.compile(rf"^(?P<w>.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$")
_STATEFULSET_POD = re.compile(r"^(?P<w>.+)-\d+$")
_SHORT_SUFFIX_POD = re.compile(rf"^(?P<w>.+)-{_SAFE}{{5}}$")
# Resolution of the owner series (kube_pod_owner, ...): ownership only changes when pods come and
# go, so a day (plus the rate window before it) is 25 points instead of 291.
OWNER_STEP_S = 3600.0


def pod_to_workload(pod: str) -> str:
    """The workload a pod belongs to, from its generated name (KRR groups pods the same way).

    The fallback for pods without kube-state-metrics owner series (`ingest/owners.py`): a name
    tells the workload well enough to group pods, never its kind.
    """
    for pattern in (_DEPLOYMENT_POD, _STATEFULSET_POD, _SHORT_SUFFIX_POD):
        match = pattern.match(pod)
        if match:
            return match.group("w")
    return pod


# RE2 metacharacters: escaped one by one (Python's re.escape also escapes characters such as a
# space, which RE2 refuses to see escaped).
_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def pod_name_regex(workload: str) -> str:
    """An RE2 pattern (Prometheus `=~`, anchored) for the pod names `pod_to_workload` maps to
    `workload`: the workload's own name (a bare pod) or it with one of the generated suffixes.
    The name is matched literally, whatever characters its label holds."""
    literal = "".join("\\" + c if c in _RE2_SPECIAL else c for c in workload)
    return f"{literal}(-{_SAFE}{{6,10}}-{_SAFE}{{5}}|-[0-9]+|-{_SAFE}{{5}})?"


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
        return series_count(self.frame, self.table.key)


def series_count(frame: pl.DataFrame, key: Sequence[str]) -> int:
    """Distinct entities of a frame. Categorical keys are counted on their codes (one code per
    value within a column), several times faster than on the strings."""
    if frame.height == 0:
        return 0
    return frame.select(pl.col(k).to_physical() for k in key).n_unique()


def _normalise(
    table: TableSpec, labels: pl.DataFrame, default_cluster: str, owners: pl.DataFrame | None
) -> pl.DataFrame:
    """Per series: fill the default cluster, rename labels, roll pods up to their workload.

    With `owners` (resolved owner series, see `ingest/owners.py`) a pod found there takes its
    workload and kind from them; the others keep the pod-name workload and a NULL kind.
    """
    if "cluster" in labels.columns:
        labels = labels.with_columns(
            pl.when(pl.col("cluster") == "")
            .then(pl.lit(default_cluster))
            .otherwise(pl.col("cluster"))
            .alias("cluster")
        )
    if table.rename:
        labels = labels.rename(table.rename)
    if table.rollup == "pod_to_workload":
        labels = labels.with_columns(
            pl.col("pod").map_elements(pod_to_workload, return_dtype=pl.Utf8).alias("workload")
        )
    if owners is not None:
        on = ["cluster", "namespace", "pod"]
        labels = (
            labels.join(owners, on=on, how="left", maintain_order="left")
            .with_columns(pl.coalesce("owner_workload", "workload").alias("workload"))
            .drop("owner_workload")
        )
    return labels


def _assemble(
    table: TableSpec,
    answers: dict[str, SeriesPoints],
    grid: np.ndarray,
    step_s: float,
    default_cluster: str,
    owners: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Put every column's points side by side, one row per entity and step.

    Entities (the table's key after normalisation) get integer ids in key order; each point
    gets the cell `entity * steps + step index`; the union of cells, sorted, is the table,
    already ordered by entity and time. No join or sort over points: label work is per series.
    Two series that normalise to the same entity add up (as PromQL `sum by` would).
    """
    key = list(table.key)
    # Entity attributes (the workload kind) are functions of the key: carried per entity.
    attributes = table.label_columns
    labels = {c: _normalise(table, a.labels, default_cluster, owners) for c, a in answers.items()}
    known = [frame.select(*key, *attributes) for frame in labels.values() if frame.height]
    if not known:
        return pl.DataFrame(
            schema={
                **{k: pl.Utf8 for k in [*key, *attributes]},
                "ts": pl.Datetime("us"),
                **{c: pl.Float64 for c in table.value_columns},
            }
        )
    entities = pl.concat(known).unique().sort(key).with_row_index("entity")
    steps = len(grid)
    cells: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for column, answer in answers.items():
        if answer.points.height == 0:
            continue
        entity_of_series = (
            (labels[column].select(key).join(entities, on=key, how="left", maintain_order="left"))[
                "entity"
            ]
            .to_numpy()
            .astype(np.int64)
        )
        points = answer.points
        slot = np.rint((points["ts"].to_numpy() - grid[0]) / step_s).astype(np.int64)
        inside = (slot >= 0) & (slot < steps)
        cell = entity_of_series[points["series"].to_numpy()[inside]] * steps + slot[inside]
        cells[column] = (cell, points["value"].to_numpy()[inside])
    # Cells are bounded integers: a mask finds their sorted union in linear time (np.unique
    # would sort all points).
    occupied = np.zeros(entities.height * steps, dtype=bool)
    for cell, _ in cells.values():
        occupied[cell] = True
    union = np.flatnonzero(occupied)
    # A cell's row is the number of occupied cells before it: one gather per point instead of
    # a binary search of every point in the union.
    index_type = np.int32 if occupied.size < 2**31 else np.int64  # half the memory when it fits
    row_of_cell = np.cumsum(occupied, dtype=index_type) - 1
    del occupied
    columns: dict[str, np.ndarray] = {}
    for column in table.value_columns:
        if column not in cells:
            columns[column] = np.full(len(union), np.nan)
            continue
        cell, value = cells[column]
        position = row_of_cell[cell]
        sums = np.bincount(position, weights=value, minlength=len(union))
        counts = np.bincount(position, minlength=len(union))
        columns[column] = np.where(counts > 0, sums, np.nan)
    # Keys as categoricals: gathering a code per row is cheap, and DuckDB ingests the
    # dictionary-encoded columns faster than repeated strings.
    row_entity = pl.Series(union // steps)
    rows = pl.DataFrame(
        {k: entities[k].cast(pl.Categorical).gather(row_entity) for k in [*key, *attributes]}
    )
    ts_ms = np.rint(grid[union % steps] * 1000).astype(np.int64)
    return rows.with_columns(
        pl.from_epoch(pl.Series("ts", ts_ms), time_unit="ms").cast(pl.Datetime("us")),
        *[pl.Series(c, v, dtype=pl.Float64).fill_nan(None) for c, v in columns.items()],
    )


def extract_table(
    source: MetricSource, catalog: Catalog, table_name: str, start: datetime, end: datetime
) -> ExtractedTable:
    """All columns of one catalog table over `[start, end)`, joined on entity and time.

    Rows where every value is missing are dropped (a gap stays a gap, never a zero). A table
    with `owners` also asks the source for the ownership series, to name workloads and kinds.
    """
    table = catalog.table(table_name)
    step = catalog.step_seconds
    grid = evaluation_grid(start, end, step)
    window = catalog.rate_window_seconds
    answers = source.fetch_columns(table, list(table.columns), grid, step, window)
    owners = None
    if table.owners is not None:
        # Each point is the max over the owner step before it: together they see every owner
        # sample in [start - rate window, end] (a pod's last rate() points follow its last
        # sample, so its owner is looked for that much earlier).
        owner_step = max(OWNER_STEP_S, window, step)
        owner_grid = evaluation_grid(
            start - timedelta(seconds=window), end + timedelta(seconds=owner_step), owner_step
        )
        owners = fetch_owners(
            source, table.owners, owner_grid, owner_step, window, catalog.default_cluster
        )
    wide = _assemble(table, answers, grid, step, catalog.default_cluster, owners)
    return ExtractedTable(
        table=table,
        start=start,
        end=end,
        frame=wide,
        expected_points=len(grid),
        source=source.description,
    )

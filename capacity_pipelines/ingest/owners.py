"""Which workload each pod belongs to, and of which kind, from kube-state-metrics' owner series.

A pod's name only suggests its workload (`pod_to_workload`); kube-state-metrics knows it:
`kube_pod_owner` names the pod's owner (ReplicaSet, StatefulSet, DaemonSet, Job, ...) and
`kube_replicaset_owner` the ReplicaSet's owner (usually a Deployment). The kind decides what a
rightsizing patch must target, so it is taken from these series or left unknown (NULL), never
inferred from a name. Resolved once per extraction, so every column of a window agrees.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from capacity_pipelines.ingest.catalog import WORKLOAD_KIND, OwnerQueries
from capacity_pipelines.ingest.sources.base import MetricSource, SeriesPoints

# kube-state-metrics writes owner_kind="<none>" / owner_name="<none>" for an object without
# owner references (internal/store/pod.go, replicaset.go).
NO_OWNER = "<none>"
# A pod that is its own workload: no owner, or a static pod whose mirror is owned by its Node
# (the Node's name is not a workload, and no controller can be patched).
BARE_POD_KIND = "Pod"
RESOLVED_SCHEMA = {
    "cluster": pl.Utf8,
    "namespace": pl.Utf8,
    "pod": pl.Utf8,
    "owner_workload": pl.Utf8,
    WORKLOAD_KIND: pl.Utf8,
}


def _last_seen(answer: SeriesPoints, default_cluster: str) -> pl.DataFrame:
    """One row per owner series: its labels and the time of its last point in the window."""
    last = answer.points.group_by("series").agg(pl.col("ts").max().alias("last_seen"))
    labels = answer.labels.with_row_index("series").join(last, on="series", how="inner")
    return labels.drop("series").with_columns(
        pl.when(pl.col("cluster") == "")
        .then(pl.lit(default_cluster))
        .otherwise(pl.col("cluster"))
        .alias("cluster")
    )


def _one_owner(owners: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """One owner per object: its controller first, then the one seen last (a pod name reused by
    another owner within the window takes its latest owner), then by name for determinism."""
    return owners.sort(
        [
            pl.col("owner_is_controller") == "true",
            "last_seen",
            "owner_kind",
            "owner_name",
        ],
        descending=[True, True, False, False],
    ).unique(subset=key, keep="first", maintain_order=True)


def resolve_owners(pod_owners: pl.DataFrame, replicaset_owners: pl.DataFrame) -> pl.DataFrame:
    """Per pod (`cluster, namespace, pod`): `owner_workload` and `workload_kind`.

    Inputs carry kube-state-metrics' labels plus `last_seen`. A pod owned by a ReplicaSet
    belongs to the ReplicaSet's owner (a Deployment, or whatever owns it); a ReplicaSet without
    owner is itself the workload. Pods whose owner cannot be told (a ReplicaSet without
    `kube_replicaset_owner` series, an empty owner_kind) are left out: the caller keeps the
    pod-name rollup for them and records the kind as unknown.
    """
    if pod_owners.height == 0:
        return pl.DataFrame(schema=RESOLVED_SCHEMA)
    pods = _one_owner(pod_owners, ["cluster", "namespace", "pod"])
    replicasets = _one_owner(replicaset_owners, ["cluster", "namespace", "replicaset"]).select(
        "cluster",
        "namespace",
        pl.col("replicaset").alias("owner_name"),
        pl.col("owner_kind").alias("rs_owner_kind"),
        pl.col("owner_name").alias("rs_owner_name"),
    )
    joined = pods.join(replicasets, on=["cluster", "namespace", "owner_name"], how="left")
    kind, name = pl.col("owner_kind"), pl.col("owner_name")
    rs_kind = pl.col("rs_owner_kind")
    bare = kind.is_in([NO_OWNER, "Node"])
    via_replicaset = kind == "ReplicaSet"
    rs_unowned = rs_kind.is_in([NO_OWNER, ""])
    resolved = joined.select(
        "cluster",
        "namespace",
        "pod",
        pl.when(bare)
        .then(pl.col("pod"))
        .when(via_replicaset & rs_unowned)
        .then(name)
        .when(via_replicaset)
        .then(pl.col("rs_owner_name"))
        .when(kind != "")
        .then(name)
        .alias("owner_workload"),
        pl.when(bare)
        .then(pl.lit(BARE_POD_KIND))
        .when(via_replicaset & rs_unowned)
        .then(pl.lit("ReplicaSet"))
        .when(via_replicaset)
        .then(rs_kind)
        .when(kind != "")
        .then(kind)
        .alias(WORKLOAD_KIND),
    )
    return resolved.filter(pl.col(WORKLOAD_KIND).is_not_null())


def fetch_owners(
    source: MetricSource,
    owners: OwnerQueries,
    grid: np.ndarray,
    step_s: float,
    window_s: float,
    default_cluster: str,
) -> pl.DataFrame:
    """Ask the source for the ownership series over `grid` and resolve each pod's workload."""
    found = {}
    for role, table in (("pods", owners.pods), ("replicasets", owners.replicasets)):
        answers = source.fetch_columns(table, list(table.columns), grid, step_s, window_s)
        found[role] = _last_seen(answers[table.columns[0].column], default_cluster)
    return resolve_owners(found["pods"], found["replicasets"])

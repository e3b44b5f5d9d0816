"""From usage frames to the ranked recommendation frame.

Two doors, one path: `recommend_usage` takes the `capacity rightsize` file contract (U and S in
DESIGN.md), `recommend_from_warehouse` takes frames shaped like the warehouse's
`container_usage` and `workload_replicas`. Both normalise to one long frame, build one
`ContainerHistory` per container (all pods), run the strategy, price the change and rank.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from capacity_pipelines.common.contracts import Column, ContractError, check_frame, column_error
from capacity_pipelines.rightsizing.history import ContainerHistory, CurrentSpec
from capacity_pipelines.rightsizing.policy import LimitsPolicy
from capacity_pipelines.rightsizing.prices import ComputePriceBook
from capacity_pipelines.rightsizing.results import WORKLOAD_KIND, Rightsizing, recommend_histories
from capacity_pipelines.rightsizing.strategies import ForecastAwareStrategy, epoch_seconds
from capacity_pipelines.rightsizing.workloads import split_container_id

USAGE_OPTIONAL_NUMERIC = (
    "oom_killed",
    "restarts",
    "cpu_throttled_ratio",
    "replicas",
    "memory_limit_bytes",
)
USAGE_OPTIONAL_STRING = ("workload", "namespace", "container", "pod")
# Kubernetes kinds are CamelCase identifiers; "deployment" or "statefulsets" is a resource
# name, not a kind, and would make a wrong `kubectl patch` target.
KUBERNETES_KIND = r"^[A-Z][A-Za-z0-9]*$"
SPEC_COLUMNS = ("cpu_request", "cpu_limit", "memory_request", "memory_limit")
# DESIGN.md `capacity rightsize`: U is `container_id`, `ts`, `cpu_cores` (mean cores used in the
# interval), `memory_bytes` (working set), plus the optional columns above; S holds the current
# requests and limits, null where a container sets none.
USAGE_CONTRACT = (
    Column("container_id", "string"),
    Column("ts", "timestamp"),
    Column("cpu_cores", "number"),
    Column("memory_bytes", "number"),
    *(Column(c, "number", required=False, nullable=True) for c in USAGE_OPTIONAL_NUMERIC),
    *(Column(c, "string", required=False) for c in USAGE_OPTIONAL_STRING),
    Column(WORKLOAD_KIND, "string", required=False, nullable=True),
)
SPEC_CONTRACT = (
    Column("container_id", "string"),
    *(Column(c, "number", nullable=True) for c in SPEC_COLUMNS),
    Column(WORKLOAD_KIND, "string", required=False, nullable=True),
)


class InputError(ContractError):
    """Input that cannot be rightsized; the message names the source, the column and the problem."""


# -- validation ------------------------------------------------------------------------------


def _check_workload_kind(frame: pl.DataFrame, source: str) -> None:
    """Nullable Kubernetes kinds, one per container (U may repeat it on every row)."""
    if WORKLOAD_KIND not in frame.columns:
        return
    kinds = frame[WORKLOAD_KIND].cast(pl.String).drop_nulls()
    bad = kinds.filter(~kinds.str.contains(KUBERNETES_KIND))
    if bad.len():
        raise InputError(column_error(
            source, WORKLOAD_KIND,
            f"{bad.len()} values are not a Kubernetes kind (e.g. {bad[0]!r}; expected e.g. "
            "Deployment, StatefulSet, DaemonSet, or null when unknown)",
        ))  # fmt: skip
    per_container = (
        frame.select("container_id", pl.col(WORKLOAD_KIND).cast(pl.String))
        .drop_nulls()
        .group_by("container_id")
        .agg(pl.col(WORKLOAD_KIND).unique().sort())
        .filter(pl.col(WORKLOAD_KIND).list.len() > 1)
    )
    if per_container.height:
        row = per_container.sort("container_id").row(0, named=True)
        raise InputError(column_error(
            source, WORKLOAD_KIND,
            f"gives {per_container.height} containers several kinds (e.g. "
            f"'{row['container_id']}': {', '.join(row[WORKLOAD_KIND])})",
        ))  # fmt: skip


def validate_usage(usage: pl.DataFrame, source: str = "usage") -> pl.DataFrame:
    """Check the U contract (DESIGN.md); return it with `ts` in UTC.

    Raises `InputError` with one line, `<source>: column <name>: <problem>`. Samples of several
    pods of one container are told apart by `pod`, so duplicates are checked per pod then.
    """
    key = ("container_id", "pod", "ts") if "pod" in usage.columns else ("container_id", "ts")
    usage = check_frame(usage, source, USAGE_CONTRACT, unique_key=key, error=InputError)
    _check_workload_kind(usage, source)
    return usage


def validate_spec(spec: pl.DataFrame, source: str = "spec") -> pl.DataFrame:
    """Check the S contract: one row per container, nullable non-negative cores / bytes."""
    spec = check_frame(spec, source, SPEC_CONTRACT, unique_key=("container_id",),
                       error=InputError)  # fmt: skip
    _check_workload_kind(spec, source)
    return spec


# -- normalisation ---------------------------------------------------------------------------


def _split_id(container_id: str) -> tuple[str | None, str | None, str]:
    """`namespace/workload/container` -> parts; any other id is one container of its own."""
    parts = split_container_id(container_id)
    return parts if parts is not None else (None, None, container_id)


def _normalised_usage(usage: pl.DataFrame) -> pl.DataFrame:
    """U frame -> the internal long frame (one column set for both doors)."""
    parts = [_split_id(c) for c in usage["container_id"].cast(pl.String).to_list()]
    frame = usage.with_columns(pl.col("container_id").cast(pl.String))
    defaults = {
        "namespace": pl.Series([p[0] for p in parts], dtype=pl.String),
        "workload": pl.Series(
            [p[1] or cid for p, cid in zip(parts, frame["container_id"], strict=True)],
            dtype=pl.String,
        ),
        "container": pl.Series([p[2] for p in parts], dtype=pl.String),
        "pod": pl.Series(["-"] * frame.height, dtype=pl.String),
    }
    frame = frame.with_columns(
        [s.alias(name) for name, s in defaults.items() if name not in frame.columns]
    )
    for column in USAGE_OPTIONAL_NUMERIC:
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    if WORKLOAD_KIND not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(WORKLOAD_KIND))
    return frame.select(
        "container_id",
        "namespace",
        "workload",
        pl.col(WORKLOAD_KIND).cast(pl.String),
        "container",
        "pod",
        "ts",
        pl.col("cpu_cores").cast(pl.Float64),
        pl.col("memory_bytes").cast(pl.Float64),
        *[pl.col(c).cast(pl.Float64) for c in USAGE_OPTIONAL_NUMERIC],
    )


def _with_spec_kinds(
    normalised: pl.DataFrame, spec: pl.DataFrame | None, usage_source: str, spec_source: str
) -> pl.DataFrame:
    """Fill `workload_kind` from S where U has none; a container to which U and S give
    different kinds is refused (which file is right cannot be told)."""
    if spec is None or WORKLOAD_KIND not in spec.columns:
        return normalised
    kinds = spec.select(
        "container_id", pl.col(WORKLOAD_KIND).cast(pl.String).alias("spec_kind")
    ).drop_nulls()
    joined = normalised.join(kinds, on="container_id", how="left")
    clash = joined.filter(
        pl.col(WORKLOAD_KIND).is_not_null()
        & pl.col("spec_kind").is_not_null()
        & (pl.col(WORKLOAD_KIND) != pl.col("spec_kind"))
    )
    if clash.height:
        row = clash.row(0, named=True)
        raise InputError(column_error(
            spec_source, WORKLOAD_KIND,
            f"says {row['spec_kind']} for container '{row['container_id']}', {usage_source} "
            f"says {row[WORKLOAD_KIND]}",
        ))  # fmt: skip
    return joined.with_columns(pl.coalesce(WORKLOAD_KIND, "spec_kind").alias(WORKLOAD_KIND)).drop(
        "spec_kind"
    )


def _latest_kind(group: pl.DataFrame) -> str | None:
    """The workload's kind at its latest sample that has one (None: never known)."""
    kinds = group[WORKLOAD_KIND].drop_nulls()
    return kinds[-1] if kinds.len() else None


def _optional(group: pl.DataFrame, column: str) -> np.ndarray | None:
    if group[column].null_count() == group.height:
        return None
    return group[column].cast(pl.Float64).fill_null(np.nan).to_numpy()


def build_histories(
    normalised: pl.DataFrame, current: dict[str, CurrentSpec]
) -> list[ContainerHistory]:
    """One `ContainerHistory` per container id, pods merged, sorted by time."""
    out = []
    frame = normalised.sort("container_id", "ts")
    for (container_id,), group in frame.group_by("container_id", maintain_order=True):
        ts_s = epoch_seconds(group["ts"])
        replicas_ts = replicas = None
        if group["replicas"].null_count() < group.height:
            per_ts = (
                group.filter(pl.col("replicas").is_not_null())
                .group_by("ts")
                .agg(pl.col("replicas").max())
                .sort("ts")
            )
            replicas_ts, replicas = epoch_seconds(per_ts["ts"]), per_ts["replicas"].to_numpy()
        namespace = group["namespace"][0]
        out.append(
            ContainerHistory(
                container_id=str(container_id),
                namespace=namespace,
                workload=group["workload"][0],
                container=group["container"][0],
                ts_s=ts_s,
                pod=group["pod"].to_numpy(),
                cpu_cores=group["cpu_cores"].to_numpy(),
                memory_bytes=group["memory_bytes"].to_numpy(),
                cpu_throttled_ratio=_optional(group, "cpu_throttled_ratio"),
                oom_killed=_optional(group, "oom_killed"),
                memory_limit_bytes=_optional(group, "memory_limit_bytes"),
                replicas_ts_s=replicas_ts,
                replicas=replicas,
                current=current.get(str(container_id), CurrentSpec()),
                restarts=_optional(group, "restarts"),
                workload_kind=_latest_kind(group),
            )
        )
    return out


def _none_if_nan(value: object) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _spec_map(spec: pl.DataFrame | None) -> dict[str, CurrentSpec]:
    if spec is None:
        return {}
    return {
        row["container_id"]: CurrentSpec(*(_none_if_nan(row[c]) for c in SPEC_COLUMNS))
        for row in spec.iter_rows(named=True)
    }


# -- the two doors ---------------------------------------------------------------------------


def rightsize_usage(
    usage: pl.DataFrame,
    spec: pl.DataFrame | None = None,
    strategy: ForecastAwareStrategy | None = None,
    policy: LimitsPolicy | None = None,
    prices: ComputePriceBook | None = None,
    node_class: str | None = None,
    usage_source: str = "usage",
    spec_source: str = "spec",
    schedule: bool = False,
) -> Rightsizing:
    """U (+ optional S) -> the ranked recommendations and, with `schedule`, the hour-of-day
    schedule (what `capacity rightsize` writes; `recommend_usage` returns one of the two).

    `workload_kind` (optional, nullable, in U or S) is carried to the result; U's rows of one
    container must agree, and S's value fills U's gaps but may not contradict it.
    """
    usage = validate_usage(usage, usage_source)
    if spec is not None:
        spec = validate_spec(spec, spec_source)
    normalised = _with_spec_kinds(_normalised_usage(usage), spec, usage_source, spec_source)
    histories = build_histories(normalised, _spec_map(spec))
    return recommend_histories(histories, strategy, policy, prices, node_class, schedule)


def recommend_usage(
    usage: pl.DataFrame,
    spec: pl.DataFrame | None = None,
    strategy: ForecastAwareStrategy | None = None,
    policy: LimitsPolicy | None = None,
    prices: ComputePriceBook | None = None,
    node_class: str | None = None,
    usage_source: str = "usage",
    spec_source: str = "spec",
    schedule: bool = False,
) -> pl.DataFrame:
    """The `capacity rightsize` contract: U (+ optional S) -> R, the ranked recommendation
    frame; with `schedule`, R plus `hour_utc`, 24 rows per container (see `rightsize_usage`)."""
    result = rightsize_usage(
        usage, spec, strategy, policy, prices, node_class, usage_source, spec_source, schedule
    )
    return result.schedule if schedule else result.recommendations


def recommend_from_warehouse(
    container_usage: pl.DataFrame,
    workload_replicas: pl.DataFrame | None = None,
    strategy: ForecastAwareStrategy | None = None,
    policy: LimitsPolicy | None = None,
    prices: ComputePriceBook | None = None,
    node_class: str | None = None,
) -> pl.DataFrame:
    """Frames shaped like the warehouse's `container_usage` (+ `workload_replicas`) -> the
    ranked recommendation frame; what the `container_rightsizing` asset calls.

    Rows without CPU or memory (gaps in scraping) are dropped, not rejected: the warehouse is
    allowed holes and the confidence accounts for them. The current spec is each container's
    latest non-null request and limit, its `workload_kind` the latest non-null kind (NULL when
    the warehouse never knew it, e.g. rows written before owner series were extracted).
    """
    if container_usage.height == 0:
        return recommend_histories([], strategy, policy, prices, node_class).recommendations
    key = ["cluster", "namespace", "workload", "container"]
    frame = container_usage.with_columns(
        pl.concat_str([pl.col(c).cast(pl.String).fill_null("") for c in key], separator="/").alias(
            "container_id"
        )
    )
    if WORKLOAD_KIND not in frame.columns:  # a frame from before the column existed
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias(WORKLOAD_KIND))
    latest = (
        frame.sort("ts")
        .group_by("container_id")
        .agg(
            *[pl.col(c).cast(pl.String).first() for c in ("namespace", "workload", "container")],
            pl.col("cpu_request_cores").drop_nulls().last().alias("cpu_request"),
            pl.col("cpu_limit_cores").drop_nulls().last().alias("cpu_limit"),
            pl.col("memory_request_bytes").drop_nulls().last().alias("memory_request"),
            pl.col("memory_limit_bytes").drop_nulls().last().alias("memory_limit"),
            pl.col(WORKLOAD_KIND).cast(pl.String).drop_nulls().last(),
        )
    )
    if workload_replicas is not None and workload_replicas.height:
        frame = frame.join(
            workload_replicas.select("cluster", "namespace", "workload", "ts", "replicas"),
            on=["cluster", "namespace", "workload", "ts"],
            how="left",
        )
    else:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("replicas"))
    normalised = frame.filter(
        pl.col("cpu_cores").is_not_null()
        & pl.col("memory_working_set_bytes").is_not_null()
        & pl.col("cpu_cores").is_finite()
        & pl.col("memory_working_set_bytes").is_finite()
    ).select(
        "container_id",
        pl.col("namespace").cast(pl.String),
        pl.col("workload").cast(pl.String),
        pl.col(WORKLOAD_KIND).cast(pl.String),
        pl.col("container").cast(pl.String),
        pl.col("pod").cast(pl.String),
        "ts",
        pl.col("cpu_cores").cast(pl.Float64).clip(lower_bound=0.0),
        pl.col("memory_working_set_bytes")
        .cast(pl.Float64)
        .clip(lower_bound=0.0)
        .alias("memory_bytes"),
        pl.col("oom_killed").cast(pl.Float64),
        pl.col("restarts").cast(pl.Float64),
        pl.col("cpu_throttled_ratio").cast(pl.Float64),
        pl.col("replicas").cast(pl.Float64),
        pl.col("memory_limit_bytes").cast(pl.Float64),
    )
    histories = build_histories(normalised, _spec_map(latest))
    known = {h.container_id for h in histories}
    # containers whose every sample was a gap are still listed, as insufficient data
    for row in latest.filter(~pl.col("container_id").is_in(list(known))).iter_rows(named=True):
        empty = np.empty(0)
        histories.append(
            ContainerHistory(
                row["container_id"],
                row["namespace"],
                row["workload"],
                row["container"],
                empty,
                empty,
                empty,
                empty,
                None,
                None,
                None,
                None,
                None,
                CurrentSpec(*(_none_if_nan(row[c]) for c in SPEC_COLUMNS)),
                workload_kind=row[WORKLOAD_KIND],
            )
        )
    return recommend_histories(histories, strategy, policy, prices, node_class).recommendations

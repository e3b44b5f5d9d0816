"""From usage frames to the ranked recommendation frame.

Two doors, one path: `recommend_usage` takes the `capacity rightsize` file contract (U and S in
DESIGN.md), `recommend_from_warehouse` takes frames shaped like the warehouse's
`container_usage` and `workload_replicas`. Both normalise to one long frame, build one
`ContainerHistory` per container (all pods), run the strategy, price the change and rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

from capacity_pipelines.common.contracts import Column, ContractError, check_frame, column_error
from capacity_pipelines.rightsizing.history import ContainerHistory, CurrentSpec
from capacity_pipelines.rightsizing.policy import LimitsPolicy
from capacity_pipelines.rightsizing.prices import ComputePriceBook, load_compute_prices
from capacity_pipelines.rightsizing.quantities import format_cpu, format_memory
from capacity_pipelines.rightsizing.strategies import (
    THROTTLING_ALERT_RATIO,
    ForecastAwareStrategy,
    epoch_seconds,
)
from capacity_pipelines.rightsizing.workloads import split_container_id

USAGE_OPTIONAL_NUMERIC = (
    "oom_killed",
    "restarts",
    "cpu_throttled_ratio",
    "replicas",
    "memory_limit_bytes",
)
USAGE_OPTIONAL_STRING = ("workload", "namespace", "container", "pod")
# Kind of the workload's controller (Deployment, StatefulSet, DaemonSet, ...), optional in U or
# S and nullable: the patch must name the right object, and NULL says "unknown" honestly.
WORKLOAD_KIND = "workload_kind"
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
# Rank groups: risks first, then savings, then nothing to do, then what could not be judged.
RANK_GROUPS = {"risk": 0, "save": 1, "unpriced": 2, "no_change": 3, "insufficient_data": 4}
# A change smaller than this share of the current request is not worth a rollout.
NO_CHANGE_SHARE = 0.05


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


def recommend_usage(
    usage: pl.DataFrame,
    spec: pl.DataFrame | None = None,
    strategy: ForecastAwareStrategy | None = None,
    policy: LimitsPolicy | None = None,
    prices: ComputePriceBook | None = None,
    node_class: str | None = None,
    usage_source: str = "usage",
    spec_source: str = "spec",
) -> pl.DataFrame:
    """The `capacity rightsize` contract: U (+ optional S) -> ranked recommendation frame.

    `workload_kind` (optional, nullable, in U or S) is carried to the result; U's rows of one
    container must agree, and S's value fills U's gaps but may not contradict it.
    """
    usage = validate_usage(usage, usage_source)
    if spec is not None:
        spec = validate_spec(spec, spec_source)
    normalised = _with_spec_kinds(_normalised_usage(usage), spec, usage_source, spec_source)
    histories = build_histories(normalised, _spec_map(spec))
    return _recommend(histories, strategy, policy, prices, node_class)


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
        return _recommend([], strategy, policy, prices, node_class)
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
    return _recommend(histories, strategy, policy, prices, node_class)


# -- strategy, pricing, ranking --------------------------------------------------------------

RESULT_SCHEMA = {
    "rank": pl.Int64,
    "container_id": pl.String,
    "namespace": pl.String,
    "workload": pl.String,
    WORKLOAD_KIND: pl.String,
    "container": pl.String,
    "status": pl.String,
    "kind": pl.String,
    "cpu_request": pl.Float64,
    "cpu_limit": pl.Float64,
    "memory_request": pl.Float64,
    "memory_limit": pl.Float64,
    "confidence": pl.Float64,
    "rationale": pl.String,
    "current_cpu_request": pl.Float64,
    "current_cpu_limit": pl.Float64,
    "current_memory_request": pl.Float64,
    "current_memory_limit": pl.Float64,
    "cpu_request_quantity": pl.String,
    "cpu_limit_quantity": pl.String,
    "memory_request_quantity": pl.String,
    "memory_limit_quantity": pl.String,
    "replicas": pl.Float64,
    "monthly_saving_usd": pl.Float64,
    "monthly_current_usd": pl.Float64,
    "monthly_recommended_usd": pl.Float64,
    "price_id": pl.String,
    "history_days": pl.Float64,
    "forecast_used": pl.Boolean,
    "hpa": pl.Boolean,
    "oom_kills": pl.Int64,
    "throttled_p90": pl.Float64,
    "limits_policy": pl.String,
    "profile": pl.String,
    "recommender": pl.String,
}


def _kind(row: dict) -> str:
    """Rank group of a recommendation: risk, save, no_change, unpriced or insufficient_data."""
    if row["status"] != "ok":
        return "insufficient_data"
    if row["oom_kills"] or (row["throttled_p90"] or 0.0) > THROTTLING_ALERT_RATIO:
        return "risk"
    current_cpu, current_memory = row["current_cpu_request"], row["current_memory_request"]
    if current_cpu is None or current_memory is None:
        return "unpriced"
    if row["cpu_request"] > current_cpu * (1 + NO_CHANGE_SHARE) or row[
        "memory_request"
    ] > current_memory * (1 + NO_CHANGE_SHARE):
        return "risk"
    if (row["monthly_saving_usd"] or 0.0) > NO_CHANGE_SHARE * (row["monthly_current_usd"] or 0.0):
        return "save"
    return "no_change"


def _recommend(
    histories: Sequence[ContainerHistory],
    strategy: ForecastAwareStrategy | None,
    policy: LimitsPolicy | None,
    prices: ComputePriceBook | None,
    node_class: str | None,
) -> pl.DataFrame:
    strategy = strategy or ForecastAwareStrategy()
    policy = policy or LimitsPolicy()
    prices = prices or load_compute_prices()
    eligible = [h for h in histories if h.ts_s.size]
    forecasts = strategy.forecasts(eligible)
    choices = strategy.choose(eligible)
    rows = []
    for history in histories:
        rule = policy.rule(history.namespace, history.workload)
        rec = strategy.recommend(
            history,
            forecasts.get(history.container_id),
            rule,
            choices.get(history.container_id),
        )
        # the saving accrues from now on, so today's price applies, whatever the history's age
        price = prices.price(node_class)
        replicas = history.replica_series()[1] if history.ts_s.size else np.ones(1)
        replica_mean = float(np.nanmean(replicas)) if replicas.size else 1.0
        current = history.current
        row = {
            "container_id": history.container_id,
            "namespace": history.namespace,
            "workload": history.workload,
            WORKLOAD_KIND: history.workload_kind,
            "container": history.container,
            "status": rec.status,
            "cpu_request": rec.cpu_request,
            "cpu_limit": rec.cpu_limit,
            "memory_request": rec.memory_request,
            "memory_limit": rec.memory_limit,
            "confidence": rec.confidence,
            "rationale": rec.rationale,
            "current_cpu_request": current.cpu_request,
            "current_cpu_limit": current.cpu_limit,
            "current_memory_request": current.memory_request,
            "current_memory_limit": current.memory_limit,
            "cpu_request_quantity": format_cpu(rec.cpu_request),
            "cpu_limit_quantity": format_cpu(rec.cpu_limit),
            "memory_request_quantity": format_memory(rec.memory_request),
            "memory_limit_quantity": format_memory(rec.memory_limit),
            "replicas": replica_mean,
            "price_id": price.price_id,
            "history_days": history.history_days,
            "forecast_used": rec.forecast_used,
            "hpa": rec.hpa,
            "oom_kills": rec.oom_kills,
            "throttled_p90": rec.throttled_p90,
            "limits_policy": rule.describe(),
            "profile": strategy.profile.name,
            "recommender": rec.recommender,
        }
        recommended_usd = (
            prices.monthly_usd(rec.cpu_request, rec.memory_request, price) * replica_mean
            if rec.cpu_request is not None and rec.memory_request is not None
            else None
        )
        current_usd = (
            prices.monthly_usd(current.cpu_request, current.memory_request, price) * replica_mean
            if current.cpu_request is not None and current.memory_request is not None
            else None
        )
        row["monthly_recommended_usd"] = recommended_usd
        row["monthly_current_usd"] = current_usd
        row["monthly_saving_usd"] = (
            current_usd - recommended_usd
            if current_usd is not None and recommended_usd is not None
            else None
        )
        if row["monthly_saving_usd"] is None and rec.status == "ok":
            row["rationale"] += "; no current requests known: saving not priced"
        row["kind"] = _kind(row)
        rows.append(row)
    frame = pl.DataFrame(rows, schema={k: v for k, v in RESULT_SCHEMA.items() if k != "rank"})
    # within a group, $ at stake times confidence: a big cut the recommender is unsure of
    # waits behind a smaller one it is sure of
    frame = frame.with_columns(
        pl.col("kind").replace_strict(RANK_GROUPS, return_dtype=pl.Int64).alias("_group"),
        (pl.col("monthly_saving_usd").abs().fill_null(0.0) * pl.col("confidence")).alias(
            "_impact"
        ),
    ).sort(["_group", "_impact", "container_id"], descending=[False, True, False])
    frame = frame.with_columns(pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias("rank"))
    return frame.select(list(RESULT_SCHEMA))

"""Pricing, ranking and the frames `capacity rightsize` writes (constant and hourly).

`recommend_histories` runs the strategy over the containers' histories: one forecasting run,
one backtest choice over the fleet, one recommendation per container, each change priced at
today's compute price and ranked (risks first, then savings by $ at stake times confidence).
With `schedule`, it also builds the hour-of-day frame (`schedule.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from capacity_pipelines.rightsizing.history import ContainerHistory
from capacity_pipelines.rightsizing.policy import LimitsPolicy
from capacity_pipelines.rightsizing.prices import ComputePriceBook, load_compute_prices
from capacity_pipelines.rightsizing.quantities import format_cpu, format_memory, round_cpu_up
from capacity_pipelines.rightsizing.schedule import HOURS_PER_DAY, hourly_cpu_requests
from capacity_pipelines.rightsizing.strategies import (
    THROTTLING_ALERT_RATIO,
    ForecastAwareStrategy,
)

# Kind of the workload's controller (Deployment, StatefulSet, DaemonSet, ...), optional in U or
# S and nullable: the patch must name the right object, and NULL says "unknown" honestly.
WORKLOAD_KIND = "workload_kind"
# Rank groups: risks first, then savings, then nothing to do, then what could not be judged.
RANK_GROUPS = {"risk": 0, "save": 1, "unpriced": 2, "no_change": 3, "insufficient_data": 4}
# A change smaller than this share of the current request is not worth a rollout.
NO_CHANGE_SHARE = 0.05
HOUR_COLUMN = "hour_utc"

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


@dataclass(frozen=True)
class Rightsizing:
    """The ranked recommendations and, when asked for, the hour-of-day schedule (R plus
    `hour_utc`, 24 rows per container, in the recommendations' rank order)."""

    recommendations: pl.DataFrame
    schedule: pl.DataFrame | None = None


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


def recommend_histories(
    histories: Sequence[ContainerHistory],
    strategy: ForecastAwareStrategy | None = None,
    policy: LimitsPolicy | None = None,
    prices: ComputePriceBook | None = None,
    node_class: str | None = None,
    schedule: bool = False,
) -> Rightsizing:
    """Recommend, price and rank every container (see the module docstring)."""
    strategy = strategy or ForecastAwareStrategy()
    policy = policy or LimitsPolicy()
    prices = prices or load_compute_prices()
    eligible = [h for h in histories if h.ts_s.size]
    forecasts = strategy.forecasts(eligible)
    choices = strategy.choose(eligible)
    rows, hourly = [], {}
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
        if schedule and rec.status == "ok":
            hours = hourly_cpu_requests(
                strategy,
                history,
                forecasts.get(history.container_id),
                choices.get(history.container_id),
                rec.throttled_p90,
            )
            hourly[history.container_id] = (hours, rule, price, replica_mean)
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
    frame = frame.select(list(RESULT_SCHEMA))
    if not schedule:
        return Rightsizing(frame)
    return Rightsizing(frame, _schedule_frame(frame, hourly, prices))


def _schedule_frame(
    recommendations: pl.DataFrame, hourly: dict[str, tuple], prices: ComputePriceBook
) -> pl.DataFrame:
    """24 rows per container: the hour's CPU request (and the CPU limit the policy derives from
    it); monthly costs at the schedule's mean request; the rest as the constant row. Containers
    without a schedule repeat their constant row, the rationale says why."""
    rows = []
    for row in recommendations.iter_rows(named=True):
        found = hourly.get(row["container_id"])
        requests = found[0].requests if found else None
        base = row["rationale"] + (f"; {found[0].reason}" if found else "")
        monthly = None
        if requests is not None and row["memory_request"] is not None:
            _, _, price, replicas = found
            mean = float(np.mean(requests))
            monthly = prices.monthly_usd(mean, row["memory_request"], price) * replicas
        for hour in range(HOURS_PER_DAY):
            out = dict(row, rationale=base)
            out[HOUR_COLUMN] = hour
            if requests is not None:
                cpu = requests[hour]
                limit, _ = found[1].limits(cpu, row["memory_request"])
                out["cpu_request"], out["cpu_request_quantity"] = cpu, format_cpu(cpu)
                out["cpu_limit"] = round_cpu_up(limit) if limit is not None else None
                out["cpu_limit_quantity"] = format_cpu(out["cpu_limit"])
                out["rationale"] = f"{base}: {format_cpu(cpu)} at {hour:02d} UTC"
                if monthly is not None:
                    out["monthly_recommended_usd"] = monthly
                    if row["monthly_current_usd"] is not None:
                        out["monthly_saving_usd"] = row["monthly_current_usd"] - monthly
            rows.append(out)
    return pl.DataFrame(rows, schema={**RESULT_SCHEMA, HOUR_COLUMN: pl.Int64})

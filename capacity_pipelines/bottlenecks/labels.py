"""Bottleneck labels for past windows: USE-method rules, each label with the evidence behind it.

Brendan Gregg's USE method checks every resource for Utilisation, Saturation and Errors. Here a
service-hour (see `signals.py`) gets the class of the first rule that fires, in the order of
`RULES`: a resource that is demonstrably full (memory at its limit or OOM-killed, CPU throttled)
explains slowness better than its symptoms (latency, queues), so symptoms come last. Every rule
says which signal columns it needs; when a family is missing from the warehouse, its class is
simply unavailable and `available_classes` says why, instead of the labelling failing.

Thresholds carry their source; the ones that are our own choice say so and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from capacity_pipelines.common.formatting import cores, iec_bytes

# kubernetes-mixin's CPUThrottlingHigh alert fires at 25 % of CFS periods throttled.
CPU_THROTTLED_SHARE = 0.25
# Our choice: CPU use within 10 % of the limit is saturation even before the CFS throttles much.
CPU_LIMIT_UTIL = 0.90
# Our choice: within 5 % of the memory limit one burst reaches the OOM killer (the demo's leak
# spends ~6 h there: 77 MiB of a 1.5 GiB limit at ~1 MiB per 5 min).
MEMORY_LIMIT_UTIL = 0.95
# Our choice: latency 3x its usual level for the hour while CPU is not above its usual level:
# the time goes to waiting (disk, database, a lock), not to computing.
IO_LATENCY_RATIO = 3.0
IO_CPU_RATIO_MAX = 1.2
# Our choice (Little's law: in flight = rate x time): twice the usual requests in flight with
# latency half again above its usual level means requests wait for a slot, not just more load.
QUEUE_IN_FLIGHT_RATIO = 2.0
QUEUE_LATENCY_RATIO = 1.5
# Provider limits: any sustained 429s (1 % of calls), or 90 % of the tokens-per-minute quota.
LLM_RATE_LIMITED_SHARE = 0.01
LLM_QUOTA_RATIO = 0.90
# Our choice: when 80 % of request time is spent waiting on the LLM and latency is up by half,
# the provider's latency is what users feel.
LLM_LATENCY_SHARE = 0.80
# Our choice: 80 % of link capacity, the usual point where queueing delay on a link climbs.
NETWORK_UTIL = 0.80


def _num(row: dict, column: str) -> float | None:
    value = row.get(column)
    if value is None or value != value:  # None or NaN
        return None
    return float(value)


def _at_least(row: dict, column: str, threshold: float) -> bool:
    value = _num(row, column)
    return value is not None and value >= threshold


def _memory(row: dict) -> str | None:
    kills = _num(row, "oom_kills") or 0.0
    util = _num(row, "memory_limit_util_max")
    container = row.get("memory_container") or "memory"
    limit = _num(row, "memory_limit_bytes")
    at_limit = f"its {iec_bytes(limit)} memory limit" if limit is not None else "its memory limit"
    if kills >= 1:
        return f"{container} OOM-killed {kills:.0f}x at {at_limit}"
    if util is not None and util >= MEMORY_LIMIT_UTIL:
        return f"{container} working set at {util:.0%} of {at_limit}"
    return None


def _cpu(row: dict) -> str | None:
    throttled = _num(row, "cpu_throttled_ratio_max")
    util = _num(row, "cpu_limit_util_max")
    container = row.get("cpu_container") or "CPU"
    limit = _num(row, "cpu_limit_cores")
    at_limit = f"its {cores(limit)} CPU limit" if limit is not None else "its CPU limit"
    if throttled is not None and throttled >= CPU_THROTTLED_SHARE:
        return f"{container} throttled {throttled:.0%} of CFS periods at {at_limit}"
    if util is not None and util >= CPU_LIMIT_UTIL:
        return f"{container} used {util:.0%} of {at_limit}"
    return None


def _io_database(row: dict) -> str | None:
    latency = _num(row, "latency_ratio")
    cpu = _num(row, "cpu_ratio")
    if latency is None or latency < IO_LATENCY_RATIO or cpu is None or cpu > IO_CPU_RATIO_MAX:
        return None
    if _at_least(row, "cpu_throttled_ratio_max", CPU_THROTTLED_SHARE):
        return None
    return (
        f"latency {latency:.1f}x its usual level while CPU stayed at {cpu:.1f}x usual "
        "(waiting on I/O or the database)"
    )


def _llm_provider(row: dict) -> str | None:
    if _at_least(row, "llm_rate_limited_share", LLM_RATE_LIMITED_SHARE):
        return f"{_num(row, 'llm_rate_limited_share'):.1%} of LLM calls rate-limited (429)"
    if _at_least(row, "llm_quota_ratio", LLM_QUOTA_RATIO):
        return f"LLM token rate at {_num(row, 'llm_quota_ratio'):.0%} of the provider quota"
    if _at_least(row, "llm_latency_share", LLM_LATENCY_SHARE) and _at_least(
        row, "latency_ratio", QUEUE_LATENCY_RATIO
    ):
        return (
            f"{_num(row, 'llm_latency_share'):.0%} of request time waiting on the LLM provider, "
            f"latency {_num(row, 'latency_ratio'):.1f}x usual"
        )
    return None


def _network(row: dict) -> str | None:
    if _at_least(row, "network_util_max", NETWORK_UTIL):
        return f"network at {_num(row, 'network_util_max'):.0%} of link capacity"
    return None


def _queueing(row: dict) -> str | None:
    if _at_least(row, "in_flight_ratio", QUEUE_IN_FLIGHT_RATIO) and _at_least(
        row, "latency_ratio", QUEUE_LATENCY_RATIO
    ):
        low, high = _num(row, "replicas_min"), _num(row, "replicas_max")
        scaled = f"; replicas {low:.0f} -> {high:.0f}" if low and high and high > low else ""
        return (
            f"{_num(row, 'in_flight_requests'):.0f} requests in flight "
            f"({_num(row, 'in_flight_ratio'):.1f}x usual), latency "
            f"{_num(row, 'latency_ratio'):.1f}x usual{scaled}"
        )
    return None


@dataclass(frozen=True)
class Rule:
    """One bottleneck class: the columns it can fire on (any one suffices) and its test."""

    bottleneck_class: str
    columns: tuple[str, ...]
    fires: Callable[[dict], str | None]
    missing_note: str


RULES: tuple[Rule, ...] = (
    Rule(
        "memory",
        ("memory_limit_util_max", "oom_kills"),
        _memory,
        "no memory working set / limit or OOM-kill columns",
    ),
    Rule(
        "cpu",
        ("cpu_throttled_ratio_max", "cpu_limit_util_max"),
        _cpu,
        "no CPU throttling or CPU limit columns",
    ),
    Rule(
        "io_database",
        ("latency_ratio",),
        _io_database,
        "needs latency and CPU used per service (service_traffic and container_usage)",
    ),
    Rule(
        "llm_provider",
        ("llm_rate_limited_share", "llm_quota_ratio", "llm_latency_share"),
        _llm_provider,
        "llm_token_usage has no rate_limited_requests or operation_seconds column (not in the "
        "bundled metric catalog) and no token quota is configured",
    ),
    Rule(
        "network",
        ("network_util_max",),
        _network,
        "the metric catalog has no network throughput family (and no link capacity)",
    ),
    Rule(
        "queueing",
        ("in_flight_ratio",),
        _queueing,
        "needs requests in flight and latency per service (service_traffic)",
    ),
)
# What each rule's evidence is computed from, for the `metrics` column.
RULE_METRICS = {
    "memory": "memory_working_set_bytes,memory_limit_bytes,restarts,oom_killed",
    "cpu": "cpu_throttled_ratio,cpu_cores,cpu_limit_cores",
    "io_database": "latency_p50_seconds,latency_p95_seconds,cpu_cores",
    "llm_provider": "input_tokens,output_tokens,requests,rate_limited_requests,operation_seconds",
    "network": "network_util",
    "queueing": "in_flight_requests,latency_p50_seconds,latency_p95_seconds,replicas",
}


def _has(frame: pl.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].drop_nulls().len() > 0


def available_classes(windows: pl.DataFrame) -> tuple[tuple[str, ...], list[str]]:
    """Classes whose signals exist in `windows`, and one note per class that cannot be labelled."""
    classes, notes = [], []
    for rule in RULES:
        if any(_has(windows, c) for c in rule.columns):
            classes.append(rule.bottleneck_class)
        else:
            notes.append(f"{rule.bottleneck_class}: not labelled ({rule.missing_note})")
    return (*classes, "none"), notes


def label_windows(windows: pl.DataFrame) -> pl.DataFrame:
    """`windows` plus `bottleneck_class`, `evidence` and `metrics` for each row.

    The first rule in `RULES` order that fires wins; `none` carries an empty evidence.
    """
    usable = [r for r in RULES if any(_has(windows, c) for c in r.columns)]
    labels, evidence, metrics = [], [], []
    for row in windows.iter_rows(named=True):
        for rule in usable:
            text = rule.fires(row)
            if text:
                labels.append(rule.bottleneck_class)
                evidence.append(text)
                metrics.append(RULE_METRICS[rule.bottleneck_class])
                break
        else:
            labels.append("none")
            evidence.append("")
            metrics.append("")
    return windows.with_columns(
        pl.Series("bottleneck_class", labels, dtype=pl.Utf8),
        pl.Series("evidence", evidence, dtype=pl.Utf8),
        pl.Series("metrics", metrics, dtype=pl.Utf8),
    )

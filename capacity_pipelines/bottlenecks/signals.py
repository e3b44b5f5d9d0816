"""Hourly saturation and error signals per service, from the warehouse's 5-minute tables.

The USE method (Brendan Gregg) asks, per resource, for utilisation, saturation and errors. A
bottleneck label needs them per service and per window, side by side: this module rolls the
per-container, per-service and per-LLM-call rows up to one row per service and hour, and adds
each signal's seasonal baseline (the same hour on the previous days), because "latency rose" and
"requests pile up" only mean something against what is normal at that hour.

Services are keyed by name: the demo's service names equal its workload names, and LLM usage
carries the service but no namespace.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from capacity_pipelines.common.utilisation import (
    CONTAINER_CPU,
    CONTAINER_MEMORY,
    reading_utilisation,
)

STEP_MINUTES = 5  # warehouse step (metric_catalog.yaml defaults.step): per-step counts -> rates
WINDOW = "1h"  # label windows: long enough to smooth 5-minute noise, short enough for episodes
BASELINE_DAYS = 7  # seasonal baseline: median of the same hour on up to the 7 previous days
KEY = ["namespace", "service"]

# The window-frame contract: columns a caller may provide (the benchmark builds windows from
# other sources); the rules need only the ones their class uses.
SIGNAL_DOCS = {
    "cpu_throttled_ratio_max": "Highest share of throttled CFS periods of any container.",
    "cpu_limit_util_max": "Highest CPU used / CPU limit of any container with a limit (null "
    "where the limit is 0 or the reading above common.utilisation.CPU_UTIL_MAX).",
    "cpu_container": "Container with the highest throttling (or CPU use / limit).",
    "cpu_limit_cores": "That container's CPU limit (cores).",
    "memory_limit_util_max": "Highest working set / memory limit of any container with a "
    "limit (null where the limit is 0 or the reading above MEMORY_UTIL_MAX).",
    "memory_container": "Container closest to its memory limit.",
    "memory_limit_bytes": "That container's memory limit (bytes).",
    "oom_kills": "OOM kills in the window (restarts while the last termination was OOMKilled).",
    "cpu_cores": "CPU cores used by the whole service (mean).",
    "cpu_ratio": "cpu_cores / its seasonal baseline.",
    "latency_p50_seconds": "Median latency (mean over the window).",
    "latency_p95_seconds": "95th percentile latency (mean over the window).",
    "latency_ratio": "Highest of p50 and p95 latency / their seasonal baselines.",
    "in_flight_requests": "Requests in flight (mean over the window).",
    "in_flight_ratio": "in_flight_requests / its seasonal baseline.",
    "request_rate_rps": "Requests per second (mean).",
    "error_share": "5xx responses / requests.",
    "llm_tokens_per_minute": "LLM input + output tokens per minute (mean).",
    "llm_quota_ratio": "Peak provider/model token rate / the configured tokens-per-minute quota.",
    "llm_rate_limited_share": "LLM calls answered 429 / LLM calls (needs rate_limited_requests).",
    "llm_calls_in_flight": "LLM call seconds per second (needs operation_seconds).",
    "llm_latency_share": "llm_calls_in_flight / in_flight_requests: request time on the LLM.",
    "network_util_max": "Network throughput / link capacity (no metric family in the catalog).",
    "replicas_min": "Fewest Deployment replicas in the window.",
    "replicas_max": "Most Deployment replicas in the window.",
}


def _hour(column: str = "ts") -> pl.Expr:
    # A row stamped at the end of its 5-minute step belongs to the hour the step lies in.
    return (pl.col(column) - pl.duration(microseconds=1)).dt.truncate(WINDOW).alias("window_start")


USAGE_COLUMNS = (
    "cpu_cores",
    "memory_working_set_bytes",
    "cpu_throttled_ratio",
    "cpu_limit_cores",
    "memory_limit_bytes",
    "restarts",
    "oom_killed",
)
TRAFFIC_COLUMNS = (
    "latency_p50_seconds",
    "latency_p95_seconds",
    "in_flight_requests",
    "request_rate_rps",
    "error_rate_rps",
)


def _with_columns(frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
    # A catalog override may leave a family out: its column is then all null, and the rules
    # that need it report the class as unavailable instead of failing.
    missing = [c for c in columns if c not in frame.columns]
    return frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in missing)


def container_signals(usage: pl.DataFrame) -> pl.DataFrame:
    """Per service and hour: throttling, CPU and memory against limits, OOM kills, CPU used."""
    if usage.height == 0:
        return pl.DataFrame(schema={"namespace": pl.Utf8, "service": pl.Utf8})
    usage = _with_columns(usage, USAGE_COLUMNS)
    usage = usage.rename({"workload": "service"}).with_columns(_hour())
    # A limit of 0 (cAdvisor's "unset", a stopped VM) or a usage far above the limit is not a
    # reading: its utilisation is null, so no rule labels it (common/utilisation.py; the
    # extraction check and the data-quality report count those rows).
    per_container = usage.group_by([*KEY, "container", "window_start"]).agg(
        pl.col("cpu_throttled_ratio").max().alias("throttled"),
        reading_utilisation(CONTAINER_CPU).max().alias("cpu_util"),
        pl.col("cpu_limit_cores").filter(pl.col("cpu_limit_cores") > 0).max(),
        reading_utilisation(CONTAINER_MEMORY).max().alias("mem_util"),
        pl.col("memory_limit_bytes").filter(pl.col("memory_limit_bytes") > 0).max(),
        (pl.col("restarts").fill_null(0) * pl.col("oom_killed").fill_null(0))
        .sum()
        .alias("oom_kills"),
    )
    group = [*KEY, "window_start"]
    cpu = (
        per_container.sort(["throttled", "cpu_util"], descending=True, nulls_last=True)
        .group_by(group)
        .agg(
            pl.col("throttled").max().alias("cpu_throttled_ratio_max"),
            pl.col("cpu_util").max().alias("cpu_limit_util_max"),
            pl.col("container").first().alias("cpu_container"),
            pl.col("cpu_limit_cores").first(),
        )
    )
    memory = (
        per_container.sort("mem_util", descending=True, nulls_last=True)
        .group_by(group)
        .agg(
            pl.col("mem_util").max().alias("memory_limit_util_max"),
            pl.col("container").first().alias("memory_container"),
            pl.col("memory_limit_bytes").first(),
            # The restart counter's increase is smoothed over the rate window: round the sum.
            pl.col("oom_kills").sum().round(0).alias("oom_kills"),
        )
    )
    used = (
        usage.group_by([*KEY, "ts", "window_start"])
        .agg(pl.col("cpu_cores").sum())
        .group_by(group)
        .agg(pl.col("cpu_cores").mean())
    )
    return cpu.join(memory, on=group).join(used, on=group)


def container_signals_by_piece(pieces: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """`container_signals` of the rows of all `pieces` together, for pieces cut on hour
    boundaries (each hour's rows in one piece): only one piece's 5-minute rows in memory."""
    parts = [f for f in map(container_signals, pieces) if "window_start" in f.columns]
    if not parts:
        return container_signals(pl.DataFrame())
    return pl.concat(parts, how="vertical_relaxed")


def traffic_signals(traffic: pl.DataFrame) -> pl.DataFrame:
    """Per service and hour: latency, requests in flight, request and error rates."""
    if traffic.height == 0:
        return pl.DataFrame(schema={"namespace": pl.Utf8, "service": pl.Utf8})
    return (
        _with_columns(traffic, TRAFFIC_COLUMNS)
        .with_columns(_hour())
        .group_by([*KEY, "window_start"])
        .agg(
            pl.col("latency_p50_seconds").mean(),
            pl.col("latency_p95_seconds").mean(),
            pl.col("in_flight_requests").mean(),
            pl.col("request_rate_rps").mean(),
            (pl.col("error_rate_rps").sum() / pl.col("request_rate_rps").sum()).alias(
                "error_share"
            ),
        )
    )


def llm_signals(
    tokens: pl.DataFrame, quota_tokens_per_minute: dict[str, float] | None = None
) -> pl.DataFrame:
    """Per service and hour: LLM token rate and, where a quota is configured, its share.

    `quota_tokens_per_minute` maps "provider/model" (or "provider") to the provider's
    tokens-per-minute limit for this organisation; quotas are account settings, not metrics.
    """
    if tokens.height == 0:
        return pl.DataFrame(schema={"service": pl.Utf8})
    per_step = tokens.with_columns(
        _hour(),
        (
            (pl.col("input_tokens").fill_null(0) + pl.col("output_tokens").fill_null(0))
            / STEP_MINUTES
        ).alias("tpm"),
        (pl.col("provider") + "/" + pl.col("model")).alias("route"),
    )
    # Optional columns (not in the bundled catalog yet): LLM calls answered 429 and the time
    # spent in LLM calls, per step. Seconds in calls per second = LLM calls in flight.
    optional = [c for c in ("rate_limited_requests", "operation_seconds") if c in tokens.columns]
    sums = [
        pl.col(c).fill_null(0).sum()
        for c in ("tpm", "requests", *optional)
        if c in per_step.columns
    ]
    out = (
        per_step.group_by(["service", "ts", "window_start"])
        .agg(sums)
        .group_by(["service", "window_start"])
        .agg(
            pl.col("tpm").mean().alias("llm_tokens_per_minute"),
            *(
                [
                    (pl.col("rate_limited_requests").sum() / pl.col("requests").sum()).alias(
                        "llm_rate_limited_share"
                    )
                ]
                if "rate_limited_requests" in optional and "requests" in tokens.columns
                else []
            ),
            *(
                [
                    (pl.col("operation_seconds").mean() / (STEP_MINUTES * 60)).alias(
                        "llm_calls_in_flight"
                    )
                ]
                if "operation_seconds" in optional
                else []
            ),
        )
    )
    if quota_tokens_per_minute:
        quotas = pl.DataFrame(
            {
                "route": list(quota_tokens_per_minute),
                "quota": list(quota_tokens_per_minute.values()),
            }
        )
        routed = (
            per_step.group_by(["service", "provider", "route", "ts", "window_start"])
            .agg(pl.col("tpm").sum())
            .join(quotas, on="route", how="left")
            .join(
                quotas.rename({"route": "provider", "quota": "provider_quota"}),
                on="provider",
                how="left",
            )
            .with_columns((pl.col("tpm") / pl.coalesce("quota", "provider_quota")).alias("ratio"))
            .group_by(["service", "window_start"])
            .agg(pl.col("ratio").max().alias("llm_quota_ratio"))
        )
        out = out.join(routed, on=["service", "window_start"], how="left")
    return out


def with_baselines(windows: pl.DataFrame) -> pl.DataFrame:
    """Add ratio columns against the seasonal baseline (same hour, previous days' median).

    The grid is completed per service first so that a shift of 24 rows is exactly one day.
    """
    if windows.height == 0:
        return windows
    bounds = windows.group_by(KEY).agg(
        pl.col("window_start").min().alias("lo"), pl.col("window_start").max().alias("hi")
    )
    grid = (
        bounds.with_columns(pl.datetime_ranges("lo", "hi", interval=WINDOW).alias("window_start"))
        .explode("window_start")
        .drop("lo", "hi")
    )
    full = grid.join(windows, on=[*KEY, "window_start"], how="left").sort([*KEY, "window_start"])

    def baseline(column: str) -> pl.Expr:
        lagged = [pl.col(column).shift(24 * d).over(KEY) for d in range(1, BASELINE_DAYS + 1)]
        return pl.concat_list(lagged).list.drop_nulls().list.median()

    ratios = []
    for column, ratio in [("cpu_cores", "cpu_ratio"), ("in_flight_requests", "in_flight_ratio")]:
        if column in full.columns:
            ratios.append((pl.col(column) / baseline(column)).alias(ratio))
    latency = [
        pl.col(c) / baseline(c)
        for c in ("latency_p50_seconds", "latency_p95_seconds")
        if c in full.columns
    ]
    if latency:
        ratios.append(pl.max_horizontal(latency).alias("latency_ratio"))
    return full.with_columns(ratios) if ratios else full


def replica_signals(replicas: pl.DataFrame) -> pl.DataFrame:
    """Per service and hour: fewest and most replicas (an HPA scaling out shows as a spread)."""
    if replicas.height == 0 or "replicas" not in replicas.columns:
        return pl.DataFrame(schema={"namespace": pl.Utf8, "service": pl.Utf8})
    return (
        replicas.rename({"workload": "service"})
        .with_columns(_hour())
        .group_by([*KEY, "window_start"])
        .agg(
            pl.col("replicas").min().round(0).alias("replicas_min"),
            pl.col("replicas").max().round(0).alias("replicas_max"),
        )
    )


def service_windows(
    usage: pl.DataFrame,
    traffic: pl.DataFrame,
    tokens: pl.DataFrame,
    quota_tokens_per_minute: dict[str, float] | None = None,
    replicas: pl.DataFrame | None = None,
    usage_signals: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per service and hour with every signal the warehouse can give, plus baselines.

    `usage_signals` replaces `container_signals(usage)` when the caller computed it already
    (piece by piece, to keep weeks of 5-minute per-pod rows out of memory).
    """
    containers = usage_signals if usage_signals is not None else container_signals(usage)
    parts = [f for f in (containers, traffic_signals(traffic)) if "window_start" in f.columns]
    if not parts:
        return pl.DataFrame(
            schema={"namespace": pl.Utf8, "service": pl.Utf8, "window_start": pl.Datetime("us")}
        )
    windows = parts[0]
    for part in parts[1:]:
        windows = windows.join(part, on=[*KEY, "window_start"], how="full", coalesce=True)
    scaled = replica_signals(replicas if replicas is not None else pl.DataFrame())
    if "window_start" in scaled.columns:
        windows = windows.join(scaled, on=[*KEY, "window_start"], how="left")
    llm = llm_signals(tokens, quota_tokens_per_minute)
    if "window_start" in llm.columns:
        windows = windows.join(llm, on=["service", "window_start"], how="left")
    if {"llm_calls_in_flight", "in_flight_requests"} <= set(windows.columns):
        # Little's law: requests in flight = request-seconds per second; LLM calls in flight =
        # LLM-seconds per second. Their ratio is the share of request time spent on the LLM.
        windows = windows.with_columns(
            (pl.col("llm_calls_in_flight") / pl.col("in_flight_requests"))
            .clip(0.0, 1.0)
            .alias("llm_latency_share")
        )
    return with_baselines(windows)

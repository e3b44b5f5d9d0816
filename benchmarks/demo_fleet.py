"""Build the bundled demo fleet: four weeks of a multi-agent LLM platform as OpenMetrics.

Why this exists: the platform's default source (no Prometheus configured) is a bundled fleet in
`assets/demo/`. It has to look like a real cluster scraped by Prometheus (cAdvisor,
kube-state-metrics, OTel HTTP and GenAI metrics), carry real workload shapes rather than sine
waves, and contain *known* episodes (OOM kills, CPU throttling, a rollout, an HPA scale-out, a
latency incident) so forecasts, rightsizing and the bottleneck classifier can be checked against
ground truth.

Where the shapes come from (all permissively licensed, see `assets/demo/ATTRIBUTION.md`):

- daily and weekly request cycle: application-server hourly requests (MIT), the four weeks from
  Monday 2016-09-26, aligned weekday by weekday onto 2026-09-28 .. 2026-10-26;
- short-term variability of LLM agents: ServeGen m-small 10-minute request rate (Apache-2.0),
  as its ratio to its own one-hour mean;
- short-term burstiness at the edge (API gateway): NAB ELB request count per 5 min (MIT);
- tokens per LLM call: Azure LLM 2023 code trace (CC-BY-4.0) and Mooncake conversation trace
  (Apache-2.0); Mooncake's prompt-prefix block ids give the prompt-cache read and write shares.

Everything is deterministic (fixed seed, fixed order of random draws). The whole four weeks are
always generated; `days` only truncates what is written, so a short build is an exact prefix of
the shipped fleet, which is what the determinism test relies on.

Run: `python benchmarks/demo_fleet.py --data ../shared/data --out assets/demo`.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

SEED = 20260928
CLUSTER = "demo"
PERIOD_START = datetime(2026, 9, 28, tzinfo=UTC)  # a Monday
PERIOD_DAYS = 28
SCRAPE_INTERVAL_S = 300
STEPS_PER_DAY = 86400 // SCRAPE_INTERVAL_S
N_STEPS = PERIOD_DAYS * STEPS_PER_DAY

# The application-server weeks mapped onto the demo period: same weekday, four full weeks.
APP_SERVER_WINDOW = (datetime(2016, 9, 26), datetime(2016, 10, 24))

# Mean API-gateway request rate (user queries per second). Everything else scales from it.
GATEWAY_MEAN_RPS = 5.0

# Linux CFS: 100 ms periods, so at most 3000 periods per 5-minute scrape interval.
CFS_PERIODS_PER_SCRAPE = SCRAPE_INTERVAL_S * 10

# Mooncake hash_ids are ids of 512-token prompt-prefix blocks (Mooncake FAST'25 trace README).
MOONCAKE_BLOCK_TOKENS = 512

HISTOGRAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Kubernetes pod-name alphabet (k8s.io/apimachinery/pkg/util/rand: no vowels, no 0/1/3).
K8S_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

MIB = 1024 * 1024
GIB = 1024 * MIB
PAGE = 4096


# --------------------------------------------------------------------------------------------
# Fleet specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerSpec:
    """One container's configuration and how its usage responds to load.

    `cpu_seconds_per_request` is per request reaching the pod; agents mostly wait on LLM calls,
    so it is small. Requests and limits are deliberately off for some containers so
    rightsizing has something to find.
    """

    name: str
    cpu_request: float
    cpu_limit: float | None
    memory_request: int
    memory_limit: int
    idle_cores: float
    cpu_seconds_per_request: float
    memory_base: int
    memory_per_rps: int
    restarts_before_period: int = 0


@dataclass(frozen=True)
class WorkloadSpec:
    """A Deployment or StatefulSet, the Service in front of it and its latency profile.

    `requests_per_query` is how many requests this service receives per user query at the
    gateway (the multi-agent fan-out). Latency is log-normal with the given median and sigma.
    """

    namespace: str
    name: str
    kind: str
    replicas: int
    containers: tuple[ContainerSpec, ...]
    requests_per_query: float
    latency_median_s: float
    latency_sigma: float
    error_shares: dict[str, float]
    burst_source: str = "servegen"


@dataclass(frozen=True)
class LlmRoute:
    """Which model an agent calls, for what share of its LLM calls, and how big the calls are.

    `token_source` names the real trace the per-call token sizes are drawn from; the scales
    adapt a code-completion or chat trace to the agent's role (a router sends short prompts,
    a summariser writes short answers).
    """

    agent: str
    provider: str
    model: str
    call_share: float
    token_source: str
    input_scale: float
    output_scale: float
    reasoning_share: float = 0.0
    reports_cache_write: bool = False
    legacy_system_label: bool = False
    output_tokens_per_s: float = 80.0
    time_to_first_token_s: float = 0.6


def _c(name: str, **kw: float | int | None) -> ContainerSpec:
    """Keyword-only shorthand that keeps the workload table below readable."""
    return ContainerSpec(name=name, **kw)  # type: ignore[arg-type]


WORKLOADS: tuple[WorkloadSpec, ...] = (
    WorkloadSpec(
        "agents", "router", "Deployment", 2,
        # Under-provisioned CPU request (0.1) for ~0.3 cores used; no CPU limit.
        (_c("router", cpu_request=0.1, cpu_limit=None, memory_request=256 * MIB,
            memory_limit=512 * MIB, idle_cores=0.02, cpu_seconds_per_request=0.09,
            memory_base=210 * MIB, memory_per_rps=8 * MIB),),
        requests_per_query=1.0, latency_median_s=0.35, latency_sigma=0.5,
        error_shares={"500": 0.002},
    ),
    WorkloadSpec(
        "agents", "planner", "Deployment", 2,
        # Over-provisioned: 1 core requested, ~0.1 used.
        (_c("planner", cpu_request=1.0, cpu_limit=2.0, memory_request=2 * GIB,
            memory_limit=3 * GIB, idle_cores=0.015, cpu_seconds_per_request=0.0432,
            memory_base=380 * MIB, memory_per_rps=16 * MIB),),
        requests_per_query=0.95, latency_median_s=2.4, latency_sigma=0.6,
        error_shares={"500": 0.003},
    ),
    WorkloadSpec(
        "agents", "researcher", "Deployment", 2,
        (_c("researcher", cpu_request=0.5, cpu_limit=1.0, memory_request=1 * GIB,
            memory_limit=1536 * MIB, idle_cores=0.02, cpu_seconds_per_request=0.0648,
            memory_base=520 * MIB, memory_per_rps=32 * MIB),),
        requests_per_query=1.6, latency_median_s=4.5, latency_sigma=0.7,
        error_shares={"500": 0.004},
    ),
    WorkloadSpec(
        "agents", "coder", "Deployment", 2,
        (_c("coder", cpu_request=0.5, cpu_limit=1.0, memory_request=768 * MIB,
            memory_limit=1 * GIB, idle_cores=0.02, cpu_seconds_per_request=0.18,
            memory_base=430 * MIB, memory_per_rps=40 * MIB, restarts_before_period=1),),
        requests_per_query=0.5, latency_median_s=6.0, latency_sigma=0.7,
        error_shares={"500": 0.005},
    ),
    WorkloadSpec(
        "agents", "reviewer", "Deployment", 1,
        # Badly over-provisioned: 2 cores and 4 GiB requested for ~0.1 core and ~500 MiB.
        (_c("reviewer", cpu_request=2.0, cpu_limit=None, memory_request=4 * GIB,
            memory_limit=4 * GIB, idle_cores=0.01, cpu_seconds_per_request=0.036,
            memory_base=470 * MIB, memory_per_rps=12 * MIB),),
        requests_per_query=0.6, latency_median_s=3.0, latency_sigma=0.6,
        error_shares={"500": 0.002},
    ),
    WorkloadSpec(
        "agents", "summarizer", "Deployment", 1,
        # Memory request below normal use; a leak drives it into its limit (OOM kills).
        (_c("summarizer", cpu_request=0.25, cpu_limit=1.0, memory_request=512 * MIB,
            memory_limit=1536 * MIB, idle_cores=0.01, cpu_seconds_per_request=0.0288,
            memory_base=560 * MIB, memory_per_rps=20 * MIB),),
        requests_per_query=0.9, latency_median_s=2.0, latency_sigma=0.5,
        error_shares={"500": 0.002},
    ),
    WorkloadSpec(
        "platform", "api-gateway", "Deployment", 2,
        (
            _c("api-gateway", cpu_request=0.5, cpu_limit=1.0, memory_request=512 * MIB,
               memory_limit=1 * GIB, idle_cores=0.03, cpu_seconds_per_request=0.072,
               memory_base=300 * MIB, memory_per_rps=12 * MIB),
            _c("envoy", cpu_request=0.1, cpu_limit=0.5, memory_request=128 * MIB,
               memory_limit=256 * MIB, idle_cores=0.01, cpu_seconds_per_request=0.0144,
               memory_base=70 * MIB, memory_per_rps=2 * MIB),
        ),
        requests_per_query=1.0, latency_median_s=6.0, latency_sigma=0.6,
        error_shares={"429": 0.004, "500": 0.0015, "503": 0.0005},
        burst_source="nab_elb",
    ),
    WorkloadSpec(
        "platform", "vector-store", "StatefulSet", 2,
        (_c("vector-store", cpu_request=1.0, cpu_limit=2.0, memory_request=3 * GIB,
            memory_limit=4 * GIB, idle_cores=0.05, cpu_seconds_per_request=0.0216,
            memory_base=int(2.4 * GIB), memory_per_rps=24 * MIB),),
        requests_per_query=2.5, latency_median_s=0.03, latency_sigma=0.6,
        error_shares={"500": 0.001},
    ),
    WorkloadSpec(
        "platform", "postgres", "StatefulSet", 1,
        # Over-provisioned CPU (2 cores, no limit) for ~0.3 used.
        (_c("postgres", cpu_request=2.0, cpu_limit=None, memory_request=8 * GIB,
            memory_limit=8 * GIB, idle_cores=0.04, cpu_seconds_per_request=0.009,
            memory_base=int(3.1 * GIB), memory_per_rps=16 * MIB),),
        requests_per_query=4.0, latency_median_s=0.004, latency_sigma=0.9,
        error_shares={"500": 0.0005, "503": 0.0002},
    ),
)

# Provider names follow OTel semconv `gen_ai.provider.name` well-known values (v1.37):
# "openai", "anthropic", "gcp.gemini" (Gemini API). Reviewer still emits the older
# `gen_ai_system` label on purpose, as an exporter that was never upgraded would.
LLM_CALLS_PER_REQUEST = {
    "router": 1.0, "planner": 1.2, "researcher": 2.0, "coder": 1.5, "reviewer": 1.0,
    "summarizer": 1.0,
}
LLM_ROUTES: tuple[LlmRoute, ...] = (
    LlmRoute("router", "openai", "gpt-4o-mini", 1.0, "azure_code", 0.4, 1.0,
             output_tokens_per_s=120.0, time_to_first_token_s=0.35),
    LlmRoute("planner", "anthropic", "claude-sonnet-4", 1.0, "mooncake", 0.5, 1.0,
             reports_cache_write=True, output_tokens_per_s=70.0),
    LlmRoute("researcher", "gcp.gemini", "gemini-2.5-pro", 0.6, "mooncake", 1.0, 1.0,
             reasoning_share=0.55, output_tokens_per_s=90.0, time_to_first_token_s=1.2),
    LlmRoute("researcher", "openai", "gpt-4o-mini", 0.4, "mooncake", 0.6, 0.8,
             output_tokens_per_s=120.0, time_to_first_token_s=0.4),
    LlmRoute("coder", "anthropic", "claude-sonnet-4", 0.8, "azure_code", 1.0, 6.0,
             reports_cache_write=True, output_tokens_per_s=70.0),
    LlmRoute("coder", "openai", "gpt-4o", 0.2, "azure_code", 1.0, 4.0,
             output_tokens_per_s=90.0),
    LlmRoute("reviewer", "openai", "gpt-4o", 1.0, "mooncake", 0.7, 0.5,
             legacy_system_label=True, output_tokens_per_s=90.0),
    LlmRoute("summarizer", "openai", "gpt-4o-mini", 1.0, "mooncake", 1.0, 0.4,
             output_tokens_per_s=120.0, time_to_first_token_s=0.4),
)


def _at(day: int, hour: int, minute: int = 0) -> int:
    """Step index of a wall-clock time `day` days after the period start."""
    return (day * 86400 + hour * 3600 + minute * 60) // SCRAPE_INTERVAL_S


@dataclass(frozen=True)
class EpisodePlan:
    """When the injected episodes happen (step indices), in one place so they are easy to move."""

    gateway_handshake_storm: tuple[int, int] = (_at(8, 14), _at(8, 16, 30))  # Tue 10-06
    hpa_busy: tuple[int, int] = (_at(10, 13), _at(10, 19))  # Thu 10-08
    coder_rollout: int = _at(16, 10)  # Wed 10-14 10:00
    vector_reindex: tuple[int, int] = (_at(17, 1), _at(17, 4))  # Thu 10-15 01:00-04:00
    coder_test_burst: tuple[int, int] = (_at(22, 10), _at(22, 13))  # Tue 10-20
    postgres_slowness: tuple[int, int] = (_at(23, 14, 5), _at(23, 15, 20))  # Wed 10-21
    summarizer_leak_days_to_oom: float = 10.3
    hpa_max_replicas: int = 5


# --------------------------------------------------------------------------------------------
# Real shapes from the permissive traces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenProfile:
    """Per-call token statistics of one trace (after the route's scaling)."""

    input_mean: float
    input_std: float
    output_mean: float
    output_std: float


@dataclass(frozen=True)
class CacheProfile:
    """Prompt-cache shares of input tokens measured by replaying Mooncake's prefix block ids."""

    read_share: float
    read_share_std: float  # per-call standard deviation of the read share
    write_share: float


@dataclass(frozen=True)
class SourceShapes:
    """Everything taken from the real traces, already on the demo's 5-minute grid."""

    weekly_cycle: np.ndarray  # mean 1, N_STEPS
    llm_variability: np.ndarray  # ServeGen ratio to its 1-hour mean, N_STEPS
    edge_variability: np.ndarray  # NAB ELB ratio to its 1-hour mean, N_STEPS
    azure_code: pl.DataFrame
    mooncake: pl.DataFrame
    cache: CacheProfile


def _rolling_ratio(values: np.ndarray, window: int, lo: float, hi: float) -> np.ndarray:
    """Ratio of a series to its centred rolling mean: its own short-term variability.

    Missing points (NaN) become 1 so a gap in the source does not become an outage here.
    """
    filled = np.where(np.isnan(values), np.nanmean(values), values)
    kernel = np.ones(window) / window
    padded = np.pad(filled, (window // 2, window - 1 - window // 2), mode="edge")
    smooth = np.convolve(padded, kernel, mode="valid")
    ratio = np.where(smooth > 0, filled / np.where(smooth > 0, smooth, 1.0), 1.0)
    ratio = np.where(np.isnan(values), 1.0, ratio)
    return np.clip(ratio, lo, hi)


def load_weekly_cycle(data_dir: Path) -> np.ndarray:
    """Four Monday-aligned weeks of the application-server hourly requests, on the 5-min grid.

    Hourly totals describe the rate at the middle of each hour; linear interpolation between
    hour midpoints gives the 5-minute rate without inventing structure. Scaled to mean 1.
    """
    hourly = pl.read_csv(data_dir / "app_server_requests_hourly_2015_2016.csv").with_columns(
        pl.datetime("year", "month", "day", "hour").alias("ts")
    )
    lo, hi = APP_SERVER_WINDOW
    window = hourly.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi)).sort("ts")
    if window.height != PERIOD_DAYS * 24 or window["week_day"][0] != 0:
        raise ValueError("app-server window is not 4 complete weeks starting on a Monday")
    counts = window["requests"].to_numpy().astype(float)
    hour_mid = np.arange(counts.size) + 0.5
    step_hours = (np.arange(N_STEPS) + 0.5) * SCRAPE_INTERVAL_S / 3600
    rate = np.interp(step_hours, hour_mid, counts)
    return rate / rate.mean()


def load_llm_variability(data_dir: Path) -> np.ndarray:
    """ServeGen's 10-minute LLM request rate as a ratio to its 1-hour mean, tiled to 4 weeks.

    ServeGen covers 14 days; two copies cover the demo period. Its zero-rate gaps (collection
    outages, not traffic) are treated as missing.
    """
    servegen = pl.read_csv(data_dir / "servegen_m-small_aggregate_10min.csv").sort("ts")
    rate = servegen["total_rate_rps"].to_numpy().astype(float)
    rate[rate <= 0] = np.nan
    ratio10 = _rolling_ratio(rate, window=6, lo=0.5, hi=2.0)
    ts = servegen["ts"].to_numpy().astype(float)
    two_weeks = 14 * STEPS_PER_DAY
    grid = np.arange(two_weeks) * SCRAPE_INTERVAL_S
    ratio5 = np.interp(grid, ts, ratio10)
    return np.tile(ratio5, N_STEPS // two_weeks + 1)[:N_STEPS]


def load_edge_variability(data_dir: Path) -> np.ndarray:
    """NAB's ELB request count per 5 minutes as a ratio to its 1-hour mean, tiled to 4 weeks.

    ELB counts are small (mean ~60 per 5 min), so the ratio carries real Poisson-like noise
    and the real bursts of the labelled anomaly windows.
    """
    elb = pl.read_csv(data_dir / "nab_aws" / "elb_request_count_8c0756.csv")
    ratio = _rolling_ratio(elb["value"].to_numpy().astype(float), window=12, lo=0.3, hi=4.0)
    return np.tile(ratio, N_STEPS // ratio.size + 1)[:N_STEPS]


def load_cache_profile(mooncake: pl.DataFrame) -> CacheProfile:
    """Replay Mooncake's prompt-prefix block ids through an unbounded prefix cache.

    A call reads from cache the leading blocks already seen (prefix match, as provider prompt
    caches work). It writes the new blocks that some later call reuses: the agent marks its
    reusable prefix (system prompt, tools, conversation so far) as cacheable, not the whole
    prompt. Shares are of total input tokens.
    """
    calls = list(zip(
        mooncake["input_length"].to_list(), mooncake["hash_ids"].to_list(), strict=True
    ))
    seen: set[int] = set()
    reused: set[int] = set()
    for _, hash_ids in calls:
        for block in hash_ids:
            if block in seen:
                reused.add(block)
        seen.update(hash_ids)
    seen.clear()
    read_total = write_total = input_total = 0
    per_call_read: list[float] = []
    for input_len, hash_ids in calls:
        matched = 0
        for block in hash_ids:
            if block not in seen:
                break
            matched += 1
        read = min(matched * MOONCAKE_BLOCK_TOKENS, input_len)
        new_reused = sum(1 for block in hash_ids[matched:] if block in reused)
        write = max(0, min(new_reused * MOONCAKE_BLOCK_TOKENS, input_len - read))
        seen.update(hash_ids)
        read_total += read
        write_total += write
        input_total += input_len
        per_call_read.append(read / input_len)
    return CacheProfile(
        read_share=read_total / input_total,
        read_share_std=float(np.std(per_call_read)),
        write_share=write_total / input_total,
    )


def load_sources(data_dir: Path) -> SourceShapes:
    """Read every permissive trace the demo fleet uses. Never touches research-only files."""
    azure = pl.read_csv(data_dir / "azure_llm_2023_code.csv").select(
        pl.col("ContextTokens").alias("input_tokens"),
        pl.col("GeneratedTokens").alias("output_tokens"),
    )
    mooncake = pl.read_ndjson(data_dir / "mooncake_conversation_first15min.jsonl")
    return SourceShapes(
        weekly_cycle=load_weekly_cycle(data_dir),
        llm_variability=load_llm_variability(data_dir),
        edge_variability=load_edge_variability(data_dir),
        azure_code=azure,
        mooncake=mooncake.select(
            pl.col("input_length").alias("input_tokens"),
            pl.col("output_length").alias("output_tokens"),
        ),
        cache=load_cache_profile(mooncake),
    )


def token_profile(shapes: SourceShapes, route: LlmRoute) -> TokenProfile:
    """Mean and spread of tokens per call for a route, from its source trace."""
    trace = shapes.azure_code if route.token_source == "azure_code" else shapes.mooncake
    inp = trace["input_tokens"].to_numpy().astype(float) * route.input_scale
    out = trace["output_tokens"].to_numpy().astype(float) * route.output_scale
    if route.reasoning_share:
        # A reasoning model's output includes its thinking tokens on top of the answer.
        out = out / (1.0 - route.reasoning_share)
    return TokenProfile(float(inp.mean()), float(inp.std()), float(out.mean()), float(out.std()))


# --------------------------------------------------------------------------------------------
# Series model
# --------------------------------------------------------------------------------------------


@dataclass
class Series:
    """One time series: its family, sample name, labels and values on the step grid.

    `values` has NaN where the series does not exist (pod not running); those samples are not
    written, which is how Prometheus sees a pod that no longer exists.
    """

    family: str
    sample: str
    labels: dict[str, str]
    values: np.ndarray
    decimals: int = 0


@dataclass(frozen=True)
class Episode:
    """A known, injected episode: the ground truth written to `episodes.json`."""

    kind: str
    namespace: str
    workload: str | None
    pod: str | None
    container: str | None
    service: str | None
    start_step: int
    end_step: int
    description: str

    def as_json(self) -> dict[str, str | None]:
        """JSON form with ISO-8601 UTC times."""
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "workload": self.workload,
            "pod": self.pod,
            "container": self.container,
            "service": self.service,
            "start": _iso(self.start_step),
            "end": _iso(self.end_step),
            "description": self.description,
        }


@dataclass
class Pod:
    """A pod's identity and lifetime on the step grid ([start, end), end exclusive)."""

    workload: WorkloadSpec
    name: str
    start: int
    end: int


def _iso(step: int) -> str:
    return (PERIOD_START + timedelta(seconds=step * SCRAPE_INTERVAL_S)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _k8s_suffix(rng: np.random.Generator, length: int) -> str:
    return "".join(K8S_NAME_ALPHABET[i] for i in rng.integers(0, len(K8S_NAME_ALPHABET), length))


@dataclass
class Fleet:
    """The generated fleet: all series plus the ground-truth episodes."""

    series: list[Series]
    episodes: list[Episode]
    pods: list[Pod]


class FleetBuilder:
    """Generates the fleet from the source shapes. One instance, one build, one seed.

    Random draws happen in a fixed order (workloads, then containers, then services, then
    LLM routes), so the output is byte-for-byte reproducible.
    """

    def __init__(self, shapes: SourceShapes, plan: EpisodePlan | None = None) -> None:
        self.shapes = shapes
        self.plan = plan or EpisodePlan()
        self.rng = np.random.default_rng(SEED)
        self.series: list[Series] = []
        self.episodes: list[Episode] = []
        self.pods: list[Pod] = []
        self.steps = np.arange(N_STEPS)

    # ---- traffic -------------------------------------------------------------------------

    def _ramp(self, window: tuple[int, int], peak: float, ramp_steps: int = 12) -> np.ndarray:
        """Multiplier 1 -> peak -> 1 over a window with linear ramps (an injected load change)."""
        start, end = window
        up = np.clip((self.steps - start) / ramp_steps, 0, 1)
        down = np.clip((end - self.steps) / ramp_steps, 0, 1)
        return 1.0 + (peak - 1.0) * np.minimum(up, down)

    def service_rps(self) -> dict[str, np.ndarray]:
        """Requests per second per service: weekly cycle x fan-out x the source's variability.

        Each agent reads the ServeGen variability at its own offset (one day apart) so the
        agents are correlated through the shared weekly cycle but not identical.
        """
        gateway = GATEWAY_MEAN_RPS * self.shapes.weekly_cycle
        rps: dict[str, np.ndarray] = {}
        for i, wl in enumerate(WORKLOADS):
            if wl.burst_source == "nab_elb":
                variability = self.shapes.edge_variability ** 0.6
            else:
                variability = np.roll(self.shapes.llm_variability, i * STEPS_PER_DAY)
            rps[wl.name] = gateway * wl.requests_per_query * variability
        rps["researcher"] = rps["researcher"] * self._ramp(self.plan.hpa_busy, 2.6)
        return rps

    # ---- pods ----------------------------------------------------------------------------

    def schedule_pods(self) -> dict[str, list[Pod]]:
        """Pod names and lifetimes: steady replicas, the coder rollout, the researcher HPA."""
        plan = self.plan
        pods: dict[str, list[Pod]] = {}
        for wl in WORKLOADS:
            if wl.kind == "StatefulSet":
                pods[wl.name] = [
                    Pod(wl, f"{wl.name}-{i}", 0, N_STEPS) for i in range(wl.replicas)
                ]
                continue
            rs_hash = _k8s_suffix(self.rng, 10 if len(wl.name) % 2 else 9)
            base = [
                Pod(wl, f"{wl.name}-{rs_hash}-{_k8s_suffix(self.rng, 5)}", 0, N_STEPS)
                for _ in range(wl.replicas)
            ]
            pods[wl.name] = list(base)
            if wl.name == "coder":
                # Rolling update, maxSurge 1 / maxUnavailable 0: new pod up, one old pod gone.
                new_hash = _k8s_suffix(self.rng, 10)
                t0 = plan.coder_rollout
                for i, old in enumerate(base):
                    old.end = t0 + i + 1
                    pods[wl.name].append(
                        Pod(wl, f"{wl.name}-{new_hash}-{_k8s_suffix(self.rng, 5)}", t0 + i,
                            N_STEPS)
                    )
                self.episodes.append(Episode(
                    "rollout", wl.namespace, wl.name, None, None, None, t0, t0 + len(base),
                    f"ReplicaSet {wl.name}-{rs_hash} replaced by {wl.name}-{new_hash} "
                    "(rolling update, maxSurge 1): old pods stop reporting, new pods start",
                ))
            if wl.name == "researcher":
                # HPA on CPU: one pod per 10 min while the busy period ramps up, scale-down
                # one pod per 15 min after the 5-minute stabilisation window.
                start, end = plan.hpa_busy
                extra = plan.hpa_max_replicas - wl.replicas
                for i in range(extra):
                    up = start + 2 * (i + 1)
                    down = end + 1 + 3 * (extra - 1 - i)
                    pods[wl.name].append(
                        Pod(wl, f"{wl.name}-{rs_hash}-{_k8s_suffix(self.rng, 5)}", up, down)
                    )
                last_down = end + 1 + 3 * (extra - 1)
                self.episodes.append(Episode(
                    "hpa_scale_out", wl.namespace, wl.name, None, None, wl.name, start,
                    last_down,
                    f"HorizontalPodAutoscaler on CPU scales {wl.replicas} -> "
                    f"{plan.hpa_max_replicas} -> {wl.replicas} replicas during a busy "
                    "period (researcher traffic x2.6)",
                ))
        for group in pods.values():
            self.pods.extend(group)
        return pods

    @staticmethod
    def alive(pod: Pod) -> np.ndarray:
        """Mask of the steps at which the pod exists (and so is scraped)."""
        mask = np.zeros(N_STEPS, dtype=bool)
        mask[pod.start:pod.end] = True
        return mask

    # ---- containers ----------------------------------------------------------------------

    def build_containers(self, rps: dict[str, np.ndarray], pods: dict[str, list[Pod]]) -> None:
        """cAdvisor and kube-state-metrics series for every container of every pod."""
        for wl in WORKLOADS:
            group = pods[wl.name]
            replicas = np.sum([self.alive(p) for p in group], axis=0).astype(float)
            if wl.kind == "Deployment":
                self.series.append(Series(
                    "kube_deployment_status_replicas", "kube_deployment_status_replicas",
                    {"cluster": CLUSTER, "namespace": wl.namespace, "deployment": wl.name},
                    replicas.copy(),
                ))
            per_pod_rps = rps[wl.name] / np.maximum(replicas, 1)
            for pod in group:
                alive = self.alive(pod)
                pod_rps = per_pod_rps * self._balancing_share()
                for spec in wl.containers:
                    demand = self._cpu_demand(wl, spec, pod, pod_rps)
                    memory, kills = self._memory(wl, spec, pod, pod_rps)
                    self._emit_container(wl, spec, pod, alive, demand, memory, kills)

    def _balancing_share(self) -> np.ndarray:
        """A pod's share of its workload's traffic relative to an even split.

        Load balancers are never perfectly even: a fixed skew per pod (connection affinity)
        plus slow drift, so replicas of one workload do not report identical usage.
        """
        skew = self.rng.uniform(0.9, 1.1)
        drift = np.convolve(self.rng.normal(0, 1, N_STEPS), np.ones(12) / 12, mode="same")
        return skew * (1.0 + 0.12 * drift)

    def _cpu_demand(
        self, wl: WorkloadSpec, spec: ContainerSpec, pod: Pod, per_pod_rps: np.ndarray
    ) -> np.ndarray:
        """Cores the container would use unthrottled: idle + per-request cost + episodes."""
        plan = self.plan
        demand = spec.idle_cores + spec.cpu_seconds_per_request * per_pod_rps
        if spec.name == "envoy":
            # TLS handshake storm after a certificate rotation: clients reconnect en masse.
            demand = demand * self._ramp(plan.gateway_handshake_storm, 9.0, ramp_steps=3)
        if wl.name == "vector-store":
            demand = demand + 2.4 * (self._ramp(plan.vector_reindex, 2.0, ramp_steps=2) - 1.0)
        if wl.name == "coder":
            # Test-suite execution inside the coder sandbox: CPU-bound bursts.
            demand = demand * self._ramp(plan.coder_test_burst, 4.0, ramp_steps=3)
        if wl.name == "postgres":
            # During the slowness postgres waits on I/O and locks: CPU drops, not climbs.
            slow = self._ramp(plan.postgres_slowness, 0.7, ramp_steps=2)
            demand = demand * slow
        return demand

    def _memory(
        self, wl: WorkloadSpec, spec: ContainerSpec, pod: Pod, per_pod_rps: np.ndarray
    ) -> tuple[np.ndarray, list[int]]:
        """Working set in bytes and the steps of OOM kills (first sample after the restart)."""
        plan = self.plan
        noise = np.convolve(self.rng.normal(0, 1, N_STEPS), np.ones(6) / 6, mode="same")
        working_set = (
            spec.memory_base + spec.memory_per_rps * per_pod_rps
            + 0.01 * spec.memory_base * noise
        )
        kills: list[int] = []
        if wl.name == "summarizer":
            # A leak: ~+1 MiB per 5 min until the limit; the kernel OOM-kills the container,
            # kubelet restarts it and the leak starts again from the baseline.
            headroom = spec.memory_limit - spec.memory_base - 40 * MIB
            leak_per_step = headroom / (plan.summarizer_leak_days_to_oom * STEPS_PER_DAY)
            since_restart = 0
            for t in range(pod.start, pod.end):
                value = working_set[t] + leak_per_step * since_restart
                if value >= spec.memory_limit:
                    kills.append(t)
                    since_restart = 0
                    value = working_set[t]
                working_set[t] = value
                since_restart += 1
        if wl.name == "vector-store" and pod.name.endswith("-1"):
            # Re-index builds the new index in memory next to the old one until the OOM kill.
            start, end = plan.vector_reindex
            ramp = np.clip((self.steps - start) / (end - start), 0, 1)
            working_set = working_set + ramp * (spec.memory_limit - spec.memory_base) * 1.02
            working_set[end:] = (spec.memory_base + spec.memory_per_rps * per_pod_rps[end:]
                                 + 0.01 * spec.memory_base * noise[end:])
            kills.append(end)
        working_set = np.minimum(working_set, spec.memory_limit)
        return working_set, kills

    def _emit_container(
        self,
        wl: WorkloadSpec,
        spec: ContainerSpec,
        pod: Pod,
        alive: np.ndarray,
        demand: np.ndarray,
        memory: np.ndarray,
        kills: list[int],
    ) -> None:
        labels = {"cluster": CLUSTER, "namespace": wl.namespace, "pod": pod.name,
                  "container": spec.name}
        gone = ~alive

        def masked(values: np.ndarray) -> np.ndarray:
            out = values.astype(float).copy()
            out[gone] = np.nan
            return out

        # Containers restart at the kill steps: cumulative counters restart from 0.
        segments = self._segments(pod, kills)
        limit = spec.cpu_limit
        usage = np.minimum(demand, 0.98 * limit) if limit else demand
        cpu_seconds = usage * SCRAPE_INTERVAL_S
        age_offset = float(usage[pod.start]) * SCRAPE_INTERVAL_S * (
            self.rng.integers(200, 4000) if pod.start == 0 else 1
        )
        self.series.append(Series(
            "container_cpu_usage_seconds", "container_cpu_usage_seconds_total", labels,
            masked(np.round(self._cumulative(cpu_seconds, segments, age_offset), 3)),
            decimals=3,
        ))
        self.series.append(Series(
            "container_memory_working_set_bytes", "container_memory_working_set_bytes",
            labels, masked(np.round(memory / PAGE) * PAGE),
        ))
        if limit:
            # CFS counts a period only when the cgroup had runnable tasks in it; throttling
            # starts well before the mean reaches the limit because usage is bursty.
            load = demand / limit
            periods = np.round(CFS_PERIODS_PER_SCRAPE * np.clip(0.2 + 1.1 * load, 0, 1))
            throttled_share = np.clip(0.01 * load + ((load - 0.6) / 0.5).clip(0) ** 2, 0, 0.95)
            throttled = np.round(periods * throttled_share)
            offset = self.rng.integers(10_000, 500_000) if pod.start == 0 else 0
            self.series.append(Series(
                "container_cpu_cfs_periods", "container_cpu_cfs_periods_total", labels,
                masked(self._cumulative(periods, segments, float(offset))),
            ))
            self.series.append(Series(
                "container_cpu_cfs_throttled_periods",
                "container_cpu_cfs_throttled_periods_total", labels,
                masked(self._cumulative(throttled, segments, float(offset // 50))),
            ))
        for family, resource, unit, value in (
            ("kube_pod_container_resource_requests", "cpu", "core", spec.cpu_request),
            ("kube_pod_container_resource_requests", "memory", "byte", spec.memory_request),
            ("kube_pod_container_resource_limits", "cpu", "core", spec.cpu_limit),
            ("kube_pod_container_resource_limits", "memory", "byte", spec.memory_limit),
        ):
            if value is None:
                continue
            self.series.append(Series(
                family, family, {**labels, "resource": resource, "unit": unit},
                masked(np.full(N_STEPS, float(value))), decimals=3 if unit == "core" else 0,
            ))
        restarts = np.full(N_STEPS, float(spec.restarts_before_period if pod.start == 0 else 0))
        for k in kills:
            restarts[k:] += 1
        self.series.append(Series(
            "kube_pod_container_status_restarts", "kube_pod_container_status_restarts_total",
            labels, masked(restarts),
        ))
        if kills:
            reason = np.zeros(N_STEPS)
            reason[kills[0]:] = 1.0
            self.series.append(Series(
                "kube_pod_container_status_last_terminated_reason",
                "kube_pod_container_status_last_terminated_reason",
                {**labels, "reason": "OOMKilled"}, masked(reason),
            ))
            for k in kills:
                self.episodes.append(Episode(
                    "oom_kill", wl.namespace, wl.name, pod.name, spec.name, wl.name, k, k,
                    "working set reached the memory limit "
                    f"({spec.memory_limit // MIB} MiB); container OOM-killed and restarted "
                    "(the sample at `start` is the first after the restart)",
                ))
        if limit:
            self._throttling_episodes(wl, spec, pod, demand / limit)

    def _throttling_episodes(
        self, wl: WorkloadSpec, spec: ContainerSpec, pod: Pod, load: np.ndarray
    ) -> None:
        plan = self.plan
        windows = {
            "envoy": (plan.gateway_handshake_storm,
                      "TLS handshake storm after a certificate rotation pushes envoy to its "
                      "0.5-core limit"),
            "vector-store": (plan.vector_reindex,
                             "nightly re-index needs ~2.4 more cores than the 2-core limit"),
            "coder": (plan.coder_test_burst,
                      "test-suite execution in the coder sandbox hits the 1-core limit"),
        }
        if spec.name not in windows:
            return
        (start, end), why = windows[spec.name]
        if not (pod.start <= start and pod.end >= end):
            return
        self.episodes.append(Episode(
            "cpu_throttling", wl.namespace, wl.name, pod.name, spec.name, wl.name, start, end,
            why,
        ))

    @staticmethod
    def _segments(pod: Pod, kills: list[int]) -> list[tuple[int, int]]:
        bounds = [pod.start, *kills, pod.end]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    @staticmethod
    def _cumulative(
        increments: np.ndarray, segments: list[tuple[int, int]], offset: float
    ) -> np.ndarray:
        """Counter value at each scrape; restarts from 0 at each container restart."""
        out = np.full(N_STEPS, np.nan)
        for i, (start, end) in enumerate(segments):
            base = offset if i == 0 else 0.0
            out[start:end] = base + np.cumsum(increments[start:end])
        return out

    # ---- services ------------------------------------------------------------------------

    def build_services(self, rps: dict[str, np.ndarray]) -> None:
        """OTel HTTP server metrics per Service: requests by status, latency histogram, in-flight.

        Latency rises with load (queueing), and around the postgres slowness every service that
        touches the database slows too. Counters are per Service (aggregated over pods), so
        they do not reset when a pod restarts.
        """
        plan = self.plan
        incident = self._ramp(plan.postgres_slowness, 2.0, ramp_steps=2) - 1.0  # 0..1
        oom_steps: dict[str | None, list[int]] = {}
        for e in self.episodes:
            if e.kind == "oom_kill":
                oom_steps.setdefault(e.workload, []).append(e.start_step)
        for wl in WORKLOADS:
            labels = {"cluster": CLUSTER, "namespace": wl.namespace, "service": wl.name}
            rate = rps[wl.name]
            requests = self.rng.poisson(rate * SCRAPE_INTERVAL_S).astype(float)
            load = rate / np.quantile(rate, 0.95)
            median = wl.latency_median_s * (1.0 + 0.25 * load ** 3)
            if wl.name == "postgres":
                median = median * (1.0 + 60.0 * incident)
            elif wl.namespace == "agents" or wl.name == "api-gateway":
                median = median * (1.0 + 0.5 * incident)
            sigma = wl.latency_sigma * (1.0 + 0.3 * incident)
            # Status codes: binomial shares of the step's requests; 503 rises in the incident,
            # 500 when the service's container was OOM-killed.
            remaining = requests.copy()
            by_status: dict[str, np.ndarray] = {}
            for code, share in wl.error_shares.items():
                p = np.full(N_STEPS, share)
                if code == "503":
                    p = p + 0.04 * incident * (wl.name in ("postgres", "api-gateway"))
                if code == "500":
                    # Requests in flight on the killed container fail.
                    for kill in oom_steps.get(wl.name, []):
                        p[kill] += 0.05
                if code == "429":
                    p = p * (1.0 + 4.0 * np.clip(load - 0.8, 0, None))
                by_status[code] = self.rng.binomial(remaining.astype(np.int64), p).astype(float)
                remaining = remaining - by_status[code]
            by_status = {"200": remaining, **by_status}
            offset_queries = float(self.rng.integers(1_000, 100_000)) * wl.requests_per_query
            for code, counts in sorted(by_status.items()):
                share = 1.0 if code == "200" else wl.error_shares.get(code, 0.001)
                self.series.append(Series(
                    "http_server_requests", "http_server_requests_total",
                    {**labels, "status_code": code},
                    np.floor(offset_queries * share * 100) + np.cumsum(counts),
                ))
            self._latency_histogram(labels, requests, median, sigma)
            mean_latency = median * np.exp(sigma ** 2 / 2)
            active = self.rng.poisson(rate * mean_latency).astype(float)
            self.series.append(Series(
                "http_server_active_requests", "http_server_active_requests", labels, active,
            ))
            if wl.name == "postgres":
                start, end = plan.postgres_slowness
                self.episodes.append(Episode(
                    "latency_incident", wl.namespace, wl.name, None, None, wl.name, start, end,
                    "database slowness (lock contention / slow I/O): postgres latency and "
                    "in-flight requests climb while its CPU stays low; agents and the gateway "
                    "slow down and the gateway answers more 503s",
                ))

    def _latency_histogram(
        self, labels: dict[str, str], requests: np.ndarray, median: np.ndarray, sigma: np.ndarray
    ) -> None:
        """Cumulative `le` buckets drawn from a log-normal: conditional binomials per bucket."""
        remaining = requests.astype(np.int64)
        p_left = np.ones(N_STEPS)
        cumulative = np.zeros(N_STEPS)
        prev_cdf = np.zeros(N_STEPS)
        buckets: list[tuple[str, np.ndarray]] = []
        for le in HISTOGRAM_BUCKETS:
            cdf = _lognormal_cdf(le, median, sigma)
            p_bin = np.clip((cdf - prev_cdf) / np.maximum(p_left, 1e-12), 0, 1)
            in_bin = self.rng.binomial(remaining, p_bin)
            remaining = remaining - in_bin
            p_left = np.maximum(p_left - (cdf - prev_cdf), 0)
            prev_cdf = cdf
            cumulative = cumulative + in_bin
            buckets.append((_format_le(le), np.cumsum(cumulative)))
        total = np.cumsum(requests)
        buckets.append(("+Inf", total))
        mean = median * np.exp(sigma ** 2 / 2)
        for le, values in buckets:
            self.series.append(Series(
                "http_server_request_duration_seconds",
                "http_server_request_duration_seconds_bucket", {**labels, "le": le}, values,
            ))
        self.series.append(Series(
            "http_server_request_duration_seconds", "http_server_request_duration_seconds_count",
            labels, total,
        ))
        self.series.append(Series(
            "http_server_request_duration_seconds", "http_server_request_duration_seconds_sum",
            labels, np.round(np.cumsum(requests * mean), 3), decimals=3,
        ))

    # ---- LLM usage -----------------------------------------------------------------------

    def build_llm_usage(self, rps: dict[str, np.ndarray]) -> None:
        """OTel GenAI client counters per agent, provider and model.

        Calls per step are Poisson; tokens per step are the sum of that many per-call sizes,
        approximated by the central limit theorem with the trace's own mean and spread. Cache
        reads and writes are taken as shares of the step's input tokens and can never exceed it.
        """
        cache = self.shapes.cache
        for route in LLM_ROUTES:
            profile = token_profile(self.shapes, route)
            calls_rate = rps[route.agent] * LLM_CALLS_PER_REQUEST[route.agent] * route.call_share
            calls = self.rng.poisson(calls_rate * SCRAPE_INTERVAL_S).astype(float)
            root = np.sqrt(calls)
            inp = calls * profile.input_mean + root * profile.input_std * self.rng.normal(
                0, 1, N_STEPS)
            inp = np.round(np.maximum(inp, calls))
            out = calls * profile.output_mean + root * profile.output_std * self.rng.normal(
                0, 1, N_STEPS)
            out = np.round(np.maximum(out, calls))
            share_noise = cache.read_share_std / np.maximum(root, 1) * self.rng.normal(
                0, 1, N_STEPS)
            write_share = cache.write_share if route.reports_cache_write else 0.0
            read_share = np.clip(cache.read_share + share_noise, 0, 1 - write_share)
            cache_read = np.floor(inp * read_share)
            cache_write = np.minimum(np.floor(inp * write_share), inp - cache_read)
            reasoning = np.floor(out * route.reasoning_share)
            seconds = calls * route.time_to_first_token_s + out / route.output_tokens_per_s

            labels = {"cluster": CLUSTER, "service": route.agent}
            provider_label = "gen_ai_system" if route.legacy_system_label else (
                "gen_ai_provider_name")
            labels[provider_label] = route.provider
            labels["gen_ai_request_model"] = route.model
            labels["gen_ai_agent_name"] = route.agent

            # The process started before the period: counters carry history, scaled from one
            # day-sized factor so cache_read + cache_write <= input holds from the first sample.
            history = float(self.rng.integers(50, 400))
            counters = [
                ("input_tokens", inp),
                ("output_tokens", out),
                ("cache_read_input_tokens", cache_read),
            ]
            if route.reports_cache_write:
                counters.append(("cache_write_input_tokens", cache_write))
            if route.reasoning_share:
                counters.append(("reasoning_output_tokens", reasoning))
            for name, increments in counters:
                family = f"gen_ai_client_inference_usage_{name}"
                start = math.floor(history * float(increments[:STEPS_PER_DAY].mean()))
                self.series.append(Series(
                    family, f"{family}_total", labels, start + np.cumsum(increments),
                ))
            hist_start = math.floor(history * float(calls[:STEPS_PER_DAY].mean()))
            hist = "gen_ai_client_operation_duration_seconds"
            count = hist_start + np.cumsum(calls)
            self.series.append(Series(hist, f"{hist}_bucket", {**labels, "le": "+Inf"}, count))
            self.series.append(Series(hist, f"{hist}_count", labels, count))
            sum_start = history * float(seconds[:STEPS_PER_DAY].mean())
            self.series.append(Series(
                hist, f"{hist}_sum", labels, np.round(sum_start + np.cumsum(seconds), 3),
                decimals=3,
            ))

    # ---- ownership -----------------------------------------------------------------------

    def build_owners(self, pods: dict[str, list[Pod]]) -> None:
        """kube-state-metrics ownership, which names each pod's workload and its kind.

        `kube_pod_owner` per pod while it exists: Deployment pods are owned by their ReplicaSet
        (the pod name without its 5-character suffix), StatefulSet pods by the StatefulSet.
        `kube_replicaset_owner` per ReplicaSet from its first pod on, to the end: a Deployment
        keeps old ReplicaSets scaled to zero (revisionHistoryLimit), so coder's first one still
        reports after the rollout. No random draw: every other series stays as it was.
        """
        for wl in WORKLOADS:
            replicaset_start: dict[str, int] = {}
            for pod in pods[wl.name]:
                if wl.kind == "Deployment":
                    owner_kind, owner_name = "ReplicaSet", pod.name.rsplit("-", 1)[0]
                    first = replicaset_start.get(owner_name, pod.start)
                    replicaset_start[owner_name] = min(first, pod.start)
                else:
                    owner_kind, owner_name = wl.kind, wl.name
                self.series.append(Series(
                    "kube_pod_owner", "kube_pod_owner",
                    {"cluster": CLUSTER, "namespace": wl.namespace, "pod": pod.name,
                     "owner_kind": owner_kind, "owner_name": owner_name,
                     "owner_is_controller": "true"},
                    np.where(self.alive(pod), 1.0, np.nan),
                ))
            for replicaset, start in replicaset_start.items():
                exists = np.full(N_STEPS, np.nan)
                exists[start:] = 1.0
                self.series.append(Series(
                    "kube_replicaset_owner", "kube_replicaset_owner",
                    {"cluster": CLUSTER, "namespace": wl.namespace, "replicaset": replicaset,
                     "owner_kind": "Deployment", "owner_name": wl.name,
                     "owner_is_controller": "true"},
                    exists,
                ))

    def build(self) -> Fleet:
        """Generate every series and episode of the fleet."""
        rps = self.service_rps()
        pods = self.schedule_pods()
        self.build_containers(rps, pods)
        self.build_services(rps)
        self.build_llm_usage(rps)
        self.build_owners(pods)
        episodes = sorted(self.episodes, key=lambda e: (e.start_step, e.kind, e.pod or ""))
        return Fleet(self.series, episodes, self.pods)


def _lognormal_cdf(x: float, median: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    z = (np.log(x) - np.log(median)) / (sigma * math.sqrt(2))
    return 0.5 * (1.0 + _erf(z))


def _erf(z: np.ndarray) -> np.ndarray:
    # numpy has no erf; math.erf vectorised is exact enough and fast for 8k points.
    return np.vectorize(math.erf, otypes=[float])(z)


def _format_le(le: float) -> str:
    return f"{le:g}" if le < 1 else f"{le:.1f}"


# --------------------------------------------------------------------------------------------
# OpenMetrics output
# --------------------------------------------------------------------------------------------

FAMILY_TYPES = {
    "container_cpu_usage_seconds": ("counter", "Cumulative CPU time consumed (cAdvisor)."),
    "container_memory_working_set_bytes": ("gauge", "Working set memory (cAdvisor)."),
    "container_cpu_cfs_periods": ("counter", "Elapsed CFS enforcement periods (cAdvisor)."),
    "container_cpu_cfs_throttled_periods": ("counter", "Throttled CFS periods (cAdvisor)."),
    "kube_pod_container_resource_requests": ("gauge", "Resources requested by a container."),
    "kube_pod_container_resource_limits": ("gauge", "Resource limits of a container."),
    "kube_pod_container_status_restarts": ("counter", "Container restarts."),
    "kube_pod_container_status_last_terminated_reason": (
        "gauge", "Reason of the container's last termination."),
    "kube_deployment_status_replicas": ("gauge", "Replicas of the Deployment."),
    "kube_pod_owner": ("gauge", "Information about the Pod's owner (kube-state-metrics)."),
    "kube_replicaset_owner": (
        "gauge", "Information about the ReplicaSet's owner (kube-state-metrics)."),
    "http_server_requests": ("counter", "HTTP server requests by status code."),
    "http_server_request_duration_seconds": ("histogram", "HTTP server request duration."),
    "http_server_active_requests": ("gauge", "HTTP server requests in flight."),
    "gen_ai_client_inference_usage_input_tokens": ("counter", "LLM input tokens."),
    "gen_ai_client_inference_usage_output_tokens": ("counter", "LLM output tokens."),
    "gen_ai_client_inference_usage_cache_read_input_tokens": (
        "counter", "LLM input tokens read from the prompt cache (subset of input)."),
    "gen_ai_client_inference_usage_cache_write_input_tokens": (
        "counter", "LLM input tokens written to the prompt cache (subset of input)."),
    "gen_ai_client_inference_usage_reasoning_output_tokens": (
        "counter", "LLM reasoning tokens (subset of output)."),
    "gen_ai_client_operation_duration_seconds": (
        "histogram", "LLM client operation duration (only the +Inf bucket is kept)."),
}


def _label_text(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _values_text(values: np.ndarray, decimals: int) -> list[str]:
    if decimals:
        return [f"{v:.{decimals}f}" for v in values.tolist()]
    return [str(int(v)) for v in values.tolist()]


def iter_openmetrics(fleet: Fleet, n_steps: int) -> Iterator[str]:
    """OpenMetrics text, one chunk per series (or per histogram), `# EOF` last.

    Families are contiguous. Within a histogram, the samples of one metric point (all buckets,
    count and sum at one timestamp) stay together, as OpenMetrics requires; every series'
    samples are in increasing time, which is what `promtool tsdb create-blocks-from
    openmetrics` needs.
    """
    epoch = int(PERIOD_START.timestamp())
    ts_text = [str(epoch + i * SCRAPE_INTERVAL_S) for i in range(n_steps)]
    by_family: dict[str, list[Series]] = {}
    for s in fleet.series:
        by_family.setdefault(s.family, []).append(s)
    for family, members in by_family.items():
        kind, help_text = FAMILY_TYPES[family]
        header = f"# TYPE {family} {kind}\n# HELP {family} {help_text}\n"
        if kind != "histogram":
            yield header
            for s in members:
                yield _series_text(s, ts_text, n_steps)
            continue
        yield header
        # Group a histogram's sample series by the metric's labels (everything but `le`).
        metrics: dict[tuple[tuple[str, str], ...], list[Series]] = {}
        for s in members:
            key = tuple((k, v) for k, v in s.labels.items() if k != "le")
            metrics.setdefault(key, []).append(s)
        for parts in metrics.values():
            yield _histogram_text(parts, ts_text, n_steps)
    yield "# EOF\n"


def _series_text(s: Series, ts_text: list[str], n_steps: int) -> str:
    prefix = s.sample + _label_text(s.labels) + " "
    values = s.values[:n_steps]
    present = ~np.isnan(values)
    texts = _values_text(np.where(present, values, 0.0), s.decimals)
    return "".join(
        f"{prefix}{v} {t}\n"
        for v, t, ok in zip(texts, ts_text, present.tolist(), strict=True)
        if ok
    )


def _histogram_text(parts: list[Series], ts_text: list[str], n_steps: int) -> str:
    prefixes = [p.sample + _label_text(p.labels) + " " for p in parts]
    columns = [_values_text(p.values[:n_steps], p.decimals) for p in parts]
    lines: list[str] = []
    for i, t in enumerate(ts_text):
        for prefix, column in zip(prefixes, columns, strict=True):
            lines.append(f"{prefix}{column[i]} {t}\n")
    return "".join(lines)


def write_fleet(fleet: Fleet, out_dir: Path, days: int = PERIOD_DAYS) -> dict[str, int]:
    """Write `fleet.om.xz` and `episodes.json` atomically; return sizes and counts."""
    if not 1 <= days <= PERIOD_DAYS:
        raise ValueError(f"days must be between 1 and {PERIOD_DAYS}, got {days}")
    n_steps = days * STEPS_PER_DAY
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "fleet.om.xz"
    tmp = target.with_suffix(".xz.tmp")
    raw_bytes = 0
    compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=6)
    with tmp.open("wb") as fh:
        for chunk in iter_openmetrics(fleet, n_steps):
            data = chunk.encode()
            raw_bytes += len(data)
            fh.write(compressor.compress(data))
        fh.write(compressor.flush())
    os.replace(tmp, target)
    episodes = [e.as_json() for e in fleet.episodes if e.start_step < n_steps]
    (out_dir / "episodes.json").write_text(json.dumps({
        "period_start": _iso(0),
        "period_end": _iso(n_steps),
        "scrape_interval_seconds": SCRAPE_INTERVAL_S,
        "cluster": CLUSTER,
        "episodes": episodes,
    }, indent=2) + "\n")
    written = [s for s in fleet.series if not np.all(np.isnan(s.values[:n_steps]))]
    return {
        "series": len(written),
        "uncompressed_bytes": raw_bytes,
        "compressed_bytes": target.stat().st_size,
        "episodes": len(episodes),
    }


def build_fleet(data_dir: Path) -> Fleet:
    """Read the permissive traces and generate the full four-week fleet."""
    return FleetBuilder(load_sources(data_dir)).build()


def main(argv: list[str] | None = None) -> int:
    """Command line: build the demo fleet into an output folder."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/demo_fleet.py",
        description="Build the bundled demo fleet (OpenMetrics, xz) from permissive traces.",
    )
    parser.add_argument("--data", type=Path, required=True,
                        help="folder with the shared real traces (../shared/data)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (assets/demo)")
    parser.add_argument("--days", type=int, default=PERIOD_DAYS,
                        help="write only the first N days (tests and quick looks)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    try:
        fleet = build_fleet(args.data)
    except FileNotFoundError as exc:
        parser.error(f"--data {args.data}: missing source trace {exc.filename or exc}")
    stats = write_fleet(fleet, args.out, args.days)
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

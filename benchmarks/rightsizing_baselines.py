"""What the rightsizing benchmark compares with: the real VMs it reads, KRR `simple`, the VPA
recommender (both re-implemented from their published algorithms, constants cited inline),
current provisioning and two hindsight references that know the evaluation window.

Used by `rightsizing_bench.py`; no timing or reporting here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "bitbrains_rnd_6vms_2013-07.csv.gz"
ALIBABA = REPO.parent / "shared" / "data" / "alibaba_v2018_machine_usage_3machines.csv"
DAY_S = 86_400
GIB = 1024**3

# --- KRR `simple` strategy (robusta-dev/krr, robusta_krr/strategies/simple.py) -------------
KRR_HISTORY_S = 336 * 3_600  # history_duration default: 336 hours
KRR_CPU_PERCENTILE = 95  # cpu_percentile default: 95 (per pod, then max over pods)
KRR_MEMORY_BUFFER = 0.15  # memory_buffer_percentage default: 15 (on the max working set)

# --- VPA recommender (kubernetes/autoscaler, vertical-pod-autoscaler/pkg/recommender) ------
VPA_HALF_LIFE_S = 24 * 3_600  # CPUHistogramDecayHalfLife / MemoryHistogramDecayHalfLife: 24 h
VPA_TARGET_CPU_PERCENTILE = 0.9  # targetCPUPercentile
VPA_LOWER_PERCENTILE = 0.5  # lowerBoundCPUPercentile / lowerBoundMemoryPeaksPercentile
VPA_UPPER_PERCENTILE = 0.95  # upperBoundCPUPercentile / upperBoundMemoryPeaksPercentile
VPA_TARGET_MEMORY_PERCENTILE = 0.9  # targetMemoryPeaksPercentile
VPA_SAFETY_MARGIN = 0.15  # --recommendation-margin-fraction
VPA_MEMORY_AGGREGATION_S = 24 * 3_600  # MemoryAggregationInterval: one peak per 24 h
VPA_CPU_FIRST_BUCKET = 0.01  # cores; CPU histogram: exponential buckets, ratio 1.05
VPA_MEMORY_FIRST_BUCKET = 1e7  # bytes; memory histogram: exponential buckets, ratio 1.05
VPA_BUCKET_RATIO = 1.05
VPA_MIN_CPU = 0.025  # --pod-recommendation-min-cpu-millicores=25
VPA_MIN_MEMORY = 250 * 1024 * 1024  # --pod-recommendation-min-memory-mb=250 (x 1024 x 1024)
VPA_MIN_SAMPLE_WEIGHT = 0.1  # minSampleWeight: CPU samples weigh max(request, 0.1)

ALIBABA_CORES = 96  # cluster-trace-v2018 machines: 96 cores (trace documentation)
ALIBABA_NOMINAL_MEMORY = 100 * GIB  # memory is published as % only: 100 % = 100 GiB, nominal
ALIBABA_EPOCH_S = 1_514_764_800  # 2018-01-01: the trace's timestamps are offsets from its start

# Per-VM quantile levels the hindsight references try (fine enough that the reference is
# close to the best constant request, coarse enough to sweep in a second).
HINDSIGHT_LEVELS = np.concatenate([np.linspace(0.5, 0.9, 41), np.linspace(0.901, 1.0, 100)])
HINDSIGHT_PRICES = np.geomspace(1e-4, 1e5, 400)


@dataclass(frozen=True)
class Sizing:
    """Per-VM requests and limits of one method (cores / bytes; CPU limit unused here).

    `cpu_hourly` holds 24 CPU requests by UTC hour for methods that change over the day.
    """

    cpu_request: dict[int, float]
    memory_request: dict[int, float]
    memory_limit: dict[int, float]
    note: str = ""
    cpu_hourly: dict[int, list[float]] | None = None
    recommender: dict[int, str] = field(default_factory=dict)


def load_bitbrains() -> pl.DataFrame:
    """The trace with cores used and memory bytes, time in seconds from the trace start."""
    frame = pl.read_csv(DATA)
    start = frame["timestamp_s"].min()
    return frame.with_columns(
        (pl.col("cpu_usage_mhz") / (pl.col("cpu_capacity_mhz") / pl.col("cpu_cores"))).alias(
            "cores"
        ),
        (pl.col("mem_usage_kb") * 1024.0).alias("memory"),
        (pl.col("mem_capacity_kb") * 1024.0).alias("memory_capacity"),
        (pl.col("timestamp_s") - start).alias("t"),
    ).sort("vm_id", "t")


def load_alibaba() -> pl.DataFrame:
    """Three Alibaba 2018 machines in the Bitbrains frame's shape (irregular 10-60 s samples,
    8 days; CPU % of 96 cores, memory % of a nominal 100 GiB). Research/study use only."""
    frame = pl.read_csv(ALIBABA).drop_nulls(["cpu_util_percent", "mem_util_percent"])
    start = frame["time_stamp"].min()
    return (
        frame.with_columns(
            pl.col("machine_id").str.extract(r"(\d+)$").cast(pl.Int64).alias("vm_id"),
            (pl.col("time_stamp") - start).alias("t"),
            (pl.col("time_stamp") + ALIBABA_EPOCH_S).alias("timestamp_s"),
            (pl.col("cpu_util_percent") / 100 * ALIBABA_CORES).cast(pl.Float64).alias("cores"),
            (pl.col("mem_util_percent") / 100 * ALIBABA_NOMINAL_MEMORY).alias("memory"),
            pl.lit(ALIBABA_CORES).alias("cpu_cores"),
            pl.lit(float(ALIBABA_NOMINAL_MEMORY)).alias("memory_capacity"),
        )
        .unique(["vm_id", "t"], keep="first")
        .sort("vm_id", "t")
    )


def current_spec(train: pl.DataFrame) -> Sizing:
    """Provisioned capacity at the end of training: request = limit = what the VM has."""
    last = train.group_by("vm_id").agg(pl.col("cpu_cores").last(), pl.col("memory_capacity").last())
    cpu = {r["vm_id"]: float(r["cpu_cores"]) for r in last.iter_rows(named=True)}
    memory = {r["vm_id"]: float(r["memory_capacity"]) for r in last.iter_rows(named=True)}
    return Sizing(cpu, memory, memory)


def krr_simple(train: pl.DataFrame) -> Sizing:
    """KRR simple: CPU = max over pods of each pod's p95 over 14 days; memory = max x 1.15;
    memory limit = memory request, no CPU limit (KRR's defaults)."""
    cpu, memory = {}, {}
    for (vm,), group in train.group_by("vm_id"):
        recent = group.filter(pl.col("t") > group["t"].max() - KRR_HISTORY_S)
        cpu[vm] = float(np.percentile(recent["cores"].to_numpy(), KRR_CPU_PERCENTILE))
        memory[vm] = float(recent["memory"].max()) * (1 + KRR_MEMORY_BUFFER)
    return Sizing(cpu, memory, memory)


def _histogram_percentile(
    values: np.ndarray, weights: np.ndarray, first_bucket: float, q: float
) -> float:
    """VPA's exponential-bucket histogram percentile (util/histogram.go `Percentile`): the end
    of the bucket where the cumulative weight reaches q, i.e. `GetBucketStart(bucket + 1)`."""
    # bucket i spans [first*(ratio^i - 1)/(ratio - 1), ...): VPA's exponential options
    scale = first_bucket / (VPA_BUCKET_RATIO - 1)
    index = np.floor(np.log1p(np.maximum(values, 0) / scale) / math.log(VPA_BUCKET_RATIO))
    index = index.astype(np.int64)
    totals = np.bincount(index, weights=weights)
    cumulative = np.cumsum(totals)
    bucket = int(np.searchsorted(cumulative, q * cumulative[-1]))
    # GetBucketStart(bucket + 1): the histogram reports the end of the bucket for percentiles
    return scale * (VPA_BUCKET_RATIO ** (bucket + 1) - 1)


def vpa_recommender(train: pl.DataFrame, requests: Sizing) -> Sizing:
    """VPA target: p90 of decaying CPU samples and of decaying daily memory peaks, x 1.15.

    CPU samples weigh max(request, 0.1) x 2^(age / 24 h) (newer samples weigh more); memory
    keeps one peak per 24 h aggregation window. The confidence-based bounds are computed too
    (lower = p50 x (1 + 0.001/c)^-2, upper = p95 x (1 + 1/c), c = min(days of history,
    samples / 1440)) and reported in the note; the updater applies the target.
    """
    cpu, memory, notes = {}, {}, []
    for (vm,), group in train.group_by("vm_id"):
        t = group["t"].to_numpy().astype(float)
        reference = t.max()
        decay = np.power(2.0, (t - reference) / VPA_HALF_LIFE_S)
        weight = max(requests.cpu_request[vm], VPA_MIN_SAMPLE_WEIGHT) * decay
        cores = group["cores"].to_numpy()
        target_cpu = _histogram_percentile(
            cores, weight, VPA_CPU_FIRST_BUCKET, VPA_TARGET_CPU_PERCENTILE
        )
        window = (t // VPA_MEMORY_AGGREGATION_S).astype(np.int64)
        peaks = (
            pl.DataFrame({"w": window, "m": group["memory"].to_numpy(), "t": t})
            .group_by("w")
            .agg(pl.col("m").max(), pl.col("t").max())
        )
        peak_decay = np.power(2.0, (peaks["t"].to_numpy() - reference) / VPA_HALF_LIFE_S)
        target_memory = _histogram_percentile(
            peaks["m"].to_numpy(), peak_decay, VPA_MEMORY_FIRST_BUCKET, VPA_TARGET_MEMORY_PERCENTILE
        )
        cpu[vm] = max(target_cpu * (1 + VPA_SAFETY_MARGIN), VPA_MIN_CPU)
        memory[vm] = max(target_memory * (1 + VPA_SAFETY_MARGIN), VPA_MIN_MEMORY)
        # confidence: history length in days vs samples at one per minute (VPA's assumption)
        confidence = min((t.max() - t.min()) / DAY_S, t.size / (60 * 24))
        lower = _histogram_percentile(cores, weight, VPA_CPU_FIRST_BUCKET, VPA_LOWER_PERCENTILE)
        upper = _histogram_percentile(cores, weight, VPA_CPU_FIRST_BUCKET, VPA_UPPER_PERCENTILE)
        lower *= (1 + VPA_SAFETY_MARGIN) * (1 + 0.001 / confidence) ** -2
        upper *= (1 + VPA_SAFETY_MARGIN) * (1 + 1 / confidence)
        notes.append(f"vm {vm}: CPU bounds {lower:.3f}..{upper:.3f} (confidence {confidence:.1f})")
    return Sizing(cpu, memory, memory, "; ".join(sorted(notes)))


def _best_levels(
    slack: list[np.ndarray], requested: list[np.ndarray], violations: list[np.ndarray],
    samples: int, violation_bar: float,
) -> tuple[list[int], float, float]:  # fmt: skip
    """Per-VM level indices with the lowest pooled relative slack at a pooled violation rate
    <= `violation_bar`: each VM minimises slack + price x violations, over a sweep of prices
    (a Lagrangian search; exact up to the level grid). Returns (levels, slack, rate)."""
    best = ([int(np.argmin(v)) for v in violations], math.inf, math.inf)
    scale = sum(float(r.max()) for r in requested) / max(samples, 1)
    for price in HINDSIGHT_PRICES * scale:
        picks = [int(np.argmin(s + price * v)) for s, v in zip(slack, violations, strict=True)]
        rate = sum(float(v[p]) for v, p in zip(violations, picks, strict=True)) / samples
        total = sum(float(r[p]) for r, p in zip(requested, picks, strict=True))
        share = sum(float(s[p]) for s, p in zip(slack, picks, strict=True)) / max(total, 1e-12)
        if rate <= violation_bar and share < best[1]:
            best = (picks, share, rate)
    return best


def hindsight(evaluation: pl.DataFrame, violation_bar: float) -> Sizing:
    """Reference, not a method: the constant per-VM CPU requests that, knowing the evaluation
    window, give the lowest pooled CPU slack at a pooled violation rate <= `violation_bar`
    (each VM's evaluation-window quantiles at `HINDSIGHT_LEVELS`, Lagrangian search).

    It bounds what any recommender that sets one request per container can reach here.
    """
    groups = sorted(evaluation.group_by("vm_id"), key=lambda g: g[0][0])
    vms = [key[0] for key, _ in groups]
    levels, slack, requested, violations = [], [], [], []
    for _, group in groups:
        cores = group["cores"].to_numpy()
        at = np.quantile(cores, HINDSIGHT_LEVELS)
        levels.append(at)
        slack.append(np.array([np.maximum(r - cores, 0).sum() for r in at]))
        requested.append(at * cores.size)
        violations.append(np.array([(cores > r).sum() for r in at], dtype=float))
    picks, _, _ = _best_levels(slack, requested, violations, evaluation.height, violation_bar)
    cpu = {vm: float(levels[i][picks[i]]) for i, vm in enumerate(vms)}
    memory = {vm: float(g["memory"].max()) for vm, (_, g) in zip(vms, groups, strict=True)}
    note = "hindsight: eval-window quantiles " + ", ".join(
        f"{vm}: q{HINDSIGHT_LEVELS[picks[i]]:.3f}" for i, vm in enumerate(vms)
    )
    return Sizing(cpu, memory, memory, note)


def hindsight_hourly(evaluation: pl.DataFrame, violation_bar: float) -> dict:
    """Reference, not a method: CPU requests that change every UTC hour (as in-place pod
    resize allows), each hour at one per-VM quantile of that hour's usage in the evaluation
    window; the lowest pooled slack at a pooled violation rate <= `violation_bar`.

    It bounds what even a perfect hour-of-day schedule could reach here.
    """
    slack, requested, violations = [], [], []
    for _, group in sorted(evaluation.group_by("vm_id"), key=lambda g: g[0][0]):
        cores = group["cores"].to_numpy()
        hour = (group["timestamp_s"].to_numpy() % DAY_S) // 3_600
        requests = np.empty((HINDSIGHT_LEVELS.size, cores.size))
        for h in np.unique(hour):
            in_hour = hour == h
            requests[:, in_hour] = np.quantile(cores[in_hour], HINDSIGHT_LEVELS)[:, None]
        slack.append(np.maximum(requests - cores, 0).sum(axis=1))
        requested.append(requests.sum(axis=1))
        violations.append((cores > requests).sum(axis=1).astype(float))
    _, share, rate = _best_levels(slack, requested, violations, evaluation.height, violation_bar)
    return {"cpu_slack": share, "cpu_violation_rate": rate}

"""Rightsizing benchmark: this recommender vs KRR `simple`, the VPA recommender and the current
provisioning, side by side in one run, on the Bitbrains VMs (research-only data, read in place).

Run from the repository root:

    nice .venv/bin/python benchmarks/rightsizing_bench.py

Each VM is one container. Cores used = cpu_usage_mhz / (cpu_capacity_mhz / cpu_cores); memory =
mem_usage_kb x 1024. Split "weeks 1-3 / week 4": train on days 0-21 of the trace, evaluate
on days 21-28 (the trace's partial fifth week is not used). A second split (train weeks 1-2,
evaluate week 3) is reported as a robustness check, because the recommender is also measured on
other weeks. Current spec = provisioned capacity at the end of training (request = limit).

Metrics per method over the evaluation week (every 5-min sample of every VM):
- CPU relative slack: sum(max(request - usage, 0)) / sum(request);
- CPU violation rate: share of samples with usage above the CPU request;
- memory relative slack, likewise with the memory request;
- memory OOM proxy: share of VMs with any sample above the memory limit;
- requested core-hours and GiB-hours over the evaluation week; $ per month from the compute
  price book's default node class.

KRR and VPA are re-implemented here from their published algorithms (constants cited inline).
The tables are printed as Markdown and every number goes to `benchmarks/results/rightsizing.json`;
`benchmarks/results/rightsizing.md` holds the printed tables with their reading.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from capacity_pipelines.rightsizing import recommend_usage  # noqa: E402
from capacity_pipelines.rightsizing.prices import GIB, load_compute_prices  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "bitbrains_rnd_6vms_2013-07.csv.gz"
RESULTS = REPO / "benchmarks" / "results"
DAY_S = 86_400

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


@dataclass(frozen=True)
class Sizing:
    """Per-VM requests and limits of one method (cores / bytes; CPU limit unused here)."""

    cpu_request: dict[int, float]
    memory_request: dict[int, float]
    memory_limit: dict[int, float]
    note: str = ""


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


ALIBABA = REPO.parent / "shared" / "data" / "alibaba_v2018_machine_usage_3machines.csv"
ALIBABA_CORES = 96  # cluster-trace-v2018 machines: 96 cores (trace documentation)
ALIBABA_NOMINAL_MEMORY = 100 * GIB  # memory is published as % only: 100 % = 100 GiB, nominal
ALIBABA_EPOCH_S = 1_514_764_800  # 2018-01-01: the trace's timestamps are offsets from its start


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


# -- baselines ---------------------------------------------------------------------------------


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


def forecast_aware(train: pl.DataFrame, requests: Sizing) -> Sizing:
    """This project's recommender through its public file-contract function."""
    usage = train.select(
        pl.col("vm_id").cast(pl.String).alias("container_id"),
        pl.from_epoch(pl.col("timestamp_s"), time_unit="s").alias("ts"),
        pl.col("cores").alias("cpu_cores"),
        pl.col("memory").alias("memory_bytes"),
    )
    spec = pl.DataFrame(
        {
            "container_id": [str(v) for v in requests.cpu_request],
            "cpu_request": list(requests.cpu_request.values()),
            "cpu_limit": list(requests.cpu_request.values()),
            "memory_request": list(requests.memory_request.values()),
            "memory_limit": list(requests.memory_limit.values()),
        }
    )
    frame = recommend_usage(usage, spec)
    cpu = {int(r["container_id"]): r["cpu_request"] for r in frame.iter_rows(named=True)}
    memory = {int(r["container_id"]): r["memory_request"] for r in frame.iter_rows(named=True)}
    limit = {int(r["container_id"]): r["memory_limit"] for r in frame.iter_rows(named=True)}
    forecast = int(frame["forecast_used"].sum())
    return Sizing(cpu, memory, limit, f"forecast used for {forecast}/{frame.height} VMs")


# Candidate per-VM quantiles for the hindsight search: 12^6 ~ 3 M combinations for 6 VMs.
HINDSIGHT_LEVELS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.97, 0.98, 0.99, 1.0)


def hindsight(evaluation: pl.DataFrame, violation: float) -> Sizing:
    """Reference, not a method: the constant per-VM CPU requests that, knowing the evaluation
    week, give the lowest pooled CPU slack with a pooled violation rate <= `violation`
    (exhaustive search over each VM's evaluation-week quantiles at `HINDSIGHT_LEVELS`).

    It bounds what any constant request can reach on this data: if its slack is above the goal's
    bar, no recommender that sets one request per container can meet the goal here.
    """
    groups = sorted(evaluation.group_by("vm_id"), key=lambda g: g[0][0])
    vms = [key[0] for key, _ in groups]
    requests, slack, total, violations = [], [], [], []
    for _, group in groups:
        cores = group["cores"].to_numpy()
        levels = np.quantile(cores, HINDSIGHT_LEVELS)
        requests.append(levels)
        slack.append(np.array([np.maximum(r - cores, 0).sum() for r in levels]))
        total.append(levels * cores.size)
        violations.append(np.array([(cores > r).sum() for r in levels], dtype=float))
    samples = evaluation.height
    shape = [len(HINDSIGHT_LEVELS)] * len(vms)

    def pooled(parts: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(shape)
        for axis, part in enumerate(parts):
            view = [1] * len(vms)
            view[axis] = -1
            out = out + part.reshape(view)
        return out

    ratio = pooled(slack) / np.maximum(pooled(total), 1e-12)
    ratio[pooled(violations) / samples > violation] = np.inf
    best = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
    cpu = {vm: float(requests[i][best[i]]) for i, vm in enumerate(vms)}
    memory = {vm: float(g["memory"].max()) for vm, (_, g) in zip(vms, groups, strict=True)}
    return Sizing(
        cpu,
        memory,
        memory,
        "hindsight: eval-week quantiles "
        + ", ".join(f"{vm}: q{HINDSIGHT_LEVELS[best[i]]:g}" for i, vm in enumerate(vms)),
    )


def hindsight_hourly(evaluation: pl.DataFrame, violation: float) -> dict:
    """Reference, not a method: CPU requests that change every hour of the day (as in-place pod
    resize would allow), each set, knowing the evaluation window, to one per-VM quantile of that
    hour's usage; the lowest pooled slack with a pooled violation rate <= `violation`.

    It bounds what even a perfect hour-of-day request schedule could reach on this data.
    """
    groups = sorted(evaluation.group_by("vm_id"), key=lambda g: g[0][0])
    slack, total, violations = [], [], []
    for _, group in groups:
        cores = group["cores"].to_numpy()
        hour = (group["timestamp_s"].to_numpy() % DAY_S) // 3_600
        requests = np.empty((len(HINDSIGHT_LEVELS), cores.size))
        for h in np.unique(hour):
            in_hour = hour == h
            requests[:, in_hour] = np.quantile(cores[in_hour], HINDSIGHT_LEVELS)[:, None]
        slack.append(np.maximum(requests - cores, 0).sum(axis=1))
        total.append(requests.sum(axis=1))
        violations.append((cores > requests).sum(axis=1).astype(float))
    shape = [len(HINDSIGHT_LEVELS)] * len(groups)

    def pooled(parts: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(shape)
        for axis, part in enumerate(parts):
            view = [1] * len(groups)
            view[axis] = -1
            out = out + part.reshape(view)
        return out

    ratio = pooled(slack) / np.maximum(pooled(total), 1e-12)
    rate = pooled(violations) / evaluation.height
    ratio[rate > violation] = np.inf
    best = np.unravel_index(int(np.argmin(ratio)), ratio.shape)
    return {"cpu_slack": float(ratio[best]), "cpu_violation_rate": float(rate[best])}


# -- scoring -----------------------------------------------------------------------------------


def score(sizing: Sizing, evaluation: pl.DataFrame, usd_per_month: Callable, hours: float) -> dict:
    """The issue's metrics for one method over an evaluation window of `hours`."""
    cpu_slack = cpu_total = memory_slack = memory_total = 0.0
    violations = samples = oom = 0
    core_hours = gib_hours = cores_sum = memory_sum = 0.0
    vms = 0
    for (vm,), group in evaluation.group_by("vm_id"):
        cores, memory = group["cores"].to_numpy(), group["memory"].to_numpy()
        cpu_request, memory_request = sizing.cpu_request[vm], sizing.memory_request[vm]
        cpu_slack += float(np.maximum(cpu_request - cores, 0).sum())
        cpu_total += cpu_request * cores.size
        memory_slack += float(np.maximum(memory_request - memory, 0).sum())
        memory_total += memory_request * memory.size
        violations += int((cores > cpu_request).sum())
        samples += cores.size
        oom += int(bool((memory > sizing.memory_limit[vm]).any()))
        core_hours += cpu_request * hours
        gib_hours += memory_request / GIB * hours
        cores_sum += cpu_request
        memory_sum += memory_request
        vms += 1
    return {
        "cpu_slack": cpu_slack / cpu_total,
        "cpu_violation_rate": violations / samples,
        "memory_slack": memory_slack / memory_total,
        "memory_oom_proxy": oom / vms,
        "core_hours": core_hours,
        "gib_hours": gib_hours,
        "usd_per_month": usd_per_month(cores_sum, memory_sum),
    }


def run_split(
    frame: pl.DataFrame, title: str, train_end_s: int, eval_end_s: int, usd_per_month: Callable
) -> dict:
    """Train on `t < train_end_s`, evaluate on `train_end_s <= t < eval_end_s`."""
    train = frame.filter(pl.col("t") < train_end_s)
    evaluation = frame.filter((pl.col("t") >= train_end_s) & (pl.col("t") < eval_end_s))
    hours = (eval_end_s - train_end_s) / 3_600
    current = current_spec(train)
    methods: dict[str, Sizing] = {"current provisioning": current}
    timings = {}
    for name, build in (
        ("KRR simple", lambda: krr_simple(train)),
        ("VPA recommender", lambda: vpa_recommender(train, current)),
        ("capacity_pipelines", lambda: forecast_aware(train, current)),
    ):
        began = time.perf_counter()
        methods[name] = build()
        timings[name] = time.perf_counter() - began
    scores = {name: score(s, evaluation, usd_per_month, hours) for name, s in methods.items()}
    best_violation = min(
        scores["KRR simple"]["cpu_violation_rate"], scores["VPA recommender"]["cpu_violation_rate"]
    )
    reference = hindsight(evaluation, best_violation)
    scores["hindsight optimum (knows the evaluation window)"] = score(
        reference, evaluation, usd_per_month, hours
    )
    hourly = hindsight_hourly(evaluation, best_violation)
    per_vm = {
        name: {
            str(vm): {
                "cpu_request": s.cpu_request[vm],
                "memory_request_gib": s.memory_request[vm] / GIB,
            }
            for vm in sorted(s.cpu_request)
        }
        for name, s in methods.items()
    }
    return {
        "title": title,
        "scores": scores,
        "per_vm": per_vm,
        "seconds": timings,
        "hindsight_hourly": hourly,
        "notes": {
            name: s.note for name, s in [*methods.items(), ("hindsight", reference)] if s.note
        },
    }


def goal(scores: dict) -> dict:
    """The issue's goal: CPU slack <= 0.8 x min(KRR, VPA), violations and OOMs no worse than the
    better of the two."""
    krr, vpa, ours = scores["KRR simple"], scores["VPA recommender"], scores["capacity_pipelines"]
    slack_bar = 0.8 * min(krr["cpu_slack"], vpa["cpu_slack"])
    violation_bar = min(krr["cpu_violation_rate"], vpa["cpu_violation_rate"])
    oom_bar = min(krr["memory_oom_proxy"], vpa["memory_oom_proxy"])
    return {
        "cpu_slack_bar": slack_bar,
        "cpu_slack_met": ours["cpu_slack"] <= slack_bar,
        "cpu_violation_bar": violation_bar,
        "cpu_violation_met": ours["cpu_violation_rate"] <= violation_bar,
        "memory_oom_bar": oom_bar,
        "memory_oom_met": ours["memory_oom_proxy"] <= oom_bar,
    }


def markdown(split: dict) -> str:
    """One split's table and goal lines."""
    lines = [
        f"### {split['title']}",
        "",
        "| method | CPU slack | CPU violation rate | memory slack | memory OOM proxy "
        "| core-hours | GiB-hours | $ / month |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in split["scores"].items():
        lines.append(
            f"| {name} | {s['cpu_slack']:.3f} | {s['cpu_violation_rate']:.4f} "
            f"| {s['memory_slack']:.3f} | {s['memory_oom_proxy']:.3f} | {s['core_hours']:,.1f} "
            f"| {s['gib_hours']:,.1f} | {s['usd_per_month']:,.2f} |"
        )
    g = split["goal"]
    ours = split["scores"]["capacity_pipelines"]
    lines += [
        "",
        f"- CPU slack {ours['cpu_slack']:.3f} vs bar 0.8 x min(KRR, VPA) = "
        f"{g['cpu_slack_bar']:.3f}: {'met' if g['cpu_slack_met'] else 'NOT met'}",
        f"- CPU violation rate {ours['cpu_violation_rate']:.4f} vs bar "
        f"{g['cpu_violation_bar']:.4f}: {'met' if g['cpu_violation_met'] else 'NOT met'}",
        f"- memory OOM proxy {ours['memory_oom_proxy']:.3f} vs bar {g['memory_oom_bar']:.3f}: "
        f"{'met' if g['memory_oom_met'] else 'NOT met'}",
        f"- reference: an hour-of-day request schedule chosen knowing the evaluation window "
        f"reaches CPU slack {split['hindsight_hourly']['cpu_slack']:.3f} at violation rate "
        f"{split['hindsight_hourly']['cpu_violation_rate']:.4f}",
        "",
        "Per-VM CPU request (cores) / memory request (GiB):",
        "",
        "| VM | " + " | ".join(split["per_vm"]) + " |",
        "|---|" + "---:|" * len(split["per_vm"]),
    ]
    vms = next(iter(split["per_vm"].values()))
    for vm in vms:
        cells = [
            f"{split['per_vm'][m][vm]['cpu_request']:.3f} / "
            f"{split['per_vm'][m][vm]['memory_request_gib']:.2f}"
            for m in split["per_vm"]
        ]
        lines.append(f"| {vm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    """Run both splits, print the tables, write the results files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULTS / "rightsizing.json")
    args = parser.parse_args()
    if not DATA.exists():
        print(
            f"{DATA} is absent: the Bitbrains data is research-only and lives beside the "
            "repository",
            file=sys.stderr,
        )
        return 2
    prices = load_compute_prices()
    price = prices.price()

    def usd_per_month(cores: float, memory: float) -> float:
        return prices.monthly_usd(cores, memory, price)

    week = 7 * DAY_S
    bitbrains = load_bitbrains()
    runs = [
        (bitbrains, "Bitbrains: train weeks 1-3, evaluate week 4", 3 * week, 4 * week),
        (bitbrains, "Bitbrains: train weeks 1-2, evaluate week 3", 2 * week, 3 * week),
    ]
    if ALIBABA.exists():
        runs.append(
            (
                load_alibaba(),
                "Alibaba 2018 machines: train days 1-6, evaluate days 7-8",
                6 * DAY_S,
                8 * DAY_S,
            )
        )
    splits = []
    for frame, title, train_end, eval_end in runs:
        split = run_split(frame, title, train_end, eval_end, usd_per_month)
        split["goal"] = goal(split["scores"])
        splits.append(split)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    text = "\n\n".join(markdown(s) for s in splits)
    print(text)
    payload = {"commit": commit, "price_id": price.price_id, "splits": splits}
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nprice {price.price_id}; commit {commit}; json {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

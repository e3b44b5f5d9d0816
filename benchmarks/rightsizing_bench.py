"""Rightsizing benchmark: this recommender's risk profiles, per-container choice and hourly
schedule vs KRR `simple`, the VPA recommender and current provisioning, side by side in one run,
on the Bitbrains VMs and the Alibaba 2018 machines (research-only data, read in place).

Run from the repository root:

    nice .venv/bin/python benchmarks/rightsizing_bench.py

Each VM / machine is one container (loaders and baselines: `rightsizing_baselines.py`). Splits:
Bitbrains train weeks 1-3 / evaluate week 4 and train weeks 1-2 / evaluate week 3; Alibaba
train days 1-6 / evaluate days 7-8. Current spec = provisioned capacity at the end of training.

Metrics per method over the evaluation window (every sample of every VM):
- CPU slack: sum(max(request - usage, 0)) / sum(request); idle cores: the mean over time of
  the cores requested and not used, summed over VMs; CPU violation rate: share of samples above
  the request;
- memory slack, likewise; memory OOM proxy: share of VMs with any sample above the memory
  limit; memory violation rate: share of samples above it;
- requested core-hours and GiB-hours; $ per month from the compute price book's default class.

Methods: KRR, VPA, current provisioning; `capacity_pipelines (<profile>)` for each risk profile
(constant requests, default settings); `... schedule` (the same with `--schedule`); the uniform
percentiles (the balanced profile with one candidate: no choice); a sweep of violation targets
(the choice's curve); two hindsight references that know the evaluation window. Curves go to
`benchmarks/out/rightsizing_<split>.png` (not kept in the repository: they plot research-only
data), every number to `results/rightsizing.json`,
the tables to stdout (`results/rightsizing.md` holds them with their reading).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from rightsizing_baselines import (  # noqa: E402
    ALIBABA,
    DATA,
    DAY_S,
    GIB,
    Sizing,
    current_spec,
    hindsight,
    hindsight_hourly,
    krr_simple,
    load_alibaba,
    load_bitbrains,
    vpa_recommender,
)

from capacity_pipelines.rightsizing import ForecastAwareSettings, ForecastAwareStrategy  # noqa: E402
from capacity_pipelines.rightsizing.candidates import WIDE_CANDIDATES  # noqa: E402
from capacity_pipelines.rightsizing.prices import load_compute_prices  # noqa: E402
from capacity_pipelines.rightsizing.profiles import PROFILES, risk_profile  # noqa: E402
from capacity_pipelines.rightsizing.recommend import rightsize_usage  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
OURS = "capacity_pipelines"
BALANCED = f"{OURS} (balanced)"
HINDSIGHT = "hindsight optimum (knows the evaluation window)"
# The uniform percentiles: the balanced profile with a single candidate (no choice).
UNIFORM = ("p80/3d", "p90/3d", "p95/3d", "p98/3d", "p99/3d")
# Violation targets of the wide choice's curve (the wide candidate set, custom profiles
# around the balanced one).
SWEEP_TARGETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12)
# Rolling evaluation on Bitbrains: train up to each of these days, evaluate the next 7.
ROLLING_DAYS = (14, 16, 18, 20, 22)


def ours(train: pl.DataFrame, current: Sizing, settings: ForecastAwareSettings,
         schedule: bool = False) -> Sizing:  # fmt: skip
    """This project's recommender through its file-contract function."""
    usage = train.select(
        pl.col("vm_id").cast(pl.String).alias("container_id"),
        pl.from_epoch(pl.col("timestamp_s"), time_unit="s").alias("ts"),
        pl.col("cores").alias("cpu_cores"),
        pl.col("memory").alias("memory_bytes"),
    )
    spec = pl.DataFrame(
        {
            "container_id": [str(v) for v in current.cpu_request],
            "cpu_request": list(current.cpu_request.values()),
            "cpu_limit": list(current.cpu_request.values()),
            "memory_request": list(current.memory_request.values()),
            "memory_limit": list(current.memory_limit.values()),
        }
    )
    result = rightsize_usage(
        usage, spec, strategy=ForecastAwareStrategy(settings), schedule=schedule
    )
    rows = list(result.recommendations.iter_rows(named=True))
    hourly = None
    if result.schedule is not None:
        ordered = result.schedule.sort("container_id", "hour_utc")
        hourly = {
            int(key[0]): group["cpu_request"].to_list()
            for key, group in ordered.group_by("container_id", maintain_order=True)
        }
    forecast = sum(bool(r["forecast_used"]) for r in rows)
    return Sizing(
        {int(r["container_id"]): r["cpu_request"] for r in rows},
        {int(r["container_id"]): r["memory_request"] for r in rows},
        {int(r["container_id"]): r["memory_limit"] for r in rows},
        f"forecast used for {forecast}/{len(rows)} VMs",
        hourly,
        {int(r["container_id"]): r["recommender"] for r in rows},
    )


def score(sizing: Sizing, evaluation: pl.DataFrame, usd_per_month: Callable,
          hours: float) -> dict:  # fmt: skip
    """The issue's metrics for one method over an evaluation window of `hours`, with per-VM
    figures under `per_vm`."""
    cpu_slack = cpu_total = memory_slack = memory_total = idle = 0.0
    violations = memory_violations = samples = oom = vms = 0
    cores_sum = memory_sum = 0.0
    per_vm = {}
    for (vm,), group in sorted(evaluation.group_by("vm_id"), key=lambda g: g[0][0]):
        cores, memory = group["cores"].to_numpy(), group["memory"].to_numpy()
        if sizing.cpu_hourly is not None and vm in sizing.cpu_hourly:
            hour = (group["timestamp_s"].to_numpy() % DAY_S) // 3_600
            cpu_request = np.asarray(sizing.cpu_hourly[vm])[hour.astype(int)]
        else:
            cpu_request = np.full(cores.size, sizing.cpu_request[vm])
        memory_request, memory_limit = sizing.memory_request[vm], sizing.memory_limit[vm]
        vm_slack = float(np.maximum(cpu_request - cores, 0).sum())
        vm_violations = int((cores > cpu_request).sum())
        cpu_slack += vm_slack
        cpu_total += float(cpu_request.sum())
        idle += vm_slack / cores.size
        memory_slack += float(np.maximum(memory_request - memory, 0).sum())
        memory_total += memory_request * memory.size
        violations += vm_violations
        memory_violations += int((memory > memory_limit).sum())
        samples += cores.size
        oom += int(bool((memory > memory_limit).any()))
        cores_sum += float(cpu_request.mean())
        memory_sum += memory_request
        vms += 1
        per_vm[str(vm)] = {
            "cpu_request": float(cpu_request.mean()),
            "memory_request_gib": memory_request / GIB,
            "cpu_violation_rate": vm_violations / cores.size,
            "cpu_slack": vm_slack / float(cpu_request.sum()),
            "oom": bool((memory > memory_limit).any()),
            "recommender": sizing.recommender.get(vm),
        }
    return {
        "cpu_slack": cpu_slack / cpu_total,
        "idle_cores": idle,
        "cpu_violation_rate": violations / samples,
        "memory_slack": memory_slack / memory_total,
        "memory_oom_proxy": oom / vms,
        "memory_violation_rate": memory_violations / samples,
        "core_hours": cores_sum * hours,
        "gib_hours": memory_sum / GIB * hours,
        "usd_per_month": usd_per_month(cores_sum, memory_sum),
        "per_vm": per_vm,
    }


def profile_settings(name: str, **changes) -> ForecastAwareSettings:
    """Default settings under the named profile, with `changes` to the settings."""
    return ForecastAwareSettings(profile=name, **changes)


def wide_settings(target: float) -> ForecastAwareSettings:
    """The issue's wide candidate set chosen per container under a fleet violation target."""
    balanced = risk_profile("balanced")
    custom = dataclasses.replace(
        balanced, name=f"target {target:g}", cpu_violation_target=target,
        cpu_container_violation_cap=max(balanced.cpu_container_violation_cap, 3 * target),
    )  # fmt: skip
    return ForecastAwareSettings(profile=custom, candidates=WIDE_CANDIDATES)


def rolling(frame: pl.DataFrame, usd_per_month: Callable) -> dict:
    """Mean CPU slack and violation rate over weekly evaluations from several training ends:
    one week of 6 VMs is a noisy judge of small differences, five are less so."""
    methods: dict[str, Callable[[pl.DataFrame, Sizing], Sizing]] = {
        "KRR simple": lambda train, current: krr_simple(train),
        "VPA recommender": lambda train, current: vpa_recommender(train, current),
    }
    for candidate in ("p90/3d", "p95/3d", "p99/3d"):
        methods[f"uniform {candidate}"] = lambda train, current, c=candidate: ours(
            train, current, profile_settings("balanced", candidates=(c,))
        )
    for name in PROFILES:
        methods[f"{OURS} ({name})"] = lambda train, current, n=name: ours(
            train, current, profile_settings(n)
        )
    for target in (0.01, 0.03, 0.08):
        methods[f"wide choice, target {target:g}"] = lambda train, current, t=target: ours(
            train, current, wide_settings(t)
        )
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    for day in ROLLING_DAYS:
        train = frame.filter(pl.col("t") < day * DAY_S)
        evaluation = frame.filter(
            (pl.col("t") >= day * DAY_S) & (pl.col("t") < (day + 7) * DAY_S)
        )
        current = current_spec(train)
        for name, build in methods.items():
            s = score(build(train, current), evaluation, usd_per_month, 7 * 24)
            results[name].append((s["cpu_slack"], s["cpu_violation_rate"]))
    return {
        name: {
            "cpu_slack": float(np.mean([r[0] for r in rows])),
            "cpu_violation_rate": float(np.mean([r[1] for r in rows])),
            "per_week": rows,
        }
        for name, rows in results.items()
    }


def run_split(frame: pl.DataFrame, title: str, train_end_s: int, eval_end_s: int,
              usd_per_month: Callable) -> dict:  # fmt: skip
    """Train on `t < train_end_s`, evaluate on `train_end_s <= t < eval_end_s`."""
    train = frame.filter(pl.col("t") < train_end_s)
    evaluation = frame.filter((pl.col("t") >= train_end_s) & (pl.col("t") < eval_end_s))
    hours = (eval_end_s - train_end_s) / 3_600
    current = current_spec(train)
    builds: dict[str, Callable[[], Sizing]] = {
        "current provisioning": lambda: current,
        "KRR simple": lambda: krr_simple(train),
        "VPA recommender": lambda: vpa_recommender(train, current),
    }
    for name in PROFILES:
        builds[f"{OURS} ({name})"] = lambda n=name: ours(train, current, profile_settings(n))
        builds[f"{OURS} ({name}) schedule"] = lambda n=name: ours(
            train, current, profile_settings(n), schedule=True
        )
    for candidate in UNIFORM:
        builds[f"uniform {candidate}"] = lambda c=candidate: ours(
            train, current, profile_settings("balanced", candidates=(c,))
        )
    for target in SWEEP_TARGETS:
        builds[f"wide choice, target {target:g}"] = lambda t=target: ours(
            train, current, wide_settings(t)
        )
    methods, seconds = {}, {}
    for name, build in builds.items():
        began = time.perf_counter()
        methods[name] = build()
        seconds[name] = time.perf_counter() - began
    scores = {name: score(s, evaluation, usd_per_month, hours) for name, s in methods.items()}
    # the goal's violation bar is the VPA's rate: the references are computed at that rate
    bar = scores["VPA recommender"]["cpu_violation_rate"]
    reference = hindsight(evaluation, bar)
    scores[HINDSIGHT] = score(reference, evaluation, usd_per_month, hours)
    choices = {
        name: dict(Counter(methods[f"{OURS} ({name})"].recommender.values()).most_common())
        for name in PROFILES
    }
    return {
        "title": title,
        "scores": scores,
        "seconds": seconds,
        "choices": choices,
        "hindsight_hourly": hindsight_hourly(evaluation, bar),
        "notes": {name: s.note for name, s in methods.items() if s.note}
        | {"hindsight": reference.note},
    }


def goal(scores: dict) -> dict:
    """Issue 16's goal for the balanced profile (constant requests): CPU slack <= 0.8 x the
    lower of KRR's and VPA's, CPU violation rate <= VPA's, OOM proxy <= KRR's, GiB-hours <=
    KRR's; and the schedule's slack and violation rate next to the constant's."""
    krr, vpa, ours_ = scores["KRR simple"], scores["VPA recommender"], scores[BALANCED]
    slack_bar = 0.8 * min(krr["cpu_slack"], vpa["cpu_slack"])
    return {
        "cpu_slack_bar": slack_bar,
        "cpu_slack_met": ours_["cpu_slack"] <= slack_bar,
        "cpu_violation_bar": vpa["cpu_violation_rate"],
        "cpu_violation_met": ours_["cpu_violation_rate"] <= vpa["cpu_violation_rate"],
        "memory_oom_bar": krr["memory_oom_proxy"],
        "memory_oom_met": ours_["memory_oom_proxy"] <= krr["memory_oom_proxy"],
        "gib_hours_bar": krr["gib_hours"],
        "gib_hours_met": ours_["gib_hours"] <= krr["gib_hours"],
    }


def _met(flag: bool) -> str:
    return "met" if flag else "NOT met"


def markdown(split: dict) -> str:
    """One split's tables, goal lines, choice counts and per-VM table."""
    lines = [
        f"### {split['title']}",
        "",
        f"Curves: `benchmarks/out/rightsizing_{split['key']}.png` (drawn by the command).",
        "",
        "| method | CPU slack | idle cores | CPU violation rate | memory slack | OOM proxy "
        "| memory violation rate | core-hours | GiB-hours | $ / month |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in split["scores"].items():
        lines.append(
            f"| {name} | {s['cpu_slack']:.3f} | {s['idle_cores']:.2f} "
            f"| {s['cpu_violation_rate']:.4f} | {s['memory_slack']:.3f} "
            f"| {s['memory_oom_proxy']:.3f} | {s['memory_violation_rate']:.4f} "
            f"| {s['core_hours']:,.1f} | {s['gib_hours']:,.1f} | {s['usd_per_month']:,.2f} |"
        )
    g, ours_ = split["goal"], split["scores"][BALANCED]
    schedule = split["scores"][f"{BALANCED} schedule"]
    lines += [
        "",
        f"- balanced CPU slack {ours_['cpu_slack']:.3f} vs bar 0.8 x min(KRR, VPA) = "
        f"{g['cpu_slack_bar']:.3f}: {_met(g['cpu_slack_met'])}",
        f"- balanced CPU violation rate {ours_['cpu_violation_rate']:.4f} vs VPA's "
        f"{g['cpu_violation_bar']:.4f}: {_met(g['cpu_violation_met'])}",
        f"- balanced OOM proxy {ours_['memory_oom_proxy']:.3f} vs KRR's "
        f"{g['memory_oom_bar']:.3f}: {_met(g['memory_oom_met'])}",
        f"- balanced GiB-hours {ours_['gib_hours']:,.1f} vs KRR's {g['gib_hours_bar']:,.1f}: "
        f"{_met(g['gib_hours_met'])}",
        f"- balanced with `--schedule`: CPU slack {schedule['cpu_slack']:.3f} (constant "
        f"{ours_['cpu_slack']:.3f}), violation rate {schedule['cpu_violation_rate']:.4f} "
        f"(constant {ours_['cpu_violation_rate']:.4f})",
        f"- reference at VPA's violation rate: best constant requests knowing the window "
        f"{split['scores'][HINDSIGHT]['cpu_slack']:.3f}; best hour-of-day schedule knowing the "
        f"window {split['hindsight_hourly']['cpu_slack']:.3f} (at "
        f"{split['hindsight_hourly']['cpu_violation_rate']:.4f})",
        "",
        "Recommenders chosen per VM: "
        + "; ".join(
            f"{profile}: " + ", ".join(f"{name} x{count}" for name, count in counts.items())
            for profile, counts in split["choices"].items()
        ),
        "",
        "Per VM (evaluation window): CPU request cores / violation rate, memory GiB (OOM!):",
        "",
    ]
    shown = ["KRR simple", "VPA recommender", BALANCED, f"{BALANCED} schedule"]
    lines += ["| VM | balanced recommender | " + " | ".join(shown) + " |",
              "|---|---|" + "---:|" * len(shown)]  # fmt: skip
    for vm, row in split["scores"][BALANCED]["per_vm"].items():
        cells = []
        for method in shown:
            v = split["scores"][method]["per_vm"][vm]
            cells.append(
                f"{v['cpu_request']:.3f} / {v['cpu_violation_rate']:.3f}, "
                f"{v['memory_request_gib']:.2f}{' (OOM!)' if v['oom'] else ''}"
            )
        lines.append(f"| {vm} | {row['recommender']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(split: dict, path: Path) -> None:
    """CPU slack vs violation rate and GiB-hours vs OOM proxy, every method on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    scores = split["scores"]
    fig, (cpu, memory) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    try:
        uniform = sorted((scores[f"uniform {c}"] for c in UNIFORM),
                         key=lambda s: s["cpu_violation_rate"])  # fmt: skip
        cpu.plot([s["cpu_violation_rate"] for s in uniform], [s["cpu_slack"] for s in uniform],
                 "o--", color="#999", label="uniform percentile (no choice)")  # fmt: skip
        choice = sorted([scores[k] for k in scores if k.startswith("wide choice")],
                        key=lambda s: s["cpu_violation_rate"])  # fmt: skip
        cpu.plot([s["cpu_violation_rate"] for s in choice], [s["cpu_slack"] for s in choice],
                 ".-", color="#1f77b4", alpha=0.5, label="wide choice (targets)")  # fmt: skip
        for profile, marker in zip(PROFILES, "sD^", strict=True):
            for suffix, colour in (("", "#1f77b4"), (" schedule", "#2ca02c")):
                s = scores[f"{OURS} ({profile}){suffix}"]
                cpu.plot(s["cpu_violation_rate"], s["cpu_slack"], marker, color=colour, ms=8,
                         label=f"{profile}{suffix}")  # fmt: skip
        for name, colour in (("KRR simple", "#d62728"), ("VPA recommender", "#9467bd"),
                             (HINDSIGHT, "#000")):  # fmt: skip
            s = scores[name]
            cpu.plot(s["cpu_violation_rate"], s["cpu_slack"], "*", color=colour, ms=12,
                     label=name.split(" (")[0])  # fmt: skip
        cpu.set_xlabel("CPU violation rate (share of samples above the request)")
        cpu.set_ylabel("CPU slack (idle share of requested)")
        cpu.legend(fontsize=6.5)
        for name, s in scores.items():
            if name.startswith(("uniform", "wide choice", "current")) or name == HINDSIGHT:
                continue
            if "schedule" in name:
                continue
            memory.plot(s["memory_oom_proxy"], s["gib_hours"], "o")
            memory.annotate(name.replace(f"{OURS} ", ""), (s["memory_oom_proxy"], s["gib_hours"]),
                            fontsize=7)  # fmt: skip
        memory.set_xlabel("OOM proxy (share of VMs above their memory limit)")
        memory.set_title("memory (current provisioning off the chart)", fontsize=8)
        memory.set_ylabel("requested GiB-hours")
        fig.suptitle(split["title"], fontsize=10)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def main() -> int:
    """Run every split, print the tables, write the charts and the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=RESULTS / "rightsizing.json")
    parser.add_argument("--charts", type=Path, default=RESULTS.parent / "out")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"{DATA} is absent: the Bitbrains data is research-only and lives beside the "
              "repository", file=sys.stderr)  # fmt: skip
        return 2
    prices = load_compute_prices()
    price = prices.price()

    def usd_per_month(cores: float, memory: float) -> float:
        return prices.monthly_usd(cores, memory, price)

    week = 7 * DAY_S
    bitbrains = load_bitbrains()
    runs = [
        ("bitbrains_w4", bitbrains, "Bitbrains: train weeks 1-3, evaluate week 4", 3 * week,
         4 * week),
        ("bitbrains_w3", bitbrains, "Bitbrains: train weeks 1-2, evaluate week 3", 2 * week,
         3 * week),
    ]  # fmt: skip
    if ALIBABA.exists():
        runs.append(("alibaba", load_alibaba(),
                     "Alibaba 2018 machines: train days 1-6, evaluate days 7-8", 6 * DAY_S,
                     8 * DAY_S))  # fmt: skip
    splits = []
    args.charts.mkdir(parents=True, exist_ok=True)
    for key, frame, title, train_end, eval_end in runs:
        split = run_split(frame, title, train_end, eval_end, usd_per_month)
        split["key"] = key
        split["goal"] = goal(split["scores"])
        chart(split, args.charts / f"rightsizing_{key}.png")
        splits.append(split)
    began = time.perf_counter()
    rolled = rolling(bitbrains, usd_per_month)
    rolled_seconds = time.perf_counter() - began
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    print("\n\n".join(markdown(s) for s in splits))
    print(f"\n### Bitbrains, rolling: train up to day {', '.join(map(str, ROLLING_DAYS))}, "
          f"evaluate the next 7 days (mean of {len(ROLLING_DAYS)} weeks; {rolled_seconds:.0f} s)"
          "\n\n| method | CPU slack | CPU violation rate |\n|---|---:|---:|")  # fmt: skip
    for name, r in rolled.items():
        print(f"| {name} | {r['cpu_slack']:.3f} | {r['cpu_violation_rate']:.4f} |")
    payload = {"commit": commit, "price_id": price.price_id, "splits": splits,
               "rolling": rolled}  # fmt: skip
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nprice {price.price_id}; commit {commit}; json {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

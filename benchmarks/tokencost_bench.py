"""Token-cost benchmark: costing throughput and the accuracy of the prompt-caching estimate.

1. Throughput: validate + cost N synthetic usage rows (default 10 million) against the built-in
   price book, in memory (no file I/O), best and median of `--repeats` runs. The rows mix 11
   priced model names (aliases, dated snapshots, OTel provider spellings), one unknown model,
   both service tiers, cache reads/writes, a >200k context tier, and six months of timestamps
   that cross the o3 price change of 2025-06-10. Goal: >= 2 million rows/s on 2 cores.
2. Caching accuracy: on the Mooncake conversation trace (real prefix block ids), calibrate the
   reuse-by-prompt-length table on one half of the trace and predict the reusable tokens, and the
   $ saving of prompt caching, of the other half, where the measured reuse (hash_ids, 5-min TTL,
   cache state carried through the whole trace) is the truth. The first TTL of the trace is
   cold-cache warm-up and belongs to neither half. Both directions, plus a one-number baseline
   (global reuse share). The table shipped as `savings.DEFAULT_REUSE_BY_BUCKET` is the one
   calibrated on the first half, so the "first half -> second half" rows are its accuracy.
3. Memory (`--memory`): peak resident memory of the real `capacity token-cost` command on
   synthetic usage Parquet files of growing size (`--memory-rows`), as a multiple of the input
   file's size, with wall and CPU seconds. With `--compare REF` the same files are costed
   alternately by the code of git commit REF (extracted with `git archive` into a temporary
   folder, run with the same venv) and by this checkout: the side-by-side measure of batching.

Run (from the repository root):
    nice .venv/bin/python benchmarks/tokencost_bench.py
    nice .venv/bin/python benchmarks/tokencost_bench.py --memory [--compare REF]
Uses ../shared/data/mooncake_conversation_first15min.jsonl when present, else the 500-request
slice in tests/fixtures/tokens.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from capacity_pipelines.tokens.costing import cost_usage
from capacity_pipelines.tokens.prices import load_price_book
from capacity_pipelines.tokens.savings import (
    DEFAULT_CACHE_TTL,
    MIN_CACHEABLE_TOKENS,
    calibrate_reuse,
    estimated_prefix_reuse,
    measured_prefix_reuse,
    priced_saving,
    with_prompt_caching,
)
from capacity_pipelines.tokens.traces import read_usage
from capacity_pipelines.tokens.usage import validate_usage

REPO = Path(__file__).resolve().parent.parent
SHARED_MOONCAKE = REPO.parent / "shared" / "data" / "mooncake_conversation_first15min.jsonl"
FIXTURE_MOONCAKE = REPO / "tests" / "fixtures" / "tokens" / "mooncake_conversation_first500.jsonl"

# (provider label as exporters spell it, model label) of the synthetic fleet.
LABELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-2024-08-06"),
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1-mini-2025-04-14"),
    ("openai", "o3"),
    ("openai", "o4-mini"),
    ("anthropic", "claude-sonnet-4-20250514"),
    ("anthropic", "claude-opus-4-20250514"),
    ("anthropic", "claude-3-5-haiku-20241022"),
    ("gcp.gemini", "gemini-2.5-pro"),
    ("gemini", "gemini-2.5-flash"),
    ("acme", "in-house-7b"),  # not in the book: must come back unpriced
]
AGENTS = ["router", "planner", "researcher", "coder", "critic", "summariser", "memory", "judge"]


def synthetic_usage(rows: int, seed: int = 7) -> pl.DataFrame:
    """Per-step usage rows shaped like the warehouse's llm_token_usage table."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(LABELS), rows)
    start = int(dt.datetime(2025, 4, 1, tzinfo=dt.UTC).timestamp() * 1e6)
    span = int(183 * 86_400 * 1e6)
    ts = np.sort(rng.integers(start, start + span, rows))
    requests = rng.integers(1, 20, rows)
    per_call = rng.lognormal(8.5, 1.2, rows).clip(1, 400_000)
    inp = (per_call * requests).astype(np.int64)
    cache_read = (inp * rng.beta(2, 3, rows)).astype(np.int64)
    cache_write = ((inp - cache_read) * rng.beta(1, 6, rows)).astype(np.int64)
    out = (rng.lognormal(5.5, 1.0, rows) * requests).astype(np.int64)
    providers = np.array([p for p, _ in LABELS])
    models = np.array([m for _, m in LABELS])
    return pl.DataFrame(
        {
            "ts": pl.Series(ts).cast(pl.Datetime("us", "UTC")),
            "provider": providers[label],
            "model": models[label],
            "agent": np.array(AGENTS)[rng.integers(0, len(AGENTS), rows)],
            "input_tokens": inp,
            "output_tokens": out,
            "cache_read_input_tokens": cache_read,
            "cache_write_input_tokens": cache_write,
            "service_tier": np.where(rng.random(rows) < 0.1, "batch", "standard"),
            "requests": requests.astype(np.float64),
        }
    )


def bench_throughput(rows: int, repeats: int) -> dict[str, float]:
    usage = synthetic_usage(rows)
    book = load_price_book()
    seconds, cpu_seconds = [], []
    load_before = os.getloadavg()[0]
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        costed = cost_usage(validate_usage(usage, "synthetic"), book)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
    assert costed.height == rows
    return {
        "rows": rows,
        "best_s": min(seconds),
        "median_s": statistics.median(seconds),
        "best_rows_per_s": rows / min(seconds),
        "median_rows_per_s": rows / statistics.median(seconds),
        "median_cpu_s": statistics.median(cpu_seconds),
        "load_avg_1m": load_before,
        "unpriced_share": float(costed["unpriced"].mean()),
        "cost_usd": float(costed["cost_usd"].sum()),
    }


def bench_caching(
    trace_path: Path,
) -> tuple[list[dict[str, object]], dict[str, dict[str, float]]]:
    """Calibrate on one half of the trace, evaluate on the other, for two price books."""
    tables: dict[str, dict[str, float]] = {}
    book = load_price_book()
    results = []
    base = read_usage(trace_path, provider="anthropic", model="claude-sonnet-4-20250514")
    measured = measured_prefix_reuse(base)  # truth: whole trace in order, cache carried over
    # The trace starts with an empty cache; after one TTL a request's hits depend only on
    # requests inside the trace, so the first TTL is warm-up, excluded from both halves.
    warm_from = base["ts"].min() + DEFAULT_CACHE_TTL
    mid = warm_from + (base["ts"].max() - warm_from) / 2
    warm = (base["ts"] >= warm_from).to_numpy()
    first = warm & (base["ts"] < mid).to_numpy()
    halves = {"first half": first, "second half": warm & ~first}
    for provider, model in (("anthropic", "claude-sonnet-4-20250514"), ("openai", "gpt-4o")):
        usage = validate_usage(
            base.with_columns(provider=pl.lit(provider), model=pl.lit(model)), "mooncake"
        )
        costed = cost_usage(usage, book)
        for calib_name, eval_name in (("first half", "second half"), ("second half", "first half")):
            calib, evaluate = halves[calib_name], halves[eval_name]
            table = calibrate_reuse(usage.filter(calib), measured.filter(calib))
            tables[calib_name] = table
            share = float(measured.filter(calib).sum() / usage.filter(calib)["input_tokens"].sum())
            ev_usage, ev_costed = usage.filter(evaluate), costed.filter(evaluate)
            truth = measured.filter(evaluate)
            estimates = {
                "bucket table": estimated_prefix_reuse(ev_usage, table),
                "global share": ev_usage["input_tokens"].cast(pl.Float64) * share,
            }

            def saving(reuse: pl.Series, usage=ev_usage, costed=ev_costed) -> float:
                what_if = with_prompt_caching(usage, reuse, MIN_CACHEABLE_TOKENS)
                return priced_saving(costed, what_if, book)

            true_saving = saving(truth)
            for method, est in estimates.items():
                est_saving = saving(est)
                results.append(
                    {
                        "model": model,
                        "calibrated_on": calib_name,
                        "evaluated_on": eval_name,
                        "method": method,
                        "requests": int(evaluate.sum()),
                        "true_reused_tokens": float(truth.sum()),
                        "est_reused_tokens": float(est.sum()),
                        "reuse_error": float(est.sum() / truth.sum() - 1),
                        "true_saving_usd": true_saving,
                        "est_saving_usd": est_saving,
                        "saving_abs_error_usd": est_saving - true_saving,
                        "per_request_mae_tokens": float((est - truth).abs().mean()),
                    }
                )
    return results, tables


# Runs a command and writes its peak resident memory (KiB) and CPU seconds to argv[1]. The
# launcher sits between this script and the command because Linux carries a parent's RSS
# high-water mark into the child's ru_maxrss across fork and exec: measured from this process,
# which has just generated the input, the command would inherit its peak.
PEAK_RSS_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure_token_cost(tree: Path, usage: Path, out: Path) -> dict[str, float]:
    """Peak RSS (MiB), wall and CPU seconds of `capacity token-cost` run from `tree`."""
    with tempfile.TemporaryDirectory(prefix="tokencost_peak_") as folder:
        report = Path(folder) / "peak"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [sys.executable, "-m", "capacity_pipelines.cli", "token-cost",
                   "--usage", str(usage), "--out", str(out)]  # fmt: skip
        began = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_LAUNCHER, str(report), *command],
            cwd=tree, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - began
        if proc.returncode != 0:
            sys.exit(f"token-cost failed in {tree}: {proc.stderr[-2000:]}")
        peak_kib, cpu_s = report.read_text().split()
    return {"peak_mib": int(peak_kib) / 1024, "wall_s": wall, "cpu_s": float(cpu_s)}


def bench_memory(sizes: list[int], ref: str | None) -> list[dict[str, object]]:
    """Each size: this checkout (and REF, alternately) on the same synthetic Parquet file."""
    results = []
    with tempfile.TemporaryDirectory(prefix="tokencost_memory_") as folder:
        work = Path(folder)
        trees = {"this checkout": REPO}
        if ref:
            trees = {ref: work / "ref", **trees}
            trees[ref].mkdir()
            archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True,
                                     check=True).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(trees[ref])], input=archive, check=True)
        for rows in sizes:
            usage = work / f"usage_{rows}.parquet"
            synthetic_usage(rows).write_parquet(usage)
            size_mib = usage.stat().st_size / 2**20
            for code, tree in trees.items():
                measured = measure_token_cost(tree, usage, work / "costed.parquet")
                results.append({"code": code, "rows": rows, "file_mib": size_mib, **measured})
    return results


def print_memory(results: list[dict[str, object]]) -> None:
    print("\ncapacity token-cost, peak RSS vs input size")
    print("| code | rows | input Parquet MiB | peak RSS MiB | peak / input | wall s | CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['code']} | {r['rows']:,} | {r['file_mib']:.1f} | {r['peak_mib']:,.0f} |"
            f" {r['peak_mib'] / r['file_mib']:.1f}x | {r['wall_s']:.1f} | {r['cpu_s']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trace", type=Path, default=None)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--memory", action="store_true", help="only the peak-memory section")
    parser.add_argument("--memory-rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--compare", metavar="REF", help="git commit to measure side by side")
    args = parser.parse_args()
    if args.memory:
        print(f"polars {pl.__version__}, threads {pl.thread_pool_size()}, cpus {os.cpu_count()},"
              f" 1-min load avg before {os.getloadavg()[0]:.1f}")  # fmt: skip
        print_memory(bench_memory(args.memory_rows, args.compare))
        return
    trace = args.trace or (SHARED_MOONCAKE if SHARED_MOONCAKE.is_file() else FIXTURE_MOONCAKE)

    print(f"polars {pl.__version__}, threads {pl.thread_pool_size()}, cpus {os.cpu_count()}")
    if not args.skip_throughput:
        print_throughput(bench_throughput(args.rows, args.repeats))
    print_caching(trace)


def print_throughput(t: dict[str, float]) -> None:
    print(
        "\n| rows | best wall s | median wall s | best rows/s | median rows/s |"
        " median CPU s (all threads) | 1-min load avg before | unpriced share |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {t['rows']:,} | {t['best_s']:.2f} | {t['median_s']:.2f} | "
        f"{t['best_rows_per_s']:,.0f} | {t['median_rows_per_s']:,.0f} | "
        f"{t['median_cpu_s']:.2f} | {t['load_avg_1m']:.1f} | {t['unpriced_share']:.3f} |"
    )


def print_caching(trace: Path) -> None:
    print(f"\ncaching estimate, trace {trace.name}")
    print(
        "| model | calibrated on | evaluated on | method | requests | measured reused tokens |"
        " estimated | reuse error | measured saving $ | estimated saving $ | $ error |"
        " per-request MAE tokens |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    results, tables = bench_caching(trace)
    for r in results:
        print(
            f"| {r['model']} | {r['calibrated_on']} | {r['evaluated_on']} | {r['method']} |"
            f" {r['requests']} | {r['true_reused_tokens']:,.0f} | {r['est_reused_tokens']:,.0f} |"
            f" {r['reuse_error']:+.1%} | {r['true_saving_usd']:.2f} | {r['est_saving_usd']:.2f} |"
            f" {r['saving_abs_error_usd']:+.2f} | {r['per_request_mae_tokens']:,.0f} |"
        )
    for name, table in tables.items():
        print(
            f"\nreuse share by prompt length, calibrated on the {name}: "
            + ", ".join(f"{b} {v:.3f}" for b, v in table.items())
        )


if __name__ == "__main__":
    main()

"""Wall time of the README's main job (`capacity demo`) on the bundled demo fleet.

Runs the installed `capacity demo` in a fresh temporary CAPACITY_HOME (so the Parquet parse
cache and the warehouse start empty, as for a new user) and reports the wall time of the whole
asset graph and of each asset, as printed by the command. Install time is not included.

    .venv/bin/python benchmarks/demo_bench.py
    .venv/bin/python benchmarks/demo_bench.py --compare REF [--rounds 2]

`--compare` runs the demo alternately from a worktree of git commit REF and from this
checkout (same venv, fresh home each time) and reports both medians and their ratio: the
side-by-side measure of what a change costs the main job.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 600  # issue 2: under 10 minutes on 2 cores once packages are installed


def run_demo(tree: Path) -> tuple[float, subprocess.CompletedProcess]:
    """`capacity demo` with the package imported from `tree`, in a fresh home; wall seconds."""
    with tempfile.TemporaryDirectory(prefix="demo_bench_") as home:
        env = {**os.environ, "CAPACITY_HOME": home, "PYTHONPATH": str(tree)}
        env.pop("DAGSTER_HOME", None)
        began = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from capacity_pipelines.cli import main; "
             "sys.exit(main(['demo']))"],
            cwd=tree, env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"capacity demo failed in {tree} ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, proc


def compare(ref: str, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="demo_bench_ref_") as folder:
        tree = Path(folder) / "ref"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), ref], cwd=REPO,
                       check=True)  # fmt: skip
        try:
            walls: dict[str, list[float]] = {ref: [], "this checkout": []}
            for _ in range(rounds):
                walls[ref].append(run_demo(tree)[0])
                walls["this checkout"].append(run_demo(REPO)[0])
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO)
    print("| code | runs s | median s |")
    print("|---|---|---:|")
    for name, times in walls.items():
        runs = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {name} | {runs} | {statistics.median(times):.1f} |")
    ratio = statistics.median(walls["this checkout"]) / statistics.median(walls[ref])
    print(f"\nthis checkout / {ref} = {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="REF", help="git commit to run side by side")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, args.rounds)
        return
    wall, proc = run_demo(REPO)
    print("| step | result |")
    print("|---|---|")
    for line in proc.stdout.splitlines():
        step = re.match(r"\[(\d+)/(\d+)\] (\S+) \.\.\. (.*)", line)
        if step:
            print(f"| {step.group(3)} | {step.group(4)} |")
    print(f"| **whole graph** | **{wall:.1f} s** (goal < {GOAL_S} s) |")


if __name__ == "__main__":
    main()

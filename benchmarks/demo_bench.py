"""Wall time of the README's main job (`capacity demo`) on the bundled demo fleet.

Runs the installed `capacity demo` in a fresh temporary CAPACITY_HOME (so the Parquet parse
cache and the warehouse start empty, as for a new user) and reports the wall time of the whole
asset graph and of each asset, as printed by the command. Install time is not included.

    .venv/bin/python benchmarks/demo_bench.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 600  # issue 2: under 10 minutes on 2 cores once packages are installed


def main() -> None:
    capacity = Path(sys.executable).with_name("capacity")
    with tempfile.TemporaryDirectory(prefix="demo_bench_") as home:
        env = {**os.environ, "CAPACITY_HOME": home}
        env.pop("DAGSTER_HOME", None)
        began = time.perf_counter()
        proc = subprocess.run(
            [str(capacity), "demo"], cwd=REPO, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - began
    if proc.returncode != 0:
        sys.exit(f"capacity demo failed ({proc.returncode}): {proc.stderr[-2000:]}")
    print("| step | result |")
    print("|---|---|")
    for line in proc.stdout.splitlines():
        step = re.match(r"\[(\d+)/(\d+)\] (\S+) \.\.\. (.*)", line)
        if step:
            print(f"| {step.group(3)} | {step.group(4)} |")
    print(f"| **whole graph** | **{wall:.1f} s** (goal < {GOAL_S} s) |")


if __name__ == "__main__":
    main()

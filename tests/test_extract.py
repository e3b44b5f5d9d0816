"""Extraction into warehouse shape: workload rollup, gaps, the evaluation grid."""

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.extract import evaluation_grid, extract_table, pod_to_workload
from capacity_pipelines.ingest.sources import FileSource


@pytest.mark.parametrize(
    ("pod", "workload"),
    [
        ("planner-7d9f8b6c5-x2k4p", "planner"),
        ("api-gateway-5c7b9d8f4b-qwzt2", "api-gateway"),
        ("postgres-0", "postgres"),
        ("vector-store-12", "vector-store"),
        ("node-exporter-7xk2p", "node-exporter"),
        ("standalone", "standalone"),
    ],
)
def test_pod_to_workload(pod, workload):
    assert pod_to_workload(pod) == workload


def test_grid_is_step_aligned_and_half_open():
    grid = evaluation_grid(
        datetime(2026, 9, 28, 0, 1, tzinfo=UTC), datetime(2026, 9, 28, 1, tzinfo=UTC), 300
    )
    assert grid[0] == datetime(2026, 9, 28, 0, 5, tzinfo=UTC).timestamp()
    assert len(grid) == 11  # 00:05 .. 00:55; 01:00 belongs to the next window


def test_missing_samples_stay_gaps_and_pods_roll_up(tmp_path: Path):
    start = int(datetime(2026, 9, 28, tzinfo=UTC).timestamp())
    lines = ["# TYPE container_memory_working_set_bytes gauge"]
    for i in range(0, 48):
        if 12 <= i < 24:
            continue  # one hour missing: must stay missing, never become zeros
        for pod in ("coder-6b8d9c7f5d-x2k4p", "coder-6b8d9c7f5d-qwzt2"):
            lines.append(
                f'container_memory_working_set_bytes{{namespace="agents",pod="{pod}",'
                f'container="coder"}} {1e9 + i} {start + 300 * i}'
            )
    path = tmp_path / "gaps.om"
    path.write_text("\n".join(lines) + "\n# EOF\n")
    extracted = extract_table(
        FileSource([path]),
        load_catalog(),
        "container_usage",
        datetime(2026, 9, 28, tzinfo=UTC),
        datetime(2026, 9, 28, 4, tzinfo=UTC),
    )
    frame = extracted.frame
    assert set(frame["workload"]) == {"coder"}
    assert set(frame["cluster"]) == {"demo"}
    assert frame.filter(pl.col("memory_working_set_bytes") == 0).height == 0
    per_pod = frame.group_by("pod").len()["len"].to_list()
    # 48 grid points (00:00 .. 03:55); the 11 from 01:05 to 01:55 see no sample in their
    # closed window [t - 5m, t] (01:00 still sees the 00:55 sample)
    assert per_pod == [37, 37]
    assert frame["cpu_cores"].null_count() == frame.height  # never invented

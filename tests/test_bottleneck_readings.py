"""Impossible utilisation readings never become bottleneck labels (issue 24, item 4).

A capacity of 0 or null is missing data (a VM switched off, a container without a limit), and
a usage far above its capacity is a bad reading: both are counted with their reason and never
labelled. The other side of the same gate: a real reading at the limit still is a label, so
the gate cannot meet the outlook's goals by labelling fewer hours. Small frames built here;
nothing from ../shared/data.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from capacity_pipelines.bottlenecks.labels import label_windows
from capacity_pipelines.bottlenecks.signals import container_signals, service_windows
from capacity_pipelines.common.utilisation import (
    ABOVE_PLAUSIBLE,
    CONTAINER_CPU,
    CONTAINER_MEMORY,
    CONTAINER_READINGS,
    CPU_UTIL_MAX,
    MEMORY_UTIL_MAX,
    NO_CAPACITY,
    ZERO_CAPACITY,
    reading_problems,
    utilisation,
)
from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.coverage import utilisation_readings, write_data_quality_report
from capacity_pipelines.ingest.extract import ExtractedTable
from capacity_pipelines.ingest.quality import utilisation_verdict, verdicts

T0 = datetime(2026, 10, 1)
STEPS = [T0 + timedelta(minutes=5 * i) for i in range(1, 13)]  # one hour of 5-minute rows
GIB = 2.0**30
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bottleneck_bench.py"


def _usage(cpu_cores, cpu_limit, memory, memory_limit, workload="api") -> pl.DataFrame:
    """One container's hour of warehouse rows (container_usage shape)."""
    return pl.DataFrame(
        [
            {
                "cluster": "c",
                "namespace": "ns",
                "workload": workload,
                "workload_kind": "Deployment",
                "pod": f"{workload}-1",
                "container": "app",
                "ts": t,
                "cpu_cores": cpu_cores,
                "memory_working_set_bytes": memory,
                "cpu_throttled_ratio": 0.0,
                "cpu_request_cores": 0.5,
                "cpu_limit_cores": cpu_limit,
                "memory_request_bytes": 0.5 * GIB,
                "memory_limit_bytes": memory_limit,
                "restarts": 0.0,
                "oom_killed": 0.0,
            }
            for t in STEPS
        ],
        schema_overrides={"cpu_limit_cores": pl.Float64, "memory_limit_bytes": pl.Float64},
    )


def _labelled(usage: pl.DataFrame) -> dict:
    windows = service_windows(usage, pl.DataFrame(), pl.DataFrame())
    return label_windows(windows).row(0, named=True)


# --- the gate itself ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("used", "capacity", "bound", "expected", "problem"),
    [
        (0.9, 1.0, CPU_UTIL_MAX, 0.9, None),
        (1.1, 1.0, CPU_UTIL_MAX, 1.1, None),  # rate() jitter at the limit: still a reading
        (0.5, 0.0, CPU_UTIL_MAX, None, ZERO_CAPACITY),  # switched off: missing, not inf
        (0.0, 0.0, CPU_UTIL_MAX, None, ZERO_CAPACITY),  # not NaN either
        (0.5, None, CPU_UTIL_MAX, None, NO_CAPACITY),
        (64.0, 1.0, MEMORY_UTIL_MAX, None, ABOVE_PLAUSIBLE),
        (1.4, 1.0, MEMORY_UTIL_MAX, 1.4, None),
        (None, 1.0, MEMORY_UTIL_MAX, None, None),  # no usage: nothing to judge
    ],
)
def test_utilisation_is_a_ratio_or_null_never_nan_or_inf(used, capacity, bound, expected, problem):
    frame = pl.DataFrame(
        {"used": [used], "capacity": [capacity]},
        schema={"used": pl.Float64, "capacity": pl.Float64},
    )
    out = frame.select(
        utilisation("used", "capacity", bound).alias("util"),
        reading_problems("used", "capacity", bound).alias("problem"),
    ).row(0, named=True)
    if expected is None:
        assert out["util"] is None
    else:
        assert out["util"] == pytest.approx(expected)
    assert out["problem"] == problem


# --- the warehouse path -------------------------------------------------------------------
def test_a_zero_limit_is_missing_data_never_inf_and_never_a_label():
    # cAdvisor reports an unset limit as 0; before the gate, 0.3 cores / 0 = inf became "cpu"
    # and 0 bytes / 0 = NaN sat in the windows.
    signals = container_signals(_usage(0.3, 0.0, 0.2 * GIB, 0.0))
    row = signals.row(0, named=True)
    assert row["cpu_limit_util_max"] is None and row["memory_limit_util_max"] is None
    for value in signals.select(pl.selectors.float()).row(0):
        assert value is None or math.isfinite(value)
    assert _labelled(_usage(0.3, 0.0, 0.2 * GIB, 0.0))["bottleneck_class"] == "none"


def test_memory_at_64x_its_limit_is_not_a_memory_label():
    row = _labelled(_usage(0.1, 1.0, 64 * GIB, 1 * GIB))
    assert row["memory_limit_util_max"] is None
    assert row["bottleneck_class"] == "none"


def test_a_bad_reading_does_not_hide_a_real_one_in_the_same_service_hour():
    # Another container of the service is really at its memory limit: that one is the label.
    usage = pl.concat(
        [
            _usage(0.1, 1.0, 64 * GIB, 1 * GIB),
            _usage(0.1, 1.0, 0.97 * GIB, 1 * GIB).with_columns(
                pl.lit("sidecar").alias("container")
            ),
        ]
    )
    row = _labelled(usage)
    assert row["bottleneck_class"] == "memory"
    assert row["memory_container"] == "sidecar"
    assert row["memory_limit_util_max"] == pytest.approx(0.97)


@pytest.mark.parametrize("share", [0.90, 0.95, 1.0, 1.2])
def test_cpu_hours_at_90_percent_of_the_limit_or_more_are_labelled_cpu(share):
    """Label honesty: a gate that dropped real saturation would meet the outlook's goals by
    labelling fewer hours. CPU at >= 90 % of its limit, within what a reading can be, is `cpu`."""
    row = _labelled(_usage(share * 2.0, 2.0, 0.2 * GIB, 1 * GIB))
    assert row["bottleneck_class"] == "cpu", row["evidence"]
    assert row["cpu_limit_util_max"] == pytest.approx(share)


def test_the_extraction_check_counts_bad_readings_with_their_reason():
    table = load_catalog().table("container_usage")
    frame = pl.concat(
        [
            _usage(0.3, 0.0, 0.2 * GIB, 0.0, workload="off"),  # 12 rows, both limits 0
            _usage(0.1, 1.0, 64 * GIB, 1 * GIB, workload="bad"),  # 12 rows memory at 64x
            _usage(0.9, 1.0, 0.5 * GIB, 1 * GIB, workload="ok"),
            _usage(0.9, None, 0.5 * GIB, None, workload="unlimited"),  # no limits set: normal
        ]
    ).select(table.all_columns)
    extracted = ExtractedTable(table, T0, T0 + timedelta(hours=1), frame, 12, "test")
    verdict = utilisation_verdict(extracted)
    assert verdict.name in {v.name for v in verdicts(extracted, 300)}
    assert not verdict.passed and verdict.severity == "warn"
    assert verdict.metadata["cpu_zero_capacity"] == 12
    assert verdict.metadata["memory_zero_capacity"] == 12
    assert verdict.metadata["memory_above_plausible"] == 12
    assert verdict.metadata["cpu_no_capacity"] == 12
    assert f"{MEMORY_UTIL_MAX:g}x" in verdict.description
    assert "never labelled" in verdict.description
    clean = ExtractedTable(table, T0, T0 + timedelta(hours=1), frame.filter(
        pl.col("workload").is_in(["ok", "unlimited"])), 12, "test")
    assert utilisation_verdict(clean).passed  # a container without limits is not a problem


def test_data_quality_report_lists_the_readings_the_labels_skip(tmp_path):
    catalog = load_catalog()
    usage = pl.concat(
        [
            _usage(0.3, 0.0, 0.2 * GIB, 0.0, workload="off"),
            _usage(0.1, 1.0, 64 * GIB, 1 * GIB, workload="bad"),
            _usage(0.9, 1.0, 0.5 * GIB, 1 * GIB, workload="ok"),
        ]
    )
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.register("usage_frame", usage)
    con.execute("CREATE TABLE container_usage AS SELECT * FROM usage_frame")
    readings = utilisation_readings(con, catalog)
    counts = {(r["resource"], r["reason"]): r["rows"] for r in readings.iter_rows(named=True)}
    assert counts == {
        ("cpu", ZERO_CAPACITY): 12,
        ("memory", ZERO_CAPACITY): 12,
        ("memory", ABOVE_PLAUSIBLE): 12,
    }
    written = write_data_quality_report(pl.DataFrame(), tmp_path / "out", "wh", readings=readings)
    text = written[0].read_text()
    assert "never labelled" in text and "working set above 1.5x" in text


def test_container_readings_cover_both_resources_the_rules_use():
    assert {r.resource for r in CONTAINER_READINGS} == {"cpu", "memory"}
    assert CONTAINER_CPU.capacity == "cpu_limit_cores"
    assert CONTAINER_MEMORY.used == "memory_working_set_bytes"


# --- the benchmark's Bitbrains loader -----------------------------------------------------
def _bench():
    spec = importlib.util.spec_from_file_location("bottleneck_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bitbrains_loader_gates_switched_off_and_impossible_rows_and_keeps_saturation():
    epoch = int(T0.timestamp())
    rows = []
    for i in range(12):  # hour 0: switched off (capacity 0); hour 1: memory at 64x
        rows.append((1, epoch + 300 * i, 0.0, 0.0, 0, 0))
        rows.append((1, epoch + 3600 + 300 * i, 2600.0, 100.0, 4_194_304, 64 * 4_194_304))
        rows.append((2, epoch + 300 * i, 2600.0, 0.9 * 2600.0, 4_194_304, 1_000_000))  # CPU 90 %
    frame = pl.DataFrame(
        rows,
        schema=["vm_id", "timestamp_s", "cpu_capacity_mhz", "cpu_usage_mhz", "mem_capacity_kb",
                "mem_usage_kb"],
        orient="row",
    )
    windows, problems = _bench().bitbrains_windows(frame)
    labelled = label_windows(windows)
    floats = windows.select(pl.selectors.float())
    assert floats.select(pl.all().is_nan().any() | pl.all().is_infinite().any()).sum_horizontal()[
        0
    ] == 0
    classes = dict(
        labelled.select(pl.col("service") + "@" + pl.col("window_start").dt.hour().cast(pl.Utf8),
                        "bottleneck_class").iter_rows()
    )
    assert classes == {"bitbrains/vm1@0": "none", "bitbrains/vm1@1": "none",
                       "bitbrains/vm2@0": "cpu"}
    counts = {(r["resource"], r["reason"]): r["rows"] for r in problems.iter_rows(named=True)}
    assert counts == {
        ("cpu", ZERO_CAPACITY): 12,
        ("memory", ZERO_CAPACITY): 12,
        ("memory", ABOVE_PLAUSIBLE): 12,
    }


def test_weekly_report_data_quality_names_the_weeks_bad_readings_as_problems(tmp_path):
    from capacity_pipelines.reporting.sections.data_quality import data_quality_section
    from capacity_pipelines.reporting.sections.reads import ReportWindow
    from capacity_pipelines.reporting.weeks import ReportWeek

    week = ReportWeek.from_partition_key("2026-09-28")  # T0 (1 Oct) lies in it
    usage = pl.concat(
        [
            _usage(0.1, 1.0, 64 * GIB, 1 * GIB, workload="bad"),
            _usage(0.9, 1.0, 0.5 * GIB, 1 * GIB, workload="ok"),
            # the week before: not this report's problem
            _usage(0.1, 1.0, 64 * GIB, 1 * GIB, workload="old").with_columns(
                pl.col("ts") - timedelta(days=7)
            ),
        ]
    )
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    con.register("usage_frame", usage)
    con.execute("CREATE TABLE container_usage AS SELECT * FROM usage_frame")
    window = ReportWindow(con, week, load_catalog(), forecaster=None)
    section = data_quality_section(window)
    table = next(t for t in section.tables if t.name == "utilisation_readings")
    assert table.raw.select("resource", "reason", "rows").rows() == [
        ("memory", ABOVE_PLAUSIBLE, 12)
    ]
    assert any(
        p.startswith("container_usage: 12 rows: working set above 1.5x")
        for p in section.facts["problems"]
    )

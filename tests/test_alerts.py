"""Predictive alerts (pure module): which conditions hold, how a sync keeps startsAt and
resolves what no longer holds, and that a dead Alertmanager is a warning without credentials.

The tables are real: written with the warehouse's own `replace_as_of` and table definitions
into a temporary DuckDB file, then read back with `read_latest`.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
import pytest

from capacity_pipelines import warehouse as wh
from capacity_pipelines.alerts import (
    BOTTLENECK_ALERT,
    RUNWAY_ALERT,
    AlertmanagerClient,
    AlertSettings,
    LatestRows,
    current_alerts,
    read_latest,
    sync_alerts,
    sync_payload,
)
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.forecasting.fleet import FORECAST_TABLE, RUNWAY_TABLE

AS_OF = datetime(2026, 10, 11, tzinfo=UTC)
NOW = datetime(2026, 10, 12, 2, 30, tzinfo=UTC)
REPORT = "https://reports.example/latest/capacity_report.html"


def runway_frame(as_of: datetime, rows: list[tuple]) -> pl.DataFrame:
    """capacity_runway rows: (series_id, peak_p90, capacity, runway_days)."""
    naive = as_of.replace(tzinfo=None)
    return pl.DataFrame(
        {
            "as_of": [naive] * len(rows),
            "series_id": [r[0] for r in rows],
            "family": [r[0].split(":")[0] for r in rows],
            "peak_p50": [r[1] * 0.8 for r in rows],
            "peak_p90": [r[1] for r in rows],
            "capacity": [r[2] for r in rows],
            "saturation_ts": [None if r[3] is None else naive + timedelta(days=r[3]) for r in rows],
            "runway_days": [r[3] for r in rows],
            "clipped": [False] * len(rows),
            "note": [""] * len(rows),
        },
        schema_overrides={
            "capacity": pl.Float64,
            "runway_days": pl.Float64,
            "saturation_ts": pl.Datetime("us"),
        },
    )


def outlook_frame(as_of: datetime, rows: list[tuple]) -> pl.DataFrame:
    """bottleneck_outlook rows: (service, horizon, {class: probability})."""
    naive = as_of.replace(tzinfo=None)
    best = [max(r[2], key=r[2].get) for r in rows]
    return pl.DataFrame(
        {
            "as_of": [naive] * len(rows),
            "namespace": ["agents"] * len(rows),
            "service": [r[0] for r in rows],
            "horizon": [r[1] for r in rows],
            "bottleneck_class": best,
            "probability": [r[2][b] for r, b in zip(rows, best, strict=True)],
            "probabilities": [json.dumps(r[2]) for r in rows],
            "expected_at": [naive + timedelta(hours=9)] * len(rows),
            "evidence": ["cpu p90 0.97 of limits"] * len(rows),
            "metrics": ["cpu_cores"] * len(rows),
            "method": ["rules"] * len(rows),
            "note": [""] * len(rows),
        }
    )


def forecast_frame(as_of: datetime, series: dict[str, float]) -> pl.DataFrame:
    """load_forecast rows: a flat week per series at the given p95."""
    naive = as_of.replace(tzinfo=None)
    rows = [
        (sid, naive + timedelta(hours=h), p95) for sid, p95 in series.items() for h in range(168)
    ]
    return pl.DataFrame(
        {
            "as_of": [naive] * len(rows),
            "series_id": [r[0] for r in rows],
            "family": [r[0].split(":")[0] for r in rows],
            "ts": [r[1] for r in rows],
            "point": [r[2] * 0.5 for r in rows],
            "p50": [r[2] * 0.5 for r in rows],
            "p80": [r[2] * 0.7 for r in rows],
            "p90": [r[2] * 0.9 for r in rows],
            "p95": [r[2] for r in rows],
            "model": ["test"] * len(rows),
            "interval_method": ["test"] * len(rows),
        }
    )


RUNWAY_ROWS = [
    ("workload_cpu:agents/planner", 3.9, 4.0, 1.5),  # critical: under 2 days
    ("workload_memory:agents/retriever", 7.5 * 2**30, 8 * 2**30, 5.0),  # warning
    ("workload_cpu:agents/summarizer", 1.0, 4.0, 9.0),  # beyond 7 days: no alert
    ("workload_cpu:agents/nolimit", 3.0, None, None),  # no limit, no runway
    ("service_request_rate:agents/planner", 50.0, None, 2.0),  # not a workload resource
]
OUTLOOK_ROWS = [
    ("planner", "24h", {"cpu": 0.6, "none": 0.4}),  # warning
    ("retriever", "24h", {"llm_provider": 0.9, "none": 0.1}),  # critical
    ("gateway", "24h", {"queueing": 0.3, "none": 0.7}),  # below 0.5
    ("summarizer", "7d", {"memory": 0.95, "none": 0.05}),  # not the alerting horizon
]


@pytest.fixture
def warehouse_file(tmp_path):
    """A DuckDB file with two as-of days of the three tables (the newer one alerting)."""
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    older = AS_OF - timedelta(days=1)
    wh.replace_as_of(con, RUNWAY_TABLE, older, runway_frame(older, [RUNWAY_ROWS[2]]))
    wh.replace_as_of(con, RUNWAY_TABLE, AS_OF, runway_frame(AS_OF, RUNWAY_ROWS))
    wh.replace_as_of(con, BOTTLENECK_TABLE, AS_OF, outlook_frame(AS_OF, OUTLOOK_ROWS))
    wh.replace_as_of(
        con, FORECAST_TABLE, AS_OF, forecast_frame(AS_OF, {"workload_cpu:agents/planner": 3.0})
    )
    con.close()
    return path


def test_latest_rows_and_the_alerts_that_hold(warehouse_file):
    with duckdb.connect(str(warehouse_file), read_only=True) as con:
        latest = read_latest(con)
    assert latest.runway.height == len(RUNWAY_ROWS)
    assert latest.as_of["capacity_runway"] == AS_OF.replace(tzinfo=None)
    alerts = current_alerts(latest, AlertSettings(), NOW, REPORT)
    by_key = {
        (a.labels["alertname"], a.labels["service"], a.labels.get("resource", "")): a
        for a in alerts
    }
    assert set(by_key) == {
        (RUNWAY_ALERT, "planner", "cpu"),
        (RUNWAY_ALERT, "retriever", "memory"),
        (BOTTLENECK_ALERT, "planner", ""),
        (BOTTLENECK_ALERT, "retriever", ""),
    }
    cpu = by_key[(RUNWAY_ALERT, "planner", "cpu")]
    assert cpu.labels == {
        "alertname": RUNWAY_ALERT,
        "service": "planner",
        "namespace": "agents",
        "workload": "planner",
        "resource": "cpu",
        "severity": "critical",
        "source": "capacity_pipelines",
    }
    assert "3.90 cores" in cpu.annotations["description"]
    assert "4.00 cores" in cpu.annotations["description"]
    assert "1.5 days" in cpu.annotations["summary"]
    assert cpu.annotations["report"] == f"{REPORT}#runway"
    assert cpu.starts_at == NOW and cpu.ends_at == NOW + timedelta(days=2)
    memory = by_key[(RUNWAY_ALERT, "retriever", "memory")]
    assert memory.labels["severity"] == "warning"
    assert "7.5Gi" in memory.annotations["description"]
    planner = by_key[(BOTTLENECK_ALERT, "planner", "")]
    assert planner.labels["bottleneck_class"] == "cpu"
    assert planner.labels["severity"] == "warning"
    assert planner.labels["horizon"] == "24h"
    assert "0.60" in planner.annotations["description"]
    assert planner.annotations["report"] == f"{REPORT}#bottlenecks"
    assert by_key[(BOTTLENECK_ALERT, "retriever", "")].labels["severity"] == "critical"


def test_latest_is_bounded_by_the_asked_day(warehouse_file):
    with duckdb.connect(str(warehouse_file), read_only=True) as con:
        older = read_latest(con, AS_OF - timedelta(hours=1))
    assert older.runway["series_id"].to_list() == ["workload_cpu:agents/summarizer"]
    assert older.outlook.height == 0 and older.as_of["bottleneck_outlook"] is None
    assert current_alerts(older, AlertSettings(), NOW, REPORT) == []


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (AlertSettings(runway_days=2.0), {"planner"}),  # 5 days no longer within
        (AlertSettings(runway_days=10.0), {"planner", "retriever", "summarizer"}),
    ],
)
def test_runway_threshold(settings, expected):
    latest = read_latest(duckdb.connect())  # empty warehouse: nothing holds
    assert current_alerts(latest, settings, NOW, REPORT) == []
    frame = runway_frame(AS_OF, RUNWAY_ROWS)
    alerts = current_alerts(
        LatestRows(frame, pl.DataFrame(), pl.DataFrame(), {}), settings, NOW, REPORT
    )
    assert {a.labels["service"] for a in alerts} == expected


def test_probability_threshold_counts_a_class_tied_with_none():
    frame = outlook_frame(AS_OF, [("planner", "24h", {"network": 0.5, "none": 0.5})])
    latest = LatestRows(pl.DataFrame(), frame, pl.DataFrame(), {})
    alerts = current_alerts(latest, AlertSettings(), NOW, "")
    assert [a.labels["bottleneck_class"] for a in alerts] == ["network"]
    strict = AlertSettings(probability=0.51)
    assert current_alerts(latest, strict, NOW, "") == []


def _active(alert_payload: dict, starts_at: str) -> dict:
    return {**alert_payload, "startsAt": starts_at, "status": {"state": "active"}}


def test_sync_keeps_first_seen_and_resolves_what_stopped(warehouse_file):
    with duckdb.connect(str(warehouse_file), read_only=True) as con:
        alerts = current_alerts(read_latest(con), AlertSettings(), NOW, REPORT)
    planner_cpu = next(a for a in alerts if a.labels.get("resource") == "cpu")
    earlier = "2026-10-10T02:30:00Z"
    # Yesterday the same condition was only a warning; a condition that has stopped is active.
    as_warning = {**planner_cpu.payload(), "labels": {**planner_cpu.labels, "severity": "warning"}}
    gone = {
        "labels": {"alertname": RUNWAY_ALERT, "service": "old", "source": "capacity_pipelines"},
        "annotations": {"summary": "old"},
    }
    payload, resolved = sync_payload(
        alerts, [_active(as_warning, earlier), _active(gone, earlier)], NOW
    )
    assert resolved == 2  # the warning label set and the gone condition
    by_labels = {json.dumps(p["labels"], sort_keys=True): p for p in payload}
    now_text = "2026-10-12T02:30:00Z"
    critical = by_labels[json.dumps(planner_cpu.labels, sort_keys=True)]
    assert critical["startsAt"] == earlier
    assert critical["endsAt"] == "2026-10-14T02:30:00Z"
    assert by_labels[json.dumps(as_warning["labels"], sort_keys=True)]["endsAt"] == now_text
    assert by_labels[json.dumps(gone["labels"], sort_keys=True)]["endsAt"] == now_text
    others = [p for p in payload if p["labels"].get("service") not in ("planner", "old")]
    assert all(p["startsAt"] == now_text for p in others)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_alertmanager_is_a_warning_without_credentials():
    port = _closed_port()
    client = AlertmanagerClient(f"http://sre:hunter2@127.0.0.1:{port}/", retries=0, timeout_s=2)
    alerts = current_alerts(
        LatestRows(runway_frame(AS_OF, RUNWAY_ROWS[:1]), pl.DataFrame(), pl.DataFrame(), {}),
        AlertSettings(),
        NOW,
        REPORT,
    )
    result = sync_alerts(client, alerts, NOW)
    assert result.posted == 0 and result.firing == 1
    assert result.warning is not None and "\n" not in result.warning
    assert f"http://127.0.0.1:{port}" in result.warning
    assert "hunter2" not in result.warning and "sre" not in result.warning

"""The weekly capacity report: sections, formatting, escaping, publication, webhook, schedule.

The snapshot is a real DuckDB file written through the warehouse module (derived tables with
`replace_derived_window`, raw tables from the catalog's DDL), two weeks of hand-made rows with
known answers; the asset runs with `dg.materialize` and the webhook posts to a real HTTP server
on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import importlib
import json
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from capacity_pipelines import warehouse as wh
from capacity_pipelines.anomalies.fleet import ANOMALY_TABLE
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_BACKTEST_TABLE
from capacity_pipelines.definitions import defs as build_defs
from capacity_pipelines.defs.resources import ReportsResource, WarehouseResource
from capacity_pipelines.forecasting.fleet import (
    BACKTEST_TABLE,
    FORECAST_TABLE,
    RUNWAY_TABLE,
)
from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.tables import ensure_schema
from capacity_pipelines.reporting import (
    ReportWeek,
    WebhookError,
    deliver_summary,
    gather_report,
    publish_report,
    render_html,
    render_markdown,
    slack_payload,
)
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE
from capacity_pipelines.tokens.fleet import TOKEN_COST_TABLE
from tests.pipeline import pipeline_resources

WEEK = ReportWeek.from_partition_key("2026-10-19")  # 2026-W43, ends Monday 2026-10-26 00:00
AS_OF = datetime(2026, 10, 26, tzinfo=UTC)
PREVIOUS_AS_OF = datetime(2026, 10, 19, tzinfo=UTC)
EVIL = '<script>alert("pwned")</script>'  # a label value someone put in a pod label
SECTION_KEYS = [
    "summary",
    "runway",
    "bottlenecks",
    "anomalies",
    "rightsizing",
    "tokens",
    "recommendations",
    "data-quality",
]
LLM_USD_PER_HOUR = {"planner": 50.0, EVIL: 10.0}  # this week; last week half of it


def _anomalies(as_of: datetime) -> list[dict]:
    """The router's CPU on the day before `as_of`: one spike at 14:00 among 24 scored hours."""
    spike = as_of - timedelta(hours=10)
    return [
        {
            "series_id": "workload_cpu:agents/router",
            "family": "workload_cpu",
            "ts": as_of - timedelta(hours=h),
            "value": 3.5 if as_of - timedelta(hours=h) == spike else 1.2,
            "score": 0.71 if as_of - timedelta(hours=h) == spike else 0.2,
            "is_anomaly": as_of - timedelta(hours=h) == spike,
            "kind": "spike" if as_of - timedelta(hours=h) == spike else "none",
            "evidence": "3.5: deviation from the last 12 days' median 2.45x the series' largest "
            "of the last 30 days" if as_of - timedelta(hours=h) == spike else "",
        }
        for h in range(1, 25)
    ]


def _derived(con, table, as_of: datetime, rows: list[dict]) -> None:
    frame = pl.DataFrame(rows).with_columns(pl.lit(as_of).alias("as_of"))
    # Columns that are NULL in every hand-made row still need the table's real type.
    frame = frame.with_columns(
        pl.col(c).cast(pl.Datetime("us", "UTC") if c.endswith("_ts") else pl.Float64)
        for c, dtype in frame.schema.items()
        if dtype == pl.Null
    )
    wh.replace_derived_window(con, table, as_of, as_of + timedelta(microseconds=1), frame, "as_of")


def _runway(as_of: datetime, router_runway: float | None) -> list[dict]:
    row = {
        "family": "workload_cpu",
        "peak_p50": 1.4,
        "peak_p90": 1.9,
        "capacity": 2.0,
        "saturation_ts": None if router_runway is None else as_of + timedelta(days=2),
        "runway_days": router_runway,
        "clipped": False,
        "note": "",
    }
    return [
        {**row, "series_id": "workload_cpu:agents/router"},
        {
            **row,
            "series_id": f"workload_memory:agents/{EVIL}",
            "family": "workload_memory",
            "peak_p50": 300 * 2**20,
            "peak_p90": 400 * 2**20,
            "capacity": 2**30,
            "saturation_ts": None,
            "runway_days": None,
        },
    ]


def _rightsizing(saving: float) -> list[dict]:
    return [
        {
            "rank": 1,
            "container_id": f"demo/agents/{EVIL}/app",
            "namespace": "agents",
            "workload": EVIL,
            "workload_kind": "Deployment",
            "container": "app",
            "status": "ok",
            "kind": "save",
            "current_cpu_request": 2.0,
            "cpu_request": 1.5,
            "current_cpu_limit": None,
            "cpu_limit": None,
            "current_memory_request": float(2**30),
            "memory_request": float(512 * 2**20),
            "current_memory_limit": None,
            "memory_limit": float(512 * 2**20),
            "cpu_request_quantity": "1500m",
            "memory_request_quantity": "512Mi",
            "confidence": 0.9,
            "monthly_saving_usd": saving,
            "forecast_used": True,
            "hpa": False,
            "oom_kills": 0,
            "profile": "balanced",
            "recommender": "p95/3d",
            "rationale": f"p95 well below request {EVIL}",
        }
    ]


def _outlook(as_of: datetime, probability: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "as_of": [as_of.replace(tzinfo=None)] * 2,
            "namespace": ["platform", "agents"],
            "service": ["postgres", "router"],
            "horizon": ["7d", "24h"],
            "bottleneck_class": ["io_database", "none"],
            "probability": [probability, 0.9],
            "probabilities": ['{"io_database": 0.7}', '{"none": 0.9}'],
            "expected_at": [as_of.replace(tzinfo=None) + timedelta(days=3), None],
            "evidence": ["disk queue grows 4 %/day", ""],
            "metrics": ["", ""],
            "method": ["rules", "rules"],
        }
    )


def _track_record(as_of: datetime) -> list[dict]:
    """Four weeks of scored outlooks: postgres's 7-day outlook did worse than persistence,
    router's 24 h one better."""
    first = as_of.replace(tzinfo=None) - timedelta(days=21)

    def row(namespace, service, horizon, method, origins, correct, brier, caught, alarms):
        return {
            "namespace": namespace,
            "service": service,
            "horizon": horizon,
            "method": method,
            "origins": origins,
            "first_origin": first,
            "last_origin": first + timedelta(days=origins - 1),
            "correct": correct,
            "brier": brier,
            "bottleneck_origins": 4,
            "caught": caught,
            "false_alarms": alarms,
        }

    return [
        row("platform", "postgres", "7d", "outlook", 15, 9, 0.41, 2, 3),
        row("platform", "postgres", "7d", "persistence_7d", 15, 12, 0.30, 3, 0),
        row("agents", "router", "24h", "outlook", 21, 20, 0.10, 4, 1),
        row("agents", "router", "24h", "persistence_7d", 21, 15, 0.50, 2, 2),
    ]


def _recommendations(as_of: datetime, ids: list[str]) -> pl.DataFrame:
    n = len(ids)
    return pl.DataFrame(
        {
            "as_of": [as_of.replace(tzinfo=None)] * n,
            "rank": list(range(1, n + 1)),
            "recommendation_id": ids,
            "kind": ["rightsizing"] * n,
            "target": [f"agents/{i}" for i in ids],
            "namespace": ["agents"] * n,
            "service": ids,
            "team": ["sre"] * n,
            "action": [f"size down {i}" for i in ids],
            "evidence": ["14 days"] * n,
            "impact_usd_month": [1000.0 * (k + 1) for k in range(n)],
            "slo_impact": ["none"] * n,
            "impact_score": [0.5] * n,
            "effort_score": [0.2] * n,
            "risk_score": [0.1] * n,
            "confidence": [0.8] * n,
            "priority": ["P1"] * n,
            "roi": [3.0] * n,
            "status": ["open"] * n,
            "review_status": ["accepted", "rejected", "pending"][:n],
            "evidence_fingerprint": ids,
        }
    )


def _token_cost(start: datetime, hours: int) -> pl.DataFrame:
    rows = []
    for h in range(1, hours + 1):
        ts = start + timedelta(hours=h)
        scale = 1.0 if ts > WEEK.start else 0.5
        for agent, usd in LLM_USD_PER_HOUR.items():
            rows.append(
                {
                    "cluster": "demo",
                    "service": "agents",
                    "provider": "openai",
                    "model": "gpt-4o",
                    "agent": agent,
                    "ts": ts,
                    "input_tokens": 1e6,
                    "output_tokens": 1e5,
                    "cache_read_input_tokens": 0.0,
                    "cache_write_input_tokens": 0.0,
                    "requests": 100.0,
                    "cost_input_usd": usd * scale,
                    "cost_cache_read_usd": 0.0,
                    "cost_cache_write_usd": 0.0,
                    "cost_output_usd": 0.0,
                    "discount_pct": 0.0,
                    "cost_usd": usd * scale,
                    "price_id": "openai/gpt-4o",
                    "unpriced": False,
                }
            )
    return pl.DataFrame(rows)


def build_snapshot(path: Path, complete: bool = True) -> Path:
    """Two weeks of derived tables (as-of 10-19 and 10-26) and three weeks of raw rows."""
    with wh.connect(path) as con:
        ensure_schema(con, load_catalog())
        start = WEEK.start - timedelta(days=14)
        history = pl.DataFrame(
            {
                "cluster": "demo",
                "namespace": "agents",
                "workload": "router",
                "pod": "router-1",
                "container": "app",
                "ts": [start + timedelta(hours=h) for h in range(1, 21 * 24 + 1)],
            }
        ).with_columns(
            (1.0 + 0.5 * (pl.col("ts").dt.hour() / 23)).alias("cpu_cores"),
            pl.lit(float(2**28)).alias("memory_working_set_bytes"),
            pl.lit(0.0).alias("cpu_throttled_ratio"),
            pl.lit(2.0).alias("cpu_request_cores"),
            pl.lit(2.0).alias("cpu_limit_cores"),
            pl.lit(float(2**30)).alias("memory_request_bytes"),
            pl.lit(float(2**30)).alias("memory_limit_bytes"),
            pl.lit(0.0).alias("restarts"),
            pl.lit(0.0).alias("oom_killed"),
        )
        con.register("history_rows", history.with_columns(pl.col("ts").dt.replace_time_zone(None)))
        con.execute("INSERT INTO container_usage BY NAME SELECT * FROM history_rows")
        costs = _token_cost(start, 21 * 24)
        wh.replace_derived_window(con, TOKEN_COST_TABLE, start, WEEK.end, costs, "ts")
        if not complete:
            return path
        _derived(con, RUNWAY_TABLE, PREVIOUS_AS_OF, _runway(PREVIOUS_AS_OF, None))
        _derived(con, RUNWAY_TABLE, AS_OF, _runway(AS_OF, 2.0))
        forecast = [
            {
                "series_id": "workload_cpu:agents/router",
                "family": "workload_cpu",
                "ts": AS_OF + timedelta(hours=h),
                "point": 1.2,
                "p50": 1.2,
                "p80": 1.5,
                "p90": 1.7,
                "p95": 1.9,
                "model": "test",
                "interval_method": "test",
            }
            for h in range(168)
        ]
        _derived(con, FORECAST_TABLE, AS_OF, forecast)
        backtest = [
            {
                "series_id": "workload_cpu:agents/router",
                "family": "workload_cpu",
                "mase_engine": 0.5,
                "mase_seasonal_naive": 1.0,
                "coverage_p90": 0.9,
            }
        ]
        _derived(con, BACKTEST_TABLE, AS_OF, backtest)
        _derived(con, ANOMALY_TABLE, AS_OF, _anomalies(AS_OF))
        _derived(con, RIGHTSIZING_TABLE, PREVIOUS_AS_OF, _rightsizing(100.0))
        _derived(con, RIGHTSIZING_TABLE, AS_OF, _rightsizing(12_300.0))
        outlook = pl.concat([_outlook(PREVIOUS_AS_OF, 0.2), _outlook(AS_OF, 0.7)])
        _derived(con, BOTTLENECK_BACKTEST_TABLE, AS_OF, _track_record(AS_OF))
        recs = pl.concat(
            [_recommendations(PREVIOUS_AS_OF, ["r1"]), _recommendations(AS_OF, ["r1", "r2", "r3"])]
        )
        con.register("outlook_rows", outlook)
        con.register("rec_rows", recs)
        con.execute("CREATE TABLE bottleneck_outlook AS SELECT * FROM outlook_rows")
        con.execute("CREATE TABLE recommendations AS SELECT * FROM rec_rows")
    return path


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return build_snapshot(tmp_path_factory.mktemp("weekly") / "snap.duckdb")


@pytest.fixture(scope="module")
def report(snapshot):
    with wh.connect(snapshot, read_only=True) as con:
        return gather_report(con, WEEK, source=str(snapshot), now=AS_OF + timedelta(hours=6))


def test_every_section_is_built_with_the_known_numbers(report):
    assert [s.key for s in report.sections] == SECTION_KEYS
    assert report.summary["sections_unavailable"] == {}
    # This week: 168 h x ($50 + $10); last week: half of it.
    assert report.summary["llm_spend_usd"] == pytest.approx(168 * 60.0)
    assert report.summary["llm_spend_previous_week_usd"] == pytest.approx(168 * 30.0)
    # Savings come from open recommendations not rejected: r1 ($1k) + r3 ($3k).
    assert report.summary["savings_available_usd_month"] == pytest.approx(4000.0)
    at_risk = report.summary["services_at_risk"]
    assert set(at_risk) == {"agents/router", "platform/postgres"}
    assert "io_database" in at_risk["platform/postgres"]
    # What changed since last week: both risks are new (runway was beyond the horizon and the
    # bottleneck was unlikely on 10-19), two recommendations are new.
    changes = " ".join(report.summary["changes"])
    assert "+100.0%" in changes
    assert "newly at risk: agents/router, platform/postgres" in changes
    assert "2 new recommendations" in changes
    # Compute: 2 cores + 1 GiB requested all week at the m6i list price.
    assert 0 < report.summary["compute_spend_usd"] < 168 * 2 * 1.0
    runway = report.section("runway")
    assert len(runway.charts) == 1 and runway.charts[0].png.startswith(b"\x89PNG")
    tokens = report.section("tokens")
    assert {c.title for c in tokens.charts if c.svg} == {"Spend by agent this week (USD)"}
    assert any(c.png for c in tokens.charts)  # the daily spend trend with its forecast


def test_numbers_are_formatted_for_people(report):
    html = render_html(report)
    for text in ("$12.3k/mo", "2 cores → 1.5 cores", "1Gi → 512Mi", "$10.1k", "+100.0%"):
        assert text in html, text
    markdown = render_markdown(report)
    assert "$12.3k/mo" in markdown and "| rank |" in markdown


def test_a_script_in_a_label_value_is_text_not_markup(report):
    html = render_html(report)
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    assert "<script" not in render_markdown(report).lower()


def test_the_html_is_self_contained(report):
    html = render_html(report)
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<link" not in html and 'src="data:image/png' in html


def test_missing_tables_become_boxes_not_crashes(tmp_path):
    snapshot = build_snapshot(tmp_path / "partial.duckdb", complete=False)
    with wh.connect(snapshot, read_only=True) as con:
        report = gather_report(con, WEEK, source="partial")
    missing = report.summary["sections_unavailable"]
    assert set(missing) == {"runway", "bottlenecks", "anomalies", "rightsizing", "recommendations"}
    assert missing["runway"].startswith("table capacity_runway is not in the warehouse snapshot")
    # the box names the command that computes the week's daily answers
    assert "capacity run --start 2026-10-19 --end 2026-10-26" in missing["runway"]
    html = render_html(report)
    assert "not available yet: table bottleneck_outlook is not in the warehouse snapshot" in html
    assert report.section("tokens").unavailable is None  # what exists is still reported
    with wh.connect(snapshot, read_only=True) as con:
        empty_week = gather_report(con, ReportWeek.from_partition_key("2026-11-30"), "partial")
    assert empty_week.section("tokens").unavailable == "no llm_token_cost rows in 2026-W49"


def test_a_table_of_the_wrong_shape_is_named_in_its_box(tmp_path):
    snapshot = build_snapshot(tmp_path / "odd.duckdb")
    with wh.connect(snapshot) as con:
        con.execute("ALTER TABLE bottleneck_outlook DROP COLUMN bottleneck_class")
    with wh.connect(snapshot, read_only=True) as con:
        report = gather_report(con, WEEK, source="odd")
    why = report.summary["sections_unavailable"]
    assert list(why) == ["bottlenecks"] and "bottleneck_class" in why["bottlenecks"]
    assert set(report.summary["services_at_risk"]) == {"agents/router"}  # runway still counts
    assert "not available yet: ColumnNotFoundError" in render_html(report)


def test_the_outlook_says_where_it_did_not_beat_last_week_repeating(report):
    section = report.section("bottlenecks")
    bullets = "\n".join(section.bullets)
    assert (
        "For platform/postgres the outlook did not beat 'last week repeats' over the last four "
        "weeks: 7d right on 9 of 15 days vs 12, Brier 0.41 vs 0.30 — treat its 7d line as a "
        "guess." in section.bullets
    )
    assert "agents/router" not in bullets.split("Over the")[1]  # it beat persistence: no sentence
    assert (
        "the outlook was right on 81% of them (Brier 0.23), persistence on 75% (Brier 0.42)"
        in bullets
    )
    assert "Of the 8 service-days a bottleneck followed, the outlook named it on 6, " in bullets
    assert "beat persistence on 1, matched it on 0 and did not beat it on 1" in bullets
    [table] = [t for t in section.tables if t.name == "bottleneck_track_record"]
    rows = {r["service"]: r for r in table.display.iter_rows(named=True)}
    assert rows["platform/postgres"] == {
        "service": "platform/postgres",
        "horizon": "7d",
        "days scored": "15",
        "right (outlook / persistence)": "9 / 12",
        "Brier outlook": "0.41",
        "Brier persistence": "0.30",
        "bottleneck days": "4",
        "caught (outlook / persistence)": "2 / 3",
        "false alarms (outlook / persistence)": "3 / 0",
        "verdict": "did not beat",
    }
    assert rows["agents/router"]["verdict"] == "beat"
    assert table.display["service"].to_list()[0] == "platform/postgres"  # the warning first
    assert section.facts["track_record"]["did not beat"] == ["platform/postgres (7d)"]
    html = render_html(report)
    assert "treat its 7d line as a guess" in html and "Outlook vs 7-day persistence" in html


def test_right_as_often_with_worse_probabilities_is_called_rough_not_a_guess(tmp_path):
    snapshot = build_snapshot(tmp_path / "rough.duckdb")
    with wh.connect(snapshot) as con:
        con.execute(
            "UPDATE bottleneck_backtest SET correct = 15, brier = 0.06, bottleneck_origins = 0, "
            "caught = 0, false_alarms = 0 WHERE service = 'router'"
        )
        con.execute(
            "UPDATE bottleneck_backtest SET brier = 0.0 "
            "WHERE service = 'router' AND method = 'persistence_7d'"
        )
    with wh.connect(snapshot, read_only=True) as con:
        section = gather_report(con, WEEK, source="rough").section("bottlenecks")
    assert (
        "For agents/router the outlook did not beat 'last week repeats' over the last four "
        "weeks: 24h right on 15 of 21 days vs 15, Brier 0.06 vs 0.00 (no bottleneck followed "
        "any of them) — its 24h class was right as often, but read the probability it states "
        "as rough." in section.bullets
    )


def test_a_thin_or_missing_track_record_is_said_not_guessed(tmp_path):
    snapshot = build_snapshot(tmp_path / "thin.duckdb")
    with wh.connect(snapshot) as con:
        con.execute("DELETE FROM bottleneck_backtest WHERE service = 'router'")
        con.execute("UPDATE bottleneck_backtest SET origins = 9")
    with wh.connect(snapshot, read_only=True) as con:
        thin = gather_report(con, WEEK, source="thin").section("bottlenecks")
    assert (
        "Too little history for a verdict (fewer than 14 scored days): agents/router 24h "
        "(0 days), platform/postgres 7d (9 days)." in thin.bullets
    )
    assert not [b for b in thin.bullets if "did not beat" in b or b.startswith("Over the")]
    with wh.connect(snapshot) as con:
        con.execute("DROP TABLE bottleneck_backtest")
    with wh.connect(snapshot, read_only=True) as con:
        report = gather_report(con, WEEK, source="none")
    section = report.section("bottlenecks")
    assert section.unavailable is None
    assert any(
        b.startswith(
            "Track record: none yet (table bottleneck_backtest is not in the warehouse snapshot)"
        )
        for b in section.bullets
    )
    assert not [t for t in section.tables if t.name == "bottleneck_track_record"]


def test_a_rerun_rewrites_its_week_only_and_latest_follows_the_newest(report, snapshot, tmp_path):
    reports = tmp_path / "reports"
    with wh.connect(snapshot, read_only=True) as con:
        older = gather_report(con, WEEK.previous, source="snap", now=AS_OF)
    first = publish_report(report, reports)
    publish_report(older, reports)
    assert first.week_dir.name == "2026-W43" and (reports / "2026-W42").is_dir()
    # Latest stays on the newest week when an older week is (re)published.
    assert json.loads((reports / "latest" / "capacity_report.json").read_text())["week"] == (
        "2026-W43"
    )
    week42 = {p: p.read_bytes() for p in (reports / "2026-W42").rglob("*") if p.is_file()}
    (first.week_dir / "stale-from-an-old-run.txt").write_text("x")
    report.generated_at = AS_OF + timedelta(days=1)
    again = publish_report(report, reports)
    assert not (again.week_dir / "stale-from-an-old-run.txt").exists()
    assert "2026-10-27 00:00 UTC" in again.html.read_text()
    assert {p: p.read_bytes() for p in (reports / "2026-W42").rglob("*") if p.is_file()} == week42
    assert again.latest_html.read_text() == again.html.read_text()
    assert {p.name for p in again.csv} >= {"rightsizing.csv", "token_cost_by_agent.csv"}
    rows = pl.read_csv(again.week_dir / "csv" / "rightsizing.csv")
    assert rows["monthly_saving_usd"].to_list() == [12_300.0]
    assert not [p for p in reports.iterdir() if p.name.startswith(".")]  # no staging left


# ------------------------------------------------------------------------------- webhook

SECRET_PATH = "/services/T000/B000/s3cr3t-t0k3n"


class _Hook(http.server.BaseHTTPRequestHandler):
    statuses: list[int] = []
    received: list[dict] = []
    delay_s = 0.0
    retry_after: str | None = None  # sent with every refusal when set (429s always send one)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "body": json.loads(body)})
        time.sleep(type(self).delay_s)
        status = type(self).statuses.pop(0) if type(self).statuses else 200
        self.send_response(status)
        if status != 200 and (status == 429 or type(self).retry_after is not None):
            self.send_header("Retry-After", type(self).retry_after or "0")
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"no")

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture()
def hook():
    _Hook.statuses, _Hook.received, _Hook.delay_s, _Hook.retry_after = [], [], 0.0, None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}", _Hook
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_retries_then_delivers_slack_json(hook, report):
    url, handler = hook
    handler.statuses = [500, 429]
    payload = slack_payload(report.summary["headline"], report.sections[0].bullets, "file:///r")
    delivery = deliver_summary(payload, url=url, retries=3, backoff_s=0.01)
    assert (delivery.status, delivery.attempts) == (200, 3)
    body = handler.received[-1]["body"]
    assert body["text"].startswith("2026-W43: spend") and "Report: file:///r" in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]
    assert handler.received[-1]["path"] == SECRET_PATH


def test_webhook_failure_never_shows_the_url(hook, caplog, capfd):
    url, handler = hook
    handler.statuses = [503] * 10
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WebhookError) as failure:
        deliver_summary({"text": "x"}, url=url, retries=2, backoff_s=0.01)
    assert str(failure.value) == "webhook delivery failed after 3 attempts: HTTP 503"
    assert len(handler.received) == 3
    handler.statuses = [404]
    with pytest.raises(WebhookError, match="HTTP 404"):
        deliver_summary({"text": "x"}, url=url, retries=2, backoff_s=0.01)
    assert len(handler.received) == 4  # a 404 is not retried
    handler.delay_s = 0.5
    with pytest.raises(WebhookError, match="after 2 attempts: timeout|TimeoutError"):
        deliver_summary({"text": "x"}, url=url, retries=1, timeout_s=0.1, backoff_s=0.01)
    out, err = capfd.readouterr()
    for text in (caplog.text, out, err, str(failure.value), repr(failure.value)):
        assert "s3cr3t" not in text and "127.0.0.1" not in text


def test_webhook_waits_as_long_as_retry_after_says(hook):
    url, handler = hook
    handler.statuses, handler.retry_after = [503], "1"
    started = time.monotonic()
    delivery = deliver_summary({"text": "x"}, url=url, retries=2, backoff_s=0.01)
    assert (delivery.status, delivery.attempts) == (200, 2)
    assert time.monotonic() - started >= 0.95  # the server's second, not the 10 ms backoff


def test_webhook_falls_back_to_backoff_on_an_unusable_retry_after(hook):
    url, handler = hook
    handler.statuses, handler.retry_after = [503, 503], "-1"
    delivery = deliver_summary({"text": "x"}, url=url, retries=2, backoff_s=0.01)
    assert (delivery.status, delivery.attempts) == (200, 3)


def test_no_webhook_configured_sends_nothing():
    assert deliver_summary({"text": "x"}, url=None) is None
    assert deliver_summary({"text": "x"}, url="") is None


# -------------------------------------------------------------------------- Dagster asset


def _materialize_week(resources: dict, week: ReportWeek):
    """One weekly partition through Dagster (linear spend forecast: seconds, not minutes)."""
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            list(build_defs().assets),
            selection=["weekly_capacity_report"],
            resources=resources,
            partition_key=week.monday.isoformat(),
            instance=instance,
            run_config={
                "ops": {"weekly_capacity_report": {"config": {"spend_forecaster": "linear"}}}
            },
        )
        return result, " ".join(str(e.message) for e in instance.all_logs(result.run_id))


def test_asset_publishes_the_week_and_reports_a_failed_delivery(snapshot, hook, monkeypatch):
    url, handler = hook
    handler.statuses = [500] * 10
    monkeypatch.setenv("CAPACITY_REPORT_WEBHOOK_URL", url)
    root = snapshot.parent / "asset"
    resources = pipeline_resources(root, [])
    resources["warehouse"] = WarehouseResource(path=str(snapshot), snapshot_path=str(snapshot))
    # the webhook is a secret: an EnvVar, read when the run starts (as default_resources does)
    resources["reports"] = ReportsResource(
        reports_dir=str(root / "reports"), webhook_url=dg.EnvVar("CAPACITY_REPORT_WEBHOOK_URL")
    )
    result, logs = _materialize_week(resources, WEEK)
    assert result.success
    [materialization] = result.asset_materializations_for_node("weekly_capacity_report")
    metadata = materialization.metadata
    html = Path(metadata["path"].value)
    assert html == root / "reports" / "2026-W43" / "capacity_report.html" and html.exists()
    assert "Services at risk: 2" in metadata["summary"].value
    assert metadata["chart"].value.startswith("![")
    assert metadata["services_at_risk"].value == 2
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["all_sections_available"].passed
    delivered = checks["summary_delivered"]
    assert not delivered.passed and delivered.severity == dg.AssetCheckSeverity.WARN
    assert len(handler.received) == 4  # 1 + 3 retries, each a POST to the local server
    everything = logs + json.dumps({k: str(v.value) for k, v in metadata.items()})
    everything += html.read_text() + str(delivered.description)
    assert "s3cr3t" not in everything and "127.0.0.1" not in everything
    # Backfilling an older week publishes it but does not post it to the channel.
    older, _ = _materialize_week(resources, WEEK.previous)
    assert (root / "reports" / "2026-W42" / "capacity_report.html").exists()
    assert len(handler.received) == 4
    [metadata] = [
        m.metadata for m in older.asset_materializations_for_node("weekly_capacity_report")
    ]
    assert metadata["delivery"].value.startswith("not sent: a newer week")


# ------------------------------------------------------------------------------ schedule


@pytest.mark.parametrize(
    ("tick", "week"),
    [
        (datetime(2026, 10, 26, 6, 0, tzinfo=UTC), "2026-10-19"),  # Monday 06:00: last week
        (datetime(2026, 10, 26, 0, 0, tzinfo=UTC), "2026-10-19"),  # the week just ended
        (datetime(2026, 10, 25, 23, 0, tzinfo=UTC), "2026-10-12"),  # Sunday: not complete yet
        (datetime(2026, 10, 29, 6, 0, tzinfo=UTC), "2026-10-19"),  # a Thursday cron
        (datetime(2027, 1, 4, 6, 0, tzinfo=UTC), "2026-12-28"),  # across the new year: W53
    ],
)
def test_schedule_tick_reports_on_the_week_that_ended(tick, week):
    from capacity_pipelines.defs.reports.schedules import weekly_capacity_report_schedule

    context = dg.build_schedule_context(
        scheduled_execution_time=tick, repository_def=build_defs().get_repository_def()
    )
    request = weekly_capacity_report_schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == week and request.run_key == week


def test_schedule_before_the_first_week_skips_and_cron_is_configurable(monkeypatch):
    from capacity_pipelines.defs.reports import schedules

    assert schedules.weekly_capacity_report_schedule.cron_schedule == "0 6 * * 1"
    assert schedules.weekly_capacity_report_schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 10, 1, tzinfo=UTC))
    result = schedules.weekly_capacity_report_schedule.evaluate_tick(context)
    assert not result.run_requests and "no complete week" in result.skip_message
    monkeypatch.setenv("CAPACITY_REPORT_CRON", "30 7 * * 2")
    try:
        reloaded = importlib.reload(schedules)
        assert reloaded.weekly_capacity_report_schedule.cron_schedule == "30 7 * * 2"
    finally:
        monkeypatch.delenv("CAPACITY_REPORT_CRON")
        importlib.reload(schedules)


def test_report_week_labels():
    assert WEEK.label == "2026-W43" and WEEK.previous.label == "2026-W42"
    assert ReportWeek.last_complete(datetime(2026, 10, 25).date()) == WEEK
    assert ReportWeek.last_complete(datetime(2026, 10, 28).date()) == WEEK
    with pytest.raises(ValueError, match="starts on a Monday, not on Tuesday"):
        ReportWeek.from_partition_key("2026-10-20")


def test_what_was_unusual_names_the_week_s_anomalies_with_their_evidence(report):
    section = report.section("anomalies")
    assert section.unavailable is None
    assert section.facts == {"anomalies": 1, "days_scored": 1}
    assert "1 unusual hour in 1 of 1 series over 1 scored day (1 spike)" in section.bullets[0]
    [table] = section.tables
    row = table.display.row(0, named=True)
    assert row["series"] == "agents/router" and row["kind"] == "spike"
    assert row["hour"] == "2026-10-25 14:00 UTC" and row["score"] == "0.71"
    assert "2.45x the series' largest" in row["evidence"]
    assert "What was unusual this week" in render_html(report)

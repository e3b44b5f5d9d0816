"""Recommendations: documented scoring order, stable ids, review status, validation verdicts.

Warehouses here are real DuckDB files filled with hand-made rows of the input tables, written
through the warehouse module exactly as the domain assets write them.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from capacity_pipelines import warehouse as wh
from capacity_pipelines.recommendations.decisions import append_decision, load_decisions
from capacity_pipelines.recommendations.engine import build_recommendations
from capacity_pipelines.recommendations.findings import FINDING_SCHEMA, collect_findings
from capacity_pipelines.recommendations.identity import (
    evidence_fingerprint,
    materially_changed,
    recommendation_id,
)
from capacity_pipelines.recommendations.playbook import (
    PlaybookError,
    load_playbook,
    load_teams,
)
from capacity_pipelines.recommendations.scoring import score_findings
from capacity_pipelines.recommendations.tables import (
    OUTCOMES_TABLE,
    RECOMMENDATIONS_TABLE,
)
from capacity_pipelines.recommendations.validation import (
    WindowMetrics,
    classify_outcome,
    learned_priors,
    validate_accepted,
)
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE

DAY1 = datetime(2026, 10, 5, tzinfo=UTC)
GIB = 1024**3
OUTLOOK_COLUMNS = {
    "as_of": "", "namespace": "", "service": "", "horizon": "", "bottleneck_class": "",
    "probability": "", "probabilities": "", "expected_at": "", "evidence": "", "metrics": "",
    "method": "",
}  # fmt: skip


# --- fixtures: hand-made input tables --------------------------------------------------------


def rightsizing_rows(as_of: datetime, planner_saving: float = 120.0) -> pl.DataFrame:
    """Two containers: planner over-provisioned (save), summarizer OOM-killed (risk)."""
    base = {c: None for c in RIGHTSIZING_TABLE.columns}
    planner = base | {
        "rank": 2, "container_id": "demo/agents/planner/planner", "namespace": "agents",
        "workload": "planner", "workload_kind": "Deployment", "container": "planner",
        "status": "ok", "kind": "save",
        "current_cpu_request": 1.0, "cpu_request": 0.25, "current_memory_request": 2.0 * GIB,
        "memory_request": 0.5 * GIB, "confidence": 0.9, "monthly_saving_usd": planner_saving,
        "forecast_used": True, "hpa": False, "oom_kills": 0, "profile": "balanced",
        "recommender": "p95/3d", "rationale": "14.0 d of history, volatility 0.10; CPU p95 200m",
    }  # fmt: skip
    summarizer = base | {
        "rank": 1, "container_id": "demo/agents/summarizer/summarizer", "namespace": "agents",
        "workload": "summarizer", "workload_kind": "Deployment", "container": "summarizer",
        "status": "ok", "kind": "risk",
        "current_cpu_request": 0.25, "cpu_request": 0.25, "current_memory_request": 0.5 * GIB,
        "memory_request": 2.0 * GIB, "confidence": 0.85, "monthly_saving_usd": -6.0,
        "forecast_used": True, "hpa": False, "oom_kills": 2, "profile": "balanced",
        "recommender": "p95/3d",
        "rationale": "sizes memory up 300%; 14.0 d of history, volatility 0.17",
    }  # fmt: skip
    frame = pl.DataFrame([planner, summarizer], infer_schema_length=None)
    return frame.with_columns(pl.lit(as_of.replace(tzinfo=None)).alias("as_of")).cast(
        {
            "current_cpu_limit": pl.Float64,
            "cpu_limit": pl.Float64,
            "current_memory_limit": pl.Float64,
            "memory_limit": pl.Float64,
            "cpu_request_quantity": pl.Utf8,
            "memory_request_quantity": pl.Utf8,
            "oom_kills": pl.Int64,
            "rank": pl.Int64,
        }  # fmt: skip
    )


def outlook_rows(as_of: datetime, probability: float = 0.8) -> pl.DataFrame:
    """bottleneck_outlook as issue 5 writes it: postgres io_database, gateway none."""
    naive = as_of.replace(tzinfo=None)
    return pl.DataFrame(
        {
            "as_of": [naive, naive],
            "namespace": ["platform", "platform"],
            "service": ["postgres", "api-gateway"],
            "horizon": ["24h", "24h"],
            "bottleneck_class": ["io_database", "none"],
            "probability": [probability, 0.9],
            "probabilities": ['{"io_database": 0.8}', '{"none": 0.9}'],
            "expected_at": [naive + timedelta(hours=6), None],
            "evidence": ["median latency x60 while CPU drops", ""],
            "metrics": ["", ""],
            "method": ["rules", "rules"],
        }
    )


def write_inputs(
    path: Path, as_of: datetime, planner_saving: float = 120.0, outlook_probability: float = 0.8
):
    """Write the input tables of one as-of day into the warehouse at `path`."""
    from capacity_pipelines.warehouse import DerivedTable

    after = as_of + timedelta(microseconds=1)
    with wh.connect(path) as con:
        wh.replace_derived_window(
            con, RIGHTSIZING_TABLE, as_of, after, rightsizing_rows(as_of, planner_saving), "as_of"
        )
        table = DerivedTable("bottleneck_outlook", "test", OUTLOOK_COLUMNS)
        outlook = outlook_rows(as_of, outlook_probability)
        wh.replace_derived_window(con, table, as_of, after, outlook, "as_of")


def decisions_store(path: Path) -> Path:
    """The SRE decisions store beside the warehouse at `path` (the default layout)."""
    return path.with_name("decisions.duckdb")


def run_day(path: Path, as_of: datetime) -> pl.DataFrame:
    """What the asset does: read, build, then write one day; returns the rows written."""
    decisions = load_decisions(decisions_store(path))
    with wh.reader(path) as con:
        run = build_recommendations(con, as_of, decisions=decisions)
    with wh.writer(path) as con:
        wh.replace_as_of(con, RECOMMENDATIONS_TABLE, as_of, run.table)
        wh.replace_as_of(con, OUTCOMES_TABLE, as_of, run.outcomes)
    return run.table


def decide(path: Path, rec_id: str, decision: str, when: datetime, by: str = "alice") -> None:
    with wh.reader(path) as con:
        row = con.execute(
            "SELECT * FROM recommendations WHERE recommendation_id = ? ORDER BY as_of DESC LIMIT 1",
            [rec_id],
        ).pl()
    append_decision(decisions_store(path), row.row(0, named=True), decision, by, "test",
                    decided_at=when)  # fmt: skip


# --- scoring ---------------------------------------------------------------------------------


def finding(kind: str, target: str, **values) -> dict:
    row = {c: None for c in FINDING_SCHEMA}
    row |= {
        "kind": kind, "target": target, "namespace": "agents", "service": target.split("/")[-1],
        "action": f"do {kind}", "evidence": "because", "evidence_value": 1.0,
        "source_table": "test", "impact_usd_month": 0.0, "slo_risk_avoided": 0.0,
        "runway_days_gained": 0.0, "confidence": 0.9, "history_days": 14.0,
        "forecast_uncertainty": 0.0, "headroom_after": None, "workloads": 1,
    }  # fmt: skip
    return row | values


HAND_MADE = [
    # big cheap config saving: first
    finding("rightsize_down", "agents/a/a", impact_usd_month=5000.0),
    # same $ but a code change with effort prior 4: below it
    finding("model_routing", "llm agents/b", impact_usd_month=5000.0, confidence=0.9),
    # small saving: below both
    finding("rightsize_down", "agents/c/c", impact_usd_month=50.0),
    # SLO risk 0.9 x $5000 = $4,500 equivalent, effort 1: between the $5000 ones
    finding("rightsize_up", "agents/d/d", slo_risk_avoided=0.9),
    # same as the first but an uncertain forecast and no headroom: lower
    finding(
        "rightsize_down",
        "agents/e/e",
        impact_usd_month=5000.0,
        forecast_uncertainty=0.8,
        headroom_after=0.0,
    ),  # fmt: skip
]


def test_scoring_gives_the_documented_order_and_formula():
    playbook, teams = load_playbook(), load_teams()
    scored = score_findings(pl.DataFrame(HAND_MADE, schema=FINDING_SCHEMA), playbook, teams)
    order = scored["target"].to_list()
    # d: $4.5k equivalent but the size-up prior risk (0.05) is half the cut's (0.10);
    # c: log impact keeps a small, safe, cheap saving above a risky (e) or costly (b) one.
    assert order == ["agents/d/d", "agents/a/a", "agents/c/c", "agents/e/e", "llm agents/b"]
    top = scored.row(1, named=True)
    # priority = 100 x log(1+v)/log(1+100k) x (1 - risk) / sqrt(effort), risk a noisy-OR
    impact = math.log1p(5000) / math.log1p(100_000)
    # prior 0.10, confidence 0.9, blast: agents namespace (criticality 2, blast radius 0.2)
    risk = 1 - (1 - 0.10) * (1 - 0.5 * (1 - 0.9)) * (1 - 0.3 * 0.5 * 0.2)
    assert top["impact_score"] == pytest.approx(impact)
    assert top["risk_score"] == pytest.approx(risk)
    assert top["priority"] == pytest.approx(100 * impact * (1 - risk), abs=1e-6)
    assert top["roi"] == pytest.approx(12 * 5000 * (1 - risk) / 1000)
    routed = scored.filter(pl.col("kind") == "model_routing").row(0, named=True)
    assert routed["effort_score"] == pytest.approx(4 * 1.5)  # prior x code factor
    for column in ("risk_uncertainty", "risk_history", "risk_confidence", "risk_headroom",
                   "risk_blast", "effort_prior", "effort_scope", "effort_change"):  # fmt: skip
        assert column in scored.columns
    assert scored["rank"].to_list() == [1, 2, 3, 4, 5]


def test_ranking_is_deterministic_whatever_the_input_order():
    playbook, teams = load_playbook(), load_teams()
    twins = [
        finding("rightsize_down", f"agents/t{i}/t{i}", impact_usd_month=300.0) for i in range(6)
    ]
    rows = HAND_MADE + twins
    expected = score_findings(pl.DataFrame(rows, schema=FINDING_SCHEMA), playbook, teams)
    for seed in range(3):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        again = score_findings(pl.DataFrame(shuffled, schema=FINDING_SCHEMA), playbook, teams)
        assert again["recommendation_id"].to_list() == expected["recommendation_id"].to_list()
    tied = expected.filter(pl.col("target").str.contains("/t"))
    assert tied["recommendation_id"].to_list() == sorted(tied["recommendation_id"].to_list())


def test_learned_priors_move_effort_and_risk():
    playbook = load_playbook()
    outcomes = pl.DataFrame(
        {
            "kind": ["rightsize_down"] * 4,
            "verdict": ["regressed", "regressed", "effective", "ineffective"],
        }  # fmt: skip
    )
    effort, risk = learned_priors(outcomes, playbook)["rightsize_down"]
    assert risk == pytest.approx((0.10 * 4 + 2) / 8)
    assert effort == pytest.approx(8 / 5)
    scored_before = score_findings(
        pl.DataFrame(HAND_MADE[:1], schema=FINDING_SCHEMA), playbook, load_teams()
    )
    scored_after = score_findings(
        pl.DataFrame(HAND_MADE[:1], schema=FINDING_SCHEMA),
        playbook,
        load_teams(),
        learned_priors(outcomes, playbook),
    )
    assert scored_after["priority"][0] < scored_before["priority"][0]


# --- identity --------------------------------------------------------------------------------


def test_id_depends_on_kind_and_target_not_numbers():
    a = recommendation_id("rightsize_down", "agents/planner/planner")
    assert a == recommendation_id("rightsize_down", "agents/planner/planner")
    assert a != recommendation_id("rightsize_up", "agents/planner/planner")
    assert a != recommendation_id("rightsize_down", "agents/reviewer/reviewer")
    assert evidence_fingerprint("k", "t", 100.0) != evidence_fingerprint("k", "t", 130.0)
    assert materially_changed(100.0, 130.0, 0.25) and not materially_changed(100.0, 110.0, 0.25)
    assert materially_changed(None, 1.0, 0.25) and not materially_changed(None, None, 0.25)


def test_ids_stay_stable_across_runs_and_superseded_are_kept(tmp_path):
    path = tmp_path / "wh.duckdb"
    write_inputs(path, DAY1, planner_saving=120.0)
    first = run_day(path, DAY1)
    day2 = DAY1 + timedelta(days=1)
    write_inputs(path, day2, planner_saving=95.0, outlook_probability=0.3)  # outlook calms
    second = run_day(path, day2)
    ids = dict(zip(first["target"], first["recommendation_id"], strict=True))
    again = second.filter(pl.col("status") == "open")
    assert dict(zip(again["target"], again["recommendation_id"], strict=True)) == {
        t: i for t, i in ids.items() if not t.startswith("service")
    }
    superseded = second.filter(pl.col("status") == "superseded")
    assert superseded["target"].to_list() == ["service platform/postgres"]
    # the outlook calmed: the evidence is gone (no raw table here to say the target went quiet)
    assert superseded["status_reason"].to_list() == [
        "no longer found as of 2026-10-06: the evidence has gone"
    ]
    assert superseded["rank"].to_list() == [second.height]  # last
    first_seen = second.filter(pl.col("target") == "agents/planner/planner")["first_seen"][0]
    assert first_seen == DAY1.replace(tzinfo=None)
    with duckdb.connect(str(path), read_only=True) as con:
        days = con.execute("SELECT count(DISTINCT as_of) FROM recommendations").fetchone()[0]
    assert days == 2  # history is kept per as-of day


def test_findings_from_every_table_and_missing_tables_are_notes(tmp_path):
    path = tmp_path / "wh.duckdb"
    with wh.connect(path) as con:
        empty = collect_findings(con, DAY1, load_playbook())
    assert empty.frame.height == 0
    assert any("container_rightsizing" in n for n in empty.notes)
    assert any("bottleneck_outlook" in n for n in empty.notes)
    write_inputs(path, DAY1)
    table = run_day(path, DAY1)
    by_target = {r["target"]: r for r in table.iter_rows(named=True)}
    planner = by_target["agents/planner/planner"]
    assert planner["kind"] == "rightsize_down" and planner["action"].startswith("Lower planner")
    assert "1 -> 250m" in planner["action"] and planner["impact_usd_month"] == 120.0
    summarizer = by_target["agents/summarizer/summarizer"]
    assert summarizer["kind"] == "rightsize_up" and "OOM" in summarizer["evidence"]
    assert summarizer["slo_risk_avoided"] == pytest.approx(0.8)  # 0.4 + 2 kills x 0.2
    database = by_target["service platform/postgres"]
    assert database["kind"] == "fix_database_bottleneck" and database["team"] == "platform"
    assert "api-gateway" not in " ".join(by_target)  # class none is not a finding
    assert table["evidence"].str.len_chars().min() > 0
    assert table["recommendation_id"].is_unique().all()


def test_bad_playbook_is_one_line_naming_file_kind_and_field(tmp_path):
    bad = tmp_path / "playbook.yaml"
    bad.write_text("kinds:\n  shrink:\n    title: x\n    source: rightsizing_down\n"
                   "    effort_prior: 3\n    risk_prior: 2\n")  # fmt: skip
    with pytest.raises(PlaybookError) as error:
        load_playbook(bad)
    message = str(error.value)
    assert "\n" not in message and str(bad) in message and "shrink.risk_prior" in message
    bad.write_text("kinds:\n  shrink:\n    title: x\n    source: magic\n    effort_prior: 1\n"
                   "    risk_prior: 0.1\n")  # fmt: skip
    with pytest.raises(PlaybookError, match="shrink.source"):
        load_playbook(bad)


def test_a_user_kind_extends_the_playbook(tmp_path):
    text = Path(load_playbook().path).read_text()
    extended = tmp_path / "playbook.yaml"
    extended.write_text(
        text + "\n  scale_queue_workers:\n    title: Add queue workers\n    source: bottleneck\n"
        "    effort_prior: 2\n    risk_prior: 0.1\n    params:\n      classes: [io_database]\n"
    )
    playbook = load_playbook(extended)
    assert "scale_queue_workers" in playbook.kinds
    path = tmp_path / "wh.duckdb"
    write_inputs(path, DAY1)
    with wh.connect(path) as con:
        found = collect_findings(con, DAY1, playbook).frame
    assert "scale_queue_workers" in found["kind"].to_list()


# --- review ----------------------------------------------------------------------------------


def test_rejected_reappears_only_when_evidence_moves_beyond_threshold(tmp_path):
    path = tmp_path / "wh.duckdb"
    write_inputs(path, DAY1, planner_saving=100.0)
    planner_id = recommendation_id("rightsize_down", "agents/planner/planner")
    run_day(path, DAY1)
    decide(path, planner_id, "reject", DAY1 + timedelta(hours=1))

    def planner(day: datetime, saving: float) -> dict:
        write_inputs(path, day, planner_saving=saving)
        rows = run_day(path, day).filter(pl.col("recommendation_id") == planner_id)
        return rows.row(0, named=True)

    threshold = load_playbook().settings["reopen_change"]
    small = 100.0 * (1 + threshold * 0.8)  # within the threshold: stays rejected
    assert planner(DAY1 + timedelta(days=1), small)["review_status"] == "rejected"
    large = 100.0 / (1 - threshold * 1.2)  # beyond it: pending again
    assert planner(DAY1 + timedelta(days=2), large)["review_status"] == "pending"


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected_usd", "slo", "verdict"),
    [
        # $ realised: 80 of 100 expected, nothing worse
        (
            WindowMetrics(cost_usd_month=200, latency_p95_s=0.2),
            WindowMetrics(cost_usd_month=120, latency_p95_s=0.21),
            100.0,
            0.0,
            "effective",
        ),  # fmt: skip
        # only 20 of 100 realised
        (
            WindowMetrics(cost_usd_month=200),
            WindowMetrics(cost_usd_month=180),
            100.0,
            0.0,
            "ineffective",
        ),  # fmt: skip
        # saved money but p95 latency 0.2 s -> 0.5 s
        (
            WindowMetrics(cost_usd_month=200, latency_p95_s=0.2),
            WindowMetrics(cost_usd_month=100, latency_p95_s=0.5),
            100.0,
            0.0,
            "regressed",
        ),  # fmt: skip
        # new OOM kills after a cut
        (
            WindowMetrics(cost_usd_month=200, oom_kills_per_day=0.0),
            WindowMetrics(cost_usd_month=100, oom_kills_per_day=0.5),
            100.0,
            0.0,
            "regressed",
        ),  # fmt: skip
        # size-up: OOM kills stopped
        (
            WindowMetrics(oom_kills_per_day=0.3),
            WindowMetrics(oom_kills_per_day=0.0),
            -5.0,
            0.8,
            "effective",
        ),  # fmt: skip
        # size-up: nothing improved
        (
            WindowMetrics(oom_kills_per_day=0.3, latency_p95_s=0.2),
            WindowMetrics(oom_kills_per_day=0.3, latency_p95_s=0.2),
            -5.0,
            0.8,
            "ineffective",
        ),  # fmt: skip
        # error ratio 0.2 % -> 1 %
        (
            WindowMetrics(error_ratio=0.002),
            WindowMetrics(error_ratio=0.01),
            None,
            0.5,
            "regressed",
        ),  # fmt: skip
    ],
)
def test_before_after_classification(before, after, expected_usd, slo, verdict):
    assert classify_outcome(before, after, expected_usd, slo)[0] == verdict


def _usage(path: Path, start: datetime, days: int, cpu_request: float, kill_day: int | None):
    """Planner container usage, 1 pod, hourly, with its request and an optional OOM kill."""
    rows = []
    restarts = 0
    for hour in range(days * 24):
        ts = start + timedelta(hours=hour + 1)
        if kill_day is not None and hour == kill_day * 24 + 5:
            restarts += 1
        rows.append(
            {
                "cluster": "demo",
                "namespace": "agents",
                "workload": "planner",
                "pod": "planner-1",
                "container": "planner",
                "ts": ts.replace(tzinfo=None),
                "cpu_cores": 0.2,
                "memory_working_set_bytes": 0.4 * GIB,
                "cpu_throttled_ratio": 0.0,
                "cpu_request_cores": cpu_request,
                "cpu_limit_cores": None,
                "memory_request_bytes": 2.0 * GIB,
                "memory_limit_bytes": None,
                "restarts": float(restarts),
                "oom_killed": 1.0 if restarts else 0.0,
            }  # fmt: skip
        )
    frame = pl.DataFrame(rows, infer_schema_length=None).cast(
        {"cpu_limit_cores": pl.Float64, "memory_limit_bytes": pl.Float64}
    )
    with wh.connect(path) as con:
        con.execute(
            "CREATE TABLE IF NOT EXISTS container_usage (cluster VARCHAR, namespace VARCHAR, "
            "workload VARCHAR, pod VARCHAR, container VARCHAR, ts TIMESTAMP, cpu_cores DOUBLE, "
            "memory_working_set_bytes DOUBLE, cpu_throttled_ratio DOUBLE, "
            "cpu_request_cores DOUBLE, cpu_limit_cores DOUBLE, memory_request_bytes DOUBLE, "
            "memory_limit_bytes DOUBLE, restarts DOUBLE, oom_killed DOUBLE)"
        )
        con.register("incoming", frame.to_arrow())
        con.execute("INSERT INTO container_usage SELECT * FROM incoming")


@pytest.mark.parametrize(("after_request", "kill", "verdict"),
                         [(0.25, None, "effective"), (0.95, None, "ineffective"),
                          (0.25, 2, "regressed")])  # fmt: skip
def test_validation_on_warehouse_metrics(tmp_path, after_request, kill, verdict):
    """Planner accepted at DAY1 (promised $30/mo: 0.75 core at the compute price book is ~$17):
    CPU request 1 core before, `after_request` after."""
    path = tmp_path / "wh.duckdb"
    _usage(path, DAY1 - timedelta(days=7), 7, 1.0, None)
    _usage(path, DAY1, 7, after_request, kill)
    write_inputs(path, DAY1 - timedelta(days=1), planner_saving=30.0)
    run_day(path, DAY1 - timedelta(days=1))
    planner_id = recommendation_id("rightsize_down", "agents/planner/planner")
    decide(path, planner_id, "accept", DAY1)
    decisions = load_decisions(decisions_store(path))
    with wh.reader(path) as con:
        outcomes = validate_accepted(con, decisions, DAY1 + timedelta(days=7), load_playbook())
        early = validate_accepted(con, decisions, DAY1 + timedelta(days=1), load_playbook())
    assert outcomes["verdict"].to_list() == [verdict], outcomes["detail"].to_list()
    assert early["verdict"].to_list() == ["pending"]


def test_a_bottleneck_seen_last_week_becomes_its_fix():
    from capacity_pipelines.recommendations.findings import bottleneck_findings, recent_bottlenecks

    end = DAY1.replace(tzinfo=None)
    labelled = pl.DataFrame(
        {
            "namespace": ["platform"] * 3 + ["agents"],
            "service": ["postgres"] * 3 + ["coder"],
            "window_start": [end - timedelta(days=2, hours=h) for h in (0, 1)]
            + [end - timedelta(days=9), end - timedelta(days=1)],  # one too old
            "bottleneck_class": ["io_database", "io_database", "io_database", "none"],
            "evidence": ["latency 38x usual while CPU 0.8x", "latency 20x", "old", ""],
        }
    )
    recent = recent_bottlenecks(labelled, DAY1)
    assert recent.height == 1
    row = recent.row(0, named=True)
    # the episode 9 days ago came back within a week (6.96 d watched), the one of 2 days ago
    # has been watched for 2 d since: 1 recurrence (+1 of the prior) in 8.96 d (+7 / ln 2)
    rate = 2 / (8 + 23 / 24 + 7 / math.log(2))
    assert row["probability"] == pytest.approx(1 - math.exp(-7 * rate))
    assert "1 recurrence(s) in 9 d watched after bottlenecks" in row["evidence"]
    found = bottleneck_findings(recent, load_playbook(), observed=True)
    assert found["kind"].to_list() == ["fix_database_bottleneck"]
    assert "seen 2 h in the last 7 d" in found["evidence"][0]
    assert found["source_table"][0] == "service windows (USE rules)"


def test_a_seen_bottleneck_risks_what_the_fleet_learned_not_a_constant():
    """On a fleet whose bottlenecks came once and did not return, one seen last week is listed
    with the learned risk (under 50 %, so not 'at risk'); one going on now keeps its high risk."""
    from capacity_pipelines.recommendations.findings import bottleneck_findings, recent_bottlenecks
    from capacity_pipelines.recommendations.findings.bottleneck import recurrence_rate

    end = DAY1.replace(tzinfo=None)
    past = [  # three past episodes, each alone for the week after it (and a 3-hour one)
        ("platform", "postgres", "io_database", end - timedelta(days=13, hours=h))
        for h in (0, 1, 2)
    ] + [
        ("agents", "coder", "cpu", end - timedelta(days=12)),
        ("agents", "router", "queueing", end - timedelta(days=10)),
    ]
    recent = [
        ("agents", "researcher", "queueing", end - timedelta(days=3)),  # seen, over
        ("agents", "summarizer", "memory", end - timedelta(hours=1)),  # going on now
        ("agents", "summarizer", "memory", end - timedelta(hours=2)),
    ]
    namespace, service, cls, start = zip(*(past + recent), strict=True)
    labelled = pl.DataFrame(
        {
            "namespace": namespace,
            "service": service,
            "window_start": start,
            "bottleneck_class": cls,
            "evidence": ["why"] * len(start),
        }
    )
    since = end - timedelta(days=14)
    # three past episodes watched a week each, researcher's for the 3 days since; summarizer's
    # is not over (seen within 24 h), so not watched
    chance = 1 - math.exp(-7 * 1 / (24 + 7 / math.log(2)))
    assert recurrence_rate(labelled, DAY1, since) == (pytest.approx(chance), 0, pytest.approx(24))
    # episodes that began before `since` are not watched
    assert recurrence_rate(labelled, DAY1, end - timedelta(days=11))[2] == pytest.approx(10)
    rows = {
        r["service"]: r for r in recent_bottlenecks(labelled, DAY1, since).iter_rows(named=True)
    }
    assert set(rows) == {"researcher", "summarizer"}
    assert rows["researcher"]["probability"] == pytest.approx(chance) and chance < 0.3
    assert "0 recurrence(s) in 24 d watched" in rows["researcher"]["evidence"]
    assert rows["summarizer"]["probability"] == pytest.approx(0.5 + 0.1 * 2)
    assert "going on now" in rows["summarizer"]["evidence"]
    found = bottleneck_findings(
        recent_bottlenecks(labelled, DAY1, since), load_playbook(), observed=True
    )
    risk = dict(zip(found["service"], found["slo_risk_avoided"], strict=False))
    assert risk["researcher"] == pytest.approx(chance)  # listed, below the 0.5 of a prediction
    assert risk["summarizer"] == pytest.approx(0.7)


def test_checks_flag_missing_evidence_and_duplicate_ids():
    from capacity_pipelines.recommendations.checks import duplicate_ids, without_evidence

    table = pl.DataFrame(
        {
            "recommendation_id": ["rec-a", "rec-b", "rec-b", "rec-c"],
            "evidence": ["why", " ", "why", None],
        }  # fmt: skip
    )
    assert without_evidence(table) == ["rec-b", "rec-c"]
    assert duplicate_ids(table) == ["rec-b"]
    assert without_evidence(table.head(1)) == [] and duplicate_ids(table.head(1)) == []


def test_runway_findings_scale_out_hpa_and_fold_into_size_up():
    from capacity_pipelines.recommendations.findings import (
        fold_runway_into_size_up,
        runway_findings,
    )

    naive = DAY1.replace(tzinfo=None)
    runway = pl.DataFrame(
        {
            "series_id": [
                "workload_cpu:agents/router",
                "workload_cpu:agents/researcher",
                "workload_memory:agents/planner",
            ],
            "family": ["workload_cpu", "workload_cpu", "workload_memory"],
            "peak_p90": [0.85, 4.0, 1.0e9],
            "capacity": [0.2, 3.0, 6.0e9],
            "saturation_ts": [naive + timedelta(hours=6), naive + timedelta(days=3), None],
            "runway_days": [0.25, 3.0, None],  # planner: not within the horizon
            "note": ["74% of samples at the limit", "", ""],
        }  # fmt: skip
    )
    workloads = pl.DataFrame(
        {
            "namespace": ["agents", "agents"],
            "workload": ["router", "researcher"],
            "replicas": [2.0, 2.0],
            "hpa": [False, True],
            "cpu_request_pod": [0.1, 0.5],
            "memory_request_pod": [GIB / 4, GIB],
        }  # fmt: skip
    )
    uncertainty = pl.DataFrame(
        {"series_id": ["workload_cpu:agents/router"], "forecast_uncertainty": [0.2]}
    )
    found = runway_findings(runway, uncertainty, workloads, load_playbook(), lambda c, m: 10.0)
    rows = {r["target"]: r for r in found.iter_rows(named=True)}
    assert set(rows) == {"agents/router", "agents/researcher"}
    router = rows["agents/router"]
    # 2 replicas x 0.85 / 0.2 / 0.85 -> 10 replicas: 8 more, priced at $10 each (a cost)
    assert router["kind"] == "scale_out" and "by 8 replica" in router["action"]
    assert router["impact_usd_month"] == pytest.approx(-80.0)
    assert router["slo_risk_avoided"] == pytest.approx(1 - 0.25 / 7)
    assert router["confidence"] == pytest.approx(0.8)
    assert rows["agents/researcher"]["kind"] == "hpa_target"
    # a memory size-up does not answer a CPU runway: two lines, one per resource
    memory_up = pl.DataFrame(
        [finding("rightsize_up", "agents/router/router", memory_direction="up")],
        schema=FINDING_SCHEMA,
    )
    kept = fold_runway_into_size_up(pl.concat([found, memory_up]), load_playbook())
    assert "agents/router" in kept["target"].to_list()
    # a CPU size-up of router's container absorbs the CPU runway: one line, its SLO risk
    size_up = pl.DataFrame(
        [finding("rightsize_up", "agents/router/router", slo_risk_avoided=0.3,
                 cpu_direction="up")],
        schema=FINDING_SCHEMA,
    )  # fmt: skip
    folded = fold_runway_into_size_up(pl.concat([found, size_up]), load_playbook())
    assert sorted(folded["target"].to_list()) == ["agents/researcher", "agents/router/router"]
    merged = folded.filter(pl.col("target") == "agents/router/router").row(0, named=True)
    assert merged["slo_risk_avoided"] == pytest.approx(1 - 0.25 / 7)
    assert "0.85 cores reaches capacity" in merged["evidence"]


def test_quota_and_token_savings_findings():
    from dataclasses import replace

    from capacity_pipelines.recommendations.findings import llm_findings, quota_findings
    from capacity_pipelines.tokens.costing import cost_usage
    from capacity_pipelines.tokens.prices import load_price_book

    playbook = load_playbook()
    kind = playbook.kinds["raise_provider_quota"]
    quota = replace(kind, params=kind.params | {"quotas": {"openai/gpt-4o": 1.0e6}})
    playbook = replace(playbook, kinds=playbook.kinds | {"raise_provider_quota": quota})
    naive = DAY1.replace(tzinfo=None)
    forecast = pl.DataFrame(
        {
            "series_id": ["llm_tokens:openai/gpt-4o/reviewer"] * 3,
            "family": ["llm_tokens"] * 3,
            "ts": [naive + timedelta(days=d) for d in (1, 2, 3)],
            "p50": [0.7e6, 0.8e6, 0.9e6],
            "p90": [0.8e6, 1.1e6, 1.2e6],
        }
    )
    [row] = quota_findings(forecast, playbook, DAY1).iter_rows(named=True)
    assert row["target"] == "provider openai/gpt-4o" and row["evidence_value"] == 2.0
    assert row["slo_risk_avoided"] == pytest.approx(1 - 2 / 7)

    steps = pl.datetime_range(DAY1, DAY1 + timedelta(days=2), "1h", eager=True, time_zone="UTC")
    usage = pl.DataFrame(
        {
            "ts": steps,
            "provider": "openai",
            "model": "gpt-4o",
            "agent": "reviewer",
            "input_tokens": 2.0e6,
            "output_tokens": 2.0e5,
            "cache_read_input_tokens": 0.0,
            "cache_write_input_tokens": 0.0,
            "requests": 200.0,
            "service_tier": None,
        }  # fmt: skip
    ).with_columns(pl.col("service_tier").cast(pl.Utf8))
    costed = cost_usage(usage, load_price_book()).with_columns(pl.lit("reviewer").alias("service"))
    found, notes = llm_findings(costed, playbook, {"reviewer": "agents"})
    routing = found.filter(pl.col("kind") == "model_routing").row(0, named=True)
    assert routing["target"] == "llm agents/reviewer" and routing["impact_usd_month"] > 0
    assert "gpt-4o-mini" in routing["evidence"]  # the cheaper sibling it is priced at
    assert any("filter_intermediate_messages" in n for n in notes)  # no request id: a note


def test_a_raise_claims_no_slo_risk_of_its_own_but_is_kept_when_use_exceeds_the_request():
    """Use above a request is not saturation: a size-up claims an SLO risk only from OOM kills
    (or the runway / bottleneck at a limit that joins it); where use exceeds the request it
    stays on the list whatever it costs, a raise to a floor never reached does not."""
    from capacity_pipelines.recommendations.findings import rightsizing_findings

    row = (
        rightsizing_rows(DAY1)
        .filter(pl.col("container") == "summarizer")
        .with_columns(pl.lit(0, dtype=pl.Int64).alias("oom_kills"))
    )

    def peaks(memory_max: float) -> pl.DataFrame:
        return pl.DataFrame({"namespace": ["agents"], "workload": ["summarizer"],
                             "container": ["summarizer"], "cpu_p95": [0.1],
                             "memory_max": [memory_max]})  # fmt: skip

    [below] = rightsizing_findings(row, peaks(0.4 * GIB), load_playbook()).iter_rows(named=True)
    assert below["slo_risk_avoided"] == 0.0 and not below["use_above_request"]
    [above] = rightsizing_findings(row, peaks(0.9 * GIB), load_playbook()).iter_rows(named=True)
    assert above["slo_risk_avoided"] == 0.0 and above["use_above_request"]
    killed = row.with_columns(pl.lit(2, dtype=pl.Int64).alias("oom_kills"))
    [oom] = rightsizing_findings(killed, peaks(0.9 * GIB), load_playbook()).iter_rows(named=True)
    assert oom["slo_risk_avoided"] == pytest.approx(0.8)  # 0.4 + 0.2 per kill


def test_a_runway_finding_says_when_its_history_holds_unusual_hours():
    """The reviewer learns that the week behind a runway holds an anomaly (a step is new demand,
    a spike may be an incident) from the evidence line itself."""
    from capacity_pipelines.recommendations.findings import runway_findings

    naive = DAY1.replace(tzinfo=None)
    runway = pl.DataFrame(
        {
            "series_id": ["workload_cpu:agents/router", "workload_cpu:agents/researcher"],
            "family": ["workload_cpu", "workload_cpu"],
            "peak_p90": [0.85, 4.0],
            "capacity": [0.2, 3.0],
            "saturation_ts": [naive + timedelta(hours=6), naive + timedelta(days=3)],
            "runway_days": [0.25, 3.0],
            "note": ["", ""],
        }  # fmt: skip
    )
    workloads = pl.DataFrame(
        {"namespace": ["agents"] * 2, "workload": ["router", "researcher"], "replicas": [2.0] * 2,
         "hpa": [False] * 2, "cpu_request_pod": [0.1] * 2, "memory_request_pod": [GIB] * 2}
    )  # fmt: skip
    anomalies = pl.DataFrame(
        {
            "series_id": ["workload_cpu:agents/router"] * 2,
            "ts": [naive - timedelta(days=2, hours=3), naive - timedelta(hours=10)],
            "kind": ["spike", "level_shift"],
        }  # fmt: skip
    )
    found = runway_findings(
        runway, pl.DataFrame(schema={"series_id": pl.Utf8, "forecast_uncertainty": pl.Float64}),
        workloads, load_playbook(), None, anomalies,
    )  # fmt: skip
    evidence = dict(zip(found["target"], found["evidence"], strict=True))
    latest = naive - timedelta(hours=10)
    assert evidence["agents/router"].endswith(
        f"; 2 unusual hours this week (latest: a level shift {latest:%a %d %b %H:%M} UTC)"
    )
    assert "unusual" not in evidence["agents/researcher"]

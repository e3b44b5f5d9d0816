"""`capacity recs`: listing, filters, JSON, decisions, errors, and decisions that survive a run
killed with SIGKILL while it rewrites the recommendations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import duckdb
import pytest

from capacity_pipelines.cli import main as capacity_main
from capacity_pipelines.recommendations.identity import recommendation_id
from tests.test_recommendations import DAY1, run_day, write_inputs

PLANNER = recommendation_id("rightsize_down", "agents/planner/planner")
SUMMARIZER = recommendation_id("rightsize_up", "agents/summarizer/summarizer")
POSTGRES = recommendation_id("fix_database_bottleneck", "service platform/postgres")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPACITY_WAREHOUSE", str(tmp_path / "wh.duckdb"))
    monkeypatch.setenv("CAPACITY_SNAPSHOT", str(tmp_path / "snap.duckdb"))
    monkeypatch.setenv("USER", "carol")
    write_inputs(tmp_path / "wh.duckdb", DAY1)
    run_day(tmp_path / "wh.duckdb", DAY1)
    return tmp_path


def recs(*argv: str) -> int:
    return capacity_main(["recs", *argv])


def test_list_says_what_where_why_impact_effort_risk_confidence(home, capsys):
    assert recs("list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("3 of 3 recommendations as of 2026-10-05")
    planner = out[out.index(PLANNER) :]
    assert "agents/planner/planner" in planner.splitlines()[0]
    assert "Lower planner CPU request 1 -> 250m" in planner
    assert "impact $120/mo" in planner and "effort 1.0" in planner
    assert "risk 0." in planner and "confidence 0.90" in planner and "why: " in planner
    assert "SLO risk -0.80" in out  # the summarizer's OOM kills


def test_filters_and_json(home, capsys):
    assert recs("list", "--kind", "rightsize_down", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["recommendation_id"] for r in rows] == [PLANNER]
    for column in ("rank", "action", "evidence", "impact_usd_month", "effort_score",
                   "risk_score", "confidence", "priority", "roi", "review_status"):  # fmt: skip
        assert column in rows[0]
    assert recs("list", "--team", "platform", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["recommendation_id"] for r in rows] == [POSTGRES]
    assert recs("list", "--service", "agents/summarizer", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["recommendation_id"] for r in rows] == [SUMMARIZER]


def test_decisions_are_stored_with_who_when_why_and_shown(home, capsys):
    assert recs("accept", PLANNER[:9], "-m", "cheap win") == 0
    assert "accepted by carol" in capsys.readouterr().out
    assert recs("comment", PLANNER, "--by", "dave", "-m", "applied in PR 42") == 0
    assert recs("defer", SUMMARIZER, "--by", "erin") == 0
    capsys.readouterr()
    with duckdb.connect(str(home / "wh.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT recommendation_id, decision, decided_by, reason, evidence_fingerprint "
            "FROM recommendation_decisions ORDER BY decided_at"
        ).fetchall()
    assert [r[:4] for r in rows] == [
        (PLANNER, "accept", "carol", "cheap win"),
        (PLANNER, "comment", "dave", "applied in PR 42"),
        (SUMMARIZER, "defer", "erin", None),
    ]
    assert all(r[4] for r in rows)
    # the snapshot was republished: readers see the decisions without a pipeline run
    assert recs("list", "--json") == 0
    status = {
        r["recommendation_id"]: r["review_status"]
        for r in map(json.loads, capsys.readouterr().out.splitlines())
    }
    assert status[PLANNER] == "accepted" and status[SUMMARIZER] == "deferred"
    assert recs("show", PLANNER) == 0
    shown = capsys.readouterr().out
    assert "risk_headroom" in shown and "applied in PR 42" in shown
    assert recs("list", "--status", "accepted", "--json") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_bad_input_is_one_line_and_writes_nothing(home, capsys):
    assert recs("accept", "rec-nope") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no recommendation 'rec-nope'" in err
    assert recs("accept", "rec-") == 2
    assert "ambiguous" in capsys.readouterr().err
    with duckdb.connect(str(home / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM recommendation_decisions").fetchone() == (0,)


def test_busy_warehouse_gives_a_clear_message(home, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import duckdb, time
            con = duckdb.connect({str(home / "wh.duckdb")!r})
            print("locked", flush=True)
            time.sleep(30)
        """),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert recs("reject", PLANNER, "--wait", "1") == 2
        err = capsys.readouterr().err
        assert "locked by another process" in err and err.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()


WRITER = """
import sys
from datetime import timedelta
from tests.test_recommendations import DAY1, run_day
if len(sys.argv) > 2:
    from tests.faults import crash_at
    crash_at(sys.argv[2])
print("running", flush=True)
for i in range(10_000):
    run_day(__import__("pathlib").Path(sys.argv[1]), DAY1)
    print(i, flush=True)
"""


def _decisions(path):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT * FROM recommendation_decisions ORDER BY decided_at").fetchall()


def _as_of_rows(path):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(
            "SELECT count(*) FROM recommendations WHERE as_of = ?", [DAY1.replace(tzinfo=None)]
        ).fetchone()[0]


def test_sigkill_during_a_rewrite_loses_no_decision(home):
    assert recs("accept", PLANNER, "-m", "keep me") == 0
    assert recs("reject", POSTGRES, "-m", "and me") == 0
    decided = _decisions(home / "wh.duckdb")
    env = dict(os.environ, PYTHONPATH=REPO)
    for delay in (0.3, 0.7, 1.1):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(home / "wh.duckdb")],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        assert writer.stdout.readline().strip() == "running"
        writer.stdout.readline()  # at least one full rewrite done
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        assert _decisions(home / "wh.duckdb") == decided
        assert _as_of_rows(home / "wh.duckdb") == 3  # old or new day, never a hole


def test_crash_between_delete_and_insert_keeps_the_day_and_decisions(home):
    assert recs("accept", PLANNER) == 0
    decided = _decisions(home / "wh.duckdb")
    env = dict(os.environ, PYTHONPATH=REPO)
    crashed = subprocess.run(
        [sys.executable, "-c", WRITER, str(home / "wh.duckdb"), "after_delete"],
        cwd=REPO,
        env=env,
        check=False,
        stdout=subprocess.DEVNULL,
    )
    assert crashed.returncode == 3  # died mid-transaction (tests/faults.py)
    assert _decisions(home / "wh.duckdb") == decided
    assert _as_of_rows(home / "wh.duckdb") == 3
    # and the next (normal) run still sees the decision
    table = run_day(home / "wh.duckdb", DAY1 + timedelta(days=0))
    assert table.filter(table["recommendation_id"] == PLANNER)["review_status"][0] == "accepted"


def test_accepted_recommendation_shows_its_checked_outcome(tmp_path, monkeypatch, capsys):
    from tests.test_recommendations import _usage
    from tests.test_recommendations import decide as decide_at

    path = tmp_path / "wh.duckdb"
    monkeypatch.setenv("CAPACITY_WAREHOUSE", str(path))
    monkeypatch.setenv("CAPACITY_SNAPSHOT", str(tmp_path / "snap.duckdb"))
    _usage(path, DAY1 - timedelta(days=7), 7, 1.0, None)
    _usage(path, DAY1, 7, 0.25, None)  # the cut was applied: 1 core -> 250m
    write_inputs(path, DAY1 - timedelta(days=1), planner_saving=30.0)
    run_day(path, DAY1 - timedelta(days=1))
    decide_at(path, PLANNER, "accept", DAY1)
    later = DAY1 + timedelta(days=7)
    write_inputs(path, later, planner_saving=30.0)
    run_day(path, later)
    assert recs("show", PLANNER) == 0
    assert "checked after the change: effective: realised $" in capsys.readouterr().out

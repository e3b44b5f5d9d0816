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
import polars as pl
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
    assert "SLO breach risk avoided: 80%" in out  # the summarizer's OOM kills
    assert "SLO risk -" not in out  # a chance removed, not a signed score


def test_filters_and_json(home, capsys):
    assert recs("list", "--kind", "rightsize_down", "--jsonl") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["recommendation_id"] for r in rows] == [PLANNER]
    for column in ("rank", "action", "evidence", "impact_usd_month", "effort_score",
                   "risk_score", "confidence", "priority", "roi", "review_status"):  # fmt: skip
        assert column in rows[0]
    assert recs("list", "--team", "platform", "--jsonl") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["recommendation_id"] for r in rows] == [POSTGRES]
    assert recs("list", "--service", "agents/summarizer", "--jsonl") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["recommendation_id"] for r in rows] == [SUMMARIZER]


def test_decisions_are_stored_with_who_when_why_and_shown(home, capsys):
    assert recs("accept", PLANNER[:9], "-m", "cheap win") == 0
    assert "accepted by carol" in capsys.readouterr().out
    assert recs("comment", PLANNER, "--by", "dave", "-m", "applied in PR 42") == 0
    assert recs("defer", SUMMARIZER, "--by", "erin") == 0
    capsys.readouterr()
    with duckdb.connect(str(home / "decisions.duckdb"), read_only=True) as con:
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
    assert recs("list", "--jsonl") == 0
    status = {
        r["recommendation_id"]: r["review_status"]
        for r in map(json.loads, capsys.readouterr().out.splitlines())
    }
    assert status[PLANNER] == "accepted" and status[SUMMARIZER] == "deferred"
    assert recs("show", PLANNER) == 0
    shown = capsys.readouterr().out
    assert "risk_headroom" in shown and "applied in PR 42" in shown
    assert recs("list", "--status", "accepted", "--jsonl") == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_bad_input_is_one_line_and_writes_nothing(home, capsys):
    assert recs("accept", "rec-nope") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no recommendation 'rec-nope'" in err
    assert recs("accept", "rec-") == 2
    assert "ambiguous" in capsys.readouterr().err
    assert not (home / "decisions.duckdb").exists()  # nothing was written


def _hold(path) -> subprocess.Popen:
    """A process holding DuckDB's write lock on `path` for 30 s (a DuckDB shell, say)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import duckdb, time
            con = duckdb.connect({str(path)!r})
            print("locked", flush=True)
            time.sleep(30)
        """),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_review_never_waits_for_the_warehouse(home, capsys):
    """Decisions have their own store and the list comes from the snapshot: a pipeline (here
    a process holding the warehouse's lock) cannot block a decision."""
    from capacity_pipelines import warehouse as wh

    wh.publish_snapshot(home / "wh.duckdb", home / "snap.duckdb")
    holder = _hold(home / "wh.duckdb")
    try:
        began = time.monotonic()
        assert recs("reject", PLANNER, "--wait", "1") == 0
        assert time.monotonic() - began < 5
        assert "rejected by carol" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()
    assert [row[1:3] for row in _decisions(home / "wh.duckdb")] == [(PLANNER, "reject")]


def test_busy_decisions_store_gives_a_clear_message(home, capsys):
    assert recs("comment", PLANNER, "-m", "first") == 0  # the store exists
    capsys.readouterr()
    holder = _hold(home / "decisions.duckdb")
    try:
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
    with duckdb.connect(str(path.with_name("decisions.duckdb")), read_only=True) as con:
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


def test_a_decision_survives_deleting_and_rebuilding_the_warehouse(home, capsys):
    """The warehouse is rebuildable from Prometheus; the decisions are not, and live apart."""
    assert recs("accept", PLANNER, "-m", "keep me") == 0
    (home / "wh.duckdb").unlink()
    write_inputs(home / "wh.duckdb", DAY1)
    table = run_day(home / "wh.duckdb", DAY1)
    assert table.filter(table["recommendation_id"] == PLANNER)["review_status"][0] == "accepted"
    capsys.readouterr()
    assert recs("list", "--status", "accepted", "--jsonl") == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["recommendation_id"] == PLANNER


def test_decisions_kept_by_an_older_warehouse_move_to_their_store(home, capsys):
    """Before the store, decisions lived in the warehouse: they are shown, and moved (once)
    at the next decision, then dropped from the warehouse."""
    from capacity_pipelines import warehouse as wh
    from capacity_pipelines.recommendations.review import record_decision

    with wh.writer(home / "wh.duckdb") as con:
        row = con.execute(
            "SELECT * FROM recommendations WHERE recommendation_id = ?", [POSTGRES]
        ).pl()
        record_decision(con, row.row(0, named=True), "reject", "old-sre", "from before")
    assert recs("list", "--all", "--jsonl") == 0
    listed = {json.loads(x)["recommendation_id"]: json.loads(x) for x in
              capsys.readouterr().out.splitlines()}  # fmt: skip
    assert listed[POSTGRES]["review_status"] == "rejected"
    assert recs("accept", PLANNER) == 0
    assert recs("comment", PLANNER, "-m", "again") == 0  # adoption is not repeated
    decided = [(r[1], r[2], r[3]) for r in _decisions(home / "wh.duckdb")]
    assert decided == [(POSTGRES, "reject", "old-sre"), (PLANNER, "accept", "carol"),
                       (PLANNER, "comment", "carol")]  # fmt: skip
    with duckdb.connect(str(home / "wh.duckdb"), read_only=True) as con:
        tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "recommendation_decisions" not in tables


# --- review rough edges (issue 17, item 7) -------------------------------------------------------


def _capacity(home, *argv: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "CAPACITY_WAREHOUSE": str(home / "wh.duckdb"),
           "CAPACITY_SNAPSHOT": str(home / "snap.duckdb"), "CAPACITY_REPORTS": str(home / "r")}
    return subprocess.Popen([sys.executable, "-m", "capacity_pipelines.cli", *argv], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            **popen)  # fmt: skip


@pytest.mark.parametrize("output", [[], ["--json"], ["--jsonl"]])
def test_a_reader_that_stops_early_gets_no_traceback(home, output):
    """`recs list --json | head`: the reader closes the pipe before the list is written."""
    process = _capacity(home, "recs", "list", *output)
    process.stdout.close()  # `head` has read what it wanted and gone
    error = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141  # as a process ended by SIGPIPE
    assert "Traceback" not in error and "BrokenPipeError" not in error, error


def test_json_is_one_document_and_jsonl_one_object_per_line(home, capsys):
    assert recs("list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)  # the whole output parses as one document
    assert isinstance(listed, list) and len(listed) == 3
    assert recs("list", "--jsonl") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["recommendation_id"] for line in lines] == [
        r["recommendation_id"] for r in listed
    ]


def test_show_gives_the_whole_evidence_plain_numbers_and_the_patch(home, capsys):
    """The detail view does not cut the evidence, prints numbers as people write them, points
    to the GitOps patch the rightsizing asset published and states the SLO side unsigned."""
    from capacity_pipelines.rightsizing.outputs import build_exports, publish_exports
    from tests.test_recommendations import rightsizing_rows

    long = "; ".join(f"reason {i}: CPU p95 {i * 11}m over {i} days" for i in range(40))
    for store in ("wh.duckdb", "snap.duckdb"):
        if (home / store).exists():
            with duckdb.connect(str(home / store)) as con:
                con.execute("UPDATE recommendations SET evidence = ?, impact_usd_month = 21090.4 "
                            "WHERE recommendation_id = ?", [long, PLANNER])  # fmt: skip
    rows = rightsizing_rows(DAY1).with_columns(
        cpu_request_quantity=pl.lit("250m"), memory_request_quantity=pl.lit("512Mi"),
        cpu_limit_quantity=pl.lit(None, pl.Utf8), memory_limit_quantity=pl.lit("512Mi"),
    )  # fmt: skip
    publish_exports(build_exports(rows), home / "r" / "latest" / "rightsizing")
    assert recs("show", PLANNER, "--reports", str(home / "r")) == 0
    out = capsys.readouterr().out
    assert long in out and "…" not in out
    assert "e+0" not in out and "21,090" in out
    assert f"patch: {home / 'r' / 'latest' / 'rightsizing' / 'patches'}" in out
    assert "agents__planner.yaml" in out
    assert recs("show", SUMMARIZER) == 0
    out = capsys.readouterr().out
    assert "SLO breach risk avoided: " in out and "SLO risk -" not in out
    assert recs("list") == 0  # the list still cuts it to a few lines
    listed = capsys.readouterr().out
    assert long not in listed and "…" in listed

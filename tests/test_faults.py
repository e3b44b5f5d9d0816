"""Faults, bad input and hostile labels, against the real Prometheus and the real DuckDB file.

Every server is a real Prometheus on 127.0.0.1 (backfilled with promtool); misbehaviour comes
from a loopback proxy in front of it (tests/flaky_proxy.py). Each test bounds its own time and
traffic (a handful of requests over one or two days of a small fleet). What is asserted is the
contract of DESIGN.md: retries as configured, one clear final error naming the query, and never a
partial write: the warehouse holds the same rows before and after a failed run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from capacity_pipelines import warehouse
from capacity_pipelines.common.paths import REPO_ROOT
from capacity_pipelines.defs.ingest.assets import EXTRACTION_RETRY, build_extraction_asset
from capacity_pipelines.defs.resources import (
    MetricSourceResource,
    PrometheusResource,
    WarehouseResource,
    prometheus_from_environment,
)
from capacity_pipelines.ingest.catalog import load_catalog, render_promql
from capacity_pipelines.ingest.extract import extract_table
from capacity_pipelines.ingest.sources import (
    FileSource,
    PrometheusSettings,
    PrometheusSource,
    SourceError,
)
from capacity_pipelines.ingest.sources.openmetrics import ExportFormatError
from capacity_pipelines.ingest.sources.prometheus import SeriesLimitError
from capacity_pipelines.ingest.window import ingest_window
from tests.flaky_proxy import FlakyProxy
from tests.prometheus_server import PrometheusServer, backfill, prometheus_available
from tests.synthetic_fleet import write_container_fleet

DAY1 = datetime(2026, 9, 28, tzinfo=UTC)  # the partitions' first day (defs/partitions.py)
DAY2 = DAY1 + timedelta(days=1)
PARTITION = DAY1.strftime("%Y-%m-%d")
# The interpreter running the tests, whatever its venv is called: never a path into the clone.
CAPACITY = [sys.executable, "-m", "capacity_pipelines.cli"]
needs_prometheus = pytest.mark.usefixtures("require_prometheus")

# Label values an attacker (or an unlucky naming scheme) could put in a pod or container label.
HOSTILE_LABELS = (
    'a"}) or vector(1) #',
    "x'; DROP TABLE container_usage; --",
    "<script>alert(1)</script>",
)


def _escape_om(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def write_hostile_fleet(path: Path, start_s: int, steps: int = 24, interval_s: int = 300) -> None:
    """Memory gauges for one container per hostile label value (as container and pod label)."""
    lines = ["# TYPE container_memory_working_set_bytes gauge"]
    for index, hostile in enumerate(HOSTILE_LABELS):
        labels = (
            f'namespace="hostile",pod="{_escape_om(hostile)}-{index}",'
            f'container="{_escape_om(hostile)}"'
        )
        for step in range(steps):
            ts = start_s + step * interval_s
            lines.append(f"container_memory_working_set_bytes{{{labels}}} {1e8 + step} {ts}")
    path.write_text("\n".join(lines) + "\n# EOF\n")


def _merge_exports(target: Path, *parts: Path) -> None:
    """One OpenMetrics file from several (promtool wants one `# EOF`, families contiguous)."""
    text = "".join(p.read_text().replace("# EOF\n", "") for p in parts)
    target.write_text(text + "# EOF\n")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A real Prometheus over 3 containers x 2 days at 5 min, plus hostile-label containers."""
    if not prometheus_available():
        pytest.skip("needs the Debian prometheus package (prometheus + promtool on PATH)")
    root = tmp_path_factory.mktemp("faults")
    normal, hostile = root / "normal.om", root / "hostile.om"
    write_container_fleet(normal, 3, int(DAY1.timestamp()), days=2, interval_s=300)
    write_hostile_fleet(hostile, int(DAY1.timestamp()))
    export = root / "fleet.om"
    _merge_exports(export, normal, hostile)
    backfill(export, root / "data")
    with PrometheusServer(root / "data") as server:
        yield root, server


def fast_settings(url: str, **overrides) -> PrometheusSettings:
    """Short timeouts and backoff, one connection: tests stay fast and request counts exact."""
    base = dict(url=url, timeout_s=5.0, retries=2, backoff_s=0.05, concurrency=1)
    return PrometheusSettings(**{**base, **overrides})


def warehouse_rows(db: Path) -> dict[str, list[tuple]]:
    """Every row of every table (written_at aside), sorted: the warehouse's whole state."""
    with warehouse.connect(db, read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        state = {}
        for name in tables:
            frame = con.execute(f'SELECT * FROM "{name}"').pl()
            state[name] = sorted(frame.drop("written_at", strict=False).rows(), key=repr)
    return state


@pytest.fixture
def filled_warehouse(fleet, tmp_path) -> Path:
    """A warehouse holding day 1 of container_usage, written from the undisturbed server."""
    _, server = fleet
    db = tmp_path / "wh.duckdb"
    source = PrometheusSource(fast_settings(server.url))
    result = ingest_window(source, load_catalog(), "container_usage", DAY1, DAY2, db)
    assert result.rows_written > 0
    return db


# --- Prometheus misbehaving -------------------------------------------------------------------


@needs_prometheus
def test_prometheus_killed_then_restarted_dagster_retry_ends_identical(tmp_path: Path):
    """The real asset, its real RetryPolicy: the server dies mid-run and comes back."""
    export = tmp_path / "fleet.om"
    write_container_fleet(export, 2, int(DAY1.timestamp()), days=1, interval_s=300)
    backfill(export, tmp_path / "data")
    server = PrometheusServer(tmp_path / "data").start()
    restarted = threading.Event()

    def kill_on_second_query(n: int) -> None:
        if n == 2:  # one column answered, the second one finds the server gone
            server.kill()

            def come_back() -> None:
                time.sleep(1.0)
                server.start()  # same port, same TSDB
                restarted.set()

            threading.Thread(target=come_back, daemon=True).start()

    catalog = load_catalog()
    asset = build_extraction_asset(catalog, "container_usage")
    try:
        with FlakyProxy(server.url, before_forward=kill_on_second_query) as proxy:
            clean = tmp_path / "clean.duckdb"
            disturbed = tmp_path / "disturbed.duckdb"
            with dg.DagsterInstance.ephemeral() as instance:
                result = dg.materialize(
                    [asset],
                    partition_key=PARTITION,
                    instance=instance,
                    raise_on_error=False,
                    resources={
                        "warehouse": WarehouseResource(
                            path=str(disturbed), snapshot_path=str(tmp_path / "s1")
                        ),
                        "prometheus": PrometheusResource(url=proxy.url, retries=1),
                        "metrics": MetricSourceResource(),
                    },
                )
                retried = [
                    e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"
                ]
        assert restarted.is_set()
        assert result.success, "the retried run should finish once Prometheus is back"
        # The first attempt failed on the dead server and was retried. The policy's jitter can
        # put a retry before the server is back (a 0.2 s delay was seen in CI), so one more
        # retry is allowed; the policy's limit is not.
        assert 1 <= len(retried) <= EXTRACTION_RETRY.max_retries
        # the undisturbed run, straight to the restarted server
        ingest_window(
            PrometheusSource(fast_settings(server.url)),
            catalog,
            "container_usage",
            DAY1,
            DAY2,
            clean,
        )
    finally:
        server.stop()
    got, want = warehouse_rows(disturbed), warehouse_rows(clean)
    assert len(got["container_usage"]) == 2 * 288
    assert got["container_usage"] == want["container_usage"]
    # one log row for the window, with the same counts (the source URL differs: proxy vs direct)
    assert [r[4:] for r in got["extraction_log"]] == [r[4:] for r in want["extraction_log"]]


def _extract(url: str, **overrides):
    return extract_table(
        PrometheusSource(fast_settings(url, **overrides)),
        load_catalog(),
        "container_usage",
        DAY1,
        DAY2,
    )


@needs_prometheus
@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("delay", {"delay_s": 1.5}),  # slower than the client's 0.5 s timeout
        ("drop", {}),  # connection closed without an answer
        ("truncate", {}),  # half the JSON, then the connection is cut
    ],
)
def test_transient_faults_are_retried_and_give_the_undisturbed_rows(fleet, fault, options):
    _, server = fleet
    want = _extract(server.url).frame
    with FlakyProxy(server.url, failures=2, fault=fault, **options) as proxy:
        got = _extract(proxy.url, timeout_s=0.5, retries=2).frame
    assert got.equals(want)
    columns = len(load_catalog().table("container_usage").columns)
    owner_requests = [path for path in proxy.paths if "_owner" in path]
    # two failed tries, then one answer per column
    assert len(proxy.paths) - len(owner_requests) == columns + 2
    # kube_pod_owner and kube_replicaset_owner, each over the day and the hour before (25
    # hourly points): two requests each
    assert len(owner_requests) == 4


@needs_prometheus
@pytest.mark.parametrize(
    ("fault", "options", "message"),
    [
        (
            "delay",
            {"delay_s": 1.5},
            "unreachable after 2 retries (a heavy query: lower CAPACITY_PROMETHEUS_CHUNK_HOURS "
            "or raise CAPACITY_PROMETHEUS_TIMEOUT): ConnectionError",
        ),
        ("drop", {}, "unreachable after 2 retries: ConnectionError"),
        ("truncate", {}, "answered badly 3 times (2 retries): answer cut short"),
        (
            "body",
            {"body": b'{"status":"success","data":{"result":[{"metric":{}'},
            "answered badly 3 times (2 retries): answer is not query_range JSON",
        ),
        (
            "body",
            {"body": b"<html><body>502 Bad Gateway</body></html>"},
            "answer is not query_range JSON",
        ),
        ("body", {"body": b'{"status":"success","data":{}}'}, "KeyError"),
        ("status", {"status": 500}, "refused: HTTP 500: injected failure"),
    ],
    ids=["slow", "dropped", "truncated", "cut-json", "html", "no-result", "5xx"],
)
def test_persistent_faults_fail_clearly_after_retries_and_write_nothing(
    fleet, filled_warehouse: Path, fault, options, message
):
    _, server = fleet
    before = warehouse_rows(filled_warehouse)
    with FlakyProxy(server.url, failures=100, fault=fault, **options) as proxy:
        source = PrometheusSource(fast_settings(proxy.url, timeout_s=0.5, retries=2))
        with pytest.raises(SourceError) as err:
            ingest_window(source, load_catalog(), "container_usage", DAY1, DAY2, filled_warehouse)
    text = str(err.value)
    assert message in text
    assert "\n" not in text
    # it names the query, the window and the server
    assert "query_range 'sum by (cluster, namespace, pod, container)" in text
    assert "[2026-09-28T00:00Z..2026-09-28T23:55Z]" in text and proxy.url in text
    assert len(proxy.paths) == 3  # the first try and the two configured retries, then stop
    assert warehouse_rows(filled_warehouse) == before


@needs_prometheus
def test_samples_that_are_not_numbers_are_refused(fleet):
    _, server = fleet
    body = (
        b'{"status":"success","data":{"resultType":"matrix","result":'
        b'[{"metric":{"namespace":"a","pod":"p","container":"c"},"values":[[1790553900,"abc"]]}]}}'
    )
    with (
        FlakyProxy(server.url, failures=100, fault="body", body=body) as proxy,
        pytest.raises(SourceError, match="samples that cannot be read") as err,
    ):
        _extract(proxy.url)
    assert "query_range" in str(err.value)


@needs_prometheus
def test_prometheus_11000_points_error_is_not_retried_and_quoted(fleet, filled_warehouse):
    """A step too fine for the window: Prometheus' own message, once, nothing written."""
    _, server = fleet
    before = warehouse_rows(filled_warehouse)

    def too_fine(path: str) -> str:
        return re.sub(r"step=[^&]+", "step=1", path)  # 86,400 points per series

    with FlakyProxy(server.url, rewrite=too_fine) as proxy:
        source = PrometheusSource(fast_settings(proxy.url))
        with pytest.raises(SourceError) as err:
            ingest_window(source, load_catalog(), "container_usage", DAY1, DAY2, filled_warehouse)
    text = str(err.value)
    assert "refused: HTTP 400: exceeded maximum resolution of 11,000 points per timeseries" in text
    assert "query_range 'sum by (cluster, namespace, pod, container)" in text
    assert len(proxy.paths) == 1  # a 400 is not worth retrying
    assert warehouse_rows(filled_warehouse) == before


# --- label-cardinality explosion ---------------------------------------------------------------

EXPLOSION_SERIES = 30_000


@pytest.fixture(scope="module")
def exploded(tmp_path_factory):
    """A real Prometheus whose memory gauge has 30,000 series (a per-request pod label)."""
    if not prometheus_available():
        pytest.skip("needs the Debian prometheus package (prometheus + promtool on PATH)")
    root = tmp_path_factory.mktemp("explosion")
    export = root / "explosion.om"
    start = int(DAY1.timestamp())
    with export.open("w") as out:
        out.write("# TYPE container_memory_working_set_bytes gauge\n")
        for i in range(EXPLOSION_SERIES):
            labels = f'namespace="agents",pod="req-{i:05d}",container="app"'
            for step in range(3):
                out.write(
                    f"container_memory_working_set_bytes{{{labels}}} {1e8 + i} "
                    f"{start + step * 300}\n"
                )
        out.write("# EOF\n")
    backfill(export, root / "data")
    with PrometheusServer(root / "data") as server:
        yield server


def _memory_only_catalog():
    catalog = load_catalog()
    table = catalog.table("container_usage")
    memory = next(q for q in table.columns if q.column == "memory_working_set_bytes")
    table = dataclasses.replace(table, columns=(memory,))
    return dataclasses.replace(catalog, tables={"container_usage": table})


def _peak_python_mb(action) -> tuple[float, object]:
    tracemalloc.start()
    try:
        outcome = action()
    except Exception as exc:  # noqa: BLE001 (the outcome is asserted by the caller)
        outcome = exc
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6, outcome


@needs_prometheus
@pytest.mark.timeout(120)
def test_cardinality_explosion_is_capped_with_bounded_memory(exploded, monkeypatch, caplog):
    catalog = _memory_only_catalog()
    end = DAY1 + timedelta(minutes=15)

    def run(cap: int):
        monkeypatch.setenv("CAPACITY_MAX_SERIES_PER_QUERY", str(cap))
        source = PrometheusSource(settings_from_env(exploded.url, retries=0))
        return lambda: extract_table(source, catalog, "container_usage", DAY1, end)

    # above the cap: refused while streaming, before the answer is parsed
    capped_mb, refused = _peak_python_mb(run(2_000))
    assert isinstance(refused, SeriesLimitError)
    assert "matched more than 2,000 series" in str(refused)
    assert "CAPACITY_MAX_SERIES_PER_QUERY" in str(refused) and "query_range" in str(refused)
    # under a cap raised on purpose: all series arrive, with a warning near the cap
    with caplog.at_level(logging.WARNING, logger="capacity_pipelines.ingest.sources.prometheus"):
        full_mb, extracted = _peak_python_mb(run(50_000))
    assert not isinstance(extracted, Exception), extracted
    assert extracted.series_count == EXPLOSION_SERIES
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"returned {EXPLOSION_SERIES} series, over half the cap of 50000" in w for w in warning
    )
    # memory: the refused answer costs a fraction of parsing the whole explosion
    assert capped_mb < full_mb / 5, (capped_mb, full_mb)
    assert capped_mb < 50


def test_default_series_cap_is_documented_and_read_from_the_environment(monkeypatch):
    from capacity_pipelines.ingest.sources.prometheus import DEFAULT_MAX_SERIES

    monkeypatch.delenv("CAPACITY_MAX_SERIES_PER_QUERY", raising=False)
    assert settings_from_env("http://127.0.0.1:9").max_series == DEFAULT_MAX_SERIES
    monkeypatch.setenv("CAPACITY_MAX_SERIES_PER_QUERY", "1234")
    assert settings_from_env("http://127.0.0.1:9").max_series == 1234
    ops = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert "CAPACITY_MAX_SERIES_PER_QUERY" in ops and f"{DEFAULT_MAX_SERIES:,}" in ops


def test_prometheus_special_values_decode_and_nan_is_a_gap():
    from capacity_pipelines.ingest.sources.prometheus import _decode

    result = [
        {
            "metric": {"namespace": "a", "pod": "p", "container": "c"},
            "values": [[1, "1.5"], [2, "NaN"], [3, "+Inf"], [4, "-Inf"], [5, "2e3"]],
        }
    ]
    points = _decode(result, ("namespace", "pod", "container")).points
    assert points["ts"].to_list() == [1.0, 3.0, 4.0, 5.0]  # the NaN sample is a gap
    assert points["value"].to_list() == [1.5, math.inf, -math.inf, 2000.0]


def test_request_span_is_a_day_by_default_and_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("CAPACITY_PROMETHEUS_CHUNK_HOURS", raising=False)
    settings = settings_from_env("http://127.0.0.1:9")
    assert settings.points_per_request(300) == 288  # one day at 5 min
    assert settings.points_per_request(1) == settings.max_points < 11_000  # the points cap wins
    monkeypatch.setenv("CAPACITY_PROMETHEUS_CHUNK_HOURS", "6")
    assert settings_from_env("http://127.0.0.1:9").points_per_request(60) == 360
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("CAPACITY_PROMETHEUS_CHUNK_HOURS", bad)
        with pytest.raises(SourceError, match="CAPACITY_PROMETHEUS_CHUNK_HOURS.* must be a"):
            settings_from_env("http://127.0.0.1:9")
    ops = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert "CAPACITY_PROMETHEUS_CHUNK_HOURS" in ops


def settings_from_env(url: str, **overrides) -> PrometheusSettings:
    """The connection settings the documented variables give, as a run resolves them (secrets
    are EnvVars, read here from the test's environment)."""
    resource = prometheus_from_environment(url).model_copy(update=overrides)
    return resource.process_config_and_initialize().settings()


# --- hostile labels and secrets ----------------------------------------------------------------


@needs_prometheus
def test_hostile_label_values_reach_the_warehouse_as_plain_data(fleet, tmp_path: Path):
    _, server = fleet
    db = tmp_path / "wh.duckdb"
    source = PrometheusSource(fast_settings(server.url))
    ingest_window(source, load_catalog(), "container_usage", DAY1, DAY2, db)
    with warehouse.connect(db, read_only=True) as con:
        stored = con.execute(
            "SELECT DISTINCT container, pod FROM container_usage WHERE namespace = 'hostile' "
            "ORDER BY container"
        ).fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert sorted(c for c, _ in stored) == sorted(HOSTILE_LABELS)
    assert sorted(p for _, p in stored) == sorted(f"{h}-{i}" for i, h in enumerate(HOSTILE_LABELS))
    assert "container_usage" in tables  # no DROP TABLE ran


@needs_prometheus
def test_catalog_label_filters_are_escaped_into_promql(fleet, tmp_path: Path):
    """A filter value that tries to break out of its string stays a literal in PromQL."""
    _, server = fleet
    catalog_path = tmp_path / "catalog.yaml"
    text = (REPO_ROOT / "assets" / "metric_catalog.yaml").read_text()
    hostile = 'a\\"}) or vector(1) #'  # as written in YAML inside a PromQL selector
    text = text.replace(
        """selector: 'container_memory_working_set_bytes{container!="",container!="POD"}'""",
        f"""selector: 'container_memory_working_set_bytes{{container="{hostile}"}}'""",
    )
    catalog_path.write_text(text)
    catalog = load_catalog(catalog_path)
    table = catalog.table("container_usage")
    memory = next(q for q in table.columns if q.column == "memory_working_set_bytes")
    promql = render_promql(table, memory, 300, 900)
    assert 'container="a\\"}) or vector(1) #"' in promql
    source = PrometheusSource(fast_settings(server.url))
    rows = extract_table(source, catalog, "container_usage", DAY1, DAY2).frame
    # exactly the hostile container, matched literally; vector(1) never ran (it has no labels)
    memory_rows = rows.filter(pl.col("memory_working_set_bytes").is_not_null())
    assert memory_rows["container"].unique().to_list() == ['a"}) or vector(1) #']
    plain = extract_table(source, load_catalog(), "container_usage", DAY1, DAY2).frame
    same_container = plain.filter(pl.col("container") == 'a"}) or vector(1) #')
    assert memory_rows.select("ts", "memory_working_set_bytes").equals(
        same_container.select("ts", "memory_working_set_bytes")
    )


SECRET_TOKEN = "tok-s3cr3t-6a1f"
SECRET_PASSWORD = "pw-hunter2-77c"


@needs_prometheus
def test_secrets_never_reach_logs_metadata_or_errors(fleet, tmp_path: Path, monkeypatch, caplog):
    _, server = fleet
    monkeypatch.setenv("CAPACITY_PROMETHEUS_TOKEN", SECRET_TOKEN)
    catalog = load_catalog()
    asset = build_extraction_asset(catalog, "container_usage")
    caplog.set_level(logging.DEBUG)
    with FlakyProxy(server.url) as proxy, dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            [asset],
            partition_key=PARTITION,
            instance=instance,
            resources={
                "warehouse": WarehouseResource(
                    path=str(tmp_path / "wh.duckdb"), snapshot_path=str(tmp_path / "s")
                ),
                # the token from the environment, as an EnvVar read when the run starts
                "prometheus": prometheus_from_environment(proxy.url),
                "metrics": MetricSourceResource(),
            },
        )
        records = instance.all_logs(result.run_id)
    assert result.success
    # the token did travel, in the header only
    assert {h.get("Authorization") for _, _, h in proxy.requests} == {f"Bearer {SECRET_TOKEN}"}
    events = "\n".join(repr(r) for r in records)
    assert "dagster/row_count" in events  # the metadata is in what we searched
    assert SECRET_TOKEN not in events
    assert SECRET_TOKEN not in caplog.text
    assert SECRET_TOKEN not in warehouse_rows(tmp_path / "wh.duckdb").__repr__()

    # basic auth in the URL's user info and in the environment, and a failing server
    monkeypatch.setenv("CAPACITY_PROMETHEUS_USER", "capacity")
    monkeypatch.setenv("CAPACITY_PROMETHEUS_PASSWORD", SECRET_PASSWORD)
    with FlakyProxy(server.url, failures=100, status=503) as proxy:
        url = proxy.url.replace("http://", f"http://capacity:{SECRET_PASSWORD}@")
        for settings in (
            settings_from_env(proxy.url, retries=0),
            settings_from_env(url, retries=0),
        ):
            source = PrometheusSource(settings)
            with pytest.raises(SourceError) as err:
                ingest_window(source, catalog, "container_usage", DAY1, DAY2, tmp_path / "x.db")
            for text in (str(err.value), repr(settings), source.description, caplog.text):
                assert SECRET_PASSWORD not in text and SECRET_TOKEN not in text
    assert proxy.requests[-1][2].get("Authorization", "").startswith("Basic ")


# --- the warehouse under locks and kills -------------------------------------------------------

HOLD_SCRIPT = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])  # an analyst's read-write session, or a second writer
con.execute("SELECT count(*) FROM container_usage").fetchone()
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
print("released", flush=True)
"""


@pytest.fixture(scope="module")
def small_export(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "fleet.om"
    write_container_fleet(path, 2, int(DAY1.timestamp()), days=2, interval_s=300)
    return path


def _materialize_usage(root: Path, export: Path, lock_wait_s: float, partition: str = PARTITION):
    asset = build_extraction_asset(load_catalog(), "container_usage")
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize(
            [asset],
            partition_key=partition,
            instance=instance,
            raise_on_error=False,
            resources={
                "warehouse": WarehouseResource(
                    path=str(root / "wh.duckdb"),
                    snapshot_path=str(root / "snap.duckdb"),
                    lock_wait_s=lock_wait_s,
                ),
                "metrics": MetricSourceResource(
                    export_files=[str(export)], cache_dir=str(root / "cache")
                ),
                "prometheus": PrometheusResource(),
            },
        )


def _hold(db: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(db), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "holding"
    return holder


@pytest.mark.timeout(120)
def test_locked_warehouse_run_fails_clearly_after_the_wait_and_changes_nothing(
    tmp_path: Path, small_export: Path
):
    """The run's body, as the asset calls it: wait `lock_wait_s`, then one clear error.

    (In Dagster the RetryPolicy then tries again later: a lock is usually transient.)
    """
    db = tmp_path / "wh.duckdb"
    catalog = load_catalog()
    ingest_window(FileSource([small_export]), catalog, "container_usage", DAY1, DAY2, db)
    before = warehouse_rows(db)
    holder = _hold(db, 60)
    try:
        began = time.monotonic()
        with pytest.raises(warehouse.WarehouseBusyError) as err:
            ingest_window(
                FileSource([small_export]),
                catalog,
                "container_usage",
                DAY2,
                DAY2 + timedelta(days=1),
                db,
                lock_wait_s=1.5,
            )
        waited = time.monotonic() - began
    finally:
        holder.kill()
        holder.wait()
    message = str(err.value)
    assert "locked by another process" in message and "stayed locked for 2s" in message
    assert "published snapshot" in message  # tells the analyst where to go instead
    assert "\n" not in message
    assert 1.5 <= waited < 30
    assert warehouse_rows(db) == before


@pytest.mark.timeout(120)
def test_run_waits_for_a_short_lock_then_writes(tmp_path: Path, small_export: Path):
    assert _materialize_usage(tmp_path, small_export, 5).success
    holder = _hold(tmp_path / "wh.duckdb", 2)
    try:
        result = _materialize_usage(tmp_path, small_export, 30, "2026-09-29")
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()
    assert result.success
    with warehouse.connect(tmp_path / "wh.duckdb", read_only=True) as con:
        assert con.execute("SELECT count(*) FROM container_usage").fetchone()[0] == 2 * 2 * 288


ANALYST_SCRIPT = """
import pathlib, sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
stop, until = pathlib.Path(sys.argv[2]), time.monotonic() + 60
counts = set()
print("reading", flush=True)
while not stop.exists() and time.monotonic() < until:  # queries until the run is over
    counts.add(con.execute("SELECT count(*), sum(cpu_cores) FROM container_usage").fetchone())
print(sorted(counts), flush=True)
"""


@pytest.mark.timeout(120)
def test_analyst_on_the_snapshot_neither_blocks_nor_is_blocked(tmp_path: Path, small_export):
    db, snapshot = tmp_path / "wh.duckdb", tmp_path / "snap.duckdb"
    catalog = load_catalog()
    source_files = [small_export]

    ingest_window(FileSource(source_files), catalog, "container_usage", DAY1, DAY2, db)
    warehouse.publish_snapshot(db, snapshot)
    analyst = subprocess.Popen(
        [sys.executable, "-c", ANALYST_SCRIPT, str(snapshot), str(tmp_path / "stop")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert analyst.stdout.readline().strip() == "reading"
        began = time.monotonic()
        # a run while the analyst queries: the writer never waits for the reader
        ingest_window(
            FileSource(source_files),
            catalog,
            "container_usage",
            DAY2,
            DAY2 + timedelta(days=1),
            db,
            lock_wait_s=0,
        )
        warehouse.publish_snapshot(db, snapshot)
        run_s = time.monotonic() - began
        assert analyst.poll() is None  # the analyst was querying the whole time
        (tmp_path / "stop").touch()
        seen = analyst.communicate(timeout=60)[0].strip()
    finally:
        analyst.kill()
        analyst.wait()
    assert analyst.returncode == 0
    assert run_s < 50  # a run blocked by the reader would wait for its 60 s
    # the analyst saw one consistent state throughout: the snapshot it opened
    assert seen.count("(") == 1 and seen.startswith("[(576,")
    with warehouse.connect(snapshot, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM container_usage").fetchone()[0] == 2 * 576


REWRITE_SCRIPT = """
import sys
from datetime import datetime
import polars as pl
from capacity_pipelines import warehouse
from capacity_pipelines.recommendations.tables import RECOMMENDATIONS_TABLE
from tests.test_faults import recommendation_rows
as_of = datetime(2026, 9, 29)
print("writing", flush=True)
for version in range(1, 10_000):
    with warehouse.connect(sys.argv[1]) as con:
        warehouse.replace_derived_window(
            con, RECOMMENDATIONS_TABLE, as_of, datetime(2026, 9, 30),
            recommendation_rows(as_of, 20_000, float(version)), "as_of",
        )
"""

_TEXT_COLUMNS = {
    "recommendation_id", "kind", "target", "namespace", "service", "team", "action", "evidence",
    "source_table", "slo_impact", "status", "review_status", "evidence_fingerprint", "workloads",
}  # fmt: skip


def recommendation_rows(as_of: datetime, n: int, version: float) -> pl.DataFrame:
    """`n` rows of the real recommendations table; every number is `version` (one per run)."""
    from capacity_pipelines.recommendations.tables import RECOMMENDATIONS_TABLE

    columns = {}
    for name in RECOMMENDATIONS_TABLE.columns:
        if name in ("as_of", "first_seen"):
            columns[name] = pl.Series(name, [as_of] * n, dtype=pl.Datetime("us"))
        elif name == "rank":
            columns[name] = pl.Series(name, range(1, n + 1), dtype=pl.Int64)
        elif name in _TEXT_COLUMNS:
            columns[name] = pl.Series(name, [f"{name}-{i}" for i in range(n)], dtype=pl.Utf8)
        else:
            columns[name] = pl.Series(name, [version] * n, dtype=pl.Float64)
    return pl.DataFrame(columns)


@pytest.mark.timeout(120)
def test_kill_during_a_recommendations_rewrite_keeps_a_whole_state_and_every_decision(
    tmp_path: Path,
):
    from capacity_pipelines.recommendations.review import read_decisions, record_decision
    from capacity_pipelines.recommendations.tables import RECOMMENDATIONS_TABLE

    db = tmp_path / "wh.duckdb"
    as_of = datetime(2026, 9, 29)
    rows = recommendation_rows(as_of, 20_000, 0.0)
    with warehouse.connect(db) as con:
        warehouse.replace_derived_window(
            con, RECOMMENDATIONS_TABLE, as_of, datetime(2026, 9, 30), rows, "as_of"
        )
        for i, decision in enumerate(("accept", "reject", "defer", "comment")):
            record_decision(con, rows.row(i, named=True), decision, "sre-on-call", f"why {i}")
        decisions = read_decisions(con)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for kill_after_s in (0.8, 1.7):  # two arbitrary points of a write loop
        writer = subprocess.Popen(
            [sys.executable, "-c", REWRITE_SCRIPT, str(db)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        assert writer.stdout.readline().strip() == "writing"
        time.sleep(kill_after_s)
        writer.kill()  # SIGKILL: no cleanup, no rollback, mid-transaction or between two
        writer.wait()
        with warehouse.connect(db, read_only=True) as con:  # opens cleanly (WAL replayed)
            versions = con.execute(
                "SELECT count(*), count(DISTINCT impact_usd_month), min(impact_usd_month) "
                "FROM recommendations"
            ).fetchone()
            assert read_decisions(con).equals(decisions)
        count, distinct, _ = versions
        assert (count, distinct) == (20_000, 1)  # one whole run's rows, never a mix or a hole


# --- bad input files for every `capacity` command, as real subprocesses ------------------------

HOURS = [datetime(2026, 9, 1) + timedelta(hours=i) for i in range(24 * 14)]


def _history(values=None) -> pl.DataFrame:
    values = values if values is not None else [10 + (i % 24) / 2 for i in range(len(HOURS))]
    return pl.DataFrame({"series_id": "a", "ts": HOURS, "value": values})


def _container_usage() -> pl.DataFrame:
    n = len(HOURS)
    return pl.DataFrame(
        {
            "container_id": "shop/api/app",
            "ts": HOURS,
            "cpu_cores": [0.2 + (i % 24) / 40 for i in range(n)],
            "memory_bytes": [2e8 + 1e6 * (i % 24) for i in range(n)],
        }
    )


def _token_usage() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ts": HOURS[:48],
            "provider": "openai",
            "model": "gpt-4o",
            "agent": ["planner", "coder"] * 24,
            "input_tokens": [1000 + i for i in range(48)],
            "output_tokens": [100 + i for i in range(48)],
        }
    )


def _spike(frame: pl.DataFrame, column: str, value: float, row: int = 5) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == row)
        .then(value)
        .otherwise(pl.col(column).cast(pl.Float64))
        .alias(column)
    )


def _capacity(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CAPACITY_HOME": str(tmp_path / "home")}
    env.pop("CAPACITY_PROMETHEUS_URL", None)
    return subprocess.run(
        [*CAPACITY, *args], capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path
    )


COMMANDS = {
    "forecast": ("--history", ["--horizon", "24", "--workers", "1"]),
    "rightsize": ("--usage", []),
    "token-cost": ("--usage", []),
}

BAD_FILES = [
    # (command, frame, message) - the cases tests/test_*_cli.py do not cover already
    ("forecast", _spike(_history(), "value", 1e300), "column value: 1 row(s) are beyond ±1e+18"),
    ("forecast", _history().head(0).drop("value"), "no rows"),
    ("rightsize", _spike(_container_usage(), "memory_bytes", 1e300),
     "column memory_bytes: 1 row(s) are beyond 1e+18"),
    ("rightsize", _container_usage().drop("ts"), "column ts: missing (a timestamp"),
    ("token-cost", _token_usage().head(0), "no rows"),
    ("token-cost", _spike(_token_usage(), "input_tokens", math.inf),
     "input_tokens: 1 row(s) are infinite"),
    ("token-cost", _spike(_token_usage(), "output_tokens", 1e300),
     "output_tokens: 1 row(s) are beyond 1e+18"),
    ("token-cost", _token_usage().drop("model"), "column model: missing"),
]  # fmt: skip


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("command", "frame", "message"),
    BAD_FILES,
    ids=[f"{c}-{m.split(':')[-1].strip()[:24]}" for c, _, m in BAD_FILES],
)
def test_bad_file_is_one_line_nonzero_exit_nothing_written(tmp_path, command, frame, message):
    source = tmp_path / "input.parquet"
    frame.write_parquet(source)
    flag, extra = COMMANDS[command]
    out = tmp_path / "out" / "result.parquet"
    proc = _capacity(tmp_path, command, flag, str(source), "--out", str(out), *extra)
    err = proc.stderr.strip()
    assert proc.returncode == 2, err
    assert len(err.splitlines()) == 1, err  # one line, no traceback, no warnings
    assert message in err and str(source) in err
    assert not out.exists() and not out.parent.exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("command", "frame"),
    [("forecast", _history()), ("rightsize", _container_usage()), ("token-cost", _token_usage())],
    ids=["forecast", "rightsize", "token-cost"],
)
def test_unsorted_input_gives_the_sorted_answer(tmp_path: Path, command, frame):
    """Unsorted rows are not an error: every command sorts, so order never changes the result.

    In process through the same `capacity` entry point (the subprocess path is covered above).
    """
    from capacity_pipelines.cli import main

    flag, extra = COMMANDS[command]
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    results = []
    for name, rows in (("sorted", frame), ("shuffled", shuffled)):
        source, out = tmp_path / f"{name}.parquet", tmp_path / f"{name}.out.parquet"
        rows.write_parquet(source)
        assert main([command, flag, str(source), "--out", str(out), *extra]) == 0
        results.append(pl.read_parquet(out))
    sorted_out, shuffled_out = results
    key = [c for c in ("series_id", "container_id", "ts", "agent") if c in sorted_out.columns]
    assert sorted_out.height > 0
    assert shuffled_out.sort(key).equals(sorted_out.sort(key))


def _om(*samples: str, kind: str = "gauge") -> str:
    family = "container_memory_working_set_bytes"
    if kind == "counter":
        family = "container_cpu_usage_seconds"
    lines = [f"# TYPE {family} {kind}", *samples, "# EOF"]
    return "\n".join(lines) + "\n"


MEM = 'container_memory_working_set_bytes{namespace="a",pod="api-0",container="app"}'
CPU = 'container_cpu_usage_seconds_total{namespace="a",pod="api-0",container="app"}'
T0 = int(DAY1.timestamp())

BAD_EXPORTS = [
    ("empty.om", "", "no samples (empty export)"),
    ("header.csv", "metric,ts,value\n", "no samples (empty export)"),
    ("nan.om", _om(f"{MEM} NaN {T0}", f"{MEM} NaN {T0 + 300}"), "every sample is NaN"),
    ("inf.om", _om(f"{MEM} 5 {T0}", f"{MEM} +Inf {T0 + 300}"), "inf.om:3: value is infinite"),
    ("huge.om", _om(f"{MEM} 5 {T0}", f"{MEM} 3e19 {T0 + 300}"), "huge.om:3: value beyond 1e+18"),
    ("negative.om", _om(f"{CPU} 5 {T0}", f"{CPU} -3 {T0 + 300}", kind="counter"),
     "negative.om:3: negative counter value"),
    ("duplicate.om", _om(f"{MEM} 5 {T0}", f"{MEM} 6 {T0}"),
     "duplicate.om:3: second sample of the same series at the same timestamp"),
    ("duplicate.csv", f"metric,ts,value,pod\nm,{T0},1,a\nm,{T0},2,a\n",
     "duplicate.csv row 1: second sample of the same series at the same timestamp"),
    ("columns.csv", "name,time,val\nup,1,1\n", "columns.csv: missing column 'metric'"),
    ("types.csv", "metric,ts,value\nup,2026-09-28T00:00:00Z,abc\n",
     "columns 'ts' and 'value' must be numeric"),
]  # fmt: skip
# `capacity extract` starts Dagster (about 10 s a run here): three cases go through it whole,
# the reader's own messages for every case are checked in process.
EXTRACT_CLI_CASES = ("empty.om", "negative.om", "duplicate.om")


@pytest.mark.parametrize(
    ("name", "content", "message"), BAD_EXPORTS, ids=[b[0] for b in BAD_EXPORTS]
)
def test_bad_export_is_refused_naming_file_line_and_problem(tmp_path: Path, name, content, message):
    export = tmp_path / name
    export.write_text(content)
    with pytest.raises(ExportFormatError) as err:
        FileSource([export]).samples()
    assert message in str(err.value) and str(export) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", EXTRACT_CLI_CASES)
def test_bad_export_for_extract_fails_in_one_line_and_creates_no_warehouse(tmp_path: Path, name):
    _, content, message = next(b for b in BAD_EXPORTS if b[0] == name)
    export = tmp_path / name
    export.write_text(content)
    proc = _capacity(
        tmp_path, "extract", "--start", "2026-09-28", "--end", "2026-09-29", "--files", str(export)
    )
    err = proc.stderr.strip()
    assert proc.returncode != 0
    assert len(err.splitlines()) == 1, err
    assert message in err and name in err
    assert not (tmp_path / "home" / "warehouse.duckdb").exists()


def test_unsorted_export_reads_like_the_sorted_one(tmp_path: Path):
    ordered = [f"{MEM} {5 + i} {T0 + 300 * i}" for i in range(12)]
    sorted_file, shuffled_file = tmp_path / "sorted.om", tmp_path / "shuffled.om"
    sorted_file.write_text(_om(*ordered))
    shuffled_file.write_text(_om(*ordered[6:], *ordered[:6]))
    catalog = load_catalog()
    end = DAY1 + timedelta(hours=1)
    a = extract_table(FileSource([sorted_file]), catalog, "container_usage", DAY1, end).frame
    b = extract_table(FileSource([shuffled_file]), catalog, "container_usage", DAY1, end).frame
    assert a.height == 12 and a.equals(b)

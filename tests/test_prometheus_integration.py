"""Against a real Prometheus (Debian package) backfilled with promtool, on 127.0.0.1.

The file source and the live server must give the same warehouse rows; a server that dies
mid-extraction must give a clear error and leave the warehouse as it was.
"""

import dataclasses
import lzma
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.extract import extract_table
from capacity_pipelines.ingest.sources import (
    FileSource,
    PrometheusSettings,
    PrometheusSource,
    SourceError,
)
from capacity_pipelines.ingest.sources.files import DEMO_FLEET_FILE
from capacity_pipelines.ingest.window import ingest_window
from capacity_pipelines.warehouse import connect
from tests.flaky_proxy import FlakyProxy
from tests.prometheus_server import PrometheusServer, backfill
from tests.synthetic_fleet import write_container_fleet
from tests.test_faults import settings_from_env

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("require_prometheus")]

START = datetime(2026, 9, 1, tzinfo=UTC)


def assert_same_rows(file_frame: pl.DataFrame, prom_frame: pl.DataFrame, key, columns):
    """Same keys and timestamps; values equal within float noise of rate()'s arithmetic."""
    assert file_frame.height == prom_frame.height > 0
    joined = file_frame.join(prom_frame, on=[*key, "ts"], how="full", suffix="_prom")
    assert joined.filter(pl.col("ts").is_null() | pl.col("ts_prom").is_null()).height == 0
    for column in columns:
        a, b = joined[column], joined[f"{column}_prom"]
        assert (a.is_null() == b.is_null()).all(), f"{column}: NULLs differ"
        both = joined.filter(a.is_not_null() & b.is_not_null())
        rel = ((both[column] - both[f"{column}_prom"]).abs() / both[column].abs().clip(1e-9)).max()
        assert rel is None or rel < 1e-6, f"{column}: relative difference {rel}"


@pytest.fixture(scope="module")
def long_fleet(tmp_path_factory):
    """3 containers x 9 days at 60 s: 12,960 steps per series at step 60 s (> 11,000)."""
    root = tmp_path_factory.mktemp("long_fleet")
    export = root / "fleet.om"
    write_container_fleet(
        export, containers=3, start_s=int(START.timestamp()), days=9, interval_s=60
    )
    backfill(export, root / "data")
    with PrometheusServer(root / "data") as server:
        yield export, server


def test_long_range_matches_file_extraction(long_fleet):
    export, server = long_fleet
    catalog = dataclasses.replace(load_catalog(), step_seconds=60, rate_window_seconds=300)
    start, end = START, datetime(2026, 9, 9, 12, tzinfo=UTC)  # 12,240 steps: chunked
    from_file = extract_table(FileSource([export]), catalog, "container_usage", start, end)
    # one request would span the whole range: the points cap alone chunks it
    settings = PrometheusSettings(url=server.url, max_points=5000, chunk_s=30 * 86_400)
    from_prom = extract_table(PrometheusSource(settings), catalog, "container_usage", start, end)
    assert from_file.expected_points > 11_000
    table = catalog.table("container_usage")
    assert_same_rows(from_file.frame, from_prom.frame, table.key, table.value_columns)
    # the default: one request per day (ten of them, the last one short), same rows
    by_day = PrometheusSource(PrometheusSettings(url=server.url))
    daily = extract_table(by_day, catalog, "container_usage", start, end)
    assert_same_rows(from_file.frame, daily.frame, table.key, table.value_columns)
    # the counter reset inside the range did not produce a negative or a spike
    assert from_prom.frame["cpu_cores"].min() >= 0


def test_demo_fleet_matches_through_prometheus(tmp_path: Path):
    plain = tmp_path / "fleet.om"
    with lzma.open(DEMO_FLEET_FILE, "rb") as src, plain.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    backfill(plain, tmp_path / "data")
    catalog = load_catalog()
    first, _ = FileSource([DEMO_FLEET_FILE]).time_range()
    # two days in the middle of the fleet's month
    start = datetime.fromtimestamp(first, UTC).replace(hour=0, minute=0, second=0)
    start += timedelta(days=7)
    end = start + timedelta(days=2)
    file_source = FileSource([DEMO_FLEET_FILE])
    with PrometheusServer(tmp_path / "data") as server:
        prom_source = PrometheusSource(PrometheusSettings(url=server.url))
        for name, table in catalog.tables.items():
            from_file = extract_table(file_source, catalog, name, start, end)
            from_prom = extract_table(prom_source, catalog, name, start, end)
            assert_same_rows(from_file.frame, from_prom.frame, table.key, table.value_columns)


def test_prometheus_killed_mid_extraction_leaves_warehouse_untouched(tmp_path: Path):
    export = tmp_path / "fleet.om"
    write_container_fleet(
        export, containers=2, start_s=int(START.timestamp()), days=3, interval_s=300
    )
    backfill(export, tmp_path / "data")
    catalog = load_catalog()
    db = tmp_path / "wh.duckdb"
    day1, day2 = datetime(2026, 9, 2, tzinfo=UTC), datetime(2026, 9, 3, tzinfo=UTC)
    server = PrometheusServer(tmp_path / "data").start()
    try:
        settings = PrometheusSettings(
            url=server.url, max_points=20, concurrency=1, retries=1, backoff_s=0.05, timeout_s=5
        )
        ingest_window(PrometheusSource(settings), catalog, "container_usage", day1, day2, db)
        with connect(db, read_only=True) as con:
            before = con.execute("SELECT count(*), sum(cpu_cores) FROM container_usage").fetchone()

        class DyingPrometheus(PrometheusSource):
            calls = 0

            def _query(self, promql, chunk, step_s):
                DyingPrometheus.calls += 1
                if DyingPrometheus.calls == 5:
                    server.kill()  # the real server dies between two chunks
                return super()._query(promql, chunk, step_s)

        with pytest.raises(SourceError) as err:
            ingest_window(DyingPrometheus(settings), catalog, "container_usage", day1, day2, db)
    finally:
        server.stop()
    message = str(err.value)
    assert "unreachable" in message and "query_range" in message and server.url in message
    with connect(db, read_only=True) as con:
        after = con.execute("SELECT count(*), sum(cpu_cores) FROM container_usage").fetchone()
    assert after == before


def test_credentials_never_appear_in_errors(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CAPACITY_PROMETHEUS_TOKEN", "s3cr3t-token-value")
    monkeypatch.setenv("CAPACITY_PROMETHEUS_RETRIES", "0")
    settings = settings_from_env("http://127.0.0.1:9")  # nothing listens there
    assert "s3cr3t" not in repr(settings)
    source = PrometheusSource(settings)
    catalog = load_catalog()
    with pytest.raises(SourceError) as err:
        extract_table(source, catalog, "workload_replicas", START, START.replace(hour=1))
    assert "s3cr3t" not in str(err.value)
    assert "unreachable" in str(err.value)


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    export = root / "fleet.om"
    write_container_fleet(
        export, containers=2, start_s=int(START.timestamp()), days=1, interval_s=300
    )
    backfill(export, root / "data")
    with PrometheusServer(root / "data") as server:
        yield export, server


def test_429_with_retry_after_is_honoured(small_server, monkeypatch):
    export, server = small_server
    monkeypatch.setenv("CAPACITY_PROMETHEUS_TOKEN", "tok-123")
    catalog = load_catalog()
    start, end = START, START.replace(hour=12)
    with FlakyProxy(server.url, status=429, failures=2, retry_after="1") as proxy:
        settings = dataclasses.replace(settings_from_env(proxy.url, concurrency=1), backoff_s=0.01)
        frame = extract_table(PrometheusSource(settings), catalog, "workload_replicas", start, end)
        got = extract_table(PrometheusSource(settings), catalog, "container_usage", start, end)
    statuses = [status for _, status, _ in proxy.requests]
    assert statuses[:3] == [429, 429, 200]
    waited = proxy.requests[2][0] - proxy.requests[0][0]
    assert waited >= 1.9  # two Retry-After: 1 honoured, not the 10 ms backoff
    assert all(h.get("Authorization") == "Bearer tok-123" for _, _, h in proxy.requests)
    assert frame.frame.height == 0  # the synthetic fleet has no Deployment series
    expected = extract_table(FileSource([export]), catalog, "container_usage", start, end)
    assert got.frame.equals(expected.frame) or got.frame.height == expected.frame.height


def test_persistent_5xx_gives_a_clear_error_after_retries(small_server):
    _, server = small_server
    catalog = load_catalog()
    with FlakyProxy(server.url, status=503, failures=100) as proxy:
        settings = PrometheusSettings(url=proxy.url, retries=2, backoff_s=0.01, concurrency=1)
        with pytest.raises(SourceError) as err:
            extract_table(
                PrometheusSource(settings), catalog, "container_usage", START, START.replace(hour=1)
            )
    assert len(proxy.requests) == 3  # the first try and two retries
    assert "query_range" in str(err.value) and proxy.url in str(err.value)

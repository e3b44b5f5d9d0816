"""Resources shared by every domain: the warehouse, the metric source, reports, alerts, compute.

Every setting is a field a person can see (and override) in the UI's resource config; secrets
are `dg.EnvVar`s, read when a run starts and never shown or logged. Domain code receives the
objects these resources build (a source, a path, a worker count) and never reads the
environment itself. `default_resources()` is the one place that maps the documented
`CAPACITY_*` variables (README, configuration reference) onto these fields.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from capacity_pipelines import warehouse as wh
from capacity_pipelines.alerts import AlertmanagerClient, AlertSettings
from capacity_pipelines.common import paths
from capacity_pipelines.ingest.catalog import Catalog, load_catalog
from capacity_pipelines.ingest.sources import FileSource, MetricSource, demo_source
from capacity_pipelines.ingest.sources.prometheus import (
    DEFAULT_CHUNK_S,
    DEFAULT_MAX_SERIES,
    PrometheusConfigError,
    PrometheusSettings,
    PrometheusSource,
    split_credentials,
)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse, its analysts' snapshot and the SRE decisions store.

    Assets read through `reader()` (the live file, read-only) and write through `writer()` (a
    draft swapped in when the block ends), opened only around the write itself so compute never
    holds the lock. SRE review decisions live in their own small file (`decisions_path`, empty =
    `decisions.duckdb` beside the warehouse): runs only read it, so deleting and rebuilding the
    warehouse never touches a decision.
    """

    path: str
    snapshot_path: str
    decisions_path: str = ""
    lock_wait_s: float = 120.0

    @property
    def decisions_file(self) -> Path:
        """Where the SRE decisions live."""
        return Path(self.decisions_path or Path(self.path).with_name("decisions.duckdb"))

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only session on the live warehouse."""
        with wh.reader(self.path, self.lock_wait_s) as con:
            yield con

    @contextmanager
    def writer(self, purpose: str = "") -> Iterator[duckdb.DuckDBPyConnection]:
        """A write session, published all or nothing when the block ends without an error."""
        with wh.writer(self.path, self.lock_wait_s, purpose) as con:
            yield con

    def publish_snapshot(self) -> Path:
        """Replace the analysts' snapshot with the current warehouse (decisions included)."""
        return wh.publish_snapshot(
            self.path, self.snapshot_path, [self.decisions_file], self.lock_wait_s
        )


class ReportsResource(dg.ConfigurableResource):
    """Where published reports go (`<ISO week>/` folders and a stable `latest/`), and where
    the weekly summary is posted (a Slack-compatible webhook URL: a secret, so an `EnvVar`)."""

    reports_dir: str
    webhook_url: str | None = None
    public_base_url: str = ""

    @property
    def latest_dir(self) -> Path:
        """The stable folder that always holds the newest reports."""
        return Path(self.reports_dir) / "latest"


class AlertmanagerResource(dg.ConfigurableResource):
    """Where predictive alerts go (an Alertmanager's base URL: it may carry credentials, so an
    `EnvVar`, `CAPACITY_ALERTMANAGER_URL`; unset = rules written, alerts not posted) and the
    thresholds that make a forecast an alert (docs/operations.md)."""

    url: str | None = None
    timeout_s: float = 10.0
    retries: int = 2
    runway_days: float = 7.0
    probability: float = 0.5

    def settings(self) -> AlertSettings:
        """The alert thresholds (severity cut-offs and lifetime keep their documented defaults)."""
        return AlertSettings(runway_days=self.runway_days, probability=self.probability)

    def client(self) -> AlertmanagerClient | None:
        """The API client, or None when no URL is configured."""
        if not self.url:
            return None
        return AlertmanagerClient(self.url, timeout_s=self.timeout_s, retries=self.retries)


class PrometheusResource(dg.ConfigurableResource):
    """A live Prometheus and the HTTP client to it (`query_range`, chunked, retried).

    `url` may carry `user:password@`: the credentials are split off before the URL is parsed
    or shown anywhere, and used as basic auth. Prefer `username`/`password` or `bearer_token`
    as `EnvVar`s.
    """

    url: str = ""
    bearer_token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_bundle: str = ""
    insecure_skip_verify: bool = False
    timeout_s: float = 30.0
    retries: int = 4
    concurrency: int = 4
    chunk_hours: float = DEFAULT_CHUNK_S / 3600
    max_series_per_query: int = DEFAULT_MAX_SERIES

    def settings(self) -> PrometheusSettings:
        """Connection settings for the source (credentials split off the URL)."""
        url, url_user, url_password = split_credentials(self.url)
        user = self.username or url_user
        password = self.password or url_password
        return PrometheusSettings.create(
            url=url,
            timeout_s=self.timeout_s,
            retries=self.retries,
            concurrency=self.concurrency,
            chunk_hours=self.chunk_hours,
            max_series=self.max_series_per_query,
            bearer_token=self.bearer_token or None,
            basic_auth=(user, password) if user and password else None,
            ca_bundle=self.ca_bundle or None,
            verify_tls=not self.insecure_skip_verify,
        )

    def source(self) -> PrometheusSource:
        """The metric source reading this Prometheus."""
        return PrometheusSource(self.settings())


class MetricSourceResource(dg.ConfigurableResource):
    """Which metrics to read: a live Prometheus (the `prometheus` resource, when its URL is
    set), exported files, or (by default) the bundled demo fleet, all through the same catalog
    and normalisation."""

    export_files: list[str] = []
    cache_dir: str = ""

    def source(self, prometheus: PrometheusResource) -> MetricSource:
        """The source this run reads."""
        if prometheus.url:
            return prometheus.source()
        if self.export_files:
            return FileSource(self.export_files, cache_dir=self.cache_dir or None)
        return demo_source(cache_dir=self.cache_dir or None)


class ComputeResource(dg.ConfigurableResource):
    """How much of the machine a step may use: forecasting and rightsizing worker processes
    (0 = one per core of the machine that runs the step)."""

    workers: int = 0

    def worker_count(self) -> int:
        """Workers to start: the configured number, or the machine's cores."""
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)


_SECRETS = {
    "bearer_token": "CAPACITY_PROMETHEUS_TOKEN",
    "username": "CAPACITY_PROMETHEUS_USER",
    "password": "CAPACITY_PROMETHEUS_PASSWORD",
}


def prometheus_from_environment(
    url: str | None = None, environ: Mapping[str, str] | None = None
) -> PrometheusResource:
    """The Prometheus resource the documented `CAPACITY_PROMETHEUS_*` variables describe
    (in `environ`, default the process environment; `url` overrides the URL variable).

    Secrets become `EnvVar`s (read at run time, never displayed) when set; an `EnvVar` of an
    unset variable would fail every run, so unset ones stay empty.
    """
    env = os.environ if environ is None else environ
    settings: dict = {
        "url": url if url is not None else env.get("CAPACITY_PROMETHEUS_URL", ""),
        **{field: dg.EnvVar(name) for field, name in _SECRETS.items() if env.get(name)},
        "ca_bundle": env.get("CAPACITY_PROMETHEUS_CA_BUNDLE", ""),
        "insecure_skip_verify": env.get("CAPACITY_PROMETHEUS_INSECURE_SKIP_VERIFY", "")
        in ("1", "true"),
    }
    numbers = {
        "timeout_s": ("CAPACITY_PROMETHEUS_TIMEOUT", float),
        "retries": ("CAPACITY_PROMETHEUS_RETRIES", int),
        "concurrency": ("CAPACITY_PROMETHEUS_CONCURRENCY", int),
        "chunk_hours": ("CAPACITY_PROMETHEUS_CHUNK_HOURS", float),
        "max_series_per_query": ("CAPACITY_MAX_SERIES_PER_QUERY", int),
    }
    for field, (name, kind) in numbers.items():
        text = env.get(name, "").strip()
        if text:
            try:
                settings[field] = kind(text)
            except ValueError:
                raise PrometheusConfigError(f"{name} must be a number, not {text!r}") from None
    return PrometheusResource(**settings)


def configured_catalog() -> Catalog:
    """The metric catalog this code location runs with, fixed when the definitions load
    (`CAPACITY_METRIC_CATALOG`, `CAPACITY_LLM_MAPPING`): it shapes the asset set, so the asset
    bodies use this same object rather than loading their own."""
    return load_catalog(
        os.environ.get("CAPACITY_METRIC_CATALOG") or None,
        llm_mapping=os.environ.get("CAPACITY_LLM_MAPPING") or None,
    )


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources configured from the environment (README, configuration reference)."""
    env = os.environ
    files = [f for f in env.get("CAPACITY_EXPORT_FILES", "").split(",") if f]
    webhook = "CAPACITY_REPORT_WEBHOOK_URL"
    alertmanager = "CAPACITY_ALERTMANAGER_URL"
    return {
        "warehouse": WarehouseResource(
            path=str(paths.warehouse_path()),
            snapshot_path=str(paths.snapshot_path()),
            decisions_path=str(paths.decisions_path()),
            lock_wait_s=float(env.get("CAPACITY_LOCK_WAIT_S", "120") or 120),
        ),
        "reports": ReportsResource(
            reports_dir=str(paths.reports_dir()),
            webhook_url=dg.EnvVar(webhook) if env.get(webhook) else None,
            public_base_url=env.get("CAPACITY_REPORT_BASE_URL", ""),
        ),
        "alertmanager": AlertmanagerResource(
            url=dg.EnvVar(alertmanager) if env.get(alertmanager) else None
        ),
        "prometheus": prometheus_from_environment(),
        "metrics": MetricSourceResource(
            export_files=files, cache_dir=str(paths.capacity_home() / "cache")
        ),
        "compute": ComputeResource(workers=int(env.get("CAPACITY_WORKERS", "0") or 0)),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())

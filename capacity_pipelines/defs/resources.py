"""Resources shared by every domain: the warehouse and the metric source."""

import os

import dagster as dg

from capacity_pipelines.common import paths
from capacity_pipelines.ingest.catalog import Catalog, load_catalog
from capacity_pipelines.ingest.sources import (
    FileSource,
    MetricSource,
    PrometheusSettings,
    PrometheusSource,
    demo_source,
)


class WarehouseResource(dg.ConfigurableResource):
    """Where the DuckDB warehouse and its analyst snapshot live, and how long to wait for a lock.

    Only pipeline runs write the warehouse; analysts read the snapshot.
    """

    path: str
    snapshot_path: str
    lock_wait_s: float = 120.0


class ReportsResource(dg.ConfigurableResource):
    """Where published reports go (`<ISO week>/` folders and a stable `latest/`)."""

    reports_dir: str


class MetricSourceResource(dg.ConfigurableResource):
    """Which metrics to read: a live Prometheus, exported files, or (default) the demo fleet.

    Credentials (`CAPACITY_PROMETHEUS_TOKEN`, `..._USER` / `..._PASSWORD`) are read from the
    environment when the source is built and never stored in config or logged.
    """

    prometheus_url: str = ""
    export_files: list[str] = []
    catalog_path: str = ""
    llm_mapping: str = ""
    cache_dir: str = ""

    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_path or None, llm_mapping=self.llm_mapping or None)

    def source(self) -> MetricSource:
        if self.prometheus_url:
            return PrometheusSource(PrometheusSettings.from_env(url=self.prometheus_url))
        if self.export_files:
            return FileSource(self.export_files, cache_dir=self.cache_dir or None)
        return demo_source(cache_dir=self.cache_dir or None)


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources configured from the environment (see README, configuration reference)."""
    files = [f for f in os.environ.get("CAPACITY_EXPORT_FILES", "").split(",") if f]
    return {
        "warehouse": WarehouseResource(
            path=str(paths.warehouse_path()), snapshot_path=str(paths.snapshot_path())
        ),
        "reports": ReportsResource(reports_dir=str(paths.reports_dir())),
        "metrics": MetricSourceResource(
            prometheus_url=os.environ.get("CAPACITY_PROMETHEUS_URL", ""),
            export_files=files,
            catalog_path=os.environ.get("CAPACITY_METRIC_CATALOG", ""),
            llm_mapping=os.environ.get("CAPACITY_LLM_MAPPING", ""),
            cache_dir=str(paths.capacity_home() / "cache"),
        ),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())

"""Metric sources behind one interface: a live Prometheus, exported files, the demo fleet.

Every source answers the same question, "the values of these catalog columns over this
evaluation grid", so the extraction and the warehouse never know where the data came from.
"""

from capacity_pipelines.ingest.sources.base import MetricSource, SourceError
from capacity_pipelines.ingest.sources.files import FileSource, demo_source
from capacity_pipelines.ingest.sources.prometheus import PrometheusSettings, PrometheusSource

__all__ = [
    "FileSource",
    "MetricSource",
    "PrometheusSettings",
    "PrometheusSource",
    "SourceError",
    "demo_source",
]

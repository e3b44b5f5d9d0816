"""File-backed source: OpenMetrics exports, long Parquet/CSV, and the bundled demo fleet."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl

from capacity_pipelines.common.paths import DEMO_DIR, capacity_home
from capacity_pipelines.ingest.catalog import ColumnQuery, TableSpec
from capacity_pipelines.ingest.sources.base import (
    MetricSource,
    SeriesPoints,
    SourceError,
    series_points,
)
from capacity_pipelines.ingest.sources.evaluate import evaluate_column
from capacity_pipelines.ingest.sources.openmetrics import (
    RawSamples,
    read_long_table,
    read_openmetrics,
)

DEMO_FLEET_FILE = DEMO_DIR / "fleet.om.xz"


def _is_openmetrics(path: Path) -> bool:
    suffixes = "".join(path.suffixes)
    return any(s in suffixes for s in (".om", ".prom", ".txt", ".openmetrics"))


class FileSource(MetricSource):
    """Evaluates the catalog over raw samples read from export files.

    Parsing a month of OpenMetrics text takes seconds, and every extraction asset reads the same
    file, so the parsed samples are cached as Parquet under `cache_dir`, keyed by the files'
    path, size and modification time.
    """

    def __init__(self, paths: list[str | Path], cache_dir: str | Path | None = None):
        self.paths = [Path(p) for p in paths]
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.description = "files: " + ", ".join(str(p) for p in self.paths)
        self._samples: RawSamples | None = None

    def _cache_key(self) -> str:
        digest = hashlib.sha256()
        for path in self.paths:
            stat = path.stat()
            digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:20]

    def _read_all(self) -> RawSamples:
        parts = [
            read_openmetrics(p) if _is_openmetrics(p) else read_long_table(p) for p in self.paths
        ]
        if len(parts) == 1:
            return parts[0]
        labels: dict[str, dict[str, str]] = {}
        for part in parts:
            labels.update(part.labels)
        frame = pl.concat([p.frame for p in parts]).unique(["series", "ts"]).sort("series", "ts")
        return RawSamples(frame=frame, labels=labels)

    def samples(self) -> RawSamples:
        """All raw samples, parsed once per instance and cached on disk across processes."""
        if self._samples is not None:
            return self._samples
        for path in self.paths:
            if not path.exists():
                raise SourceError(f"{path}: export file not found")
        cached = None
        if self.cache_dir is not None:
            key = self._cache_key()
            frame_path = self.cache_dir / f"{key}.parquet"
            labels_path = self.cache_dir / f"{key}.labels.json"
            if frame_path.exists() and labels_path.exists():
                cached = RawSamples(
                    frame=pl.read_parquet(frame_path), labels=json.loads(labels_path.read_text())
                )
        if cached is None:
            cached = self._read_all()
            if self.cache_dir is not None:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = frame_path.with_suffix(".tmp")
                cached.frame.write_parquet(tmp)
                tmp.replace(frame_path)
                labels_path.write_text(json.dumps(cached.labels))
        self._samples = cached
        return cached

    def time_range(self) -> tuple[float, float]:
        """First and last sample time (epoch seconds) in the files."""
        frame = self.samples().frame
        return float(frame["ts"].min()), float(frame["ts"].max())

    def fetch_columns(
        self,
        table: TableSpec,
        queries: list[ColumnQuery],
        grid: np.ndarray,
        step_s: float,
        window_s: float,
    ) -> dict[str, SeriesPoints]:
        samples = self.samples()
        return {
            q.column: series_points(
                table.source_labels,
                evaluate_column(samples, table, q, grid, step_s, window_s),
                grid,
            )
            for q in queries
        }


def demo_source(cache_dir: str | Path | None = None) -> FileSource:
    """The bundled demo fleet, read through the same path as any OpenMetrics export."""
    source = FileSource([DEMO_FLEET_FILE], cache_dir=cache_dir or capacity_home() / "cache")
    source.description = "demo fleet (assets/demo/fleet.om.xz)"
    return source

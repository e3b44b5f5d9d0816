"""Live Prometheus source, through prometheus-api-client.

Range queries are cut into chunks below Prometheus' 11,000-points-per-series limit and fetched
concurrently (bounded); the HTTP session retries timeouts, 429 and 5xx with exponential backoff
and jitter, honouring `Retry-After`. A chunk that still fails fails the whole fetch: the caller
never sees (or writes) a partial window.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from capacity_pipelines.catalog import ColumnQuery, TableSpec, format_duration, render_promql
from capacity_pipelines.sources.base import MetricSource, SeriesPoints, SourceError

PROMETHEUS_MAX_POINTS = 11_000  # Prometheus refuses range queries above this per series
RETRYABLE_STATUS = (429, 500, 502, 503, 504)
_SPECIAL_VALUES = {"+Inf": "inf", "-Inf": "-inf", "NaN": "nan"}  # Prometheus' JSON spellings


@dataclass(frozen=True)
class PrometheusSettings:
    """Connection settings; secrets come only from the environment and are never logged."""

    url: str
    timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 0.5
    max_points: int = 10_000
    concurrency: int = 4
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_bundle: str | None = None
    verify_tls: bool = True

    @classmethod
    def from_env(cls, url: str | None = None, **overrides) -> PrometheusSettings:
        """Read `CAPACITY_PROMETHEUS_*` variables (URL, TOKEN, USER/PASSWORD, CA_BUNDLE, ...)."""
        env = os.environ
        url = url or env.get("CAPACITY_PROMETHEUS_URL")
        if not url:
            raise SourceError(
                "no Prometheus URL: pass --prometheus-url or set CAPACITY_PROMETHEUS_URL"
            )
        user, password = (
            env.get("CAPACITY_PROMETHEUS_USER"),
            env.get("CAPACITY_PROMETHEUS_PASSWORD"),
        )
        settings = dict(
            url=url.rstrip("/"),
            timeout_s=float(env.get("CAPACITY_PROMETHEUS_TIMEOUT", 30)),
            retries=int(env.get("CAPACITY_PROMETHEUS_RETRIES", 4)),
            concurrency=int(env.get("CAPACITY_PROMETHEUS_CONCURRENCY", 4)),
            bearer_token=env.get("CAPACITY_PROMETHEUS_TOKEN") or None,
            basic_auth=(user, password) if user and password else None,
            ca_bundle=env.get("CAPACITY_PROMETHEUS_CA_BUNDLE") or None,
            verify_tls=env.get("CAPACITY_PROMETHEUS_INSECURE_SKIP_VERIFY", "") not in ("1", "true"),
        )
        settings.update(overrides)
        return cls(**settings)

    def __repr__(self) -> str:  # never print credentials
        return f"PrometheusSettings(url={self.url!r}, timeout_s={self.timeout_s})"


def _retry(settings: PrometheusSettings) -> Retry:
    """Retries for timeouts, refused connections, 429 and 5xx, honouring `Retry-After`."""
    return Retry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        backoff_factor=settings.backoff_s,
        backoff_jitter=settings.backoff_s,
        status_forcelist=RETRYABLE_STATUS,
        allowed_methods=None,  # query_range is read-only: retry GET and POST alike
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def _session(settings: PrometheusSettings) -> requests.Session:
    session = requests.Session()
    session.verify = settings.ca_bundle or settings.verify_tls
    return session


def grid_chunks(grid: np.ndarray, max_points: int) -> list[np.ndarray]:
    """Split an evaluation grid so no request asks for more than `max_points` steps."""
    if max_points >= PROMETHEUS_MAX_POINTS:
        raise ValueError(f"max_points must stay below {PROMETHEUS_MAX_POINTS}")
    return [grid[i : i + max_points] for i in range(0, len(grid), max_points)]


def _decode(result: list[dict], labels: tuple[str, ...]) -> SeriesPoints:
    """Turn a query_range `result` into labels per series and points (NaN answers are gaps).

    All points of the answer are flattened into lists and converted once by Polars: per-series
    frames cost more than the data for short chunks.
    """
    series = [s for s in result if s.get("values")]
    if not series:
        return SeriesPoints.empty(labels)
    lengths = [len(s["values"]) for s in series]
    points = [point for s in series for point in s["values"]]
    frame = pl.DataFrame(
        {
            "series": np.repeat(np.arange(len(series), dtype=np.uint32), lengths),
            "ts": pl.Series([p[0] for p in points], dtype=pl.Float64),
            "value": pl.Series([p[1] for p in points], dtype=pl.Utf8),
        }
    )
    frame = frame.with_columns(pl.col("value").replace(_SPECIAL_VALUES).cast(pl.Float64)).filter(
        pl.col("value").is_not_nan()
    )
    metrics = pl.DataFrame(
        {name: [s.get("metric", {}).get(name, "") for s in series] for name in labels},
        schema={name: pl.Utf8 for name in labels},
    )
    return SeriesPoints(labels=metrics, points=frame)


def failed_later(error: BaseException) -> bool:
    """True for the stand-in errors of chunks skipped after the first real failure."""
    return isinstance(error, SourceError) and str(error).startswith("cancelled after")


class PrometheusSource(MetricSource):
    """Reads catalog columns from a live Prometheus with `query_range`."""

    def __init__(self, settings: PrometheusSettings):
        self.settings = settings
        self.description = f"prometheus: {settings.url}"
        headers = (
            {"Authorization": f"Bearer {settings.bearer_token}"} if settings.bearer_token else None
        )
        self.client = PrometheusConnect(
            url=settings.url,
            headers=headers,
            disable_ssl=not settings.verify_tls,
            auth=settings.basic_auth,
            session=_session(settings),
            # prometheus-api-client mounts its own adapter on the URL: give it our policy.
            retry=_retry(settings),
            timeout=settings.timeout_s,
        )

    def _query(self, promql: str, chunk: np.ndarray, step_s: float) -> list[dict]:
        start = datetime.fromtimestamp(float(chunk[0]), tz=UTC)
        end = datetime.fromtimestamp(float(chunk[-1]), tz=UTC)
        try:
            return self.client.custom_query_range(
                promql, start_time=start, end_time=end, step=format_duration(step_s)
            )
        except PrometheusApiClientException as exc:
            raise SourceError(
                f"Prometheus {self.settings.url} refused query_range {promql!r} "
                f"[{start:%Y-%m-%dT%H:%M}Z..{end:%Y-%m-%dT%H:%M}Z]: {str(exc)[:300]}"
            ) from None
        except (requests.RequestException, ValueError) as exc:
            raise SourceError(
                f"Prometheus {self.settings.url} unreachable or answered badly for query_range "
                f"{promql!r} [{start:%Y-%m-%dT%H:%M}Z..{end:%Y-%m-%dT%H:%M}Z] after "
                f"{self.settings.retries} retries: {type(exc).__name__}: {str(exc)[:300]}"
            ) from None

    def fetch_columns(
        self,
        table: TableSpec,
        queries: list[ColumnQuery],
        grid: np.ndarray,
        step_s: float,
        window_s: float,
    ) -> dict[str, SeriesPoints]:
        chunks = grid_chunks(grid, self.settings.max_points)
        jobs = [
            (q.column, render_promql(table, q, step_s, window_s), chunk)
            for q in queries
            for chunk in chunks
        ]
        failed = threading.Event()

        def fetch(promql: str, chunk: np.ndarray) -> SeriesPoints:
            # Once one chunk has failed for good, the rest stop instead of hammering a sick
            # server; the caller gets the first, meaningful error.
            if failed.is_set():
                raise SourceError("cancelled after an earlier chunk failed")
            try:
                result = self._query(promql, chunk, step_s)
            except BaseException:
                failed.set()
                raise
            # Decoding here overlaps with the other chunks' time on the server.
            return _decode(result, table.source_labels)

        with ThreadPoolExecutor(max_workers=self.settings.concurrency) as pool:
            futures = [pool.submit(fetch, promql, chunk) for _, promql, chunk in jobs]
            errors = [f.exception() for f in futures]
        first_error = next((e for e in errors if e is not None and not failed_later(e)), None)
        if first_error is not None:
            raise first_error
        out: dict[str, list[SeriesPoints]] = {q.column: [] for q in queries}
        for (column, _, _), future in zip(jobs, futures, strict=True):
            out[column].append(future.result())
        return {
            column: SeriesPoints.concat(parts, table.source_labels) for column, parts in out.items()
        }

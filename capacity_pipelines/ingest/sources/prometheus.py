"""Live Prometheus source: `query_range` over a retrying HTTP session.

Range queries are cut into chunks of at most one day (`chunk_s`), always below Prometheus'
11,000-points-per-series limit, and fetched concurrently (bounded); the HTTP session retries
timeouts, dropped connections, 429 and 5xx with exponential backoff and jitter, honouring
`Retry-After`, and an answer cut short or not valid JSON is asked for again as often. A chunk
that still fails fails the whole fetch: the caller never sees (or writes) a partial window.

Answers are read as a stream and counted as they arrive: a query whose answer holds more series
than `max_series` (a label-cardinality explosion) is abandoned before it is parsed, so memory
stays bounded by the cap rather than by whatever the server sends.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

import numpy as np
import polars as pl
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from capacity_pipelines.common.retry import RetryPolicy, call_with_retries
from capacity_pipelines.ingest.catalog import ColumnQuery, TableSpec, format_duration, render_promql
from capacity_pipelines.ingest.sources.base import MetricSource, SeriesPoints, SourceError

PROMETHEUS_MAX_POINTS = 11_000  # Prometheus refuses range queries above this per series
RETRYABLE_STATUS = (429, 500, 502, 503, 504)
# Series per query above which the answer is refused. A 2,000-container fleet answers about
# 2,000 series per container query, so 20,000 leaves tenfold headroom while a label explosion
# (a per-request label, a pod-name churn) stops before it costs gigabytes.
DEFAULT_MAX_SERIES = 20_000
# Time span of one request. The server's work and the answer grow with series x points, so a
# backfill of weeks in one request times out on a large fleet, while day-long requests stay
# small and cost no more per day (request-size table in benchmarks/results/scale.md).
DEFAULT_CHUNK_S = 86_400.0
# No pause between two tries is longer than urllib3's default backoff cap, whatever the retries.
MAX_RETRY_DELAY_S = 120.0
_SERIES_MARKER = b'"metric":'  # opens every series object of a query_range answer
_READ_BYTES = 1 << 20

logger = logging.getLogger(__name__)


class SeriesLimitError(SourceError):
    """A query matched more series than the configured cap; retrying cannot help."""


class PrometheusConfigError(SourceError):
    """The connection settings themselves are wrong (a malformed URL); retrying cannot help."""


@dataclass(frozen=True)
class PrometheusSettings:
    """Connection settings; secrets come only from the environment and are never logged."""

    url: str
    timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 0.5
    max_points: int = 10_000
    chunk_s: float = DEFAULT_CHUNK_S
    concurrency: int = 4
    max_series: int = DEFAULT_MAX_SERIES
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    ca_bundle: str | None = None
    verify_tls: bool = True

    @classmethod
    def create(cls, url: str, chunk_hours: float | None = None, **settings) -> PrometheusSettings:
        """Validated settings: a well-formed http(s) URL without credentials, a positive chunk.

        A URL that cannot be parsed is refused here, in seconds, with its credentials masked:
        retrying could never make it work.
        """
        clean = checked_url(url)
        if chunk_hours is not None:
            settings["chunk_s"] = _chunk_seconds(chunk_hours)
        return cls(url=clean, **settings)

    @property
    def retry_policy(self) -> RetryPolicy:
        """How often and how patiently to ask: the session's transport retries and the
        source's own retries of bad answers follow the same numbers."""
        return RetryPolicy(
            retries=self.retries,
            base_delay_s=self.backoff_s,
            jitter_s=self.backoff_s,
            max_delay_s=MAX_RETRY_DELAY_S,
        )

    def points_per_request(self, step_s: float) -> int:
        """Steps per `query_range` call: `chunk_s` of them, never over `max_points`."""
        return max(1, min(self.max_points, int(self.chunk_s // step_s)))

    @property
    def public_url(self) -> str:
        """The URL without any `user:password@`, for messages, logs and metadata."""
        return redact_url(self.url)

    def __repr__(self) -> str:  # never print credentials
        return f"PrometheusSettings(url={self.public_url!r}, timeout_s={self.timeout_s})"


def _chunk_seconds(hours: float | str) -> float:
    """Chunk hours in seconds; a value that is not a positive number is refused here rather
    than turning every request into a single point."""
    try:
        value = float(hours)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise PrometheusConfigError(
            f"CAPACITY_PROMETHEUS_CHUNK_HOURS (the resource's chunk_hours) must be a positive "
            f"number of hours, not {hours!r}"
        )
    return value * 3600


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(URL without user info, user, password), split without parsing the URL first.

    A password may hold characters a URL parser reads as delimiters (`#`, `/`, `?`), which
    would otherwise land in an error message or a log. Everything between `://` and the last
    `@` is the user info; percent-escapes in it are decoded.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url, None, None
    userinfo, _, host = rest.rpartition("@")
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{host}", unquote(user) or None, unquote(password) or None


def checked_url(url: str) -> str:
    """The URL, credentials removed, trailing `/` dropped; PrometheusConfigError if malformed."""
    clean = split_credentials(url.strip())[0].rstrip("/")
    if not clean:
        raise PrometheusConfigError(
            "no Prometheus URL: pass --prometheus-url or set CAPACITY_PROMETHEUS_URL"
        )
    try:
        parts = urlsplit(clean)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok, parts = False, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise PrometheusConfigError(
            f"{redact_url(url)}: not a usable Prometheus URL (expected http(s)://host[:port]"
            "[/path]; characters such as # / ? @ in a password must be percent-encoded, or "
            "pass the password in CAPACITY_PROMETHEUS_PASSWORD)"
        )
    return clean


def redact_url(url: str) -> str:
    """`url` with the user info (basic-auth credentials) replaced by `***`, found without
    parsing the URL (see `split_credentials`)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def _retry(settings: PrometheusSettings) -> Retry:
    """Retries for timeouts, refused connections, 429 and 5xx, honouring `Retry-After`."""
    policy = settings.retry_policy
    return Retry(
        total=policy.retries,
        connect=policy.retries,
        read=policy.retries,
        status=policy.retries,
        **policy.urllib3_backoff(),
        status_forcelist=RETRYABLE_STATUS,
        allowed_methods=None,  # query_range is read-only: retry GET and POST alike
        respect_retry_after_header=True,
        raise_on_status=False,
    )


def _session(settings: PrometheusSettings) -> requests.Session:
    """A session with the retry policy mounted and the credentials attached (never logged)."""
    session = requests.Session()
    session.verify = settings.ca_bundle or settings.verify_tls
    adapter = HTTPAdapter(
        max_retries=_retry(settings),
        pool_connections=settings.concurrency,
        pool_maxsize=settings.concurrency,
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if settings.bearer_token:
        session.headers["Authorization"] = f"Bearer {settings.bearer_token}"
    if settings.basic_auth:
        session.auth = settings.basic_auth
    return session


class _BadAnswer(Exception):
    """An answer cut short or not the JSON Prometheus sends: worth asking again."""


def _read_answer(response: requests.Response, max_series: int, promql: str) -> bytes:
    """The whole body, counting series as it streams in; refuse past `max_series`."""
    parts: list[bytes] = []
    series, tail = 0, b""
    try:
        for block in response.iter_content(_READ_BYTES):
            # Count across block boundaries: keep the marker's length minus one byte of overlap.
            window = tail + block
            series += window.count(_SERIES_MARKER)
            tail = window[-(len(_SERIES_MARKER) - 1) :]
            if series > max_series:
                raise SeriesLimitError(
                    f"query_range {promql!r} matched more than {max_series:,} series (label "
                    "cardinality explosion?): refused before parsing; narrow the catalog "
                    "selector or raise CAPACITY_MAX_SERIES_PER_QUERY"
                )
            parts.append(block)
    except requests.RequestException as exc:  # connection dropped mid-body
        raise _BadAnswer(f"answer cut short: {type(exc).__name__}") from None
    return b"".join(parts)


def _result(body: bytes) -> list[dict]:
    """The `data.result` list of a query_range answer; `_BadAnswer` when it is not one."""
    try:
        answer = json.loads(body)
        result = answer["data"]["result"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _BadAnswer(
            f"answer is not query_range JSON ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    if not isinstance(result, list):
        raise _BadAnswer("answer's data.result is not a list")
    return result


# What decoding a structurally odd answer raises (a series without values, a value not a number).
_UNREADABLE = (_BadAnswer, TypeError, IndexError, ValueError, pl.exceptions.PolarsError)


def _error_text(response: requests.Response) -> str:
    """Prometheus' own error message when the body carries one, else the body's start."""
    try:
        return str(response.json()["error"])[:300]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


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
    try:
        series = [s for s in result if s.get("values")]
    except AttributeError:
        raise _BadAnswer("answer's series are not JSON objects") from None
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
    # Polars' float parser reads Prometheus' spellings "NaN", "+Inf" and "-Inf" as they are:
    # no string replacement pass over every sample (tests/test_faults.py pins this).
    frame = frame.with_columns(pl.col("value").cast(pl.Float64, strict=False))
    if frame["value"].null_count():
        raise _BadAnswer("answer holds a sample value that is not a number")
    frame = frame.filter(pl.col("value").is_not_nan())
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
        self.description = f"prometheus: {settings.public_url}"
        self.session = _session(settings)

    def _query(self, promql: str, chunk: np.ndarray, step_s: float) -> list[dict]:
        """One chunk's `data.result`; transport retries are the session's, bad bodies ours."""
        start = datetime.fromtimestamp(float(chunk[0]), tz=UTC)
        end = datetime.fromtimestamp(float(chunk[-1]), tz=UTC)
        where = (
            f"query_range {promql!r} [{start:%Y-%m-%dT%H:%M}Z..{end:%Y-%m-%dT%H:%M}Z] "
            f"at Prometheus {self.settings.public_url}"
        )
        params = {
            "query": promql,
            "start": round(start.timestamp()),
            "end": round(end.timestamp()),
            "step": format_duration(step_s),
        }

        def ask(_attempt: int) -> list[dict]:
            with self.session.get(
                f"{self.settings.url}/api/v1/query_range",
                params=params,
                timeout=self.settings.timeout_s,
                stream=True,
            ) as response:
                if response.status_code != 200:
                    raise SourceError(
                        f"{where} refused: HTTP {response.status_code}: {_error_text(response)}"
                    )
                body = _read_answer(response, self.settings.max_series, promql)
            return _result(body)

        policy = self.settings.retry_policy
        try:
            # Transport failures were already retried by the session; bad bodies are ours.
            result = call_with_retries(ask, policy, retry_on=(_BadAnswer,))
        except SeriesLimitError as exc:
            raise SeriesLimitError(f"{exc} ({where})") from None
        except _BadAnswer as exc:
            raise SourceError(
                f"{where} answered badly {policy.attempts} times ({policy.retries} retries): {exc}"
            ) from None
        except requests.RequestException as exc:
            hint = (
                " (a heavy query: lower CAPACITY_PROMETHEUS_CHUNK_HOURS or raise "
                "CAPACITY_PROMETHEUS_TIMEOUT)"
                if isinstance(exc, requests.Timeout) or "timed out" in str(exc).lower()
                else ""
            )
            raise SourceError(
                f"{where} unreachable after {policy.retries} retries{hint}: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from None
        if len(result) > self.settings.max_series // 2:
            logger.warning(
                "%s returned %d series, over half the cap of %d "
                "(CAPACITY_MAX_SERIES_PER_QUERY): check the labels for a cardinality explosion",
                where,
                len(result),
                self.settings.max_series,
            )
        return result

    def fetch_columns(
        self,
        table: TableSpec,
        queries: list[ColumnQuery],
        grid: np.ndarray,
        step_s: float,
        window_s: float,
    ) -> dict[str, SeriesPoints]:
        chunks = grid_chunks(grid, self.settings.points_per_request(step_s))
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
            try:
                return _decode(result, table.source_labels)
            except _UNREADABLE as exc:
                failed.set()
                raise SourceError(
                    f"Prometheus {self.settings.public_url} answered query_range {promql!r} with "
                    f"samples that cannot be read: {type(exc).__name__}: {str(exc)[:200]}"
                ) from None

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

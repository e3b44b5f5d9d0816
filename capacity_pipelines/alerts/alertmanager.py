"""Post predictive alerts to Alertmanager (API v2) so re-runs neither duplicate nor forget.

Alertmanager deduplicates by label set: posting the same labels again only moves `endsAt`.
Each sync therefore (1) reads the alerts of ours that are still active (`source` label), (2)
posts every current alert with `startsAt` = when its condition was first seen (kept from the
active alert of the same labels, severity aside), and (3) re-posts every active alert of ours
that is not current with `endsAt = now`, which resolves it.

Alerting must never fail the pipeline that feeds it: an unreachable Alertmanager or an error
answer gives a one-line warning naming the URL without credentials (they are split off before
anything is built from the URL), and the sync reports nothing posted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from capacity_pipelines.alerts.conditions import SOURCE, Alert
from capacity_pipelines.common.retry import RetryPolicy
from capacity_pipelines.ingest.sources.prometheus import split_credentials

RETRYABLE_STATUS = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: alerts firing (current), resolved (ours, no longer current) and
    posted in total; `warning` is set (and nothing was posted) when Alertmanager failed."""

    firing: int
    resolved: int
    posted: int
    warning: str | None = None


class AlertmanagerError(RuntimeError):
    """Alertmanager could not be read or written; the message never holds credentials."""


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class AlertmanagerClient:
    """A small v2 API client with a retrying session and explicit timeouts.

    `url` may carry `user:password@` (used as basic auth, never shown); `public_url` is what
    logs and messages name.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 10.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        username: str | None = None,
        password: str | None = None,
    ):
        clean, url_user, url_password = split_credentials(url.strip())
        self.public_url = clean.rstrip("/")
        self.timeout_s = timeout_s
        user, secret = username or url_user, password or url_password
        self._session = requests.Session()
        if user and secret:
            self._session.auth = (user, secret)
        policy = RetryPolicy(retries=retries, base_delay_s=backoff_s)
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            **policy.urllib3_backoff(),
            status_forcelist=RETRYABLE_STATUS,
            # Posting alerts is idempotent (deduplicated by labels): POST may be retried.
            allowed_methods=None,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def _call(self, method: str, **kwargs) -> requests.Response:
        try:
            response = self._session.request(
                method, f"{self.public_url}/api/v2/alerts", timeout=self.timeout_s, **kwargs
            )
        except requests.RequestException as error:
            # The exception text holds the URL; only its class is worth a person's reading.
            raise AlertmanagerError(
                f"Alertmanager {self.public_url} unreachable ({type(error).__name__})"
            ) from None
        if response.status_code >= 400:
            raise AlertmanagerError(
                f"Alertmanager {self.public_url} answered {method} /api/v2/alerts with "
                f"HTTP {response.status_code}"
            )
        return response

    def active_alerts(self) -> list[dict]:
        """Our alerts Alertmanager holds as not yet ended (the v2 `gettableAlert` objects)."""
        response = self._call("GET", params={"filter": f'source="{SOURCE}"'})
        try:
            return [a for a in response.json() if a.get("labels", {}).get("source") == SOURCE]
        except (ValueError, AttributeError):
            raise AlertmanagerError(
                f"Alertmanager {self.public_url} answered GET /api/v2/alerts with no alert list"
            ) from None

    def post(self, payload: list[dict]) -> None:
        """POST alerts (a JSON list, serialised by `requests`)."""
        self._call("POST", json=payload)


def sync_payload(alerts: list[Alert], active: list[dict], now: datetime) -> tuple[list[dict], int]:
    """(alerts to post, how many of them resolve an active alert of ours).

    Current alerts keep the earliest `startsAt` of the active alerts of the same condition;
    active alerts whose label set is not current are re-posted ending `now`.
    """
    first_seen: dict[tuple, datetime] = {}
    for existing in active:
        labels = existing.get("labels", {})
        identity = tuple(sorted((k, v) for k, v in labels.items() if k != "severity"))
        started = _parse_time(existing["startsAt"])
        first_seen[identity] = min(started, first_seen.get(identity, started))
    payload = []
    current = set()
    for alert in alerts:
        started = min(alert.starts_at, first_seen.get(alert.identity, alert.starts_at))
        payload.append(
            Alert(
                alert.labels, alert.annotations, started, alert.ends_at, alert.generator_url
            ).payload()
        )
        current.add(tuple(sorted(alert.labels.items())))
    resolved = 0
    for existing in active:
        labels = existing.get("labels", {})
        if tuple(sorted(labels.items())) in current:
            continue
        ended = Alert(
            labels=labels,
            annotations=existing.get("annotations", {}),
            starts_at=_parse_time(existing["startsAt"]),
            ends_at=now,
            generator_url=existing.get("generatorURL", ""),
        )
        payload.append(ended.payload())
        resolved += 1
    return payload, resolved


def sync_alerts(client: AlertmanagerClient, alerts: list[Alert], now: datetime) -> SyncResult:
    """Make Alertmanager hold exactly `alerts` among ours: post them, resolve the rest.

    Never raises for an Alertmanager problem: the result carries a one-line warning instead.
    """
    try:
        payload, resolved = sync_payload(alerts, client.active_alerts(), now)
        if payload:
            client.post(payload)
    except AlertmanagerError as error:
        return SyncResult(len(alerts), 0, 0, f"{error}: alerts not posted")
    return SyncResult(firing=len(alerts), resolved=resolved, posted=len(payload))

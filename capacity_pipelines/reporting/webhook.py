"""Post the report's summary and link to a Slack-compatible incoming webhook.

The webhook URL is a secret (whoever has it can post to the channel): it comes from the reports
resource as an `EnvVar` (`CAPACITY_REPORT_WEBHOOK_URL`) and never appears in a log, an
exception, metadata or the report. The stdlib
HTTP client is used on purpose: urllib3's debug logging prints request paths, which for Slack
webhooks carry the token.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from capacity_pipelines.common.retry import RetryPolicy, call_with_retries

WEBHOOK_URL_ENV = "CAPACITY_REPORT_WEBHOOK_URL"
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER_S = 60.0  # never sleep longer than a minute on a server's Retry-After


class WebhookError(RuntimeError):
    """Delivery failed; the message never contains the URL."""


@dataclass(frozen=True)
class Delivery:
    """How a delivery went: HTTP status of the last attempt and attempts made."""

    status: int
    attempts: int


def slack_payload(headline: str, summary_lines: list[str], link: str) -> dict[str, Any]:
    """Slack-compatible JSON: `text` for notifications and clients without blocks, plus blocks."""
    bullets = "\n".join(f"• {line}" for line in summary_lines)
    return {
        "text": f"{headline}\n{bullets}\nReport: {link}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": headline[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": bullets[:2900] or "-"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Report: {link}"}]},
        ],
    }


class _Undelivered(Exception):
    """One attempt failed in a way worth retrying; `why` never contains the URL."""

    def __init__(self, why: str, retry_after_s: float | None = None):
        super().__init__(why)
        self.why = why
        self.retry_after_s = retry_after_s


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    """The server's `Retry-After` in seconds (the delta-seconds form; a date is ignored)."""
    value = error.headers.get("Retry-After") if error.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def deliver_summary(
    payload: dict[str, Any],
    url: str | None,
    retries: int = 3,
    timeout_s: float = 10.0,
    backoff_s: float = 1.0,
) -> Delivery | None:
    """POST `payload` to the webhook at `url`.

    Returns None when no webhook is configured. Timeouts, connection errors, 429 and 5xx are
    retried `retries` times with exponential backoff (honouring Retry-After); other 4xx fail
    at once. Raises WebhookError naming the status or error class, never the URL.
    """
    if not url:
        return None
    if not url.startswith(("https://", "http://")):
        raise WebhookError(f"{WEBHOOK_URL_ENV} is not an http(s) URL")
    body = json.dumps(payload).encode()

    def post(attempt: int) -> Delivery:
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                return Delivery(status=response.status, attempts=attempt)
        except urllib.error.HTTPError as error:
            if error.code not in RETRYABLE_STATUS:
                raise WebhookError(
                    f"webhook delivery refused: HTTP {error.code} (not retried; check the webhook)"
                ) from None
            raise _Undelivered(f"HTTP {error.code}", _retry_after(error)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            why = type(reason).__name__ if not isinstance(reason, str) else "connection error"
            raise _Undelivered(why) from None

    policy = RetryPolicy(retries=retries, base_delay_s=backoff_s, max_delay_s=MAX_RETRY_AFTER_S)
    try:
        return call_with_retries(
            post, policy, retry_on=(_Undelivered,), delay_hint=lambda e: e.retry_after_s
        )
    except _Undelivered as last:
        raise WebhookError(
            f"webhook delivery failed after {policy.attempts} attempts: {last.why}"
        ) from None


def report_link(week_label: str, html_path: str, base_url: str = "") -> str:
    """Where readers open the report: `<base_url>/<week>/capacity_report.html` when the reports
    folder is served (`CAPACITY_REPORT_BASE_URL`), else the file path on the reporting host."""
    base = base_url.rstrip("/")
    name = html_path.rsplit("/", 1)[-1]
    return f"{base}/{week_label}/{name}" if base else html_path


def deliver_report(
    headline: str, summary_lines: list[str], link: str, webhook_url: str | None
) -> tuple[bool, str]:
    """Send the summary if a webhook is configured: (delivered or not needed, a note for people).

    Never raises for a delivery problem: the report is already published, and the note (which
    never contains the URL) goes to the run's log and the asset check.
    """
    try:
        delivery = deliver_summary(slack_payload(headline, summary_lines, link), webhook_url)
    except WebhookError as error:
        return False, str(error)
    if delivery is None:
        return True, f"no webhook configured (${WEBHOOK_URL_ENV} unset)"
    return True, f"delivered (HTTP {delivery.status}, {delivery.attempts} attempt(s))"

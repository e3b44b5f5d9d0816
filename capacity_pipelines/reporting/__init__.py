"""The weekly capacity report: gathered from the read-only snapshot, rendered, published, sent.

Pure Python (no Dagster import) so the same report is built by the Dagster asset, the CLI, a
notebook or a test: `gather_report` reads the snapshot, `render_html` / `render_markdown` turn
it into files, `publish_report` writes `reports/<ISO week>/` and `reports/latest/`, and
`deliver_summary` posts the summary to a Slack-compatible webhook.
"""

from capacity_pipelines.reporting.model import Chart, ReportTable, Section, WeeklyReport
from capacity_pipelines.reporting.publish import PublishedReport, publish_report
from capacity_pipelines.reporting.render import render_html, render_markdown
from capacity_pipelines.reporting.sections import gather_report
from capacity_pipelines.reporting.webhook import (
    WEBHOOK_URL_ENV,
    WebhookError,
    deliver_summary,
    slack_payload,
)
from capacity_pipelines.reporting.weeks import ReportWeek

__all__ = [
    "WEBHOOK_URL_ENV",
    "Chart",
    "PublishedReport",
    "ReportTable",
    "ReportWeek",
    "Section",
    "WebhookError",
    "WeeklyReport",
    "deliver_summary",
    "gather_report",
    "publish_report",
    "render_html",
    "render_markdown",
    "slack_payload",
]

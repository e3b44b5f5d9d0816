"""Publish a rendered report to `reports/<ISO week>/` and the stable `reports/latest/`.

A week's folder is wholly the report's: built beside it and swapped in whole
(`common.files.publish_folder`), so a re-run of a week replaces that week's files (none left over
from the previous run) and never touches another week; a crash leaves the previous folder.
`latest/` is shared with the daily reports and whatever people keep there, so only this report's
files are replaced (`publish_files`; its CSV folder swapped whole, the JSON that records the week
last), and only by the newest week: re-running an old week does not move `latest/` back in time.
The CSVs are written for spreadsheets (`spreadsheet_csv`); the JSON keeps the raw values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from capacity_pipelines.common.files import Content, publish_files, publish_folder
from capacity_pipelines.common.formatting import spreadsheet_csv
from capacity_pipelines.reporting.model import WeeklyReport
from capacity_pipelines.reporting.render import render_html, render_markdown

REPORT_STEM = "capacity_report"
LATEST = "latest"
LATEST_CSV = f"{REPORT_STEM}_csv"
REPORT_OWNER = "weekly_report"  # owner name in latest/'s ownership manifest


@dataclass(frozen=True)
class PublishedReport:
    """Where a report was written."""

    week_dir: Path
    html: Path
    markdown: Path
    json: Path
    csv: list[Path]
    latest_html: Path | None  # None when a newer week already holds latest/


def report_json(report: WeeklyReport) -> str:
    """Summary and every section's bullets and raw table rows, for tools and diffing."""
    document = {
        "week": report.week.label,
        "week_start": report.week.start.isoformat(),
        "week_end": report.week.end.isoformat(),
        "generated_at": report.generated_at.isoformat(),
        "source": report.source,
        "summary": report.summary,
        "sections": [
            {
                "key": s.key,
                "title": s.title,
                "unavailable": s.unavailable,
                "bullets": s.bullets,
                "tables": {t.name: t.raw.to_dicts() for t in s.tables},
            }
            for s in report.sections
        ],
    }
    return json.dumps(document, indent=2, default=str) + "\n"


def _report_files(report: WeeklyReport) -> dict[str, Content]:
    """Every file of one report, CSVs under `csv/`, the JSON (which names the week) last."""
    files: dict[str, Content] = {
        f"csv/{table.name}.csv": spreadsheet_csv(table.raw)
        for section in report.sections
        for table in section.tables
    }
    files[f"{REPORT_STEM}.html"] = render_html(report)
    files[f"{REPORT_STEM}.md"] = render_markdown(report)
    files[f"{REPORT_STEM}.json"] = report_json(report)
    return files


def _latest_week(latest: Path) -> str | None:
    try:
        return json.loads((latest / f"{REPORT_STEM}.json").read_text())["week"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def publish_report(report: WeeklyReport, reports_dir: Path) -> PublishedReport:
    """Write the week's folder and, for the newest week, the report files in `latest/`."""
    reports_dir = Path(reports_dir)
    week_dir = reports_dir / report.week.label
    files = _report_files(report)
    publish_folder(week_dir, files)
    latest = reports_dir / LATEST
    current = _latest_week(latest)
    latest_html = None
    # ISO labels ("2026-W43") sort in time order as strings.
    if current is None or current <= report.week.label:
        in_latest = {
            f"{LATEST_CSV}/{name.removeprefix('csv/')}" if name.startswith("csv/") else name: data
            for name, data in files.items()
        }
        publish_files(latest, in_latest, owner=REPORT_OWNER, whole_folders=[LATEST_CSV])
        latest_html = latest / f"{REPORT_STEM}.html"
    return PublishedReport(
        week_dir=week_dir,
        html=week_dir / f"{REPORT_STEM}.html",
        markdown=week_dir / f"{REPORT_STEM}.md",
        json=week_dir / f"{REPORT_STEM}.json",
        csv=sorted((week_dir / "csv").glob("*.csv")),
        latest_html=latest_html,
    )

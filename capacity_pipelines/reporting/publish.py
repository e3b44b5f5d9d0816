"""Publish a rendered report to `reports/<ISO week>/` and the stable `reports/latest/`.

A week's folder is built beside it and swapped in whole, so a re-run of a week replaces that
week's files (none left over from the previous run) and never touches another week; a crash
leaves the previous folder. `latest/` is shared with the daily reports, so only this report's
files there are replaced (each all or nothing), and only by the newest week: re-running an old
week does not move `latest/` back in time.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from capacity_pipelines.common.files import replaced_on_success, swap_in_folder
from capacity_pipelines.reporting.model import WeeklyReport
from capacity_pipelines.reporting.render import render_html, render_markdown

REPORT_STEM = "capacity_report"
LATEST = "latest"
LATEST_CSV = f"{REPORT_STEM}_csv"


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


def _write_week(report: WeeklyReport, folder: Path) -> None:
    (folder / "csv").mkdir(parents=True)
    (folder / f"{REPORT_STEM}.html").write_text(render_html(report), encoding="utf-8")
    (folder / f"{REPORT_STEM}.md").write_text(render_markdown(report), encoding="utf-8")
    (folder / f"{REPORT_STEM}.json").write_text(report_json(report), encoding="utf-8")
    for section in report.sections:
        for table in section.tables:
            table.raw.write_csv(folder / "csv" / f"{table.name}.csv")


def _latest_week(latest: Path) -> str | None:
    try:
        return json.loads((latest / f"{REPORT_STEM}.json").read_text())["week"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def publish_report(report: WeeklyReport, reports_dir: Path) -> PublishedReport:
    """Write the week's folder and, for the newest week, the report files in `latest/`."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    week_dir = reports_dir / report.week.label
    staged = reports_dir / f".{report.week.label}.tmp-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    try:
        _write_week(report, staged)
        swap_in_folder(staged, week_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    latest = reports_dir / LATEST
    current = _latest_week(latest)
    latest_html = None
    # ISO labels ("2026-W43") sort in time order as strings.
    if current is None or current <= report.week.label:
        latest.mkdir(parents=True, exist_ok=True)
        staged_csv = latest / f".{LATEST_CSV}.tmp-{os.getpid()}"
        shutil.rmtree(staged_csv, ignore_errors=True)
        shutil.copytree(week_dir / "csv", staged_csv)
        swap_in_folder(staged_csv, latest / LATEST_CSV)
        # The JSON goes last: it records which week latest/ holds.
        for suffix in ("html", "md", "json"):
            with replaced_on_success(latest / f"{REPORT_STEM}.{suffix}") as tmp:
                shutil.copyfile(week_dir / f"{REPORT_STEM}.{suffix}", tmp)
        latest_html = latest / f"{REPORT_STEM}.html"
    return PublishedReport(
        week_dir=week_dir,
        html=week_dir / f"{REPORT_STEM}.html",
        markdown=week_dir / f"{REPORT_STEM}.md",
        json=week_dir / f"{REPORT_STEM}.json",
        csv=sorted((week_dir / "csv").glob("*.csv")),
        latest_html=latest_html,
    )

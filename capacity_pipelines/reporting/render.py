"""Render a WeeklyReport as one self-contained HTML file and as Markdown.

The HTML needs nothing but itself: CSS inlined from `assets/report/report.css`, charts as
base64 PNG or inline SVG, no script and no external URL, so it opens offline and from a mail
attachment. Every value that came from the warehouse passes through `html.escape` in the HTML
and `common.formatting.safe_text` in the Markdown (label values are user data: a `<script>` or
an escape sequence in a pod label must show as text).
"""

from __future__ import annotations

import base64
from html import escape
from string import Template

from capacity_pipelines.common.formatting import markdown_table, safe_text
from capacity_pipelines.common.paths import ASSETS_DIR
from capacity_pipelines.reporting.model import ReportTable, Section, WeeklyReport

TEMPLATE_DIR = ASSETS_DIR / "report"
MAX_TABLE_ROWS = 50  # the HTML lists at most this many rows per table; the CSV has them all


def _html_table(table: ReportTable) -> str:
    frame = table.display.head(MAX_TABLE_ROWS)
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in frame.iter_rows()
    )
    more = (
        f'<p class="note">First {MAX_TABLE_ROWS} of {table.display.height} rows; all of them '
        f"are in csv/{escape(table.name)}.csv.</p>"
        if table.display.height > MAX_TABLE_ROWS
        else ""
    )
    empty = '<p class="note">(no rows)</p>' if frame.height == 0 else ""
    return (
        f"<h3>{escape(table.title)}</h3>{empty}"
        + (
            f'<div class="table-wrap"><table data-table="{escape(table.name)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
            if frame.height
            else ""
        )
        + more
    )


def _html_section(section: Section) -> str:
    parts = [f'<section id="{escape(section.key)}"><h2>{escape(section.title)}</h2>']
    if section.unavailable:
        why = escape(section.unavailable)
        parts.append(f'<div class="unavailable">not available yet: {why}</div>')
        parts.append("</section>")
        return "".join(parts)
    if section.bullets:
        items = "".join(f"<li>{escape(b)}</li>" for b in section.bullets)
        parts.append(f'<ul class="facts">{items}</ul>')
    if section.charts:
        parts.append('<div class="charts">')
    for chart in section.charts:
        if chart.png is not None:
            data = base64.b64encode(chart.png).decode()
            image = f'<img src="data:image/png;base64,{data}" alt="{escape(chart.title)}">'
        else:
            image = chart.svg or ""  # built by reporting.svg with every label escaped
        parts.append(f"<figure>{image}<figcaption>{escape(chart.title)}</figcaption></figure>")
    if section.charts:
        parts.append("</div>")
    parts.extend(_html_table(t) for t in section.tables)
    parts.append("</section>")
    return "".join(parts)


def render_html(report: WeeklyReport) -> str:
    """The report as one HTML document (no script, no external resource)."""
    title = f"Weekly capacity report {report.week.describe()}"
    nav = "\n".join(
        f'<li><a href="#{escape(s.key)}">{escape(s.title)}</a></li>' for s in report.sections
    )
    template = Template((TEMPLATE_DIR / "weekly_report.html").read_text())
    return template.substitute(
        title=escape(title),
        css=(TEMPLATE_DIR / "report.css").read_text(),
        generated=escape(f"{report.generated_at:%Y-%m-%d %H:%M} UTC"),
        source=escape(report.source),
        nav=nav,
        body="\n".join(_html_section(s) for s in report.sections),
        week=escape(report.week.label),
    )


def _md_text(value: object) -> str:
    """Text for Markdown (labels are user data: no markup, no control characters)."""
    return safe_text(value, markdown=True)


def render_markdown(report: WeeklyReport) -> str:
    """The report as Markdown (tables formatted for people; charts only in the HTML)."""
    lines = [
        f"# Weekly capacity report {report.week.describe()}",
        "",
        f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC from `{_md_text(report.source)}`.",
    ]
    for section in report.sections:
        lines += ["", f"## {section.title}", ""]
        if section.unavailable:
            lines.append(f"> not available yet: {_md_text(section.unavailable)}")
            continue
        lines += [f"- {_md_text(b)}" for b in section.bullets]
        for table in section.tables:
            lines += ["", f"### {table.title}", "", markdown_table(table.display, MAX_TABLE_ROWS)]
    return "\n".join(lines) + "\n"


def summary_markdown(report: WeeklyReport) -> str:
    """The executive summary alone (Dagster metadata, webhook text)."""
    summary = report.sections[0]
    return f"**{report.week.label}**\n\n" + "\n".join(f"- {_md_text(b)}" for b in summary.bullets)

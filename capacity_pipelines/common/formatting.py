"""Formatting for people: Markdown tables and human units, shared by metadata and reports."""

from __future__ import annotations

import polars as pl


def markdown_table(frame: pl.DataFrame, rows: int = 10) -> str:
    """A Markdown table of the first `rows` rows (pipes in values escaped)."""
    if frame.height == 0:
        return "(no rows)"
    head = frame.head(rows)

    def cell(value: object) -> str:
        if value is None:
            return ""
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.iter_rows()]
    return "\n".join(lines)


def usd(amount: float | None) -> str:
    """Dollars for people: `$950`, `$12.3k`, `$1.25M`, `-$4.0k` (a cost, not a saving)."""
    if amount is None or amount != amount:
        return "n/a"
    sign, value = ("-" if amount < 0 else ""), abs(amount)
    for limit, suffix, digits in ((1e9, "B", 2), (1e6, "M", 2), (1e3, "k", 1)):
        if value >= limit:
            return f"{sign}${value / limit:.{digits}f}{suffix}"
    return f"{sign}${value:,.0f}" if value >= 10 else f"{sign}${value:.2f}"


def usd_per_month(amount: float | None) -> str:
    """A monthly amount for people: `$12.3k/mo`."""
    text = usd(amount)
    return text if text == "n/a" else f"{text}/mo"


def cores(value: float | None) -> str:
    """CPU for people: `1.5 cores`, `0.25 cores`, `1 core`."""
    if value is None or value != value:
        return "n/a"
    text = f"{value:.2f}" if value < 10 else f"{value:.1f}"
    text = text.rstrip("0").rstrip(".")
    return f"{text} core" if text == "1" else f"{text} cores"


def iec_bytes(value: float | None) -> str:
    """Memory for people in Kubernetes units: `512Mi`, `1.5Gi`, `800Ki`."""
    if value is None or value != value:
        return "n/a"
    for unit, size in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + unit
    return f"{value:.0f}"


def printable(text: object) -> str:
    """Text from metric labels made safe for a terminal: control characters (escape sequences,
    newlines, carriage returns) become visible escapes such as `\\x1b` and `\\n`."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text)
    )

"""Formatting for people: safe label text, Markdown tables, spreadsheet CSV and human units,
shared by metadata, reports and the CLI.

Label values (namespaces, pods, containers, models, agents) come from whoever can label a pod:
`safe_text` is the one gate they pass before a terminal or Markdown shows them, and
`spreadsheet_csv` the one before a spreadsheet opens them.
"""

from __future__ import annotations

import polars as pl

_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Markdown: a backslash first (so the escapes below stay escapes), pipes (table cells), brackets
# and backticks (links, images, code spans), angle brackets (HTML, autolinks) as entities.
_MARKDOWN_ESCAPES = str.maketrans(
    {"\\": "\\\\", "|": "\\|", "`": "\\`", "[": "\\[", "]": "\\]", "<": "&lt;", ">": "&gt;"}
)
# OWASP "CSV injection": a cell starting with one of these is a formula to a spreadsheet.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_START = r"^[=+\-@\t\r]"
# "-12.5" is a number, not a formula: text that is a plain (ASCII) number stays as it is.
_PLAIN_NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"


def _visible(char: str) -> str:
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code <= 0xFF
        else f"\\u{code:04x}"
        if code <= 0xFFFF
        else f"\\U{code:08x}"
    )


def safe_text(value: object, *, markdown: bool = False) -> str:
    """Label text that cannot drive a terminal or break Markdown.

    Every character Python does not consider printable (control characters such as ESC, which
    starts terminal escape sequences, C1 controls, bidi overrides, line and paragraph separators)
    is shown as a visible escape: `\\x1b`, `\\u202e`, a newline as `\\n`; nothing can start a
    new line. With `markdown=True` the text is also inert in Markdown, table cells included:
    backslashes, pipes, backticks and brackets escaped, angle brackets as entities.
    """
    text = "" if value is None else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _visible(c) for c in text)
    return text.translate(_MARKDOWN_ESCAPES) if markdown else text


def markdown_table(frame: pl.DataFrame, rows: int | None = 10) -> str:
    """A Markdown table of the first `rows` rows (all with None); every cell through `safe_text`."""
    if frame.height == 0:
        return "(no rows)"
    head = frame if rows is None else frame.head(rows)

    def cell(value: object) -> str:
        if value is None:
            return ""
        return safe_text(f"{value:.4g}" if isinstance(value, float) else value, markdown=True)

    lines = ["| " + " | ".join(cell(c) for c in head.columns) + " |", "|" + "---|" * head.width]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.iter_rows()]
    return "\n".join(lines)


def spreadsheet_csv(frame: pl.DataFrame) -> bytes:
    """`frame` as CSV for spreadsheets: string cells (and headers) that a spreadsheet would run as
    a formula (`=`, `+`, `-`, `@`, tab, carriage return first) get a leading `'`.

    Numeric columns stay numbers, and so does text that is a plain number ("-12.5"); Parquet and
    JSON exports keep the raw values.
    """
    text_columns = [c for c, t in frame.schema.items() if t in (pl.String, pl.Categorical, pl.Enum)]
    safe = frame.with_columns(
        pl.when(
            pl.col(c).cast(pl.String).str.contains(_FORMULA_START)
            & ~pl.col(c).cast(pl.String).str.contains(_PLAIN_NUMBER)
        )
        .then(pl.lit("'") + pl.col(c).cast(pl.String))
        .otherwise(pl.col(c).cast(pl.String))
        .alias(c)
        for c in text_columns
    )
    safe = safe.rename({c: f"'{c}" for c in safe.columns if c.startswith(FORMULA_PREFIXES)})
    return safe.write_csv().encode("utf-8")


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



def plain_number(value: float | None) -> str:
    """A number as people read it in a detail view: `21,090`, `4.25`, `0.431`, never `2.109e+04`."""
    if value is None or value != value:
        return "n/a"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    text = f"{value:,.2f}" if size >= 1 else f"{value:.3f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text in ("-0", "") else text

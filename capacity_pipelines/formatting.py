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

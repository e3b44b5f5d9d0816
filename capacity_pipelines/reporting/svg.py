"""Small inline SVG charts whose labels come from metric labels, so every label is escaped.

A bar chart needs no matplotlib and stays sharp at any zoom; the report embeds it as markup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

BAR_HEIGHT = 22
LABEL_WIDTH = 200
BAR_WIDTH = 380
VALUE_WIDTH = 90


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    fmt: Callable[[float], str],
    title: str,
) -> str:
    """Horizontal bars, largest first as given; labels and values escaped for HTML/SVG."""
    top = max((v for v in values if v > 0), default=0.0)
    height = BAR_HEIGHT * len(labels) + 30
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 10 + i * BAR_HEIGHT
        length = BAR_WIDTH * value / top if top and value > 0 else 0.0
        short = label if len(label) <= 28 else label[:27] + "…"
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y + 15}" text-anchor="end" font-size="12">'
            f"{escape(short)}</text>"
            f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{BAR_HEIGHT - 6}" '
            f'fill="#1f77b4"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
            f'<text x="{LABEL_WIDTH + length + 6:.1f}" y="{y + 15}" font-size="12">'
            f"{escape(fmt(value))}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)

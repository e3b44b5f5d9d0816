"""Charts as PNG bytes (matplotlib, headless): forecasts with their intervals.

Used for Dagster metadata (base64 PNG in Markdown) and, later, the weekly report.
"""

from __future__ import annotations

import base64
import io

import polars as pl


def forecast_chart(
    history: pl.DataFrame,
    forecast: pl.DataFrame,
    title: str,
    unit: str = "",
    scale: float = 1.0,
) -> bytes:
    """History (last two weeks) and the forecast's point, p50..p95 band, as a PNG.

    Values are divided by `scale` and the y axis is labelled `unit` (bytes / 2**30 with "GiB"
    reads at a glance; matplotlib's own `1e9` offset does not), with no offset or scientific
    notation on the axis.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    from matplotlib import pyplot as plt

    recent = history.sort("ts").tail(14 * 24)
    fig, ax = plt.subplots(figsize=(8, 2.6), dpi=90)

    def scaled(frame: pl.DataFrame, column: str) -> list[float]:
        return (frame[column] / scale).to_list()

    try:
        ax.plot(
            recent["ts"].to_list(), scaled(recent, "value"), color="#444", lw=1, label="history"
        )
        ts = forecast["ts"].to_list()
        ax.fill_between(
            ts,
            scaled(forecast, "p50"),
            scaled(forecast, "p95"),
            color="#1f77b4",
            alpha=0.25,
            label="p50–p95",
        )
        ax.plot(ts, scaled(forecast, "point"), color="#1f77b4", lw=1.2, label="forecast")
        ax.set_title(title, fontsize=9)
        if unit:
            ax.set_ylabel(unit, fontsize=8)
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """A Markdown image with the PNG inlined (Dagster renders it in the asset's metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"

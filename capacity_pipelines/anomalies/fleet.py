"""Anomalies of the fleet's hourly series, one as-of day at a time (table `anomalies`).

The series are the forecasting engine's (`forecasting.fleet.load_series`: service request
rates, workload CPU and memory, LLM tokens per agent, hourly, the 8 weeks up to the as-of
time), scored by the streaming detector (`detector.py`) from their own past only. Every hour of
the as-of day is stored with its score, so "nothing unusual" is an answer an analyst can see,
not a missing row; the hours flagged carry the evidence a reviewer needs to judge them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl

from capacity_pipelines.anomalies.detector import THRESHOLD, kind_of, score_series
from capacity_pipelines.warehouse import DerivedTable

STRONG_SCORE = 0.6  # a record beaten by half: the asset check warns about these
VIEW_NAMES = {
    "level": "deviation from the last 12 days' median",
    "shift": "shift of the last 12 hours' mean",
    "seasonal": "change from the same hour on the two days before",
}

ANOMALY_TABLE = DerivedTable(
    name="anomalies",
    description="Per as-of day, every hour of that day of each forecast series (service "
    "request rates, workload CPU and memory, LLM tokens per agent) with its anomaly score, "
    "computed from the hours before it only: score 0.5 is as unusual as the most unusual hour "
    "of the series' last 30 days, an anomaly scores at least 0.509 (one threshold for every "
    "series, chosen on NAB; see docs/anomalies.md).",
    columns={
        "as_of": "UTC end of the day scored (the history ends here).",
        "series_id": "family:entity, as in load_forecast.",
        "family": "Series family.",
        "ts": "UTC start of the hour.",
        "value": "The hour's value (the unit of the family: requests/s, cores, bytes, tokens/s).",
        "score": "Anomaly score 0..1 (ratio / (1 + ratio), ratio = this hour's deviation over "
        "the series' largest of the last 30 days, or over 5 robust spreads when larger).",
        "is_anomaly": "score >= 0.509.",
        "kind": "spike, dip, level_shift, trend_change, or none when not an anomaly.",
        "evidence": "For an anomaly: the value, which deviation gave the score and by how much "
        "it beat the record (empty otherwise).",
    },
)


def _evidence(value: float, view: str, score: float) -> str:
    ratio = score / (1.0 - score) if score < 1.0 else float("inf")
    return (
        f"{value:.4g}: {VIEW_NAMES.get(view, view)} {ratio:.2f}x the series' largest of the "
        "last 30 days"
    )


def score_fleet(history: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """Rows of `ANOMALY_TABLE` for the hours in `(as_of - 1 day, as_of]` of every series of
    `history` (`series_id, ts, value`, naive UTC, only hours before `as_of`)."""
    naive = as_of.replace(tzinfo=None)
    day_start = naive - timedelta(days=1)
    parts = []
    for (series_id,), group in history.sort("series_id", "ts").group_by(
        "series_id", maintain_order=True
    ):
        group = group.filter(pl.col("ts") < naive)
        values = group["value"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        scores = score_series(group["ts"].to_numpy(), values)
        flagged = scores.score >= THRESHOLD
        kinds = kind_of(values, scores, flagged)
        day = group["ts"].to_numpy() >= np.datetime64(day_start, "us")
        evidence = [
            _evidence(v, view, s) if f else ""
            for v, view, s, f in zip(values, scores.view, scores.score, flagged, strict=True)
        ]
        parts.append(
            pl.DataFrame(
                {
                    "series_id": [series_id] * int(day.sum()),
                    "ts": group["ts"].filter(pl.Series(day)),
                    "value": values[day],
                    "score": scores.score[day],
                    "is_anomaly": flagged[day],
                    "kind": kinds[day].astype(str),
                    "evidence": np.asarray(evidence, dtype=object)[day].astype(str),
                },
                schema_overrides={"ts": pl.Datetime("us")},
            )
        )
    frame = pl.concat(parts) if parts else pl.DataFrame(schema=_SCHEMA)
    return frame.with_columns(
        pl.lit(naive).cast(pl.Datetime("us")).alias("as_of"),
        pl.col("series_id").str.split(":").list.first().alias("family"),
    ).select(list(ANOMALY_TABLE.columns))


_SCHEMA = {
    "series_id": pl.String,
    "ts": pl.Datetime("us"),
    "value": pl.Float64,
    "score": pl.Float64,
    "is_anomaly": pl.Boolean,
    "kind": pl.String,
    "evidence": pl.String,
}


def bad_scores(frame: pl.DataFrame) -> int:
    """Rows whose score is not a number in [0, 1] (the detector's contract)."""
    return frame.filter(~pl.col("score").is_between(0.0, 1.0) | pl.col("score").is_nan()).height

"""The outlook's track record (bottlenecks/track_record.py): stored outlooks scored against the
labels that followed, next to 7-day persistence, on a made-up labelled history whose answers are
known by hand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import duckdb
import polars as pl
import pytest

from capacity_pipelines import warehouse as wh
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.bottlenecks.track_record import (
    MIN_SCORED_ORIGINS,
    comparison,
    fleet_scores,
    read_said,
    scored_origins,
    track_record,
    verdict,
)

START = datetime(2026, 9, 1)
DAYS = 28
AS_OF = START + timedelta(days=DAYS)  # the labelled history is [START, AS_OF)


def _labelled(hours_by_service: dict[str, dict[int, str]]) -> pl.DataFrame:
    """A complete hourly grid per service; `{hour offset from START: class}` are labelled."""
    rows = []
    for service, labels in hours_by_service.items():
        for h in range(DAYS * 24):
            cls = labels.get(h, "none")
            rows.append(
                {
                    "namespace": "shop",
                    "service": service,
                    "window_start": START + timedelta(hours=h),
                    "bottleneck_class": cls,
                    "evidence": "" if cls == "none" else f"{cls} saturated",
                }
            )
    return pl.DataFrame(rows)


def _daily(hour: int, cls: str) -> dict[int, str]:
    return {d * 24 + hour: cls for d in range(DAYS)}


def _said(service: str, horizon: str, day: int, cls: str, probabilities: dict) -> dict:
    return {
        "as_of": START + timedelta(days=day),
        "namespace": "shop",
        "service": service,
        "horizon": horizon,
        "bottleneck_class": cls,
        "probabilities": json.dumps(probabilities),
    }


SURE_CPU = {"cpu": 0.8, "none": 0.2}  # Brier when cpu follows: 0.2² + 0.2² = 0.08
SURE_NONE = {"cpu": 0.1, "none": 0.9}  # Brier when cpu follows: 0.9² + 0.9² = 1.62


@pytest.fixture(scope="module")
def labelled() -> pl.DataFrame:
    # cart: CPU saturated 14:00-15:00 every day. quiet: never. tied: memory 2 h on day 3, cpu
    # 2 h on day 5, nothing after.
    tied = {3 * 24 + 10: "memory", 3 * 24 + 11: "memory", 5 * 24 + 10: "cpu", 5 * 24 + 11: "cpu"}
    return _labelled({"cart": _daily(14, "cpu"), "quiet": {}, "tied": tied})


def _rows(frame: pl.DataFrame, **where) -> pl.DataFrame:
    for column, value in where.items():
        frame = frame.filter(pl.col(column) == value)
    return frame


def test_right_and_wrong_outlooks_are_scored_against_what_followed(labelled):
    # cart's 24 h outlooks: cpu (right) on even days, none (wrong) on odd ones.
    said = pl.DataFrame(
        [
            _said("cart", "24h", d, *(("cpu", SURE_CPU) if d % 2 == 0 else ("none", SURE_NONE)))
            for d in range(DAYS)
        ]
    )
    record = track_record(said, labelled, AS_OF)
    outlook = _rows(record, service="cart", horizon="24h", method="outlook").row(0, named=True)
    # Scored: the days with a week of labels before them (7..27), all with cpu following.
    assert outlook["origins"] == 21
    assert outlook["first_origin"] == START + timedelta(days=7)
    assert outlook["last_origin"] == START + timedelta(days=27)
    right = len([d for d in range(7, 28) if d % 2 == 0])
    assert outlook["correct"] == right == outlook["caught"]
    assert outlook["bottleneck_origins"] == 21 and outlook["false_alarms"] == 0
    assert outlook["brier"] == pytest.approx((right * 0.08 + (21 - right) * 1.62) / 21)
    # Persistence names cpu every day (7 labelled hours in every week): right, at 0.5.
    persistence = _rows(record, service="cart", method="persistence_7d").row(0, named=True)
    assert persistence["correct"] == persistence["caught"] == 21
    assert persistence["brier"] == pytest.approx(0.5)
    assert set(record["as_of"]) == {AS_OF}


def test_persistence_names_last_weeks_commonest_class_ties_to_the_earlier(labelled):
    said = pl.DataFrame([_said("tied", "24h", d, "none", {"none": 1.0}) for d in (8, 12, 13)])
    scored = _rows(scored_origins(said, labelled, AS_OF), method="persistence_7d").sort("origin")
    # Day 8's week holds memory 2 h and cpu 2 h: the tie goes to cpu (first in
    # BOTTLENECK_CLASSES, though the memory rule is tried first); day 12's holds cpu only;
    # day 13's nothing.
    assert scored["said"].to_list() == ["cpu", "cpu", "none"]
    assert scored["target"].to_list() == ["none", "none", "none"]
    # States 0.5 on its class and 0.5 on none; none at 1 when it names nothing.
    assert scored.row(0, named=True)["p_cpu"] == 0.5 and scored.row(0, named=True)["p_none"] == 0.5
    assert scored.row(2, named=True)["p_none"] == 1.0
    record = _rows(track_record(said, labelled, AS_OF), method="persistence_7d").row(0, named=True)
    assert record["correct"] == 1 and record["false_alarms"] == 2
    assert record["brier"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)


def test_only_origins_with_their_horizon_over_and_a_week_before_are_scored(labelled):
    said = pl.DataFrame(
        [
            _said("quiet", horizon, day, "none", {"none": 1.0})
            for horizon in ("24h", "7d")
            for day in (6, 7, 20, 21, 22, 27, 28)
        ]
    )
    scored = _rows(scored_origins(said, labelled, AS_OF), method="outlook")
    days = {
        horizon: sorted((o - START).days for o in _rows(scored, horizon=horizon)["origin"])
        for horizon in ("24h", "7d")
    }
    # Day 6 lacks a whole week before it; 24 h ends by AS_OF from day 27, 7 d from day 21;
    # day 28 is AS_OF itself (today's outlook).
    assert days == {"24h": [7, 20, 21, 22, 27], "7d": [7, 20, 21]}


def test_a_seven_day_target_is_the_first_bottleneck_in_the_week(labelled):
    said = pl.DataFrame([_said("cart", "7d", 10, "memory", {"memory": 0.6, "none": 0.4})])
    scored = _rows(scored_origins(said, labelled, AS_OF), method="outlook")
    assert scored["target"].to_list() == ["cpu"]
    # Named memory while cpu followed: wrong, not caught, not a false alarm; Brier
    # 0.6² + 0.4² + 1² (cpu).
    row = _rows(track_record(said, labelled, AS_OF), method="outlook").row(0, named=True)
    assert (row["correct"], row["caught"], row["false_alarms"]) == (0, 0, 0)
    assert row["brier"] == pytest.approx(0.36 + 0.16 + 1.0)


def test_nothing_to_score_gives_no_rows(labelled):
    empty = pl.DataFrame([_said("cart", "24h", 27, "cpu", SURE_CPU)]).clear()
    assert track_record(empty, labelled, AS_OF).height == 0
    one = pl.DataFrame([_said("cart", "24h", 27, "cpu", SURE_CPU)])
    assert track_record(one, None, AS_OF).height == 0
    unknown = pl.DataFrame([_said("gone", "24h", 20, "cpu", SURE_CPU)])
    assert track_record(unknown, labelled, AS_OF).height == 0


@pytest.mark.parametrize(
    ("origins", "scores", "expected"),
    [
        (MIN_SCORED_ORIGINS - 1, (20, 0.10, 10, 0.50), "too little history"),
        (MIN_SCORED_ORIGINS, (15, 0.10, 10, 0.50), "beat"),
        (20, (20, 0.002, 20, 0.0), "matched"),  # a quiet service both called quiet
        (20, (9, 0.10, 15, 0.50), "did not beat"),  # better Brier, right less often
        (20, (15, 0.60, 15, 0.50), "did not beat"),  # as often right, worse probabilities
        (20, (15, 0.50, 15, 0.50), "matched"),  # equal on both
        (20, (16, 0.498, 15, 0.50), "did not beat"),  # Brier better by less than the tie
    ],
)
def test_verdict(origins, scores, expected):
    assert verdict(origins, *scores) == expected


def test_comparison_puts_the_services_it_did_not_beat_first(labelled):
    said = pl.DataFrame(
        [_said("cart", "24h", d, "none", SURE_NONE) for d in range(DAYS)]
        + [_said("quiet", "24h", d, "none", {"none": 1.0}) for d in range(DAYS)]
    )
    record = track_record(said, labelled, AS_OF)
    services = pl.DataFrame(
        {
            "namespace": ["shop"] * 4,
            "service": ["quiet", "cart", "cart", "new"],
            "horizon": ["24h", "24h", "7d", "24h"],
        }
    )
    compared = comparison(record, services)
    verdicts = [(r["service"], r["horizon"], r["verdict"]) for r in compared.iter_rows(named=True)]
    assert verdicts == [
        ("cart", "24h", "did not beat"),
        ("quiet", "24h", "matched"),
        ("cart", "7d", "too little history"),
        ("new", "24h", "too little history"),
    ]
    cart = compared.row(0, named=True)
    assert (cart["correct"], cart["persistence_correct"]) == (0, 21)
    assert cart["brier"] == pytest.approx(1.62) and cart["persistence_brier"] == pytest.approx(0.5)
    assert compared.filter(pl.col("service") == "new")["origins"].to_list() == [0]
    pooled = fleet_scores(record)
    assert pooled["outlook"]["origins"] == 42
    assert pooled["outlook"]["accuracy"] == pytest.approx(0.5)
    assert pooled["persistence_7d"]["accuracy"] == pytest.approx(1.0)
    assert pooled["persistence_7d"]["brier"] == pytest.approx(0.25)
    assert (pooled["outlook"]["bottleneck_origins"], pooled["outlook"]["caught"]) == (21, 0)
    assert pooled["persistence_7d"]["caught"] == 21


def test_stored_outlooks_are_read_from_the_warehouse(tmp_path):
    con = duckdb.connect(str(tmp_path / "wh.duckdb"))
    assert read_said(con, AS_OF).height == 0  # a first run: no outlook table yet
    for day in (-1, 0, 27, 28):  # before the four weeks, first, last and today
        row = _said("cart", "24h", day, "cpu", SURE_CPU) | {
            "as_of": AS_OF - timedelta(days=DAYS) + timedelta(days=day),
            "probability": 0.8,
            "expected_at": None,
            "evidence": "e",
            "metrics": "m",
            "method": "rules",
            "note": "",
        }
        frame = pl.DataFrame([row]).with_columns(pl.col("expected_at").cast(pl.Datetime("us")))
        wh.replace_as_of(con, BOTTLENECK_TABLE, row["as_of"], frame)
    read = read_said(con, AS_OF)
    assert sorted((AS_OF - o).days for o in read["as_of"]) == [1, 28]
    con.close()

"""The bottleneck outlook section: where the next bottleneck is likely, per service and horizon,
and how much to trust it: the outlook's track record against 7-day persistence.

Its own module, beside the runway, because `bottleneck_risks` feeds the summary's "services at
risk" and its week-over-week comparison as well as this section.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from capacity_pipelines.bottlenecks.tables import BOTTLENECK_BACKTEST_TABLE, BOTTLENECK_TABLE
from capacity_pipelines.bottlenecks.track_record import (
    MIN_SCORED_ORIGINS,
    PERSISTENCE_STATED,
    TRACK_RECORD_DAYS,
    comparison,
    fleet_scores,
)
from capacity_pipelines.reporting.model import ReportTable, Section
from capacity_pipelines.reporting.sections.reads import ReportWindow
from capacity_pipelines.reporting.sections.text import percent, text_table, utc_day

BOTTLENECK_AT_RISK_PROBABILITY = 0.5  # "likely": the classifier's more-likely-than-not line
BASELINE = "'last week repeats'"  # 7-day persistence, as a reader knows it
NAMED_AT_MOST = 10  # services named in one sentence; every one is in the table and the CSV


def bottleneck_risks(window: ReportWindow, as_of: datetime | None) -> dict[str, str]:
    """Services with a likely bottleneck (any horizon), with the class and probability."""
    outlook = window.rows_at(BOTTLENECK_TABLE.name, as_of)
    if outlook.height == 0:
        return {}
    likely = outlook.filter(
        (pl.col("bottleneck_class") != "none")
        & (pl.col("probability") >= BOTTLENECK_AT_RISK_PROBABILITY)
    ).sort("probability", descending=True)
    risks: dict[str, str] = {}
    for row in likely.iter_rows(named=True):
        name = f"{row['namespace']}/{row['service']}"
        risks.setdefault(
            name,
            f"{row['bottleneck_class']} bottleneck {percent(row['probability'])} within "
            f"{row['horizon']}",
        )
    return risks


def bottleneck_section(window: ReportWindow) -> Section:
    """Where the next bottleneck is likely, per service and horizon."""
    section = Section("bottlenecks", "Bottleneck outlook")
    as_of = window.week_as_of(BOTTLENECK_TABLE.name)
    outlook = window.rows_at(BOTTLENECK_TABLE.name, as_of)
    likely = outlook.filter(pl.col("bottleneck_class") != "none").sort(
        "probability", descending=True
    )
    services = outlook.select("namespace", "service").unique().height
    section.facts = {"as_of": as_of, "at_risk": bottleneck_risks(window, as_of)}
    section.bullets.append(
        f"Outlook from {utc_day(as_of)} for {services} services: {likely.height} service-horizon "
        f"pairs with a bottleneck class other than none; "
        f"{len(section.facts['at_risk'])} services at or above "
        f"{BOTTLENECK_AT_RISK_PROBABILITY:.0%} probability."
    )
    display = text_table(
        {
            "service": [f"{r['namespace']}/{r['service']}" for r in likely.iter_rows(named=True)],
            "horizon": likely["horizon"].cast(pl.Utf8).to_list(),
            "bottleneck": likely["bottleneck_class"].cast(pl.Utf8).to_list(),
            "probability": [percent(v) for v in likely["probability"]],
            "expected at": [utc_day(v) if v else "" for v in likely["expected_at"].to_list()],
            "evidence": [v or "" for v in likely["evidence"].cast(pl.Utf8).to_list()],
            "method": likely["method"].cast(pl.Utf8).to_list(),
        }
    )
    section.tables.append(ReportTable("bottleneck_outlook", "Likely bottlenecks", display, likely))
    _track_record(window, section, as_of, outlook)
    return section


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:NAMED_AT_MOST])
    more = len(names) - NAMED_AT_MOST
    return shown + (f" and {more} more (see the table)" if more > 0 else "")


def _track_record(
    window: ReportWindow, section: Section, as_of: datetime, outlook: pl.DataFrame
) -> None:
    """How the outlook did over the last four weeks next to 7-day persistence: a table per
    service and horizon, and a plain sentence for each service where it did not beat it."""
    why = window.table_status(BOTTLENECK_BACKTEST_TABLE.name)
    record = pl.DataFrame() if why else window.rows_at(BOTTLENECK_BACKTEST_TABLE.name, as_of)
    if record.height == 0:
        stored = window.as_of_days(
            BOTTLENECK_TABLE.name, as_of - timedelta(days=TRACK_RECORD_DAYS), as_of
        )
        days = f"{stored} as-of day{'' if stored == 1 else 's'}"
        section.bullets.append(
            "Track record: none yet"
            + (f" ({why})" if why else "")
            + f": the outlook is stored for {days} of the four weeks up to this one. A day is "
            "scored once its horizon has ended and the week before it is labelled; from "
            f"{MIN_SCORED_ORIGINS} scored days per service this section says whether the "
            f"outlook beat {BASELINE} (7-day persistence). Until then it is untested: treat "
            "its lines as a guess."
        )
        section.facts["track_record"] = {}
        return
    compared = comparison(record, outlook)
    name = pl.concat_str("namespace", pl.lit("/"), "service")
    compared = compared.with_columns(name.alias("name"))
    section.bullets.append(
        f"Track record: the outlooks stored for the last four weeks whose horizon had ended by "
        f"{utc_day(as_of)}, scored per service against the bottleneck the USE rules labelled "
        f"next, beside 7-day persistence ({BASELINE}: the class labelled in most hours of the "
        f"week before, stated at {percent(PERSISTENCE_STATED)}). The Brier score grades the "
        "stated probabilities (0 is perfect, lower is better); 'beat' means a lower Brier "
        f"score and right at least as often. A verdict needs {MIN_SCORED_ORIGINS} scored days; "
        "neighbouring days' 7-day horizons overlap, so those are fewer weeks of evidence than "
        "days."
    )
    section.bullets += _pooled_bullets(record, compared) + _verdict_bullets(compared)
    section.facts["track_record"] = {
        verdict: _with_horizons(compared.filter(pl.col("verdict") == verdict))
        for verdict in ("beat", "matched", "did not beat", "too little history")
    }
    section.tables.append(
        ReportTable(
            "bottleneck_track_record",
            f"Outlook vs 7-day persistence ({BASELINE}), last four weeks",
            _track_record_display(compared),
            compared.drop("name"),
        )
    )


def _pooled_bullets(record: pl.DataFrame, compared: pl.DataFrame) -> list[str]:
    """The fleet's scores over the service-horizons with a verdict, and the verdicts' count."""
    judged = compared.filter(pl.col("verdict") != "too little history")
    pooled = fleet_scores(record, judged)
    if judged.height == 0 or not pooled:
        return []
    counts = dict(judged.group_by("verdict").len().iter_rows())
    outlook, persistence = pooled["outlook"], pooled["persistence_7d"]
    return [
        f"Over the {judged.height} service-horizons with enough history "
        f"({outlook['origins']} service-days): the outlook was right on "
        f"{percent(outlook['accuracy'])} of them (Brier {outlook['brier']:.2f}), persistence on "
        f"{percent(persistence['accuracy'])} (Brier {persistence['brier']:.2f}). Of the "
        f"{outlook['bottleneck_origins']} service-days a bottleneck followed, the outlook named "
        f"it on {outlook['caught']}, persistence on {persistence['caught']}. The outlook beat "
        f"persistence on {counts.get('beat', 0)}, matched it on {counts.get('matched', 0)} and "
        f"did not beat it on {counts.get('did not beat', 0)}."
    ]


def _verdict_bullets(compared: pl.DataFrame) -> list[str]:
    """A plain sentence per service the outlook did not beat persistence on, then the ones it
    only matched and the ones with too little history to say."""
    bullets = _not_beating_sentences(compared.filter(pl.col("verdict") == "did not beat"))
    if len(bullets) > NAMED_AT_MOST:
        more = len(bullets) - NAMED_AT_MOST
        bullets = bullets[:NAMED_AT_MOST] + [
            f"The outlook did not beat {BASELINE} on {more} more services (see the table)."
        ]
    matched = compared.filter(pl.col("verdict") == "matched")
    if matched.height:
        bullets.append(
            f"No better and no worse than {BASELINE}: " + _names(_with_horizons(matched)) + "."
        )
    thin = compared.filter(pl.col("verdict") == "too little history")
    if thin.height:
        bullets.append(
            f"Too little history for a verdict (fewer than {MIN_SCORED_ORIGINS} scored days): "
            + _names(
                [f"{r['name']} {r['horizon']} ({r['origins']} days)" for r in thin.rows(named=True)]
            )
            + "."
        )
    return bullets


def _with_horizons(frame: pl.DataFrame) -> list[str]:
    """`ns/service (24h, 7d)` per service, in the frame's order."""
    horizons: dict[str, list[str]] = {}
    for row in frame.iter_rows(named=True):
        horizons.setdefault(row["name"], []).append(row["horizon"])
    return [f"{n} ({', '.join(h)})" for n, h in horizons.items()]


def _not_beating_sentences(frame: pl.DataFrame) -> list[str]:
    """One plain sentence per service where the outlook did not beat persistence: what each
    horizon scored, and what that means for its line (a class right less often than last
    week's is a guess; a class right as often with worse probabilities is a rough number)."""
    rows: dict[str, list[dict]] = {}
    for row in frame.sort("name", "horizon").iter_rows(named=True):
        rows.setdefault(row["name"], []).append(row)
    sentences = []
    for name, horizons in rows.items():
        parts, guess, rough = [], [], []
        for row in horizons:
            parts.append(
                f"{row['horizon']} right on {row['correct']} of {row['origins']} days vs "
                f"{row['persistence_correct']}, Brier {row['brier']:.2f} vs "
                f"{row['persistence_brier']:.2f}"
                + (" (no bottleneck followed any of them)" if not row["bottleneck_origins"] else "")
            )
            worse_class = row["correct"] < row["persistence_correct"]
            (guess if worse_class else rough).append(row["horizon"])
        consequences = []
        if guess:
            lines = "line" if len(guess) == 1 else "lines"
            consequences.append(f"treat its {' and '.join(guess)} {lines} as a guess")
        if rough:
            consequences.append(
                f"its {' and '.join(rough)} class was right as often, but read the probability "
                "it states as rough"
            )
        sentences.append(
            f"For {name} the outlook did not beat {BASELINE} over the last four weeks: "
            + "; ".join(parts)
            + " — "
            + "; ".join(consequences)
            + "."
        )
    return sentences


def _track_record_display(compared: pl.DataFrame) -> pl.DataFrame:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    def pair(a: int | None, b: int | None) -> str:
        return "" if a is None or b is None else f"{a} / {b}"

    rows = list(compared.iter_rows(named=True))
    return text_table(
        {
            "service": [r["name"] for r in rows],
            "horizon": [r["horizon"] for r in rows],
            "days scored": [str(r["origins"]) for r in rows],
            "right (outlook / persistence)": [
                pair(r["correct"], r["persistence_correct"]) for r in rows
            ],
            "Brier outlook": [number(r["brier"]) for r in rows],
            "Brier persistence": [number(r["persistence_brier"]) for r in rows],
            "bottleneck days": [
                "" if r["bottleneck_origins"] is None else str(r["bottleneck_origins"])
                for r in rows
            ],
            "caught (outlook / persistence)": [
                pair(r["caught"], r["persistence_caught"]) for r in rows
            ],
            "false alarms (outlook / persistence)": [
                pair(r["false_alarms"], r["persistence_false_alarms"]) for r in rows
            ],
            "verdict": [r["verdict"] for r in rows],
        }
    )

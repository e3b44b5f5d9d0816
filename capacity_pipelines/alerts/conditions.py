"""Which predictive alerts hold: runway ending soon, a bottleneck likely tomorrow.

SREs route everything through Alertmanager, so the two forecasts that matter within days (the
`capacity_runway` of a workload's CPU or memory, the 24 h `bottleneck_outlook` of a service)
become Alertmanager alerts here instead of waiting for the weekly report. The functions read the
latest as-of rows and return plain `Alert` values; posting them is `alerts.alertmanager`'s job.

Severity rule (docs/operations.md): a runway under `critical_runway_days` (2 days: less than
two daily runs left to react) or a bottleneck at `critical_probability` (0.8) or more is
`critical`; anything else that holds is `warning`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl

from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.common.formatting import iec_bytes
from capacity_pipelines.forecasting.fleet import FORECAST_TABLE, RUNWAY_TABLE
from capacity_pipelines.warehouse import quote_identifier, table_exists

SOURCE = "capacity_pipelines"  # the `source` label of every alert we post: how we find ours
RUNWAY_ALERT = "CapacityRunwayEnding"
BOTTLENECK_ALERT = "BottleneckLikely"
RUNWAY_RESOURCES = {"workload_cpu": "cpu", "workload_memory": "memory"}


@dataclass(frozen=True)
class AlertSettings:
    """Thresholds under which a forecast becomes an alert, and how long an alert lives.

    `period` is how often the pipeline runs (daily): an alert ends `2 × period` after it was
    posted unless the next run posts it again, so a condition that stops being computed (a
    broken pipeline, a removed workload) clears itself instead of firing forever.
    """

    runway_days: float = 7.0
    critical_runway_days: float = 2.0
    probability: float = 0.5
    critical_probability: float = 0.8
    horizon: str = "24h"
    period: timedelta = timedelta(days=1)

    @property
    def lifetime(self) -> timedelta:
        """How long after `now` a posted alert ends unless re-posted."""
        return 2 * self.period


@dataclass(frozen=True)
class Alert:
    """One Alertmanager alert (API v2 `postableAlert`): labels identify it, annotations explain."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    generator_url: str = ""

    @property
    def identity(self) -> tuple[tuple[str, str], ...]:
        """The condition the alert stands for: its labels without `severity`, so a warning that
        turns critical keeps the time it was first seen."""
        return tuple(sorted((k, v) for k, v in self.labels.items() if k != "severity"))

    def payload(self) -> dict:
        """The alert as the v2 API takes it (timestamps RFC 3339, UTC)."""
        body = {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "startsAt": _rfc3339(self.starts_at),
            "endsAt": _rfc3339(self.ends_at),
        }
        if self.generator_url:
            body["generatorURL"] = self.generator_url
        return body


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class LatestRows:
    """The latest as-of rows (at or before the asked day) of the tables alerts are built from."""

    runway: pl.DataFrame
    outlook: pl.DataFrame
    forecast: pl.DataFrame
    as_of: dict[str, datetime | None]


def _latest(con: duckdb.DuckDBPyConnection, table: str, as_of: datetime | None):
    if not table_exists(con, table):
        return pl.DataFrame(), None
    name = quote_identifier(table)
    bound = "" if as_of is None else "WHERE as_of <= ?"
    args = [] if as_of is None else [as_of.astimezone(UTC).replace(tzinfo=None)]
    latest = con.execute(f"SELECT max(as_of) FROM {name} {bound}", args).fetchone()[0]
    if latest is None:
        return pl.DataFrame(), None
    return con.execute(f"SELECT * FROM {name} WHERE as_of = ?", [latest]).pl(), latest


def read_latest(con: duckdb.DuckDBPyConnection, as_of: datetime | None = None) -> LatestRows:
    """Rows of `capacity_runway`, `bottleneck_outlook` and `load_forecast` at each table's latest
    as-of day (at or before `as_of` when given); a table not written yet reads as empty."""
    found = {t.name: _latest(con, t.name, as_of) for t in (RUNWAY_TABLE, BOTTLENECK_TABLE)}
    forecast = _latest(con, FORECAST_TABLE.name, as_of)
    return LatestRows(
        runway=found[RUNWAY_TABLE.name][0],
        outlook=found[BOTTLENECK_TABLE.name][0],
        forecast=forecast[0],
        as_of={
            RUNWAY_TABLE.name: found[RUNWAY_TABLE.name][1],
            BOTTLENECK_TABLE.name: found[BOTTLENECK_TABLE.name][1],
            FORECAST_TABLE.name: forecast[1],
        },
    )


def _amount(resource: str, value: float) -> str:
    return f"{value:.2f} cores" if resource == "cpu" else iec_bytes(value)


def _utc(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def runway_alerts(
    runway: pl.DataFrame, settings: AlertSettings, now: datetime, report_url: str
) -> list[Alert]:
    """Workload CPU / memory series whose p90 forecast reaches their limits within
    `settings.runway_days` (a NULL capacity has no limit, so no runway and no alert)."""
    if runway.height == 0:
        return []
    close = runway.filter(
        pl.col("family").is_in(list(RUNWAY_RESOURCES))
        & pl.col("capacity").is_not_null()
        & pl.col("runway_days").is_not_null()
        & (pl.col("runway_days") <= settings.runway_days)
    ).sort("series_id")
    alerts = []
    for row in close.iter_rows(named=True):
        namespace, _, workload = row["series_id"].split(":", 1)[1].partition("/")
        resource = RUNWAY_RESOURCES[row["family"]]
        days = max(0.0, float(row["runway_days"]))
        critical = days < settings.critical_runway_days
        when = (
            f"at {_utc(row['saturation_ts'])}, {days:.1f} days after {_utc(row['as_of'])}"
            if days > 0 and row["saturation_ts"] is not None
            else f"already as of {_utc(row['as_of'])}"
        )
        description = (
            f"p90 forecast peak {_amount(resource, row['peak_p90'])} (p50 "
            f"{_amount(resource, row['peak_p50'])}) reaches the {resource} capacity "
            f"{_amount(resource, row['capacity'])} (sum of limits) {when}."
        )
        if row.get("note"):
            description += f" {row['note']}"
        alerts.append(
            Alert(
                labels={
                    "alertname": RUNWAY_ALERT,
                    "service": workload,
                    "namespace": namespace,
                    "workload": workload,
                    "resource": resource,
                    "severity": "critical" if critical else "warning",
                    "source": SOURCE,
                },
                annotations={
                    "summary": f"{namespace}/{workload} {resource} runway {days:.1f} days",
                    "description": description,
                    "report": f"{report_url}#runway",
                },
                starts_at=now,
                ends_at=now + settings.lifetime,
            )
        )
    return alerts


def bottleneck_alerts(
    outlook: pl.DataFrame, settings: AlertSettings, now: datetime, report_url: str
) -> list[Alert]:
    """Per service, every bottleneck class (not `none`) whose probability over
    `settings.horizon` is at least `settings.probability` (from the `probabilities` JSON, so a
    class that ties with `none` still counts)."""
    if outlook.height == 0:
        return []
    rows = outlook.filter(pl.col("horizon") == settings.horizon).sort("namespace", "service")
    alerts = []
    for row in rows.iter_rows(named=True):
        probabilities = json.loads(row["probabilities"] or "{}")
        for name, probability in sorted(probabilities.items()):
            if name == "none" or probability is None or probability < settings.probability:
                continue
            critical = probability >= settings.critical_probability
            expected = (
                f" from {_utc(row['expected_at'])}" if row.get("expected_at") is not None else ""
            )
            evidence = row["evidence"] if name == row["bottleneck_class"] else ""
            description = (
                f"{name} bottleneck with probability {probability:.2f} over the next "
                f"{settings.horizon}{expected} (outlook as of {_utc(row['as_of'])}, method "
                f"{row['method']})."
            )
            if evidence:
                description += f" Evidence: {evidence}"
            if name == row["bottleneck_class"] and row.get("metrics"):
                description += f" Metrics: {row['metrics']}."
            alerts.append(
                Alert(
                    labels={
                        "alertname": BOTTLENECK_ALERT,
                        "service": row["service"],
                        "namespace": row["namespace"],
                        "bottleneck_class": name,
                        "horizon": settings.horizon,
                        "severity": "critical" if critical else "warning",
                        "source": SOURCE,
                    },
                    annotations={
                        "summary": f"{row['namespace']}/{row['service']}: {name} bottleneck "
                        f"likely within {settings.horizon} (p={probability:.2f})",
                        "description": description,
                        "report": f"{report_url}#bottlenecks",
                    },
                    starts_at=now,
                    ends_at=now + settings.lifetime,
                )
            )
    return alerts


def current_alerts(
    latest: LatestRows, settings: AlertSettings, now: datetime, report_url: str
) -> list[Alert]:
    """Every alert whose condition holds in the latest rows, runway first."""
    return runway_alerts(latest.runway, settings, now, report_url) + bottleneck_alerts(
        latest.outlook, settings, now, report_url
    )

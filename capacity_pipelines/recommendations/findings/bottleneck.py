"""Findings from bottlenecks: predicted ones (`bottleneck_outlook`) and ones already seen.

One module per source of findings. Seen bottlenecks are the service-hours of the last week that
the bottleneck domain's USE rules label; they become outlook-shaped rows first, so both kinds
go through the same playbook matching and wording.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from capacity_pipelines.bottlenecks.recurrence import EPISODE_GAP_HOURS, recurrence_rate
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.recommendations.findings.schema import finding_frame, one_line
from capacity_pipelines.recommendations.playbook import ActionKind, Playbook

# Where seen bottlenecks come from: the USE rules over the raw service windows, not a table.
OBSERVED_SOURCE = "service windows (USE rules)"

_BOTTLENECK_ACTIONS = {
    "fix_database_bottleneck": "Fix the {service} bottleneck: check slow queries / missing "
    "indexes, connection pool size, or add a read replica",
    "add_cache": "Add or enlarge a cache in front of {service}'s database calls",
    "scale_out": "Scale out {service} before the predicted {cls} saturation",
    "raise_provider_quota": "Raise {service}'s LLM provider quota (rate limits predicted)",
}
# Bottlenecks already seen: the same fixes, worded for what happened rather than what may.
_OBSERVED_ACTIONS = _BOTTLENECK_ACTIONS | {
    "scale_out": "Scale out {service} or raise its {cls} limit ({cls} saturation seen)",
    "raise_provider_quota": "Raise {service}'s LLM provider quota (rate limits hit)",
}
# The USE rules label cpu and memory only at a limit (throttled, or near the memory limit):
# the limit is what binds, so raising or removing it comes first and shrinking the request
# never (collect.reconcile_directions withdraws a request cut the same workload was given).
_AT_LIMIT_ACTIONS = {
    "cpu": "Raise or remove {service}'s CPU limit, or scale it out (throttled at its CPU limit)",
    "memory": "Raise {service}'s memory limit and request, or find what grows (memory at its "
    "limit)",
}
# A predicted cpu or memory bottleneck is one of those labels expected: the same fix, ahead.
_PREDICTED_AT_LIMIT_ACTIONS = {
    "cpu": "Raise or remove {service}'s CPU limit, or scale it out (throttling at its CPU "
    "limit predicted)",
    "memory": "Raise {service}'s memory limit and request, or find what grows (memory at its "
    "limit predicted)",
}
# Which resource a class of bottleneck puts under pressure: the fix adds to it.
_CLASS_RESOURCE = {"cpu": "cpu_direction", "memory": "memory_direction"}


def _bottleneck_kind(kind: ActionKind, cls: str, service: str, databases: set[str]) -> bool:
    """Does `kind` answer a `cls` bottleneck on `service`? (`params.classes`, `databases`,
    `callers_only`: a database's own bottleneck is fixed in the database, its callers cache.)"""
    if cls not in (kind.params.get("classes") or []):
        return False
    if kind.params.get("databases") is not None and service not in kind.params["databases"]:
        return False
    return not (kind.params.get("callers_only") and service in databases)


def bottleneck_findings(
    outlook: pl.DataFrame,
    playbook: Playbook,
    observed: bool = False,
    as_of: datetime | None = None,
) -> pl.DataFrame:
    """Predicted bottlenecks (probability >= the playbook minimum) -> the kinds listing the class.

    One finding per service and kind: the likeliest class and horizon win. `observed` rows are
    bottlenecks already seen in the recent history (`recent_bottlenecks`), not predicted ones.
    An expected time at or before `as_of` is stated as "now", never as a time in the past.
    """
    least = playbook.settings["min_bottleneck_probability"]
    # A bottleneck already seen is listed whatever its chance of recurring (the chance is
    # its risk); a predicted one only when likely enough.
    likely = outlook.filter(
        (pl.col("bottleneck_class") != "none") & ((pl.col("probability") >= least) | observed)
    ).sort(["probability", "horizon"], descending=[True, False])
    kinds = [k for k in playbook.kinds.values() if k.params.get("classes")]
    databases = {d for k in kinds for d in (k.params.get("databases") or [])}
    rows, seen = [], set()
    for rec in likely.iter_rows(named=True):
        cls, service, namespace = rec["bottleneck_class"], rec["service"], rec["namespace"]
        for kind in kinds:
            if not _bottleneck_kind(kind, cls, service, databases) or (kind.name, service) in seen:
                continue
            seen.add((kind.name, service))
            actions = _OBSERVED_ACTIONS if observed else _BOTTLENECK_ACTIONS
            template = actions.get(kind.name, kind.title + " ({service})")
            if kind.name == "scale_out" and cls in _AT_LIMIT_ACTIONS:
                template = (_AT_LIMIT_ACTIONS if observed else _PREDICTED_AT_LIMIT_ACTIONS)[cls]
            target = (
                f"{namespace}/{service}"
                if kind.source == "runway"
                else (f"service {namespace}/{service}")
            )
            probability = float(rec["probability"])
            confidence = probability if rec.get("method") == "lightgbm" else 0.8 * probability
            expected = rec.get("expected_at")
            if expected and as_of and expected <= as_of.replace(tzinfo=None):
                expected, when = None, ", expected now"
            else:
                when = f", expected {expected:%a %d %b %H:%M} UTC" if expected else ""
            rows.append(
                {
                    "kind": kind.name,
                    "target": target,
                    "namespace": namespace,
                    "service": service,
                    "action": template.format(service=service, cls=cls),
                    "evidence": one_line(
                        f"{cls} bottleneck {rec['horizon']}: {rec.get('evidence') or ''}"
                        if observed
                        else f"{cls} bottleneck p={probability:.2f} within {rec['horizon']}"
                        f"{when}: {rec.get('evidence') or ''}"
                    ),
                    "evidence_value": probability,
                    "source_table": OBSERVED_SOURCE if observed else BOTTLENECK_TABLE.name,
                    "impact_usd_month": None,
                    "slo_risk_avoided": probability,
                    "runway_days_gained": 0.0,
                    "confidence": confidence,
                    "history_days": None,
                    "forecast_uncertainty": 1.0 - probability,
                    "headroom_after": None,
                    "deadline": expected,
                    **({_CLASS_RESOURCE[cls]: "up"} if cls in _CLASS_RESOURCE else {}),
                }
            )
    return finding_frame(rows)


RECENT_DAYS = 7  # a bottleneck seen in the last week and not fixed is worth a line
# A bottleneck labelled less than `EPISODE_GAP_HOURS` before the list is an episode not over
# (a daily throttling is one long episode): going on, not a recurrence. Its risk stays 0.5
# plus 0.1 per hour seen this week (at most 0.95).
RECENT_BASE, RECENT_PER_HOUR, RECENT_MAX = 0.5, 0.1, 0.95


def recent_bottlenecks(
    labelled: pl.DataFrame, as_of: datetime, learn_since: datetime | None = None
) -> pl.DataFrame:
    """USE-rule labelled service-hours of the last `RECENT_DAYS` -> outlook-shaped rows.

    `labelled` is `bottlenecks.labels.label_windows` output (namespace, service, window_start,
    bottleneck_class, evidence); the worst hour's evidence is kept. The probability of a
    bottleneck that is not going on now is the fleet's recurrence chance (`recurrence_rate`),
    learned from the episodes labelled since `learn_since` (default: the start of `labelled`).
    """
    end = as_of.replace(tzinfo=None)
    if learn_since is None:
        learn_since = labelled["window_start"].min() if labelled.height else end
    chance, recurred, watched = recurrence_rate(labelled, as_of, learn_since)
    seen = labelled.filter(
        (pl.col("bottleneck_class") != "none")
        & (pl.col("window_start") >= end - timedelta(days=RECENT_DAYS))
        & (pl.col("window_start") < end)
    )
    grouped = seen.group_by("namespace", "service", "bottleneck_class").agg(
        pl.len().alias("hours"),
        pl.col("window_start").max().alias("last"),
        pl.col("evidence").first().alias("worst"),
    )
    ongoing = pl.col("last") > end - timedelta(hours=EPISODE_GAP_HOURS)
    learned = f"on this fleet {recurred} recurrence(s) in {watched:.0f} d watched after bottlenecks"
    return grouped.select(
        "namespace",
        "service",
        "bottleneck_class",
        pl.format("seen {} h in the last {} d", "hours", pl.lit(RECENT_DAYS)).alias("horizon"),
        pl.when(ongoing)
        .then(
            pl.min_horizontal(
                pl.lit(RECENT_MAX),
                RECENT_BASE + RECENT_PER_HOUR * pl.col("hours").cast(pl.Float64),
            )
        )
        .otherwise(pl.lit(chance))
        .alias("probability"),
        pl.format(
            "last {}; {}; {}",
            pl.col("last").dt.strftime("%a %d %b %H:%M UTC"),
            pl.when(ongoing).then(pl.lit("going on now")).otherwise(pl.lit(learned)),
            "worst",
        ).alias("evidence"),
        pl.lit(None, dtype=pl.Datetime("us")).alias("expected_at"),
        pl.lit("rules").alias("method"),
    ).sort("namespace", "service", "bottleneck_class")

"""After the change: did an accepted recommendation do what it promised?

For each accepted recommendation the metrics of the week before the decision are compared with
those since (the change is assumed applied at the decision): realised $ per month, p95 latency,
error ratio, OOM kills and CPU throttling. The verdict is `regressed` when a guard-rail metric
got worse, `effective` when the promised gain showed up, `ineffective` otherwise; outcomes move
the effort and risk priors of their kind (`learned_priors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import polars as pl

from capacity_pipelines.recommendations.findings import table_columns
from capacity_pipelines.recommendations.playbook import Playbook
from capacity_pipelines.recommendations.review import latest_verdicts

# Guard rails: a change "regressed" a service when any of these got worse. Thresholds are the
# usual alerting margins (planning assumptions, documented in docs/recommendations.md).
LATENCY_REGRESSION = 1.20  # p95 latency 20 % higher ...
LATENCY_FLOOR_S = 0.010  # ... and at least 10 ms higher (noise on fast services)
ERROR_REGRESSION = 1.50  # error ratio 50 % higher ...
ERROR_FLOOR = 0.001  # ... and at least 0.1 percentage point higher
THROTTLING_REGRESSION = 0.05  # throttled share of CPU periods up by 5 points
# Effective: at least half the promised $ realised, or a clear SLO improvement.
EFFECTIVE_SHARE = 0.5
LATENCY_IMPROVEMENT = 0.90  # p95 at most 90 % of before
PRIOR_WEIGHT = 4.0  # the playbook prior counts as 4 observed outcomes (Beta pseudo-counts)
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class WindowMetrics:
    """What one window (before or after) looked like for a target."""

    cost_usd_month: float | None = None
    latency_p95_s: float | None = None
    error_ratio: float | None = None
    oom_kills_per_day: float | None = None
    throttled: float | None = None


def _worse(before: float | None, after: float | None, factor: float, floor: float) -> bool:
    if before is None or after is None:
        return False
    return after > before * factor and after - before > floor


def classify_outcome(
    before: WindowMetrics,
    after: WindowMetrics,
    expected_usd_month: float | None,
    expected_slo_risk: float | None,
) -> tuple[str, float | None, str]:
    """(verdict, realised $/month, one-line detail) for one accepted recommendation."""
    realised = (
        before.cost_usd_month - after.cost_usd_month
        if before.cost_usd_month is not None and after.cost_usd_month is not None
        else None
    )
    problems = []
    if _worse(before.latency_p95_s, after.latency_p95_s, LATENCY_REGRESSION, LATENCY_FLOOR_S):
        problems.append(f"p95 latency {before.latency_p95_s:.3f}s -> {after.latency_p95_s:.3f}s")
    if _worse(before.error_ratio, after.error_ratio, ERROR_REGRESSION, ERROR_FLOOR):
        problems.append(f"error ratio {before.error_ratio:.4f} -> {after.error_ratio:.4f}")
    if (after.oom_kills_per_day or 0.0) > (before.oom_kills_per_day or 0.0):
        problems.append(
            f"OOM kills/day {before.oom_kills_per_day or 0:.2f} -> {after.oom_kills_per_day:.2f}"
        )
    if (after.throttled or 0.0) - (before.throttled or 0.0) > THROTTLING_REGRESSION:
        problems.append(f"CPU throttling {before.throttled or 0:.2f} -> {after.throttled:.2f}")
    if problems:
        return "regressed", realised, "; ".join(problems)
    if expected_usd_month is not None and expected_usd_month > 0:
        if realised is not None and realised >= EFFECTIVE_SHARE * expected_usd_month:
            return (
                "effective",
                realised,
                f"realised ${realised:,.0f}/mo of ${expected_usd_month:,.0f}",
            )
        return (
            "ineffective",
            realised,
            f"realised {'n/a' if realised is None else f'${realised:,.0f}'}/mo of "
            f"${expected_usd_month:,.0f} expected",
        )
    gains = []
    if (before.oom_kills_per_day or 0.0) > 0 and (after.oom_kills_per_day or 0.0) == 0:
        gains.append("OOM kills stopped")
    if (before.throttled or 0.0) - (after.throttled or 0.0) > THROTTLING_REGRESSION:
        gains.append("throttling fell")
    if (
        before.latency_p95_s is not None
        and after.latency_p95_s is not None
        and after.latency_p95_s <= before.latency_p95_s * LATENCY_IMPROVEMENT
    ):
        gains.append("p95 latency fell")
    if gains:
        return "effective", realised, ", ".join(gains)
    return "ineffective", realised, "no SLO metric improved"


def _service_metrics(con, namespace, service, start, end) -> dict:
    if not table_columns(con, "service_traffic"):
        return {}
    row = con.execute(
        "SELECT avg(latency_p95_seconds), sum(error_rate_rps) / nullif(sum(request_rate_rps), 0)"
        " FROM service_traffic WHERE namespace = ? AND service = ? AND ts > ? AND ts <= ?",
        [namespace, service, start, end],
    ).fetchone()
    return {"latency_p95_s": row[0], "error_ratio": row[1]}


def _container_metrics(con, target: str, start, end) -> dict:
    parts = target.split("/")
    if len(parts) < 2 or not table_columns(con, "container_usage"):
        return {}
    namespace, workload = parts[0], parts[1]
    container_filter = "AND container = ?" if len(parts) >= 3 else ""
    args = [namespace, workload] + ([parts[2]] if len(parts) >= 3 else []) + [start, end]
    from capacity_pipelines.rightsizing.prices import load_compute_prices

    row = con.execute(
        f"""WITH steps AS (
              SELECT pod, container, ts, cpu_request_cores, memory_request_bytes,
                     cpu_throttled_ratio, oom_killed,
                     restarts - lag(restarts) OVER (PARTITION BY pod, container ORDER BY ts) AS d
              FROM container_usage WHERE namespace = ? AND workload = ? {container_filter}
                AND ts > ? AND ts <= ?),
            per_ts AS (SELECT ts, sum(cpu_request_cores) AS cpu, sum(memory_request_bytes) AS mem
                       FROM steps GROUP BY ts)
            SELECT (SELECT avg(cpu) FROM per_ts), (SELECT avg(mem) FROM per_ts),
                   avg(cpu_throttled_ratio),
                   count(*) FILTER (WHERE d > 0 AND oom_killed > 0),
                   (max(ts) - min(ts))
            FROM steps""",
        args,
    ).fetchone()
    cpu, mem, throttled, kills, span = row
    days = max(span.total_seconds() / 86_400, 1 / 24) if span else None
    prices = load_compute_prices()
    cost = prices.monthly_usd(cpu, mem, prices.price()) if cpu is not None and mem else None
    return {
        "cost_usd_month": cost,
        "throttled": throttled,
        "oom_kills_per_day": kills / days if days else None,
    }


def _llm_metrics(con, service: str, agent: str | None, start, end) -> dict:
    if not table_columns(con, "llm_token_cost"):
        return {}
    agent_filter = "AND agent = ?" if agent else ""
    args = [service] + ([agent] if agent else []) + [start, end]
    row = con.execute(
        f"SELECT sum(cost_usd), sum(requests), max(ts) - min(ts) FROM llm_token_cost "
        f"WHERE service = ? {agent_filter} AND ts > ? AND ts <= ?",
        args,
    ).fetchone()
    cost, requests, span = row
    if cost is None or not span:
        return {}
    return {"cost_usd_month": cost * HOURS_PER_MONTH * 3600 / span.total_seconds()}


def measure(con: duckdb.DuckDBPyConnection, decision: dict, start: datetime, end: datetime):
    """WindowMetrics of the decision's target over `(start, end]`."""
    target, service, namespace = (
        decision["target"] or "",
        decision["service"],
        decision["namespace"],
    )
    values = _service_metrics(con, namespace, service, start, end)
    if target.startswith("llm "):
        path = target[4:].split("/")
        agent = path[2] if len(path) > 2 else None
        values |= _llm_metrics(con, service, agent, start, end)
    elif not target.startswith(("service ", "provider ")):
        values |= _container_metrics(con, target, start, end)
    return WindowMetrics(**values)


OUTCOME_SCHEMA = {
    "recommendation_id": pl.Utf8, "kind": pl.Utf8, "target": pl.Utf8,
    "decided_at": pl.Datetime("us"), "verdict": pl.Utf8, "expected_usd_month": pl.Float64,
    "realised_usd_month": pl.Float64, "latency_p95_before": pl.Float64,
    "latency_p95_after": pl.Float64, "error_ratio_before": pl.Float64,
    "error_ratio_after": pl.Float64, "oom_kills_per_day_before": pl.Float64,
    "oom_kills_per_day_after": pl.Float64, "throttled_before": pl.Float64,
    "throttled_after": pl.Float64, "detail": pl.Utf8,
}  # fmt: skip


def validate_accepted(
    con: duckdb.DuckDBPyConnection, decisions: pl.DataFrame, as_of: datetime, playbook: Playbook
) -> pl.DataFrame:
    """One outcome row per currently accepted recommendation decided before `as_of`."""
    settings = playbook.settings
    end = as_of.replace(tzinfo=None)
    window = timedelta(days=settings["validation_window_days"])
    rows = []
    accepted = latest_verdicts(decisions.filter(pl.col("decided_at") <= end)).filter(
        pl.col("decision") == "accept"
    )
    for d in accepted.sort("recommendation_id").iter_rows(named=True):
        at = d["decided_at"]
        row = {
            "recommendation_id": d["recommendation_id"],
            "kind": d["kind"],
            "target": d["target"],
            "decided_at": at,
            "expected_usd_month": d["impact_usd_month"],
        }
        if end - at < timedelta(days=settings["validation_min_days"]):
            rows.append(row | {"verdict": "pending", "detail": "after-window too short"})
            continue
        before = measure(con, d, at - window, at)
        after = measure(con, d, at, min(end, at + window))
        verdict, realised, detail = classify_outcome(
            before, after, d["impact_usd_month"], d["slo_risk_avoided"]
        )
        rows.append(
            row
            | {
                "verdict": verdict,
                "realised_usd_month": realised,
                "latency_p95_before": before.latency_p95_s,
                "latency_p95_after": after.latency_p95_s,
                "error_ratio_before": before.error_ratio,
                "error_ratio_after": after.error_ratio,
                "oom_kills_per_day_before": before.oom_kills_per_day,
                "oom_kills_per_day_after": after.oom_kills_per_day,
                "throttled_before": before.throttled,
                "throttled_after": after.throttled,
                "detail": detail,
            }
        )
    return pl.DataFrame(
        [{c: r.get(c) for c in OUTCOME_SCHEMA} for r in rows], schema=OUTCOME_SCHEMA
    )


def learned_priors(outcomes: pl.DataFrame, playbook: Playbook) -> dict[str, tuple[float, float]]:
    """kind -> (effort multiplier, risk prior) after its validated outcomes.

    Risk: Beta posterior mean of "regressed", the playbook prior worth PRIOR_WEIGHT outcomes.
    Effort: prior / posterior success rate: a kind whose changes often fail to deliver costs
    more effort per delivered result. No outcomes: (1, playbook prior).
    """
    learned = {}
    done = outcomes.filter(pl.col("verdict").is_in(["effective", "ineffective", "regressed"]))
    for kind_name, group in done.group_by("kind"):
        name = kind_name[0]
        if name not in playbook.kinds:
            continue
        prior = playbook.kinds[name].risk_prior
        n = group.height
        regressed = group.filter(pl.col("verdict") == "regressed").height
        effective = group.filter(pl.col("verdict") == "effective").height
        risk = (prior * PRIOR_WEIGHT + regressed) / (PRIOR_WEIGHT + n)
        success = (PRIOR_WEIGHT + effective) / (PRIOR_WEIGHT + n)
        learned[name] = (1.0 / success, risk)
    return learned

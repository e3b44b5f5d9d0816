"""The `recommendations` asset: one ranked list of actions per day, with its checks."""

import html

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.formatting import markdown_table, usd_per_month
from capacity_pipelines.common.freshness import FRESHNESS_WINDOW
from capacity_pipelines.defs.checks import blocking_failures, offenders, refuse
from capacity_pipelines.defs.partitions import as_of_days, daily_partitions
from capacity_pipelines.defs.resources import WarehouseResource
from capacity_pipelines.defs.warehouse.assets import WRITES_WAREHOUSE
from capacity_pipelines.recommendations.checks import (
    duplicate_ids,
    headline_mismatch,
    opposite_directions,
    past_deadlines,
    stale_evidence,
    without_evidence,
)
from capacity_pipelines.recommendations.decisions import adopt_legacy_decisions, load_decisions
from capacity_pipelines.recommendations.engine import build_recommendations
from capacity_pipelines.recommendations.headline import savings_headline
from capacity_pipelines.recommendations.playbook import PlaybookError
from capacity_pipelines.recommendations.tables import (
    OUTCOMES_TABLE,
    RECOMMENDATIONS_TABLE,
)

TOP = 15  # rows of the ranked table shown in the UI
OUTCOME_PREVIEW = ["recommendation_id", "verdict", "detail"]


def top_table(table: pl.DataFrame, rows: int = TOP) -> dg.TableMetadataValue:
    """The head of the ranked list as a Dagster table (open, not hidden by a rejection)."""
    shown = table.filter(
        (pl.col("status") == "open") & (pl.col("review_status") != "rejected")
    ).head(rows)
    columns = ["rank", "recommendation_id", "kind", "target", "action", "impact", "slo_impact",
               "effort_score", "risk_score", "confidence", "priority", "review_status"]  # fmt: skip
    records = [
        dg.TableRecord(
            {
                **{c: r[c] for c in columns if c in r},
                "impact": usd_per_month(r["impact_usd_month"])
                + (f" ({r['saving_basis']})" if r.get("saving_basis") else ""),
                "effort_score": round(r["effort_score"], 2),
                "risk_score": round(r["risk_score"], 2),
                "confidence": round(r["confidence"], 2),
                "priority": round(r["priority"], 2),
            }
        )
        for r in shown.iter_rows(named=True)
    ]
    kinds = {"rank": "int", "effort_score": "float", "risk_score": "float",
             "confidence": "float", "priority": "float"}  # fmt: skip
    schema = dg.TableSchema(columns=[dg.TableColumn(c, kinds.get(c, "string")) for c in columns])
    return dg.MetadataValue.table(records, schema=schema)


@dg.asset(
    description="One ranked list of actions (rightsizing, runway, bottlenecks, token costs) "
    "scored by impact, effort and risk with every factor visible; stable ids, SRE review "
    "status from the SRE decisions (their own store, never written by a run), accepted ones "
    "checked after the change (tables recommendations, recommendation_outcomes). One list per "
    "as-of day: a run over several days computes each of them, oldest first.",
    group_name="recommendations",
    kinds={"duckdb", "polars"},
    owners=["team:sre"],
    tags=WRITES_WAREHOUSE,
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        "container_rightsizing",
        "load_forecasts",
        "llm_token_cost",
        "bottleneck_outlook",
        "anomalies",
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "evidence_for_every_recommendation",
            asset="recommendations",
            description="No recommendation without evidence.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            "unique_ids",
            asset="recommendations",
            description="No duplicate recommendation id within a day.",
            blocking=True,
        ),
        # The invariants below are blocking: a violation is advice that is not true.
        dg.AssetCheckSpec(
            "no_deadline_in_the_past",
            asset="recommendations",
            description="No deadline before the day the list is made for.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            "one_direction_per_resource",
            asset="recommendations",
            description="No two open items on one workload move the same resource (CPU or "
            "memory) in opposite directions.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            "fresh_evidence",
            asset="recommendations",
            description="Every open item's target reported within the freshness window "
            f"({FRESHNESS_WINDOW}).",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            "measured_headline_adds_up",
            asset="recommendations",
            description="The headline's measured savings equal the sum of the measured items.",
            blocking=True,
        ),
    ],
)
def recommendations(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    store, wait_s = warehouse.decisions_file, warehouse.lock_wait_s
    adopted = adopt_legacy_decisions(warehouse.path, store, wait_s)
    if adopted:
        context.log.info(f"moved {adopted} SRE decisions from the warehouse to their own store")
    decisions = load_decisions(store, wait_s)
    for as_of in as_of_days(context):
        try:
            with warehouse.reader() as con:
                run = build_recommendations(con, as_of, decisions=decisions)
        except PlaybookError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        headline = savings_headline(run.table)
        checks = [
            offenders("evidence_for_every_recommendation", without_evidence(run.table)),
            offenders("unique_ids", duplicate_ids(run.table)),
            offenders("no_deadline_in_the_past", past_deadlines(run.table, as_of)),
            offenders("one_direction_per_resource", opposite_directions(run.table)),
            offenders("fresh_evidence", stale_evidence(run.table, as_of)),
            offenders("measured_headline_adds_up", headline_mismatch(run.table, headline)),
        ]
        if blocking_failures(checks):
            yield from refuse(checks, f"recommendations as of {as_of:%Y-%m-%d}")
        with warehouse.writer(f"recommendations as of {as_of:%Y-%m-%d}") as con:
            rows = wh.replace_as_of(con, RECOMMENDATIONS_TABLE, as_of, run.table)
            wh.replace_as_of(con, OUTCOMES_TABLE, as_of, run.outcomes)
    open_rows = run.table.filter(pl.col("status") == "open")
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "as_of": str(as_of),
            "days_computed": len(context.partition_keys),
            "open": open_rows.height,
            "measured_saving_usd_month": round(headline.measured_usd_month, 2),
            "estimated_saving_usd_month": round(headline.estimated_usd_month, 2),
            "expected_saving_usd_month": round(headline.expected_usd_month, 2),
            "top": top_table(run.table),
            # notes and outcome details carry service and agent names from metric labels
            "notes": dg.MetadataValue.md(
                "\n".join(f"- {html.escape(n)}" for n in run.notes) or "(none)"
            ),
            "outcomes": dg.MetadataValue.md(
                html.escape(markdown_table(run.outcomes.select(OUTCOME_PREVIEW), 20))
            ),
        },
        check_results=checks,
    )

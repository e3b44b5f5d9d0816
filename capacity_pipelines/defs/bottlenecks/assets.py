"""The `bottleneck_outlook` asset: USE-rule labels, LightGBM outlook, evaluation in metadata."""

import html
from datetime import timedelta

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.bottlenecks.outlook import (
    build_outlook,
    probability_problems,
    read_inputs,
    unexplained,
)
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.defs.partitions import daily_partitions
from capacity_pipelines.defs.resources import WarehouseResource

SHOWN = ["service", "horizon", "bottleneck_class", "probability", "expected_at", "evidence"]


def _escaped(frame: pl.DataFrame) -> pl.DataFrame:
    # Service names and evidence come from metric labels: escape them before the UI renders.
    return frame.with_columns(
        pl.col(c).map_elements(html.escape, return_dtype=pl.Utf8)
        for c, dtype in frame.schema.items()
        if dtype == pl.Utf8
    )


@dg.asset(
    description="Per service, the most likely bottleneck over the next 24 h and 7 days (cpu, "
    "memory, io_database, network, queueing, llm_provider or none) with its probability, "
    "expected start, evidence and metrics (table bottleneck_outlook). Past hours are labelled "
    "with USE-method rules; per horizon, a small LightGBM model trained on them, the rule "
    "fallback or persistence predicts, whichever did best on the latest training origins "
    "(the rules where the history is too thin). Metadata: the outlook and the confusion matrix "
    "of the 24 h model on the latest held-out week.",
    group_name="bottlenecks",
    kinds={"lightgbm", "duckdb"},
    owners=["team:sre"],
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
    deps=[
        "container_usage",
        "service_traffic",
        "llm_token_usage",
        "workload_replicas",
        "load_forecasts",
    ],
    check_specs=[
        dg.AssetCheckSpec(
            "probabilities_sum_to_one",
            asset="bottleneck_outlook",
            description="Every outlook's class probabilities lie in 0..1 and sum to 1.",
            blocking=True,
        ),
        dg.AssetCheckSpec(
            "bottlenecks_have_evidence",
            asset="bottleneck_outlook",
            description="Every outlook other than `none` carries evidence and metrics.",
        ),
    ],
)
def bottleneck_outlook(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    as_of = context.partition_time_window.end
    with wh.connect(warehouse.path, wait_s=warehouse.lock_wait_s) as con:
        windows, runway = read_inputs(con, as_of)
    outlook = build_outlook(windows, as_of, runway)
    with wh.connect(warehouse.path, wait_s=warehouse.lock_wait_s) as con:
        rows = wh.replace_derived_window(
            con,
            BOTTLENECK_TABLE,
            as_of,
            as_of + timedelta(microseconds=1),
            outlook.table,
            "as_of",
        )
    table = outlook.table
    unsupported = probability_problems(table)
    silent = unexplained(table)
    evaluation = outlook.evaluation
    metadata: dict = {
        "dagster/row_count": rows,
        "outlook": dg.MetadataValue.md(
            markdown_table(_escaped(table.sort("probability", descending=True)).select(SHOWN), 30)
        ),
        "notes": dg.MetadataValue.md("\n".join(f"- {html.escape(n)}" for n in outlook.notes)),
    }
    if evaluation is not None:
        metadata |= {
            "confusion_matrix": dg.MetadataValue.md(evaluation.markdown()),
            "macro_f1": evaluation.macro_f1,
            "evaluation_method": evaluation.method,
            "evaluation_origins": evaluation.test_origins,
        }
        metadata |= {f"recall/{c}": r for c, r in evaluation.recall.items()}
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="probabilities_sum_to_one",
                passed=not unsupported,
                description="all rows sum to 1"
                if not unsupported
                else "bad probabilities: " + ", ".join(unsupported[:5]),
            ),
            dg.AssetCheckResult(
                check_name="bottlenecks_have_evidence",
                passed=silent.height == 0,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{table.filter(pl.col('bottleneck_class') != 'none').height} "
                f"bottlenecks, {silent.height} without evidence",
            ),
        ],
    )

"""The `bottleneck_outlook` asset: USE-rule labels, LightGBM outlook, evaluation in metadata."""

import html

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.bottlenecks.outlook import (
    build_outlook,
    probability_problems,
    read_inputs,
    unexplained,
)
from capacity_pipelines.bottlenecks.tables import BOTTLENECK_BACKTEST_TABLE, BOTTLENECK_TABLE
from capacity_pipelines.bottlenecks.track_record import (
    comparison,
    fleet_scores,
    read_said,
    track_record,
)
from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.defs.checks import WARN, blocking_failures, check, refuse
from capacity_pipelines.defs.partitions import as_of_days, daily_partitions
from capacity_pipelines.defs.resources import WarehouseResource
from capacity_pipelines.defs.warehouse.assets import WRITES_WAREHOUSE
from capacity_pipelines.ingest.tables import (
    CONTAINER_USAGE_TABLE,
    LLM_TOKEN_USAGE_TABLE,
    SERVICE_TRAFFIC_TABLE,
    WORKLOAD_REPLICAS_TABLE,
)

SHOWN = ["service", "horizon", "bottleneck_class", "probability", "expected_at", "evidence"]


def _escaped(frame: pl.DataFrame) -> pl.DataFrame:
    # Service names and evidence come from metric labels: escape them before the UI renders.
    return frame.with_columns(
        pl.col(c).map_elements(html.escape, return_dtype=pl.Utf8)
        for c, dtype in frame.schema.items()
        if dtype == pl.Utf8
    )


def _track_record_metadata(record: pl.DataFrame, table: pl.DataFrame) -> dict:
    """The track record in the UI: each method's pooled scores and the per-service verdicts."""
    compared = comparison(record, table)
    metadata: dict = {
        f"track_record/{method}/{name}": value
        for method, scores in fleet_scores(record).items()
        for name, value in scores.items()
    }
    shown = compared.select(
        "service",
        "horizon",
        "origins",
        "correct",
        "persistence_correct",
        "brier",
        "persistence_brier",
        "verdict",
    )
    metadata["track_record"] = dg.MetadataValue.md(markdown_table(_escaped(shown), 30))
    return metadata


@dg.asset(
    description="Per service, the most likely bottleneck over the next 24 h and 7 days (cpu, "
    "memory, io_database, network, queueing, llm_provider or none) with its probability, "
    "expected start, evidence and metrics (table bottleneck_outlook). Past hours are labelled "
    "with USE-method rules; per horizon, a small LightGBM model trained on them, the rule "
    "fallback or persistence predicts, whichever did best on the latest training origins "
    "(the rules where the history is too thin). Metadata: the outlook and the confusion matrix "
    "of the 24 h model on the latest held-out week. Its track record (table "
    "bottleneck_backtest): the stored outlooks of the last four weeks whose horizon has ended, "
    "scored per service against the labels that followed, next to 7-day persistence. One "
    "outlook per as-of day: a run over several days computes each of them.",
    group_name="bottlenecks",
    kinds={"lightgbm", "duckdb"},
    owners=["team:sre"],
    tags=WRITES_WAREHOUSE,
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        CONTAINER_USAGE_TABLE,
        SERVICE_TRAFFIC_TABLE,
        LLM_TOKEN_USAGE_TABLE,
        WORKLOAD_REPLICAS_TABLE,
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
def bottleneck_outlook(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    for as_of in as_of_days(context):
        with warehouse.reader() as con:
            windows, runway = read_inputs(con, as_of)
            said = read_said(con, as_of)
        outlook = build_outlook(windows, as_of, runway)
        table = outlook.table
        record = track_record(said, outlook.labelled, as_of)
        unsupported = probability_problems(table)
        silent = unexplained(table)
        checks = [
            check(
                "probabilities_sum_to_one",
                not unsupported,
                "all rows sum to 1"
                if not unsupported
                else "bad probabilities: " + ", ".join(unsupported[:5]),
            ),
            check(
                "bottlenecks_have_evidence",
                silent.height == 0,
                f"{table.filter(pl.col('bottleneck_class') != 'none').height} "
                f"bottlenecks, {silent.height} without evidence",
                WARN,
            ),
        ]
        if blocking_failures(checks):
            yield from refuse(checks, f"bottleneck outlook as of {as_of:%Y-%m-%d}")
        with warehouse.writer(f"bottleneck_outlook as of {as_of:%Y-%m-%d}") as con:
            rows = wh.replace_as_of(con, BOTTLENECK_TABLE, as_of, table)
            wh.replace_as_of(con, BOTTLENECK_BACKTEST_TABLE, as_of, record)
    evaluation = outlook.evaluation
    metadata: dict = {
        "dagster/row_count": rows,
        "as_of": str(as_of),
        "days_computed": len(context.partition_keys),
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
    metadata |= _track_record_metadata(record, table)
    yield dg.MaterializeResult(metadata=metadata, check_results=checks)

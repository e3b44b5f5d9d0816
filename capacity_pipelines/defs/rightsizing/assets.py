"""Rightsizing: forecast-aware CPU and memory recommendations per container."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.defs.partitions import daily_partitions
from capacity_pipelines.defs.resources import ReportsResource, WarehouseResource
from capacity_pipelines.rightsizing.checks import risky_cuts
from capacity_pipelines.rightsizing.outputs import markdown_table, write_exports
from capacity_pipelines.rightsizing.recommend import recommend_from_warehouse
from capacity_pipelines.rightsizing.tables import HISTORY_DAYS, RIGHTSIZING_TABLE


@dg.asset(
    description="Forecast-aware, OOM- and throttling-aware CPU and memory requests per "
    "container (all pods of the workload, 14 days), priced with the compute price book; "
    "table container_rightsizing, CSV/JSON and GitOps patches in reports/latest/rightsizing/.",
    group_name="rightsizing",
    kinds={"duckdb", "kubernetes"},
    owners=["team:sre"],
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="warehouse",
    deps=["container_usage", "workload_replicas"],
    check_specs=[
        dg.AssetCheckSpec(
            "no_risky_cuts",
            asset="container_rightsizing",
            description="WARN when a recommendation cuts a request by more than half at low "
            "confidence.",
        )
    ],
)
def container_rightsizing(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, reports: ReportsResource
) -> dg.MaterializeResult:
    as_of = context.partition_time_window.end
    start = as_of - timedelta(days=HISTORY_DAYS)
    with wh.connect(warehouse.path, wait_s=warehouse.lock_wait_s) as con:
        usage = wh.read_window(con, "container_usage", start, as_of)
        replicas = wh.read_window(con, "workload_replicas", start, as_of)
    recommendations = recommend_from_warehouse(usage, replicas)
    table = recommendations.with_columns(pl.lit(as_of.replace(tzinfo=None)).alias("as_of"))
    with wh.connect(warehouse.path, wait_s=warehouse.lock_wait_s) as con:
        rows = wh.replace_derived_window(
            con, RIGHTSIZING_TABLE, as_of, as_of + timedelta(microseconds=1), table, "as_of"
        )
    exports = write_exports(recommendations, Path(reports.reports_dir) / "latest" / "rightsizing")
    risky = risky_cuts(recommendations)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "monthly_saving_usd": float(recommendations["monthly_saving_usd"].sum() or 0.0),
            "top": dg.MetadataValue.md(markdown_table(recommendations, top=10)),
            "exports": dg.MetadataValue.path(str(exports[0].parent) if exports else ""),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_risky_cuts",
                passed=risky.height == 0,
                severity=dg.AssetCheckSeverity.WARN,
                description="no large cut at low confidence"
                if risky.height == 0
                else f"{risky.height} large cuts at low confidence: "
                + ", ".join(risky["container_id"].head(5).to_list()),
            )
        ],
    )

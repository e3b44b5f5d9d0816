"""Rightsizing: forecast-aware CPU and memory recommendations per container."""

from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.formatting import safe_text
from capacity_pipelines.defs.partitions import daily_partitions
from capacity_pipelines.defs.resources import ReportsResource, WarehouseResource
from capacity_pipelines.rightsizing.checks import risky_cuts
from capacity_pipelines.rightsizing.outputs import build_exports, publish_exports, ranked_markdown
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
        ),
        dg.AssetCheckSpec(
            "patches_for_every_workload",
            asset="container_rightsizing",
            description="WARN when a workload gets no patch: a namespace, workload or container "
            "label that is not a valid Kubernetes name, or a kind kubectl cannot patch in place.",
        ),
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
    exports = build_exports(recommendations)
    folder = Path(reports.reports_dir) / "latest" / "rightsizing"
    publish_exports(exports, folder)
    refused = exports.patches.refused
    risky = risky_cuts(recommendations)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "monthly_saving_usd": float(recommendations["monthly_saving_usd"].sum() or 0.0),
            "top": dg.MetadataValue.md(ranked_markdown(recommendations, top=10)),
            "exports": dg.MetadataValue.path(str(folder)),
            "patches": len(exports.patches.patches),
            "refused_patches": dg.MetadataValue.json(
                [{"workload": r.workload, "reason": r.reason} for r in refused]
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_risky_cuts",
                passed=risky.height == 0,
                severity=dg.AssetCheckSeverity.WARN,
                description="no large cut at low confidence"
                if risky.height == 0
                else f"{risky.height} large cuts at low confidence: "
                + ", ".join(safe_text(c) for c in risky["container_id"].head(5)),
            ),
            dg.AssetCheckResult(
                check_name="patches_for_every_workload",
                passed=not refused,
                severity=dg.AssetCheckSeverity.WARN,
                description="every workload to change has a patch"
                if not refused
                else f"{len(refused)} workloads got no patch: "
                + "; ".join(f"{r.workload}: {r.reason}" for r in refused[:5]),
            ),
        ],
    )

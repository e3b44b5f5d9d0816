"""Rightsizing: forecast-aware CPU and memory recommendations per container."""

from datetime import timedelta
from typing import Literal

import dagster as dg
import polars as pl

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.formatting import safe_text
from capacity_pipelines.defs.checks import WARN, check
from capacity_pipelines.defs.partitions import as_of_days, daily_partitions
from capacity_pipelines.defs.resources import ComputeResource, ReportsResource, WarehouseResource
from capacity_pipelines.defs.warehouse.assets import WRITES_WAREHOUSE
from capacity_pipelines.ingest.tables import CONTAINER_USAGE_TABLE, WORKLOAD_REPLICAS_TABLE
from capacity_pipelines.rightsizing.checks import risky_cuts
from capacity_pipelines.rightsizing.outputs import build_exports, publish_exports, ranked_markdown
from capacity_pipelines.rightsizing.recommend import recommend_from_warehouse
from capacity_pipelines.rightsizing.strategies import ForecastAwareSettings, ForecastAwareStrategy
from capacity_pipelines.rightsizing.tables import HISTORY_DAYS, RIGHTSIZING_TABLE


class RightsizingConfig(dg.Config):
    """The risk profile the recommendations aim at (docs/rightsizing.md): its CPU violation
    target and memory margin, the same as `capacity rightsize --profile`."""

    profile: Literal["conservative", "balanced", "aggressive"] = "balanced"


@dg.asset(
    description="Forecast-aware, OOM- and throttling-aware CPU and memory requests per "
    "container (all pods of the workload, 14 days), priced with the compute price book; "
    "table container_rightsizing (one set per as-of day), CSV/JSON and GitOps patches of the "
    "latest day in reports/latest/rightsizing/.",
    group_name="rightsizing",
    kinds={"duckdb", "kubernetes"},
    owners=["team:sre"],
    tags=WRITES_WAREHOUSE,
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[CONTAINER_USAGE_TABLE, WORKLOAD_REPLICAS_TABLE],
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
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    reports: ReportsResource,
    compute: ComputeResource,
    config: RightsizingConfig,
) -> dg.MaterializeResult:
    strategy = ForecastAwareStrategy(
        ForecastAwareSettings(forecast_workers=compute.worker_count(), profile=config.profile)
    )
    for as_of in as_of_days(context):
        start = as_of - timedelta(days=HISTORY_DAYS)
        with warehouse.reader() as con:
            usage = wh.read_window(con, CONTAINER_USAGE_TABLE, start, as_of)
            replicas = wh.read_window(con, WORKLOAD_REPLICAS_TABLE, start, as_of)
        recommendations = recommend_from_warehouse(usage, replicas, strategy=strategy)
        table = recommendations.with_columns(pl.lit(as_of.replace(tzinfo=None)).alias("as_of"))
        with warehouse.writer(f"container_rightsizing as of {as_of:%Y-%m-%d}") as con:
            rows = wh.replace_as_of(con, RIGHTSIZING_TABLE, as_of, table)
    exports = build_exports(recommendations)
    folder = reports.latest_dir / "rightsizing"
    publish_exports(exports, folder)
    refused = exports.patches.refused
    risky = risky_cuts(recommendations)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "as_of": str(as_of),
            "days_computed": len(context.partition_keys),
            "profile": config.profile,
            "monthly_saving_usd": float(recommendations["monthly_saving_usd"].sum() or 0.0),
            "top": dg.MetadataValue.md(ranked_markdown(recommendations, top=10)),
            "exports": dg.MetadataValue.path(str(folder)),
            "patches": len(exports.patches.patches),
            "refused_patches": dg.MetadataValue.json(
                [{"workload": r.workload, "reason": r.reason} for r in refused]
            ),
        },
        check_results=[
            check(
                "no_risky_cuts",
                risky.height == 0,
                "no large cut at low confidence"
                if risky.height == 0
                else f"{risky.height} large cuts at low confidence: "
                + ", ".join(safe_text(c) for c in risky["container_id"].head(5)),
                WARN,
            ),
            check(
                "patches_for_every_workload",
                not refused,
                "every workload to change has a patch"
                if not refused
                else f"{len(refused)} workloads got no patch: "
                + "; ".join(f"{r.workload}: {r.reason}" for r in refused[:5]),
                WARN,
            ),
        ],
    )

"""Report assets: what the pipeline publishes for people."""

from pathlib import Path

import dagster as dg

from capacity_pipelines import warehouse as wh
from capacity_pipelines.coverage import table_coverage, write_data_quality_report
from capacity_pipelines.defs.partitions import daily_partitions
from capacity_pipelines.defs.resources import (
    MetricSourceResource,
    ReportsResource,
    WarehouseResource,
)
from capacity_pipelines.formatting import markdown_table


@dg.asset(
    description="Coverage and freshness of every warehouse table, published as Markdown and "
    "JSON to reports/latest/ so a planner sees at a glance whether the numbers can be trusted.",
    group_name="reports",
    kinds={"duckdb", "markdown"},
    owners=["team:capacity"],
    partitions_def=daily_partitions(),
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["warehouse_snapshot"],
)
def data_quality_report(
    warehouse: WarehouseResource, metrics: MetricSourceResource, reports: ReportsResource
) -> dg.MaterializeResult:
    with wh.connect(warehouse.snapshot_path, read_only=True) as con:
        coverage = table_coverage(con, metrics.catalog())
    written = write_data_quality_report(
        coverage, Path(reports.reports_dir) / "latest", source=str(warehouse.snapshot_path)
    )
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(written[0])),
            "coverage": dg.MetadataValue.md(markdown_table(coverage, rows=20)),
            "min_coverage": float(coverage["mean_coverage"].min()) if coverage.height else 0.0,
        }
    )

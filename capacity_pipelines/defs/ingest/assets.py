"""Extraction assets: one daily-partitioned asset per catalog table, plus the snapshot."""

import dagster as dg

from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.defs.partitions import daily_partitions
from capacity_pipelines.defs.resources import MetricSourceResource, WarehouseResource
from capacity_pipelines.ingest.catalog import Catalog, CatalogError, load_catalog
from capacity_pipelines.ingest.sources.evaluate import UnsupportedQueryError
from capacity_pipelines.ingest.sources.openmetrics import ExportFormatError
from capacity_pipelines.ingest.sources.prometheus import SeriesLimitError
from capacity_pipelines.ingest.window import BlockingCheckError, ingest_window

WAREHOUSE_POOL = "warehouse"
# Assets that write derived tables: the snapshot waits for them so analysts see one state.
DERIVED_WRITERS = (
    "llm_token_cost",
    "load_forecasts",
    "forecast_backtests",
    "container_rightsizing",
    "bottleneck_outlook",
    "recommendations",
)  # one writer at a time (DESIGN.md, warehouse rules)
EXTRACTION_RETRY = dg.RetryPolicy(
    max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# Retrying cannot fix these: bad input, a bad catalog, or a query whose answer is too large.
PERMANENT_ERRORS = (
    BlockingCheckError,
    CatalogError,
    ExportFormatError,
    UnsupportedQueryError,
    SeriesLimitError,
)
CHECKS = {
    "completeness": (
        "Expected series and points per window; WARN on gaps or an empty answer.",
        False,
    ),
    "non_negative": ("No negative usage, rate, size or token count.", True),
    "freshness": ("The data reaches the end of the window.", False),
}


def _preview(frame, rows: int = 8) -> str:
    return markdown_table(frame, rows)


def build_extraction_asset(catalog: Catalog, table_name: str) -> dg.AssetsDefinition:
    """A daily-partitioned asset that rewrites its window of one warehouse table."""
    table = catalog.table(table_name)
    key = dg.AssetKey(table_name)

    @dg.asset(
        name=table_name,
        description=f"{table.description}\n\nExtracted from Prometheus, an export or the demo "
        "fleet; each run rewrites its days with delete-then-insert in one transaction.",
        group_name="ingest",
        kinds={"duckdb", "prometheus"},
        owners=["team:sre"],
        partitions_def=daily_partitions(),
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=EXTRACTION_RETRY,
        pool=WAREHOUSE_POOL,
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, description=doc, blocking=blocking)
            for name, (doc, blocking) in CHECKS.items()
        ],
        metadata={"table": table_name, "columns": ", ".join(table.all_columns)},
    )
    def extraction(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        metrics: MetricSourceResource,
    ) -> dg.MaterializeResult:
        window = context.partition_time_window
        try:
            result = ingest_window(
                metrics.source(),
                metrics.catalog(),
                table_name,
                window.start,
                window.end,
                warehouse.path,
                warehouse.lock_wait_s,
            )
        except PERMANENT_ERRORS as exc:
            # Bad input or bad data does not get better by retrying: fail at once, clearly.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        frame = result.extracted.frame
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.rows_written,
                "series": result.extracted.series_count,
                "window": f"{window.start:%Y-%m-%d} .. {window.end:%Y-%m-%d}",
                "first_ts": str(frame["ts"].min()) if frame.height else "",
                "last_ts": str(frame["ts"].max()) if frame.height else "",
                "source": result.extracted.source,
                "preview": dg.MetadataValue.md(_preview(frame)),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=v.name,
                    passed=v.passed,
                    severity=dg.AssetCheckSeverity.ERROR
                    if v.severity == "error"
                    else dg.AssetCheckSeverity.WARN,
                    description=v.description,
                    metadata=v.metadata,
                )
                for v in result.verdicts
            ],
        )

    return extraction


def build_snapshot_asset(catalog: Catalog) -> dg.AssetsDefinition:
    """Publishes the analysts' read-only snapshot after the day's tables are written."""

    @dg.asset(
        name="warehouse_snapshot",
        description="Consistent read-only copy of the warehouse for analysts and notebooks, "
        "replaced atomically after each successful run so long queries never block a run.",
        group_name="ingest",
        kinds={"duckdb"},
        owners=["team:sre"],
        partitions_def=daily_partitions(),
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        # Every asset that writes the warehouse, so the snapshot is consistent after the run.
        deps=[
            *(dg.AssetKey(name) for name in catalog.tables),
            *(dg.AssetKey(name) for name in DERIVED_WRITERS),
        ],
    )
    def warehouse_snapshot(warehouse: WarehouseResource) -> dg.MaterializeResult:
        snapshot = wh.publish_snapshot(warehouse.path, warehouse.snapshot_path)
        with wh.connect(snapshot, read_only=True) as con:
            counts = {
                name: con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
                for name in catalog.tables
            }
            dictionary = wh.data_dictionary(con)
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(snapshot)),
                **{f"rows/{name}": n for name, n in counts.items()},
                "data_dictionary": dg.MetadataValue.md(dictionary),
            }
        )

    return warehouse_snapshot


@dg.definitions
def ingest_assets() -> dg.Definitions:
    catalog = load_catalog()
    return dg.Definitions(
        assets=[
            *(build_extraction_asset(catalog, name) for name in catalog.tables),
            build_snapshot_asset(catalog),
        ]
    )

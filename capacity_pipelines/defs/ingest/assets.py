"""Extraction assets: one daily-partitioned asset per catalog table.

The catalog is fixed when the definitions load (`configured_catalog`): it decides which assets
exist, and the same object is what each asset body extracts with.
"""

import dagster as dg

from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.defs.checks import ERROR, WARN, check, refuse
from capacity_pipelines.defs.partitions import daily_partitions
from capacity_pipelines.defs.resources import (
    MetricSourceResource,
    PrometheusResource,
    WarehouseResource,
    configured_catalog,
)
from capacity_pipelines.defs.warehouse.assets import WRITES_WAREHOUSE
from capacity_pipelines.ingest.catalog import Catalog, CatalogError
from capacity_pipelines.ingest.quality import Verdict
from capacity_pipelines.ingest.sources.evaluate import UnsupportedQueryError
from capacity_pipelines.ingest.sources.openmetrics import ExportFormatError
from capacity_pipelines.ingest.sources.prometheus import PrometheusConfigError, SeriesLimitError
from capacity_pipelines.ingest.window import extract_and_check, write_window

EXTRACTION_RETRY = dg.RetryPolicy(
    max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
# Retrying cannot fix these: bad input, a bad catalog or URL, or a query whose answer is too large.
PERMANENT_ERRORS = (
    CatalogError,
    ExportFormatError,
    UnsupportedQueryError,
    SeriesLimitError,
    PrometheusConfigError,
)
CHECKS = {
    "completeness": (
        "Expected series and points per window; WARN on gaps or an empty answer.",
        False,
    ),
    "non_negative": ("No negative usage, rate, size or token count.", True),
    "freshness": ("The data reaches the end of the window.", False),
    "utilisation_readings": (
        "Usage against a limit of 0 or far above the limit is not a reading: counted per reason "
        "and never labelled a bottleneck; WARN when there are any.",
        False,
    ),
}


def _result(verdict: Verdict) -> dg.AssetCheckResult:
    severity = ERROR if verdict.severity == "error" else WARN
    return check(verdict.name, verdict.passed, verdict.description, severity, verdict.metadata)


def build_extraction_asset(catalog: Catalog, table_name: str) -> dg.AssetsDefinition:
    """A daily-partitioned asset that rewrites its window of one warehouse table."""
    table = catalog.table(table_name)
    key = dg.AssetKey(table_name)

    @dg.asset(
        name=table_name,
        description=f"{table.description}\n\nExtracted from Prometheus, an export or the demo "
        "fleet; each run rewrites its days with delete-then-insert in one transaction, after "
        "its checks passed.",
        group_name="ingest",
        kinds={"duckdb", "prometheus"},
        owners=["team:sre"],
        tags=WRITES_WAREHOUSE,
        partitions_def=daily_partitions(),
        backfill_policy=dg.BackfillPolicy.single_run(),
        retry_policy=EXTRACTION_RETRY,
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
        prometheus: PrometheusResource,
    ):
        window = context.partition_time_window
        try:
            checked = extract_and_check(
                metrics.source(prometheus), catalog, table_name, window.start, window.end
            )
        except PERMANENT_ERRORS as exc:
            # Bad input or bad data does not get better by retrying: fail at once, clearly.
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        results = [_result(v) for v in checked.verdicts]
        if checked.blocking_failures:
            what = f"{table_name} [{window.start:%Y-%m-%d}, {window.end:%Y-%m-%d})"
            yield from refuse(results, what)
        rows = write_window(checked, catalog, warehouse.path, warehouse.lock_wait_s)
        frame = checked.extracted.frame
        yield dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "series": checked.extracted.series_count,
                "window": f"{window.start:%Y-%m-%d} .. {window.end:%Y-%m-%d}",
                "first_ts": str(frame["ts"].min()) if frame.height else "",
                "last_ts": str(frame["ts"].max()) if frame.height else "",
                "source": checked.extracted.source,
                "preview": dg.MetadataValue.md(markdown_table(frame, 8)),
            },
            check_results=results,
        )

    return extraction


@dg.definitions
def ingest_assets() -> dg.Definitions:
    catalog = configured_catalog()
    return dg.Definitions(
        assets=[build_extraction_asset(catalog, name) for name in catalog.tables]
    )

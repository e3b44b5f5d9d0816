"""Report assets: what the pipeline publishes for people."""

from datetime import timedelta
from pathlib import Path
from typing import Literal

import dagster as dg
import polars as pl

from capacity_pipelines import reporting
from capacity_pipelines import warehouse as wh
from capacity_pipelines.common.charts import markdown_image
from capacity_pipelines.common.formatting import markdown_table
from capacity_pipelines.common.utilisation import NO_CAPACITY
from capacity_pipelines.defs.partitions import weekly_partitions
from capacity_pipelines.defs.resources import (
    ReportsResource,
    WarehouseResource,
    configured_catalog,
)
from capacity_pipelines.ingest.catalog import Catalog
from capacity_pipelines.ingest.coverage import (
    table_coverage,
    utilisation_readings,
    write_data_quality_report,
)
from capacity_pipelines.reporting.render import summary_markdown
from capacity_pipelines.reporting.webhook import deliver_report, report_link
from capacity_pipelines.reporting.weeks import ReportWeek
from capacity_pipelines.tokens.report import engine_spend_forecast


class WeeklyReportConfig(dg.Config):
    """How the weekly report projects LLM spend: the forecasting engine (backtested, default)
    or the token report's linear trend (seconds instead of tens of seconds; tests use it)."""

    spend_forecaster: Literal["engine", "linear"] = "engine"


def build_report_assets(catalog: Catalog) -> list[dg.AssetsDefinition]:
    """The report assets, reading coverage with the catalog the extraction assets were built
    from (fixed when the definitions load)."""

    @dg.asset(
        description="Coverage and freshness of every warehouse table, published as Markdown and "
        "JSON to reports/latest/ so a planner sees at a glance whether the numbers can be trusted, "
        "with the usage rows the bottleneck labels skip (limit 0 or absent, usage far above it). "
        "Not partitioned: it always describes the latest snapshot.",
        group_name="reports",
        kinds={"duckdb", "markdown"},
        owners=["team:capacity"],
        deps=["warehouse_snapshot"],
    )
    def data_quality_report(
        warehouse: WarehouseResource, reports: ReportsResource
    ) -> dg.MaterializeResult:
        with wh.reader(warehouse.snapshot_path) as con:
            coverage = table_coverage(con, catalog)
            readings = utilisation_readings(con, catalog)
        written = write_data_quality_report(
            coverage, reports.latest_dir, source=str(warehouse.snapshot_path), readings=readings
        )
        return dg.MaterializeResult(
            metadata={
                "report": dg.MetadataValue.path(str(written[0])),
                "coverage": dg.MetadataValue.md(markdown_table(coverage, rows=20)),
                "min_coverage": round(float(coverage["mean_coverage"].min()), 4)
                if coverage.height
                else 0.0,
                # Containers without a limit are normal; zero limits and impossible usage not.
                "usage_rows_bad_readings": int(
                    readings.filter(pl.col("reason") != NO_CAPACITY)["rows"].sum()
                ),
            }
        )


    @dg.asset(
        description="The weekly capacity report for planners: executive summary, runway with "
        "forecast charts, bottleneck outlook, rightsizing, LLM cost by agent and model with "
        "forecast, top recommendations and data quality. One self-contained HTML file (works "
        "offline) plus Markdown, JSON and CSV in reports/<ISO week>/ and reports/latest/; the "
        "summary goes to the reports resource's webhook ($CAPACITY_REPORT_WEBHOOK_URL) when set.",
        group_name="reports",
        kinds={"duckdb", "html"},
        owners=["team:capacity"],
        partitions_def=weekly_partitions(),
        # The snapshot waits for every warehouse writer (definitions.py), so it is the one input.
        deps=["warehouse_snapshot"],
        # Due every Monday: stale once a week and a day have gone by without a new report.
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(days=8), warn_window=timedelta(days=7, hours=6)
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "all_sections_available",
                asset="weekly_capacity_report",
                description="WARN when a section could not be built (its table missing or empty).",
            ),
            dg.AssetCheckSpec(
                "summary_delivered",
                asset="weekly_capacity_report",
                description="WARN when the webhook is configured and delivery failed.",
            ),
        ],
    )
    def weekly_capacity_report(
        context: dg.AssetExecutionContext,
        config: WeeklyReportConfig,
        warehouse: WarehouseResource,
        reports: ReportsResource,
    ) -> dg.MaterializeResult:
        week = ReportWeek.from_partition_key(context.partition_key)
        forecaster = engine_spend_forecast if config.spend_forecaster == "engine" else None
        with wh.reader(warehouse.snapshot_path) as con:
            report = reporting.gather_report(
                con,
                week,
                source=str(warehouse.snapshot_path),
                catalog=catalog,
                **({"forecaster": forecaster} if forecaster else {}),
            )
        published = reporting.publish_report(report, Path(reports.reports_dir))
        summary = report.sections[0]
        if published.latest_html is None:
            # A backfill of an older week must not post last month's numbers to the channel.
            delivered, delivery_note = True, "not sent: a newer week's report is already the latest"
        else:
            delivered, delivery_note = deliver_report(
                report.summary["headline"],
                summary.bullets,
                report_link(week.label, str(published.html), reports.public_base_url),
                webhook_url=reports.webhook_url,
            )
        if not delivered:
            context.log.warning(delivery_note)
        missing = report.summary["sections_unavailable"]
        return dg.MaterializeResult(
            metadata=report_metadata(report, published, delivery_note),
            check_results=[
                dg.AssetCheckResult(
                    check_name="all_sections_available",
                    passed=not missing,
                    severity=dg.AssetCheckSeverity.WARN,
                    description="; ".join(f"{k}: {v}" for k, v in missing.items())
                    or "every section built",
                ),
                dg.AssetCheckResult(
                    check_name="summary_delivered",
                    passed=delivered,
                    severity=dg.AssetCheckSeverity.WARN,
                    description=delivery_note,
                ),
            ],
        )

    return [data_quality_report, weekly_capacity_report]


@dg.definitions
def report_assets() -> dg.Definitions:
    return dg.Definitions(assets=build_report_assets(configured_catalog()))


def report_metadata(
    report: reporting.WeeklyReport, published: reporting.PublishedReport, delivery: str
) -> dict:
    """What a planner wants to see on the asset page: where, the summary, a chart, the numbers."""
    chart = next(
        (c for s in report.sections for c in s.charts if c.png is not None and not s.unavailable),
        None,
    )
    summary = report.summary
    return {
        "path": dg.MetadataValue.path(str(published.html)),
        "week": report.week.label,
        "latest": dg.MetadataValue.path(str(published.latest_html or "(a newer week holds it)")),
        "summary": dg.MetadataValue.md(summary_markdown(report)),
        "chart": dg.MetadataValue.md(markdown_image(chart.png, chart.title) if chart else "(none)"),
        # rounded to the cent: the UI shows the number as it is stored
        "llm_spend_usd": round(float(summary["llm_spend_usd"] or 0.0), 2),
        "savings_measured_usd_month": round(float(summary["savings_measured_usd_month"] or 0), 2),
        "savings_estimated_usd_month": round(
            float(summary["savings_estimated_usd_month"] or 0), 2
        ),
        "services_at_risk": len(summary["services_at_risk"]),
        "sections_unavailable": len(summary["sections_unavailable"]),
        "delivery": delivery,
    }

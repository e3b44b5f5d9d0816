"""The data quality section: coverage, gaps and stale sources behind this week's numbers.

One module per section; it checks the extracted tables the catalog declares and the derived
tables every other section reads, so a reader knows which numbers to trust less.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import polars as pl

from capacity_pipelines.bottlenecks.tables import BOTTLENECK_TABLE
from capacity_pipelines.common.utilisation import NO_CAPACITY
from capacity_pipelines.forecasting.fleet import BACKTEST_TABLE, FORECAST_TABLE, RUNWAY_TABLE
from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.coverage import table_coverage, utilisation_readings
from capacity_pipelines.recommendations.tables import RECOMMENDATIONS_TABLE
from capacity_pipelines.reporting.model import ReportTable, Section
from capacity_pipelines.reporting.sections.reads import ReportWindow
from capacity_pipelines.reporting.sections.text import utc_day
from capacity_pipelines.rightsizing.tables import RIGHTSIZING_TABLE

STALE_AFTER = timedelta(days=1)  # extraction is daily: a day behind the week's end is stale
LOW_COVERAGE = 0.95  # below this share of expected points a table has gaps worth a look
# The derived tables the other sections read, in the order the report lists them.
DERIVED_TABLES = (
    RUNWAY_TABLE.name,
    FORECAST_TABLE.name,
    BACKTEST_TABLE.name,
    RIGHTSIZING_TABLE.name,
    BOTTLENECK_TABLE.name,
    RECOMMENDATIONS_TABLE.name,
)


def data_quality_section(window: ReportWindow) -> Section:
    """Coverage, gaps and stale sources behind this week's numbers."""
    section = Section("data-quality", "Data quality")
    catalog = window.catalog or load_catalog()
    missing = [t for t in catalog.tables if window.table_status(t)]
    present = replace(catalog, tables={k: v for k, v in catalog.tables.items() if k not in missing})
    coverage = table_coverage(window.con, present) if present.tables else pl.DataFrame()
    rows = []
    for row in coverage.iter_rows(named=True):
        problems = []
        if row["last_point"] is None or row["last_point"] < window.end - STALE_AFTER:
            problems.append(f"stale: last point {utc_day(row['last_point'])}")
        if row["mean_coverage"] < LOW_COVERAGE:
            problems.append(
                f"gaps: {row['mean_coverage']:.1%} of expected points while the series existed"
            )
        churn = (
            f"pod churn: {row['churned_series']:,} of {row['entities']:,} series started or "
            f"stopped within {row['first_point']:%d %b} – {row['last_point']:%d %b} (expected "
            "points counted while each existed)"
            if row.get("churned_series") and row.get("span_coverage", 1.0) < LOW_COVERAGE
            else ""
        )
        rows.append(
            {
                "problem": bool(problems),
                "table": row["table"],
                "rows": f"{row['rows']:,}",
                "series": f"{row['entities']:,}",
                "first point": utc_day(row["first_point"]),
                "last point": utc_day(row["last_point"]),
                "coverage": f"{row['mean_coverage']:.1%}",
                "status": "; ".join(problems + ([churn] if churn else []))
                or "ok",
            }
        )
    for name in missing:
        rows.append(
            {
                "table": name,
                "rows": "0",
                "series": "0",
                "first point": "",
                "last point": "",
                "coverage": "",
                "status": window.table_status(name),
            }
        )
    columns = ("table", "rows", "series", "first point", "last point", "coverage", "status")
    display = pl.DataFrame(
        [{c: r[c] for c in columns} for r in rows], schema={c: pl.Utf8 for c in columns}
    )
    section.tables.append(ReportTable("data_quality", "Extracted tables", display, coverage))
    derived = []
    for table in DERIVED_TABLES:
        why = window.table_status(table)
        as_of = None if why else window.as_of(table)
        if why is None and as_of is None:
            why = f"no as-of day at or before {utc_day(window.end)}"
        elif as_of is not None and as_of < window.end - STALE_AFTER:
            why = f"stale: computed {(window.end - as_of).days} days before the week's end"
        derived.append({"table": table, "as_of used": utc_day(as_of), "status": why or "ok"})
    used = pl.DataFrame(derived, schema={c: pl.Utf8 for c in ("table", "as_of used", "status")})
    section.tables.append(ReportTable("derived_tables", "Derived tables used", used, used))
    # Usage the bottleneck labels skip this week: a zero limit or impossible usage is a problem
    # upstream; a container without a limit is how many teams run, shown but not flagged.
    readings = utilisation_readings(window.con, present, window.start, window.end)
    if readings.height:
        # Resource first: the extracted-tables table above is the one keyed by table name.
        shown = readings.select(
            "resource",
            "meaning",
            pl.col("rows").map_elements(lambda n: f"{n:,}", return_dtype=pl.Utf8),
            "table",
        )
        section.tables.append(ReportTable(
            "utilisation_readings", "Usage against a limit that is not a reading (not labelled)",
            shown, readings,
        ))
    bad_readings = [
        {"table": r["table"], "status": f"{r['rows']:,} rows: {r['meaning']}", "problem": True}
        for r in readings.filter(pl.col("reason") != NO_CAPACITY).iter_rows(named=True)
    ]
    # pod churn is how Kubernetes works, not a problem to attend to
    problems = [r for r in rows + derived + bad_readings if r.get("problem", r["status"] != "ok")]
    section.facts = {"problems": [f"{r['table']}: {r['status']}" for r in problems]}
    section.bullets.append(
        f"{len(rows)} extracted and {len(derived)} derived tables checked; "
        + (f"{len(problems)} need attention." if problems else "all complete and fresh.")
    )
    return section

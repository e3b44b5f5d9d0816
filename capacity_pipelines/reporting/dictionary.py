"""The warehouse data dictionary: extracted tables from the catalog, derived tables from their
writers' `DerivedTable` documentation, so analysts find every table in one generated page."""

from __future__ import annotations

import importlib

import duckdb

from capacity_pipelines import warehouse
from capacity_pipelines.ingest.catalog import Catalog
from capacity_pipelines.ingest.tables import ensure_schema
from capacity_pipelines.recommendations.tables import ensure_decisions_table
from capacity_pipelines.warehouse import DerivedTable

# Where each derived table is documented (module, constant). Imported lazily: the forecasting
# module pulls in statsmodels and LightGBM, which `capacity dictionary` should not pay for twice.
DERIVED_TABLES = (
    ("capacity_pipelines.tokens.fleet", "TOKEN_COST_TABLE"),
    ("capacity_pipelines.forecasting.fleet", "FORECAST_TABLE"),
    ("capacity_pipelines.forecasting.fleet", "RUNWAY_TABLE"),
    ("capacity_pipelines.forecasting.fleet", "BACKTEST_TABLE"),
    ("capacity_pipelines.rightsizing.tables", "RIGHTSIZING_TABLE"),
    ("capacity_pipelines.bottlenecks.tables", "BOTTLENECK_TABLE"),
    ("capacity_pipelines.bottlenecks.tables", "BOTTLENECK_BACKTEST_TABLE"),
    ("capacity_pipelines.recommendations.tables", "RECOMMENDATIONS_TABLE"),
    ("capacity_pipelines.recommendations.tables", "OUTCOMES_TABLE"),
    ("capacity_pipelines.anomalies.fleet", "ANOMALY_TABLE"),
)


def derived_tables() -> list[DerivedTable]:
    """Every table the pipeline computes, in the order of `DERIVED_TABLES`."""
    return [getattr(importlib.import_module(module), name) for module, name in DERIVED_TABLES]


def derived_section(tables: list[DerivedTable]) -> str:
    """Markdown for derived tables; their column types follow the writer's frame, so the page
    gives meanings (analysts see the types with `DESCRIBE <table>`)."""
    lines = [
        "# Derived tables",
        "",
        "Written by the pipeline's assets (one `as_of` per run, replaced atomically on re-run).",
        "",
    ]
    for table in sorted(tables, key=lambda t: t.name):
        lines += [f"## `{table.name}`", "", table.description.strip(), ""]
        lines += ["| column | meaning |", "|---|---|"]
        lines += [f"| `{c}` | {doc.replace('|', '/')} |" for c, doc in table.columns.items()]
        lines.append("")
    return "\n".join(lines)


def warehouse_dictionary(catalog: Catalog) -> str:
    """The whole data dictionary (what `capacity dictionary` writes to docs/warehouse.md)."""
    con = duckdb.connect(":memory:")
    try:
        ensure_schema(con, catalog)
        # SRE review decisions are user data with a fixed schema: listed with their types.
        ensure_decisions_table(con)
        extracted = warehouse.data_dictionary(con)
    finally:
        con.close()
    return extracted + "\n" + derived_section(derived_tables()) + "\n"

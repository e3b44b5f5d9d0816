"""The extracted tables in the warehouse: DDL and documentation from the catalog, and the
atomic rewrite of one window with its extraction-log row."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import duckdb
import polars as pl

from capacity_pipelines.ingest.catalog import WORKLOAD_KIND, Catalog, TableSpec
from capacity_pipelines.ingest.extract import series_count
from capacity_pipelines.warehouse import (
    delete_then_insert,
    document,
    naive_utc,
    quote_identifier,
)

EXTRACTION_LOG = "extraction_log"
SCHEMA_VERSION = "schema_version"
# Extracted tables that other domains query by name (recommendations, the weekly report). The
# catalog declares every extracted table; these two are named here so a reader imports the name
# instead of retyping it (tests/test_catalog.py checks the catalog still declares them).
CONTAINER_USAGE_TABLE = "container_usage"
SERVICE_TRAFFIC_TABLE = "service_traffic"
WORKLOAD_REPLICAS_TABLE = "workload_replicas"
LLM_TOKEN_USAGE_TABLE = "llm_token_usage"


def table_ddl(table: TableSpec) -> str:
    """CREATE TABLE for one catalog table: entity labels, ts, typed value columns."""
    cols = [f"{quote_identifier(k)} VARCHAR NOT NULL" for k in table.key]
    cols += [f"{quote_identifier(c)} VARCHAR" for c in table.label_columns]
    cols.append('"ts" TIMESTAMP NOT NULL')
    cols += [f"{quote_identifier(c)} DOUBLE" for c in table.value_columns]
    return (
        f"CREATE TABLE IF NOT EXISTS {quote_identifier(table.name)} (\n  "
        + ",\n  ".join(cols)
        + "\n)"
    )


_LOG_DOCS = {
    "table_name": "Warehouse table that was written.",
    "window_start": "UTC start of the rewritten window (inclusive).",
    "window_end": "UTC end of the rewritten window (exclusive).",
    "source": "Where the rows came from (Prometheus URL, export files or the demo fleet).",
    "row_count": "Rows written for the window.",
    "series_count": "Distinct entities (series) written for the window.",
    "expected_points": "Evaluation steps in the window: the points a complete series has.",
    "written_at": "UTC time of the write.",
}
_KEY_DOCS = {
    "cluster": "Kubernetes cluster (the catalog's default when series carry no cluster label).",
    "namespace": "Kubernetes namespace.",
    "workload": "Workload (Deployment, StatefulSet, DaemonSet, ...). Per pod: named by "
    "kube-state-metrics owner series where the pod has them, else derived from the pod name.",
    "pod": "Pod name; pods that no longer exist keep their history.",
    "container": "Container name within the pod.",
    "service": "Service name.",
    "provider": "LLM provider (OTel gen_ai.provider.name, or the older gen_ai.system).",
    "model": "LLM model as requested (OTel gen_ai.request.model).",
    "agent": "Agent name (OTel gen_ai.agent.name); empty when not reported.",
}
_LABEL_DOCS = {
    WORKLOAD_KIND: "Kind of the workload from kube-state-metrics owner series (kube_pod_owner, "
    "kube_replicaset_owner): Deployment, StatefulSet, DaemonSet, Job, ReplicaSet (one without "
    "owner), Pod (a pod without owner, or a static pod) or another controller's kind; NULL "
    "when the pod has no owner series (its workload then comes from the pod name).",
}


def schema_fingerprint(catalog: Catalog) -> str:
    """Hash of everything `ensure_schema` would write for this catalog."""
    parts = [
        SCHEMA_VERSION,
        repr(sorted(_LOG_DOCS.items())),
        repr(sorted(_KEY_DOCS.items())),
        repr(sorted(_LABEL_DOCS.items())),
    ]
    for table in catalog.tables.values():
        parts.append(table_ddl(table) + table.description)
        parts += [f"{q.column}|{q.description}|{q.unit}" for q in table.columns]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def ensure_schema(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> None:
    """Create missing tables and columns and (re)write their comments from the catalog.

    All in one transaction, and skipped when the stored fingerprint of the catalog's schema
    and documentation matches: every extraction calls this, most of them with nothing to do.
    """
    fingerprint = schema_fingerprint(catalog)
    try:
        stored = con.execute(f"SELECT fingerprint FROM {SCHEMA_VERSION}").fetchone()
    except duckdb.CatalogException:
        stored = None
    if stored and stored[0] == fingerprint:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        _ensure_schema(con, catalog)
        con.execute(f"CREATE OR REPLACE TABLE {SCHEMA_VERSION} (fingerprint VARCHAR NOT NULL)")
        con.execute(
            f"COMMENT ON TABLE {SCHEMA_VERSION} IS 'Fingerprint of the metric catalog the "
            "tables and their documentation were last built from.'"
        )
        con.execute(
            f"COMMENT ON COLUMN {SCHEMA_VERSION}.fingerprint IS 'SHA-256 of the DDL and comments.'"
        )
        con.execute(f"INSERT INTO {SCHEMA_VERSION} VALUES (?)", [fingerprint])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _ensure_schema(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> None:
    con.execute(
        f"""CREATE TABLE IF NOT EXISTS {EXTRACTION_LOG} (
            table_name VARCHAR NOT NULL, window_start TIMESTAMP NOT NULL,
            window_end TIMESTAMP NOT NULL, source VARCHAR NOT NULL, row_count BIGINT NOT NULL,
            series_count BIGINT NOT NULL, expected_points BIGINT NOT NULL,
            written_at TIMESTAMP NOT NULL)"""
    )
    document(
        con,
        EXTRACTION_LOG,
        "One row per table and window written by an extraction: what was written, from which "
        "source, when.",
        _LOG_DOCS,
    )
    for table in catalog.tables.values():
        con.execute(table_ddl(table))
        existing = {
            row[0]
            for row in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table.name]
            ).fetchall()
        }
        name = quote_identifier(table.name)
        # Rows written before a column existed read NULL: unknown, as they were.
        for column in table.label_columns:
            if column not in existing:
                con.execute(f"ALTER TABLE {name} ADD COLUMN {quote_identifier(column)} VARCHAR")
        for column in table.value_columns:
            if column not in existing:
                con.execute(f"ALTER TABLE {name} ADD COLUMN {quote_identifier(column)} DOUBLE")
        columns = {key: _KEY_DOCS.get(key, f"Entity label {key}.") for key in table.key}
        columns.update({label: _LABEL_DOCS[label] for label in table.label_columns})
        columns["ts"] = "UTC end of the step the row summarises."
        for query in table.columns:
            columns[query.column] = f"{query.description} Unit: {query.unit}.".strip()
        document(con, table.name, table.description, columns)


def replace_window(
    con: duckdb.DuckDBPyConnection,
    table: TableSpec,
    start: datetime,
    end: datetime,
    frame: pl.DataFrame,
    source: str,
    expected_points: int,
) -> int:
    """Atomically replace the rows of `[start, end)` with `frame`; returns rows written."""
    start, end = naive_utc(start), naive_utc(end)
    series = series_count(frame, table.key)
    con.execute("BEGIN TRANSACTION")
    try:
        delete_then_insert(con, table.name, table.all_columns, start, end, frame)
        con.execute(
            f"DELETE FROM {EXTRACTION_LOG} WHERE table_name = ? AND window_start = ? "
            "AND window_end = ?",
            [table.name, start, end],
        )
        con.execute(
            f"INSERT INTO {EXTRACTION_LOG} (table_name, window_start, window_end, source, "
            "row_count, series_count, expected_points, written_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                table.name,
                start,
                end,
                source,
                frame.height,
                series,
                expected_points,
                datetime.now(UTC).replace(tzinfo=None),
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return frame.height

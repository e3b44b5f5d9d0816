"""The DuckDB warehouse: sessions (readers on the live file, writers on a draft swapped in),
documented tables written by delete-window-then-insert, and copies for people (the analysts'
snapshot, backups). Knows nothing of metrics or domains: the stages bring their own tables.
"""

from capacity_pipelines.warehouse.sessions import (
    WarehouseBusyError,
    WarehouseCorruptError,
    connect,
    holder,
    reader,
    verify,
    writer,
)
from capacity_pipelines.warehouse.snapshot import (
    RestoreError,
    backup,
    publish_snapshot,
    read_manifest,
    restore,
)
from capacity_pipelines.warehouse.tables import (
    DerivedTable,
    data_dictionary,
    delete_then_insert,
    document,
    naive_utc,
    quote_identifier,
    read_window,
    replace_as_of,
    replace_derived_window,
    sql_literal,
    table_exists,
)

__all__ = [
    "DerivedTable",
    "RestoreError",
    "WarehouseBusyError",
    "WarehouseCorruptError",
    "backup",
    "connect",
    "data_dictionary",
    "delete_then_insert",
    "document",
    "holder",
    "naive_utc",
    "publish_snapshot",
    "quote_identifier",
    "read_manifest",
    "read_window",
    "reader",
    "replace_as_of",
    "replace_derived_window",
    "restore",
    "sql_literal",
    "table_exists",
    "verify",
    "writer",
]

"""The analysts' snapshot: a consistent read-only copy published after the run's writes.

Which assets it waits for is not listed here: every asset that writes the warehouse carries
the `WRITES_WAREHOUSE` tag, and `definitions.py` builds the snapshot with each of them upstream,
so a new writer cannot be forgotten (tests/test_definitions.py checks the writes against it).
"""

from collections.abc import Sequence

import dagster as dg

from capacity_pipelines import warehouse as wh
from capacity_pipelines.defs.resources import WarehouseResource

WRITES_WAREHOUSE = {"capacity/writes": "warehouse"}
SNAPSHOT = dg.AssetKey("warehouse_snapshot")


def warehouse_snapshot(warehouse: WarehouseResource) -> dg.MaterializeResult:
    snapshot = warehouse.publish_snapshot()
    with wh.reader(snapshot) as con:
        tables = con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "ORDER BY table_name"
        ).fetchall()
        counts = {
            name: con.execute(f"SELECT count(*) FROM {wh.quote_identifier(name)}").fetchone()[0]
            for (name,) in tables
        }
        dictionary = wh.data_dictionary(con)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(snapshot)),
            **{f"rows/{name}": int(n) for name, n in counts.items()},
            "data_dictionary": dg.MetadataValue.md(dictionary),
        }
    )


def build_snapshot_asset(writers: Sequence[dg.AssetKey]) -> dg.AssetsDefinition:
    """The snapshot asset, downstream of every warehouse writer."""
    return dg.asset(
        key=SNAPSHOT,
        description="Consistent read-only copy of the warehouse (and the SRE decisions) for "
        "analysts and notebooks, replaced atomically after each run's writes so a long query "
        "never blocks a run and a run never breaks a query. Not partitioned: it is always the "
        "latest state (the metadata says which days it holds).",
        group_name="warehouse",
        kinds={"duckdb"},
        owners=["team:sre"],
        deps=list(writers),
    )(warehouse_snapshot)

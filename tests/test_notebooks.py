"""The analyst notebooks run top to bottom on a real snapshot."""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient

from capacity_pipelines.common.paths import REPO_ROOT
from capacity_pipelines.forecasting.fleet import BACKTEST_TABLE
from capacity_pipelines.ingest.catalog import load_catalog
from capacity_pipelines.ingest.sources import FileSource
from capacity_pipelines.ingest.window import ingest_window
from capacity_pipelines.tokens.fleet import TOKEN_COST_TABLE
from capacity_pipelines.warehouse import connect, publish_snapshot, replace_derived_window
from tests.synthetic_fleet import write_container_fleet

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nb")
    export = root / "fleet.om"
    start = datetime(2026, 9, 28, tzinfo=UTC)
    write_container_fleet(export, 4, int(start.timestamp()), 2, 300)
    db = root / "wh.duckdb"
    ingest_window(
        FileSource([export]),
        load_catalog(),
        "container_usage",
        start,
        datetime(2026, 9, 30, tzinfo=UTC),
        db,
    )
    _derived_tables(db, start)
    return publish_snapshot(db, root / "snapshot.duckdb")


def _derived_tables(db: Path, start: datetime) -> None:
    """A backtest and two days of costed LLM usage, written the way the assets write them."""
    as_of = start + timedelta(days=2)
    backtest = pl.DataFrame(
        {
            "as_of": [as_of] * 2,
            "series_id": ["workload_cpu:agents/router", "llm_tokens:openai/gpt-4o/planner"],
            "family": ["workload_cpu", "llm_tokens"],
            "mase_engine": [0.6, 0.4],
            "mase_seasonal_naive": [1.1, 1.3],
            "coverage_p90": [0.88, 0.93],
        }
    )
    steps = [start + timedelta(minutes=5 * i) for i in range(1, 2 * 288 + 1)]
    costs = pl.DataFrame({"ts": steps}).join(
        pl.DataFrame({"agent": ["planner", "coder"], "usd": [0.02, 0.01]}), how="cross"
    )
    costs = costs.select(
        pl.lit("demo").alias("cluster"),
        pl.lit("agents").alias("service"),
        pl.lit("openai").alias("provider"),
        pl.lit("gpt-4o").alias("model"),
        "agent",
        "ts",
        pl.lit(5000.0).alias("input_tokens"),
        pl.lit(500.0).alias("output_tokens"),
        pl.lit(2000.0).alias("cache_read_input_tokens"),
        pl.lit(0.0).alias("cache_write_input_tokens"),
        pl.lit(3.0).alias("requests"),
        pl.col("usd").alias("cost_input_usd"),
        pl.lit(0.0).alias("cost_cache_read_usd"),
        pl.lit(0.0).alias("cost_cache_write_usd"),
        pl.lit(0.0).alias("cost_output_usd"),
        pl.lit(0.0).alias("discount_pct"),
        pl.col("usd").alias("cost_usd"),
        pl.lit("openai/gpt-4o").alias("price_id"),
        pl.lit(False).alias("unpriced"),
    )
    with connect(db) as con:
        replace_derived_window(
            con, BACKTEST_TABLE, as_of, as_of + timedelta(microseconds=1), backtest, "as_of"
        )
        replace_derived_window(con, TOKEN_COST_TABLE, start, as_of, costs, "ts")


# What each notebook must print from the snapshot (not only run without an error).
EXPECTED = {
    "explore_warehouse.ipynb": ["container_usage"],
    "forecast_accuracy_and_costs.ipynb": [
        "forecast_backtest as of 2026-09-30",
        "llm_token_cost: 1152 rows",
        "unpriced rows: 0",
        "cache_hit_ratio",
    ],
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, snapshot: Path, monkeypatch):
    monkeypatch.setenv("CAPACITY_SNAPSHOT", str(snapshot))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute(env={**os.environ})
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(
        str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs
    )
    for expected in EXPECTED[path.name]:
        assert expected in text, expected

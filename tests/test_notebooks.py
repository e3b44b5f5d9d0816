"""The analyst notebooks run top to bottom on a real snapshot."""

import os
from datetime import UTC, datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from capacity_pipelines.catalog import load_catalog
from capacity_pipelines.ingest import ingest_window
from capacity_pipelines.paths import REPO_ROOT
from capacity_pipelines.sources import FileSource
from capacity_pipelines.warehouse import publish_snapshot
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
    return publish_snapshot(db, root / "snapshot.duckdb")


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
    assert "container_usage" in text

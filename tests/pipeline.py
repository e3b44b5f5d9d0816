"""Resources for running the real asset graph in tests against a temporary home."""

from pathlib import Path

from capacity_pipelines.defs.resources import (
    AlertmanagerResource,
    ComputeResource,
    MetricSourceResource,
    PrometheusResource,
    ReportsResource,
    WarehouseResource,
)


def pipeline_resources(root: Path, export_files: list[Path]) -> dict:
    """Warehouse, snapshot, parse cache and reports under `root`, metrics from export files."""
    return {
        "warehouse": WarehouseResource(
            path=str(root / "wh.duckdb"), snapshot_path=str(root / "snap.duckdb")
        ),
        "metrics": MetricSourceResource(
            export_files=[str(p) for p in export_files], cache_dir=str(root)
        ),
        "reports": ReportsResource(reports_dir=str(root / "reports")),
        "prometheus": PrometheusResource(),  # no URL: the export files are the source
        "compute": ComputeResource(workers=2),
        "alertmanager": AlertmanagerResource(),  # no URL: rules written, nothing posted
    }

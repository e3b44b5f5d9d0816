"""What people read and apply: the ranked table, CSV / JSON exports, GitOps patches.

Patches are strategic-merge patches (`kubectl patch --type strategic`), one YAML per workload,
holding only the fields that change: containers merge by `name`, so a patch that names one
container and one resource leaves everything else in the pod template alone. A CPU limit that
the policy removes is written as `cpu: null`, which a strategic merge patch deletes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import yaml

from capacity_pipelines.rightsizing.quantities import format_cpu, format_memory

TABLE_COLUMNS = (
    "rank",
    "container_id",
    "kind",
    "current",
    "recommended",
    "confidence",
    "monthly_saving_usd",
    "rationale",
)


def _pair(cpu: str | None, memory: str | None) -> str:
    return f"{cpu or '-'} / {memory or '-'}"


def ranked_table(recommendations: pl.DataFrame) -> pl.DataFrame:
    """One readable row per container: current vs recommended requests, confidence, $, why."""
    rows = []
    for row in recommendations.iter_rows(named=True):
        rows.append(
            {
                "rank": row["rank"],
                "container_id": row["container_id"],
                "kind": row["kind"],
                "current": _pair(
                    format_cpu(row["current_cpu_request"]),
                    format_memory(row["current_memory_request"]),
                ),
                "recommended": _pair(row["cpu_request_quantity"], row["memory_request_quantity"]),
                "confidence": row["confidence"],
                "monthly_saving_usd": row["monthly_saving_usd"],
                "rationale": row["rationale"],
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "rank": pl.Int64,
            "container_id": pl.String,
            "kind": pl.String,
            "current": pl.String,
            "recommended": pl.String,
            "confidence": pl.Float64,
            "monthly_saving_usd": pl.Float64,
            "rationale": pl.String,
        },
    )


def markdown_table(recommendations: pl.DataFrame, top: int | None = None) -> str:
    """The ranked table as Markdown (for asset metadata and reports)."""
    table = ranked_table(recommendations if top is None else recommendations.head(top))
    lines = [
        "| # | container | kind | current (CPU / mem) | recommended | confidence | $/month saved "
        "| why |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in table.iter_rows(named=True):
        saving = row["monthly_saving_usd"]
        lines.append(
            f"| {row['rank']} | `{row['container_id']}` | {row['kind']} | {row['current']} "
            f"| {row['recommended']} | {row['confidence']:.2f} "
            f"| {'-' if saving is None else f'{saving:,.2f}'} "
            f"| {row['rationale'].replace('|', '/')} |"
        )
    return "\n".join(lines)


def _resources(row: dict) -> dict:
    """Only the request / limit fields whose Kubernetes quantity changes."""
    changes: dict[str, dict[str, str | None]] = {}
    pairs = (
        ("requests", "cpu", row["cpu_request_quantity"], format_cpu(row["current_cpu_request"])),
        (
            "requests",
            "memory",
            row["memory_request_quantity"],
            format_memory(row["current_memory_request"]),
        ),
        ("limits", "cpu", row["cpu_limit_quantity"], format_cpu(row["current_cpu_limit"])),
        (
            "limits",
            "memory",
            row["memory_limit_quantity"],
            format_memory(row["current_memory_limit"]),
        ),
    )
    for section, resource, new, old in pairs:
        if new != old and not (new is None and old is None):
            changes.setdefault(section, {})[resource] = new  # None deletes (strategic merge)
    return changes


def workload_patches(recommendations: pl.DataFrame) -> dict[str, str]:
    """`namespace/workload` -> strategic-merge patch YAML of its changed container resources.

    Containers without enough data, changes too small to be worth a rollout (`no_change`: less
    than 5 % of the cost, nothing sized up) and workloads with nothing to change get no patch.
    """
    patches: dict[str, list[dict]] = {}
    comments: dict[str, list[str]] = {}
    worth_applying = (pl.col("status") == "ok") & (pl.col("kind") != "no_change")
    for row in recommendations.filter(worth_applying).iter_rows(named=True):
        resources = _resources(row)
        if not resources:
            continue
        key = f"{row['namespace']}/{row['workload']}" if row["namespace"] else row["workload"]
        patches.setdefault(key, []).append({"name": row["container"], "resources": resources})
        saving = row["monthly_saving_usd"]
        comments.setdefault(key, []).append(
            f"# {row['container']}: confidence {row['confidence']:.2f}, "
            + (
                "saving not priced"
                if saving is None
                else f"${saving:,.2f}/month saved"
                if saving >= 0
                else f"costs ${-saving:,.2f}/month more"
            )
            + f"; {row['rationale']}"
        )
    out = {}
    for key, containers in sorted(patches.items()):
        namespace, _, workload = key.rpartition("/")
        command = (
            f"kubectl patch deployment {workload}"
            + (f" -n {namespace}" if namespace else "")
            + " --type strategic --patch-file <this file>"
        )
        body = {"spec": {"template": {"spec": {"containers": containers}}}}
        header = [f"# capacity rightsize: {key}", f"# apply after review: {command}"]
        out[key] = (
            "\n".join([*header, *comments[key]])
            + "\n"
            + yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
        )
    return out


def _file_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", key).strip("_") + ".yaml"


def write_exports(recommendations: pl.DataFrame, folder: Path) -> list[Path]:
    """CSV, JSON, the Markdown table and one patch per workload under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    csv = folder / "rightsizing.csv"
    recommendations.write_csv(csv)
    written.append(csv)
    as_json = folder / "rightsizing.json"
    as_json.write_text(json.dumps(recommendations.to_dicts(), indent=2, default=str) + "\n")
    written.append(as_json)
    table = folder / "rightsizing.md"
    table.write_text(markdown_table(recommendations) + "\n")
    written.append(table)
    patches = folder / "patches"
    patches.mkdir(exist_ok=True)
    for key, text in workload_patches(recommendations).items():
        path = patches / _file_name(key)
        path.write_text(text)
        written.append(path)
    return written

"""What people read and apply: the ranked table, CSV / JSON exports, GitOps patches.

Patches are strategic-merge patches (`kubectl patch --type strategic`), one YAML per workload,
holding only the fields that change: containers merge by `name`, so a patch that names one
container and one resource leaves everything else in the pod template alone. A CPU limit that
the policy removes is written as `cpu: null`, which a strategic merge patch deletes.

Labels are untrusted: a patch is made only for workloads whose names Kubernetes would accept
(`workloads.py`), its body comes from the YAML emitter and its comments from escaped text, the
CSV is safe to open in a spreadsheet and the Markdown table escapes every cell.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from capacity_pipelines.common.files import Content, publish_files
from capacity_pipelines.common.formatting import markdown_table, safe_text, spreadsheet_csv
from capacity_pipelines.rightsizing.quantities import format_cpu, format_memory
from capacity_pipelines.rightsizing.workloads import (
    DEFAULT_KIND,
    PATCHABLE_KINDS,
    Workload,
    label_problems,
    patch_file_name,
    shown,
)

EXPORTS_OWNER = "rightsizing"  # owner name in the folder's ownership manifest
PATCHES_FOLDER = "patches"
SCHEDULES_FOLDER = "schedules"  # with --schedule: in-place resize patches by hour
SCHEDULE_CSV = "schedule.csv"
# Everything an export writes in its folder (the rest of the folder is left alone).
EXPORT_NAMES = (
    "rightsizing.csv", "rightsizing.json", "rightsizing.md", PATCHES_FOLDER, SCHEDULE_CSV,
    SCHEDULES_FOLDER,
)  # fmt: skip

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


def ranked_markdown(recommendations: pl.DataFrame, top: int | None = None) -> str:
    """The ranked table as Markdown (the export, asset metadata); labels escaped."""
    table = ranked_table(recommendations if top is None else recommendations.head(top))
    display = table.select(
        pl.col("rank").alias("#"),
        pl.col("container_id").alias("container"),
        "kind",
        pl.col("current").alias("current (CPU / mem)"),
        "recommended",
        pl.col("confidence").map_elements(lambda v: f"{v:.2f}", return_dtype=pl.String),
        pl.col("monthly_saving_usd")
        .map_elements(lambda v: f"{v:,.2f}", return_dtype=pl.String)
        .fill_null("-")
        .alias("$/month saved"),
        pl.col("rationale").alias("why"),
    )
    return markdown_table(display, rows=None)


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


@dataclass(frozen=True)
class WorkloadPatch:
    """One workload's strategic-merge patch and the file name it is exported under."""

    workload: Workload
    file_name: str
    text: str


@dataclass(frozen=True)
class RefusedPatch:
    """A workload that would have had a patch but cannot get one, and why."""

    workload: str  # its labels, escaped for display
    reason: str


@dataclass(frozen=True)
class PatchSet:
    """The patches of a recommendation frame and the workloads refused one."""

    patches: list[WorkloadPatch]
    refused: list[RefusedPatch]

    def by_workload(self) -> dict[Workload, WorkloadPatch]:
        """Patches keyed by workload."""
        return {p.workload: p for p in self.patches}


def _saving_note(saving: float | None) -> str:
    if saving is None:
        return "saving not priced"
    return f"${saving:,.2f}/month saved" if saving >= 0 else f"costs ${-saving:,.2f}/month more"


def _patch_text(workload: Workload, kind_known: bool, rows: list[dict]) -> str:
    """Comment lines (each one line of escaped text) and the body from the YAML emitter."""
    command = (
        f"kubectl patch {PATCHABLE_KINDS[workload.kind]} {workload.name} -n {workload.namespace}"
        " --type strategic --patch-file <this file>"
    )
    comments = [f"capacity rightsize: {workload.kind} {workload.namespace}/{workload.name}"]
    if not kind_known:
        comments.append(
            f"workload kind unknown (no workload_kind in the recommendations): "
            f"assumed {DEFAULT_KIND}; check it before applying"
        )
    comments.append(f"apply after review: {command}")
    containers = []
    for row in sorted(rows, key=lambda r: r["container"]):
        containers.append({"name": row["container"], "resources": _resources(row)})
        comments.append(
            f"{row['container']}: confidence {row['confidence']:.2f}, "
            f"{_saving_note(row['monthly_saving_usd'])}; {row['rationale']}"
        )
    body = {"spec": {"template": {"spec": {"containers": containers}}}}
    # safe_text leaves no line break of any kind (YAML also breaks lines at NEL, LS and PS),
    # so no label can end a comment and start a line of YAML.
    return "".join(f"# {safe_text(c)}\n" for c in comments) + yaml.safe_dump(
        body, sort_keys=False, default_flow_style=False, allow_unicode=False
    )


def _patchable(
    groups: dict[tuple, list[dict]],
) -> tuple[list[tuple[Workload, bool, str, list[dict]]], list[RefusedPatch]]:
    """The workloads (namespace, name, kind) -> rows that may get a patch file, as (workload,
    kind known, file name, rows), and the refused ones with the reason: names Kubernetes would
    refuse, a kind `kubectl patch` cannot change in place, a container listed twice (one
    workload in several clusters), a file name already taken (only a hash collision)."""
    accepted: list[tuple[Workload, bool, str, list[dict]]] = []
    refused: list[RefusedPatch] = []
    files: dict[str, Workload] = {}
    for (namespace, name, kind), rows in sorted(groups.items(), key=lambda g: str(g[0])):
        kind_known = any(r.get("workload_kind") for r in rows)
        shown_as = safe_text(f"{namespace}/{name}" + (f" ({kind})" if kind_known else ""))
        problems = list(
            dict.fromkeys(p for r in rows for p in label_problems(namespace, name, r["container"]))
        )
        if kind not in PATCHABLE_KINDS:
            problems.append(
                f"kind {shown(kind)} is not one `kubectl patch` changes in place "
                f"({', '.join(PATCHABLE_KINDS)})"
            )
        containers = [r["container"] for r in rows]
        repeated = sorted({c for c in containers if containers.count(c) > 1})
        if repeated:  # the same workload in several clusters: one patch cannot hold both
            problems.append(f"container {shown(repeated[0])} is listed more than once")
        if problems:
            refused.append(RefusedPatch(shown_as, safe_text("; ".join(problems))))
            continue
        workload = Workload(namespace, name, kind)
        file_name = patch_file_name(workload)
        if file_name in files:  # only a hash collision could do this: refuse, never overwrite
            refused.append(
                RefusedPatch(shown_as, f"file {file_name} already holds {files[file_name].key}")
            )
            continue
        files[file_name] = workload
        accepted.append((workload, kind_known, file_name, rows))
    return accepted, refused


def workload_patches(recommendations: pl.DataFrame) -> PatchSet:
    """One strategic-merge patch of the changed container resources per workload.

    Containers without enough data, changes too small to be worth a rollout (`no_change`: less
    than 5 % of the cost, nothing sized up) and workloads with nothing to change get no patch.
    A workload whose namespace, name or any patched container is not a valid Kubernetes name, or
    whose kind `kubectl patch` cannot change in place, is refused (listed in `refused`), never
    written. The kind comes from `workload_kind` (a missing column or null: Deployment, and the
    patch says so).
    """
    groups: dict[tuple, list[dict]] = {}
    worth_applying = (pl.col("status") == "ok") & (pl.col("kind") != "no_change")
    for row in recommendations.filter(worth_applying).iter_rows(named=True):
        if not _resources(row):
            continue
        key = (row["namespace"], row["workload"], row.get("workload_kind") or DEFAULT_KIND)
        groups.setdefault(key, []).append(row)
    patches: list[WorkloadPatch] = []
    accepted, refused = _patchable(groups)
    for workload, kind_known, file_name, rows in accepted:
        text = _patch_text(workload, kind_known, rows)
        patches.append(WorkloadPatch(workload, file_name, text))
    return PatchSet(patches, refused)


def _resize_text(workload: Workload, title: str, rows: list[dict], requests: dict) -> str:
    """A pod `resize` patch: each container's CPU request (and limit, when it has one)."""
    resource = PATCHABLE_KINDS[workload.kind]
    selector = (
        f"$(kubectl get {resource} {workload.name} -n {workload.namespace} -o go-template="
        "'{{range $k, $v := .spec.selector.matchLabels}}{{$k}}={{$v}},{{end}}' | sed 's/,$//')"
    )
    comments = [
        f"capacity rightsize --schedule: {workload.kind} {workload.namespace}/{workload.name}: "
        f"{title}",
        "resizes the running pods in place (pod resize subresource, Kubernetes >= 1.33; CPU "
        "resizes restart nothing):",
        f'for pod in $(kubectl get pods -n {workload.namespace} -o name -l "{selector}"); do '
        f'kubectl patch "$pod" -n {workload.namespace} --subresource resize --type strategic '
        "--patch-file <this file>; done",
        "pods created later start at the template's request (patches/) until the next change; "
        "roll back with rollback.yaml the same way, and stop the daily runs",
    ]
    containers = []
    for row in sorted(rows, key=lambda r: r["container"]):
        request, limit = requests[row["container"]]
        resources: dict[str, dict[str, str]] = {"requests": {"cpu": request}}
        if limit is not None:
            resources["limits"] = {"cpu": limit}
        containers.append({"name": row["container"], "resources": resources})
        comments.append(f"{row['container']}: CPU request {request}")
    body = {"spec": {"containers": containers}}
    return "".join(f"# {safe_text(c)}\n" for c in comments) + yaml.safe_dump(
        body, sort_keys=False, default_flow_style=False, allow_unicode=False
    )


def schedule_patches(schedule: pl.DataFrame) -> PatchSet:
    """Per workload whose CPU requests change over the day: `<stem>/hour-HH.yaml` at each UTC
    hour where a container's request changes (patches/ naming, same refusals) and
    `<stem>/rollback.yaml`, which restores the current requests (containers without a known
    current request are left out of it and named in its comments)."""
    by_container: dict[str, list[dict]] = {}
    for row in schedule.filter(pl.col("status") == "ok").sort("hour_utc").iter_rows(named=True):
        by_container.setdefault(row["container_id"], []).append(row)
    groups: dict[tuple, list[dict]] = {}
    for rows in by_container.values():
        if len(rows) == 24 and len({r["cpu_request"] for r in rows}) > 1:
            first = rows[0]
            kind = first.get("workload_kind") or DEFAULT_KIND
            groups.setdefault((first["namespace"], first["workload"], kind), []).append(rows)
    accepted, refused = _patchable({k: [c[0] for c in v] for k, v in groups.items()})
    patches: list[WorkloadPatch] = []
    for workload, _, file_name, firsts in accepted:
        containers = groups[(workload.namespace, workload.name, workload.kind)]
        stem = file_name.removesuffix(".yaml")
        for hour in range(24):
            now = {c[hour]["container"]: (c[hour]["cpu_request_quantity"],
                                          c[hour]["cpu_limit_quantity"]) for c in containers}
            before = {c[hour - 1]["container"]: (c[hour - 1]["cpu_request_quantity"],
                                                 c[hour - 1]["cpu_limit_quantity"])
                      for c in containers}  # fmt: skip
            if now != before:
                text = _resize_text(workload, f"CPU requests from {hour:02d}:00 UTC", firsts, now)
                patches.append(WorkloadPatch(workload, f"{stem}/hour-{hour:02d}.yaml", text))
        known = [r for r in firsts if r["current_cpu_request"] is not None]
        back = {r["container"]: (format_cpu(r["current_cpu_request"]),
                                 format_cpu(r["current_cpu_limit"])) for r in known}  # fmt: skip
        title = "roll back to the current CPU requests"
        unknown = sorted(r["container"] for r in firsts if r["current_cpu_request"] is None)
        if unknown:
            title += f" (current request unknown, set by hand: {', '.join(unknown)})"
        if known:
            text = _resize_text(workload, title, known, back)
            patches.append(WorkloadPatch(workload, f"{stem}/rollback.yaml", text))
    return PatchSet(patches, refused)


@dataclass(frozen=True)
class RightsizingExports:
    """Everything `--exports` and `reports/latest/rightsizing/` hold, built before any write."""

    files: dict[str, Content]
    patches: PatchSet
    schedules: PatchSet | None = None


def build_exports(
    recommendations: pl.DataFrame, schedule: pl.DataFrame | None = None
) -> RightsizingExports:
    """CSV (for spreadsheets), JSON (raw values), the Markdown table, one patch per workload;
    with a schedule, `schedule.csv` and the hourly resize patches under `schedules/`."""
    patches = workload_patches(recommendations)
    files: dict[str, Content] = {
        f"{PATCHES_FOLDER}/{patch.file_name}": patch.text for patch in patches.patches
    }
    schedules = None
    if schedule is not None:
        schedules = schedule_patches(schedule)
        files |= {f"{SCHEDULES_FOLDER}/{p.file_name}": p.text for p in schedules.patches}
        files[SCHEDULE_CSV] = spreadsheet_csv(schedule)
    files["rightsizing.csv"] = spreadsheet_csv(recommendations)
    files["rightsizing.json"] = json.dumps(recommendations.to_dicts(), indent=2, default=str) + "\n"
    files["rightsizing.md"] = ranked_markdown(recommendations) + "\n"
    return RightsizingExports(files, patches, schedules)


def publish_exports(exports: RightsizingExports, folder: Path) -> list[Path]:
    """Publish into `folder`: this run's files replace the previous run's (a workload that
    dropped out loses its patch; `patches/` and `schedules/` are swapped in whole, and a run
    without a schedule removes the previous run's); anything else stays."""
    whole = [PATCHES_FOLDER] + ([SCHEDULES_FOLDER] if exports.schedules is not None else [])
    return publish_files(folder, exports.files, owner=EXPORTS_OWNER, whole_folders=whole)

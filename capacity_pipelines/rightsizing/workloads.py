"""The Kubernetes workload a recommendation belongs to, checked before its names reach a file
name, a YAML patch or a `kubectl` line.

Labels come from whoever can label a pod or write a usage file, while a patch is applied by an
SRE with cluster rights. So a name is used only when Kubernetes itself would accept it: namespaces
and container names are DNS-1123 labels, workload names DNS-1123 subdomains (the rules of
apimachinery's `IsDNS1123Label` / `IsDNS1123Subdomain`). None of them can hold a `/`, which makes
the `namespace/workload/container` id split unambiguous: exactly three parts or it is not an id.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import polars as pl

DNS1123_LABEL_MAX = 63  # apimachinery validation.DNS1123LabelMaxLength
DNS1123_SUBDOMAIN_MAX = 253  # apimachinery validation.DNS1123SubdomainMaxLength
_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL = re.compile(_LABEL)
_DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
LABEL_RULE = (
    f"a DNS-1123 label: at most {DNS1123_LABEL_MAX} lowercase letters, digits or '-', "
    "starting and ending with a letter or digit"
)
SUBDOMAIN_RULE = (
    f"a DNS-1123 subdomain: at most {DNS1123_SUBDOMAIN_MAX} characters, dot-separated "
    "lowercase labels"
)
NAME_RULES = {"namespace": LABEL_RULE, "workload": SUBDOMAIN_RULE, "container": LABEL_RULE}

# Kinds whose pods come from `spec.template` and which `kubectl patch` changes in place
# (resource name as kubectl spells it). Jobs' templates are immutable; CronJobs nest theirs.
PATCHABLE_KINDS = {
    "Deployment": "deployment",
    "StatefulSet": "statefulset",
    "DaemonSet": "daemonset",
    "ReplicaSet": "replicaset",
    "ReplicationController": "replicationcontroller",
}
DEFAULT_KIND = "Deployment"  # what a workload without a known owner kind is assumed to be
# Patch file names: readable up to this many characters, else shortened with a hash of the key.
MAX_READABLE_FILE_STEM = 120
_HASHED_STEM_CHARS = 80
_HASH_HEX = 16  # 64 bits of SHA-256: distinct workloads never share a file in practice


class LabelError(ValueError):
    """A usage row whose namespace, workload or container is not a valid Kubernetes name."""


@dataclass(frozen=True, order=True)
class Workload:
    """One workload to patch: namespace, name and owner kind (Deployment, StatefulSet, ...)."""

    namespace: str
    name: str
    kind: str = DEFAULT_KIND

    @property
    def key(self) -> str:
        """`namespace/name`, with the kind unless it is a Deployment."""
        base = f"{self.namespace}/{self.name}"
        return base if self.kind == DEFAULT_KIND else f"{base} ({self.kind})"


def shown(value: object, limit: int = 60) -> str:
    """A label value quoted for a message: escaped like `repr`, long ones cut with their length."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def name_problem(role: str, value: str | None) -> str | None:
    """Why `value` cannot be the `role` (namespace, workload or container) name, or None."""
    rule = NAME_RULES[role]
    if value is None or value == "":
        return f"{role} is empty (must be {rule})"
    pattern, limit = (
        (_DNS1123_SUBDOMAIN, DNS1123_SUBDOMAIN_MAX)
        if role == "workload"
        else (_DNS1123_LABEL, DNS1123_LABEL_MAX)
    )
    if len(value) > limit or not pattern.fullmatch(value):
        return f"{role} {shown(value)} is not {rule}"
    return None


def label_problems(namespace: str | None, workload: str | None, container: str | None) -> list[str]:
    """Every reason these three labels cannot name a container in a Kubernetes patch."""
    values = {"namespace": namespace, "workload": workload, "container": container}
    return [p for role, value in values.items() if (p := name_problem(role, value)) is not None]


def split_container_id(container_id: str) -> tuple[str, str, str] | None:
    """`namespace/workload/container` -> its parts; None unless there are exactly three, all
    non-empty (a `/` inside a label would otherwise move every part)."""
    parts = container_id.split("/")
    if len(parts) != 3 or not all(parts):
        return None
    namespace, workload, container = parts
    return namespace, workload, container


def check_usage_names(usage: pl.DataFrame, source: str) -> None:
    """The file command's rule: every usage row names a valid namespace, workload and container.

    They come from the `namespace`, `workload`, `container` columns where present, else from
    splitting `container_id`. Raises `LabelError` naming the file, the first bad row (1 = the
    first row), the id and the label.
    """
    given = [c for c in ("namespace", "workload", "container") if c in usage.columns]
    distinct = (
        usage.select(pl.int_range(pl.len()).alias("_row"), "container_id", *given)
        .group_by(["container_id", *given], maintain_order=True)
        .agg(pl.col("_row").first())
        .sort("_row")
    )
    for row in distinct.iter_rows(named=True):
        where = f"{source}: row {row['_row'] + 1}: container_id {shown(row['container_id'])}"
        parts = split_container_id(str(row["container_id"]))
        if parts is None and len(given) < 3:
            raise LabelError(
                f"{where} is not namespace/workload/container (three names joined by '/')"
            )
        labels = dict(
            zip(("namespace", "workload", "container"), parts or (None,) * 3, strict=True)
        )
        labels.update({c: row[c] for c in given})
        problems = label_problems(labels["namespace"], labels["workload"], labels["container"])
        if problems:
            raise LabelError(f"{where}: {problems[0]}")


def patch_file_name(workload: Workload) -> str:
    """The file name of a workload's patch: distinct workloads, distinct names, always safe.

    Valid names of a Deployment give `<namespace>__<name>.yaml` (other kinds add `__<kind>`):
    DNS names hold no `_`, so this is reversible. Anything else (too long, or names that are not
    valid, which only a caller skipping `label_problems` passes) keeps a readable stem with unsafe
    characters replaced and adds `_<hash of the full key>`; such names hold exactly one `_`,
    so they never equal a readable one.
    """
    readable = f"{workload.namespace}__{workload.name}" + (
        "" if workload.kind == DEFAULT_KIND else f"__{workload.kind.lower()}"
    )
    valid = (
        not label_problems(workload.namespace, workload.name, "c")
        and workload.kind in PATCHABLE_KINDS
    )
    if valid and len(readable) <= MAX_READABLE_FILE_STEM:
        return f"{readable}.yaml"
    key = json.dumps([workload.namespace, workload.name, workload.kind])  # ASCII, reversible
    digest = hashlib.sha256(key.encode("ascii")).hexdigest()[:_HASH_HEX]
    stem = re.sub(r"[^A-Za-z0-9.-]+", "-", readable)[:_HASHED_STEM_CHARS].strip(".-")
    return f"{stem or 'workload'}_{digest}.yaml"

"""Limits policy per namespace or workload: how limits follow the recommended requests.

Three modes, because teams disagree for good reasons:
- `no_cpu_limit` (KRR's default): no CPU limit, so a container can burst into idle node CPU
  instead of being throttled; memory limit = memory request, because memory cannot be reclaimed
  without killing the process and an over-committed node OOM-kills someone else's container.
- `ratio`: limit = k x request (for example CPU 2x, memory 1.5x): bounded bursting.
- `guaranteed`: limit = request for both, the Guaranteed QoS class (last to be evicted).

A policy file (YAML):

    default: {mode: no_cpu_limit}
    namespaces:
      batch: {mode: guaranteed}
    workloads:                        # namespace/workload wins over namespace
      prod/api: {mode: ratio, cpu_factor: 2.0, memory_factor: 1.5, hpa_target_utilization: 0.7}
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

MODES = ("no_cpu_limit", "ratio", "guaranteed")
# HPA examples in the Kubernetes docs target 50 %; production services commonly run 70-80 %.
# 0.7 leaves headroom for the HPA's reaction time (15 s sync + pod start-up).
DEFAULT_HPA_TARGET_UTILIZATION = 0.7


class PolicyError(ValueError):
    """The policy file is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class LimitsRule:
    """How one namespace's or workload's limits follow its requests."""

    mode: str = "no_cpu_limit"
    cpu_factor: float = 2.0
    memory_factor: float = 1.5
    hpa_target_utilization: float = DEFAULT_HPA_TARGET_UTILIZATION

    def limits(self, cpu_request: float, memory_request: float) -> tuple[float | None, float]:
        """CPU limit (None = no limit) and memory limit for the given requests."""
        if self.mode == "guaranteed":
            return cpu_request, memory_request
        if self.mode == "ratio":
            return cpu_request * self.cpu_factor, memory_request * self.memory_factor
        return None, memory_request

    def describe(self) -> str:
        """Short label for rationales and tables."""
        if self.mode == "ratio":
            return f"limits {self.cpu_factor:g}x CPU, {self.memory_factor:g}x memory"
        if self.mode == "guaranteed":
            return "Guaranteed (limit = request)"
        return "no CPU limit, memory limit = request"


@dataclass(frozen=True)
class LimitsPolicy:
    """The default rule plus per-namespace and per-workload (`namespace/workload`) overrides."""

    default: LimitsRule = field(default_factory=LimitsRule)
    namespaces: dict[str, LimitsRule] = field(default_factory=dict)
    workloads: dict[str, LimitsRule] = field(default_factory=dict)

    def rule(self, namespace: str | None, workload: str | None) -> LimitsRule:
        """The most specific rule: workload, then namespace, then the default."""
        key = f"{namespace}/{workload}" if namespace else str(workload)
        if key in self.workloads:
            return self.workloads[key]
        if workload in self.workloads:
            return self.workloads[str(workload)]
        return self.namespaces.get(str(namespace), self.default)


def _rule(entry: object, base: LimitsRule, where: str) -> LimitsRule:
    if not isinstance(entry, dict):
        raise PolicyError(f"{where}: expected a mapping, got {type(entry).__name__}")
    unknown = set(entry) - {"mode", "cpu_factor", "memory_factor", "hpa_target_utilization"}
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}")
    rule = replace(base, **entry)
    if rule.mode not in MODES:
        raise PolicyError(f"{where}: mode must be one of {', '.join(MODES)}, got {rule.mode!r}")
    for name in ("cpu_factor", "memory_factor"):
        if not isinstance(getattr(rule, name), int | float) or getattr(rule, name) < 1.0:
            raise PolicyError(f"{where}: {name} must be a number >= 1")
    if not 0.05 <= float(rule.hpa_target_utilization) <= 1.0:
        raise PolicyError(f"{where}: hpa_target_utilization must lie in [0.05, 1]")
    return rule


def load_policy(path: Path | None) -> LimitsPolicy:
    """Read a policy file; None gives the default policy (no CPU limit)."""
    if path is None:
        return LimitsPolicy()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise PolicyError(f"{path}: cannot read ({str(error).splitlines()[0]})") from error
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected a mapping with default/namespaces/workloads")
    unknown = set(data) - {"default", "namespaces", "workloads"}
    if unknown:
        raise PolicyError(f"{path}: unknown top-level keys {sorted(unknown)}")
    default = _rule(data.get("default", {}), LimitsRule(), f"{path}: default")
    sections = {}
    for section in ("namespaces", "workloads"):
        entries = data.get(section) or {}
        if not isinstance(entries, dict):
            raise PolicyError(f"{path}: {section} must be a mapping")
        sections[section] = {
            str(k): _rule(v, default, f"{path}: {section}.{k}") for k, v in entries.items()
        }
    return LimitsPolicy(default, sections["namespaces"], sections["workloads"])

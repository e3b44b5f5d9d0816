"""A large fleet for the scale benchmark, built by replaying and perturbing the demo fleet.

The demo fleet (`benchmarks/demo_fleet.py`) already turns real public traces into a
Kubernetes-shaped multi-agent platform (9 services, ~17 containers, 6 LLM agents, 4 weeks at
5 min). This module copies it into `copies` tenants (namespaces `agents-007`, `platform-007`,
...), multiplies each workload's pods by a per-tenant factor, and perturbs every copy so no two
series are equal: a per-tenant traffic level (log-normal), a per-pod share of CPU (uniform), and
the tenant's own pod names. Memory and limits stay as in the demo so OOM and throttling
episodes keep their meaning. LLM usage is kept for the first `agents` agents only, because real
platforms have tens of agents, not hundreds.

Counters stay counters: scaling a cumulative series by a constant keeps it monotone and keeps
its resets where they were.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.demo_fleet import (
    K8S_NAME_ALPHABET,
    Fleet,
    Series,
    build_fleet,
    iter_openmetrics,
)
from capacity_pipelines.ingest.extract import pod_to_workload

SEED = 20261122
SERVICES_PER_CONTAINER = 300 / 2_000  # issue 8: 2,000 containers and 300 services
# Families whose values are load-driven and scale with the tenant's traffic level.
_LOAD_FAMILIES = (
    "container_cpu_usage_seconds",
    "http_server_requests",
    "http_server_request_duration_seconds",
)


@dataclass(frozen=True)
class ScaleFleetSize:
    """What was generated (the benchmark reports it beside its timings)."""

    copies: int
    containers: int
    services: int
    agents: int
    series: int
    samples: int


def _suffix(rng: np.random.Generator, length: int = 5) -> str:
    return "".join(K8S_NAME_ALPHABET[i] for i in rng.integers(0, len(K8S_NAME_ALPHABET), length))


def _pod_name(pod: str, replica: int, tenant_hash: str, rng: np.random.Generator) -> str:
    """A pod of the copied workload: StatefulSets get new ordinals, Deployments new suffixes."""
    workload = pod_to_workload(pod)
    rest = pod[len(workload) + 1 :]
    if rest.isdigit():
        return f"{workload}-{int(rest) + 8 * replica}"
    return f"{workload}-{tenant_hash}-{_suffix(rng)}"


def _is_llm(series: Series) -> bool:
    return series.family.startswith("gen_ai_")


def _agent(labels: dict[str, str]) -> str:
    return f"{labels.get('service', '')}/{labels.get('gen_ai_agent_name', '')}"


def scale_fleet(demo: Fleet, containers: int, agents: int = 20, seed: int = SEED) -> Fleet:
    """Copies of the demo fleet until about `containers` containers, ~300 services at 2,000."""
    rng = np.random.default_rng(seed)
    demo_containers = {
        (s.labels["namespace"], s.labels["pod"], s.labels["container"])
        for s in demo.series
        if "pod" in s.labels and "container" in s.labels
    }
    demo_services = {
        (s.labels["namespace"], s.labels["service"])
        for s in demo.series
        if s.family.startswith("http_server_") and "service" in s.labels
    }
    # Issue 8's fleet: 2,000 containers over 300 services. Copies give the services; each copy
    # multiplies its pods (1-5x, drawn, then scaled to the target) to give the containers.
    copies = max(1, round(containers * SERVICES_PER_CONTAINER / len(demo_services)))
    multipliers = rng.uniform(1.0, 5.0, copies)
    multipliers *= containers / (len(demo_containers) * multipliers.sum())
    multipliers = np.maximum(1, np.round(multipliers)).astype(int)
    kept_agents: set[str] = set()
    out: list[Series] = []
    for copy, multiplier in enumerate(multipliers):
        level = float(rng.lognormal(0.0, 0.35))  # tenant traffic, median = the demo's
        tenant_hash = {}
        pod_names: dict[tuple[str, int], str] = {}
        shares: dict[tuple[str, int], float] = {}
        for s in demo.series:
            labels = dict(s.labels)
            if "namespace" in labels:
                labels["namespace"] = f"{labels['namespace']}-{copy:03d}"
            if _is_llm(s):
                labels["gen_ai_agent_name"] = f"{labels.get('gen_ai_agent_name', '')}-{copy:03d}"
                agent = _agent(labels)
                if agent not in kept_agents and len(kept_agents) >= agents:
                    continue
                kept_agents.add(agent)
            factor = level if s.family.startswith(_LOAD_FAMILIES) or _is_llm(s) else 1.0
            if "pod" not in labels:
                values = s.values * factor
                if s.family == "kube_deployment_status_replicas":
                    values = s.values * multiplier
                out.append(replace(s, labels=labels, values=values))
                continue
            for replica in range(multiplier):
                key = (s.labels["pod"], replica)
                if key not in pod_names:
                    workload_key = s.labels["pod"].rsplit("-", 2)[0]
                    tenant_hash.setdefault(workload_key, _suffix(rng, 9))
                    pod_names[key] = _pod_name(
                        s.labels["pod"], replica, tenant_hash[workload_key], rng
                    )
                    shares[key] = float(rng.uniform(0.8, 1.2))
                labels_r = {**labels, "pod": pod_names[key]}
                pod_factor = factor * shares[key] if factor != 1.0 else 1.0
                out.append(replace(s, labels=labels_r, values=s.values * pod_factor))
    return Fleet(series=out, episodes=[], pods=[])


def fleet_size(fleet: Fleet) -> ScaleFleetSize:
    """Counts of what a scale fleet holds."""
    containers = {
        (s.labels["namespace"], s.labels["pod"], s.labels["container"])
        for s in fleet.series
        if "pod" in s.labels and "container" in s.labels
    }
    services = {
        (s.labels["namespace"], s.labels["service"])
        for s in fleet.series
        if s.family.startswith("http_server_") and "service" in s.labels
    }
    agents = {_agent(s.labels) for s in fleet.series if _is_llm(s)}
    samples = int(sum(np.count_nonzero(~np.isnan(s.values)) for s in fleet.series))
    namespaces = {
        s.labels["namespace"].rsplit("-", 1)[-1] for s in fleet.series if "namespace" in s.labels
    }
    return ScaleFleetSize(
        copies=len(namespaces),
        containers=len(containers),
        services=len(services),
        agents=len(agents),
        series=len(fleet.series),
        samples=samples,
    )


def write_openmetrics(fleet: Fleet, path: Path, n_steps: int) -> int:
    """Write the fleet as OpenMetrics text (what promtool backfills); returns bytes written."""
    written = 0
    with path.open("w") as out:
        chunks: Iterator[str] = iter_openmetrics(fleet, n_steps)
        for chunk in chunks:
            written += out.write(chunk)
    return written


def build_scale_fleet(data_dir: Path, containers: int, agents: int = 20) -> Fleet:
    """The demo fleet from the real traces in `data_dir`, scaled to `containers` containers."""
    return scale_fleet(build_fleet(data_dir), containers, agents)

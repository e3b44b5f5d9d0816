"""What a container's history says besides its usage: OOM kills and horizontal autoscaling.

Kept apart from the strategy so the schedule and the strategy read them the same way.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from capacity_pipelines.rightsizing.history import ContainerHistory
from capacity_pipelines.rightsizing.policy import LimitsRule

# A rollout's surge pods last minutes; a replica count away from its usual value for at least
# a tenth of the history is an autoscaler, not a rollout.
HPA_MIN_SHARE_OFF_MODE = 0.1


def oom_kill_mask(history: ContainerHistory) -> np.ndarray:
    """Samples at which an OOM kill happened.

    kube-state-metrics keeps "last terminated: OOMKilled" set until the next termination, so a
    flag alone is a state, not an event: with restart counts, a kill is a step with restarts
    and the flag (the warehouse's definition); without them, the first sample of each run of
    flags in a pod.
    """
    if history.oom_killed is None:
        return np.zeros(history.ts_s.size, dtype=bool)
    flagged = history.oom_killed > 0
    if history.restarts is not None and np.isfinite(history.restarts).any():
        return flagged & (np.nan_to_num(history.restarts) > 0)
    starts = np.zeros_like(flagged)
    for pod in np.unique(history.pod):
        index = np.flatnonzero(history.pod == pod)
        run = flagged[index]
        starts[index] = run & ~np.concatenate([[False], run[:-1]])
    return starts


def count_oom_kills(history: ContainerHistory) -> int:
    """Number of OOM kills in the history (see `oom_kill_mask`)."""
    return int(oom_kill_mask(history).sum())


def scales_horizontally(replicas: np.ndarray) -> bool:
    """True when the replica count moves (an HPA at work), not just during rollouts.

    A rolling update briefly runs surge pods next to the old ones; only a count that differs
    from its most common value for `HPA_MIN_SHARE_OFF_MODE` of the time counts as scaling.
    """
    counts = np.round(replicas[np.isfinite(replicas)])
    if counts.size == 0 or counts.max() - counts.min() < 1:
        return False
    values, frequency = np.unique(counts, return_counts=True)
    return bool(1.0 - frequency.max() / counts.size >= HPA_MIN_SHARE_OFF_MODE)


def hpa_level(
    history: ContainerHistory, replica_ts: np.ndarray, replicas: np.ndarray, rule: LimitsRule
) -> tuple[float, str]:
    """Per-replica load at the HPA's target utilisation.

    The HPA scales on usage / request: sizing the request for the peak per-pod usage would
    stop it from ever scaling out, and sizing for the total would waste every replica. The
    per-replica load while the HPA was scaled out (replicas above their minimum), divided by
    the target utilisation, keeps its behaviour and the pod's size consistent.
    """
    frame = pl.DataFrame({"ts": history.ts_s, "cpu": history.cpu_cores})
    total = frame.group_by("ts").agg(pl.col("cpu").sum()).sort("ts")
    at = np.clip(np.searchsorted(replica_ts, total["ts"].to_numpy(), side="right") - 1, 0, None)
    count = np.maximum(replicas[at], 1.0)
    per_replica = total["cpu"].to_numpy() / count
    scaled = count > np.nanmin(replicas)
    load = float(np.mean(per_replica[scaled] if scaled.any() else per_replica))
    target = rule.hpa_target_utilization
    reason = (
        f"HPA scaling {np.nanmin(replicas):g}-{np.nanmax(replicas):g} replicas: per-replica "
        f"load {load * 1000:.0f}m at {target:.0%} target utilisation"
    )
    return load / target, reason


def oom_limit(history: ContainerHistory) -> float:
    """The memory limit the container died at (or its working set then, when unknown)."""
    killed = oom_kill_mask(history)
    if history.memory_limit_bytes is not None:
        limits = history.memory_limit_bytes[killed]
        limits = limits[np.isfinite(limits)]
        if limits.size:
            return float(limits.max())
    if history.current.memory_limit:
        return float(history.current.memory_limit)
    return float(np.max(history.memory_bytes[killed]))

"""One container's usage history across all its pods, as arrays the strategies read.

The history is keyed by container of a workload, not by pod: pods come and go (rollouts, HPA,
evictions) and a recommendation that only saw the live pods would forget yesterday's peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SECONDS_PER_DAY = 86_400
# Coverage is judged on bins of at least five minutes (a common Prometheus rate window).
COVERAGE_BIN_S = 300.0


@dataclass(frozen=True)
class CurrentSpec:
    """The container's configured requests and limits (cores / bytes; None = not set/known)."""

    cpu_request: float | None = None
    cpu_limit: float | None = None
    memory_request: float | None = None
    memory_limit: float | None = None


@dataclass(frozen=True)
class ContainerHistory:
    """Samples of one container over every pod that ran it, sorted by time.

    `ts_s` are epoch seconds; `pod` names the pod of each sample. The optional arrays are None
    when the input had no such column. `replicas_ts_s` / `replicas` describe the workload's
    replica count over time (from `workload_replicas` or a `replicas` column).
    """

    container_id: str
    namespace: str | None
    workload: str | None
    container: str
    ts_s: np.ndarray
    pod: np.ndarray
    cpu_cores: np.ndarray
    memory_bytes: np.ndarray
    cpu_throttled_ratio: np.ndarray | None
    oom_killed: np.ndarray | None
    memory_limit_bytes: np.ndarray | None
    replicas_ts_s: np.ndarray | None
    replicas: np.ndarray | None
    current: CurrentSpec
    restarts: np.ndarray | None = None
    workload_kind: str | None = None  # Deployment, StatefulSet, ...; None = unknown

    @property
    def step_s(self) -> float:
        """Sampling interval: the most common gap between distinct timestamps."""
        distinct = np.unique(self.ts_s)
        if distinct.size < 2:
            return float("nan")
        gaps, counts = np.unique(np.diff(distinct), return_counts=True)
        return float(gaps[np.argmax(counts)])

    @property
    def history_days(self) -> float:
        """Span covered by the samples, counting the last step in full."""
        if self.ts_s.size == 0:
            return 0.0
        step = self.step_s
        span = float(self.ts_s.max() - self.ts_s.min()) + (0.0 if np.isnan(step) else step)
        return span / SECONDS_PER_DAY

    @property
    def coverage(self) -> float:
        """Share of time bins that hold at least one sample (gaps lower it).

        Bins are the median gap between samples, at least `COVERAGE_BIN_S`: irregular sampling
        (jittered scrapes, event-driven exporters) is not missing data, a silent hour is.
        """
        distinct = np.unique(self.ts_s)
        if distinct.size < 2:
            return 0.0
        width = max(float(np.median(np.diff(distinct))), COVERAGE_BIN_S)
        bins = np.unique(((distinct - distinct[0]) // width).astype(np.int64))
        return float(min(1.0, bins.size / (bins.max() + 1)))

    def replica_series(self) -> tuple[np.ndarray, np.ndarray]:
        """Replicas over time: the given series, else the number of pods seen per timestamp."""
        if self.replicas_ts_s is not None and self.replicas is not None and self.replicas.size:
            return self.replicas_ts_s, self.replicas
        ts, counts = np.unique(self.ts_s, return_counts=True)
        return ts, counts.astype(float)

"""The `container_rightsizing` warehouse table: what analysts and the report read back."""

from __future__ import annotations

from capacity_pipelines.warehouse import DerivedTable

HISTORY_DAYS = 14  # KRR's default history window, so the two are compared on the same data

RIGHTSIZING_TABLE = DerivedTable(
    name="container_rightsizing",
    description="Per container of each workload and as-of day: current vs recommended CPU and "
    "memory requests and limits, confidence, monthly $ saving (negative: costs more) and a "
    "one-line rationale, ranked (largest risks and savings first).",
    columns={
        "as_of": "UTC end of the history the recommendation was made from.",
        "rank": "Position in the review order (1 = look first).",
        "container_id": "cluster/namespace/workload/container.",
        "namespace": "Kubernetes namespace.",
        "workload": "Workload the container belongs to.",
        "workload_kind": "Kind of the workload (Deployment, StatefulSet, DaemonSet, Job, ...) "
        "from kube-state-metrics owner series (container_usage.workload_kind) or the input "
        "files; NULL when unknown: check the kind before applying a patch.",
        "container": "Container name.",
        "status": "ok, or why no recommendation was made (e.g. insufficient_data).",
        "kind": "What the recommendation does (size down, size up, risk, no change).",
        "current_cpu_request": "Current CPU request (cores).",
        "cpu_request": "Recommended CPU request (cores).",
        "current_cpu_limit": "Current CPU limit (cores; NULL = none).",
        "cpu_limit": "Recommended CPU limit (cores; NULL = none) under the limits policy.",
        "current_memory_request": "Current memory request (bytes).",
        "memory_request": "Recommended memory request (bytes).",
        "current_memory_limit": "Current memory limit (bytes; NULL = none).",
        "memory_limit": "Recommended memory limit (bytes).",
        "cpu_request_quantity": "Recommended CPU request as a Kubernetes quantity.",
        "memory_request_quantity": "Recommended memory request as a Kubernetes quantity.",
        "confidence": "0..1: grows with history length, shrinks with volatility and gaps.",
        "monthly_saving_usd": "Monthly saving at the compute price book (negative = cost).",
        "forecast_used": "True when the forecasting engine's upper quantile shaped the request.",
        "hpa": "True when replicas scale (sized per replica at the target utilisation).",
        "oom_kills": "OOM kills seen in the history.",
        "profile": "Risk profile the recommendation was made under (conservative, balanced, "
        "aggressive): its CPU violation target and memory margin.",
        "recommender": "CPU recommender used: the candidate the container's own backtest chose "
        "(e.g. p95/3d, vpa-p90, peak/7d, trend-p95), the fallback percentile when the history "
        "was too short to backtest, or hpa.",
        "rationale": "One-line reason for the recommendation.",
    },
)

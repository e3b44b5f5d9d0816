"""The `bottleneck_outlook` warehouse table: what the weekly report and recommendations read."""

from __future__ import annotations

from capacity_pipelines.warehouse import DerivedTable

# The classes, in the order rules are tried (see labels.RULES), then `none`.
BOTTLENECK_CLASSES = (
    "cpu",
    "memory",
    "io_database",
    "network",
    "queueing",
    "llm_provider",
    "none",
)
HORIZONS = {"24h": 24, "7d": 168}  # outlook horizons in hours: tomorrow and the weekly report

BOTTLENECK_TABLE = DerivedTable(
    name="bottleneck_outlook",
    description="Per service, horizon and as-of day: the most likely bottleneck over the next "
    "24 h or 7 days (cpu, memory, io_database, network, queueing, llm_provider or none), its "
    "probability, when it is expected, and the evidence and metrics behind it.",
    columns={
        "as_of": "UTC end of the history the outlook was made from.",
        "namespace": "Kubernetes namespace.",
        "service": "Service name (equals the workload name).",
        "horizon": "Outlook horizon: 24h or 7d.",
        "bottleneck_class": "Most likely bottleneck over the horizon (none = no bottleneck).",
        "probability": "Probability of bottleneck_class (0..1).",
        "probabilities": "JSON object: probability of every class.",
        "expected_at": "UTC time the saturation is expected to start (NULL: not estimated).",
        "evidence": "One line a person reads: the saturation seen or forecast behind it.",
        "metrics": "Comma-separated metrics (warehouse columns) behind the evidence.",
        "method": "lightgbm (trained on this warehouse's labelled history), rules (fallback) or "
        "persistence: whichever did best on the latest training origins; `note` says why.",
        "note": "Why a class could not be predicted (missing metric family), or empty.",
    },
)

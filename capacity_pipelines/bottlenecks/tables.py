"""The bottleneck warehouse tables: the outlook the weekly report and recommendations read, and
its track record (`bottleneck_backtest`)."""

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

BOTTLENECK_BACKTEST_TABLE = DerivedTable(
    name="bottleneck_backtest",
    description="The outlook's track record per as-of day: the outlooks stored in "
    "bottleneck_outlook for the as-of days of the 28 days before it whose horizon had ended, "
    "scored per service and horizon against the USE-rule labels that followed, next to 7-day "
    "persistence on the same origins. An origin is scored only when the labelled history holds "
    "its whole horizon and the week before it.",
    columns={
        "as_of": "UTC end of the labelled history the outlooks were scored against.",
        "namespace": "Kubernetes namespace.",
        "service": "Service name (equals the workload name).",
        "horizon": "Outlook horizon: 24h or 7d.",
        "method": "outlook (what bottleneck_outlook said at each origin) or persistence_7d (the "
        "class labelled in most hours of the 7 days before it, ties to the earlier class; 0.5 "
        "on it and 0.5 on none, or none at 1 when nothing was labelled).",
        "origins": "Scored origins: as-of days whose outlook was stored, whose horizon had ended "
        "and with a week of labelled history before them.",
        "first_origin": "UTC as-of day of the first scored origin.",
        "last_origin": "UTC as-of day of the last scored origin.",
        "correct": "Origins where the method named the class that followed: the class of the first "
        "labelled hour within the horizon, or none.",
        "brier": "Mean multi-class Brier score of the stated probabilities (sum over classes of "
        "the squared error; 0 perfect, 2 sure and wrong; lower is better).",
        "bottleneck_origins": "Origins a bottleneck (a class other than none) followed.",
        "caught": "Of those, origins where the method named the class that followed.",
        "false_alarms": "Origins where the method named a bottleneck and none followed.",
    },
)

"""Predictive alerts: the runway and bottleneck forecasts as Alertmanager alerts, and the week's
forecast as Prometheus rules (a p95 band per series, an alert when live usage runs above it).

Pure Python (no Dagster): `conditions` decides which alerts hold, `alertmanager` posts them
idempotently, `rules` writes the rules file. The `predictive_alerts` asset only wires them.
"""

from capacity_pipelines.alerts.alertmanager import (
    AlertmanagerClient,
    AlertmanagerError,
    SyncResult,
    sync_alerts,
    sync_payload,
)
from capacity_pipelines.alerts.conditions import (
    BOTTLENECK_ALERT,
    RUNWAY_ALERT,
    SOURCE,
    Alert,
    AlertSettings,
    LatestRows,
    bottleneck_alerts,
    current_alerts,
    read_latest,
    runway_alerts,
)
from capacity_pipelines.alerts.rules import (
    BAND_RECORD,
    RULES_FILE,
    USAGE_ALERT,
    live_usage_promql,
    rules_document,
    rules_yaml,
    template_text,
    write_rules,
)

__all__ = [
    "BAND_RECORD",
    "BOTTLENECK_ALERT",
    "RULES_FILE",
    "RUNWAY_ALERT",
    "SOURCE",
    "USAGE_ALERT",
    "Alert",
    "AlertSettings",
    "AlertmanagerClient",
    "AlertmanagerError",
    "LatestRows",
    "SyncResult",
    "bottleneck_alerts",
    "current_alerts",
    "live_usage_promql",
    "read_latest",
    "rules_document",
    "rules_yaml",
    "runway_alerts",
    "sync_alerts",
    "sync_payload",
    "template_text",
    "write_rules",
]

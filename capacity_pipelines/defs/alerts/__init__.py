"""Predictive alerts: runway and bottleneck forecasts into Alertmanager, forecast bands into
Prometheus rules."""

"""Prometheus rules from the week's forecast: a p95 band per series, an alert above it.

The forecast says how high each series should go this week; live usage running above its p95
band for 15 minutes means the forecast (and the runway built on it) is already wrong, which an
SRE wants to know before the next daily run. The band is hour-of-day shaped (the highest p95 of
that UTC hour over the forecast week) so a quiet night does not hide a spike; it is written as
constants, one recording rule per series, so Prometheus needs nothing but this file.

Label values come from metric labels, so every one reaches the file through a single escape for
the context it lands in: PromQL string literals (`promql_string`, RE2 for pod names), Go
templates in alert labels and annotations (`template_text`), and YAML through
`yaml.safe_dump`. Nothing is assembled by string formatting of YAML.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import yaml

from capacity_pipelines.common.files import publish_files
from capacity_pipelines.ingest.catalog import (
    Catalog,
    CatalogError,
    Matcher,
    Selector,
    render_promql,
)
from capacity_pipelines.ingest.extract import pod_name_regex

RULES_FILE = "alerts/capacity.rules.yml"  # inside reports/latest/
RULES_OWNER = "predictive_alerts"  # owner name in latest/'s ownership manifest
BAND_RECORD = "capacity_pipelines:forecast_p95_band"
USAGE_ALERT = "CapacityUsageAboveForecast"
FOR = "15m"
# Family -> (catalog table, column, label naming the entity besides `namespace`, resource).
# llm_tokens are hourly totals per provider/model/agent with no per-namespace selector: no rule.
LIVE_COLUMNS = {
    "workload_cpu": ("container_usage", "cpu_cores", "pod", "cpu"),
    "workload_memory": ("container_usage", "memory_working_set_bytes", "pod", "memory"),
    "service_request_rate": ("service_traffic", "request_rate_rps", "service", "request_rate"),
}


def template_text(value: str) -> str:
    """`value` as Go template text that renders as exactly `value`.

    Prometheus expands alert labels and annotations as Go templates, so a label value holding
    `{{` would run as template code; each `{{` becomes an action printing the string `{{`.
    """
    return value.replace("{{", '{{ "{{" }}')


def _source_label(catalog: Catalog, table: str, label: str) -> str:
    """The raw series label that the catalog turns into warehouse column `label`."""
    renamed = {target: source for source, target in catalog.table(table).rename.items()}
    return renamed.get(label, label)


def live_usage_promql(catalog: Catalog, family: str, entity: str) -> str | None:
    """The PromQL of one forecast series' live value (the catalog column it was extracted from,
    narrowed to the entity), or None where the catalog cannot say (raw PromQL, no such table)."""
    if family not in LIVE_COLUMNS:
        return None
    table_name, column, entity_label, _ = LIVE_COLUMNS[family]
    try:
        table = catalog.table(table_name)
    except CatalogError:
        return None
    query = next((q for q in table.columns if q.column == column), None)
    if query is None or query.selector is None:
        return None
    namespace, _, name = entity.partition("/")
    label = _source_label(catalog, table_name, entity_label)
    entity_matcher = (
        Matcher(label, "=~", pod_name_regex(name))
        if entity_label == "pod"
        else Matcher(label, "=", name)
    )
    matchers = (
        *query.selector.matchers,
        Matcher(_source_label(catalog, table_name, "namespace"), "=", namespace),
        entity_matcher,
    )
    narrowed = Selector(query.selector.metric, matchers)
    # Summed over everything the entity has (pods, containers, instances), as the warehouse does.
    single = dataclasses.replace(table, source_labels=())
    return render_promql(
        single,
        dataclasses.replace(query, selector=narrowed),
        catalog.step_seconds,
        catalog.rate_window_seconds,
    )


def hourly_band(forecast: pl.DataFrame) -> pl.DataFrame:
    """Per series and UTC hour of day: the highest p95 of that hour over the forecast (none
    before the first forecast is written)."""
    if forecast.is_empty():
        schema = {"series_id": pl.Utf8, "family": pl.Utf8, "hour": pl.Int8, "p95": pl.Float64}
        return pl.DataFrame(schema=schema)
    return (
        forecast.filter(pl.col("p95").is_not_null() & pl.col("p95").is_finite())
        .group_by("series_id", "family", pl.col("ts").dt.hour().alias("hour"))
        .agg(pl.col("p95").max())
        .sort("series_id", "hour")
    )


def _band_expr(hours: pl.DataFrame) -> str:
    # `repr` of a float is an exact PromQL number literal (no locale, no exponent surprises).
    terms = [
        f"(vector({float(v)!r}) and on() (hour() == {int(h)}))"
        for h, v in hours.select("hour", "p95").iter_rows()
    ]
    return " or ".join(terms)


def rules_document(forecast: pl.DataFrame, catalog: Catalog, report_url: str = "") -> dict:
    """The rules file as data: a recording group (the bands) and an alerting group (usage above
    the band for 15 minutes), one rule of each per series the catalog can select live."""
    records, alerts = [], []
    band = hourly_band(forecast)
    for (series_id, family), hours in band.group_by("series_id", "family", maintain_order=True):
        entity = series_id.split(":", 1)[1]
        live = live_usage_promql(catalog, family, entity)
        if live is None:
            continue
        namespace, _, name = entity.partition("/")
        resource = LIVE_COLUMNS[family][3]
        labels = {"series_id": series_id, "family": family, "namespace": namespace, "name": name}
        # Recording-rule labels are not templated: the raw values go in as they are.
        records.append({"record": BAND_RECORD, "expr": _band_expr(hours), "labels": labels})
        band_selector = Selector(BAND_RECORD, (Matcher("series_id", "=", series_id),)).promql()
        annotations = {
            "summary": template_text(f"{entity} {resource} above its forecast p95 band for {FOR}"),
            "description": template_text(f"Live {resource} of {entity} ({series_id}) is ")
            + "{{ $value | humanize }}, above the p95 of this hour in the week's forecast; "
            "the forecast and the runway built on it understate demand.",
        }
        if report_url:
            annotations["report"] = template_text(f"{report_url}#runway")
        alerts.append(
            {
                "alert": USAGE_ALERT,
                "expr": f"{live} > on() {band_selector}",
                "for": FOR,
                "labels": {
                    "severity": "warning",
                    "source": "capacity_pipelines",
                    "service": template_text(name),
                    "namespace": template_text(namespace),
                    "resource": resource,
                    "series_id": template_text(series_id),
                },
                "annotations": annotations,
            }
        )
    return {
        "groups": [
            {"name": "capacity_pipelines_forecast_bands", "rules": records},
            {"name": "capacity_pipelines_usage_above_forecast", "rules": alerts},
        ]
    }


def rules_yaml(document: dict) -> str:
    """The document as YAML (safe_dump: every label value quoted as YAML needs)."""
    header = "# Generated by capacity_pipelines (predictive_alerts): do not edit, re-run.\n"
    return header + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=10**6)


def write_rules(
    forecast: pl.DataFrame, catalog: Catalog, latest_dir: Path, report_url: str = ""
) -> tuple[Path, int]:
    """Publish `<latest_dir>/alerts/capacity.rules.yml` (atomically, beside the reports that
    share `latest/`); returns its path and the number of series with rules."""
    document = rules_document(forecast, catalog, report_url)
    publish_files(Path(latest_dir), {RULES_FILE: rules_yaml(document)}, owner=RULES_OWNER)
    return Path(latest_dir) / RULES_FILE, len(document["groups"][0]["rules"])

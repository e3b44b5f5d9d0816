"""The metric catalog: parsing, validation and PromQL rendering."""

from pathlib import Path

import pytest

from capacity_pipelines.ingest.catalog import (
    CatalogError,
    Selector,
    format_duration,
    load_catalog,
    parse_duration,
    render_promql,
)
from capacity_pipelines.ingest.tables import CONTAINER_USAGE_TABLE, SERVICE_TRAFFIC_TABLE


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h", 3600), ("2d", 172800), ("1w", 604800)]
)
def test_durations_round_trip(text, seconds):
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == text


def test_bad_duration_is_named():
    with pytest.raises(CatalogError, match="'5 minutes'"):
        parse_duration("5 minutes")


def test_selector_parses_matchers_and_escapes():
    sel = Selector.parse(r'http_requests_total{code=~"5..",path!="/a\"b",job="api"}')
    assert sel.metric == "http_requests_total"
    assert [(m.label, m.op, m.value) for m in sel.matchers] == [
        ("code", "=~", "5.."),
        ("path", "!=", '/a"b'),
        ("job", "=", "api"),
    ]
    assert sel.matches({"code": "503", "path": "/x", "job": "api"})
    assert not sel.matches({"code": "200", "path": "/x", "job": "api"})
    assert not sel.matches({"code": "5030", "path": "/x", "job": "api"})  # regex is anchored
    assert Selector.parse(sel.promql()) == sel


def test_bundled_catalog_has_the_families():
    catalog = load_catalog()
    assert set(catalog.tables) == {
        "container_usage",
        "workload_replicas",
        "service_traffic",
        "llm_token_usage",
    }
    usage = catalog.table("container_usage")
    assert usage.key == ("cluster", "namespace", "workload", "pod", "container")
    assert {"cpu_cores", "memory_working_set_bytes", "cpu_throttled_ratio", "oom_killed"} <= set(
        usage.value_columns
    )
    assert catalog.step_seconds == 300 and catalog.rate_window_seconds == 900


def test_extracted_table_names_other_domains_read_are_in_the_catalog():
    """Findings and the weekly report query these tables by the ingest constants: a catalog
    that renamed one, or dropped a column they aggregate, would skip findings silently."""
    catalog = load_catalog()
    usage = catalog.table(CONTAINER_USAGE_TABLE)
    aggregated = {
        "cpu_cores",
        "memory_working_set_bytes",
        "cpu_request_cores",
        "memory_request_bytes",
    }
    assert aggregated <= set(usage.value_columns)
    assert {"namespace", "workload", "pod", "container"} <= set(usage.key)
    assert {"namespace", "service"} <= set(catalog.table(SERVICE_TRAFFIC_TABLE).key)


def test_rendered_promql_for_rate_and_histogram():
    catalog = load_catalog()
    usage = catalog.table("container_usage")
    cpu = next(q for q in usage.columns if q.column == "cpu_cores")
    assert render_promql(usage, cpu, 300, 900) == (
        "sum by (cluster, namespace, pod, container) "
        '(rate(container_cpu_usage_seconds_total{container!="",container!="POD"}[15m]))'
    )
    traffic = catalog.table("service_traffic")
    p95 = next(q for q in traffic.columns if q.column == "latency_p95_seconds")
    assert render_promql(traffic, p95, 300, 900).startswith(
        "histogram_quantile(0.95, sum by (cluster, namespace, service, le) (rate("
    )


def test_label_aliases_render_lowest_priority_first():
    catalog = load_catalog()
    llm = catalog.table("llm_token_usage")
    query = next(q for q in llm.columns if q.column == "input_tokens")
    promql = render_promql(llm, query, 300, 900)
    # gen_ai_system is applied first so that gen_ai_provider_name, applied last, wins.
    assert promql.index('"gen_ai_system"') < promql.index('"gen_ai_provider_name"')
    assert promql.endswith("* 300")


@pytest.mark.parametrize("mapping", ["otel_counters", "otel_histogram", "litellm"])
def test_llm_mappings_load(mapping):
    llm = load_catalog(llm_mapping=mapping).table("llm_token_usage")
    assert {"input_tokens", "output_tokens", "requests"} <= set(llm.value_columns)
    if mapping == "litellm":
        assert "spend_usd" in llm.value_columns


HEADER = "tables:\n  t:\n    source_labels: [a]\n    columns:\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("tables: [1, 2", "not valid YAML"),
        (
            HEADER + "      c: {op: sum, selector: x}\n",
            "op 'sum' is not one of",
        ),
        (
            HEADER + "      c: {op: rate, selector: 'x{a=b}'}\n",
            "cannot parse label matchers",
        ),
        ("other: 1\n", "expected a mapping with a 'tables:' section"),
    ],
)
def test_malformed_catalog_names_file_and_problem(tmp_path: Path, body, message):
    path = tmp_path / "catalog.yaml"
    path.write_text(body)
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)

"""The Prometheus rules file: hostile label values stay inert text in PromQL, YAML and Go
templates, `promtool check rules` accepts the file, and `promtool test rules` shows the band
recorded hour by hour and the alert firing only after 15 minutes above it (with the exact
labels, hostile ones included)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import yaml

from capacity_pipelines.alerts import (
    BAND_RECORD,
    RULES_FILE,
    USAGE_ALERT,
    live_usage_promql,
    rules_document,
    template_text,
    write_rules,
)
from capacity_pipelines.ingest.catalog import Selector, load_catalog, promql_string

AS_OF = datetime(2026, 10, 11, tzinfo=UTC)
HOSTILE_NAMESPACE = 'ag"ents\\{{ .Value }}'
HOSTILE_WORKLOAD = 'plan"ner}\n{{ $labels.x }}: {a: b}\r\x07'
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found (Debian package `prometheus`; .ci/run installs it)"
)


def forecast(series: dict[str, float], night: float | None = None) -> pl.DataFrame:
    """A week of hourly p95 per series: `p95` by day, `night` (if given) at hours 0-5 UTC."""
    naive = AS_OF.replace(tzinfo=None)
    rows = []
    for series_id, p95 in series.items():
        for h in range(168):
            ts = naive + timedelta(hours=h)
            value = night if night is not None and ts.hour < 6 else p95
            rows.append((series_id, series_id.split(":")[0], ts, value))
    return pl.DataFrame(rows, schema=["series_id", "family", "ts", "p95"], orient="row")


@pytest.mark.parametrize(
    "value", ["plain", 'a"b', "back\\slash", "line\nbreak", "cr\rtab\tbell\x07", "{{ x }}", "é✓"]
)
def test_promql_string_round_trips(value):
    # PromQL strings are Go strings: Python reads the same escapes back.
    literal = promql_string(value)
    assert "\n" not in literal and "\r" not in literal
    assert literal.encode().decode("unicode_escape").encode("latin-1").decode() == f'"{value}"'


def test_template_text_has_no_action_but_the_escape():
    assert template_text("a{{b}}c") == 'a{{ "{{" }}b}}c'
    assert template_text("plain}}") == "plain}}"


def test_yaml_keeps_hostile_labels_as_data(tmp_path):
    series_id = f"workload_cpu:{HOSTILE_NAMESPACE}/{HOSTILE_WORKLOAD}"
    path, count = write_rules(forecast({series_id: 2.0}), load_catalog(), tmp_path)
    assert path == tmp_path / RULES_FILE and count == 1
    document = yaml.safe_load(path.read_text())
    assert set(document) == {"groups"}
    record, alert = document["groups"][0]["rules"][0], document["groups"][1]["rules"][0]
    assert record["labels"] == {
        "series_id": series_id,
        "family": "workload_cpu",
        "namespace": HOSTILE_NAMESPACE,
        "name": HOSTILE_WORKLOAD,
    }
    assert alert["labels"]["service"] == template_text(HOSTILE_WORKLOAD)
    assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}


def test_live_selector_is_the_catalog_column_narrowed_to_the_entity():
    catalog = load_catalog()
    promql = live_usage_promql(catalog, "workload_cpu", "agents/planner")
    assert promql.startswith("sum by () (rate(container_cpu_usage_seconds_total{")
    selector = Selector.parse(promql[len("sum by () (rate(") : promql.rindex("[")])
    labels = {"container": "app", "namespace": "agents"}
    assert selector.matches({**labels, "pod": "planner-7d9c8b6f5-x2x4z"})
    assert selector.matches({**labels, "pod": "planner-0"})
    assert not selector.matches({**labels, "pod": "planner-gateway-x2x4z"})
    assert not selector.matches({**labels, "pod": "planner-7d9c8b6f5-x2x4z", "container": "POD"})
    assert live_usage_promql(catalog, "llm_tokens", "anthropic/claude/planner") is None


@needs_promtool
def test_before_the_first_forecast_the_file_is_valid_and_empty(tmp_path):
    path, count = write_rules(pl.DataFrame(), load_catalog(), tmp_path)
    assert count == 0
    assert [g["rules"] for g in yaml.safe_load(path.read_text())["groups"]] == [[], []]
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_checks_the_rules(tmp_path):
    series = {
        "workload_cpu:agents/planner": 2.0,
        "workload_memory:agents/planner": 4e9,
        "service_request_rate:agents/gateway": 50.0,
        f"workload_cpu:{HOSTILE_NAMESPACE}/{HOSTILE_WORKLOAD}": 1.0,
        "llm_tokens:anthropic/claude/planner": 1e6,  # no live selector: no rule
    }
    path, count = write_rules(forecast(series), load_catalog(), tmp_path)
    assert count == 4
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 rules found" in done.stdout


def _series(metric: str, labels: dict[str, str]) -> str:
    body = ",".join(f"{k}={promql_string(v)}" for k, v in labels.items())
    return f"{metric}{{{body}}}"


def expected_alert(namespace: str, name: str, value: str) -> dict:
    """The alert as promtool should render it: raw label values, templates expanded."""
    series_id = f"workload_cpu:{namespace}/{name}"
    return {
        "exp_labels": {
            "severity": "warning",
            "source": "capacity_pipelines",
            "service": name,
            "namespace": namespace,
            "resource": "cpu",
            "series_id": series_id,
        },
        "exp_annotations": {
            "summary": f"{namespace}/{name} cpu above its forecast p95 band for 15m",
            "description": f"Live cpu of {namespace}/{name} ({series_id}) is {value}, above the "
            "p95 of this hour in the week's forecast; the forecast and the runway built on it "
            "understate demand.",
        },
    }


@needs_promtool
def test_promtool_unit_test_band_and_alert(tmp_path):
    """At t=0 (00:00 UTC) the night bands apply (the day band, 3 cores, would never fire). The
    planner (band 1 core) runs at 0.5 cores, then 1.5 from minute 10: its 15-minute rate passes
    the band at 17.5 min and the alert fires 15 minutes later, not before. The hostile workload
    runs at 0.5 cores over its 0.4 band (its rate, counted from a counter starting at 0, passes
    it at 13 min): its alert fires with its labels and annotations exactly as written."""
    hostile = f"workload_cpu:{HOSTILE_NAMESPACE}/{HOSTILE_WORKLOAD}"
    frame = pl.concat(
        [
            forecast({"workload_cpu:agents/planner": 3.0}, night=1.0),
            forecast({hostile: 0.4}, night=0.4),
        ]
    )
    document = rules_document(frame, load_catalog())
    rules = tmp_path / "capacity.rules.yml"
    rules.write_text(yaml.safe_dump(document))
    # a counter rising 1.5 core-seconds per second (90 per minute) from minute 10
    planner = _series(
        "container_cpu_usage_seconds_total",
        {"namespace": "agents", "pod": "planner-7d9c8b6f5-x2x4z", "container": "app"},
    )
    hostile_pod = _series(
        "container_cpu_usage_seconds_total",
        {"namespace": HOSTILE_NAMESPACE, "pod": HOSTILE_WORKLOAD + "-0", "container": "app"},
    )
    planner_alert = expected_alert("agents", "planner", "1.5")
    hostile_alert = expected_alert(HOSTILE_NAMESPACE, HOSTILE_WORKLOAD, "500m")
    unit = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": planner, "values": "0+30x10 390+90x60"},
                    {"series": hostile_pod, "values": "0+30x70"},
                ],
                "promql_expr_test": [
                    {
                        "expr": _series(BAND_RECORD, {"series_id": hostile}),
                        "eval_time": "30m",
                        "exp_samples": [
                            {
                                "labels": _series(
                                    BAND_RECORD,
                                    {
                                        "family": "workload_cpu",
                                        "name": HOSTILE_WORKLOAD,
                                        "namespace": HOSTILE_NAMESPACE,
                                        "series_id": hostile,
                                    },
                                ),
                                "value": 0.4,
                            }
                        ],
                    },
                ],
                "alert_rule_test": [
                    # hostile: the 15 m rate passes its band at 13 min (pending), fires at 28
                    {"eval_time": "20m", "alertname": USAGE_ALERT, "exp_alerts": []},
                    {"eval_time": "27m", "alertname": USAGE_ALERT, "exp_alerts": []},
                    {"eval_time": "29m", "alertname": USAGE_ALERT, "exp_alerts": [hostile_alert]},
                    # planner: above its band from 17.5 min, fires after 32.5
                    {"eval_time": "32m", "alertname": USAGE_ALERT, "exp_alerts": [hostile_alert]},
                    {
                        "eval_time": "50m",
                        "alertname": USAGE_ALERT,
                        "exp_alerts": [planner_alert, hostile_alert],
                    },
                ],
            }
        ],
    }
    test_file = tmp_path / "capacity.rules.test.yml"
    test_file.write_text(yaml.safe_dump(unit))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr

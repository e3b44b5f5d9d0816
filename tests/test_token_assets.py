"""Token cost in the pipeline: extracted LLM counters costed into the warehouse and reported."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from capacity_pipelines.definitions import defs as build_defs
from tests.pipeline import pipeline_resources

START = datetime(2026, 9, 28, tzinfo=UTC)
FAMILIES = {
    # family: tokens per minute, for each (agent, provider, model)
    "gen_ai_client_inference_usage_input_tokens": 1000,
    "gen_ai_client_inference_usage_cache_read_input_tokens": 400,
    "gen_ai_client_inference_usage_output_tokens": 100,
    "gen_ai_client_operation_duration_seconds": 2,
}
CALLERS = [
    ('gen_ai_agent_name="planner",gen_ai_provider_name="openai"', "gpt-4o"),
    ('gen_ai_agent_name="coder",gen_ai_system="openai"', "gpt-4o"),  # the older label
    ('gen_ai_agent_name="coder",gen_ai_provider_name="acme"', "acme-llm-9"),  # no price
]


def _llm_export(path: Path, days: int = 2) -> None:
    start = int(START.timestamp())
    lines = []
    for family, per_minute in FAMILIES.items():
        name = f"{family}_count" if family.endswith("seconds") else f"{family}_total"
        lines.append(f"# TYPE {family} counter")
        for labels, model in CALLERS:
            for minute in range(days * 1440):
                lines.append(
                    f'{name}{{service="agents",{labels},gen_ai_request_model="{model}"}} '
                    f"{per_minute * minute} {start + 60 * minute}"
                )
    path.write_text("\n".join(lines) + "\n# EOF\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    export = root / "llm.om"
    _llm_export(export)
    resources = pipeline_resources(root, [export])
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            list(build_defs().assets),
            selection=[
                "llm_token_usage",
                "llm_token_cost",
                "warehouse_snapshot",
                "token_cost_report",
            ],
            resources=resources,
            partition_key="2026-09-29",
            instance=instance,
        )
    return result, root


def test_costs_are_the_hand_computed_ones(run):
    result, root = run
    assert result.success
    con = duckdb.connect(str(root / "snap.duckdb"), read_only=True)
    rows = con.execute(
        "SELECT agent, model, count(*), sum(cost_usd), bool_and(unpriced), "
        "avg(input_tokens), avg(cache_read_input_tokens) "
        "FROM llm_token_cost GROUP BY ALL ORDER BY agent, model"
    ).fetchall()
    # Per 5-minute step: 5,000 input of which 2,000 cache reads, 500 output tokens.
    # gpt-4o (from 2024-10-02): 3,000 x $2.50/M + 2,000 x $1.25/M + 500 x $10/M = $0.015.
    per_step = 3000 * 2.50e-6 + 2000 * 1.25e-6 + 500 * 10.00e-6
    steps = 288
    by_key = {(agent, model): rest for agent, model, *rest in rows}
    planner = by_key[("planner", "gpt-4o")]
    assert planner[0] == steps
    assert planner[1] == pytest.approx(per_step * steps, rel=1e-6)
    assert planner[3] == pytest.approx(5000) and planner[4] == pytest.approx(2000)
    coder = by_key[("coder", "gpt-4o")]  # read through the old gen_ai_system label
    assert coder[1] == pytest.approx(per_step * steps, rel=1e-6)
    unknown = by_key[("coder", "acme-llm-9")]
    assert unknown[1] is None and unknown[2] is True  # unpriced, never costed at zero


def test_unpriced_model_warns_and_report_is_published(run):
    result, root = run
    [check] = [
        e for e in result.get_asset_check_evaluations() if e.asset_key.path == ["llm_token_cost"]
    ]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "acme-llm-9" in check.description
    summary = json.loads((root / "reports" / "latest" / "token_cost" / "summary.json").read_text())
    assert summary["unpriced_rows"] == 288
    assert summary["cost_usd"] == pytest.approx(2 * 288 * 0.015, rel=1e-6)


def test_spend_forecast_uses_the_engine_with_enough_history():
    from capacity_pipelines.tokens.report import engine_spend_forecast

    days = pl.datetime_range(
        datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 9, 28, tzinfo=UTC), "1d", eager=True
    )
    weekly = [100.0 + (40.0 if d.weekday() < 5 else 0.0) + i for i, d in enumerate(days)]
    history = pl.DataFrame({"series_id": "spend", "ts": days, "value": weekly})
    forecast = engine_spend_forecast(history, 30)
    assert forecast.height == 30
    assert not forecast["model"][0].startswith("linear")
    assert (forecast["p95"] >= forecast["p50"]).all() and (forecast["p50"] >= 0).all()
    assert forecast["ts"].dtype.time_zone == "UTC"
    # weekdays stay above weekends, as in the history
    by_weekend = forecast.group_by(pl.col("ts").dt.weekday() > 5).agg(pl.col("p50").mean())
    weekend = by_weekend.filter(pl.col("ts"))["p50"][0]
    weekday = by_weekend.filter(~pl.col("ts"))["p50"][0]
    assert weekday > weekend
    short = engine_spend_forecast(history.head(5), 30)
    assert short["model"][0].startswith("linear")

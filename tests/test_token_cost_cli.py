"""`capacity token-cost` on the bundled Azure and Mooncake slices, report content and savings."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from capacity_pipelines.tokens.cli import main
from capacity_pipelines.tokens.costing import cost_usage
from capacity_pipelines.tokens.prices import load_price_book
from capacity_pipelines.tokens.report import (
    BudgetThreshold,
    budget_crossings,
    linear_spend_forecast,
    request_costs,
    spend_by,
    spend_forecast,
)
from capacity_pipelines.tokens.savings import (
    SavingsAssumptions,
    calibrate_reuse,
    estimated_prefix_reuse,
    measured_prefix_reuse,
    measured_useful_writes,
    savings_opportunities,
)
from capacity_pipelines.tokens.usage import validate_usage

FIXTURES = Path(__file__).parent / "fixtures" / "tokens"
AZURE = FIXTURES / "azure_llm_2023_code_first1200.csv"
MOONCAKE = FIXTURES / "mooncake_conversation_first500.jsonl"
UTC = dt.UTC


def test_cli_costs_the_azure_trace_at_the_price_of_its_new_start(tmp_path: Path, capsys):
    out = tmp_path / "azure.parquet"
    code = main(["--usage", str(AZURE), "--out", str(out), "--provider", "openai",
                 "--model", "gpt-4o", "--trace-start", "2025-09-01T00:00:00",
                 "--report-dir", str(tmp_path / "report"), "--budget", "team=500"])
    assert code == 0
    costed = pl.read_parquet(out)
    trace = pl.read_csv(AZURE)
    assert costed.height == trace.height == 1_200
    # gpt-4o from 2024-10-02: 2.50 in / 10.00 out per million tokens, no cached tokens here
    expected = trace["ContextTokens"].sum() * 2.5e-6 + trace["GeneratedTokens"].sum() * 10e-6
    assert costed["cost_usd"].sum() == pytest.approx(expected)
    assert costed["price_id"].unique().to_list() == ["openai/gpt-4o/standard/all/2024-10-02"]
    assert costed["ts"].min() == dt.datetime(2025, 9, 1, tzinfo=UTC)
    report = tmp_path / "report"
    for name in ("spend_by_day", "spend_by_model", "spend_by_provider", "savings",
                 "spend_forecast", "budget", "cache_hit_ratio_by_model", "unpriced"):
        assert (report / f"{name}.csv").is_file(), name
    summary = json.loads((report / "summary.json").read_text())
    assert summary["cost_usd"] == pytest.approx(expected)
    assert summary["forecast_history"].startswith("daily run rate")
    # flat run rate: the window's spend scaled from its span to 24 h, for 30 days
    span_s = (costed["ts"].max() - costed["ts"].min()).total_seconds()
    assert summary["forecast_30d_usd_p50"] == pytest.approx(30 * expected * 86_400 / span_s)
    assert "$" in capsys.readouterr().out


def test_cli_on_the_original_azure_dates_reports_unpriced_volume(tmp_path: Path):
    # November 2023 predates every gpt-4o price in the book: NULL cost, never zero.
    code = main(["--usage", str(AZURE), "--out", str(tmp_path / "c.parquet"), "--provider",
                 "openai", "--model", "gpt-4o", "--report-dir", str(tmp_path / "r")])
    assert code == 0
    costed = pl.read_parquet(tmp_path / "c.parquet")
    assert costed["unpriced"].all() and costed["cost_usd"].null_count() == costed.height
    unpriced = pl.read_csv(tmp_path / "r" / "unpriced.csv")
    assert unpriced["input_tokens"].sum() == pl.read_csv(AZURE)["ContextTokens"].sum()


def test_cli_on_mooncake_measures_prefix_reuse(tmp_path: Path):
    code = main(["--usage", str(MOONCAKE), "--out", str(tmp_path / "c.parquet"),
                 "--provider", "anthropic", "--model", "claude-sonnet-4-20250514",
                 "--report-dir", str(tmp_path / "r")])
    assert code == 0
    costed = pl.read_parquet(tmp_path / "c.parquet")
    assert costed.height == 500 and not costed["unpriced"].any()
    assert "hash_ids" in costed.columns  # every input column is carried through
    savings = pl.read_csv(tmp_path / "r" / "savings.csv")
    caching = savings.filter(pl.col("opportunity") == "prompt caching").row(0, named=True)
    assert caching["basis"].startswith("measured prefix reuse")
    # Claude bills every written prompt at 1.25 × input: on 2.75 minutes of cold cache the
    # write premium outweighs the reads, and the estimate says so instead of hiding it ...
    assert caching["window_savings_usd"] < 0
    # ... while writing only the prefixes that are reused later is a saving (the upper bound).
    selective = savings.filter(pl.col("opportunity").str.contains("breakpoints")).row(0, named=True)
    assert selective["window_savings_usd"] > 0
    # OpenAI charges no write premium, so the same measured reuse is a pure saving:
    # reused tokens × (2.50 − 1.25) per M.
    usage = pl.read_parquet(tmp_path / "c.parquet").with_columns(
        provider=pl.lit("openai"), model=pl.lit("gpt-4o")
    )
    costed = cost_usage(validate_usage(usage, "t"), load_price_book())
    reused = measured_prefix_reuse(costed).sum()
    savings = savings_opportunities(costed, load_price_book())
    caching = savings.filter(pl.col("opportunity") == "prompt caching").row(0, named=True)
    assert reused > 0
    assert caching["window_savings_usd"] == pytest.approx(reused * 1.25e-6)
    # with no write premium, where the breakpoints go does not change the saving
    selective = savings.filter(pl.col("opportunity").str.contains("breakpoints")).row(0, named=True)
    assert selective["window_savings_usd"] == pytest.approx(reused * 1.25e-6)


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("ts,provider,model,input_tokens,output_tokens\n"
         "2025-07-01T00:00:00,openai,gpt-4o,NaN,3\n", [],
         "column input_tokens: 1 row(s) are NaN, first at row 0"),
        ("ts,provider,model,input_tokens,output_tokens\n"
         "2025-07-01T00:00:00,openai,gpt-4o,-4,3\n", [],
         "column input_tokens: 1 row(s) are negative"),
        ("ts,provider,model,input_tokens,output_tokens\n"
         "2025-07-01T00:00:00,openai,gpt-4o,many,3\n", [],
         "column input_tokens: wrong type"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,10,2\n", [],
         "column provider: missing (trace files without it need --provider)"),
        ("ts,provider,model,input_tokens,output_tokens\n"
         "2025-07-01T00:00:00,openai,gpt-4o,1,3\n", ["--budget", "lots"],
         "--budget: expected NAME=USD"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, capsys, content, extra, message
):
    usage = tmp_path / "u.csv"
    usage.write_text(content)
    out = tmp_path / "c.parquet"
    assert main(["--usage", str(usage), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [usage]


def _costed(rows: list[dict]) -> pl.DataFrame:
    frame = pl.DataFrame(rows).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    return cost_usage(validate_usage(frame, "t"), load_price_book())


def test_cost_per_request_fan_out_and_amplification():
    t0 = dt.datetime(2025, 7, 1)
    rows = [  # conversation a: one agent, 1,000 tokens; b: three agents, 6,000 tokens
        dict(ts=t0, conversation_id="a", agent="chat", input_tokens=900, output_tokens=100),
        dict(ts=t0, conversation_id="b", agent="planner", input_tokens=1_800, output_tokens=200),
        dict(ts=t0, conversation_id="b", agent="coder", input_tokens=1_800, output_tokens=200),
        dict(ts=t0, conversation_id="b", agent="critic", input_tokens=1_800, output_tokens=200),
    ]
    costed = _costed([{**r, "provider": "openai", "model": "gpt-4o"} for r in rows])
    per_request, summary = request_costs(costed)
    assert summary["request_column"] == "conversation_id"
    assert summary["amplification_factor"] == pytest.approx(6.0)
    assert summary["llm_calls_per_request_mean"] == pytest.approx(2.0)
    # b: 5,400 in × 2.5 + 600 out × 10 per M = 0.0135 + 0.006
    assert per_request.filter(pl.col("conversation_id") == "b")["cost_usd"][0] == pytest.approx(
        0.0195
    )


def test_spend_trend_by_agent():
    rows = [dict(ts=dt.datetime(2025, 7, d), agent="grows", input_tokens=1_000 * d,
                 output_tokens=0, provider="openai", model="gpt-4o") for d in (1, 2, 9, 10)]
    by_agent = spend_by(_costed(rows), "agent").row(0, named=True)
    # first half 3,000 tokens, second half 19,000 tokens
    assert by_agent["trend_second_vs_first_half"] == pytest.approx(19 / 3 - 1)
    assert by_agent["share"] == pytest.approx(1.0)


def test_linear_forecast_recovers_a_line_and_the_forecaster_is_pluggable():
    days = [dt.datetime(2025, 6, 1, tzinfo=UTC) + dt.timedelta(days=i) for i in range(20)]
    history = pl.DataFrame({"series_id": ["s"] * 20, "ts": days,
                            "value": [10.0 + 2 * i for i in range(20)]})
    forecast = linear_spend_forecast(history, 3)
    assert forecast["point"].to_list() == pytest.approx([50.0, 52.0, 54.0])
    assert forecast["p95"].to_list() == pytest.approx([50.0, 52.0, 54.0], abs=1e-6)

    rows = [dict(ts=dt.datetime(2025, 9, 1) + dt.timedelta(days=i), input_tokens=4_000_000,
                 output_tokens=0, provider="openai", model="gpt-4o") for i in range(5)]
    costed = _costed(rows)  # $10 per day, 2025-09-01 .. 09-05

    def flat_hundred(history: pl.DataFrame, horizon: int) -> pl.DataFrame:
        last = history["ts"].max()
        return pl.DataFrame({
            "series_id": ["x"] * horizon,
            "ts": [last + dt.timedelta(days=h) for h in range(1, horizon + 1)],
            **{q: [100.0] * horizon for q in ("point", "p50", "p80", "p90", "p95")},
        })

    forecast, _ = spend_forecast(costed, 30, forecaster=flat_hundred)
    # history ends 09-04 (the last day is partial), forecast from 09-05 at $100 per day;
    # month to date $50 -> $1,000 reached after 10 forecast days: 2025-09-14
    crossings = budget_crossings(costed, forecast, [BudgetThreshold("team", 1_000.0)])
    assert crossings["crossing_date_p50"][0] == dt.date(2025, 9, 14)
    already = budget_crossings(costed, forecast, [BudgetThreshold("tiny", 20.0)])
    assert already["crossing_date_p50"][0] == dt.date(2025, 9, 5)


def test_measured_prefix_reuse_follows_prefixes_and_ttl():
    t0 = dt.datetime(2025, 9, 1, tzinfo=UTC)
    trace = pl.DataFrame({
        "ts": [t0, t0 + dt.timedelta(minutes=1), t0 + dt.timedelta(minutes=10),
               t0 + dt.timedelta(minutes=11)],
        "input_tokens": [1_536, 1_536, 1_536, 1_536],
        "hash_ids": [[1, 2, 3], [1, 2, 4], [1, 2, 3], [9, 2, 3]],
    })
    # B reuses blocks 1, 2 (1,024 tokens); C comes 9 minutes after the last use of block 1 (TTL
    # 5 min): miss; D starts with an unseen block, so its cached 2, 3 are not a prefix: 0.
    assert measured_prefix_reuse(trace).to_list() == [0, 1_024, 0, 0]
    assert measured_prefix_reuse(trace, cache_ttl=None).to_list() == [0, 1_024, 1_536, 0]
    # below the providers' 1,024-token minimum nothing is cached
    assert measured_prefix_reuse(trace, min_cacheable_tokens=2_048).to_list() == [0, 0, 0, 0]
    # Hindsight writes: A's blocks 1, 2 are reused by B (write 2 blocks); B writes nothing useful;
    # C's blocks 2, 3 are reused by D one minute later (write up to block 3: 3 blocks); D nothing.
    assert measured_useful_writes(trace).to_list() == [1_024, 0, 1_536, 0]


def test_calibrated_reuse_estimate_on_data_without_block_ids():
    trace = pl.DataFrame({"input_tokens": [2_000, 2_000, 10_000], "hash_ids": [[1], [1], [2]]})
    table = calibrate_reuse(trace, pl.Series([0.0, 1_000.0, 5_000.0]))
    assert table["1k-4k"] == pytest.approx(0.25) and table["4k-16k"] == pytest.approx(0.5)
    estimate = estimated_prefix_reuse(pl.DataFrame({"input_tokens": [4_000, 8_000]}), table)
    assert estimate.to_list() == pytest.approx([1_000.0, 4_000.0])


def test_savings_batch_for_labelled_agents_is_exact():
    rows = [dict(ts=dt.datetime(2025, 7, 1, h), agent=a, input_tokens=1_000_000,
                 output_tokens=0, provider="openai", model="gpt-4o-mini")
            for h, a in ((1, "chat"), (2, "nightly-report"))]
    savings = savings_opportunities(
        _costed(rows), load_price_book(),
        SavingsAssumptions(non_interactive_agents=("nightly-report",)),
    )
    batch = savings.filter(pl.col("opportunity").str.starts_with("batch")).row(0, named=True)
    # 1M tokens at 0.15 standard vs 0.075 batch per M
    assert batch["window_savings_usd"] == pytest.approx(0.075)
    assert batch["basis"] == "labelled agents"


def test_generic_request_log_with_agents_and_conversations(tmp_path: Path):
    # A per-request JSONL log in OpenAI usage spelling: prompt/completion/cached tokens.
    t0 = "2025-07-01T10:00:00"
    lines = [
        {"timestamp": t0, "model": "gpt-4o", "agent": "chat", "conversation_id": "a",
         "prompt_tokens": 900, "completion_tokens": 100, "cached_tokens": 0},
        {"timestamp": t0, "model": "gpt-4o", "agent": "planner", "conversation_id": "b",
         "prompt_tokens": 2_000, "completion_tokens": 200, "cached_tokens": 1_000},
        {"timestamp": t0[:-2] + "05", "model": "gpt-4o", "agent": "coder", "conversation_id": "b",
         "prompt_tokens": 3_600, "completion_tokens": 200, "cached_tokens": 0},
    ]
    usage = tmp_path / "calls.jsonl"
    usage.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report = tmp_path / "r"
    assert main(["--usage", str(usage), "--out", str(tmp_path / "c.parquet"),
                 "--provider", "openai", "--report-dir", str(report)]) == 0
    costed = pl.read_parquet(tmp_path / "c.parquet")
    # b/planner: 1,000 uncached × 2.5 + 1,000 cached × 1.25 + 200 out × 10 per M = 0.00575
    assert costed["cost_usd"][1] == pytest.approx(0.00575)
    summary = json.loads((report / "summary.json").read_text())
    assert summary["requests"]["amplification_factor"] == pytest.approx(6_000 / 1_000)
    assert summary["cache_hit_ratio"] == pytest.approx(1_000 / 6_500)
    savings = pl.read_csv(report / "savings.csv")
    filtering = savings.filter(pl.col("opportunity") == "intermediate-message filtering")
    # 30 % of the coder's 3,600 uncached input tokens at 2.50 per M
    assert filtering["window_savings_usd"][0] == pytest.approx(0.3 * 3_600 * 2.5e-6)


def test_token_cost_package_does_not_import_dagster():
    import subprocess
    import sys

    code = (
        "import sys, capacity_pipelines.tokens.cli, capacity_pipelines.tokens.report;"
        " sys.exit('dagster' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

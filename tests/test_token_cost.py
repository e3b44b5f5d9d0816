"""Token costing against hand-computed bills (prices per million tokens from the built-in book)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from capacity_pipelines.tokens.costing import cost_usage, unpriced_summary
from capacity_pipelines.tokens.prices import PriceBookError, load_price_book
from capacity_pipelines.tokens.usage import UsageContractError, validate_usage


def at(day: str, hour: int = 12) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=dt.UTC)


def usage(*rows: dict) -> pl.DataFrame:
    """Usage frame with every contract column; missing optional values are null."""
    cols = {
        "ts": pl.Datetime("us", "UTC"),
        "provider": pl.String,
        "model": pl.String,
        "agent": pl.String,
        "input_tokens": pl.Int64,
        "output_tokens": pl.Int64,
        "cache_read_input_tokens": pl.Int64,
        "cache_write_input_tokens": pl.Int64,
        "service_tier": pl.String,
    }
    extra = {k for r in rows for k in r} - set(cols)
    schema = {**cols, **{k: (pl.String if k == "cache_write_ttl" else pl.Float64) for k in extra}}
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def cost(book, *rows: dict) -> pl.DataFrame:
    return cost_usage(validate_usage(usage(*rows), "test.parquet"), book)


def test_cached_input_is_a_subset_of_input(book):
    # gpt-4o from 2024-10-02: input 2.50, cached 1.25, output 10.00 per M.
    # 6,000 uncached × 2.50 + 4,000 cached × 1.25 + 1,000 out × 10 = 0.015 + 0.005 + 0.010
    c = cost(book, dict(ts=at("2025-01-01"), provider="openai", model="gpt-4o",
                        input_tokens=10_000, output_tokens=1_000, cache_read_input_tokens=4_000))
    row = c.row(0, named=True)
    assert row["cost_input_usd"] == pytest.approx(0.015)
    assert row["cost_cache_read_usd"] == pytest.approx(0.005)
    assert row["cost_output_usd"] == pytest.approx(0.010)
    assert row["cost_usd"] == pytest.approx(0.030)
    assert row["price_id"] == "openai/gpt-4o/standard/all/2024-10-02"


def test_cache_writes_priced_by_ttl(book):
    # claude-sonnet-4: input 3, output 15, cache write 5m 3.75, 1h 6.00 per M.
    # 2,000 uncached × 3 + 8,000 written × 3.75 + 500 out × 15 = 0.006 + 0.030 + 0.0075 = 0.0435
    # with a 1-hour TTL the write is 8,000 × 6 = 0.048 -> 0.0615
    base = dict(ts=at("2025-07-01"), provider="anthropic", model="claude-sonnet-4",
                input_tokens=10_000, output_tokens=500, cache_write_input_tokens=8_000)
    c = cost(book, {**base, "cache_write_ttl": "5m"}, {**base, "cache_write_ttl": "1h"})
    assert c["cost_cache_write_usd"].to_list() == pytest.approx([0.030, 0.048])
    assert c["cost_usd"].to_list() == pytest.approx([0.0435, 0.0615])


def test_batch_tier(book):
    # gpt-4o-mini: standard 0.15 / 0.60, batch 0.075 / 0.30 per M.
    # 100k in + 20k out: standard 0.015 + 0.012 = 0.027, batch 0.0075 + 0.006 = 0.0135
    row = dict(ts=at("2025-01-01"), provider="openai", model="gpt-4o-mini",
               input_tokens=100_000, output_tokens=20_000)
    c = cost(book, {**row, "service_tier": None}, {**row, "service_tier": "Batch"})
    assert c["cost_usd"].to_list() == pytest.approx([0.027, 0.0135])
    assert c["price_id"][1] == "openai/gpt-4o-mini/batch/all/2024-07-18"


def test_price_change_in_the_middle_of_the_window(book):
    # o3 was cut from 10 / 40 to 2 / 8 per M on 2025-06-10 (00:00 UTC).
    # 1M in + 100k out: before 10 + 4 = 14.0; after 2 + 0.8 = 2.8
    row = dict(provider="openai", model="o3", input_tokens=1_000_000, output_tokens=100_000)
    c = cost(book, {**row, "ts": at("2025-06-09", 23)}, {**row, "ts": at("2025-06-10", 1)})
    assert c["cost_usd"].to_list() == pytest.approx([14.0, 2.8])
    assert c["price_id"].to_list() == [
        "openai/o3/standard/all/2025-04-16",
        "openai/o3/standard/all/2025-06-10",
    ]


def test_gpt4o_alias_price_history(book):
    # The gpt-4o alias cost 5 / 15 until 2024-10-02, then 2.50 / 10.
    row = dict(provider="openai", model="gpt-4o", input_tokens=1_000_000, output_tokens=0)
    c = cost(book, {**row, "ts": at("2024-09-30")}, {**row, "ts": at("2024-10-03")})
    assert c["cost_usd"].to_list() == pytest.approx([5.0, 2.5])


def test_unknown_model_is_unpriced_never_zero(book):
    c = cost(
        book,
        dict(ts=at("2025-07-01"), provider="acme", model="acme-large", input_tokens=1_234,
             output_tokens=56),
        dict(ts=at("2025-07-01"), provider="openai", model="gpt-4o", input_tokens=1_000,
             output_tokens=0),
    )
    assert c["cost_usd"][0] is None and c["unpriced"][0]
    assert c["price_id"][0] is None
    assert c["cost_usd"][1] == pytest.approx(0.0025) and not c["unpriced"][1]
    summary = unpriced_summary(c, book).row(0, named=True)
    assert summary["model"] == "acme-large"
    assert summary["input_tokens"] == 1_234 and summary["output_tokens"] == 56
    assert summary["reason"] == "model not in price book"


def test_model_known_but_not_yet_priced_is_unpriced(book):
    # claude-sonnet-4 has no price before its 2025-05-22 release; no batch price for a made-up tier.
    c = cost(
        book,
        dict(ts=at("2025-01-01"), provider="anthropic", model="claude-sonnet-4",
             input_tokens=10, output_tokens=10),
        dict(ts=at("2025-07-01"), provider="anthropic", model="claude-sonnet-4",
             input_tokens=10, output_tokens=10, service_tier="priority"),
    )
    assert c["unpriced"].to_list() == [True, True]
    reasons = set(unpriced_summary(c, book)["reason"])
    assert "no priority price for claude-sonnet-4" in reasons
    assert any("valid at these dates" in r for r in reasons)


def test_zero_token_failed_calls_cost_zero_not_null(book):
    c = cost(book, dict(ts=at("2025-07-01"), provider="openai", model="gpt-4o",
                        input_tokens=0, output_tokens=0, cache_read_input_tokens=0))
    assert c["cost_usd"][0] == 0.0
    assert not c["unpriced"][0]


@pytest.mark.parametrize(
    ("model", "price_id", "expected"),  # expected: input price per M (test costs 100k tokens)
    [
        # dated snapshot matched by the declared pattern
        ("claude-sonnet-4-20250514", "anthropic/claude-sonnet-4/standard/all/2025-05-22", 3.0),
        # an exact name wins over the pattern: the May snapshot kept its 5 / 15 price
        ("gpt-4o-2024-05-13", "openai/gpt-4o-2024-05-13/standard/all/2024-05-13", 5.0),
        ("gpt-4o-2024-08-06", "openai/gpt-4o-snapshot/standard/all/2024-10-01", 2.5),
        # routing prefix and case are ignored
        ("openai/GPT-4.1-mini-2025-04-14", "openai/gpt-4.1-mini/standard/all/2025-04-14", 0.4),
        # a pattern is a full match: a different product is not priced as gpt-4o-mini
        ("gpt-4o-mini-tts", None, None),
    ],
)
def test_pattern_matching_of_dated_model_names(book, model, price_id, expected):
    provider = "anthropic" if model.startswith("claude") else "openai"
    c = cost(book, dict(ts=at("2025-07-01"), provider=provider, model=model,
                        input_tokens=100_000, output_tokens=0))
    assert c["price_id"][0] == price_id
    assert c["cost_usd"][0] == (pytest.approx(expected / 10) if expected is not None else None)


def test_provider_aliases_from_otel_and_litellm(book):
    c = cost(book, dict(ts=at("2025-07-01"), provider="gcp.gemini", model="gemini-2.5-flash",
                        input_tokens=1_000_000, output_tokens=0))
    assert c["cost_usd"][0] == pytest.approx(0.30)


def test_context_tier_above_200k_prompt_tokens(book):
    # gemini-2.5-pro: <= 200k prompt 1.25 / 10; > 200k prompt 2.50 / 15 per M.
    # 250k in + 1k out = 0.625 + 0.015 = 0.64; exactly 200k = 0.25 + 0.01 = 0.26
    row = dict(ts=at("2025-07-01"), provider="google", model="gemini-2.5-pro", output_tokens=1_000)
    c = cost(book, {**row, "input_tokens": 250_000}, {**row, "input_tokens": 200_000})
    assert c["cost_usd"].to_list() == pytest.approx([0.64, 0.26])
    assert c["price_id"][0].endswith("/>200k/2025-06-17")


def test_aggregated_rows_use_the_mean_call_for_the_context_tier(book):
    # 5 calls of 100k tokens each are all in the base tier: 500k × 1.25 = 0.625
    c = cost(book, dict(ts=at("2025-07-01"), provider="google", model="gemini-2.5-pro",
                        input_tokens=500_000, output_tokens=0, requests=5.0))
    assert c["cost_usd"][0] == pytest.approx(0.625)


def test_reasoning_tokens_billed_as_output_unless_priced(book, tmp_path: Path):
    # o4-mini output 4.40 per M; 1,000 output tokens of which 800 reasoning: 0.0044
    row = dict(ts=at("2025-07-01"), provider="openai", model="o4-mini", input_tokens=0,
               output_tokens=1_000, reasoning_output_tokens=800.0)
    assert cost(book, row)["cost_usd"][0] == pytest.approx(0.0044)
    # a book with a separate reasoning price: 200 × 4 + 800 × 1 per M = 0.0016
    (tmp_path / "r.yaml").write_text(
        "provider: lab\nsource: {url: internal://x}\nmodels:\n"
        "  - model: thinker\n    prices:\n"
        "      - {effective_from: 2025-01-01, input: 1, output: 4, reasoning: 1}\n"
    )
    own = load_price_book(tmp_path / "r.yaml", builtin=False)
    c = cost(own, {**row, "provider": "lab", "model": "thinker"})
    assert c["cost_usd"][0] == pytest.approx(0.0016)


def test_contract_discount_is_dated(tmp_path: Path):
    (tmp_path / "contract.yaml").write_text(
        "discounts:\n"
        "  - {provider: anthropic, model_pattern: 'claude-sonnet-4.*', percent: 15,"
        " effective_from: 2025-07-01, effective_to: 2026-01-01}\n"
    )
    book = load_price_book(tmp_path / "contract.yaml")
    # the cache-write example above (0.0435) with and without the 15 % discount
    row = dict(provider="anthropic", model="claude-sonnet-4-20250514", input_tokens=10_000,
               output_tokens=500, cache_write_input_tokens=8_000)
    c = cost(book, {**row, "ts": at("2025-06-30")}, {**row, "ts": at("2025-07-15")},
             {**row, "provider": "openai", "model": "gpt-4o", "ts": at("2025-07-15")})
    assert c["cost_usd"][:2].to_list() == pytest.approx([0.0435, 0.0435 * 0.85])
    assert c["discount_pct"].to_list() == [0.0, 15.0, 0.0]


def test_override_model_replaces_builtin_prices(tmp_path: Path):
    (tmp_path / "mine.yaml").write_text(
        "provider: openai\nsource: {url: internal://contract}\nmodels:\n"
        "  - model: gpt-4o\n    prices:\n"
        "      - {effective_from: 2024-01-01, input: 1.0, output: 1.0}\n"
    )
    book = load_price_book(tmp_path)
    c = cost(book, dict(ts=at("2025-01-01"), provider="openai", model="gpt-4o",
                        input_tokens=1_000_000, output_tokens=1_000_000, service_tier="batch"),
             dict(ts=at("2025-01-01"), provider="openai", model="gpt-4o",
                  input_tokens=1_000_000, output_tokens=1_000_000))
    # the override has no batch price, and the built-in one is not mixed in
    assert c["unpriced"].to_list() == [True, False]
    assert c["cost_usd"][1] == pytest.approx(2.0)


def test_every_row_comes_back_in_order(book):
    rows = [dict(ts=at("2025-07-01", h % 24), provider="openai",
                 model=["gpt-4o", "nope", "o3"][h % 3], input_tokens=h, output_tokens=h)
            for h in range(50)]
    c = cost(book, *rows)
    assert c.height == 50
    assert c["input_tokens"].to_list() == list(range(50))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input_tokens": float("nan")}, "column input_tokens: 1 row(s) are NaN, first at row 1"),
        ({"output_tokens": -5.0}, "column output_tokens: 1 row(s) are negative, first at row 1"),
        ({"input_tokens": float("inf")}, "column input_tokens: 1 row(s) are infinite"),
        ({"cache_read_input_tokens": 900.0, "cache_write_input_tokens": 200.0},
         "cache_read + cache_write > input_tokens"),
    ],
)
def test_bad_counts_are_one_line_errors(book, change, message):
    frame = pl.DataFrame({
        "ts": [at("2025-07-01"), at("2025-07-02")],
        "provider": ["openai"] * 2, "model": ["gpt-4o"] * 2,
        "input_tokens": [1_000.0, 1_000.0], "output_tokens": [10.0, 10.0],
        "cache_read_input_tokens": [0.0, 0.0], "cache_write_input_tokens": [0.0, 0.0],
    })
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(pl.lit(v)).otherwise(pl.col(k)).alias(k)
        for k, v in change.items()
    )
    with pytest.raises(UsageContractError) as err:
        validate_usage(frame, "u.parquet")
    assert str(err.value).startswith("u.parquet: column ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_column_and_wrong_type():
    good = usage(dict(ts=at("2025-07-01"), provider="openai", model="gpt-4o",
                      input_tokens=1, output_tokens=1))
    with pytest.raises(UsageContractError, match="u.csv: column model: missing"):
        validate_usage(good.drop("model"), "u.csv")
    with pytest.raises(UsageContractError, match="column input_tokens: wrong type String"):
        validate_usage(good.with_columns(pl.col("input_tokens").cast(pl.String)), "u.csv")
    with pytest.raises(UsageContractError, match="column ts: wrong type String"):
        validate_usage(good.with_columns(pl.col("ts").cast(pl.String)), "u.csv")


def test_price_book_errors_name_file_and_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "provider: x\nsource: {url: u}\nmodels:\n  - model: m\n    prices:\n"
        "      - {effective_from: 2025-01-01, input: -1, output: 1}\n"
    )
    with pytest.raises(PriceBookError, match=r"bad.yaml: model m: prices\[0\]: input"):
        load_price_book(bad, builtin=False)
    bad.write_text(
        "provider: x\nsource: {url: u}\nmodels:\n  - model: m\n    prices:\n"
        "      - {effective_from: 2025-01-01, input: 1, output: 1}\n"
        "      - {effective_from: 2025-03-01, input: 2, output: 1}\n"
    )
    with pytest.raises(PriceBookError, match="overlaps"):
        load_price_book(bad, builtin=False)


def test_builtin_book_rows_have_sources_and_the_required_grain(book):
    rows = book.rows()
    assert rows["source_url"].str.starts_with("https://").all()
    assert {"input", "output", "cache_read", "cache_write"} <= set(rows["token_class"])
    assert set(rows.filter(pl.col("token_class") == "cache_write")["cache_ttl"]) == {"5m", "1h"}
    assert {"standard", "batch"} <= set(rows["service_tier"])
    assert {"all", ">200k"} <= set(rows["context_tier"])
    keys = ["provider", "model", "token_class", "cache_ttl", "service_tier", "context_tier",
            "effective_from"]
    assert rows.select(keys).is_duplicated().sum() == 0
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "o3", "o4-mini", "claude-sonnet-4",
                  "claude-opus-4", "claude-3-5-haiku", "gemini-2.5-pro", "gemini-2.5-flash"):
        assert model in set(rows["model"])


def test_the_shipped_override_example_loads_and_applies():
    from capacity_pipelines.tokens.prices import BUILTIN_PRICE_DIR

    book = load_price_book(BUILTIN_PRICE_DIR / "override.example.yaml")
    c = cost(
        book,
        # own model through a routing prefix: 1M in + 1M out at 0.40 each
        dict(ts=at("2026-02-01"), provider="vllm", model="meta-llama/Llama-3.1-70B-Instruct",
             input_tokens=1_000_000, output_tokens=1_000_000),
        # the dated 15 % Anthropic discount: 100k sonnet input tokens = 0.30 × 0.85
        dict(ts=at("2026-02-01"), provider="anthropic", model="claude-sonnet-4",
             input_tokens=100_000, output_tokens=0),
    )
    assert c["cost_usd"].to_list() == pytest.approx([0.8, 0.3 * 0.85])

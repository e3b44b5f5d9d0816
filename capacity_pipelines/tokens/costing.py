"""Vectorised token costing: each usage row × the price set valid at its timestamp.

Billing arithmetic (OpenTelemetry GenAI rule: cache reads and writes are SUBSETS of input, and
reasoning tokens a subset of output, so nothing is billed twice):

    uncached input = input − cache_read − cache_write          × input price
    cache_read                                                 × cache-read price (else input)
    cache_write                                                × cache-write price of its TTL
                                                                 (default 5m; else input)
    output − reasoning                                         × output price
    reasoning                                                  × reasoning price (else output)
    cost_usd = sum × (1 − contract discount %)

Rows whose model (or tier, or date) has no price get `cost_usd` NULL and `unpriced` true: an
unknown model costed at zero would hide exactly the spend nobody is watching.

The work is a handful of column expressions and two hash joins against small tables (distinct
provider/model pairs, price sets); the only per-item Python is over distinct model names, price
sets and discount rules, never over usage rows.
"""

from __future__ import annotations

import polars as pl

from capacity_pipelines.tokens.prices import (
    BASE_CONTEXT_TIER,
    DEFAULT_SERVICE_TIER,
    PRICE_CLASSES,
    TOKENS_PER_PRICE_UNIT,
    PriceBook,
    normalise_model_name,
)

# Anthropic's cache TTL when the request does not set one ("ephemeral" = 5 minutes); OpenAI and
# Google bill writes as plain input, so the TTL does not change their cost.
DEFAULT_CACHE_WRITE_TTL = "5m"

COST_COLUMNS = (
    "cost_input_usd",
    "cost_cache_read_usd",
    "cost_cache_write_usd",
    "cost_output_usd",
    "discount_pct",
    "cost_usd",
    "price_id",
    "unpriced",
)

_INTERNAL = "__tc_"  # prefix of helper columns, dropped before returning


def _tokens(usage: pl.DataFrame, col: str) -> pl.Expr:
    """A token column as Float64, zero when absent or null (optional subsets)."""
    if col in usage.columns:
        return pl.col(col).cast(pl.Float64).fill_null(0.0)
    return pl.lit(0.0)


def _label_key(usage: pl.DataFrame) -> pl.Expr:
    """A 64-bit hash of (provider, model, service_tier) per row.

    Hashing three string columns is several times cheaper than grouping or joining on them, and
    the distinct labels are few (tens), so a collision between two real label triples is
    vanishingly unlikely (~n²/2⁶⁴).
    """
    tier = pl.col("service_tier") if "service_tier" in usage.columns else pl.lit(None, pl.String)
    return (
        pl.col("provider").hash(seed=1)
        ^ pl.col("model").hash(seed=2)
        ^ tier.cast(pl.String).hash(seed=3)
    ).alias(f"{_INTERNAL}key")


def _label_table(usage: pl.DataFrame, book: PriceBook, keys: pl.Series) -> pl.DataFrame:
    """Distinct label triples with their priced-model id and normalised service tier.

    The strings are read only at the first row of each distinct key, so the per-row work is the
    hash, not string handling.
    """
    first_rows = keys.arg_unique()
    tier = pl.col("service_tier") if "service_tier" in usage.columns else pl.lit(None, pl.String)
    labels = usage[first_rows].select(
        pl.Series(f"{_INTERNAL}key", keys.gather(first_rows)),
        "provider",
        "model",
        tier.cast(pl.String).alias("service_tier"),
    )
    resolved = [book.resolve_model(p, m) for p, m in labels.select("provider", "model").iter_rows()]
    tiers = [(t or DEFAULT_SERVICE_TIER).strip().lower() for t in labels["service_tier"]]
    return labels.with_columns(
        pl.Series("price_provider", [r[0] if r else None for r in resolved], dtype=pl.String),
        pl.Series("price_model", [r[1] if r else None for r in resolved], dtype=pl.String),
        pl.Series("price_tier", tiers, dtype=pl.String),
    )


def _price_table(book: PriceBook, breaks: pl.Series) -> pl.DataFrame:
    """Price sets expanded to one row per global validity period they cover.

    The union of every set's start and end dates cuts time into periods; a usage row finds its
    period with a binary search (`search_sorted`), so the join is a plain equi-join with no sort
    of the usage rows. Period p covers [breaks[p-1], breaks[p]).
    """
    sets = book.price_sets()
    start = breaks.search_sorted(sets["effective_from"], side="right")
    end = pl.Series(
        [
            len(breaks) + 1 if e is None else int(breaks.search_sorted(e, side="right"))
            for e in sets["effective_to"]
        ],
        dtype=pl.UInt32,
    )
    return sets.with_columns(
        pl.int_ranges(start, end, dtype=pl.UInt32).alias(f"{_INTERNAL}period")
    ).explode(f"{_INTERNAL}period")


def _discount_expr(labels: pl.DataFrame, book: PriceBook) -> pl.Expr:
    """Discount percent per row; the last matching rule wins (rules are few, rows are many)."""
    pct: pl.Expr = pl.lit(0.0)
    for d in book.discounts:
        matching = [
            key
            for key, provider, model in labels.select(
                f"{_INTERNAL}key", "provider", "model"
            ).iter_rows()
            if model is not None
            and d.model_pattern.fullmatch(normalise_model_name(model))
            and (d.provider is None or book.canonical_provider(provider) == d.provider)
        ]
        if not matching:
            continue
        cond = pl.col(f"{_INTERNAL}key").is_in(matching) & (pl.col("ts") >= d.effective_from)
        if d.effective_to is not None:
            cond = cond & (pl.col("ts") < d.effective_to)
        pct = pl.when(cond).then(pl.lit(d.percent)).otherwise(pct)
    return pct


def cost_usage(usage: pl.DataFrame, book: PriceBook) -> pl.DataFrame:
    """Cost validated usage rows (see `usage.validate_usage`); every input row comes back in order.

    Adds `cost_input_usd`, `cost_cache_read_usd`, `cost_cache_write_usd`, `cost_output_usd`,
    `discount_pct`, `cost_usd` (NULL when unpriced), `price_id` and `unpriced`.
    """
    k = _INTERNAL
    # Re-costing an already costed file replaces its cost columns instead of clashing with them.
    usage = usage.drop([c for c in COST_COLUMNS if c in usage.columns])
    keys = usage.select(_label_key(usage)).to_series()
    labels = _label_table(usage, book, keys)

    breaks = pl.Series(
        sorted(
            {s.effective_from for s in book.sets}
            | {s.effective_to for s in book.sets if s.effective_to}
        ),
        dtype=pl.Datetime("us", "UTC"),
    )
    # One integer per (priced model, tier) the usage actually needs; the per-row join is on ints.
    prices = _price_table(book, breaks).join(
        labels.select("price_provider", "price_model", "price_tier").unique(),
        left_on=["provider", "price_model", "service_tier"],
        right_on=["price_provider", "price_model", "price_tier"],
        how="semi",
    )
    combos = (
        labels.select("price_provider", "price_model", "price_tier")
        .unique()
        .drop_nulls("price_model")
        .with_row_index(f"{k}combo")
        .with_columns(pl.col(f"{k}combo").cast(pl.Int32))
    )
    labels = labels.join(
        combos, on=["price_provider", "price_model", "price_tier"], how="left", nulls_equal=True
    )
    prices = prices.join(
        combos,
        left_on=["provider", "price_model", "service_tier"],
        right_on=["price_provider", "price_model", "price_tier"],
        how="inner",
    ).select(
        f"{k}combo",
        pl.col("above_prompt_tokens").alias(f"{k}ctx"),
        f"{k}period",
        "price_id",
        *[f"usd_per_mtok_{c}" for c in PRICE_CLASSES],
    )

    # Context tier: prompt size per LLM call. Aggregated rows (`requests` > 1) use the mean call,
    # an approximation: a step that mixes short and >200k prompts is costed at one tier.
    prompt = _tokens(usage, "input_tokens")
    if "requests" in usage.columns:
        calls = pl.col("requests").cast(pl.Float64)
        prompt = pl.when(calls > 1).then(prompt / calls).otherwise(prompt)
    ctx: pl.Expr = pl.lit(BASE_CONTEXT_TIER, dtype=pl.Int64)
    thresholds = (
        prices.filter(pl.col(f"{k}ctx") > BASE_CONTEXT_TIER)
        .select(f"{k}combo", f"{k}ctx")
        .unique()
        .sort(f"{k}ctx")
    )
    for combo, threshold in thresholds.iter_rows():
        ctx = (
            pl.when((pl.col(f"{k}combo") == combo) & (prompt > threshold))
            .then(pl.lit(threshold, dtype=pl.Int64))
            .otherwise(ctx)
        )

    joined = (
        usage.with_columns(keys)
        .join(
            labels.select(f"{k}key", f"{k}combo"),
            on=f"{k}key",
            how="left",
            maintain_order="left",
        )
        .with_columns(
            pl.Series(f"{k}period", breaks.search_sorted(usage["ts"], side="right")),
            ctx.alias(f"{k}ctx"),
        )
        .join(
            prices,
            on=[f"{k}combo", f"{k}ctx", f"{k}period"],
            how="left",
            maintain_order="left",
        )
    )

    def price(cls: str) -> pl.Expr:
        return pl.col(f"usd_per_mtok_{cls}")

    inp = _tokens(usage, "input_tokens")
    out = _tokens(usage, "output_tokens")
    cache_read = _tokens(usage, "cache_read_input_tokens")
    cache_write = _tokens(usage, "cache_write_input_tokens")
    reasoning = _tokens(usage, "reasoning_output_tokens")
    write_price_5m = pl.coalesce(price("cache_write_5m"), price("input"))
    if "cache_write_ttl" in usage.columns:
        ttl = pl.col("cache_write_ttl").cast(pl.String).fill_null(DEFAULT_CACHE_WRITE_TTL)
        write_price = (
            pl.when(ttl == "1h")
            .then(pl.coalesce(price("cache_write_1h"), write_price_5m))
            .otherwise(write_price_5m)
        )
    else:
        write_price = write_price_5m
    per_token = 1.0 / TOKENS_PER_PRICE_UNIT
    keep = 1.0 - pl.col("discount_pct") / 100.0

    costed = (
        joined.with_columns(
            ((inp - cache_read - cache_write) * price("input") * per_token).alias("cost_input_usd"),
            (cache_read * pl.coalesce(price("cache_read"), price("input")) * per_token).alias(
                "cost_cache_read_usd"
            ),
            (cache_write * write_price * per_token).alias("cost_cache_write_usd"),
            (
                (
                    (out - reasoning) * price("output")
                    + reasoning * pl.coalesce(price("reasoning"), price("output"))
                )
                * per_token
            ).alias("cost_output_usd"),
            pl.when(pl.col("price_id").is_not_null())
            .then(_discount_expr(labels, book))
            .alias("discount_pct"),
        )
        .with_columns(
            (pl.col(c) * keep)
            for c in (
                "cost_input_usd",
                "cost_cache_read_usd",
                "cost_cache_write_usd",
                "cost_output_usd",
            )
        )
        .with_columns(
            (
                pl.col("cost_input_usd")
                + pl.col("cost_cache_read_usd")
                + pl.col("cost_cache_write_usd")
                + pl.col("cost_output_usd")
            ).alias("cost_usd"),
            pl.col("price_id").is_null().alias("unpriced"),
        )
    )
    return costed.select(*usage.columns, *COST_COLUMNS)


def unpriced_summary(costed: pl.DataFrame, book: PriceBook) -> pl.DataFrame:
    """Token volume of unpriced rows by provider / model / tier, with the reason they are unpriced.

    The reason is worked out per distinct group (few), not per row: model not in the book, no
    price for this service tier, or no price valid at the row's date.
    """
    unpriced = costed.filter(pl.col("unpriced"))
    tier = (
        pl.col("service_tier").cast(pl.String).str.to_lowercase().fill_null(DEFAULT_SERVICE_TIER)
        if "service_tier" in costed.columns
        else pl.lit(DEFAULT_SERVICE_TIER)
    )
    aggs = [
        pl.len().alias("rows"),
        pl.col("ts").min().alias("first_ts"),
        pl.col("ts").max().alias("last_ts"),
        pl.col("input_tokens").sum().cast(pl.Float64).alias("input_tokens"),
        pl.col("output_tokens").sum().cast(pl.Float64).alias("output_tokens"),
    ]
    summary = (
        unpriced.with_columns(tier.alias("service_tier"))
        .group_by("provider", "model", "service_tier")
        .agg(aggs)
        .sort("input_tokens", descending=True)
    )
    reasons = []
    for provider, model, service_tier in summary.select(
        "provider", "model", "service_tier"
    ).iter_rows():
        resolved = book.resolve_model(provider, model)
        if resolved is None:
            reasons.append("model not in price book")
        elif not any(
            (s.provider, s.model) == resolved and s.service_tier == service_tier for s in book.sets
        ):
            reasons.append(f"no {service_tier} price for {resolved[1]}")
        else:
            reasons.append(f"no {resolved[1]} price valid at these dates or context sizes")
    return summary.with_columns(pl.Series("reason", reasons, dtype=pl.String))

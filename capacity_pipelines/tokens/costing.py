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

The per-row work is a hash of the label columns, a lookup among the few distinct labels, a binary
search over the book's price-change dates, a gather from a small dense price array and a handful
of column expressions; the only per-item Python is over distinct labels, price sets and discount
rules, never over usage rows.
"""

from __future__ import annotations

import polars as pl

from capacity_pipelines.tokens.prices import (
    BASE_CONTEXT_TIER,
    DEFAULT_SERVICE_TIER,
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
    period with a binary search (`search_sorted`), so no usage row is sorted or range-joined.
    Period p covers [breaks[p-1], breaks[p]).
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

    Lookup: each row gets three small integers (the (priced model, tier) combination of its
    labels, its context-tier slot, its validity period), which address a dense array of prices
    with C × S × P cells (tens × 2 × ~15); the prices are then gathered, not joined.
    """
    k = _INTERNAL
    # Re-costing an already costed file replaces its cost columns instead of clashing with them.
    usage = usage.drop([c for c in COST_COLUMNS if c in usage.columns])
    keys = usage.select(_label_key(usage)).to_series()
    labels = _label_table(usage, book, keys)
    combos = (
        labels.select("price_provider", "price_model", "price_tier")
        .unique(maintain_order=True)
        .drop_nulls("price_model")
        .with_row_index(f"{k}combo")
    )
    labels = labels.join(
        combos, on=["price_provider", "price_model", "price_tier"], how="left", nulls_equal=True
    )
    breaks = pl.Series(
        sorted(
            {s.effective_from for s in book.sets}
            | {s.effective_to for s in book.sets if s.effective_to}
        ),
        dtype=pl.Datetime("us", "UTC"),
    )
    prices = _price_table(book, breaks).join(
        combos,
        left_on=["provider", "price_model", "service_tier"],
        right_on=["price_provider", "price_model", "price_tier"],
        how="inner",
    )
    thresholds = sorted({BASE_CONTEXT_TIER, *prices["above_prompt_tokens"].to_list()})
    n_slots, n_periods = len(thresholds), len(breaks) + 1
    prices = prices.with_columns(
        (
            pl.col(f"{k}combo").cast(pl.Int64) * (n_slots * n_periods)
            + pl.col("above_prompt_tokens").replace_strict(
                thresholds, list(range(n_slots)), return_dtype=pl.Int64
            )
            * n_periods
            + pl.col(f"{k}period").cast(pl.Int64)
        ).alias(f"{k}cell")
    )
    n_cells = max(combos.height, 1) * n_slots * n_periods
    # Price per token of each class a row needs, with the billing fallbacks applied once per
    # cell instead of once per row: no cache-read price -> input price; no 1h write price -> 5m;
    # no write price -> input (OpenAI, Google); no reasoning price -> output.
    has = set(usage.columns)
    fallbacks = {
        "cache_read": ("cache_read", "input"),
        "cache_write_5m": ("cache_write_5m", "input"),
        "cache_write_1h": ("cache_write_1h", "cache_write_5m", "input"),
        "reasoning": ("reasoning", "output"),
    }
    needed = ["input", "output"]
    needed += ["cache_read"] if "cache_read_input_tokens" in has else []
    needed += ["cache_write_5m"] if "cache_write_input_tokens" in has else []
    needed += ["cache_write_1h"] if {"cache_write_input_tokens", "cache_write_ttl"} <= has else []
    needed += ["reasoning"] if "reasoning_output_tokens" in has else []
    per_token = 1.0 / TOKENS_PER_PRICE_UNIT
    id_cells: list[str | None] = [None] * n_cells
    price_cells: dict[str, list[float | None]] = {c: [None] * n_cells for c in needed}
    for row in prices.iter_rows(named=True):
        id_cells[row[f"{k}cell"]] = row["price_id"]
        for cls in needed:
            usd = next(
                (
                    row[f"usd_per_mtok_{c}"]
                    for c in fallbacks.get(cls, (cls,))
                    if row[f"usd_per_mtok_{c}"] is not None
                ),
                None,
            )
            price_cells[cls][row[f"{k}cell"]] = None if usd is None else usd * per_token
    dense = [pl.Series("price_id", id_cells, dtype=pl.Enum(sorted(set(prices["price_id"]))))]
    dense += [pl.Series(f"{k}usd_{c}", v, dtype=pl.Float64) for c, v in price_cells.items()]

    # Context tier: prompt size per LLM call. Aggregated rows (`requests` > 1) use the mean call,
    # an approximation: a step that mixes short and >200k prompts is costed at one tier.
    prompt = _tokens(usage, "input_tokens")
    if "requests" in usage.columns:
        calls = pl.col("requests").cast(pl.Float64)
        prompt = pl.when(calls > 1).then(prompt / calls).otherwise(prompt)
    slot: pl.Expr = pl.lit(0, dtype=pl.Int64)
    tiers = (
        prices.filter(pl.col("above_prompt_tokens") > BASE_CONTEXT_TIER)
        .group_by("above_prompt_tokens")
        .agg(pl.col(f"{k}combo").unique())
        .sort("above_prompt_tokens")
    )
    for threshold, combos_with_tier in tiers.iter_rows():
        slot = (
            pl.when(pl.col(f"{k}combo").is_in(combos_with_tier) & (prompt > threshold))
            .then(pl.lit(thresholds.index(threshold), dtype=pl.Int64))
            .otherwise(slot)
        )
    combo_of_row = keys.replace_strict(
        labels[f"{k}key"], labels[f"{k}combo"], default=None, return_dtype=pl.Int64
    ).alias(f"{k}combo")
    period = breaks.search_sorted(usage["ts"], side="right").cast(pl.Int64).alias(f"{k}period")
    cell_expr = pl.col(f"{k}combo") * (n_slots * n_periods) + pl.col(f"{k}period")
    if tiers.height:
        cell_expr = cell_expr + slot * n_periods
    # Three column passes over the usage: labels/period, cell address, then gathered prices and
    # costs; inside each pass Polars evaluates the expressions in parallel.
    frame = usage.with_columns(keys, combo_of_row, period)
    cell = cell_expr.alias(f"{k}cell")
    gathered = {series.name: pl.lit(series).gather(pl.col(f"{k}cell")) for series in dense}
    frame = frame.with_columns(cell)

    def price(cls: str) -> pl.Expr:
        return pl.col(f"{k}usd_{cls}")

    def tokens_times(col: str, cls: str) -> pl.Expr:
        # An absent optional column costs 0 on a priced row and NULL on an unpriced one.
        return _tokens(usage, col) * price(cls) if col in has else price("input") * 0.0

    inp = _tokens(usage, "input_tokens")
    cached = _tokens(usage, "cache_read_input_tokens") + _tokens(usage, "cache_write_input_tokens")
    reasoning = _tokens(usage, "reasoning_output_tokens")
    if "cache_write_ttl" in has and "cache_write_input_tokens" in has:
        # A NULL TTL is the provider default (5 minutes), like an explicit "5m".
        ttl = pl.col("cache_write_ttl").cast(pl.String).fill_null(DEFAULT_CACHE_WRITE_TTL)
        one_hour = ttl == "1h"
        write_cost = _tokens(usage, "cache_write_input_tokens") * (
            pl.when(one_hour).then(price("cache_write_1h")).otherwise(price("cache_write_5m"))
        )
    else:
        write_cost = tokens_times("cache_write_input_tokens", "cache_write_5m")
    output_cost = (_tokens(usage, "output_tokens") - reasoning) * price("output")
    if "reasoning_output_tokens" in has:
        output_cost = output_cost + reasoning * price("reasoning")
    components = {
        "cost_input_usd": (inp - cached) * price("input"),
        "cost_cache_read_usd": tokens_times("cache_read_input_tokens", "cache_read"),
        "cost_cache_write_usd": write_cost,
        "cost_output_usd": output_cost,
    }
    discount = _discount_expr(labels, book) if book.discounts else pl.lit(0.0)
    if book.discounts:
        keep = 1.0 - discount / 100.0
        components = {name: expr * keep for name, expr in components.items()}
    total = pl.sum_horizontal(list(components.values()), ignore_nulls=False)
    costed = frame.with_columns(
        *(expr.alias(name) for name, expr in gathered.items())
    ).with_columns(
        *(expr.alias(name) for name, expr in components.items()),
        pl.when(pl.col("price_id").is_not_null()).then(discount).alias("discount_pct"),
        total.alias("cost_usd"),
        pl.col("price_id").is_null().alias("unpriced"),
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

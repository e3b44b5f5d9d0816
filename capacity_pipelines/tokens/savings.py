"""Savings opportunities with $ estimates, each with its stated assumptions.

Every estimate is a what-if: the usage is changed the way the optimisation would change it
(more cache reads, batch tier, fewer input tokens, a cheaper model) and costed again with the same
engine and price book, so an estimate can never use different arithmetic from the bill.

Prompt caching is estimated from MEASURED prefix reuse when the data has prompt-prefix block ids
(Mooncake `hash_ids`: 512-token blocks whose id depends on the whole prefix), and otherwise from
a reuse-by-prompt-length table calibrated on such a trace (`calibrate_reuse`); the benchmark
measures how well that table transfers to a trace it was not calibrated on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import polars as pl

from capacity_pipelines.tokens.costing import cost_usage
from capacity_pipelines.tokens.prices import PriceBook

# Mooncake FAST'25 traces: each hash id covers one 512-token block of the prompt prefix.
PREFIX_BLOCK_TOKENS = 512
# Shortest prompt prefix the providers cache: 1024 tokens for OpenAI automatic caching and for
# Claude Sonnet / Opus (Anthropic prompt-caching docs; Haiku needs 2048, Gemini 1024-4096).
MIN_CACHEABLE_TOKENS = 1024
# Anthropic's default cache lifetime, refreshed on every hit; OpenAI keeps prefixes 5-10 minutes
# idle. A reuse further apart than this is a miss.
DEFAULT_CACHE_TTL = dt.timedelta(minutes=5)
# Shortest window whose savings are extrapolated to 30 days (same rule as the report's run rate).
MIN_EXTRAPOLATION_WINDOW_S = 60.0
# Prompt-length buckets (input tokens per call) of the calibrated reuse table.
REUSE_BUCKET_EDGES = (1_024, 4_096, 16_384, 65_536)
# Reusable share of input tokens per bucket, from `calibrate_reuse` on the first warm half
# (minutes 5-10) of the Mooncake conversation trace (kvcache-ai/Mooncake @ 3b5a5941, 5-min TTL);
# its accuracy on the other half is in benchmarks/results/tokens.md. A chat service's reuse:
# used only when the data has no prefix block ids, and stated as such in the report.
DEFAULT_REUSE_BY_BUCKET: Mapping[str, float] = MappingProxyType(
    {
        "<1k": 0.0,
        "1k-4k": 0.188,
        "4k-16k": 0.236,
        "16k-64k": 0.296,
        ">=64k": 0.431,
    }
)


@dataclass(frozen=True)
class SavingsAssumptions:
    """The knobs of each estimate; every one is printed next to the $ it produced."""

    cache_ttl: dt.timedelta = DEFAULT_CACHE_TTL
    min_cacheable_tokens: int = MIN_CACHEABLE_TOKENS
    reuse_by_bucket: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_REUSE_BY_BUCKET)
    )
    # Agents whose calls need no interactive answer (reports, evaluations, nightly jobs).
    non_interactive_agents: Sequence[str] = ()
    # Share of input tokens a context-compression step removes. Assumption, not a measurement:
    # prompt-compression papers (e.g. LLMLingua) report far larger ratios on long contexts; 20 %
    # is a cautious planning figure.
    compression_ratio: float = 0.20
    # Share of the input of downstream agent calls that is intermediate messages another agent
    # produced and the callee does not need. Assumption; measure it on your own transcripts.
    intermediate_share: float = 0.30
    # Share of calls simple enough for the cheaper model of the same family. Assumption.
    routable_share: float = 0.30
    # Cheaper model of the same provider family to route simple calls to.
    routing: Mapping[str, str] = field(
        default_factory=lambda: {
            "claude-opus-4": "claude-sonnet-4",
            "claude-opus-4-1": "claude-sonnet-4",
            "claude-sonnet-4": "claude-3-5-haiku",
            "gpt-4o": "gpt-4o-mini",
            "gpt-4.1": "gpt-4.1-mini",
            "o3": "o4-mini",
            "gemini-2.5-pro": "gemini-2.5-flash",
        }
    )


def reuse_bucket(prompt_tokens: pl.Expr) -> pl.Expr:
    """Label of the prompt-length bucket of `REUSE_BUCKET_EDGES`."""
    labels = ["<1k", "1k-4k", "4k-16k", "16k-64k", ">=64k"]
    expr: pl.Expr = pl.lit(labels[-1])
    for edge, label in reversed(list(zip(REUSE_BUCKET_EDGES, labels, strict=False))):
        expr = pl.when(prompt_tokens < edge).then(pl.lit(label)).otherwise(expr)
    return expr


def _prefix_blocks(trace: pl.DataFrame, cache_ttl: dt.timedelta | None) -> pl.DataFrame:
    """One row per (request, prefix block) with `hit`, `leading` (in the request's leading hit
    run) and `useful_write` (a miss whose block is used again within the TTL)."""
    if "hash_ids" not in trace.columns:
        raise ValueError("measured prefix reuse needs a `hash_ids` column (prefix block ids)")
    blocks = (
        trace.select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"),
            pl.col("ts"),
            pl.col("hash_ids"),
        )
        .sort("ts", "row", maintain_order=True)
        .with_columns(pl.int_ranges(0, pl.col("hash_ids").list.len()).alias("pos"))
        .explode("hash_ids", "pos")
        .drop_nulls("hash_ids")
    )
    previous = pl.col("ts").shift(1).over("hash_ids")
    following = pl.col("ts").shift(-1).over("hash_ids")
    hit = previous.is_not_null()
    reused_later = following.is_not_null()
    if cache_ttl is not None:
        hit = hit & ((pl.col("ts") - previous) <= cache_ttl)
        reused_later = reused_later & ((following - pl.col("ts")) <= cache_ttl)
    return blocks.with_columns(hit.alias("hit"), reused_later.alias("reused_later")).with_columns(
        pl.col("hit").cast(pl.Int8).cum_min().over("row").alias("leading"),
        (~pl.col("hit") & pl.col("reused_later")).alias("useful_write"),
    )


def _per_request(trace: pl.DataFrame, per_row: pl.DataFrame, column: str) -> pl.Series:
    """Spread a per-request aggregate back onto the trace's rows (0 where absent)."""
    return (
        trace.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"))
        .join(per_row, on="row", how="left")
        .sort("row")[column]
        .fill_null(0)
    )


def measured_prefix_reuse(
    trace: pl.DataFrame,
    *,
    block_tokens: int = PREFIX_BLOCK_TOKENS,
    cache_ttl: dt.timedelta | None = DEFAULT_CACHE_TTL,
    min_cacheable_tokens: int = MIN_CACHEABLE_TOKENS,
) -> pl.Series:
    """Input tokens of each request a prefix cache would have served (`hash_ids` required).

    A block is a hit when the same block id was last seen at most `cache_ttl` earlier (every use
    refreshes it, as Anthropic's and OpenAI's caches do); a request reuses its leading run of hit
    blocks only, because provider caches match prefixes. Requests are taken in `ts` order, ties in
    file order. Vectorised: one explode, one window shift, one cumulative min.
    """
    leading = (
        _prefix_blocks(trace, cache_ttl)
        .group_by("row")
        .agg(pl.col("leading").cast(pl.Int64).sum().alias("hit_blocks"))
    )
    hit_blocks = _per_request(trace, leading, "hit_blocks")
    reusable = pl.min_horizontal(
        pl.lit(hit_blocks) * block_tokens, pl.col("input_tokens").cast(pl.Int64)
    )
    return trace.select(
        pl.when(reusable >= min_cacheable_tokens)
        .then(reusable)
        .otherwise(0)
        .cast(pl.Float64)
        .alias("reusable_prefix_tokens")
    ).to_series()


def measured_useful_writes(
    trace: pl.DataFrame,
    *,
    block_tokens: int = PREFIX_BLOCK_TOKENS,
    cache_ttl: dt.timedelta | None = DEFAULT_CACHE_TTL,
) -> pl.Series:
    """Input tokens of each request worth writing: up to its last block reused later.

    A cache breakpoint writes everything between the cached prefix and the breakpoint, so a
    request that places its breakpoint after the last block a later request reuses (within the
    TTL) writes (last useful block + 1 − leading hits) blocks; a request with no such block writes
    nothing. This is the best a team placing breakpoints with hindsight could do: an upper bound
    on caching savings, where "write every prompt" is the lower bound.
    """
    per_row = (
        _prefix_blocks(trace, cache_ttl)
        .group_by("row")
        .agg(
            pl.col("leading").cast(pl.Int64).sum().alias("hit_blocks"),
            pl.col("pos").filter(pl.col("useful_write")).max().alias("last_useful"),
        )
        .select(
            "row",
            ((pl.col("last_useful") + 1 - pl.col("hit_blocks")).clip(lower_bound=0) * block_tokens)
            .fill_null(0)
            .alias("write_tokens"),
        )
    )
    return _per_request(trace, per_row, "write_tokens").cast(pl.Float64)


def calibrate_reuse(trace: pl.DataFrame, reusable: pl.Series) -> dict[str, float]:
    """Reusable share of input tokens per prompt-length bucket, from a measured trace."""
    table = (
        trace.select(reuse_bucket(pl.col("input_tokens")).alias("bucket"), "input_tokens")
        .with_columns(reusable.alias("reusable"))
        .group_by("bucket")
        .agg((pl.col("reusable").sum() / pl.col("input_tokens").sum()).alias("share"))
    )
    shares = dict.fromkeys(DEFAULT_REUSE_BY_BUCKET, 0.0)
    shares.update({b: float(s) for b, s in table.iter_rows()})
    return shares


def estimated_prefix_reuse(usage: pl.DataFrame, reuse_by_bucket: Mapping[str, float]) -> pl.Series:
    """Reusable input tokens per row from the calibrated table (data without block ids).

    Aggregated rows are bucketed by their mean call (`input_tokens / requests`).
    """
    prompt = pl.col("input_tokens").cast(pl.Float64)
    if "requests" in usage.columns:
        calls = pl.col("requests").cast(pl.Float64)
        prompt = pl.when(calls > 1).then(prompt / calls).otherwise(prompt)
    share = reuse_bucket(prompt).replace_strict(
        dict(reuse_by_bucket), default=0.0, return_dtype=pl.Float64
    )
    return usage.select((pl.col("input_tokens").cast(pl.Float64) * share).alias("reusable"))[
        "reusable"
    ]


def with_prompt_caching(
    usage: pl.DataFrame,
    reusable: pl.Series,
    min_tokens: int,
    written: pl.Series | None = None,
) -> pl.DataFrame:
    """What-if usage: reusable prefixes become cache reads and cache writes are re-derived.

    Writes: `written` tokens per row when given (breakpoints placed only where reused), else the
    rest of every prompt of at least `min_tokens` tokens (cache every prompt).
    """
    current = (
        pl.col("cache_read_input_tokens").cast(pl.Float64).fill_null(0.0)
        if "cache_read_input_tokens" in usage.columns
        else pl.lit(0.0)
    )
    inp = pl.col("input_tokens").cast(pl.Float64)
    read = pl.max_horizontal(current, pl.col("__reusable")).clip(upper_bound=inp)
    uncached = inp - pl.col("cache_read_input_tokens")
    if written is None:
        write = pl.when(inp >= min_tokens).then(uncached).otherwise(0.0)
    else:
        write = pl.min_horizontal(pl.col("__written"), uncached)
    return (
        usage.with_columns(
            reusable.alias("__reusable"),
            (written if written is not None else pl.Series([0.0] * usage.height)).alias(
                "__written"
            ),
        )
        .with_columns(read.alias("cache_read_input_tokens"))
        .with_columns(write.alias("cache_write_input_tokens"))
        .drop("__reusable", "__written")
    )


def priced_saving(costed: pl.DataFrame, what_if: pl.DataFrame, book: PriceBook) -> float:
    """Spend now minus spend in the what-if, over rows priced in both."""
    after = cost_usage(what_if, book)["cost_usd"]
    both = costed["cost_usd"].is_not_null() & after.is_not_null()
    return float(costed["cost_usd"].filter(both).sum() - after.filter(both).sum())


def savings_opportunities(
    costed: pl.DataFrame,
    book: PriceBook,
    assumptions: SavingsAssumptions | None = None,
    *,
    request_column: str | None = None,
) -> pl.DataFrame:
    """One row per opportunity: window and 30-day $ savings, basis and assumptions.

    `costed` is the output of `cost_usage` (its usage columns plus cost columns).
    """
    a = assumptions or SavingsAssumptions()
    usage = costed.drop(
        [
            c
            for c in costed.columns
            if c.startswith("cost_") or c in ("price_id", "unpriced", "discount_pct")
        ]
    )
    span_s = (costed["ts"].max() - costed["ts"].min()).total_seconds() if costed.height > 1 else 0.0
    # Scale the window to 30 days, as the report's run rate does; under a minute of data is not
    # extrapolated (a burst would be multiplied by more than 43,000).
    to_30d = 30 * 86_400 / span_s if span_s >= MIN_EXTRAPOLATION_WINDOW_S else None
    rows: list[dict[str, object]] = []

    def add(name: str, saving: float | None, basis: str, assumption: str) -> None:
        rows.append(
            {
                "opportunity": name,
                "window_savings_usd": saving,
                "savings_30d_usd": None if saving is None or to_30d is None else saving * to_30d,
                "basis": basis,
                "assumptions": assumption,
            }
        )

    # 1. Prompt caching.
    if "hash_ids" in usage.columns:
        reusable = measured_prefix_reuse(
            usage, cache_ttl=a.cache_ttl, min_cacheable_tokens=a.min_cacheable_tokens
        )
        basis = "measured prefix reuse (hash_ids, 512-token blocks)"
    else:
        reusable = estimated_prefix_reuse(usage, a.reuse_by_bucket)
        basis = "reuse-by-prompt-length table calibrated on the Mooncake trace"
    what_if = with_prompt_caching(usage, reusable, a.min_cacheable_tokens)
    add(
        "prompt caching",
        priced_saving(costed, what_if, book),
        basis,
        f"reusable prefixes ({reusable.sum():,.0f} tokens) read from cache at the cache-read price;"
        f" the rest of every prompt >= {a.min_cacheable_tokens} tokens written at the cache-write"
        f" price (cache every prompt: the lower bound); cache TTL {a.cache_ttl}",
    )
    if "hash_ids" in usage.columns:
        written = measured_useful_writes(usage, cache_ttl=a.cache_ttl)
        add(
            "prompt caching, breakpoints only where reused",
            priced_saving(
                costed, with_prompt_caching(usage, reusable, a.min_cacheable_tokens, written), book
            ),
            basis,
            f"same reads; only prefixes a later request reuses within {a.cache_ttl} are written"
            f" ({written.sum():,.0f} tokens): hindsight breakpoints, the upper bound",
        )

    # 2. Batch tier for non-interactive traffic.
    if a.non_interactive_agents and "agent" in usage.columns:
        moved = pl.col("agent").is_in(list(a.non_interactive_agents))
        what_if = usage.with_columns(
            pl.when(moved)
            .then(pl.lit("batch"))
            .otherwise(pl.col("service_tier") if "service_tier" in usage.columns else pl.lit(None))
            .cast(pl.String)
            .alias("service_tier")
        )
        add(
            "batch tier for non-interactive agents",
            priced_saving(costed, what_if, book),
            "labelled agents",
            f"calls of agents {list(a.non_interactive_agents)} tolerate the batch APIs' up to 24 h"
            " latency; batch prices from the price book",
        )
    else:
        share = 0.10
        sample = usage.with_columns(pl.lit("batch").alias("service_tier"))
        full = priced_saving(costed, sample, book)
        add(
            "batch tier for non-interactive traffic",
            full * share,
            "assumed share (no label marks non-interactive calls)",
            f"saving per {share:.0%} of standard traffic moved to the batch tier (scale linearly);"
            " pass non_interactive_agents to measure it",
        )

    # 3. Context compression.
    keep = 1.0 - a.compression_ratio
    scaled = [
        (pl.col(c).cast(pl.Float64) * keep).alias(c)
        for c in ("input_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
        if c in usage.columns
    ]
    add(
        "context compression",
        priced_saving(costed, usage.with_columns(scaled), book),
        "assumed ratio",
        f"input (cached and uncached alike) shrinks by {a.compression_ratio:.0%}; output unchanged",
    )

    # 4. Intermediate-message filtering: the calls after the first of each user request.
    if request_column and request_column in usage.columns:
        downstream = pl.int_range(pl.len()).over(request_column, order_by="ts") > 0
        keep = 1.0 - a.intermediate_share
        cut = [
            pl.when(downstream)
            .then(pl.col(c).cast(pl.Float64) * keep)
            .otherwise(pl.col(c).cast(pl.Float64))
            .alias(c)
            for c in ("input_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
            if c in usage.columns
        ]
        add(
            "intermediate-message filtering",
            priced_saving(costed, usage.with_columns(cut), book),
            f"downstream calls per {request_column}",
            f"{a.intermediate_share:.0%} of the input of every call after the first in a request is"
            " intermediate agent messages the callee does not need",
        )
    else:
        add(
            "intermediate-message filtering",
            None,
            "not estimable",
            "needs a request / conversation / workflow id to tell downstream agent calls apart",
        )

    # 5. Model routing: a share of each expensive model's calls moved to its cheaper sibling.
    targets = {}
    for provider, model in usage.select("provider", "model").unique().iter_rows():
        resolved = book.resolve_model(provider, model)
        if resolved and resolved[1] in a.routing:
            targets[model] = a.routing[resolved[1]]
    if targets:
        routed = usage.filter(pl.col("model").is_in(list(targets)))
        routed_costed = costed.filter(pl.col("model").is_in(list(targets)))
        what_if = routed.with_columns(pl.col("model").replace_strict(targets).alias("model"))
        delta = priced_saving(routed_costed, what_if, book) * a.routable_share
        add(
            "model routing",
            delta,
            "assumed routable share",
            f"{a.routable_share:.0%} of calls to {sorted(targets)} answered as well by"
            f" {sorted(set(targets.values()))} (same tokens, cheaper prices)",
        )
    else:
        add("model routing", None, "not applicable", "no model with a cheaper routing target")

    return pl.DataFrame(
        rows,
        schema={
            "opportunity": pl.String,
            "window_savings_usd": pl.Float64,
            "savings_30d_usd": pl.Float64,
            "basis": pl.String,
            "assumptions": pl.String,
        },
    ).sort("savings_30d_usd", descending=True, nulls_last=True)

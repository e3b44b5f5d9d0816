"""The LLM price book: dated list prices per provider, model, token class and tier.

The book is static YAML in `assets/prices/llm/` (one file per provider), plus optional user
override files with their own models and dated contract discounts. Prices change (the `gpt-4o`
alias halved its price on 2024-10-02; o3 lost 80 % on 2025-06-10), so every price set carries a
validity period and the costing joins each usage row to the set valid at its timestamp.

Two views of the same book:
- `PriceBook.rows()`: the long table, one row per provider × model × token class (cache writes
  with their TTL) × service tier × context tier × validity period, for people and reports;
- `PriceBook.price_sets()`: one wide row per price set (all token classes side by side), which is
  what the vectorised costing joins against. Its `price_id` names the set:
  `provider/model/service_tier/context_tier/effective_from`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from capacity_pipelines.common.paths import ASSETS_DIR

BUILTIN_PRICE_DIR = ASSETS_DIR / "prices" / "llm"
# Example file that lives beside the built-in book but must not be loaded as part of it.
EXAMPLE_FILE_PREFIX = "override.example"

TOKENS_PER_PRICE_UNIT = 1_000_000  # every provider here quotes USD per million tokens

# Token classes a price set may carry. The first two are required.
REQUIRED_CLASSES = ("input", "output")
OPTIONAL_CLASSES = ("cache_read", "cache_write_5m", "cache_write_1h", "reasoning")
PRICE_CLASSES = REQUIRED_CLASSES + OPTIONAL_CLASSES

DEFAULT_SERVICE_TIER = "standard"
BASE_CONTEXT_TIER = 0  # `above_prompt_tokens` of the tier that applies to every prompt


class PriceBookError(ValueError):
    """A price book or override file is malformed; the message is one line naming file and field."""


@dataclass(frozen=True)
class PriceSet:
    """All token-class prices of one model for one service tier, context tier and period."""

    provider: str
    model: str
    service_tier: str
    above_prompt_tokens: int
    effective_from: dt.datetime
    effective_to: dt.datetime | None
    usd_per_mtok: dict[str, float]
    source_url: str
    source_read_on: str
    origin: str  # file the set was read from

    @property
    def context_tier(self) -> str:
        """Human label of the context tier: `all` or `>200k`."""
        if self.above_prompt_tokens == BASE_CONTEXT_TIER:
            return "all"
        n = self.above_prompt_tokens
        return f">{n // 1000}k" if n % 1000 == 0 else f">{n}"

    @property
    def price_id(self) -> str:
        """Stable id naming the set; recorded on every costed usage row."""
        return "/".join(
            (
                self.provider,
                self.model,
                self.service_tier,
                self.context_tier,
                self.effective_from.date().isoformat(),
            )
        )


@dataclass(frozen=True)
class ModelEntry:
    """How usage model names map to one priced model: exact names, then a full-match pattern."""

    provider: str
    model: str
    names: tuple[str, ...]
    pattern: re.Pattern[str] | None
    layer: int  # 0 = built-in book; higher = later override file, wins on conflicts


@dataclass(frozen=True)
class Discount:
    """A dated contract discount, in percent off every token class, for a model pattern."""

    provider: str | None
    model_pattern: re.Pattern[str]
    percent: float
    effective_from: dt.datetime
    effective_to: dt.datetime | None
    note: str
    origin: str


@dataclass
class PriceBook:
    """Price sets, model-name matching rules, provider aliases and contract discounts."""

    sets: list[PriceSet] = field(default_factory=list)
    models: list[ModelEntry] = field(default_factory=list)
    provider_aliases: dict[str, str] = field(default_factory=dict)
    discounts: list[Discount] = field(default_factory=list)

    def price_sets(self) -> pl.DataFrame:
        """One wide row per price set: the table the costing joins against."""
        return pl.DataFrame(
            {
                "price_id": [s.price_id for s in self.sets],
                "provider": [s.provider for s in self.sets],
                "price_model": [s.model for s in self.sets],
                "service_tier": [s.service_tier for s in self.sets],
                "above_prompt_tokens": [s.above_prompt_tokens for s in self.sets],
                "effective_from": [s.effective_from for s in self.sets],
                "effective_to": [s.effective_to for s in self.sets],
                **{
                    f"usd_per_mtok_{c}": [s.usd_per_mtok.get(c) for s in self.sets]
                    for c in PRICE_CLASSES
                },
            },
            schema_overrides={
                "above_prompt_tokens": pl.Int64,
                "effective_from": pl.Datetime("us", "UTC"),
                "effective_to": pl.Datetime("us", "UTC"),
                **{f"usd_per_mtok_{c}": pl.Float64 for c in PRICE_CLASSES},
            },
        )

    def rows(self) -> pl.DataFrame:
        """The long price table: one row per set × token class actually priced."""
        records: list[dict[str, Any]] = []
        for s in self.sets:
            for cls in PRICE_CLASSES:
                if cls not in s.usd_per_mtok:
                    continue
                token_class, _, ttl = cls.partition("_write_")
                records.append(
                    {
                        "price_id": s.price_id,
                        "provider": s.provider,
                        "model": s.model,
                        "token_class": "cache_write" if ttl else token_class,
                        "cache_ttl": ttl or None,
                        "service_tier": s.service_tier,
                        "context_tier": s.context_tier,
                        "effective_from": s.effective_from.date(),
                        "effective_to": s.effective_to.date() if s.effective_to else None,
                        "usd_per_mtok": s.usd_per_mtok[cls],
                        "source_url": s.source_url,
                        "source_read_on": s.source_read_on,
                        "origin": s.origin,
                    }
                )
        return pl.DataFrame(records, infer_schema_length=None)

    def canonical_provider(self, provider: str | None) -> str | None:
        """Map a usage provider label (OTel / LiteLLM spelling) to the book's provider name."""
        if provider is None:
            return None
        key = provider.strip().lower()
        return self.provider_aliases.get(key, key)

    def resolve_model(self, provider: str | None, model: str | None) -> tuple[str, str] | None:
        """The priced model a usage (provider, model) pair maps to, or None when unpriced.

        Precedence: later override layers first; within a layer exact names before patterns;
        among patterns the first declared. Names are compared case-insensitively, with a leading
        `provider/` or `models/` routing prefix (LiteLLM, Gemini) removed.
        """
        if model is None:
            return None
        name = normalise_model_name(model)
        canon = self.canonical_provider(provider)
        candidates = [m for m in self.models if canon is None or m.provider == canon]
        for layer in sorted({m.layer for m in candidates}, reverse=True):
            in_layer = [m for m in candidates if m.layer == layer]
            for m in in_layer:
                if name == m.model or name in m.names:
                    return (m.provider, m.model)
            for m in in_layer:
                if m.pattern is not None and m.pattern.fullmatch(name):
                    return (m.provider, m.model)
        return None


def normalise_model_name(model: str) -> str:
    """Lower-case and drop routing prefixes (`openai/gpt-4o`, `models/gemini-2.5-pro`)."""
    name = model.strip().lower()
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    return name


def _parse_day(value: Any, where: str) -> dt.datetime:
    """A YAML date (or ISO string) as a UTC midnight datetime."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            return _parse_day(dt.date.fromisoformat(value), where)
        except ValueError:
            pass
    raise PriceBookError(f"{where}: not a date (YYYY-MM-DD): {value!r}")


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceBookError(f"{where}: price must be a number, got {value!r}")
    price = float(value)
    if not (price >= 0.0 and price < float("inf")):
        raise PriceBookError(f"{where}: price must be a finite number >= 0, got {value!r}")
    return price


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise PriceBookError(f"{where}: invalid regex {pattern!r}: {exc}") from exc


_PRICE_KEYS = {
    "effective_from",
    "effective_to",
    "service_tier",
    "above_prompt_tokens",
    *PRICE_CLASSES,
}


def _read_file(path: Path, layer: int, book: PriceBook) -> None:
    """Parse one YAML file into `book`, validating every field with a one-line error."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PriceBookError(f"{path}: cannot read price file: {first}") from exc
    if not isinstance(doc, dict):
        raise PriceBookError(f"{path}: expected a mapping with `models` and/or `discounts`")
    models = doc.get("models") or []
    provider = str(doc.get("provider", "")).strip().lower()
    if models and not provider:
        raise PriceBookError(f"{path}: `provider` is required when the file has `models`")
    for alias in doc.get("provider_aliases") or []:
        book.provider_aliases[str(alias).strip().lower()] = provider
    if provider:
        book.provider_aliases.setdefault(provider, provider)
    source = doc.get("source") or {}
    source_url = str(source.get("url", ""))
    source_read_on = str(source.get("read_on", ""))
    if models and not source_url:
        raise PriceBookError(f"{path}: `source.url` is required (where the prices come from)")

    for i, entry in enumerate(models):
        where = f"{path}: models[{i}]"
        if not isinstance(entry, dict) or "model" not in entry:
            raise PriceBookError(f"{where}: each model needs a `model` name")
        model = str(entry["model"]).strip().lower()
        where = f"{path}: model {model}"
        pattern = entry.get("pattern")
        book.models.append(
            ModelEntry(
                provider=provider,
                model=model,
                names=tuple(str(n).strip().lower() for n in entry.get("names") or []),
                pattern=_compile(str(pattern), f"{where}: pattern") if pattern else None,
                layer=layer,
            )
        )
        prices = entry.get("prices") or []
        if not prices:
            raise PriceBookError(f"{where}: no `prices`")
        for j, p in enumerate(prices):
            pwhere = f"{where}: prices[{j}]"
            if not isinstance(p, dict):
                raise PriceBookError(f"{pwhere}: expected a mapping")
            unknown = set(p) - _PRICE_KEYS
            if unknown:
                raise PriceBookError(f"{pwhere}: unknown field(s) {sorted(unknown)}")
            for cls in REQUIRED_CLASSES:
                if cls not in p:
                    raise PriceBookError(f"{pwhere}: `{cls}` price is required")
            start = _parse_day(p.get("effective_from"), f"{pwhere}: effective_from")
            end = (
                _parse_day(p["effective_to"], f"{pwhere}: effective_to")
                if p.get("effective_to") is not None
                else None
            )
            if end is not None and end <= start:
                raise PriceBookError(f"{pwhere}: effective_to must be after effective_from")
            above = p.get("above_prompt_tokens", BASE_CONTEXT_TIER)
            if isinstance(above, bool) or not isinstance(above, int) or above < 0:
                raise PriceBookError(f"{pwhere}: above_prompt_tokens must be an integer >= 0")
            book.sets.append(
                PriceSet(
                    provider=provider,
                    model=model,
                    service_tier=str(p.get("service_tier", DEFAULT_SERVICE_TIER)).lower(),
                    above_prompt_tokens=above,
                    effective_from=start,
                    effective_to=end,
                    usd_per_mtok={
                        c: _price(p[c], f"{pwhere}: {c}") for c in PRICE_CLASSES if c in p
                    },
                    source_url=source_url,
                    source_read_on=source_read_on,
                    origin=str(path),
                )
            )

    for i, d in enumerate(doc.get("discounts") or []):
        where = f"{path}: discounts[{i}]"
        if not isinstance(d, dict) or "percent" not in d or "model_pattern" not in d:
            raise PriceBookError(f"{where}: needs `model_pattern` and `percent`")
        percent = _price(d["percent"], f"{where}: percent")
        if percent > 100:
            raise PriceBookError(f"{where}: percent must be between 0 and 100, got {percent}")
        book.discounts.append(
            Discount(
                provider=str(d["provider"]).strip().lower() if d.get("provider") else None,
                model_pattern=_compile(str(d["model_pattern"]), f"{where}: model_pattern"),
                percent=percent,
                effective_from=_parse_day(d.get("effective_from"), f"{where}: effective_from"),
                effective_to=(
                    _parse_day(d["effective_to"], f"{where}: effective_to")
                    if d.get("effective_to") is not None
                    else None
                ),
                note=str(d.get("note", "")),
                origin=str(path),
            )
        )


def _yaml_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.iterdir()
            if p.suffix in (".yaml", ".yml") and not p.name.startswith(EXAMPLE_FILE_PREFIX)
        )
    if path.is_file():
        return [path]
    raise PriceBookError(f"{path}: price file or folder does not exist")


def _check_overlaps(book: PriceBook) -> None:
    """Two sets of one model, tier and context tier must not be valid at the same instant."""
    by_key: dict[tuple[str, str, str, int], list[PriceSet]] = {}
    for s in book.sets:
        key = (s.provider, s.model, s.service_tier, s.above_prompt_tokens)
        by_key.setdefault(key, []).append(s)
    for group in by_key.values():
        group.sort(key=lambda s: s.effective_from)
        for a, b in zip(group, group[1:], strict=False):
            if a.effective_to is None or a.effective_to > b.effective_from:
                raise PriceBookError(
                    f"{b.origin}: {b.price_id} overlaps {a.price_id}"
                    " (set effective_to on the older one)"
                )


def load_price_book(
    overrides: list[Path] | Path | None = None, *, builtin: bool = True
) -> PriceBook:
    """Load the built-in book and, on top, override files or folders (later ones win).

    An override that prices a model the built-in book also prices replaces the built-in sets of
    that model entirely, so a user never gets a mix of their contract price and the list price.
    """
    book = PriceBook()
    layers: list[list[Path]] = []
    if builtin:
        layers.append(_yaml_files(BUILTIN_PRICE_DIR))
    if isinstance(overrides, Path):
        overrides = [overrides]
    for path in overrides or []:
        layers.append(_yaml_files(Path(path)))
    for layer, files in enumerate(layers):
        layer_book = PriceBook()
        for f in files:
            _read_file(f, layer, layer_book)
        replaced = {(m.provider, m.model) for m in layer_book.models}
        book.sets = [s for s in book.sets if (s.provider, s.model) not in replaced]
        book.models = [m for m in book.models if (m.provider, m.model) not in replaced]
        book.sets.extend(layer_book.sets)
        book.models.extend(layer_book.models)
        book.provider_aliases.update(layer_book.provider_aliases)
        book.discounts.extend(layer_book.discounts)
    _check_overlaps(book)
    return book

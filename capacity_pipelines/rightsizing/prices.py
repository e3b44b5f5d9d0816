"""The compute price book (`assets/prices/compute.yaml`): $ per vCPU-hour and per GiB-hour.

A request reserves node capacity whether it is used or not, so the monthly cost of a container's
requests is what a rightsizing change saves (or costs): requested cores x $/vCPU-h plus requested
GiB x $/GiB-h, times the hours of a month and the replicas that run it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import yaml

from capacity_pipelines.common.paths import ASSETS_DIR

BUILTIN_COMPUTE_PRICES = ASSETS_DIR / "prices" / "compute.yaml"
GIB = 1024**3


class PriceBookError(ValueError):
    """The compute price book is malformed; the message names the file and the field."""


@dataclass(frozen=True)
class ComputePrice:
    """One node class's list prices for one validity period."""

    provider: str
    node_class: str
    usd_per_vcpu_hour: float
    usd_per_gib_hour: float
    effective_from: dt.date
    effective_to: dt.date | None
    source: str

    @property
    def price_id(self) -> str:
        """`provider/node_class/effective_from`, recorded on every priced recommendation."""
        return f"{self.provider}/{self.node_class}/{self.effective_from.isoformat()}"


@dataclass(frozen=True)
class ComputePriceBook:
    """All node classes of the book, with the default class and the hours of a month."""

    prices: tuple[ComputePrice, ...]
    default_node_class: str
    hours_per_month: float

    def price(self, node_class: str | None = None, on: dt.date | None = None) -> ComputePrice:
        """The `provider/node_class` price valid on `on` (default: today, UTC)."""
        wanted = node_class or self.default_node_class
        day = on or dt.datetime.now(dt.UTC).date()
        matches = [
            p
            for p in self.prices
            if f"{p.provider}/{p.node_class}" == wanted
            and p.effective_from <= day
            and (p.effective_to is None or day < p.effective_to)
        ]
        if not matches:
            raise PriceBookError(f"no compute price for node class {wanted!r} on {day}")
        return max(matches, key=lambda p: p.effective_from)

    def monthly_usd(self, cores: float, memory_bytes: float, price: ComputePrice) -> float:
        """Monthly cost of reserving `cores` and `memory_bytes` around the clock."""
        hourly = cores * price.usd_per_vcpu_hour + memory_bytes / GIB * price.usd_per_gib_hour
        return hourly * self.hours_per_month


def _date(value: object, where: str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise PriceBookError(f"{where}: not a date: {value!r}") from None


def load_compute_prices(path: Path | None = None) -> ComputePriceBook:
    """Read and validate the book (default: the built-in `assets/prices/compute.yaml`)."""
    path = path or BUILTIN_COMPUTE_PRICES
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PriceBookError(f"{path}: cannot read ({str(error).splitlines()[0]})") from error
    if not isinstance(data, dict) or not isinstance(data.get("node_classes"), list):
        raise PriceBookError(f"{path}: needs a `node_classes` list")
    prices = []
    for i, row in enumerate(data["node_classes"]):
        where = f"{path}: node_classes[{i}]"
        try:
            cpu, gib = float(row["usd_per_vcpu_hour"]), float(row["usd_per_gib_hour"])
            provider, node_class = str(row["provider"]), str(row["node_class"])
        except (KeyError, TypeError, ValueError) as error:
            raise PriceBookError(f"{where}: missing or bad field ({error})") from None
        if cpu < 0 or gib < 0:
            raise PriceBookError(f"{where}: negative price")
        end = row.get("effective_to")
        prices.append(
            ComputePrice(
                provider,
                node_class,
                cpu,
                gib,
                _date(row.get("effective_from"), where),
                _date(end, where) if end else None,
                str(row.get("source", "")),
            )
        )
    book = ComputePriceBook(
        tuple(prices),
        str(data.get("default_node_class", f"{prices[0].provider}/{prices[0].node_class}")),
        float(data.get("hours_per_month", 730)),
    )
    book.price(book.default_node_class, max(p.effective_from for p in prices))
    return book

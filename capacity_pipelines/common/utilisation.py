"""Utilisation readings (used / capacity) that can be trusted, and why the others cannot.

A bottleneck label says "this resource was full". It may only rest on a ratio that describes a
real resource: a capacity of 0 or null is missing data (a VM switched off, a container without
a limit: cAdvisor reports an unset memory limit as 0), never a division that yields NaN or inf;
a usage far above its capacity is a bad reading (a counter reset, a series joined to the wrong
limit, an accounting error in a trace), never saturation. Both are dropped before labelling,
counted per reason and reported in data quality. The warehouse path (`bottlenecks/signals.py`,
the extraction check in `ingest/quality.py`, the data-quality report) and the benchmark's
loaders all judge readings here, so the bounds exist once.

The bounds sit well above the labelling thresholds (CPU 0.90, memory 0.95 of the limit in
`bottlenecks/labels.py`), so a reading at or a little over its limit is still labelled: the
gate removes impossible hours, never saturated ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# Our choice, from how the limit is enforced: the CFS quota caps CPU time every 100 ms period,
# and burst (cpu.cfs_burst_us, Linux 5.14) lends at most one quota of unused time, which is
# < 0.1 % of a 5-minute step. What remains above 1 is measurement: rate() extrapolates up to
# ~10 % of its window at each edge and a late scrape squeezes a step's CPU time into a shorter
# interval, together ~20 % at most. For VMs measured against provisioned MHz, all-core turbo of
# server CPUs adds ~10-20 % over nominal. Beyond 1.25x the limit no real CPU usage explains it.
CPU_UTIL_MAX = 1.25
# Our choice: the kernel enforces memory.max (charges beyond it reclaim or OOM-kill), so a
# working set above the limit only appears when the two series come from different moments (a
# limit lowered mid-step, an old pod's usage meeting the new pod's limit in a rollout). Such a
# mismatch is bounded by one resize step; 1.5x leaves room for a resize by a third and still
# rejects trace artefacts like Bitbrains' memory used at up to 64x the provisioned memory.
MEMORY_UTIL_MAX = 1.5

# Why a reading is not one, in the order the gate checks.
NO_CAPACITY = "no_capacity"
ZERO_CAPACITY = "zero_capacity"
ABOVE_PLAUSIBLE = "above_plausible"
REASONS = (NO_CAPACITY, ZERO_CAPACITY, ABOVE_PLAUSIBLE)


@dataclass(frozen=True)
class Reading:
    """One resource's utilisation: a used column over a capacity column, and the highest ratio
    a real reading of that resource can show (`plausible_max`)."""

    resource: str
    used: str
    capacity: str
    plausible_max: float

    def reason(self, code: str) -> str:
        """One line a person reads in data quality: what the rows are and what happens to them."""
        return {
            NO_CAPACITY: f"{self.capacity} absent: no {self.resource} utilisation (missing data, "
            "never labelled)",
            ZERO_CAPACITY: f"{self.capacity} = 0 (switched off or unset): missing data, never "
            "labelled",
            ABOVE_PLAUSIBLE: f"{self._what()} above {self.plausible_max:g}x {self.capacity}: bad "
            "reading, dropped and never labelled",
        }[code]

    def _what(self) -> str:
        return "working set" if self.resource == "memory" else f"{self.resource} used"


# The warehouse's container_usage columns (kube-state-metrics limits, cAdvisor usage).
CONTAINER_CPU = Reading("cpu", "cpu_cores", "cpu_limit_cores", CPU_UTIL_MAX)
CONTAINER_MEMORY = Reading(
    "memory", "memory_working_set_bytes", "memory_limit_bytes", MEMORY_UTIL_MAX
)
CONTAINER_READINGS = (CONTAINER_CPU, CONTAINER_MEMORY)


def _float(column: str) -> pl.Expr:
    # NaN is a missing value here too (a source that divided by zero upstream).
    value = pl.col(column).cast(pl.Float64)
    return pl.when(value.is_nan()).then(None).otherwise(value)


def reading_problems(used: str, capacity: str, plausible_max: float) -> pl.Expr:
    """Per row, why `used / capacity` is not a utilisation reading, or null when it is one
    (or when there is no usage to judge)."""
    use, cap = _float(used), _float(capacity)
    return (
        pl.when(use.is_null())
        .then(None)
        .when(cap.is_null())
        .then(pl.lit(NO_CAPACITY))
        .when(cap <= 0)
        .then(pl.lit(ZERO_CAPACITY))
        .when(use / cap > plausible_max)
        .then(pl.lit(ABOVE_PLAUSIBLE))
        .otherwise(None)
    )


def utilisation(used: str, capacity: str, plausible_max: float) -> pl.Expr:
    """`used / capacity` where that is a reading; null where the capacity is 0 or null or the
    ratio exceeds `plausible_max` (never NaN or inf)."""
    use, cap = _float(used), _float(capacity)
    ok = use.is_not_null() & reading_problems(used, capacity, plausible_max).is_null()
    return pl.when(ok).then(use / cap).otherwise(None)


def reading_utilisation(reading: Reading) -> pl.Expr:
    """`utilisation` of one `Reading`."""
    return utilisation(reading.used, reading.capacity, reading.plausible_max)


def count_problems(
    frame: pl.DataFrame, readings: tuple[Reading, ...], by: tuple[str, ...] = ()
) -> pl.DataFrame:
    """Rows that are not readings, per `by`, resource and reason: columns `*by`, `resource`,
    `reason` (a code above), `rows`. Readings whose columns `frame` lacks are skipped."""
    schema = {**{c: frame.schema.get(c, pl.Utf8) for c in by}, "resource": pl.Utf8,
              "reason": pl.Utf8, "rows": pl.Int64}
    parts = []
    for reading in readings:
        if not {reading.used, reading.capacity} <= set(frame.columns):
            continue
        parts.append(
            frame.select(
                *by,
                pl.lit(reading.resource).alias("resource"),
                reading_problems(reading.used, reading.capacity, reading.plausible_max).alias(
                    "reason"
                ),
            )
            .filter(pl.col("reason").is_not_null())
            .group_by(*by, "resource", "reason")
            .agg(pl.len().cast(pl.Int64).alias("rows"))
        )
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).cast(schema).sort(*by, "resource", "reason")

"""Asset checks that guard the warehouse: evaluated on the rows before they are written.

An asset computes its rows, turns each rule into an `AssetCheckResult`, and only then writes.
When a blocking check fails, `refuse` records the failed checks in the run and fails the step
without writing anything, so downstream assets never read rows a check rejected and no
partition turns green for an answer that was refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import dagster as dg

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


def check(
    name: str,
    passed: bool,
    description: str,
    severity: dg.AssetCheckSeverity = ERROR,
    metadata: dict | None = None,
) -> dg.AssetCheckResult:
    """One check's result."""
    return dg.AssetCheckResult(
        check_name=name,
        passed=bool(passed),
        severity=severity,
        description=description,
        metadata=metadata or {},
    )


def offenders(name: str, offending: Sequence[str], severity=ERROR) -> dg.AssetCheckResult:
    """A check that passes when nothing offends; the first offenders are named."""
    return check(
        name,
        not offending,
        "passed" if not offending else f"{len(offending)}: {', '.join(offending[:5])}",
        severity,
        {"offending": len(offending)},
    )


def blocking_failures(results: Sequence[dg.AssetCheckResult]) -> list[dg.AssetCheckResult]:
    """The failed checks whose severity is ERROR (declared `blocking=True` on the asset)."""
    return [r for r in results if not r.passed and r.severity == ERROR]


def refuse(results: Sequence[dg.AssetCheckResult], what: str) -> Iterator[dg.AssetCheckResult]:
    """Yield the checks, then fail the step: `what` was not written. Use as
    `yield from refuse(...)` in a generator asset when `blocking_failures(results)`."""
    yield from results
    reasons = "; ".join(f"{r.check_name}: {r.description}" for r in blocking_failures(results))
    raise dg.Failure(
        description=f"{what} not written, a blocking check failed: {reasons}",
        allow_retries=False,
    )

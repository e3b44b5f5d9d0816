"""The one retry loop: how many attempts, how long to wait between them, and what is retried.

Written once because each hand-written loop (the Prometheus source asking again after a bad
answer, the report webhook's delivery) counted attempts, computed its pauses and decided what
was worth another try in its own way, and copies of such loops drift (STYLE.md: one way to do
each infrastructure thing). A call site says what it retries and how its final error reads; the
counting and the waiting are here.

Pauses grow exponentially from `base_delay_s` (1x, 2x, 4x ... before the 1st, 2nd, 3rd retry)
plus a uniform jitter of up to `jitter_s`, so clients that failed together do not come back
together; a server's own hint (`Retry-After`) replaces the computed pause. No pause exceeds
`max_delay_s`. HTTP transport retries stay with urllib3's `Retry` on the session (it knows which
connection errors are safe to repeat); `urllib3_backoff` gives it the same numbers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` tries after the first, spaced by exponential backoff with jitter."""

    retries: int
    base_delay_s: float
    jitter_s: float = 0.0
    max_delay_s: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, not {self.retries}")
        if min(self.base_delay_s, self.jitter_s, self.max_delay_s) < 0:
            raise ValueError("retry delays must not be negative")

    @property
    def attempts(self) -> int:
        """Calls made at most: the first and every retry."""
        return self.retries + 1

    def delay(
        self, retry: int, hint_s: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait before retry number `retry` (1 = the first retry).

        A positive `hint_s` (a server's `Retry-After`) is used instead of the backoff: the
        server knows when it will have room. Either way the pause is capped at `max_delay_s`.
        """
        if hint_s is not None and hint_s > 0:
            return min(hint_s, self.max_delay_s)
        jitter = (rng or random).uniform(0, self.jitter_s) if self.jitter_s else 0.0
        return min(self.base_delay_s * 2 ** (retry - 1) + jitter, self.max_delay_s)

    def urllib3_backoff(self) -> dict[str, Any]:
        """The backoff settings of a urllib3 `Retry` that follows this policy's numbers."""
        return {
            "backoff_factor": self.base_delay_s,
            "backoff_jitter": self.jitter_s,
            "backoff_max": self.max_delay_s,
        }


def call_with_retries(
    attempt: Callable[[int], T],
    policy: RetryPolicy,
    retry_on: tuple[type[BaseException], ...],
    delay_hint: Callable[[BaseException], float | None] | None = None,
    sleep: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
) -> T:
    """`attempt(n)` for n = 1, 2, ... until it returns, at most `policy.attempts` calls.

    Only exceptions in `retry_on` are retried; anything else propagates at once (a refusal that
    retrying cannot fix). When every attempt failed, the last error is re-raised unchanged: the
    caller words the final message (it knows what it was doing; `policy.attempts` says how
    often). `delay_hint(error)` may return a server's suggested wait for that error.
    """
    wait = sleep or time.sleep
    for number in range(1, policy.attempts + 1):
        try:
            return attempt(number)
        except retry_on as error:
            if number == policy.attempts:
                raise
            wait(policy.delay(number, delay_hint(error) if delay_hint else None, rng))
    raise AssertionError("unreachable: the last attempt returns or raises")

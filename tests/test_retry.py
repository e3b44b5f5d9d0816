"""The shared retry loop: attempts counted once, pauses that grow and jitter, what is retried,
a server's hint honoured but capped, and the same numbers handed to urllib3's `Retry`."""

import random

import pytest
from urllib3.util.retry import Retry

from capacity_pipelines.common.retry import RetryPolicy, call_with_retries


class Flaky(Exception):
    """Worth another try; carries an optional server hint."""

    def __init__(self, n: int, hint: float | None = None):
        super().__init__(f"failure {n}")
        self.hint = hint


def failing(times: int, error=Flaky, result="done"):
    """An operation that fails `times` times, then returns; it records the attempt numbers."""
    seen: list[int] = []

    def attempt(n: int):
        seen.append(n)
        if len(seen) <= times:
            raise error(n)
        return result

    return attempt, seen


def test_succeeds_after_failures_with_doubling_pauses():
    attempt, seen = failing(2)
    pauses: list[float] = []
    policy = RetryPolicy(retries=3, base_delay_s=0.5)
    assert call_with_retries(attempt, policy, (Flaky,), sleep=pauses.append) == "done"
    assert seen == [1, 2, 3]
    assert pauses == [0.5, 1.0]


def test_gives_up_after_every_attempt_and_raises_the_last_error():
    attempt, seen = failing(10)
    pauses: list[float] = []
    with pytest.raises(Flaky, match="failure 3"):
        call_with_retries(attempt, RetryPolicy(2, 1.0), (Flaky,), sleep=pauses.append)
    assert seen == [1, 2, 3]
    assert pauses == [1.0, 2.0]  # no pause after the last attempt


def test_no_retries_means_one_call():
    attempt, seen = failing(1)
    with pytest.raises(Flaky):
        call_with_retries(attempt, RetryPolicy(0, 1.0), (Flaky,), sleep=pytest.fail)
    assert seen == [1]


def test_an_error_not_listed_is_not_retried():
    attempt, seen = failing(1, error=KeyError)
    with pytest.raises(KeyError):
        call_with_retries(attempt, RetryPolicy(5, 1.0), (Flaky,), sleep=pytest.fail)
    assert seen == [1]


def test_jitter_stays_within_its_bound_and_varies():
    policy = RetryPolicy(retries=4, base_delay_s=0.5, jitter_s=0.5)
    rng = random.Random(7)
    for retry, base in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)):
        pauses = [policy.delay(retry, rng=rng) for _ in range(200)]
        assert all(base <= p <= base + 0.5 for p in pauses)
        assert max(pauses) - min(pauses) > 0.4  # spread over the jitter, not a constant


def test_a_server_hint_replaces_the_backoff_but_is_capped():
    policy = RetryPolicy(retries=3, base_delay_s=1.0, max_delay_s=60.0)
    assert policy.delay(1, hint_s=5.0) == 5.0
    assert policy.delay(1, hint_s=3600.0) == 60.0
    for unusable in (None, 0.0, -3.0, float("nan")):
        assert policy.delay(2, hint_s=unusable) == 2.0
    assert policy.delay(10) == 60.0  # 512 s of backoff is capped too


def test_the_hint_comes_from_the_failed_attempt():
    pauses: list[float] = []
    hints = iter([4.0, None])

    def attempt(n: int):
        if n < 3:
            raise Flaky(n, hint=next(hints))
        return n

    policy = RetryPolicy(retries=2, base_delay_s=0.25)
    got = call_with_retries(
        attempt, policy, (Flaky,), delay_hint=lambda e: e.hint, sleep=pauses.append
    )
    assert got == 3 and pauses == [4.0, 0.5]


@pytest.mark.parametrize(
    "settings",
    [dict(retries=-1, base_delay_s=1.0), dict(retries=1, base_delay_s=-1.0)],
)
def test_a_nonsense_policy_is_refused(settings):
    with pytest.raises(ValueError):
        RetryPolicy(**settings)


def test_urllib3_retry_follows_the_same_numbers():
    policy = RetryPolicy(retries=6, base_delay_s=0.5, max_delay_s=3.0)
    retry = Retry(total=policy.retries, **policy.urllib3_backoff())
    for _ in range(3):
        retry = retry.increment(method="GET", url="/api/v1/query_range")
    assert retry.get_backoff_time() == 2.0  # urllib3: base * 2^(errors - 1) after 3 errors
    for _ in range(3):
        retry = retry.increment(method="GET", url="/api/v1/query_range")
    assert retry.get_backoff_time() == 3.0  # capped by the policy, not urllib3's 120 s

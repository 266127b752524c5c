"""The one retry policy (syncd.backoff): its waits, its tries, and what it never retries."""

from __future__ import annotations

import random

import pytest

from syncd.backoff import RetryPolicy, backoff_delay
from syncd.errors import AuthError, RetriableError, TryAgain


class Top(random.Random):
    """Jitter that always picks the top of its range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_waits_double_from_base_up_to_the_cap_with_equal_jitter() -> None:
    policy = RetryPolicy(attempts=9, base=0.5, cap=3.0, rng=Top())
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    jittered = RetryPolicy(attempts=9, base=1.0, cap=16.0, rng=random.Random(7))
    for n in range(1, 8):
        ceiling = min(16.0, 2.0 ** (n - 1))
        assert ceiling / 2 <= jittered.delay(n) <= ceiling  # never at once, never above


def test_retry_after_is_the_wait_capped() -> None:
    policy = RetryPolicy(attempts=3, base=0.5, cap=7.0)
    assert policy.delay(1, 2.5) == 2.5
    assert policy.delay(4, 0.0) == 0.0
    assert policy.delay(1, 3600.0) == 7.0


def test_the_daemon_takes_retry_after_as_a_floor() -> None:
    assert backoff_delay(1, base=30.0, cap=3600.0, retry_after=0.0, rng=Top()) == 30.0
    assert backoff_delay(1, base=30.0, cap=3600.0, retry_after=600.0, rng=Top()) == 600.0
    assert backoff_delay(1, base=30.0, cap=100.0, retry_after=1e9, rng=Top()) == 100.0


def test_tries_run_out_then_the_last_error_is_raised() -> None:
    slept: list[float] = []
    policy = RetryPolicy(attempts=3, base=1.0, cap=8.0, sleep=slept.append, rng=Top())
    tries: list[int] = []

    def attempt() -> str:
        tries.append(1)
        raise TryAgain(RetriableError(f"try {len(tries)}"))

    with pytest.raises(RetriableError, match="try 3"):
        policy.call(attempt)
    assert len(tries) == 3
    assert slept == [1.0, 2.0]  # no wait after the last try


def test_success_after_a_retry_and_the_retry_is_reported() -> None:
    slept: list[float] = []
    seen: list[tuple[int, str, float]] = []
    policy = RetryPolicy(attempts=5, base=1.0, cap=8.0, sleep=slept.append)
    answers = iter([TryAgain(RetriableError("busy"), retry_after=4.0), None])

    def attempt() -> str:
        error = next(answers)
        if error is not None:
            raise error
        return "ok"

    result = policy.call(attempt, on_retry=lambda n, s, w: seen.append((n, str(s.error), w)))
    assert result == "ok"
    assert slept == [4.0]
    assert seen == [(1, "busy", 4.0)]


def test_any_other_error_stops_at_once() -> None:
    slept: list[float] = []
    policy = RetryPolicy(attempts=5, base=1.0, cap=8.0, sleep=slept.append)
    tries: list[int] = []

    def attempt() -> None:
        tries.append(1)
        raise AuthError("refused", where="crm")

    with pytest.raises(AuthError):
        policy.call(attempt)
    assert tries == [1]
    assert slept == []


def test_a_pause_takes_the_wait_instead_of_sleeping() -> None:
    slept: list[float] = []
    paused: list[float] = []
    policy = RetryPolicy(attempts=3, base=1.0, cap=8.0, sleep=slept.append, rng=Top())
    answers = iter([TryAgain(RetriableError("429"), pause=paused.append), None])

    def attempt() -> int:
        error = next(answers)
        if error is not None:
            raise error
        return 1

    assert policy.call(attempt) == 1
    assert paused == [1.0]
    assert slept == []

"""The one retry policy every retry loop in syncd and its connectors runs under.

A loop hands :meth:`RetryPolicy.call` one attempt; the attempt returns, raises an error
(which ends the loop at once: an auth failure, a write that may have landed), or raises
:class:`TryAgain` carrying the error to give up with when no tries are left. The policy
decides how long to wait and how often, on top of tenacity (``Retrying``: stop after
``attempts``, wait, sleep through an injectable function so tests never sleep).

The wait: a server's ``Retry-After`` for the request it answered is the wait, capped so a
hostile or broken header cannot park us for a day. Without one, capped exponential backoff
with "equal jitter" (AWS Architecture Blog, "Exponential Backoff and Jitter"): a uniform draw
between half and all of the capped exponential. It spreads a herd of retries almost as well
as full jitter while never retrying at once, which a struggling CRM would not thank us for.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from syncd.errors import TryAgain

__all__ = ["RetryPolicy", "backoff_delay"]

T = TypeVar("T")
_rng = random.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (the first included); waits start near ``base`` seconds and
    double up to ``cap``. ``sleep`` and ``rng`` exist for tests."""

    attempts: int
    base: float
    cap: float
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default=_rng)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after try number ``attempt`` (counting from 1) failed."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.cap)
        ceiling = min(self.cap, self.base * 2.0 ** min(max(0, attempt - 1), 60))
        return self.rng.uniform(ceiling / 2, ceiling)

    def call(
        self,
        attempt: Callable[[], T],
        *,
        on_retry: Callable[[int, TryAgain, float], object] | None = None,
    ) -> T:
        """Run ``attempt`` until it returns, raises anything but :class:`TryAgain`, or has
        been tried ``attempts`` times (then the last ``TryAgain.error`` is raised).
        ``on_retry(attempt, signal, wait)`` is called before each wait (to log it)."""
        paused = [False]

        def wait(state: tenacity.RetryCallState) -> float:
            signal = _signal(state)
            return self.delay(state.attempt_number, signal.retry_after)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            signal = _signal(state)
            seconds = state.upcoming_sleep
            if on_retry is not None:
                on_retry(state.attempt_number, signal, seconds)
            if signal.pause is not None:
                signal.pause(seconds)
                paused[0] = True

        def sleep(seconds: float) -> None:
            if paused[0]:
                paused[0] = False  # the pause took the wait
                return
            self.sleep(seconds)

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max(1, self.attempts)),
            wait=wait,
            retry=tenacity.retry_if_exception_type(TryAgain),
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except TryAgain as exc:
            raise exc.error from exc.error.__cause__


def _signal(state: tenacity.RetryCallState) -> TryAgain:
    assert state.outcome is not None  # tenacity waits only after an attempt
    error = state.outcome.exception()
    assert isinstance(error, TryAgain)  # retry= admits nothing else
    return error


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds before the daemon offers a failed delivery again (``attempt`` counts from 1).

    The policy's backoff, with a ``Retry-After`` carried up by an error as a floor: the
    daemon's queue waits at least what the CRM asked, never less than its own backoff.
    """
    policy = RetryPolicy(attempts=1, base=base, cap=cap, rng=rng or _rng)
    delay = policy.delay(attempt)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, policy.delay(attempt, retry_after))
    return delay

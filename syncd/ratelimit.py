"""A client-side rate limiter shared by every thread that talks to one remote API.

CRM limits are *rolling windows* ("100 requests per 10 seconds"), so the limiter keeps the
send times of the last ``max_calls`` requests and makes a caller wait until the oldest one
leaves the window. A 429's ``Retry-After`` is applied with :meth:`RateLimiter.penalize`, which
holds back *every* caller, not just the one that was refused: the remote counts the account,
not the thread.

``clock`` and ``sleep`` are injectable so tests can run on a fake clock without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """At most ``max_calls`` acquisitions in any ``period`` seconds (sliding window)."""

    def __init__(
        self,
        max_calls: int,
        period: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        if period <= 0:
            raise ValueError("period must be positive")
        self.max_calls = max_calls
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._sent: deque[float] = deque()
        self._blocked_until = 0.0

    def _wait_needed(self, now: float) -> float:
        """Seconds until a request may go out; 0 means now. Caller holds the lock."""
        horizon = now - self.period
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()
        wait = self._blocked_until - now
        if len(self._sent) >= self.max_calls:
            wait = max(wait, self._sent[0] + self.period - now)
        return max(wait, 0.0)

    def acquire(self) -> float:
        """Block until a request may be sent, record it, and return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0.0:
                    self._sent.append(now)
                    return waited
            # Sleep outside the lock so other callers can see the window move too.
            self._sleep(wait)
            waited += wait

    def penalize(self, seconds: float) -> None:
        """Hold back every caller for ``seconds`` from now (a Retry-After from the remote)."""
        if seconds <= 0:
            return
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    @property
    def blocked_for(self) -> float:
        """Seconds left of the current penalty (0 when none), for metrics and tests."""
        with self._lock:
            return max(self._blocked_until - self._clock(), 0.0)

    def __repr__(self) -> str:
        return f"RateLimiter(max_calls={self.max_calls}, period={self.period:g})"

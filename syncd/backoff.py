"""Capped exponential backoff with jitter, shared by every retry loop in syncd.

"Equal jitter" (AWS Architecture Blog, "Exponential Backoff and Jitter"): a uniform draw
between half and all of the capped exponential. It spreads a herd of retries almost as well
as full jitter while never retrying at once, which a struggling CRM would not thank us for.
"""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]

_rng = random.SystemRandom()


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before try number ``attempt + 1`` (``attempt`` counts from 1).

    A server's ``Retry-After`` is a floor, never shortened by jitter; it is still capped so a
    hostile or broken header cannot park us for a day.
    """
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    delay = (rng or _rng).uniform(ceiling / 2, ceiling)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, cap))
    return delay

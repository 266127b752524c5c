"""Waiting for work in flight on other threads, also when interrupted.

``ThreadPoolExecutor.__exit__`` joins its threads, but a ``KeyboardInterrupt`` (^C in
``syncd run --once``, a backfill, or a program that embeds the daemon) breaks that join and
leaves the threads running after their caller has returned: a target's deliveries would go on
claiming and writing behind a caller that believes the cycle is over, and that caller's next
cycle could take over claims whose writes are still on their way to the CRM.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, wait
from typing import Any


def wait_for_all(futures: Sequence[Future[Any]], stop: threading.Event) -> None:
    """Wait until every future is done. Interrupted while waiting: set ``stop`` (no thread
    starts another batch), wait again for what is in flight (each batch records or hands back
    its deliveries), then re-raise. A second interrupt abandons this wait (a caller inside an
    executor's ``with`` block still joins its threads on the way out)."""
    try:
        wait(futures)
    except BaseException:
        stop.set()
        wait(futures)
        raise

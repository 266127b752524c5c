"""Delivering while a backfill is still fetching.

A backfill fetches every day window -- one list request a day and one detail request a
message, minutes of waiting over a WAN -- and a CRM that waited for all of it before its
first batch idled that long. :class:`DeliverAlongside` delivers each target's *full rounds*
(``batch_size`` x ``concurrency`` new deliveries) as soon as that many landed, on one thread
a target beside the fetching; the rest is delivered after the fetching, as before. Only full
rounds go early, so batches are as large as they would have been and requests per message do
not grow; a target that pauses or fails is left to that last pass, which sees its pause.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

import structlog

from syncd.inflight import wait_for_all

__all__ = ["DeliverAlongside"]

log = structlog.get_logger(__name__)


class DeliverAlongside:
    """``with DeliverAlongside(deliver_round, full, stop) as alongside:`` fetch, calling
    ``alongside.landed(targets, count)`` as each window's new deliveries are stored.

    ``deliver_round(target)`` delivers one round and says whether the target may go on (False:
    it paused or failed). ``full[target]`` is the size of a full round. Leaving the block waits
    for every round in flight (also when interrupted, see :func:`syncd.inflight.wait_for_all`)
    and logs what a round raised; :meth:`raise_failures` raises it after the last pass.
    """

    def __init__(
        self,
        deliver_round: Callable[[str], bool],
        full: Mapping[str, int],
        stop: threading.Event,
    ) -> None:
        self._deliver_round = deliver_round
        self._full = dict(full)
        self._stop = stop
        self._owed = dict.fromkeys(full, 0)
        self._landed = threading.Condition()
        self._fetched = False
        self._threads: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []
        self.failures: list[BaseException] = []  # what rounds raised (logged as they end)

    def landed(self, targets: Iterable[str], count: int) -> None:
        """``count`` new deliveries to each of ``targets`` are stored and due."""
        if count <= 0:
            return
        with self._landed:
            for target in targets:
                if target in self._owed:
                    self._owed[target] += count
            self._landed.notify_all()

    def __enter__(self) -> DeliverAlongside:
        if self._full:
            self._threads = ThreadPoolExecutor(len(self._full), thread_name_prefix="alongside")
            # Each thread logs with the caller's context (the cycle's run id).
            self._futures = [
                self._threads.submit(contextvars.copy_context().run, self._deliver, target)
                for target in self._full
            ]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._landed:
            self._fetched = True  # the rounds in flight end; the last pass does the rest
            self._landed.notify_all()
        if self._threads is None:
            return
        try:
            wait_for_all(self._futures, self._stop)
        finally:
            self._threads.shutdown(wait=True)
        for future in self._futures:
            if (error := future.exception()) is not None:
                log.error("delivery beside the fetching failed", error=repr(error))
                self.failures.append(error)

    def raise_failures(self) -> None:
        """Raise the first failure of a round (a database error, say) -- after the last pass
        delivered every target, as a failure of that pass would be raised."""
        if self.failures:
            raise self.failures[0]

    def _due_round(self, target: str) -> bool:
        """Wait until a full round of ``target`` is owed (True) or the fetching ended."""
        full = self._full[target]
        with self._landed:
            while self._owed[target] < full:
                if self._fetched or self._stop.is_set():
                    return False
                self._landed.wait(0.5)  # a signal sets stop without notifying
            if self._fetched or self._stop.is_set():
                return False
            self._owed[target] -= full
            return True

    def _deliver(self, target: str) -> None:
        while self._due_round(target) and self._deliver_round(target):
            pass

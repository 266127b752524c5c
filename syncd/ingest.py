"""Ingest: which day windows to fetch, and fetching them into the store.

Window choice is a pure function of an explicit ``now`` (as arq does for schedules), so the
signpost rule is tested without a clock: a poll covers today plus a look-back, reaching back
to the cursor if the daemon was down; the cursor moves only to the *start* of a run whose
windows all completed, never past it.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.exc import IntegrityError

from syncd.config import AccountSettings
from syncd.inflight import wait_for_all
from syncd.models import Message
from syncd.source.client import BerkshireClient, WindowResult
from syncd.store.source_state import unchanged_summaries
from syncd.store.store import Store

__all__ = [
    "IngestStats",
    "backfill_days",
    "ingest_days",
    "poll_days",
    "poll_plan",
    "reconcile_days",
]

log = structlog.get_logger(__name__)

MAX_CATCH_UP_DAYS = 31  # beyond this, an operator should run a backfill on purpose


def poll_days(
    now: datetime, tz: ZoneInfo, lookback_days: int, cursor: datetime | None
) -> list[date]:
    """Days to poll: from min(today - lookback, the cursor's day) through today, in ``tz``."""
    return poll_plan(now, tz, lookback_days, cursor)[0]


def poll_plan(
    now: datetime, tz: ZoneInfo, lookback_days: int, cursor: datetime | None
) -> tuple[list[date], tuple[date, date] | None]:
    """:func:`poll_days`, and the days before them the catch-up cap leaves out (first, last):
    those are a gap only a backfill fills, and the caller must say so."""
    today = now.astimezone(tz).date()
    start = today - timedelta(days=lookback_days)
    if cursor is not None:
        start = min(start, cursor.astimezone(tz).date())
    earliest = today - timedelta(days=MAX_CATCH_UP_DAYS)
    skipped = (start, earliest - timedelta(days=1)) if start < earliest else None
    start = max(start, earliest)
    return [start + timedelta(days=i) for i in range((today - start).days + 1)], skipped


def reconcile_days(now: datetime, tz: ZoneInfo, days_back: int) -> list[date]:
    """Days a reconcile pass re-reads: the ``days_back`` days before today, and today."""
    today = now.astimezone(tz).date()
    return [today - timedelta(days=i) for i in range(days_back, -1, -1)]


def backfill_days(start: date, end: date, done: set[date]) -> list[date]:
    """Days of a backfill still to fetch; finished windows are never fetched again."""
    if end < start:
        return []
    days = (start + timedelta(days=i) for i in range((end - start).days + 1))
    return [day for day in days if day not in done]


@dataclass
class IngestStats:
    windows: int = 0
    fetched: int = 0
    new: int = 0
    changed: int = 0
    quarantined: int = 0
    unchanged: int = 0  # listed summaries stored already with the same fingerprint
    details: int = 0  # detail requests made (one per new or changed summary)
    # This window's new emergencies; a total leaves them out (see add), so memory stays flat.
    emergencies: list[Message] = field(default_factory=list)

    def add(self, other: IngestStats) -> None:
        self.windows += other.windows
        self.fetched += other.fetched
        self.new += other.new
        self.changed += other.changed
        self.quarantined += other.quarantined
        self.unchanged += other.unchanged
        self.details += other.details

    def as_dict(self) -> dict[str, int]:
        return {
            "windows": self.windows,
            "fetched": self.fetched,
            "new": self.new,
            "changed": self.changed,
            "quarantined": self.quarantined,
            "unchanged": self.unchanged,
            "details": self.details,
        }


WindowCallback = Callable[[date, IngestStats], None]


class _Heartbeat:
    """Renews the lease during a long window's detail fetches, at most every ``every``
    seconds, from whichever fetching thread comes first. A renewal that fails is noticed at
    the next window boundary, where ``keep_going`` is asked again."""

    def __init__(self, renew: Callable[[], bool], every: float = 5.0) -> None:
        self._renew = renew
        self._every = every
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if time.monotonic() - self._last < self._every:
                return
            self._last = time.monotonic()
        self._renew()


def ingest_days(
    store: Store,
    client: BerkshireClient,
    account: AccountSettings,
    days: Sequence[date],
    *,
    mark_before: date | None = None,
    stop: threading.Event | None = None,
    on_window: WindowCallback | None = None,
    refetch: bool = False,
    keep_going: Callable[[], bool] | None = None,
    renew_every: float = 5.0,
    ahead: int = 1,
) -> IngestStats:
    """Fetch each day window and store it. Days before ``mark_before`` are recorded as done
    (a backfill resumes after them); today is never marked, it may still grow.

    A summary's detail is fetched only when it is new or its list item changed (``refetch``:
    always). ``keep_going`` is asked before each window (the poll lease is renewed there);
    False stops the run as ``stop`` does. During a window's detail fetches it is also called,
    at most every ``renew_every`` seconds, so a slow window keeps its lease.

    ``ahead``: windows fetched at once (1: one after another). With 2 the next window's list
    and details are fetched while this one's last details come in and it is stored, so the
    client's detail threads never wait at a window's end (they are shared: the bound holds).
    Windows are still stored, marked and reported in order, and a failed fetch is raised in
    its turn, after the windows before it are stored. A message listed in two windows fetched
    at once may have its detail fetched twice (the second copy is stored as unchanged).

    Source errors propagate: the caller leaves the cursor where it was.
    """
    total = IngestStats()

    def unchanged(prints: Mapping[str, str]) -> set[str]:
        return unchanged_summaries(store, account.name, prints)

    renewing = _Heartbeat(keep_going, renew_every) if keep_going is not None else None
    halt = threading.Event()  # interrupted: the windows fetching ahead drop their details

    def beat() -> None:
        if halt.is_set():
            raise _Halted
        if renewing is not None:
            renewing()

    def go() -> bool:
        if stop is not None and stop.is_set():
            return False
        return keep_going is None or keep_going()

    def fetch(day: date) -> WindowResult:
        return client.fetch_window(
            account.name,
            day,
            day,
            account.timezone,
            unchanged=unchanged,
            refetch=refetch,
            heartbeat=beat,
        )

    # Fetching ahead, every window's details share the client's threads for this run.
    shared = client.sharing_detail_threads() if ahead > 1 else contextlib.nullcontext()
    with shared, contextlib.closing(_windows(days, fetch, go, ahead, halt, stop)) as windows:
        for day, window in windows:
            stats = _store_window(store, account, day, window, mark_before)
            total.add(stats)
            if on_window is not None:
                on_window(day, stats)
    return total


class _Halted(Exception):
    """Raised in a detail fetch of a window fetched ahead once the run was interrupted: the
    window's fetches still queued are dropped (it is never stored)."""


def _windows(
    days: Sequence[date],
    fetch: Callable[[date], WindowResult],
    go: Callable[[], bool],
    ahead: int,
    halt: threading.Event,
    stop: threading.Event | None,
) -> Generator[tuple[date, WindowResult]]:
    """Each day's window, in order, up to ``ahead`` of them fetching at once; ``go`` is asked
    before each fetch starts and, fetching ahead, again before each window is handed out to be
    stored (a run that lost its lease stops between windows). Closing the generator waits
    for the fetches in flight. Interrupted while waiting, it sets ``halt`` (the windows in
    flight drop their queued details) and ``stop`` (the run is stopping: nothing more starts,
    deliveries alongside included), waits for what is running, and re-raises."""
    if ahead <= 1:
        for day in days:
            if not go():
                return
            yield day, fetch(day)
        return
    todo = iter(days)
    queue: deque[tuple[date, Future[WindowResult]]] = deque()
    more = True  # days left to submit, under the lease
    with ThreadPoolExecutor(ahead, thread_name_prefix="berkshire-window") as threads:
        try:
            while True:
                while more and len(queue) < ahead:
                    following = next(todo, None)
                    if following is None or not go():
                        more = False
                        break
                    # The fetch logs with the caller's context (the cycle's run id).
                    run = contextvars.copy_context().run
                    queue.append((following, threads.submit(run, fetch, following)))
                if not queue:
                    return
                day, future = queue.popleft()
                try:
                    wait_for_all([future], halt)
                except BaseException:
                    if stop is not None:
                        stop.set()
                    raise
                window = future.result()
                if not go():  # the lease was lost since this fetch began: store nothing more
                    return
                yield day, window
        finally:
            halt.set()  # what is still fetching is never stored: drop its queued details
            for _, future in queue:
                future.cancel()
            wait_for_all([future for _, future in queue], halt)
            for _, future in queue:  # dropped after a failure or an interrupt: never stored
                if not future.cancelled():
                    future.exception()


def _store_window(
    store: Store,
    account: AccountSettings,
    day: date,
    window: WindowResult,
    mark_before: date | None,
) -> IngestStats:
    """Store one fetched window (quarantine, messages) and mark it done when it is a
    finished day."""
    quarantined = store.quarantine(
        account.name, [(q.message_id, q.reason, q.raw) for q in window.quarantined]
    )
    if window.quarantined:
        log.warning(
            "messages quarantined",
            account=account.name,
            day=day.isoformat(),
            count=len(window.quarantined),
            reasons=sorted({q.reason for q in window.quarantined})[:5],
        )
    try:
        result = store.ingest(
            account.name, window.messages, account.targets, fingerprints=window.fingerprints
        )
    except IntegrityError:
        # Another process stored some of these messages a moment ago (its lease ran out
        # while ours was held, or the other way round): read again, they are known now.
        log.warning("window stored concurrently; ingesting again", day=day.isoformat())
        result = store.ingest(
            account.name, window.messages, account.targets, fingerprints=window.fingerprints
        )
    stats = IngestStats(
        windows=1,
        fetched=len(window.messages) + len(window.quarantined) + window.unchanged,
        new=result.new,
        changed=result.changed,
        quarantined=quarantined,
        unchanged=window.unchanged + result.unchanged,
        details=window.details,
    )
    if result.new:
        fresh = set(result.new_ids)
        stats.emergencies = [m for m in window.messages if m.is_emergency and m.message_id in fresh]
    if mark_before is not None and day < mark_before:
        store.mark_window(account.name, day, stats.fetched, stats.new)
    return stats

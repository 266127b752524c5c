"""Fetching the next day window while this one ends (``ingest_days(..., ahead=2)``).

Counted at the Berkshire simulator and on the wire: the windows are stored in order, the
detail requests in flight never pass ``detail_concurrency`` (the client's detail threads are
shared by the windows fetching at once), a list request goes out while details are still in
flight only when fetching ahead, and a window that fails is raised after the ones before it
are stored and marked, with nothing left fetching.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from syncd.config import AccountSettings
from syncd.errors import RetriableError
from syncd.ingest import IngestStats, ingest_days
from syncd.sandbox.berkshire import BerkshireSimulator
from syncd.sandbox.http import Request, Response, json_response
from syncd.source.client import BerkshireClient
from syncd.store.store import Store

TZ = ZoneInfo("America/New_York")
END = datetime(2024, 3, 9, 12, tzinfo=UTC)
DAYS = [date(2024, 3, 5) + timedelta(days=n) for n in range(4)]  # 03-05 .. 03-08
CONCURRENCY = 3
EMAIL, TOKEN = "ops@example.com", "t0ken"


class Wire(httpx.BaseTransport):
    """The real transport, noting the most detail requests and the most list requests ever
    in flight at once."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.details = self.most_details = self.lists = self.most_lists = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        detail = request.url.path.rstrip("/") != "/v2/messages"
        with self._lock:
            if detail:
                self.details += 1
                self.most_details = max(self.most_details, self.details)
            else:
                self.lists += 1
                self.most_lists = max(self.most_lists, self.lists)
        try:
            return self._inner.handle_request(request)
        finally:
            with self._lock:
                if detail:
                    self.details -= 1
                else:
                    self.lists -= 1

    def close(self) -> None:
        self._inner.close()


class FailingDay(BerkshireSimulator):
    """Answers the list of ``bad_day`` with a 500, every time."""

    bad_day = DAYS[2]

    def _list(self, request: Request) -> Response:
        if request.arg("from_date") == self.bad_day.strftime("%m-%d-%Y"):
            return json_response({"success": False, "info": "Internal server error"}, 500)
        return super()._list(request)


class SlowFirstList(BerkshireSimulator):
    """The first day's list answers late: a window fetched ahead is listed meanwhile."""

    def _list(self, request: Request) -> Response:
        if request.arg("from_date") == DAYS[0].strftime("%m-%d-%Y"):
            time.sleep(0.3)
        return super()._list(request)


class SlowSecondList(BerkshireSimulator):
    """The second day's list answers late, so its details queue behind the first day's."""

    def _list(self, request: Request) -> Response:
        if request.arg("from_date") == DAYS[1].strftime("%m-%d-%Y"):
            time.sleep(0.3)
        return super()._list(request)


def account(sim: BerkshireSimulator) -> AccountSettings:
    return AccountSettings(
        name="demo",
        base_url=sim.base_url,
        email=EMAIL,
        token=TOKEN,
        timezone=TZ,
        region="US",
        targets=("hubspot",),
        detail_concurrency=CONCURRENCY,
    )


def client(sim: BerkshireSimulator, wire: httpx.BaseTransport) -> BerkshireClient:
    return BerkshireClient(
        sim.base_url,
        EMAIL,
        TOKEN,
        detail_concurrency=CONCURRENCY,
        max_attempts=1,
        transport=wire,
    )


def window_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("berkshire-window")]


@pytest.mark.parametrize("ahead", [1, 2])
def test_windows_fetched_ahead_are_stored_in_order_under_one_detail_bound(
    store: Store, ahead: int
) -> None:
    with SlowFirstList.generated(80, 20, days=5, seed=3, end=END, email=EMAIL, token=TOKEN) as sim:
        sim.latency = 0.02  # answers take a while, so what can overlap does
        wire = Wire()
        stored: list[date] = []

        def on_window(day: date, stats: IngestStats) -> None:
            stored.append(day)

        with client(sim, wire) as berkshire:
            stats = ingest_days(
                store, berkshire, account(sim), DAYS, on_window=on_window, ahead=ahead
            )
        listed = sum(sim.count_between(day, day) for day in DAYS)

    assert stored == DAYS
    assert stats.new == stats.details == listed > 20
    assert store.message_count() == listed
    assert 1 < wire.most_details <= CONCURRENCY
    # The first list takes 0.3 s: fetching ahead, the second day is listed meanwhile.
    assert wire.most_lists == ahead
    assert window_threads() == []


def test_a_failed_window_is_raised_after_the_ones_before_it_are_stored(store: Store) -> None:
    with FailingDay.generated(80, 20, days=5, seed=3, end=END, email=EMAIL, token=TOKEN) as sim:
        sim.latency = 0.02
        stored: list[date] = []

        def on_window(day: date, stats: IngestStats) -> None:
            stored.append(day)

        with client(sim, Wire()) as berkshire, pytest.raises(RetriableError):
            ingest_days(
                store,
                berkshire,
                account(sim),
                DAYS,
                on_window=on_window,
                mark_before=DAYS[-1] + timedelta(days=1),
                ahead=2,
            )
        before = sum(sim.count_between(day, day) for day in DAYS[:2])

    assert stored == DAYS[:2]
    assert store.done_days("demo", DAYS[0], DAYS[-1]) == set(DAYS[:2])
    assert store.message_count() == before  # the window after the failure was not stored
    assert window_threads() == []


def test_an_interrupt_drops_the_details_of_the_window_fetching_ahead(store: Store) -> None:
    """^C while the first window is being stored: the window fetching ahead is never stored,
    so its queued details are dropped, not fetched to the end (counted at the simulator)."""
    with SlowSecondList.generated(
        240, 20, days=5, seed=3, end=END, email=EMAIL, token=TOKEN
    ) as sim:
        sim.latency = 0.05
        first: list[int] = []

        def on_window(day: date, stats: IngestStats) -> None:
            first.append(sim.detail_requests)
            raise KeyboardInterrupt

        with client(sim, Wire()) as berkshire, pytest.raises(KeyboardInterrupt):
            ingest_days(store, berkshire, account(sim), DAYS, on_window=on_window, ahead=2)
        fetched = sim.detail_requests
        second = sim.count_between(DAYS[1], DAYS[1])

    assert second > 6 * CONCURRENCY  # enough that fetching it to the end would show
    # The second window's fetches already running end (and a thread may start one more before
    # the window's own thread cancels the rest), the rest are dropped.
    assert fetched <= first[0] + 3 * CONCURRENCY
    assert window_threads() == []

"""Which day windows a poll or a backfill fetches: pure functions of an explicit ``now``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from syncd.ingest import MAX_CATCH_UP_DAYS, backfill_days, poll_days, poll_plan, reconcile_days

NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@pytest.mark.parametrize(
    ("now", "tz", "today"),
    [
        # 23:30 in New York is already the next day in UTC: the account's day is what counts.
        (datetime(2024, 6, 15, 23, 30, tzinfo=NEW_YORK), NEW_YORK, date(2024, 6, 15)),
        (datetime(2024, 6, 15, 23, 30, tzinfo=NEW_YORK), ZoneInfo("UTC"), date(2024, 6, 16)),
        (datetime(2024, 6, 16, 3, 30, tzinfo=UTC), NEW_YORK, date(2024, 6, 15)),
        # Tokyo is ahead: 16:00 UTC is 01:00 on the next day there.
        (datetime(2024, 6, 15, 16, 0, tzinfo=UTC), TOKYO, date(2024, 6, 16)),
        (datetime(2024, 6, 15, 14, 59, 59, tzinfo=UTC), TOKYO, date(2024, 6, 15)),
        # Exactly midnight belongs to the new day; the DST jump in New York changes nothing.
        (datetime(2024, 3, 10, 5, 0, tzinfo=UTC), NEW_YORK, date(2024, 3, 10)),
        (datetime(2024, 3, 10, 4, 59, tzinfo=UTC), NEW_YORK, date(2024, 3, 9)),
        (datetime(2024, 1, 1, 0, 0, tzinfo=UTC), NEW_YORK, date(2023, 12, 31)),
    ],
)
def test_today_is_the_accounts_day(now: datetime, tz: ZoneInfo, today: date) -> None:
    assert poll_days(now, tz, 0, None) == [today]


def test_lookback_adds_earlier_days_oldest_first() -> None:
    now = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)
    assert poll_days(now, NEW_YORK, 2, None) == days(date(2024, 2, 28), date(2024, 3, 1))
    assert poll_days(now, NEW_YORK, 3, None)[0] == date(2024, 2, 27)  # a leap year's Feb 29


def test_cursor_days_back_extends_the_window() -> None:
    now = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
    # 02:00 UTC on the 10th is still the 9th in New York.
    cursor = datetime(2024, 6, 10, 2, 0, tzinfo=UTC)
    assert poll_days(now, NEW_YORK, 1, cursor) == days(date(2024, 6, 9), date(2024, 6, 15))
    assert poll_days(now, TOKYO, 1, cursor) == days(date(2024, 6, 10), date(2024, 6, 15))


def test_recent_cursor_does_not_shrink_the_lookback() -> None:
    now = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
    assert poll_days(now, NEW_YORK, 2, now) == days(date(2024, 6, 13), date(2024, 6, 15))
    assert poll_days(now, NEW_YORK, 2, now + timedelta(days=3)) == days(
        date(2024, 6, 13), date(2024, 6, 15)
    )


@pytest.mark.parametrize(("lookback", "cursor_days_back"), [(1, 90), (60, None), (0, 32)])
def test_catch_up_is_capped(lookback: int, cursor_days_back: int | None) -> None:
    now = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
    cursor = now - timedelta(days=cursor_days_back) if cursor_days_back else None

    window = poll_days(now, NEW_YORK, lookback, cursor)

    assert MAX_CATCH_UP_DAYS == 31
    assert window == days(date(2024, 6, 15) - timedelta(days=31), date(2024, 6, 15))
    assert len(window) == 32


def test_cursor_just_inside_the_cap_is_honoured() -> None:
    now = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
    window = poll_days(now, NEW_YORK, 1, now - timedelta(days=30))
    assert window[0] == date(2024, 5, 16)
    assert window[-1] == date(2024, 6, 15)


def test_backfill_skips_done_days() -> None:
    start, end = date(2024, 1, 30), date(2024, 2, 3)
    done = {date(2024, 1, 31), date(2024, 2, 2), date(2023, 12, 1)}

    assert backfill_days(start, end, done) == [
        date(2024, 1, 30),
        date(2024, 2, 1),
        date(2024, 2, 3),
    ]
    assert backfill_days(start, end, set()) == days(start, end)
    assert backfill_days(start, end, set(days(start, end))) == []


def test_backfill_single_day_and_reversed_range() -> None:
    day = date(2024, 5, 5)
    assert backfill_days(day, day, set()) == [day]
    assert backfill_days(day, day - timedelta(days=1), set()) == []
    assert backfill_days(date(2024, 5, 10), date(2024, 5, 1), set()) == []


def test_poll_plan_names_the_days_the_catch_up_cap_leaves_out() -> None:
    now = datetime(2024, 6, 15, 12, tzinfo=NEW_YORK)
    today = date(2024, 6, 15)
    cursor = datetime(2024, 5, 1, 9, tzinfo=NEW_YORK)
    polled, skipped = poll_plan(now, NEW_YORK, 2, cursor)
    earliest = today - timedelta(days=MAX_CATCH_UP_DAYS)
    assert polled == days(earliest, today)
    assert skipped == (date(2024, 5, 1), earliest - timedelta(days=1))
    # Within the cap nothing is skipped.
    assert poll_plan(now, NEW_YORK, 2, now - timedelta(days=5))[1] is None
    assert poll_plan(now, NEW_YORK, 2, None)[1] is None


def test_reconcile_reads_the_days_back_and_today() -> None:
    now = datetime(2024, 6, 15, 12, tzinfo=NEW_YORK)
    assert reconcile_days(now, NEW_YORK, 14) == days(date(2024, 6, 1), date(2024, 6, 15))
    assert reconcile_days(now, NEW_YORK, 0) == [date(2024, 6, 15)]

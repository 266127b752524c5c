"""What the source side reads from the state store beyond messages: which list items are
unchanged since last seen, and the days a catch-up cap left unpolled (gaps)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select

from syncd.batches import chunks
from syncd.store.base import ROWS_PER_IN
from syncd.store.records import RunKind, RunStatus
from syncd.store.schema import messages, runs, source_gaps, windows
from syncd.store.store import Store

__all__ = ["Gap", "first_read_day", "open_gaps", "record_gap", "unchanged_summaries"]


def unchanged_summaries(store: Store, account: str, prints: Mapping[str, str]) -> set[str]:
    """Ids of ``prints`` (message id -> list-item fingerprint) stored with that fingerprint."""
    ids = list(prints)
    same: set[str] = set()
    with store.engine.connect() as conn:
        for chunk in chunks(ids, ROWS_PER_IN):
            rows = conn.execute(
                select(messages.c.message_id, messages.c.summary_hash).where(
                    messages.c.account == account,
                    messages.c.message_id.in_(chunk),
                )
            )
            same.update(r.message_id for r in rows if r.summary_hash == prints[r.message_id])
    return same


@dataclass(frozen=True)
class Gap:
    account: str
    first_day: date
    last_day: date
    found_at: datetime
    missing: int  # days of it no backfill has done yet

    def command(self) -> str:
        return f"syncd run --backfill --from {self.first_day} --to {self.last_day}"


def record_gap(store: Store, account: str, first: date, last: date) -> bool:
    """Remember days ``first``..``last`` as skipped; False when already recorded."""
    with store.engine.begin() as conn:
        found = conn.execute(
            select(source_gaps.c.last_day).where(
                source_gaps.c.account == account, source_gaps.c.first_day == first
            )
        ).first()
        if found is not None:
            if found.last_day >= last:
                return False
            conn.execute(
                source_gaps.update()
                .where(source_gaps.c.account == account, source_gaps.c.first_day == first)
                .values(last_day=last)
            )
            return True
        conn.execute(
            source_gaps.insert(),
            {"account": account, "first_day": first, "last_day": last, "found_at": _now()},
        )
    return True


def open_gaps(store: Store) -> list[Gap]:
    """Recorded gaps some day of which no backfill has completed yet."""
    out: list[Gap] = []
    with store.engine.connect() as conn:
        rows = list(conn.execute(select(source_gaps).order_by(source_gaps.c.first_day)))
        for r in rows:
            done = conn.execute(
                select(windows.c.day).where(
                    windows.c.account == r.account,
                    windows.c.day >= r.first_day,
                    windows.c.day <= r.last_day,
                )
            ).all()
            missing = (r.last_day - r.first_day).days + 1 - len(done)
            if missing > 0:
                out.append(Gap(r.account, r.first_day, r.last_day, r.found_at, missing))
    return out


def first_read_day(store: Store, account: str, lookback_days: int) -> date | None:
    """The earliest day syncd has read for ``account``: the first successful poll's day less
    the look-back, or the earliest backfilled day. A reconcile never reaches before it: it
    re-reads what polls saw, it does not pull history nobody asked for (that is a backfill).
    The poll's day is its UTC date, a day earlier than any account's local one at worst."""
    with store.engine.connect() as conn:
        polled = conn.execute(
            select(func.min(runs.c.started_at)).where(
                runs.c.kind == RunKind.POLL, runs.c.status == RunStatus.OK
            )
        ).scalar()
        backfilled = conn.execute(
            select(func.min(windows.c.day)).where(windows.c.account == account)
        ).scalar()
    found: list[date] = []
    if polled is not None:
        start = polled if isinstance(polled, datetime) else datetime.fromisoformat(str(polled))
        found.append(start.date() - timedelta(days=lookback_days + 1))
    if backfilled is not None:
        found.append(backfilled)
    return min(found) if found else None


def _now() -> datetime:
    return datetime.now(UTC)

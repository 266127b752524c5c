"""Per-target circuit breaker, kept in the store so every replica and ``syncd status`` see it.

A whole batch failing with a retriable error (every request a 5xx, the network down) is an
outage, not a bad delivery. After ``threshold`` such failures in a row the breaker opens: the
target is paused for a while (doubling up to a cap) and the batches that fail while it is
open are handed back with their attempt refunded, so an outage does not burn every
delivery's ``max_attempts`` into dead letters. Any batch the CRM answers closes it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from syncd.store.schema import breakers

__all__ = ["BreakerState", "breaker_states", "close_breaker", "open_until", "record_failure"]


@dataclass(frozen=True)
class BreakerState:
    failures: int
    open_until: datetime | None
    reason: str | None

    def is_open(self, now: datetime) -> bool:
        return self.open_until is not None and self.open_until > now

    def as_dict(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "open_until": self.open_until.isoformat() if self.open_until else None,
            "reason": self.reason,
        }


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def open_until(store: Any, target: str) -> BreakerState:
    with store.engine.connect() as conn:
        row = conn.execute(select(breakers).where(breakers.c.target == target)).first()
    if row is None:
        return BreakerState(0, None, None)
    return BreakerState(row.failures, _aware(row.open_until), row.reason)


def record_failure(
    store: Any,
    target: str,
    reason: str,
    *,
    threshold: int,
    pause_seconds: float,
    max_pause_seconds: float,
    now: datetime,
) -> BreakerState:
    """Count one whole-batch failure; open (or re-open, for longer) at ``threshold``."""
    dialect_insert = postgresql.insert if store.dialect == "postgresql" else sqlite.insert
    with store.engine.begin() as conn:
        stmt = dialect_insert(breakers).values(
            target=target, failures=1, open_until=None, reason=reason[:500], updated_at=now
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["target"],
                set_={
                    "failures": breakers.c.failures + 1,
                    "reason": stmt.excluded.reason,
                    "updated_at": now,
                },
            )
        )
        failures = conn.execute(
            select(breakers.c.failures).where(breakers.c.target == target)
        ).scalar_one()
        until = None
        if failures >= threshold:
            pause = min(pause_seconds * 2 ** (failures - threshold), max_pause_seconds)
            until = now + timedelta(seconds=pause)
            conn.execute(
                update(breakers).where(breakers.c.target == target).values(open_until=until)
            )
    return BreakerState(int(failures), until, reason[:500])


def close_breaker(store: Any, target: str) -> None:
    """The CRM answered a batch: the outage is over."""
    with store.engine.begin() as conn:
        conn.execute(
            update(breakers)
            .where(breakers.c.target == target, breakers.c.failures > 0)
            .values(failures=0, open_until=None)
        )


def breaker_states(store: Any) -> dict[str, BreakerState]:
    with store.engine.connect() as conn:
        return {
            r.target: BreakerState(r.failures, _aware(r.open_until), r.reason)
            for r in conn.execute(select(breakers))
        }

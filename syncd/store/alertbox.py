"""The alert outbox: alerts are rows first, posts second.

An alert is inserted in the same transaction as the fact that raises it (a dead letter with
its delivery's outcome, an emergency with its message) under a ``key`` that names it once:
a restart, a second replica or the same fact seen again never makes a second row. A sender
(:class:`syncd.alerts.AlertSender`) claims due rows, posts them and marks them sent, or backs
off and tries again: a webhook that is down delays an alert, it never loses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from syncd.store.schema import alerts

__all__ = [
    "AlertRow",
    "PendingAlert",
    "alerts_unsent",
    "claim_alerts",
    "enqueue",
    "insert_alerts",
    "mark_alert",
    "unsent_count",
]


@dataclass(frozen=True)
class AlertRow:
    """An alert to send: ``payload`` is ``{"title", "fields", "severity"}``, already masked."""

    key: str
    kind: str
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PendingAlert:
    id: int
    key: str
    kind: str
    payload: Mapping[str, Any]
    attempts: int


def insert_alerts(conn: Connection, dialect: str, rows: Sequence[AlertRow], now: datetime) -> None:
    """Insert alerts not seen before (by key), inside the caller's transaction."""
    if not rows:
        return
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    unique = {r.key: r for r in rows}
    conn.execute(
        dialect_insert(alerts).on_conflict_do_nothing(index_elements=["key"]),
        [
            {
                "key": r.key[:300],
                "kind": r.kind,
                "payload": dict(r.payload),
                "created_at": now,
                "attempts": 0,
                "next_attempt_at": now,
            }
            for r in unique.values()
        ],
    )


def claim_alerts(
    conn: Connection, now: datetime, limit: int, hold_seconds: float
) -> list[PendingAlert]:
    """Unsent alerts that are due, held for ``hold_seconds`` so two senders (two replicas)
    do not post the same alert at once."""
    due = and_(
        alerts.c.sent_at.is_(None),
        or_(alerts.c.next_attempt_at.is_(None), alerts.c.next_attempt_at <= now),
        or_(alerts.c.claimed_until.is_(None), alerts.c.claimed_until < now),
    )
    rows = list(
        conn.execute(
            select(alerts)
            .where(due)
            .order_by(alerts.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if not rows:
        return []
    conn.execute(
        update(alerts)
        .where(alerts.c.id.in_([r.id for r in rows]))
        .values(claimed_until=now + timedelta(seconds=hold_seconds))
    )
    return [PendingAlert(r.id, r.key, r.kind, dict(r.payload), r.attempts) for r in rows]


def mark_alert(
    conn: Connection,
    alert_id: int,
    now: datetime,
    *,
    sent: bool,
    retry_at: datetime | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {"claimed_until": None, "attempts": alerts.c.attempts + 1}
    if sent:
        values.update(sent_at=now, last_error=None)
    else:
        values.update(next_attempt_at=retry_at, last_error=(error or "")[:500])
    conn.execute(update(alerts).where(alerts.c.id == alert_id).values(**values))


def unsent_count(conn: Connection) -> int:
    return int(
        conn.execute(
            select(func.count()).select_from(alerts).where(alerts.c.sent_at.is_(None))
        ).scalar_one()
    )


def enqueue(store: Any, rows: Sequence[AlertRow], now: datetime) -> None:
    """Insert alerts on their own (those not raised inside another transaction)."""
    with store.engine.begin() as conn:
        insert_alerts(conn, store.dialect, rows, now)


def alerts_unsent(store: Any) -> int:
    """Alerts written but not yet taken by the webhook (``syncd status``)."""
    with store.engine.connect() as conn:
        return unsent_count(conn)

"""The per-attempt sync log (``delivery_events``): what happened to each delivery, when.

The store calls these inside the transaction that changes a delivery's state, so the log
and the state never disagree after a crash: either both are there or neither is. Rows are
only ever inserted; readers live in :mod:`syncd.history`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, insert

from syncd.store.schema import delivery_events

if TYPE_CHECKING:  # the store imports this module
    from syncd.store.records import Claimed, DeliveryResult

__all__ = ["Kind", "claimed", "recorded", "released", "requeued", "write"]

_ERROR_MAX = 2000


class Kind(StrEnum):
    """What happened to a delivery, besides the state an attempt ended in."""

    CLAIMED = "claimed"  # an attempt began
    RELEASED = "released"  # the attempt gave the delivery back (shutdown, outage, retry later)
    RETRIED = "retried"  # an operator requeued it (syncd retry, the console)
    REPLAYED = "replayed"  # syncd replay
    SETTLED = "settled"  # an operator settled a review item
    # Otherwise the kind is the state an attempt ended in: done, retry, dead, review, skipped.


def write(conn: Connection, events: Iterable[Mapping[str, Any]]) -> None:
    """Insert events (dicts of ``delivery_events`` columns; ``delivery_id``, ``kind`` and
    ``at`` required) in one statement."""
    rows = [
        {
            "attempt": None,
            "worker": None,
            "decision": None,
            "action": None,
            "record_id": None,
            "record_kind": None,
            "activity_id": None,
            "error": None,
            **event,
        }
        for event in events
    ]
    for row in rows:
        if row["error"]:
            row["error"] = str(row["error"])[:_ERROR_MAX]
        if row["decision"]:
            row["decision"] = str(row["decision"])[:400]
    if rows:
        conn.execute(insert(delivery_events), rows)


def claimed(conn: Connection, claims: Sequence[Claimed], worker: str, now: datetime) -> None:
    write(
        conn,
        (
            {
                "delivery_id": c.delivery_id,
                "at": now,
                "kind": Kind.CLAIMED,
                "attempt": c.attempts,
                "worker": worker,
            }
            for c in claims
        ),
    )


def recorded(
    conn: Connection, results: Sequence[DeliveryResult], worker: str, now: datetime
) -> None:
    write(
        conn,
        (
            {
                "delivery_id": r.delivery_id,
                "at": now,
                "kind": r.state,
                "worker": worker,
                "decision": r.decision,
                "action": r.action,
                "record_id": r.record_id,
                "record_kind": r.record_kind,
                "activity_id": r.activity_id,
                "error": r.error,
            }
            for r in results
        ),
    )


def released(
    conn: Connection,
    delivery_ids: Sequence[int],
    worker: str,
    *,
    next: datetime | None,
    error: str | None,
) -> None:
    now = datetime.now(UTC)
    detail = error or ""
    if next is not None:
        detail = f"{detail} (next attempt {next.isoformat(timespec='seconds')})"
    write(
        conn,
        (
            {
                "delivery_id": i,
                "at": now,
                "kind": Kind.RELEASED,
                "worker": worker,
                "error": detail.strip() or None,
            }
            for i in delivery_ids
        ),
    )


def requeued(
    conn: Connection,
    delivery_ids: Iterable[int],
    kind: str,
    *,
    worker: str | None = None,
    record_id: str | None = None,
    record_kind: str | None = None,
    action: str | None = None,
) -> int:
    """An operator put deliveries back in the queue (``kind``: retried, replayed, settled).
    Returns how many."""
    now = datetime.now(UTC)
    delivery_ids = list(delivery_ids)
    write(
        conn,
        (
            {
                "delivery_id": i,
                "at": now,
                "kind": kind,
                "worker": worker,
                "action": action,
                "record_id": record_id,
                "record_kind": record_kind,
            }
            for i in delivery_ids
        ),
    )
    return len(delivery_ids)

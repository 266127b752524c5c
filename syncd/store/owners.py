"""The owners' tables: round-robin turns shared by replicas, and what each delivery got.

Functions over a :class:`~syncd.store.store.Store` (its engine and dialect), kept out of
``store.py`` so the owners feature owns its own queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from syncd.batches import chunks
from syncd.store.base import ROWS_PER_IN
from syncd.store.schema import owner_assignments, owner_turns

if TYPE_CHECKING:
    from syncd.store.store import Store

__all__ = [
    "Assignment",
    "owner_summary",
    "owners_assigned",
    "record_assignments",
    "record_owners",
    "take_turns",
]

_FALLBACK = ("default", "")  # rules that mean "nobody the message was for"


@dataclass(frozen=True)
class Assignment:
    delivery_id: int
    target: str
    message_id: str
    record_id: str | None
    record_owner_id: str | None
    owner_id: str | None
    rule: str
    reasons: Sequence[str]


def _insert(store: Store) -> Any:
    return postgresql.insert if store.dialect == "postgresql" else sqlite.insert


def take_turns(store: Store, target: str, count: int) -> int:
    """Reserve ``count`` consecutive round-robin turns for ``target``; returns the first.

    One ``UPDATE .. RETURNING`` on the target's counter row: the row lock it takes makes a
    second replica wait and then read the counter this one left, so no turn is handed out
    twice, and the counter outlives restarts.
    """
    if count <= 0:
        raise ValueError("count must be > 0")
    with store.engine.begin() as conn:
        conn.execute(
            _insert(store)(owner_turns)
            .values(target=target, next_turn=0)
            .on_conflict_do_nothing(index_elements=["target"])
        )
        after = conn.execute(
            update(owner_turns)
            .where(owner_turns.c.target == target)
            .values(next_turn=owner_turns.c.next_turn + count)
            .returning(owner_turns.c.next_turn)
        ).scalar_one()
    return int(after) - count


def record_owners(store: Store, target: str, record_ids: Iterable[str]) -> dict[str, str]:
    """The owner last seen on each record (by a lookup, a read, or set by our own create)."""
    ids = sorted(set(record_ids))
    out: dict[str, str] = {}
    if not ids:
        return out
    t = owner_assignments.c
    with store.engine.connect() as conn:
        for chunk in chunks(ids, ROWS_PER_IN):
            rows = conn.execute(
                select(t.record_id, t.record_owner_id)
                .where(
                    t.target == target,
                    t.record_id.in_(chunk),
                    t.record_owner_id.is_not(None),
                )
                .order_by(t.at, t.delivery_id)
            )
            out.update({r.record_id: r.record_owner_id for r in rows})
    return out


def record_assignments(store: Store, rows: Sequence[Assignment], now: datetime) -> None:
    """Remember what each delivered message got (a replay replaces its row)."""
    if not rows:
        return
    values = [
        {
            "delivery_id": a.delivery_id,
            "target": a.target,
            "message_id": a.message_id[:200],
            "record_id": a.record_id,
            "record_owner_id": a.record_owner_id,
            "owner_id": a.owner_id,
            "rule": a.rule,
            "reasons": "; ".join(a.reasons) or None,
            "at": now,
        }
        for a in rows
    ]
    stmt = _insert(store)(owner_assignments)
    cols = ("record_id", "record_owner_id", "owner_id", "rule", "reasons", "at")
    stmt = stmt.on_conflict_do_update(
        index_elements=["delivery_id"], set_={c: getattr(stmt.excluded, c) for c in cols}
    )
    with store.engine.begin() as conn:
        conn.execute(stmt, values)


def owner_summary(store: Store, limit: int = 50) -> dict[str, dict[str, Any]]:
    """Per target: owners assigned (in total and by rule) and the latest messages that fell
    back to the default owner or to nobody, with why."""
    t = owner_assignments.c
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        counts = conn.execute(
            select(
                t.target, t.rule, func.count().label("n"), func.count(t.owner_id).label("owned")
            ).group_by(t.target, t.rule)
        )
        for r in counts:
            entry = out.setdefault(r.target, {"owners_assigned": 0, "by_rule": {}, "fell_back": []})
            entry["owners_assigned"] += int(r.owned)
            entry["by_rule"][r.rule or "none"] = int(r.n)
        fell_back = conn.execute(
            select(t.target, t.message_id, t.owner_id, t.rule, t.reasons)
            .where(t.rule.in_(_FALLBACK))
            .order_by(t.at.desc(), t.delivery_id.desc())
            .limit(limit)
        )
        for r in fell_back:
            out[r.target]["fell_back"].append(
                {
                    "message_id": r.message_id,
                    "owner_id": r.owner_id,
                    "rule": r.rule or "none",
                    "why": r.reasons or "",
                }
            )
    return out


def owners_assigned(store: Store) -> dict[str, int]:
    """Per target: delivered messages whose activity (and task) got an owner."""
    t = owner_assignments.c
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.target, func.count(t.owner_id).label("n")).group_by(t.target))
        return {r.target: int(r.n) for r in rows}

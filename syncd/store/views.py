"""What an operator sees and does: counts, problem lists, runs, and the commands that
requeue deliveries (retry, review, replay)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    String,
    and_,
    cast,
    func,
    select,
    update,
)

from syncd.store import events
from syncd.store.base import StoreBase, _aware, _utcnow
from syncd.store.records import RunStatus, Settled, State
from syncd.store.schema import cursors, deliveries, messages, quarantine, runs

__all__ = ["OperatorViews"]


class OperatorViews(StoreBase):
    def counts(self) -> dict[str, dict[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.target, deliveries.c.state, func.count()).group_by(
                    deliveries.c.target, deliveries.c.state
                )
            )
            out: dict[str, dict[str, int]] = {}
            for target, state, n in rows:
                out.setdefault(target, dict.fromkeys([s.value for s in State], 0))[state] = n
            return out

    def message_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(messages)).scalar_one())

    def oldest_pending(self) -> dict[str, datetime]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.target, func.min(deliveries.c.created_at))
                .where(deliveries.c.state.in_([State.PENDING, State.RETRY, State.IN_FLIGHT]))
                .group_by(deliveries.c.target)
            )
            return {t: _aware(v) for t, v in rows if v is not None}

    def problems(
        self, states: Sequence[str] = (State.DEAD, State.REVIEW), limit: int = 50
    ) -> list[dict[str, Any]]:
        rows = self._listed(deliveries.c.state.in_(list(states)), deliveries.c.id, limit)
        return [
            _listing(
                r,
                state=r.state,
                attempts=r.attempts,
                reason=r.last_error,
                candidates=r.review_candidates or [],
            )
            for r in rows
        ]

    def passed_over(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest deliveries on_ambiguity="best" attached to one of several equally good
        records, with the others it passed over."""
        # None is stored as JSON null (or SQL NULL): neither casts to anything but "null"/NULL.
        chose = cast(deliveries.c.review_candidates, String) != "null"
        where = and_(deliveries.c.state == State.DONE, chose)
        return [
            _listing(r, record_id=r.record_id, passed_over=r.review_candidates or [])
            for r in self._listed(where, deliveries.c.id.desc(), limit)
        ]

    def _listed(
        self, where: ColumnElement[bool], order: ColumnElement[Any], limit: int
    ) -> list[Row[Any]]:
        """Deliveries for an operator's list, each with its message's account and id."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(deliveries, messages.c.account, messages.c.message_id)
                    .join(messages, messages.c.id == deliveries.c.message_pk)
                    .where(where)
                    .order_by(order)
                    .limit(limit)
                )
            )

    def quarantined(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(quarantine)
                .where(quarantine.c.resolved.is_(False))
                .order_by(quarantine.c.id)
                .limit(limit)
            )
            return [
                {
                    "id": r.id,
                    "account": r.account,
                    "message_id": r.message_id,
                    "reason": r.reason,
                    "raw": r.raw[:500],
                }
                for r in rows
            ]

    def quarantine_count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(quarantine)
                    .where(quarantine.c.resolved.is_(False))
                ).scalar_one()
            )

    def cursor_positions(self) -> dict[str, datetime]:
        with self.engine.connect() as conn:
            return {r.account: _aware(r.position) for r in conn.execute(select(cursors))}

    def last_runs(self, limit: int = 5) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit))
            return [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "worker": r.worker,
                    "started_at": _aware(r.started_at).isoformat(),
                    "finished_at": _aware(r.finished_at).isoformat() if r.finished_at else None,
                    "status": r.status,
                    "stats": r.stats,
                    "error": r.error,
                }
                for r in rows
            ]

    def last_success(self, kind: str | None = None) -> datetime | None:
        with self.engine.connect() as conn:
            query = select(func.max(runs.c.finished_at)).where(runs.c.status == RunStatus.OK)
            if kind:
                query = query.where(runs.c.kind == kind)
            value = conn.execute(query).scalar()
            return _aware(value) if value else None

    def retry_dead(self, target: str | None = None, include_review: bool = False) -> int:
        states = [State.DEAD] + ([State.REVIEW] if include_review else [])
        with self.engine.begin() as conn:
            query = update(deliveries).where(deliveries.c.state.in_(states))
            if target:
                query = query.where(deliveries.c.target == target)
            ids = conn.execute(query.values(**_requeued()).returning(deliveries.c.id)).scalars()
            return events.requeued(conn, list(ids), events.Kind.RETRIED)

    def resolve_review(
        self,
        delivery_id: int,
        *,
        record_id: str | None = None,
        record_kind: str = "contact",
        by: str | None = None,
    ) -> bool:
        """Settle a review item: attach it to ``record_id``, or (None) create a new record."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id, deliveries.c.state == State.REVIEW)
                .values(
                    **_requeued(),
                    record_id=record_id,
                    record_kind=record_kind if record_id else None,
                    action=Settled.RECORD if record_id else Settled.NEW,
                    intent=None,  # the operator's decision replaces any earlier plan
                )
            )
            if result.rowcount:
                events.requeued(
                    conn,
                    [delivery_id],
                    events.Kind.SETTLED,
                    worker=by,
                    record_id=record_id,
                    action=Settled.RECORD if record_id else Settled.NEW,
                )
            return bool(result.rowcount)

    def replay(self, message_id: str, target: str | None = None, account: str | None = None) -> int:
        """Queue a message again. A delivered activity is updated in place, not duplicated."""
        with self.engine.begin() as conn:
            pks = select(messages.c.id).where(messages.c.message_id == message_id)
            if account:
                pks = pks.where(messages.c.account == account)
            query = update(deliveries).where(
                deliveries.c.message_pk.in_(pks), deliveries.c.state != State.IN_FLIGHT
            )
            if target:
                query = query.where(deliveries.c.target == target)
            ids = conn.execute(query.values(**_requeued()).returning(deliveries.c.id)).scalars()
            return events.requeued(conn, list(ids), events.Kind.REPLAYED)


def _requeued() -> dict[str, Any]:
    """Column values that put a delivery back in the queue as if new."""
    return {
        "state": State.PENDING,
        "attempts": 0,
        "next_attempt_at": None,
        "last_error": None,
        "updated_at": _utcnow(),
    }


# Only a delivery the connector carried out (every part found or written) is settled: one


def _listing(row: Row[Any], **fields: Any) -> dict[str, Any]:
    """One row of an operator's delivery list: what names the delivery, then ``fields``."""
    return {
        "delivery_id": row.id,
        "target": row.target,
        "account": row.account,
        "message_id": row.message_id,
        "updated_at": _aware(row.updated_at).isoformat(),
        **fields,
    }

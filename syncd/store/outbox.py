"""The delivery side of the store (the outbox): claims under a fenced lease, in-doubt
marks, outcomes recorded in one transaction with the match cache, hand-backs."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    func,
    select,
    update,
)

from syncd.batches import chunks
from syncd.models import Action, Message
from syncd.store import events
from syncd.store.alertbox import AlertRow, insert_alerts
from syncd.store.base import ROWS_PER_IN, StoreBase, _json_safe, _utcnow
from syncd.store.codec import message_from_row
from syncd.store.records import CacheWrite, Claimed, DeliveryResult, Settled, State
from syncd.store.schema import deliveries, match_cache, messages

__all__ = ["BIRTH_MARGIN", "Outbox"]

log = structlog.get_logger(__name__)


# A message created before the store was born may have been delivered by an earlier store
# that was lost: reconcile it first. No margin after the birth: steady state (messages newer
# than the store) must cost nothing, and an earlier store can only have delivered messages
# created before it was lost, which was before this one was born -- unless the source's clock
# runs ahead of ours by more than that gap.
BIRTH_MARGIN = timedelta(0)

# What message_from_row needs to rebuild a delivery's message.
_MESSAGE = (messages.c.account, messages.c.message_id, messages.c.fields, messages.c.raw)


class Outbox(StoreBase):
    def claim(
        self,
        target: str,
        limit: int,
        worker: str,
        lease_seconds: float,
        now: datetime | None = None,
        *,
        doubt_before_birth: bool = True,
    ) -> list[Claimed]:
        """Take up to ``limit`` due deliveries under a fresh claim token. With
        ``doubt_before_birth``, a message created before this store was born is in doubt on
        its first attempt (an earlier, lost store may have delivered it)."""
        now = now or _utcnow()
        born = self.born_at()
        token = uuid.uuid4().hex
        with self.engine.begin() as conn:
            clock = self._clock(conn, now)
            lease_until = clock + timedelta(seconds=lease_seconds)
            due = (
                deliveries.c.state == State.PENDING,
                # Retry timing is the replica's business; lease expiry is the database's.
                and_(deliveries.c.state == State.RETRY, deliveries.c.next_attempt_at <= now),
                and_(deliveries.c.state == State.IN_FLIGHT, deliveries.c.lease_until < clock),
            )
            # One query per kind of due delivery, each reading the queue index in id order;
            # an OR of the three made the database sort every pending delivery per claim.
            found: list[int] = []
            for condition in due:
                found += conn.execute(
                    select(deliveries.c.id)
                    .where(deliveries.c.target == target, condition)
                    .order_by(deliveries.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).scalars()
            ids = sorted(found)[:limit]
            if not ids:
                return []
            version = (
                select(messages.c.version)
                .where(messages.c.id == deliveries.c.message_pk)
                .scalar_subquery()
            )
            for chunk in chunks(ids, ROWS_PER_IN):
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id.in_(chunk))
                    .values(
                        state=State.IN_FLIGHT,
                        lease_until=lease_until,
                        claimed_by=worker,
                        claim_token=token,
                        attempts=deliveries.c.attempts + 1,
                        claimed_version=version,
                        updated_at=now,
                    )
                )
            claimed: list[Claimed] = []
            for chunk in chunks(ids, ROWS_PER_IN):
                rows = conn.execute(
                    select(
                        deliveries.c.id,
                        deliveries.c.attempts,
                        deliveries.c.activity_id,
                        deliveries.c.record_id,
                        deliveries.c.record_kind,
                        deliveries.c.action,
                        deliveries.c.in_doubt,
                        deliveries.c.intent,
                        *_MESSAGE,
                    )
                    .join(messages, messages.c.id == deliveries.c.message_pk)
                    .where(deliveries.c.id.in_(chunk))
                    .order_by(deliveries.c.id)
                )
                for r in rows:
                    message = message_from_row(r.account, r.message_id, r.fields, r.raw)
                    claimed.append(
                        Claimed(
                            delivery_id=r.id,
                            target=target,
                            message=message,
                            attempts=r.attempts,
                            activity_id=r.activity_id,
                            record_id=r.record_id,
                            record_kind=r.record_kind,
                            settled=Settled.of(r.action),
                            token=token,
                            in_doubt=bool(r.in_doubt)
                            or (
                                doubt_before_birth
                                and r.activity_id is None
                                and _before_birth(message, born)
                            ),
                            intent=dict(r.intent) if r.in_doubt and r.intent else None,
                        )
                    )
            events.claimed(conn, claimed, worker, now)
        return claimed

    def _held(
        self, conn: Connection, ids: Sequence[int], token: str | None, worker: str
    ) -> set[int]:
        """The ids among ``ids`` still claimed under ``token`` (or, without one, by
        ``worker``), locked until the transaction ends."""
        fence = (
            deliveries.c.claim_token == token
            if token is not None
            else deliveries.c.claimed_by == worker
        )
        held: set[int] = set()
        for chunk in chunks(sorted(set(ids)), ROWS_PER_IN):
            held.update(
                conn.execute(
                    select(deliveries.c.id)
                    .where(deliveries.c.id.in_(chunk), deliveries.c.state == State.IN_FLIGHT, fence)
                    .order_by(deliveries.c.id)
                    .with_for_update()
                ).scalars()
            )
        return held

    def renew(
        self,
        delivery_ids: Sequence[int],
        *,
        token: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> set[int]:
        """Extend the lease of claims still held under ``token``; returns the ids held (a
        claim another worker took over after its lease ran out is no longer ours)."""
        with self.engine.begin() as conn:
            held = self._held(conn, delivery_ids, token, "")
            until = self._clock(conn, now) + timedelta(seconds=lease_seconds)
            for chunk in chunks(sorted(held), ROWS_PER_IN):
                conn.execute(
                    update(deliveries).where(deliveries.c.id.in_(chunk)).values(lease_until=until)
                )
        return held

    def doubtful_creates(self, target: str, limit: int = 2000) -> list[tuple[str, Message]]:
        """(caller key, message) of unsettled in-doubt deliveries whose recorded intent
        created a new caller: their contact may exist already while search cannot show it
        yet, so a new caller sharing a key with one of them must take the same caller key
        (the same upsert) instead of becoming a second contact."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.intent, *_MESSAGE)
                .join(messages, messages.c.id == deliveries.c.message_pk)
                .where(
                    deliveries.c.target == target,
                    deliveries.c.in_doubt.is_(True),
                    deliveries.c.state != State.DONE,
                    deliveries.c.intent.is_not(None),
                )
                .order_by(deliveries.c.id)
                .limit(limit)
            ).all()
        found: list[tuple[str, Message]] = []
        for r in rows:
            intent = dict(r.intent or {})
            key = str(intent.get("caller_key") or "")
            if intent.get("action") == Action.CREATE and key and not intent.get("record_id"):
                found.append((key, message_from_row(r.account, r.message_id, r.fields, r.raw)))
        return found

    def mark_in_doubt(
        self,
        intents: Mapping[int, Mapping[str, Any]],
        *,
        token: str,
        lease_seconds: float,
        now: datetime | None = None,
    ) -> set[int]:
        """Before a connector writes: record durably, for each delivery still held under
        ``token``, that it *may have been written* and what it set out to do. Renews the
        lease too. Returns the ids marked: a plan whose id is missing must not be sent."""
        with self.engine.begin() as conn:
            held = self._held(conn, list(intents), token, "")
            until = self._clock(conn, now) + timedelta(seconds=lease_seconds)
            if held:
                conn.execute(
                    update(deliveries)
                    .where(deliveries.c.id == bindparam("b_id"))
                    .values(in_doubt=True, intent=bindparam("b_intent"), lease_until=until),
                    [{"b_id": i, "b_intent": _json_safe(dict(intents[i]))} for i in sorted(held)],
                )
        return held

    def record(
        self,
        target: str,
        results: Sequence[DeliveryResult],
        *,
        worker: str,
        cache_writes: Sequence[CacheWrite] = (),
        cache_drops: Sequence[str] = (),
        now: datetime | None = None,
        token: str | None = None,
        alerts: Sequence[AlertRow] = (),
    ) -> bool:
        """Record outcomes, match-cache changes and the alerts they raise in ONE transaction:
        after a crash either all are there or none is, and in-doubt deliveries reconcile
        the CRM side. Fenced: unless every result's claim is still held under ``token``
        (or, without a token, by ``worker``), NOTHING is written -- a stale worker's
        outcomes and cache writes are rejected as a whole -- and False is returned."""
        now = now or _utcnow()
        with self.engine.begin() as conn:
            if results:
                wanted = {r.delivery_id for r in results}
                held = self._held(conn, list(wanted), token, worker)
                if held != wanted:
                    log.warning(
                        "stale claim: outcomes rejected",
                        target=target,
                        worker=worker,
                        results=len(wanted),
                        no_longer_held=len(wanted - held),
                    )
                    return False
            if cache_drops:
                for chunk in chunks(list(cache_drops), ROWS_PER_IN):
                    conn.execute(
                        delete(match_cache).where(
                            match_cache.c.target == target, match_cache.c.record_id.in_(chunk)
                        )
                    )
            if cache_writes:
                rows = {
                    (w.key.kind.value, w.key.value): {
                        "target": target,
                        "key_kind": w.key.kind.value,
                        "key_value": w.key.value,
                        "record_id": w.record_id,
                        "record_kind": w.record_kind,
                        "snapshot": dict(w.snapshot),
                        "updated_at": now,
                    }
                    for w in cache_writes
                }
                conn.execute(
                    self._upsert(
                        match_cache,
                        [],
                        ["target", "key_kind", "key_value"],
                        ["record_id", "record_kind", "snapshot", "updated_at"],
                    ),
                    # In key order: two replicas upserting the same keys lock them in the
                    # same order, instead of each waiting on the other (a deadlock).
                    [rows[key] for key in sorted(rows)],
                )
            if alerts:
                insert_alerts(conn, self.dialect, alerts, now)
            if results:
                doubt = self._doubts(conn, [r.delivery_id for r in results])
                mine = and_(
                    deliveries.c.id == bindparam("b_id"),
                    deliveries.c.state == State.IN_FLIGHT,
                )
                conn.execute(
                    update(deliveries)
                    .where(mine)
                    .values(
                        state=bindparam("b_state"),
                        record_id=func.coalesce(bindparam("b_record"), deliveries.c.record_id),
                        record_kind=func.coalesce(bindparam("b_kind"), deliveries.c.record_kind),
                        activity_id=func.coalesce(
                            bindparam("b_activity"), deliveries.c.activity_id
                        ),
                        action=func.coalesce(bindparam("b_action"), deliveries.c.action),
                        last_error=bindparam("b_error"),
                        next_attempt_at=bindparam("b_next"),
                        review_candidates=bindparam("b_review"),
                        in_doubt=bindparam("b_doubt"),
                        intent=bindparam("b_intent"),
                        lease_until=None,
                        updated_at=now,
                    ),
                    [
                        {
                            "b_id": r.delivery_id,
                            "b_state": r.state,
                            "b_record": r.record_id,
                            "b_kind": r.record_kind,
                            "b_activity": r.activity_id,
                            "b_action": r.action,
                            "b_error": r.error,
                            "b_next": r.next_attempt_at,
                            "b_review": r.review_candidates,
                            # Done settles the doubt; anything else keeps it (see _SETTLED).
                            "b_doubt": r.state not in _SETTLED and (r.delivery_id in doubt),
                            # The intent is what a retry sends again; a review or a skip
                            # decides afresh (an operator, the sync mode), so drops it.
                            "b_intent": doubt.get(r.delivery_id)
                            if r.state in (State.RETRY, State.DEAD) and not r.forget_intent
                            else None,
                        }
                        for r in results
                    ],
                )
                events.recorded(conn, results, worker, now)
                done = [r.delivery_id for r in results if r.state == State.DONE]
                for done_ids in chunks(done, ROWS_PER_IN):
                    # Only the rows the update above just finished: never another worker's.
                    finished = and_(
                        deliveries.c.id.in_(done_ids),
                        deliveries.c.state == State.DONE,
                    )
                    # The message changed while we were delivering it: go round again.
                    current = (
                        select(messages.c.version)
                        .where(messages.c.id == deliveries.c.message_pk)
                        .scalar_subquery()
                    )
                    conn.execute(
                        update(deliveries)
                        .where(finished, deliveries.c.claimed_version < current)
                        .values(state=State.PENDING, attempts=0)
                    )
        return True

    def _doubts(self, conn: Connection, ids: Sequence[int]) -> dict[int, Any]:
        """In-doubt deliveries among ``ids`` -> their recorded intent (None when none)."""
        found: dict[int, Any] = {}
        for chunk in chunks(sorted(set(ids)), ROWS_PER_IN):
            rows = conn.execute(
                select(deliveries.c.id, deliveries.c.intent).where(
                    deliveries.c.id.in_(chunk), deliveries.c.in_doubt.is_(True)
                )
            )
            found.update({r.id: r.intent for r in rows})
        return found

    def release(
        self,
        delivery_ids: Sequence[int],
        *,
        worker: str,
        next_attempt_at: datetime | None = None,
        error: str | None = None,
        refund_attempt: bool = False,
        token: str | None = None,
    ) -> None:
        """Give claimed deliveries back (shutdown, dry run, target paused). Fenced by
        ``token`` when given. A hand-back never clears ``in_doubt``: the next attempt at a
        delivery that may have been written still reconciles, whatever its attempts."""
        fence = (
            deliveries.c.claim_token == token
            if token is not None
            else deliveries.c.claimed_by == worker
        )
        with self.engine.begin() as conn:
            for chunk in chunks(list(delivery_ids), ROWS_PER_IN):
                values: dict[str, Any] = {
                    "state": State.RETRY if next_attempt_at else State.PENDING,
                    "next_attempt_at": next_attempt_at,
                    "lease_until": None,
                    "updated_at": _utcnow(),
                }
                if error is not None:
                    values["last_error"] = error[:2000]
                if refund_attempt:
                    values["attempts"] = deliveries.c.attempts - 1
                conn.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.id.in_(chunk),
                        deliveries.c.state == State.IN_FLIGHT,
                        fence,
                    )
                    .values(**values)
                )
            events.released(conn, delivery_ids, worker, next=next_attempt_at, error=error)


# Only a delivery the connector carried out (every part found or written) is settled: one
# held for review, skipped or dead may have been written before and may be requeued later
# (an operator, an edited message), so it stays in doubt until it is done.
_SETTLED = (State.DONE,)


def _before_birth(message: Message, born: datetime) -> bool:
    """Created before this store existed (or when, unknown): an earlier store may have
    delivered it."""
    return message.created_at is None or message.created_at < born + BIRTH_MARGIN

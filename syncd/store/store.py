"""The state store: every fact syncd needs to finish its work after a crash.

Ingest only inserts messages and pending deliveries; delivery only moves a delivery through
``pending -> in_flight -> done | retry | dead | review | skipped``. Claims carry a lease, so a
delivery held by a process that died is taken up again once the lease runs out, and claims
use ``FOR UPDATE SKIP LOCKED`` so several replicas on PostgreSQL share the work.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    String,
    and_,
    bindparam,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool

from syncd.models import KeyKind, MatchKey, Message
from syncd.store import events, migrate
from syncd.store.alertbox import AlertRow, insert_alerts
from syncd.store.codec import message_from_row, message_to_fields
from syncd.store.files import prepare_sqlite_file
from syncd.store.schema import (
    cursors,
    deliveries,
    leases,
    match_cache,
    messages,
    quarantine,
    runs,
    store_meta,
    windows,
)

log = structlog.get_logger(__name__)

# A message created before the store was born may have been delivered by an earlier store
# that was lost: reconcile it first. No margin after the birth: steady state (messages newer
# than the store) must cost nothing, and an earlier store can only have delivered messages
# created before it was lost, which was before this one was born -- unless the source's clock
# runs ahead of ours by more than that gap.
BIRTH_MARGIN = timedelta(0)

__all__ = [
    "CacheEntry",
    "CacheWrite",
    "Claimed",
    "DeliveryResult",
    "IngestResult",
    "State",
    "Store",
]

T = TypeVar("T")
_CHUNK = 500  # rows per IN (...) list: far below every backend's parameter limit


class State:
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    REVIEW = "review"
    SKIPPED = "skipped"
    ALL = ("pending", "in_flight", "done", "retry", "dead", "review", "skipped")


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class IngestResult:
    fetched: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    new_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for work. ``in_doubt`` means an earlier attempt (or an earlier store)
    may have reached the CRM: the plan must reconcile before writing, built from ``intent``
    when an attempt recorded one. ``token`` fences the claim: only its holder may record."""

    delivery_id: int
    target: str
    message: Message
    attempts: int
    version: int
    activity_id: str | None
    record_id: str | None
    record_kind: str | None = None
    # "resolved_new" / "resolved_record" when an operator settled a review item.
    action: str | None = None
    token: str = ""
    in_doubt: bool = False
    intent: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DeliveryResult:
    delivery_id: int
    state: str
    record_id: str | None = None
    record_kind: str | None = None
    activity_id: str | None = None
    action: str | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    # Review: the records to choose from. Done: the equally good ones on_ambiguity="best"
    # passed over, for ``syncd status``.
    review_candidates: list[str] | None = None
    # How the match was decided, for the sync log: "existing by phone +1...", "new", "review".
    decision: str | None = None
    # An in-doubt delivery whose recorded intent named a record that is gone: match afresh
    # next time (still in doubt).
    forget_intent: bool = False


@dataclass(frozen=True)
class CacheEntry:
    record_id: str
    record_kind: str
    snapshot: Mapping[str, str]


@dataclass(frozen=True)
class CacheWrite:
    key: MatchKey
    record_id: str
    record_kind: str
    snapshot: Mapping[str, str] = field(default_factory=dict)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def create_store_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        prepare_sqlite_file(url)
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

        @event.listens_for(engine, "do_connect")
        def _before_connect(*_: Any) -> None:
            # A state file deleted while we run is created again by the next connection:
            # owner-only, like the first one, not SQLite's 0644.
            prepare_sqlite_file(url, check_side_files=False)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _: Any) -> None:
            # Hand transaction control to SQLAlchemy so BEGIN IMMEDIATE below is honoured.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # Take the write lock up front: two writers never deadlock upgrading a read lock.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_store_engine(url)
        self.dialect = self.engine.dialect.name
        self._born: datetime | None = None
        # Alerts raised by newly stored messages (emergencies), written in the same
        # transaction as the messages; set by the daemon when such alerts are wanted.
        self.alerts_for_new: Callable[[Sequence[Message]], Sequence[AlertRow]] | None = None

    def close(self) -> None:
        self.engine.dispose()

    def migrate(self) -> None:
        migrate.upgrade(self.engine)
        self.born_at()

    # -- the database's clock and the store's birth ------------------------------------------
    def _clock(self, conn: Connection, now: datetime | None) -> datetime:
        """The time leases are measured with: the database's on PostgreSQL, so replicas whose
        clocks disagree still agree on who holds what; on SQLite the database and the
        process share one host, and ``now`` (the process clock, injectable) is that clock."""
        if self.dialect == "postgresql":
            value: datetime = conn.execute(select(func.clock_timestamp())).scalar_one()
            return _aware(value)
        return now or _utcnow()

    def born_at(self) -> datetime:
        """When this store was born: recorded once, at the first migrate (a store upgraded
        from before this was recorded was born with its first message)."""
        if self._born is not None:
            return self._born
        with self.engine.begin() as conn:
            value = conn.execute(
                select(store_meta.c.value).where(store_meta.c.key == "born_at")
            ).scalar()
            if value is None:
                first = conn.execute(select(func.min(messages.c.first_seen_at))).scalar()
                born = _aware(first) if first is not None else self._clock(conn, None)
                dialect_insert = (
                    postgresql.insert if self.dialect == "postgresql" else sqlite.insert
                )
                conn.execute(
                    dialect_insert(store_meta).on_conflict_do_nothing(index_elements=["key"]),
                    {"key": "born_at", "value": born.isoformat()},
                )
                value = conn.execute(
                    select(store_meta.c.value).where(store_meta.c.key == "born_at")
                ).scalar_one()
        self._born = _aware(datetime.fromisoformat(value))
        return self._born

    def set_born_at(self, when: datetime) -> None:
        """Move the birth (``import-state`` carries the exported store's birth over)."""
        with self.engine.begin() as conn:
            conn.execute(delete(store_meta).where(store_meta.c.key == "born_at"))
            conn.execute(insert(store_meta), {"key": "born_at", "value": when.isoformat()})
        self._born = _aware(when)

    def schema_revision(self) -> str | None:
        return migrate.current_revision(self.engine)

    def ping(self) -> bool:
        with self.engine.connect() as conn:
            conn.execute(select(1))
        return True

    # -- upsert helper ---------------------------------------------------------------------
    def _upsert(
        self, table: Any, rows: list[dict[str, Any]], keys: list[str], update_cols: list[str]
    ) -> Any:
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        stmt = dialect_insert(table)
        return stmt.on_conflict_do_update(
            index_elements=keys, set_={col: getattr(stmt.excluded, col) for col in update_cols}
        )

    # -- ingest ----------------------------------------------------------------------------
    def ingest(
        self,
        account: str,
        batch: Sequence[Message],
        targets: Sequence[str],
        now: datetime | None = None,
        *,
        fingerprints: Mapping[str, str] | None = None,
    ) -> IngestResult:
        """Insert new messages with a pending delivery per target; re-queue changed ones.
        ``fingerprints`` (message id -> list-item fingerprint) are stored with them."""
        now = now or _utcnow()
        prints = fingerprints or {}
        unique: dict[str, Message] = {m.message_id: m for m in batch}
        new = changed = unchanged = 0
        with self.engine.begin() as conn:
            known: dict[str, tuple[int, str]] = {}
            stored_prints: dict[str, str | None] = {}
            for ids in _chunks(list(unique)):
                rows = conn.execute(
                    select(
                        messages.c.id,
                        messages.c.message_id,
                        messages.c.content_hash,
                        messages.c.summary_hash,
                    ).where(messages.c.account == account, messages.c.message_id.in_(ids))
                )
                for r in rows:
                    known[r.message_id] = (r.id, r.content_hash)
                    stored_prints[r.message_id] = r.summary_hash
            fresh = [m for mid, m in unique.items() if mid not in known]
            if fresh:
                inserted = conn.execute(
                    insert(messages).returning(messages.c.id),
                    [
                        {
                            "account": account,
                            "message_id": m.message_id,
                            "content_hash": m.content_hash(),
                            "summary_hash": prints.get(m.message_id),
                            "version": 1,
                            "created_at": m.created_at,
                            "raw": _json_safe(m.raw),
                            "fields": message_to_fields(m),
                            "first_seen_at": now,
                            "updated_at": now,
                        }
                        for m in fresh
                    ],
                ).all()
                pks = [row.id for row in inserted]
                if self.alerts_for_new is not None:
                    insert_alerts(conn, self.dialect, self.alerts_for_new(fresh), now)
                if targets:
                    conn.execute(
                        insert(deliveries),
                        [
                            {
                                "message_pk": pk,
                                "target": target,
                                "state": State.PENDING,
                                "attempts": 0,
                                "created_at": now,
                                "updated_at": now,
                            }
                            for pk in pks
                            for target in targets
                        ],
                    )
                new = len(fresh)
            if known and targets:
                self._add_missing_deliveries(conn, [pk for pk, _ in known.values()], targets, now)
            edits = [
                (known[m.message_id][0], m)
                for mid, m in unique.items()
                if mid in known and known[mid][1] != m.content_hash()
            ]
            unchanged = len(unique) - new - len(edits)
            # A list item that changed while the message did not (its detail is the same):
            # remember the new fingerprint, or its detail would be fetched on every poll.
            reprinted = [
                {"pk": known[mid][0], "s": prints[mid]}
                for mid in unique
                if mid in known and mid in prints and stored_prints.get(mid) != prints[mid]
            ]
            if reprinted:
                conn.execute(
                    update(messages)
                    .where(messages.c.id == bindparam("pk"))
                    .values(summary_hash=bindparam("s")),
                    reprinted,
                )
            if edits:
                conn.execute(
                    update(messages)
                    .where(messages.c.id == bindparam("pk"))
                    .values(
                        content_hash=bindparam("h"),
                        raw=bindparam("r"),
                        fields=bindparam("f"),
                        version=messages.c.version + 1,
                        updated_at=now,
                    ),
                    [
                        {
                            "pk": pk,
                            "h": m.content_hash(),
                            "r": _json_safe(m.raw),
                            "f": message_to_fields(m),
                        }
                        for pk, m in edits
                    ],
                )
                # A finished delivery goes round again (its activity is updated in place);
                # one still in flight notices the new version when it records its outcome.
                for edited in _chunks([pk for pk, _ in edits]):
                    conn.execute(
                        update(deliveries)
                        .where(
                            deliveries.c.message_pk.in_(edited),
                            deliveries.c.state.in_(
                                [State.DONE, State.DEAD, State.SKIPPED, State.REVIEW]
                            ),
                        )
                        .values(
                            state=State.PENDING,
                            attempts=0,
                            next_attempt_at=None,
                            last_error=None,
                            updated_at=now,
                        )
                    )
                changed = len(edits)
        return IngestResult(
            fetched=len(batch),
            new=new,
            changed=changed,
            unchanged=unchanged,
            new_ids=tuple(m.message_id for m in fresh),
        )

    def _add_missing_deliveries(
        self, conn: Connection, pks: list[int], targets: Sequence[str], now: datetime
    ) -> None:
        """A target added to an account later gets deliveries for messages already stored
        (a backfill for it then has work to do)."""
        have: set[tuple[int, str]] = set()
        for chunk in _chunks(pks):
            rows = conn.execute(
                select(deliveries.c.message_pk, deliveries.c.target).where(
                    deliveries.c.message_pk.in_(chunk), deliveries.c.target.in_(list(targets))
                )
            )
            have.update((r.message_pk, r.target) for r in rows)
        missing = [
            {
                "message_pk": pk,
                "target": target,
                "state": State.PENDING,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
            for pk in pks
            for target in targets
            if (pk, target) not in have
        ]
        if missing:
            conn.execute(insert(deliveries), missing)

    def quarantine(
        self,
        account: str,
        items: Iterable[tuple[str | None, str, Any]],
        now: datetime | None = None,
    ) -> int:
        """Set aside payloads that could not be parsed: (message_id, reason, raw)."""
        now = now or _utcnow()
        rows = [
            {
                "account": account,
                "message_id": mid,
                "reason": reason[:2000],
                "raw": _dump_raw(raw),
                "created_at": now,
                "resolved": False,
            }
            for mid, reason, raw in items
        ]
        if not rows:
            return 0
        with self.engine.begin() as conn:
            # The same bad payload seen again on the next poll is not a new problem.
            fresh = []
            for row in rows:
                exists = conn.execute(
                    select(quarantine.c.id).where(
                        quarantine.c.account == account,
                        quarantine.c.raw == row["raw"],
                        quarantine.c.resolved.is_(False),
                    )
                ).first()
                if exists is None:
                    fresh.append(row)
            if fresh:
                conn.execute(insert(quarantine), fresh)
        return len(fresh)

    # -- cursors and windows ----------------------------------------------------------------
    def get_cursor(self, account: str) -> datetime | None:
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(
                select(cursors.c.position).where(cursors.c.account == account)
            ).scalar()
        return value

    def set_cursor(self, account: str, position: datetime, now: datetime | None = None) -> None:
        now = now or _utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                self._upsert(cursors, [], ["account"], ["position", "updated_at"]),
                {"account": account, "position": position, "updated_at": now},
            )

    def done_days(self, account: str, start: date, end: date) -> set[date]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(windows.c.day).where(
                    windows.c.account == account, windows.c.day >= start, windows.c.day <= end
                )
            )
            return {r.day for r in rows}

    def mark_window(
        self, account: str, day: date, fetched: int, new: int, now: datetime | None = None
    ) -> None:
        now = now or _utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                self._upsert(windows, [], ["account", "day"], ["fetched", "new", "completed_at"]),
                {
                    "account": account,
                    "day": day,
                    "fetched": fetched,
                    "new": new,
                    "completed_at": now,
                },
            )

    # -- runs ------------------------------------------------------------------------------
    def start_run(self, kind: str, worker: str, now: datetime | None = None) -> int:
        with self.engine.begin() as conn:
            run_id: int = conn.execute(
                insert(runs).returning(runs.c.id),
                {
                    "kind": kind,
                    "worker": worker,
                    "started_at": now or _utcnow(),
                    "status": "running",
                },
            ).scalar_one()
        return run_id

    def finish_run(
        self, run_id: int, status: str, stats: Mapping[str, Any], error: str | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    finished_at=_utcnow(), status=status, stats=_json_safe(dict(stats)), error=error
                )
            )

    # -- leases ----------------------------------------------------------------------------
    def acquire_lease(
        self, name: str, holder: str, ttl: float, now: datetime | None = None
    ) -> bool:
        """Take or renew a named lease; False while another live holder has it. Expiry is
        measured on the database's clock (see :meth:`_clock`), not the caller's."""
        with self.engine.begin() as conn:
            now = self._clock(conn, now)
            expires = now + timedelta(seconds=ttl)
            row = conn.execute(
                select(leases).where(leases.c.name == name).with_for_update()
            ).first()
            if row is None:
                dialect_insert = (
                    postgresql.insert if self.dialect == "postgresql" else sqlite.insert
                )
                # Two takers can both find no row; the insert decides. RETURNING says who won
                # (rowcount is -1 here on PostgreSQL whether the row went in or not).
                won = conn.execute(
                    dialect_insert(leases)
                    .on_conflict_do_nothing(index_elements=["name"])
                    .returning(leases.c.name),
                    {"name": name, "holder": holder, "expires_at": expires},
                ).first()
                return won is not None
            if row.holder != holder and row.expires_at > now:
                return False
            conn.execute(
                update(leases)
                .where(leases.c.name == name)
                .values(holder=holder, expires_at=expires)
            )
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))

    # -- delivery --------------------------------------------------------------------------
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
            for chunk in _chunks(ids):
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
            for chunk in _chunks(ids):
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
                        messages.c.account,
                        messages.c.message_id,
                        messages.c.version,
                        messages.c.fields,
                        messages.c.raw,
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
                            version=r.version,
                            activity_id=r.activity_id,
                            record_id=r.record_id,
                            record_kind=r.record_kind,
                            action=r.action,
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
        for chunk in _chunks(sorted(set(ids))):
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
            for chunk in _chunks(sorted(held)):
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
                select(
                    deliveries.c.intent,
                    messages.c.account,
                    messages.c.message_id,
                    messages.c.fields,
                    messages.c.raw,
                )
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
            if intent.get("action") == "create" and key and not intent.get("record_id"):
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
                for chunk in _chunks(list(cache_drops)):
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
                        delivered_version=bindparam("b_delivered"),
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
                            "b_delivered": None,
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
                for done_ids in _chunks(done):
                    # Only the rows the update above just finished: never another worker's.
                    finished = and_(
                        deliveries.c.id.in_(done_ids),
                        deliveries.c.state == State.DONE,
                    )
                    conn.execute(
                        update(deliveries)
                        .where(finished)
                        .values(delivered_version=deliveries.c.claimed_version)
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
        for chunk in _chunks(sorted(set(ids))):
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
            for chunk in _chunks(list(delivery_ids)):
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

    # -- match cache -----------------------------------------------------------------------
    def cache_get(self, target: str, keys: Iterable[MatchKey]) -> dict[MatchKey, CacheEntry]:
        wanted = sorted(set(keys))
        found: dict[MatchKey, CacheEntry] = {}
        if not wanted:
            return found
        by_kind: dict[str, list[str]] = {}
        for key in wanted:
            by_kind.setdefault(key.kind.value, []).append(key.value)
        with self.engine.connect() as conn:
            for kind, values in by_kind.items():
                for chunk in _chunks(values):
                    rows = conn.execute(
                        select(match_cache).where(
                            match_cache.c.target == target,
                            match_cache.c.key_kind == kind,
                            match_cache.c.key_value.in_(chunk),
                        )
                    )
                    for r in rows:
                        found[MatchKey(KeyKind(r.key_kind), r.key_value)] = CacheEntry(
                            r.record_id, r.record_kind, dict(r.snapshot or {})
                        )
        return found

    def cache_drop(self, target: str, record_ids: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            for chunk in _chunks(list(record_ids)):
                conn.execute(
                    delete(match_cache).where(
                        match_cache.c.target == target, match_cache.c.record_id.in_(chunk)
                    )
                )

    # -- operator views and commands --------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.target, deliveries.c.state, func.count()).group_by(
                    deliveries.c.target, deliveries.c.state
                )
            )
            out: dict[str, dict[str, int]] = {}
            for target, state, n in rows:
                out.setdefault(target, dict.fromkeys(State.ALL, 0))[state] = n
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
            query = select(func.max(runs.c.finished_at)).where(runs.c.status == "ok")
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
                    action="resolved_record" if record_id else "resolved_new",
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
                    action="resolved_record" if record_id else "resolved_new",
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
# held for review, skipped or dead may have been written before and may be requeued later
# (an operator, an edited message), so it stays in doubt until it is done.
_SETTLED = (State.DONE,)


def _before_birth(message: Message, born: datetime) -> bool:
    """Created before this store existed (or when, unknown): an earlier store may have
    delivered it."""
    return message.created_at is None or message.created_at < born + BIRTH_MARGIN


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so anything odd in a payload (surrogates, sets) is stored safely."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=True))


def _dump_raw(raw: Any) -> str:
    try:
        return json.dumps(raw, default=str, ensure_ascii=True, sort_keys=True)
    except (TypeError, ValueError):
        return repr(raw)


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

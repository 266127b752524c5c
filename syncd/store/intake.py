"""The source side of the store: ingest (messages and their pending deliveries),
quarantine, cursors, day windows and runs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    insert,
    select,
    update,
)

from syncd.batches import chunks
from syncd.models import Message
from syncd.store.alertbox import insert_alerts
from syncd.store.base import ROWS_PER_IN, StoreBase, _json_safe, _utcnow
from syncd.store.codec import message_to_fields
from syncd.store.records import IngestResult, RunStatus, State
from syncd.store.schema import cursors, deliveries, messages, quarantine, runs, windows

__all__ = ["Intake"]


class Intake(StoreBase):
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
            for ids in chunks(list(unique), ROWS_PER_IN):
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
                        [_pending(pk, target, now) for pk in pks for target in targets],
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
                for edited in chunks([pk for pk, _ in edits], ROWS_PER_IN):
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
        for chunk in chunks(pks, ROWS_PER_IN):
            rows = conn.execute(
                select(deliveries.c.message_pk, deliveries.c.target).where(
                    deliveries.c.message_pk.in_(chunk), deliveries.c.target.in_(list(targets))
                )
            )
            have.update((r.message_pk, r.target) for r in rows)
        missing = [
            _pending(pk, target, now)
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
        self, run_id: int, status: RunStatus, stats: Mapping[str, Any], error: str | None = None
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(
                    finished_at=_utcnow(), status=status, stats=_json_safe(dict(stats)), error=error
                )
            )


def _pending(message_pk: int, target: str, now: datetime) -> dict[str, Any]:
    """A new delivery row: ``message_pk`` waits for ``target``."""
    return {
        "message_pk": message_pk,
        "target": target,
        "state": State.PENDING,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def _dump_raw(raw: Any) -> str:
    try:
        return json.dumps(raw, default=str, ensure_ascii=True, sort_keys=True)
    except (TypeError, ValueError):
        return repr(raw)

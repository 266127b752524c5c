"""What the operator reads: the per-message sync log and the console's views of the store.

Read-only queries over the state store (the writes that keep ``delivery_events`` live in
:mod:`syncd.store.events`). Everything returned is plain JSON-able data, shared by
``syncd status --message ID`` and the web console, and passed through :class:`Masker` before
anyone sees it: phones and emails masked unless configured otherwise, registered secrets
cut out always.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select

from syncd.logging import redact_text
from syncd.match.phones import mask_phones_in, normalize_phone
from syncd.store.schema import cursors, deliveries, delivery_events, messages
from syncd.store.store import State, Store

__all__ = [
    "Masker",
    "dead_groups",
    "find_messages",
    "message_history",
    "overview",
    "reason_key",
    "review_items",
]

# Any local part (names are not ASCII-only): keep its first character and the domain.
_EMAIL = re.compile(r"([^\s@<>()\[\],;:\"'])[^\s@<>()\[\],;:\"']*@([\w.-]+\.\w{2,})")
_SEARCH_LIMIT = 50
_PHONE_SCAN = 2000  # messages a phone search looks at after the SQL narrowing


@dataclass(frozen=True)
class Masker:
    """Masks phones and emails in text a person will read (unless ``show_pii``); always cuts
    out registered secrets."""

    show_pii: bool = False

    def __call__(self, text: Any) -> str:
        if text is None:
            return ""
        out = redact_text(str(text))
        if self.show_pii:
            return out
        return _EMAIL.sub(r"\1***@\2", mask_phones_in(out))

    def view(self, value: Any, key: str = "") -> Any:
        """A copy of a view (dicts, lists) with every field that may hold a phone, an email
        or a secret passed through the mask; ids, states and times stay as they are."""
        if isinstance(value, dict):
            if key == "custom_fields":
                return {k: self(v) for k, v in value.items()}
            return {k: self.view(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.view(v, key) for v in value]
        if isinstance(value, str) and key in _FREE_TEXT:
            return self(value)
        return value


# Fields of the views below that hold caller-supplied or CRM-supplied text.
_FREE_TEXT = frozenset(
    {"caller", "first_name", "last_name", "company", "phone", "caller_id", "email", "content"}
    | {"decision", "error", "last_error", "reason", "full_name"}
)


# -- the per-message sync log -------------------------------------------------------------------


def find_messages(
    store: Store, query: str, *, regions: Iterable[str] = ("US",), limit: int = _SEARCH_LIMIT
) -> list[dict[str, Any]]:
    """Messages whose id is ``query``, or whose caller phone is the number ``query`` names
    (any spelling: "(555) 010-2233", "+15550102233"). Newest first."""
    query = query.strip()
    if not query:
        return []
    with store.engine.connect() as conn:
        rows = list(
            conn.execute(
                select(messages.c.account, messages.c.message_id, messages.c.fields)
                .where(messages.c.message_id == query)
                .order_by(messages.c.id.desc())
                .limit(limit)
            )
        )
        wanted = {k.e164 for k in (normalize_phone(query, r) for r in regions) if k is not None}
        digits = re.sub(r"\D", "", query)
        if wanted and len(digits) >= 4 and not rows:
            # Narrow in SQL by the last four digits (almost always written together), then
            # compare whole numbers in Python, as the matcher would.
            tail = f"%{digits[-4:]}%"
            candidates = conn.execute(
                select(messages.c.account, messages.c.message_id, messages.c.fields)
                .where(
                    func.coalesce(messages.c.fields["phone"].as_string(), "").like(tail)
                    | func.coalesce(messages.c.fields["caller_id"].as_string(), "").like(tail)
                )
                .order_by(messages.c.id.desc())
                .limit(_PHONE_SCAN)
            )
            for row in candidates:
                numbers = (row.fields.get("phone") or "", row.fields.get("caller_id") or "")
                if any(_same(n, wanted, regions) for n in numbers):
                    rows.append(row)
                    if len(rows) >= limit:
                        break
    return [
        {
            "account": r.account,
            "message_id": r.message_id,
            "created_at": r.fields.get("created_at"),
            "caller": _caller(r.fields),
            "phone": r.fields.get("phone") or r.fields.get("caller_id") or "",
        }
        for r in rows
    ]


def _same(text: str, wanted: set[str], regions: Iterable[str]) -> bool:
    return any((k := normalize_phone(text, r)) is not None and k.e164 in wanted for r in regions)


def message_history(
    store: Store, message_id: str, account: str | None = None
) -> list[dict[str, Any]]:
    """The sync log of every stored message with this id (one per account): the message,
    and per target its delivery's state and each event, oldest first, with the attempt it
    belongs to."""
    with store.engine.connect() as conn:
        query = select(messages).where(messages.c.message_id == message_id)
        if account:
            query = query.where(messages.c.account == account)
        found = list(conn.execute(query.order_by(messages.c.account)))
        out: list[dict[str, Any]] = []
        for msg in found:
            rows = list(
                conn.execute(
                    select(deliveries)
                    .where(deliveries.c.message_pk == msg.id)
                    .order_by(deliveries.c.target)
                )
            )
            logs: dict[int, list[dict[str, Any]]] = {r.id: [] for r in rows}
            if rows:
                for event in conn.execute(
                    select(delivery_events)
                    .where(delivery_events.c.delivery_id.in_(list(logs)))
                    .order_by(delivery_events.c.id)
                ):
                    logs[event.delivery_id].append(_event(event))
            out.append(
                {
                    "account": msg.account,
                    "message_id": msg.message_id,
                    "version": msg.version,
                    "first_seen_at": _iso(msg.first_seen_at),
                    "updated_at": _iso(msg.updated_at),
                    "message": _message_view(msg.fields),
                    "deliveries": [
                        {
                            "delivery_id": d.id,
                            "target": d.target,
                            "state": d.state,
                            "attempts": d.attempts,
                            "action": d.action,
                            "record_id": d.record_id,
                            "record_kind": d.record_kind,
                            "activity_id": d.activity_id,
                            "last_error": d.last_error,
                            "candidates": list(d.review_candidates or []),
                            "next_attempt_at": _iso(d.next_attempt_at),
                            "updated_at": _iso(d.updated_at),
                            "events": _with_attempts(logs[d.id]),
                        }
                        for d in rows
                    ],
                }
            )
    return out


def _event(row: Any) -> dict[str, Any]:
    return {
        "at": _iso(row.at),
        "kind": row.kind,
        "attempt": row.attempt,
        "worker": row.worker,
        "decision": row.decision,
        "action": row.action,
        "record_id": row.record_id,
        "record_kind": row.record_kind,
        "activity_id": row.activity_id,
        "error": row.error,
    }


def _with_attempts(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An outcome belongs to the attempt whose claim came last before it."""
    attempt: int | None = None
    for event in events:
        if event["kind"] == "claimed":
            attempt = event["attempt"]
        elif event["kind"] in _OPERATOR:
            attempt = None  # the count starts again from the operator's requeue
        elif event["attempt"] is None:
            event["attempt"] = attempt
    return events


_OPERATOR = frozenset({"retried", "replayed", "settled"})


# -- the console's overview, review queue and dead letters --------------------------------------


def overview(
    store: Store,
    accounts: Mapping[str, Sequence[str]],
    targets: Sequence[str],
    *,
    paused: Mapping[str, tuple[datetime, str]] | None = None,
    runs: int = 10,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Per account the cursor and last poll; per target the queue by state, oldest pending
    age, last success and pause; the last runs with counts and durations."""
    now = now or datetime.now(UTC)
    counts = store.counts()
    oldest = store.oldest_pending()
    with store.engine.connect() as conn:
        polled = {r.account: (r.position, r.updated_at) for r in conn.execute(select(cursors))}
        last_done = dict(
            conn.execute(
                select(deliveries.c.target, func.max(deliveries.c.updated_at))
                .where(deliveries.c.state == State.DONE)
                .group_by(deliveries.c.target)
            ).all()
        )
    paused = paused or {}
    target_rows = []
    for name in targets:
        by_state = counts.get(name, dict.fromkeys([s.value for s in State], 0))
        pause = paused.get(name)
        since = oldest.get(name)
        target_rows.append(
            {
                "target": name,
                "states": {s: by_state.get(s, 0) for s in State},
                "oldest_pending": _iso(since),
                "oldest_pending_age_seconds": int((now - since).total_seconds()) if since else None,
                "last_success": _iso(last_done.get(name)),
                "paused": bool(pause and pause[0] > now),
                "paused_until": _iso(pause[0]) if pause and pause[0] > now else None,
                "paused_reason": pause[1] if pause and pause[0] > now else None,
            }
        )
    return {
        "now": _iso(now),
        "accounts": [
            {
                "account": name,
                "targets": list(acct_targets),
                "cursor": _iso(polled[name][0]) if name in polled else None,
                "last_poll": _iso(polled[name][1]) if name in polled else None,
            }
            for name, acct_targets in accounts.items()
        ],
        "targets": target_rows,
        "runs": [_run(r) for r in store.last_runs(runs)],
    }


def _run(run: dict[str, Any]) -> dict[str, Any]:
    started = datetime.fromisoformat(run["started_at"])
    finished = datetime.fromisoformat(run["finished_at"]) if run["finished_at"] else None
    stats = run.get("stats") or {}
    totals: dict[str, int] = {}
    for section in ("accounts", "targets"):
        for per in (stats.get(section) or {}).values():
            for key, value in per.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
    return {
        "id": run["id"],
        "kind": run["kind"],
        "status": run["status"],
        "started_at": run["started_at"],
        "seconds": round((finished - started).total_seconds(), 1) if finished else None,
        "counts": {k: totals[k] for k in _RUN_COUNTS if totals.get(k)},
        "error": run["error"],
    }


_RUN_COUNTS = (
    "fetched",
    "new",
    "done",
    "contacts_created",
    "contacts_updated",
    "activities_logged",
    "review",
    "retry",
    "dead",
)


def review_items(
    store: Store, limit: int = 50, delivery_id: int | None = None
) -> list[dict[str, Any]]:
    """Deliveries held for review (or the one ``delivery_id`` if it is), oldest first, each
    with its message and candidate ids."""
    held = deliveries.c.state == State.REVIEW
    if delivery_id is not None:
        held = and_(held, deliveries.c.id == delivery_id)
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries, messages.c.account, messages.c.message_id, messages.c.fields)
            .join(messages, messages.c.id == deliveries.c.message_pk)
            .where(held)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        return [
            {
                "delivery_id": r.id,
                "target": r.target,
                "account": r.account,
                "message_id": r.message_id,
                "reason": r.last_error,
                "candidates": list(r.review_candidates or []),
                "message": _message_view(r.fields),
                "updated_at": _iso(r.updated_at),
            }
            for r in rows
        ]


def reason_key(error: str | None) -> str:
    """What a group of dead letters shares: the error with its numbers and quoted values
    blanked, so "contact 123 rejected" and "contact 456 rejected" are one group."""
    text = (error or "unknown error").strip()
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    return re.sub(r"\d+", "#", text)[:300]


def dead_groups(store: Store, limit: int = 2000) -> list[dict[str, Any]]:
    """Dead deliveries grouped by target and reason, biggest group first."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.target,
                deliveries.c.last_error,
                deliveries.c.attempts,
                deliveries.c.updated_at,
                messages.c.account,
                messages.c.message_id,
            )
            .join(messages, messages.c.id == deliveries.c.message_pk)
            .where(deliveries.c.state == State.DEAD)
            .order_by(deliveries.c.id)
            .limit(limit)
        )
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            key = (r.target, reason_key(r.last_error))
            group = groups.setdefault(
                key,
                {"target": r.target, "reason": key[1], "error": r.last_error, "items": []},
            )
            group["items"].append(
                {
                    "delivery_id": r.id,
                    "account": r.account,
                    "message_id": r.message_id,
                    "attempts": r.attempts,
                    "error": r.last_error,
                    "updated_at": _iso(r.updated_at),
                }
            )
    return sorted(groups.values(), key=lambda g: (-len(g["items"]), g["target"], g["reason"]))


def dead_ids(store: Store, target: str, reason: str) -> list[int]:
    """The dead deliveries of one group (as :func:`dead_groups` drew it), for "retry group"."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.id, deliveries.c.last_error).where(
                and_(deliveries.c.state == State.DEAD, deliveries.c.target == target)
            )
        )
        return [r.id for r in rows if reason_key(r.last_error) == reason]


# -- helpers ------------------------------------------------------------------------------------


def _message_view(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "caller": _caller(fields),
        "first_name": fields.get("first_name") or "",
        "last_name": fields.get("last_name") or "",
        "company": fields.get("company") or "",
        "phone": fields.get("phone") or "",
        "caller_id": fields.get("caller_id") or "",
        "email": fields.get("email") or "",
        "content": fields.get("content") or "",
        "created_at": fields.get("created_at"),
        "is_emergency": bool(fields.get("is_emergency")),
        "custom_fields": dict(fields.get("custom_fields") or {}),
    }


def _caller(fields: Mapping[str, Any]) -> str:
    name = " ".join(p for p in (fields.get("first_name"), fields.get("last_name")) if p)
    return name or fields.get("company") or "unknown caller"


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat(timespec="seconds")

"""The values the store hands out and takes in: delivery states, claims, outcomes, match
cache entries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from syncd.models import MatchKey, Message

__all__ = [
    "CacheEntry",
    "CacheWrite",
    "Claimed",
    "DeliveryResult",
    "IngestResult",
    "RunKind",
    "RunStatus",
    "Settled",
    "State",
]


class State(StrEnum):
    """Where a delivery is (``deliveries.state`` stores the value)."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    REVIEW = "review"
    SKIPPED = "skipped"


class Settled(StrEnum):
    """How an operator settled a review item (``deliveries.action`` until it is delivered)."""

    RECORD = "resolved_record"  # attach to the record the operator chose
    NEW = "resolved_new"  # create a new record

    @classmethod
    def of(cls, action: str | None) -> Settled | None:
        """The settlement ``deliveries.action`` holds; None for a delivered action (``create``,
        ``update``...) or none at all."""
        return cls(action) if action is not None and action in cls._value2member_map_ else None


class RunKind(StrEnum):
    """What a run did (``runs.kind``; a dry run's is stored as ``dry-<kind>``)."""

    POLL = "poll"
    BACKFILL = "backfill"
    RECONCILE = "reconcile"

    def recorded(self, *, dry_run: bool) -> str:
        return f"dry-{self.value}" if dry_run else self.value


class RunStatus(StrEnum):
    """How a run ended (``runs.status``)."""

    OK = "ok"
    ERROR = "error"
    AUTH_FAILED = "auth_failed"


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
    activity_id: str | None
    record_id: str | None
    record_kind: str | None = None
    # How an operator settled the review item this was, if it was one.
    settled: Settled | None = None
    token: str = ""
    in_doubt: bool = False
    intent: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DeliveryResult:
    delivery_id: int
    state: State
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

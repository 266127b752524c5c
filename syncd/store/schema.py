"""The state store's tables (SQLAlchemy Core). Alembic migrations in ``migrations/`` create them;
a test checks the migrations and this metadata never drift apart."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "alerts",
    "breakers",
    "cursors",
    "deliveries",
    "delivery_events",
    "leases",
    "match_cache",
    "messages",
    "metadata",
    "owner_assignments",
    "owner_turns",
    "quarantine",
    "runs",
    "source_gaps",
    "store_meta",
    "windows",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite has no time zones and hands back naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

# One row per source message; ``raw`` keeps the payload exactly as received.
messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account", String(100), nullable=False),
    Column("message_id", String(256), nullable=False),
    Column("content_hash", String(64), nullable=False),
    # Fingerprint of the list item last seen (syncd.source.parse.fingerprint).
    Column("summary_hash", String(64)),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime()),
    Column("raw", JSON, nullable=False),
    # The normalized Message, so delivery need not parse the payload again.
    Column("fields", JSON, nullable=False),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("account", "message_id"),
)

# The outbox: one row per (message, target).
# States: pending -> in_flight -> done | retry | dead | review | skipped.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("message_pk", Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("target", String(100), nullable=False),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime()),
    Column("lease_until", UTCDateTime()),
    Column("claimed_by", String(200)),
    Column("claimed_version", Integer),
    Column("record_id", String(100)),
    Column("record_kind", String(40)),
    Column("activity_id", String(100)),
    Column("action", String(20)),
    Column("last_error", Text),
    Column("review_candidates", JSON),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The fence of the current claim: only its holder may mark, renew or record the row.
    Column("claim_token", String(64)),
    # A write for this delivery may have reached the CRM before its outcome was recorded:
    # every later attempt reconciles (Plan.in_doubt). Cleared only by done.
    Column("in_doubt", Boolean, nullable=False, default=False, server_default="0"),
    # What the in-doubt attempt set out to do (action, record, caller key, fields), so the
    # next attempt rebuilds the same plan instead of matching afresh.
    Column("intent", JSON),
    UniqueConstraint("message_pk", "target"),
    Index("ix_deliveries_claim", "target", "state", "next_attempt_at"),
    Index("ix_deliveries_queue", "target", "state", "id"),
)

# Caller key -> CRM record, per target. Written with the delivery's outcome, in one transaction.
match_cache = Table(
    "match_cache",
    metadata,
    Column("target", String(100), primary_key=True),
    Column("key_kind", String(20), primary_key=True),
    Column("key_value", String(400), primary_key=True),
    Column("record_id", String(100), nullable=False),
    Column("record_kind", String(40), nullable=False),
    Column("snapshot", JSON, nullable=False),  # canonical fields known filled in the CRM
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_match_cache_record", "target", "record_id"),
)

# Poll cursor per account: the start of the last run whose windows all completed.
cursors = Table(
    "cursors",
    metadata,
    Column("account", String(100), primary_key=True),
    Column("position", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# Completed backfill day windows, so an interrupted backfill resumes where it stopped.
windows = Table(
    "windows",
    metadata,
    Column("account", String(100), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("fetched", Integer, nullable=False),
    Column("new", Integer, nullable=False),
    Column("completed_at", UTCDateTime(), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),
    Column("worker", String(200), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("status", String(20), nullable=False),
    Column("stats", JSON),
    Column("error", Text),
)

# Source payloads we could not parse, kept for an operator to see and replay.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account", String(100), nullable=False),
    Column("message_id", String(256)),
    Column("reason", Text, nullable=False),
    Column("raw", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("resolved", Boolean, nullable=False, default=False),
)

# Days a catch-up cap left unpolled; a backfill over them (windows done) fills them.
source_gaps = Table(
    "source_gaps",
    metadata,
    Column("account", String(100), primary_key=True),
    Column("first_day", Date, primary_key=True),
    Column("last_day", Date, nullable=False),
    Column("found_at", UTCDateTime(), nullable=False),
)

# Named leases (one poller per account across replicas).
leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

# The per-attempt sync log: one row each time a delivery is claimed, recorded, given back,
# requeued or settled (``syncd status --message``, the console's message history). Written in
# the same transaction as the state change it describes.
delivery_events = Table(
    "delivery_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("attempt", Integer),
    Column("worker", String(200)),
    Column("decision", String(400)),  # "existing by phone +1555...", "new", "review by ..."
    Column("action", String(20)),
    Column("record_id", String(100)),
    Column("record_kind", String(40)),
    Column("activity_id", String(100)),
    Column("error", Text),
    Index("ix_delivery_events_log", "delivery_id", "id"),
)

# Round-robin owner turns per target: one counter row, taken with UPDATE .. RETURNING so two
# replicas never get the same turn and a restart continues the rotation (syncd.store.owners).
owner_turns = Table(
    "owner_turns",
    metadata,
    Column("target", String(200), primary_key=True),
    Column("next_turn", BigInteger, nullable=False, default=0),
)

# The owner each delivered message got, by which rule, and why earlier rules fell through;
# also the matched record's owner, for the next call from a caller the match cache knows.
owner_assignments = Table(
    "owner_assignments",
    metadata,
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), primary_key=True),
    Column("target", String(200), nullable=False),
    Column("message_id", String(200), nullable=False),
    Column("record_id", String(100)),
    Column("record_owner_id", String(100)),
    Column("owner_id", String(100)),
    Column("rule", String(20), nullable=False),
    Column("reasons", Text),
    Column("at", UTCDateTime(), nullable=False),
    Index("ix_owner_assignments_record", "target", "record_id"),
)

# Facts about the store itself: ``born_at`` (when this database was first migrated).
store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

# The alert outbox: written with the fact that raises it, sent by a retrying sender. ``key``
# names the alert once, so a restart or a second replica never sends it twice.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(300), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("payload", JSON, nullable=False),  # {"title", "fields", "severity"}, masked
    Column("created_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime()),
    Column("claimed_until", UTCDateTime()),
    Column("sent_at", UTCDateTime()),
    Column("last_error", Text),
    UniqueConstraint("key"),
    Index("ix_alerts_unsent", "sent_at", "next_attempt_at"),
)

# Circuit breaker per target: consecutive whole-batch failures, and until when it is open.
breakers = Table(
    "breakers",
    metadata,
    Column("target", String(100), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("open_until", UTCDateTime()),
    Column("reason", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
)

"""The store's foundation: the engine (SQLite tuned for one writer at a time, PostgreSQL
pooled), the database's clock, the store's birth, and the small helpers every part shares."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool

from syncd.models import Message
from syncd.store import migrate
from syncd.store.alertbox import AlertRow
from syncd.store.files import prepare_sqlite_file
from syncd.store.schema import messages, store_meta

__all__ = ["ROWS_PER_IN", "StoreBase", "create_store_engine"]

ROWS_PER_IN = 500  # rows per IN (...) list: far below every backend's parameter limit


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


class StoreBase:
    """What every part of :class:`~syncd.store.store.Store` stands on."""

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


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _json_safe(value: Any) -> Any:
    """Round-trip through JSON so anything odd in a payload (surrogates, sets) is stored safely."""
    return json.loads(json.dumps(value, default=str, ensure_ascii=True))

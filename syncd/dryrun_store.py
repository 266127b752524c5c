"""A state store whose every write is rolled back: what ``syncd run --dry-run`` works on.

A dry run must go through the real code path (ingest, claim, match, plan) to show a true plan,
and that path writes: messages, deliveries, claims, the cursor, backfill windows, leases. Here
all of it happens on one connection inside one outer transaction; each of the store's own
transactions becomes a SAVEPOINT, and :meth:`RollbackEngine.dispose` rolls the outer one back.
Nothing a dry run did is ever committed, by construction rather than by remembering to skip
each write. (SQLAlchemy's documented "join into an external transaction" pattern; on SQLite
the store's ``BEGIN IMMEDIATE`` makes the savepoints real.)

While a dry run lasts it holds its transaction open: on SQLite that is the write lock (a
daemon on the same file waits for it), on PostgreSQL the row locks of the deliveries it claimed
(other replicas skip them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, RootTransaction

from syncd.store.store import Store

__all__ = ["RollbackEngine", "roll_back", "rolled_back_store"]


class RollbackEngine:
    """Stands in for the Engine a :class:`Store` uses: ``begin``, ``connect``, ``dialect``,
    ``dispose``. Thread-safe: one connection, used by one thread at a time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.dialect = engine.dialect
        self._lock = threading.RLock()
        self._conn: Connection | None = None
        self._outer: RootTransaction | None = None

    def _connection(self) -> Connection:
        # Opened on first use, so a migration or the run record on another connection goes
        # first (on SQLite the outer transaction holds the write lock).
        if self._conn is None:
            self._conn = self._engine.connect()
            self._outer = self._conn.begin()
        return self._conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self._lock:
            conn = self._connection()
            with conn.begin_nested():
                yield conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._lock:
            yield self._connection()

    def rollback(self) -> None:
        """Undo everything so far and let go of the connection (and its locks)."""
        with self._lock:
            conn, outer = self._conn, self._outer
            self._conn = self._outer = None
            if outer is not None and outer.is_active:
                outer.rollback()
            if conn is not None:
                conn.close()

    def dispose(self) -> None:
        self.rollback()
        self._engine.dispose()


def rolled_back_store(url: str) -> Store:
    """A Store on ``url`` whose writes are all undone when it is closed."""
    store = Store(url)
    store.engine = RollbackEngine(store.engine)  # type: ignore[assignment]
    return store


def roll_back(store: Store) -> None:
    """Undo a rolled-back store's writes so far (no-op for an ordinary store)."""
    engine: object = store.engine
    if isinstance(engine, RollbackEngine):
        engine.rollback()

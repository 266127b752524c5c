"""What the delivery tests (tests/unit/test_deliver.py, test_in_doubt.py) share: a store
born before their messages, the caller Jane, daemon settings and the delivery rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from syncd.config import DaemonSettings
from syncd.models import Message
from syncd.store.schema import deliveries, messages
from syncd.store.store import Store

__all__ = ["T0", "TARGET", "daemon_settings", "delivery_rows", "jane", "open_store"]

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
TARGET = "crm"


def open_store(tmp_path: Path) -> Store:
    """A migrated SQLite store born before the test messages (T0): steady state, nothing in
    doubt on a first attempt unless a test moves the birth."""
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    store.set_born_at(T0 - timedelta(days=30))
    return store


def daemon_settings(**overrides: Any) -> DaemonSettings:
    base: dict[str, Any] = {
        "batch_size": 50,
        "max_attempts": 3,
        "retry_base_seconds": 30.0,
        "retry_cap_seconds": 60.0,
        "lease_seconds": 300.0,
        "worker_id": "w1",
    }
    return DaemonSettings(**(base | overrides))


def jane(message_id: str, **fields: Any) -> Message:
    """A message from Jane Doe (phone and email), created at T0; ``fields`` override."""
    base: dict[str, Any] = {
        "first_name": "Jane",
        "last_name": "Doe",
        "phone": "(415) 555-1212",
        "email": "jane@example.com",
        "content": f"message {message_id}",
        "created_at": T0,
    }
    return Message(account="main", message_id=message_id, **(base | fields))


def delivery_rows(store: Store) -> list[Any]:
    """Every delivery row with its message id, in id order."""
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                select(deliveries, messages.c.message_id)
                .join(messages, messages.c.id == deliveries.c.message_pk)
                .order_by(deliveries.c.id)
            )
        )

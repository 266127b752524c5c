"""What the console's buttons do to the store. Settling a review item is exactly
``syncd review`` (:meth:`Store.resolve_review`); retrying dead letters requeues the chosen
dead deliveries as ``syncd retry`` requeues all of them, logged as the console's doing."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import update

from syncd.batches import chunks
from syncd.store import events
from syncd.store.base import ROWS_PER_IN
from syncd.store.schema import deliveries
from syncd.store.store import State, Store
from syncd.store.views import _requeued

__all__ = ["retry_dead"]

WORKER = "console"


def retry_dead(store: Store, delivery_ids: Sequence[int]) -> int:
    """Requeue those of ``delivery_ids`` that are still dead; returns how many."""
    requeued: list[int] = []
    with store.engine.begin() as conn:
        for chunk in chunks(sorted(set(delivery_ids)), ROWS_PER_IN):
            requeued += conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(chunk), deliveries.c.state == State.DEAD)
                .values(**_requeued())
                .returning(deliveries.c.id)
            ).scalars()
        return events.requeued(conn, requeued, events.Kind.RETRIED, worker=WORKER)

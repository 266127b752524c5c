"""The state store: every fact syncd needs to finish its work after a crash.

Ingest only inserts messages and pending deliveries; delivery only moves a delivery through
``pending -> in_flight -> done | retry | dead | review | skipped``. Claims carry a lease, so a
delivery held by a process that died is taken up again once the lease runs out, and claims
use ``FOR UPDATE SKIP LOCKED`` so several replicas on PostgreSQL share the work.
"""

from __future__ import annotations

from syncd.store.intake import Intake
from syncd.store.leases import Leases
from syncd.store.match_cache import MatchCache
from syncd.store.outbox import Outbox
from syncd.store.records import (
    CacheEntry,
    CacheWrite,
    Claimed,
    DeliveryResult,
    IngestResult,
    Settled,
    State,
)
from syncd.store.views import OperatorViews

__all__ = [
    "CacheEntry",
    "CacheWrite",
    "Claimed",
    "DeliveryResult",
    "IngestResult",
    "Settled",
    "State",
    "Store",
]


class Store(Intake, Outbox, Leases, MatchCache, OperatorViews):
    """The state store, one class made of its parts: :class:`Intake` (messages, windows,
    cursors, runs), :class:`Outbox` (claims, in-doubt, outcomes), :class:`Leases`,
    :class:`MatchCache` and :class:`OperatorViews`."""

"""The match cache: caller key -> CRM record, per target, so a caller seen before is not
looked up again (written with outcomes, see :meth:`Outbox.record`)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import (
    select,
)

from syncd.batches import chunks
from syncd.models import KeyKind, MatchKey
from syncd.store.base import ROWS_PER_IN, StoreBase
from syncd.store.records import CacheEntry
from syncd.store.schema import match_cache

__all__ = ["MatchCache"]


class MatchCache(StoreBase):
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
                for chunk in chunks(values, ROWS_PER_IN):
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

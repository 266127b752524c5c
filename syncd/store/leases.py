"""Named leases: one holder at a time for a job (a poll, a reconcile), measured on the
database's clock."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import (
    delete,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from syncd.store.base import StoreBase
from syncd.store.schema import leases

__all__ = ["Leases"]


class Leases(StoreBase):
    def acquire_lease(
        self, name: str, holder: str, ttl: float, now: datetime | None = None
    ) -> bool:
        """Take or renew a named lease; False while another live holder has it. Expiry is
        measured on the database's clock (see :meth:`_clock`), not the caller's."""
        with self.engine.begin() as conn:
            now = self._clock(conn, now)
            expires = now + timedelta(seconds=ttl)
            row = conn.execute(
                select(leases).where(leases.c.name == name).with_for_update()
            ).first()
            if row is None:
                dialect_insert = (
                    postgresql.insert if self.dialect == "postgresql" else sqlite.insert
                )
                # Two takers can both find no row; the insert decides. RETURNING says who won
                # (rowcount is -1 here on PostgreSQL whether the row went in or not).
                won = conn.execute(
                    dialect_insert(leases)
                    .on_conflict_do_nothing(index_elements=["name"])
                    .returning(leases.c.name),
                    {"name": name, "holder": holder, "expires_at": expires},
                ).first()
                return won is not None
            if row.holder != holder and row.expires_at > now:
                return False
            conn.execute(
                update(leases)
                .where(leases.c.name == name)
                .values(holder=holder, expires_at=expires)
            )
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))

"""The toy CRM's contract world (entry point ``syncd.contract.v1``): the suite seeds and
inspects the toy CRM directly, never through the connector."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from syncd.contract.harness import StoredActivity, StoredContact

from .service import ToyCrm

_names = itertools.count(1)


class ToyWorld:
    def __init__(self) -> None:
        self.crm = ToyCrm(f"toy-{next(_names)}")
        self._base = (0, 0)  # (requests, writes) at the last reset

    @property
    def search_lag(self) -> float:
        return self.crm.search_lag

    @search_lag.setter
    def search_lag(self, seconds: float) -> None:
        self.crm.search_lag = seconds

    @property
    def total_requests(self) -> int:
        return self.crm.requests - self._base[0]

    def write_requests(self) -> int:
        return self.crm.writes - self._base[1]

    def reset_counts(self) -> None:
        self._base = (self.crm.requests, self.crm.writes)

    def start(self) -> ToyWorld:
        return self

    def stop(self) -> None:
        return None

    def connector_options(self) -> dict[str, Any]:
        return {"crm": self.crm.name}

    def seed_company(self, name: str) -> str:
        return self.crm.put("company", {"name": name}, seeded=True)

    def seed_contact(self, *, company_id: str | None = None, **values: str) -> str:
        return self.crm.put("contact", {**values, "company_id": company_id or ""}, seeded=True)

    def delete_record(self, record_id: str) -> None:
        del self.crm.rows[record_id]

    def contacts(self) -> Sequence[StoredContact]:
        rows = [r for r in self.crm.rows.values() if r.kind == "contact"]
        fields = ("first_name", "last_name", "email", "phone", "company")
        return [
            StoredContact(r.id, "contact", *(r.values.get(f, "") for f in fields),
                          r.values.get("company_id") or None)
            for r in rows
        ]  # fmt: skip

    def activities(self) -> Sequence[StoredActivity]:
        rows = [r for r in self.crm.rows.values() if r.kind == "note"]
        return [
            StoredActivity(r.id, r.values["record_id"] or None, r.values["marker"],
                           r.values["subject"], r.values["body"], bool(r.values["high_priority"]))
            for r in rows
        ]  # fmt: skip


def world() -> ToyWorld:
    return ToyWorld()

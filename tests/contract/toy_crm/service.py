"""The toy CRM itself ("the vendor"): records in memory, a search index lagging writes by
``search_lag`` seconds, reads by id that see every write at once, requests counted."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

CRMS: dict[str, ToyCrm] = {}  # by name: how a connector finds "its server"


@dataclass
class Row:
    id: str
    kind: str  # "contact" | "company" | "note"
    values: dict[str, str] = field(default_factory=dict)
    indexed_at: float = 0.0  # monotonic time from which search finds it


class ToyCrm:
    def __init__(self, name: str) -> None:
        self.name, self.search_lag = name, 0.0
        self.rows: dict[str, Row] = {}
        self.requests = self.writes = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        CRMS[name] = self

    def put(self, kind: str, values: dict[str, str], *, seeded: bool = False) -> str:
        with self._lock:
            row = Row(f"{kind[:2]}{next(self._ids)}", kind, dict(values))
            row.indexed_at = time.monotonic() + (0.0 if seeded else self.search_lag)
            self.rows[row.id] = row
            if not seeded:
                self.requests, self.writes = self.requests + 1, self.writes + 1
            return row.id

    def patch(self, row_id: str, values: dict[str, str]) -> None:
        with self._lock:
            self.requests, self.writes = self.requests + 1, self.writes + 1
            self.rows[row_id].values.update(values)

    def get(self, ids: list[str]) -> list[Row]:
        with self._lock:
            self.requests += 1
            return [self.rows[i] for i in ids if i in self.rows]

    def search(self, kind: str) -> list[Row]:
        """Every searchable row of ``kind``: the toy's one search request."""
        with self._lock:
            self.requests += 1
            now = time.monotonic()
            return [r for r in self.rows.values() if r.kind == kind and r.indexed_at <= now]

    def where(self, kind: str, name: str, values: set[str]) -> list[Row]:
        """Rows whose ``name`` is one of ``values``: an immediately consistent query."""
        with self._lock:
            self.requests += 1
            return [r for r in self.rows.values() if r.kind == kind and r.values[name] in values]

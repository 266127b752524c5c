"""Move a state store between databases (``syncd export-state`` / ``syncd import-state``).

The format is JSON lines: a header ``{"syncd_state": 1, "schema": REV, "born_at": ISO}``,
then one ``{"table": NAME, "row": {...}}`` per row, timestamps as ISO 8601 in UTC. Every fact
delivery needs travels: messages, deliveries (with their in-doubt flags and intents), the
match cache, cursors, windows, quarantine, runs, the alert outbox and circuit breakers. The
store's birth travels too, so messages the old store delivered are not treated as
pre-dating the new one. Leases do not: they belong to the processes of the old database.

A delivery that was in flight is imported as pending (its claim belonged to the old
database) and keeps ``in_doubt``: its next attempt reconciles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any, TextIO

from sqlalchemy import Date, Table, func, insert, select, text

from syncd.errors import ConfigError
from syncd.store.schema import (
    UTCDateTime,
    alerts,
    breakers,
    cursors,
    deliveries,
    match_cache,
    messages,
    quarantine,
    runs,
    windows,
)
from syncd.store.store import State, Store

__all__ = ["FORMAT_VERSION", "export_state", "import_state"]

FORMAT_VERSION = 1
# Parents before children (deliveries refer to messages).
TABLES: tuple[Table, ...] = (
    messages,
    deliveries,
    match_cache,
    cursors,
    windows,
    quarantine,
    runs,
    alerts,
    breakers,
)
_BY_NAME = {t.name: t for t in TABLES}
_SERIAL = ("messages", "deliveries", "quarantine", "runs", "alerts")
_BATCH = 500


def _encode(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def export_state(store: Store, out: TextIO) -> dict[str, int]:
    """Write the whole store to ``out``; returns rows written per table."""
    counts: dict[str, int] = {}
    header = {
        "syncd_state": FORMAT_VERSION,
        "schema": store.schema_revision(),
        "born_at": store.born_at().isoformat(),
    }
    out.write(json.dumps(header) + "\n")
    with store.engine.connect() as conn:
        for table in TABLES:
            order = list(table.primary_key.columns)
            n = 0
            for row in conn.execution_options(yield_per=_BATCH).execute(
                select(table).order_by(*order)
            ):
                record = {k: _encode(v) for k, v in row._mapping.items()}
                out.write(json.dumps({"table": table.name, "row": record}, default=str) + "\n")
                n += 1
            counts[table.name] = n
    return counts


def _decode(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        column = table.columns.get(name)
        if column is None:
            raise ConfigError(f"unknown column {table.name}.{name} in the export", key="input")
        if value is not None and isinstance(column.type, UTCDateTime):
            value = datetime.fromisoformat(value)
        elif value is not None and isinstance(column.type, Date):
            value = date.fromisoformat(value)
        out[name] = value
    if table is deliveries and out.get("state") == State.IN_FLIGHT:
        out.update(state=State.PENDING, lease_until=None, claim_token=None)
    return out


def _lines(source: TextIO) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"line {number} is not JSON: {exc.msg}", key="input") from exc
        if not isinstance(item, dict):
            raise ConfigError(f"line {number} is not a JSON object", key="input")
        yield item


def import_state(store: Store, source: TextIO) -> dict[str, int]:
    """Load an export into ``store`` (migrated, and holding no messages yet)."""
    store.migrate()
    with store.engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(messages)).scalar_one():
            raise ConfigError(
                "the target state store already holds messages: import into an empty one",
                key="database_url",
            )
    items = _lines(source)
    header = next(items, None)
    if header is None or header.get("syncd_state") != FORMAT_VERSION:
        raise ConfigError("not a syncd export-state file (no header line)", key="input")
    counts = dict.fromkeys(_BY_NAME, 0)
    pending: dict[str, list[dict[str, Any]]] = {}
    with store.engine.begin() as conn:

        def flush(name: str) -> None:
            rows = pending.pop(name, [])
            if rows:
                conn.execute(insert(_BY_NAME[name]), rows)
                counts[name] += len(rows)

        last: str | None = None
        for item in items:
            name = item.get("table")
            if name not in _BY_NAME or not isinstance(item.get("row"), dict):
                raise ConfigError(f"unexpected line for table {name!r}", key="input")
            if last is not None and name != last:
                flush(last)  # keep the export's table order: parents before children
            last = name
            pending.setdefault(name, []).append(_decode(_BY_NAME[name], item["row"]))
            if len(pending[name]) >= _BATCH:
                flush(name)
        if last is not None:
            flush(last)
        if store.dialect == "postgresql":
            for name in _SERIAL:  # explicit ids went in: move each sequence past them
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {name}), 0) + 1, false)"
                    )
                )
    store.set_born_at(datetime.fromisoformat(str(header["born_at"])))
    return counts


def run_portable(command: str, args: Any, settings: Any) -> int:
    """``syncd export-state`` / ``syncd import-state``: exit 0, a summary on stderr."""
    import sys

    url = args.database_url or settings.daemon.database_url
    store = Store(url)
    try:
        if command == "export-state":
            store.migrate()
            if args.output:
                # Messages hold callers' names, phones and words: owner-only, like the store.
                fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    counts = export_state(store, out)
            else:
                counts = export_state(store, sys.stdout)
        else:
            if args.input:
                with open(args.input, encoding="utf-8") as source:
                    counts = import_state(store, source)
            else:
                counts = import_state(store, sys.stdin)
    finally:
        store.close()
    summary = ", ".join(f"{name} {n}" for name, n in counts.items() if n)
    verb = "exported" if command == "export-state" else "imported"
    print(f"syncd: {verb} {summary or 'nothing'}", file=sys.stderr)
    return 0

"""``syncd export-state`` / ``import-state``: a store moved from SQLite to another database
(PostgreSQL where it runs) carries every fact delivery needs, its birth included."""

from __future__ import annotations

import contextlib
import io
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from syncd.models import KeyKind, MatchKey, Message
from syncd.store.alertbox import AlertRow, enqueue
from syncd.store.portable import TABLES, export_state, import_state
from syncd.store.records import RunStatus
from syncd.store.schema import deliveries
from syncd.store.store import CacheWrite, DeliveryResult, State, Store

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
EMAIL = MatchKey(KeyKind.EMAIL, "jane@example.com")


def _msg(message_id: str) -> Message:
    return Message(
        account="main",
        message_id=message_id,
        created_at=T0,
        first_name="Jane",
        phone="(415) 555-1212",
        content="call back",
        raw={"message id": message_id, "odd": "é\u2028"},
    )


def _filled(tmp_path: Path) -> Store:
    source = Store(f"sqlite:///{tmp_path / 'old.db'}")
    source.migrate()
    source.set_born_at(T0 - timedelta(days=3))
    source.ingest("main", [_msg(f"m{i}") for i in range(5)], ["crm"], now=T0)
    a, b, c, _d = source.claim("crm", 4, "w1", 60, now=T0)
    source.mark_in_doubt(
        {c.delivery_id: {"action": "create", "caller_key": "phone:+14155551212"}},
        token=c.token,
        lease_seconds=60,
        now=T0,
    )
    source.record(
        "crm",
        [
            DeliveryResult(a.delivery_id, State.DONE, record_id="c-1", activity_id="act-1"),
            DeliveryResult(b.delivery_id, State.DEAD, error="INVALID"),
        ],
        worker="w1",
        token=a.token,
        cache_writes=[CacheWrite(EMAIL, "c-1", "contact", {"email": "jane@example.com"})],
        alerts=[AlertRow("dead:crm:main:m1", "dead_letter", {"title": "t", "fields": {}})],
    )
    source.set_cursor("main", T0)
    source.mark_window("main", T0.date(), 5, 5, now=T0)
    source.quarantine("main", [("bad-1", "no id", {"x": 1})], now=T0)
    run = source.start_run("poll", "w1", T0)
    source.finish_run(run, RunStatus.OK, {"n": 1})
    enqueue(source, [AlertRow("emergency:main:m4", "emergency", {"title": "e"})], T0)
    return source


def _dump(store: Store) -> dict[str, list[Any]]:
    lines = io.StringIO()
    export_state(store, lines)
    out: dict[str, list[Any]] = {}
    for line in lines.getvalue().splitlines()[1:]:
        item = json.loads(line)
        out.setdefault(item["table"], []).append(item["row"])
    return out


def test_a_store_moves_with_every_fact(tmp_path: Path, store_url: str) -> None:
    source = _filled(tmp_path)
    exported = io.StringIO()
    counts = export_state(source, exported)
    before = _dump(source)
    source.close()
    assert counts["messages"] == 5
    assert counts["deliveries"] == 5

    target = Store(store_url)
    try:
        imported = import_state(target, io.StringIO(exported.getvalue()))
        after = _dump(target)

        assert imported == counts
        assert target.born_at() == T0 - timedelta(days=3)
        for table in TABLES:
            old, new = before.get(table.name, []), after.get(table.name, [])
            if table.name == "deliveries":  # claims belonged to the old database
                for row in old:
                    if row["state"] == State.IN_FLIGHT:
                        row.update(state=State.PENDING, lease_until=None, claim_token=None)
            assert _same(old) == _same(new), table.name
        with target.engine.connect() as conn:
            doubted = conn.execute(
                select(deliveries.c.state, deliveries.c.intent).where(deliveries.c.in_doubt)
            ).all()
        assert doubted == [("pending", {"action": "create", "caller_key": "phone:+14155551212"})]
        assert target.cache_get("crm", [EMAIL])[EMAIL].record_id == "c-1"
        # The sequences moved past the imported ids: new rows insert cleanly.
        target.ingest("main", [_msg("m-new")], ["crm"], now=T0)
        assert len(target.claim("crm", 10, "w2", 60, now=T0)) == 4  # 3 pending + the new one
    finally:
        target.close()


def _same(rows: list[dict[str, Any]]) -> list[str]:
    """Rows compared as text, timestamps normalized to UTC (a backend may render +00:00)."""
    out = []
    for row in rows:
        norm = {}
        for key, value in row.items():
            if isinstance(value, str) and len(value) >= 19 and value[10:11] in ("T", " "):
                with contextlib.suppress(ValueError):
                    value = datetime.fromisoformat(value).astimezone(UTC).isoformat()
            norm[key] = value
        out.append(json.dumps(norm, sort_keys=True))
    return sorted(out)


def test_import_refuses_a_store_that_already_holds_messages(tmp_path: Path) -> None:
    source = _filled(tmp_path)
    exported = io.StringIO()
    export_state(source, exported)
    try:
        from syncd.errors import ConfigError

        with pytest.raises(ConfigError, match="already holds messages"):
            import_state(source, io.StringIO(exported.getvalue()))
    finally:
        source.close()


def test_the_commands_move_a_store_and_the_export_file_is_private(
    tmp_path: Path, in_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T", "tok-123456")
    _filled(tmp_path).close()
    config = tmp_path / "syncd.toml"
    config.write_text(
        f'[syncd]\ndatabase_url = "sqlite:///{tmp_path / "old.db"}"\n'
        '[accounts.main]\nbase_url = "https://api.example.invalid"\nemail = "o@example.com"\n'
        'token_env = "T"\ntargets = ["crm"]\n[targets.crm]\ntype = "hubspot"\n',
        encoding="utf-8",
    )
    dump = tmp_path / "state.jsonl"
    new_url = f"sqlite:///{tmp_path / 'new.db'}"

    out = in_process("export-state", "--config", str(config), "--output", str(dump))
    assert out.code == 0, out.err
    assert stat.S_IMODE(dump.stat().st_mode) == 0o600
    back = in_process(
        "import-state", "--config", str(config), "--input", str(dump), "--database-url", new_url
    )
    assert back.code == 0, back.err
    assert "messages 5" in back.err

    moved = Store(new_url)
    try:
        assert moved.message_count() == 5
        assert moved.born_at() == T0 - timedelta(days=3)
    finally:
        moved.close()

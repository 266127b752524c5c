"""Connectors for batches in flight together: shared when thread-safe, else one per batch,
with one rate limiter per target across the instances."""

from __future__ import annotations

from typing import Any

from syncd.config import parse_settings
from syncd.connector import TargetContext, shares_instance
from syncd.daemon import Daemon


def settings(tmp: Any, concurrency: int) -> Any:
    doc = {
        "syncd": {"database_url": f"sqlite:///{tmp}/s.db"},
        "accounts": {
            "main": {
                "base_url": "http://127.0.0.1:9",
                "email": "a@example.com",
                "token": "tok-123456",
                "timezone": "UTC",
                "targets": ["crm"],
            }
        },
        "targets": {"crm": {"type": "dry-run", "concurrency": concurrency}},
    }
    return parse_settings(doc, environ={})


def test_a_connector_that_is_not_thread_safe_gets_one_instance_per_batch(tmp_path: Any) -> None:
    daemon = Daemon(settings(tmp_path, 3))
    try:
        first = daemon.connector("crm")
        assert not shares_instance(first)
        pool = daemon.pool("crm")
        assert len(pool) == 2
        assert len({id(c) for c in [first, *pool]}) == 3
        assert daemon.pool("crm") == pool  # made once, kept
    finally:
        daemon.close()


def test_one_batch_at_a_time_needs_no_pool(tmp_path: Any) -> None:
    daemon = Daemon(settings(tmp_path, 1))
    try:
        assert daemon.pool("crm") == []
    finally:
        daemon.close()


def test_instances_of_one_target_share_its_rate_limiters() -> None:
    shared: dict[str, Any] = {}
    a = TargetContext("crm", {}, limiters=shared)
    b = TargetContext("crm", {}, limiters=shared)
    other = TargetContext("crm", {})
    limiter = a.rate_limiter("general", 10, 1.0)
    assert b.rate_limiter("general", 10, 1.0) is limiter
    assert a.rate_limiter("search", 4, 1.0) is not limiter
    assert other.rate_limiter("general", 10, 1.0) is not limiter  # another daemon's target

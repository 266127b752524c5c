"""The delivery loop (claim, reconcile, cache, lookup, plan, apply, record) against a real
SQLite store and a small recording fake connector. Real connectors are tested elsewhere."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from delivery_world import T0, TARGET, daemon_settings, delivery_rows, open_store
from delivery_world import jane as jane_doe
from recording_crm import FakeConnector  # tests/lib

from syncd.config import DaemonSettings, MatchPolicy, TargetSettings
from syncd.connector import Connector
from syncd.deliver import DeliveryStats, deliver_target
from syncd.dryrun_connector import DryRunConnector
from syncd.errors import AuthError, RetriableError
from syncd.models import (
    Action,
    ActivityRef,
    CrmRecord,
    KeyKind,
    MatchKey,
    Message,
    Outcome,
    activity_marker,
)
from syncd.store.store import CacheWrite, State, Store

EMAIL = MatchKey(KeyKind.EMAIL, "jane@example.com")
PHONE = MatchKey(KeyKind.PHONE, "+14155551212")
# Everything a JANE message offers, as the cache snapshot of a record known to hold it.
JANE_SNAPSHOT = {
    "first_name": "Jane",
    "last_name": "Doe",
    "email": "jane@example.com",
    "phone": "+14155551212",
    "company": "Acme",
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path)
    yield s
    s.close()


daemon = daemon_settings


def target(**overrides: Any) -> TargetSettings:
    return TargetSettings(name=TARGET, type="fake", **overrides)


def jane(message_id: str, **fields: Any) -> Message:
    """Jane of Acme."""
    return jane_doe(message_id, **({"company": "Acme"} | fields))


def run(
    store: Store,
    connector: Connector,
    *,
    settings: TargetSettings | None = None,
    daemon_settings: DaemonSettings | None = None,
    at: datetime = T0,
    dry_run: bool = False,
) -> DeliveryStats:
    assert isinstance(connector, Connector)  # the fake honours the Protocol
    return deliver_target(
        store,
        connector,
        settings or target(),
        daemon_settings or daemon(),
        regions={"main": "US"},
        dry_run=dry_run,
        clock=lambda: at,
    )


states = delivery_rows


def test_new_caller_three_calls_one_batch_share_one_create(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2"), jane("m3", email="")], [TARGET], now=T0)
    fake = FakeConnector()

    stats = run(store, fake)

    assert len(fake.applied) == 1
    assert len(fake.lookups) == 1
    plans = fake.plans
    assert [p.action for p in plans] == [Action.CREATE] * 3
    assert {p.caller_key for p in plans} == {"email:jane@example.com"}  # m3 joined by phone
    assert (stats.claimed, stats.done, stats.contacts_created, stats.activities_logged) == (
        3,
        3,
        1,
        3,
    )
    rows = states(store)
    assert {(r.state, r.record_id, r.action) for r in rows} == {
        ("done", "new:email:jane@example.com", "create")
    }
    assert [r.activity_id for r in rows] == [f"act:{r.id}" for r in rows]
    cached = store.cache_get(TARGET, [EMAIL, PHONE])
    assert {e.record_id for e in cached.values()} == {"new:email:jane@example.com"}


def test_later_batches_find_the_new_caller_in_the_cache(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2"), jane("m3")], [TARGET], now=T0)
    fake = FakeConnector()

    stats = run(store, fake, daemon_settings=daemon(batch_size=1))

    assert stats.batches == 3
    assert len(fake.lookups) == 1  # only the first batch asked the CRM
    # The snapshot covers what the message offers, and a LOG keeps it for the next call.
    assert fake.reads == []
    assert [p.action for p in fake.plans] == [Action.CREATE, Action.LOG, Action.LOG]
    assert stats.contacts_created == 1
    assert {p.record_id for p in fake.plans[1:]} == {"new:email:jane@example.com"}
    assert all(r.state == State.DONE for r in states(store))


def test_cached_record_covering_the_offer_is_logged_without_a_read(store: Store) -> None:
    store.record(
        TARGET,
        [],
        worker="setup",
        cache_writes=[CacheWrite(EMAIL, "c-1", "contact", JANE_SNAPSHOT)],
    )
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    fake = FakeConnector()

    run(store, fake)

    assert (fake.lookups, fake.reads) == ([], [])
    [plan] = fake.plans
    assert (plan.action, plan.record_id, dict(plan.fields)) == (Action.LOG, "c-1", {})
    assert states(store)[0].record_id == "c-1"


def test_cached_record_gone_from_the_crm_is_dropped_and_looked_up(store: Store) -> None:
    stale = MatchKey(KeyKind.PHONE, "+14155550000")  # another key of the deleted record
    partial = {k: v for k, v in JANE_SNAPSHOT.items() if k != "company"}
    store.record(
        TARGET,
        [],
        worker="setup",
        cache_writes=[
            CacheWrite(EMAIL, "c-1", "contact", partial),
            CacheWrite(stale, "c-1", "contact", {}),
        ],
    )
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    survivor = CrmRecord(
        "c-2",
        "contact",
        email="jane@example.com",
        fields={"first_name": "Jane", "last_name": "Doe", "email": "jane@example.com"},
    )
    fake = FakeConnector(records={EMAIL: [survivor]})  # the read of c-1 answers nothing

    run(store, fake)

    assert fake.reads == [("contact", ["c-1"])]
    assert len(fake.lookups) == 1
    assert EMAIL in fake.lookups[0]
    [plan] = fake.plans
    assert (plan.action, plan.record_id) == (Action.UPDATE, "c-2")
    assert dict(plan.fields) == {"phone": "+14155551212", "company": "Acme"}
    cached = store.cache_get(TARGET, [EMAIL, PHONE, stale])
    assert stale not in cached
    assert {k: e.record_id for k, e in cached.items()} == {EMAIL: "c-2", PHONE: "c-2"}


def test_per_plan_retriable_failure_retries_then_dies(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    fake = FakeConnector(
        fail=lambda p: Outcome(p.delivery_id, ok=False, error="503 busy", retriable=True)
    )

    first = run(store, fake, at=T0)
    [row] = states(store)
    assert (first.retry, row.state, row.attempts, row.last_error) == (1, "retry", 1, "503 busy")
    assert T0 < row.next_attempt_at <= T0 + timedelta(seconds=60)

    assert run(store, fake, at=row.next_attempt_at - timedelta(seconds=1)).claimed == 0
    run(store, fake, at=T0 + timedelta(minutes=2))
    assert (states(store)[0].state, states(store)[0].attempts) == ("retry", 2)

    last = run(store, fake, at=T0 + timedelta(minutes=4))
    [row] = states(store)
    assert (last.dead, row.state, row.attempts, row.next_attempt_at) == (1, "dead", 3, None)
    assert len(fake.applied) == 3


def test_non_retriable_failure_is_dead_at_once(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2", email="sam@example.com")], [TARGET], now=T0)
    fake = FakeConnector(
        fail=lambda p: (
            Outcome(p.delivery_id, ok=False, error="INVALID_FIELD")
            if p.message.message_id == "m2"
            else None
        )
    )

    stats = run(store, fake)

    assert (stats.done, stats.dead) == (1, 1)
    assert [(r.message_id, r.state, r.last_error) for r in states(store)] == [
        ("m1", "done", None),
        ("m2", "dead", "INVALID_FIELD"),
    ]


def test_missing_outcome_is_retried(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    fake = FakeConnector(silent=True)

    run(store, fake)

    [row] = states(store)
    assert (row.state, row.last_error) == ("retry", "connector gave no outcome")
    assert len(fake.applied) == 1


def test_retriable_error_from_apply_releases_every_claim_for_retry(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2")], [TARGET], now=T0)
    fake = FakeConnector(raises=RetriableError("502 from CRM", retry_after=45))

    with pytest.raises(RetriableError):
        run(store, fake)

    rows = states(store)
    assert [(r.state, r.attempts, r.last_error) for r in rows] == [("retry", 1, "502 from CRM")] * 2
    # retry_after is a floor, capped at retry_cap_seconds.
    assert all(T0 + timedelta(seconds=45) <= r.next_attempt_at for r in rows)
    assert all(r.next_attempt_at <= T0 + timedelta(seconds=60) for r in rows)
    assert all(r.claimed_by == "w1" and r.lease_until is None for r in rows)


def test_auth_error_refunds_claims_and_propagates(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2")], [TARGET], now=T0)
    fake = FakeConnector(raises=AuthError("INVALID_SESSION_ID", where=TARGET))

    with pytest.raises(AuthError):
        run(store, fake)

    rows = states(store)
    assert [(r.state, r.attempts, r.next_attempt_at) for r in rows] == [("pending", 0, None)] * 2
    assert all("INVALID_SESSION_ID" in r.last_error for r in rows)


def test_expired_lease_is_reconciled_by_marker_not_written_again(store: Store) -> None:
    sam = {"first_name": "Sam", "email": "sam@example.com", "phone": "415 555 0000"}
    store.ingest("main", [jane("m1"), jane("m2", **sam)], [TARGET], now=T0)
    crashed = store.claim(TARGET, 10, "crashed", 60, now=T0)
    # The crashed worker marked m1 in doubt, wrote it to the CRM, then died.
    intent = {"action": "log", "record_id": "c-7", "record_kind": "contact", "caller_key": ""}
    marked = store.mark_in_doubt(
        {crashed[0].delivery_id: intent}, token=crashed[0].token, lease_seconds=60, now=T0
    )
    assert marked == {crashed[0].delivery_id}
    marker = activity_marker("main", "m1")
    fake = FakeConnector(activities={marker: ActivityRef(marker, "act-old", "c-7")})

    stats = run(store, fake, at=T0 + timedelta(seconds=61))

    m1_plan, m2_plan = fake.plans
    assert (m1_plan.in_doubt, m1_plan.record_id, m1_plan.action) == (True, "c-7", Action.LOG)
    assert m2_plan.in_doubt is False  # never marked: no write can have been made for it
    assert fake.written == {activity_marker("main", "m2"): 1}  # m1 was not written again
    assert (stats.reconciled, stats.in_doubt) == (1, 1)
    m1, m2 = states(store)
    assert (m1.state, m1.action, m1.activity_id, m1.record_id, m1.attempts) == (
        "done",
        "reconciled",
        "act-old",
        "c-7",
        2,
    )
    assert (m1.in_doubt, m1.intent) == (False, None)  # settled
    assert (m2.state, m2.attempts) == ("done", 2)
    assert {c.delivery_id for c in crashed} == {m1.id, m2.id}
    assert store.cache_get(TARGET, [EMAIL])[EMAIL].record_id == "c-7"  # learnt from the CRM


def test_first_attempt_of_a_message_newer_than_the_store_is_not_in_doubt(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    fake = FakeConnector()

    run(store, fake)

    assert [p.in_doubt for p in fake.plans] == [False]  # nothing can have reached the CRM


def test_dry_run_records_nothing_and_releases_claims(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2")], [TARGET], now=T0)
    fake = FakeConnector()
    dry = DryRunConnector(TARGET, inner=fake)  # what ``syncd run --dry-run`` wraps around it

    stats = run(store, dry, dry_run=True, daemon_settings=daemon(batch_size=1))

    assert fake.applied == []
    assert len(fake.lookups) == 2  # reads and lookups still reach the real CRM
    assert [p.action for p in dry.plans] == [Action.CREATE, Action.CREATE]
    assert stats.claimed == 2  # each delivery seen once although batches are of one
    assert [(r.state, r.attempts, r.record_id) for r in states(store)] == [("pending", 0, None)] * 2
    assert store.cache_get(TARGET, [EMAIL, PHONE]) == {}


def test_update_only_without_match_is_skipped(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2", email="known@example.com")], [TARGET], now=T0)
    known = MatchKey(KeyKind.EMAIL, "known@example.com")
    fake = FakeConnector(records={known: [CrmRecord("c-5", "contact", email="known@example.com")]})

    stats = run(store, fake, settings=target(sync_mode="update_only"))

    assert stats.skipped == 1
    assert [p.message.message_id for p in fake.plans] == ["m2"]
    m1, m2 = states(store)
    assert (m1.state, m1.last_error) == ("skipped", "update_only: no match")
    assert (m2.state, m2.record_id) == ("done", "c-5")


def test_ambiguous_match_goes_to_review_with_candidates(store: Store) -> None:
    store.ingest("main", [jane("m1", email="", first_name="", last_name="")], [TARGET], now=T0)
    twins = [CrmRecord(i, "contact", phones=("+14155551212",)) for i in ("c-1", "c-2")]
    fake = FakeConnector(records={PHONE: twins})

    stats = run(store, fake)

    assert (stats.review, fake.applied) == (1, [])
    [row] = states(store)
    assert (row.state, row.review_candidates) == ("review", ["c-1", "c-2"])


def test_best_of_equals_is_listed_with_the_records_it_passed_over(store: Store) -> None:
    tied = jane("m1", email="", first_name="", last_name="")
    store.ingest("main", [tied, jane("m2", email="", phone="(312) 555-0100")], [TARGET], now=T0)
    twins = [CrmRecord(i, "contact", phones=("+14155551212",)) for i in ("c-1", "c-2")]
    # m2's phone finds two records too, but only one is Jane Doe: a clear winner.
    clear = [
        CrmRecord("c-3", "contact", first_name="Jane", last_name="Doe", phones=("+13125550100",)),
        CrmRecord("c-4", "contact", first_name="Bob", last_name="Roe", phones=("+13125550100",)),
    ]
    fake = FakeConnector(records={PHONE: twins, MatchKey(KeyKind.PHONE, "+13125550100"): clear})

    stats = run(store, fake, settings=target(match=MatchPolicy(on_ambiguity="best")))

    assert stats.done == 2
    m1, m2 = states(store)
    assert (m1.state, m1.record_id, m1.review_candidates) == ("done", "c-1", ["c-2"])
    assert (m2.state, m2.record_id, m2.review_candidates) == ("done", "c-3", None)
    [listed] = store.passed_over()
    assert (listed["message_id"], listed["record_id"], listed["passed_over"]) == (
        "m1",
        "c-1",
        ["c-2"],
    )


def test_changed_message_updates_the_activity_in_place(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    fake = FakeConnector()
    run(store, fake)
    first_activity = states(store)[0].activity_id

    store.ingest("main", [replace(jane("m1"), content="changed")], [TARGET], now=T0)
    stats = run(store, fake)

    assert fake.plans[-1].activity.existing_id == first_activity
    assert (stats.activities_updated, stats.activities_logged) == (1, 0)
    assert (states(store)[0].state, states(store)[0].claimed_version) == ("done", 2)

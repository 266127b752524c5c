"""Nothing twice, core side: every interruption between "a write may have landed" and "its
outcome is recorded" leaves the delivery in doubt, and the next attempt reconciles instead
of writing again. Counted at a recording fake CRM (writes per marker), not in our store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from delivery_world import T0, TARGET, daemon_settings, delivery_rows, jane, open_store
from recording_crm import FakeConnector  # tests/lib
from sqlalchemy import select

from syncd import deliver as deliver_module
from syncd.config import DaemonSettings, TargetSettings
from syncd.deliver import DeliveryStats, check_claim, deliver_target
from syncd.errors import RateLimited, RetriableError, TargetPaused
from syncd.models import Action, CrmRecord, KeyKind, MatchKey, Outcome, Plan
from syncd.store.breaker import breaker_states
from syncd.store.schema import alerts, deliveries
from syncd.store.store import CacheWrite, DeliveryResult, State, Store

EMAIL = MatchKey(KeyKind.EMAIL, "jane@example.com")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(tmp_path)  # steady state unless a test says otherwise
    yield s
    s.close()


def settings(**overrides: Any) -> DaemonSettings:
    fast = {"retry_base_seconds": 1.0, "retry_cap_seconds": 2.0, "lease_seconds": 60.0}
    return daemon_settings(**(fast | overrides))


def run(store: Store, crm: FakeConnector, at: datetime = T0, **daemon: Any) -> DeliveryStats:
    return deliver_target(
        store,
        crm,
        TargetSettings(name=TARGET, type="fake"),
        settings(**daemon),
        regions={"main": "US"},
        clock=lambda: at,
    )


rows = delivery_rows


def interrupt_once(exc: BaseException) -> Any:
    fired: list[bool] = []

    def hook(plans: list[Plan]) -> None:
        if not fired:
            fired.append(True)
            raise exc

    return hook


def three(store: Store) -> None:
    batch = [jane("m1"), jane("m2", email="sam@example.com", phone="312 555 0100"), jane("m3")]
    store.ingest("main", batch, [TARGET], now=T0)


# -- one test per way a batch is cut short after its writes landed --------------------------


def test_sigint_after_the_writes_refunds_attempts_and_still_reconciles(store: Store) -> None:
    three(store)
    crm = FakeConnector(after_write=interrupt_once(KeyboardInterrupt()))

    with pytest.raises(KeyboardInterrupt):
        run(store, crm)
    # Handed back with the attempt refunded: attempts say "never tried", in_doubt does not.
    assert [(r.state, r.attempts, r.in_doubt) for r in rows(store)] == [("pending", 0, True)] * 3

    again = run(store, crm)

    assert crm.duplicates == 0
    assert [p.in_doubt for p in crm.applied[1]] == [True, True, True]
    assert (again.done, again.reconciled, again.activities_logged) == (3, 3, 0)
    assert [(r.state, r.in_doubt, r.intent) for r in rows(store)] == [("done", False, None)] * 3


def test_daily_limit_after_the_writes_pauses_and_reconciles_later(store: Store) -> None:
    three(store)
    crm = FakeConnector(after_write=interrupt_once(RateLimited("TotalRequests", policy="DAILY")))

    with pytest.raises(TargetPaused):
        run(store, crm)
    assert {(r.state, r.attempts, r.in_doubt) for r in rows(store)} == {("retry", 0, True)}

    later = run(store, crm, at=T0 + timedelta(hours=2))

    assert (crm.duplicates, later.reconciled) == (0, 3)


def test_malformed_answer_after_the_writes_is_retried_in_doubt(store: Store) -> None:
    three(store)
    crm = FakeConnector(after_write=interrupt_once(RetriableError("200 with a malformed body")))

    with pytest.raises(RetriableError):
        run(store, crm)
    later = run(store, crm, at=T0 + timedelta(minutes=5))

    assert (crm.duplicates, later.reconciled) == (0, 3)


def test_a_bug_mid_apply_hands_back_in_doubt(store: Store) -> None:
    three(store)
    crm = FakeConnector(after_write=interrupt_once(ValueError("connector bug")))

    with pytest.raises(ValueError):
        run(store, crm)
    run(store, crm)

    assert crm.duplicates == 0
    assert all(r.state == "done" for r in rows(store))


def test_missing_outcome_is_in_doubt_on_the_retry(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    crm = FakeConnector(silent=True)
    run(store, crm)  # wrote nothing we know of, answered nothing
    crm.silent = False

    run(store, crm, at=T0 + timedelta(minutes=5))

    assert [p.in_doubt for p in crm.plans] == [False, True]


def test_per_plan_failure_keeps_doubt_until_settled(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    busy = Outcome(0, ok=False, error="503", retriable=True)
    crm = FakeConnector(
        fail=lambda p: Outcome(p.delivery_id, ok=False, error=busy.error, retriable=True)
    )

    run(store, crm)
    [row] = rows(store)
    assert (row.state, row.in_doubt, row.intent["action"]) == ("retry", True, "create")

    crm.fail = lambda p: None
    run(store, crm, at=T0 + timedelta(minutes=5))
    [row] = rows(store)
    assert (row.state, row.in_doubt, row.intent) == ("done", False, None)


# -- the intent: the same plan again, not a fresh match --------------------------------------


def test_the_retry_rebuilds_the_recorded_plan_without_matching_again(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    crm = FakeConnector(after_write=interrupt_once(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run(store, crm)
    [first] = crm.applied[0]
    lookups = len(crm.lookups)
    # Meanwhile the CRM's search would now answer with someone else for the same email.
    crm.records[EMAIL] = [CrmRecord("someone-else", "contact", email="jane@example.com")]

    run(store, crm)

    [second] = crm.applied[1]
    assert len(crm.lookups) == lookups  # no new lookup: the intent decides
    assert (second.action, second.caller_key, second.record_id, dict(second.fields)) == (
        Action.CREATE,
        first.caller_key,
        None,
        dict(first.fields),
    )
    assert second.in_doubt
    assert not first.in_doubt
    assert crm.duplicates == 0


def test_an_intent_naming_a_deleted_record_is_forgotten_not_the_doubt(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    [claimed] = store.claim(TARGET, 10, "crashed", 60, now=T0)
    intent = {"action": "log", "record_id": "c-gone", "record_kind": "contact"}
    store.mark_in_doubt(
        {claimed.delivery_id: intent}, token=claimed.token, lease_seconds=60, now=T0
    )
    crm = FakeConnector(
        fail=lambda p: (
            Outcome(p.delivery_id, ok=False, error="deleted", retriable=True, gone=("c-gone",))
            if p.record_id == "c-gone"
            else None
        )
    )

    run(store, crm, at=T0 + timedelta(seconds=61))

    # The gone record is retried at once (no back-off), matched afresh, still in doubt.
    assert [(p.action, p.record_id, p.in_doubt) for p in crm.plans] == [
        (Action.LOG, "c-gone", True),
        (Action.CREATE, None, True),
    ]
    [row] = rows(store)
    assert (row.state, row.in_doubt, row.intent) == ("done", False, None)


# -- fenced claims --------------------------------------------------------------------------


def test_a_worker_whose_claim_was_taken_over_has_its_outcome_rejected(store: Store) -> None:
    """Worker A's CRM answers slower than the lease; B takes the claim over meanwhile and
    reconciles; A's outcome (and its cache writes) are rejected as a whole."""
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    crm_b = FakeConnector()
    inside: list[DeliveryStats] = []

    def slow(plans: list[Plan]) -> None:
        # A's write landed; A is still waiting for the answer when B runs, lease long gone.
        crm_b.activities.update(crm_a.activities)
        crm_b.written.update(crm_a.written)
        inside.append(run(store, crm_b, at=T0 + timedelta(seconds=61), worker_id="w2"))

    crm_a = FakeConnector(after_write=slow)
    stats_a = run(store, crm_a)

    [b] = inside
    assert (b.in_doubt, b.reconciled) == (1, 1)
    assert crm_b.duplicates == 0
    assert (stats_a.rejected, stats_a.done) == (1, 0)  # b counts what it recorded
    [row] = rows(store)
    assert (row.state, row.action, row.claimed_by) == ("done", "reconciled", "w2")


def test_record_rejects_everything_when_one_claim_is_stale(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2")], [TARGET], now=T0)
    mine = store.claim(TARGET, 10, "w1", 60, now=T0)
    stolen = store.claim(TARGET, 1, "w2", 60, now=T0 + timedelta(seconds=61))  # takes m1
    assert [c.delivery_id for c in stolen] == [mine[0].delivery_id]

    ok = store.record(
        TARGET,
        [DeliveryResult(c.delivery_id, State.DONE, record_id="r", activity_id="a") for c in mine],
        worker="w1",
        token=mine[0].token,
        cache_writes=[CacheWrite(EMAIL, "r", "contact")],
    )

    assert ok is False
    assert [(r.state, r.claimed_by) for r in rows(store)] == [
        ("in_flight", "w2"),
        ("in_flight", "w1"),
    ]
    assert store.cache_get(TARGET, [EMAIL]) == {}  # the cache write went with the outcomes


def test_a_taken_over_claim_is_never_marked_nor_written(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    [mine] = store.claim(TARGET, 10, "w1", 60, now=T0)
    store.claim(TARGET, 10, "w2", 60, now=T0 + timedelta(seconds=61))

    marked = store.mark_in_doubt(
        {mine.delivery_id: {"action": "create"}}, token=mine.token, lease_seconds=60
    )
    assert marked == set()
    assert store.renew([mine.delivery_id], token=mine.token, lease_seconds=60) == set()


def test_renewal_extends_the_lease(store: Store) -> None:
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    [mine] = store.claim(TARGET, 10, "w1", 60, now=T0)

    assert store.renew(
        [mine.delivery_id], token=mine.token, lease_seconds=60, now=T0 + timedelta(seconds=50)
    ) == {mine.delivery_id}
    assert store.claim(TARGET, 10, "w2", 60, now=T0 + timedelta(seconds=100)) == []
    [row] = rows(store)
    assert row.lease_until == T0 + timedelta(seconds=110)


# -- a lost store --------------------------------------------------------------------------


def test_messages_older_than_the_store_are_in_doubt_from_their_first_attempt(
    store: Store,
) -> None:
    store.set_born_at(T0 + timedelta(days=1))  # a fresh store over messages of yesterday
    store.ingest(
        "main",
        [
            jane("old"),
            jane("new", created_at=T0 + timedelta(days=2)),
            jane("unknown", created_at=None),
        ],
        [TARGET],
        now=T0,
    )
    crm = FakeConnector()

    run(store, crm)

    assert {p.message.message_id: p.in_doubt for p in crm.plans} == {
        "old": True,
        "new": False,
        "unknown": True,
    }


def test_an_operator_can_vouch_that_the_crm_never_saw_syncd(store: Store) -> None:
    store.set_born_at(T0 + timedelta(days=1))
    store.ingest("main", [jane("old")], [TARGET], now=T0)
    crm = FakeConnector()

    run(store, crm, reconcile_before_birth=False)

    assert [p.in_doubt for p in crm.plans] == [False]


def test_the_store_birth_is_recorded_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'born.db'}"
    first = Store(url)
    first.migrate()
    born = first.born_at()
    first.close()
    again = Store(url)
    again.migrate()
    assert again.born_at() == born
    again.close()


# -- dead letters go to the alert outbox on every path -----------------------------------


def test_dead_letters_are_written_to_the_alert_outbox_with_their_outcome(store: Store) -> None:
    store.ingest("main", [jane("m1", email="jane@example.com")], [TARGET], now=T0)
    crm = FakeConnector(
        fail=lambda p: Outcome(p.delivery_id, ok=False, error="INVALID for jane@example.com")
    )

    stats = run(store, crm)

    assert stats.dead == 1
    with store.engine.connect() as conn:
        [alert] = list(conn.execute(select(alerts)))
    assert alert.kind == "dead_letter"
    assert alert.sent_at is None
    assert "jane@example.com" not in str(alert.payload)
    assert "m1" in alert.payload["title"]


def test_whole_batch_failures_alert_their_dead_letters_too(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2")], [TARGET], now=T0)
    crm = FakeConnector(raises=RetriableError("500 from CRM"))

    at = T0
    for _ in range(3):  # max_attempts, the breaker set to open later than that
        with pytest.raises(RetriableError):
            run(store, crm, at=at, breaker_failures=10)
        at += timedelta(minutes=5)

    assert {r.state for r in rows(store)} == {"dead"}
    with store.engine.connect() as conn:
        kinds = [a.kind for a in conn.execute(select(alerts))]
    assert kinds == ["dead_letter", "dead_letter"]


# -- an outage pauses the target instead of burning every attempt ----------------------------


def test_an_outage_opens_the_breaker_and_spends_no_more_attempts(store: Store) -> None:
    store.ingest("main", [jane("m1"), jane("m2")], [TARGET], now=T0)
    crm = FakeConnector(raises=RetriableError("500 from CRM"))
    opts = {"breaker_failures": 2, "breaker_pause_seconds": 60.0}

    with pytest.raises(RetriableError):
        run(store, crm, at=T0, **opts)  # first failure: an ordinary retry
    with pytest.raises(TargetPaused) as paused:
        run(store, crm, at=T0 + timedelta(minutes=5), **opts)  # second: the breaker opens
    assert paused.value.kind == "outage"
    assert paused.value.until == T0 + timedelta(minutes=6)
    assert {(r.state, r.attempts) for r in rows(store)} == {("retry", 1)}  # refunded

    calls = len(crm.applied)
    with pytest.raises(TargetPaused):  # open: not even a claim
        run(store, crm, at=T0 + timedelta(minutes=5, seconds=30), **opts)
    assert len(crm.applied) == calls
    state = breaker_states(store)[TARGET]
    assert (state.failures, state.open_until) == (2, T0 + timedelta(minutes=6))

    with pytest.raises(TargetPaused) as again:  # half open: one more failure, longer pause
        run(store, crm, at=T0 + timedelta(minutes=7), **opts)
    assert again.value.until == T0 + timedelta(minutes=9)

    crm.raises = None
    stats = run(store, crm, at=T0 + timedelta(minutes=10), **opts)
    assert (stats.done, stats.dead) == (2, 0)
    assert breaker_states(store)[TARGET].failures == 0  # closed
    assert {(r.state, r.attempts) for r in rows(store)} == {("done", 2)}


def test_waiting_for_the_new_caller_lease_does_not_cost_the_delivery_lease(
    store: Store,
) -> None:
    """Another replica holds the new-caller lease for longer than our delivery lease; once
    we have it, our claim is renewed from that moment, so nobody can take it over while we
    write."""
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    assert store.acquire_lease(f"new:{TARGET}", "other", 300, now=T0)
    moment = [T0]
    taken: list[int] = []

    def other_replica_lets_go() -> None:
        while not stop.wait(0.02):
            if crm.lookups:  # we looked the caller up and now wait for the lease
                moment[0] = T0 + timedelta(seconds=100)  # longer than our 60 s lease
                store.release_lease(f"new:{TARGET}", "other")
                return

    def steal(plans: list[Plan]) -> None:
        later = moment[0] + timedelta(seconds=30)
        taken.extend(c.delivery_id for c in store.claim(TARGET, 10, "w2", 60, now=later))

    crm = FakeConnector(after_write=steal)
    stop = threading.Event()
    helper = threading.Thread(target=other_replica_lets_go)
    helper.start()
    try:
        stats = deliver_target(
            store,
            crm,
            TargetSettings(name=TARGET, type="fake"),
            settings(),
            regions={"main": "US"},
            clock=lambda: moment[0],
        )
    finally:
        stop.set()
        helper.join()

    assert taken == []  # renewed after the wait: still ours 30 s later
    assert (stats.done, stats.rejected) == (1, 0)


def test_a_worker_frozen_past_its_lease_sends_no_further_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No heartbeat ran (the process was frozen) and another worker took the batch over:
    the next CRM answer raises ClaimLost into the connector, which writes nothing more."""
    monkeypatch.setattr(deliver_module, "HEARTBEAT_SHARE", 1000.0)
    store.ingest("main", [jane("m1"), jane("m2"), jane("m3")], [TARGET], now=T0)
    lease = 0.2

    def answered(plan: Plan) -> None:
        if plan.message.message_id == "m1":
            time.sleep(lease)  # frozen past the lease on the first answer
            store.claim(TARGET, 10, "w2", 60, now=T0 + timedelta(seconds=1))  # taken over
        check_claim()  # what the daemon's request observer does after each answer

    crm = FakeConnector(each_answer=answered)
    stats = run(store, crm, lease_seconds=lease)

    assert dict(crm.written) == {"syncd:main:m1": 1}  # m2 and m3 never sent
    assert stats.rejected == 3
    assert {(r.claimed_by, r.in_doubt) for r in rows(store)} == {("w2", True)}


def test_a_new_caller_sharing_a_key_with_a_create_in_doubt_takes_its_caller_key(
    store: Store,
) -> None:
    """A caller whose create may have landed (killed before it was recorded) is not yet
    visible to search: a later message from them, in another batch and spelt otherwise (only
    the phone), must upsert under the same caller key, not make a second contact."""
    store.ingest("main", [jane("m1")], [TARGET], now=T0)
    crm = FakeConnector(after_write=interrupt_once(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run(store, crm)
    [first] = crm.applied[0]
    assert first.action is Action.CREATE
    # The same caller calls again, giving only the phone; the first delivery waits in doubt.
    with store.engine.begin() as conn:
        conn.execute(deliveries.update().values(next_attempt_at=T0 + timedelta(hours=1)))
        conn.execute(deliveries.update().values(state=State.RETRY))
    store.ingest("main", [jane("m2", email="")], [TARGET], now=T0)
    crm.records.clear()  # search lags: the contact the first attempt made is not found yet

    run(store, crm)

    [second] = crm.applied[1]
    assert second.message.message_id == "m2"
    assert second.action is Action.CREATE
    assert second.caller_key == first.caller_key

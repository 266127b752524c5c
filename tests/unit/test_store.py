"""The state store, run on every backend by the ``store`` fixture (SQLite, and PostgreSQL)."""

from __future__ import annotations

import stat
import threading
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.exc import StatementError

from syncd.models import KeyKind, MatchKey, Message
from syncd.store.records import RunStatus, Settled
from syncd.store.schema import deliveries, messages
from syncd.store.store import CacheWrite, Claimed, DeliveryResult, State, Store

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
ACCOUNT = "main"
EMAIL = MatchKey(KeyKind.EMAIL, "jane@example.com")
PHONE = MatchKey(KeyKind.PHONE, "+14155551212")


def msg(message_id: str, content: str = "please call back", **extra: Any) -> Message:
    return Message(
        account=ACCOUNT,
        message_id=message_id,
        created_at=T0,
        first_name="Jane",
        last_name="Doe",
        phone="(415) 555-1212",
        content=content,
        **extra,
    )


def rows(store: Store, target: str | None = None) -> list[Any]:
    """Every delivery joined with its message id, in id order."""
    query = (
        select(deliveries, messages.c.message_id, messages.c.version)
        .join(messages, messages.c.id == deliveries.c.message_pk)
        .order_by(deliveries.c.id)
    )
    if target:
        query = query.where(deliveries.c.target == target)
    with store.engine.connect() as conn:
        return list(conn.execute(query))


def one(store: Store, delivery_id: int) -> Any:
    return next(r for r in rows(store) if r.id == delivery_id)


class LeaseClock:
    """Lease time moved forward on either backend. Leases follow the database's clock on
    PostgreSQL (``now`` is ignored for them) and the process clock (``now``) on SQLite: to
    let ``seconds`` pass, SQLite gets ``T0 + seconds`` and PostgreSQL has every stored expiry
    moved back by as much."""

    def __init__(self, store: Store) -> None:
        self.store, self.moved = store, 0.0

    def at(self, seconds: float) -> datetime:
        if self.store.dialect == "postgresql":
            shift = {"s": seconds - self.moved}
            self.moved = seconds
            back = "- make_interval(secs => :s)"
            with self.store.engine.begin() as conn:
                conn.execute(text(f"UPDATE deliveries SET lease_until = lease_until {back}"), shift)
                conn.execute(text(f"UPDATE leases SET expires_at = expires_at {back}"), shift)
        return T0 + timedelta(seconds=seconds)

    def expect(self, moment: datetime | None, seconds: float) -> None:
        """``moment`` is ``seconds`` after the (simulated) start, on the lease clock."""
        assert moment is not None
        if self.store.dialect == "postgresql":
            with self.store.engine.connect() as conn:
                db_now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
            drift = moment - (db_now + timedelta(seconds=seconds - self.moved))
            assert abs(drift) < timedelta(seconds=10)
        else:
            assert moment == T0 + timedelta(seconds=seconds)


def done(claimed: Claimed, activity: str = "act-1") -> DeliveryResult:
    return DeliveryResult(
        claimed.delivery_id, State.DONE, record_id="rec-1", activity_id=activity, action="log"
    )


def seed(store: Store, n: int, target: str = "crm") -> None:
    store.ingest(ACCOUNT, [msg(f"m{i:03d}") for i in range(n)], [target], now=T0)


# -- ingest -------------------------------------------------------------------------------------


def test_a_target_added_later_gets_deliveries_for_stored_messages(store: Store) -> None:
    batch = [msg("m1"), msg("m2")]
    store.ingest(ACCOUNT, batch, ["hub"], now=T0)
    store.ingest(ACCOUNT, batch, ["hub", "sf"], now=T0)

    assert store.counts()["sf"]["pending"] == 2
    assert store.counts()["hub"]["pending"] == 2
    assert sorted((r.message_id, r.target) for r in rows(store)) == [
        ("m1", "hub"),
        ("m1", "sf"),
        ("m2", "hub"),
        ("m2", "sf"),
    ]


def test_ingest_same_batch_twice_adds_nothing(store: Store) -> None:
    batch = [msg("m1"), msg("m2"), msg("m3")]
    first = store.ingest(ACCOUNT, batch, ["hub", "sf"], now=T0)
    again = store.ingest(ACCOUNT, batch, ["hub", "sf"], now=T0)

    assert (first.new, first.changed, first.unchanged) == (3, 0, 0)
    assert set(first.new_ids) == {"m1", "m2", "m3"}
    assert (again.new, again.changed, again.unchanged, again.new_ids) == (0, 0, 3, ())
    assert store.message_count() == 3
    assert [(r.message_id, r.target) for r in rows(store)].count(("m1", "hub")) == 1
    assert store.counts() == {
        "hub": dict.fromkeys([s.value for s in State], 0) | {"pending": 3},
        "sf": dict.fromkeys([s.value for s in State], 0) | {"pending": 3},
    }


def test_ingest_dedupes_within_one_batch_and_per_account(store: Store) -> None:
    result = store.ingest(ACCOUNT, [msg("m1"), msg("m1", content="newer")], ["crm"], now=T0)
    other = store.ingest("other", [msg("m1")], ["crm"], now=T0)

    assert (result.fetched, result.new, other.new) == (2, 1, 1)
    assert store.message_count() == 2  # the same id under another account is another message


def test_claimed_message_round_trips(store: Store) -> None:
    original = msg(
        "m1",
        email="jane@example.com",
        company="Acme",
        is_emergency=True,
        custom_fields={"Callback": "415 555 0000", "Café": "crème"},
        raw={"id": "m1", "extra": [1, 2, {"x": None}]},
    )
    store.ingest(ACCOUNT, [original], ["crm"], now=T0)

    [claimed] = store.claim("crm", 10, "w1", 60, now=T0)

    assert claimed.message == original
    assert claimed.message.created_at is not None
    assert claimed.message.created_at.tzinfo is not None
    assert (claimed.attempts, claimed.activity_id) == (1, None)
    assert one(store, claimed.delivery_id).claimed_version == 1


def test_changed_message_requeues_done_delivery(store: Store) -> None:
    store.ingest(ACCOUNT, [msg("m1")], ["crm"], now=T0)
    [claimed] = store.claim("crm", 10, "w1", 60, now=T0)
    store.record("crm", [done(claimed, "act-9")], worker="w1")
    assert one(store, claimed.delivery_id).state == State.DONE

    result = store.ingest(ACCOUNT, [msg("m1", content="actually, urgent")], ["crm"], now=T0)

    row = one(store, claimed.delivery_id)
    assert (result.new, result.changed, result.unchanged) == (0, 1, 0)
    assert (row.state, row.attempts, row.version, row.claimed_version) == ("pending", 0, 2, 1)
    [again] = store.claim("crm", 10, "w1", 60, now=T0)
    # The activity is updated in place on the next delivery, not logged twice.
    assert again.activity_id == "act-9"
    assert one(store, again.delivery_id).claimed_version == 2
    assert again.message.content == "actually, urgent"


def test_change_during_flight_sends_delivery_round_again(store: Store) -> None:
    store.ingest(ACCOUNT, [msg("m1")], ["crm"], now=T0)
    [claimed] = store.claim("crm", 10, "w1", 60, now=T0)

    store.ingest(ACCOUNT, [msg("m1", content="changed meanwhile")], ["crm"], now=T0)
    assert one(store, claimed.delivery_id).state == State.IN_FLIGHT  # ingest leaves it alone
    store.record("crm", [done(claimed)], worker="w1")

    row = one(store, claimed.delivery_id)
    assert (row.state, row.attempts, row.claimed_version, row.activity_id) == (
        "pending",
        0,
        1,
        "act-1",
    )


def test_a_status_change_requeues_but_the_sender_does_not(store: Store) -> None:
    store.ingest(ACCOUNT, [msg("m1")], ["crm"], now=T0)
    [claimed] = store.claim("crm", 10, "w1", 60, now=T0)
    store.record("crm", [done(claimed)], worker="w1")

    # "from" is who typed the message: not a change the activity shows.
    result = store.ingest(ACCOUNT, [msg("m1", sender="Agent 7")], ["crm"], now=T0)
    assert (result.changed, result.unchanged) == (0, 1)
    assert one(store, claimed.delivery_id).state == State.DONE

    # The message's status and delivery are: the activity is updated in place to show them.
    for change in ({"status": "Delivered"}, {"delivered_to": "ops@example.com"}):
        result = store.ingest(ACCOUNT, [msg("m1", **change)], ["crm"], now=T0)
        assert (result.changed, result.unchanged) == (1, 0)
        row = one(store, claimed.delivery_id)
        assert (row.state, row.activity_id) == ("pending", "act-1")


# -- claim ----------------------------------------------------------------------------------------


def test_claim_in_id_order_and_respects_limit(store: Store) -> None:
    seed(store, 7)
    seed(store, 2, target="other")

    first = store.claim("crm", 3, "w1", 60, now=T0)
    second = store.claim("crm", 3, "w1", 60, now=T0)
    third = store.claim("crm", 3, "w1", 60, now=T0)

    ids = [c.delivery_id for c in first + second + third]
    assert [len(first), len(second), len(third)] == [3, 3, 1]
    assert ids == sorted(ids)
    assert len(set(ids)) == 7
    assert [c.message.message_id for c in first] == ["m000", "m001", "m002"]
    assert all(c.target == "crm" for c in first + second + third)
    assert store.claim("crm", 3, "w1", 60, now=T0) == []
    row = one(store, ids[0])
    assert (row.state, row.claimed_by) == ("in_flight", "w1")
    LeaseClock(store).expect(row.lease_until, 60)


def test_claim_skips_retry_until_due(store: Store) -> None:
    seed(store, 1)
    [claimed] = store.claim("crm", 10, "w1", 60, now=T0)
    due = T0 + timedelta(minutes=5)
    store.record(
        "crm",
        [DeliveryResult(claimed.delivery_id, State.RETRY, error="503", next_attempt_at=due)],
        worker="w1",
    )

    assert store.claim("crm", 10, "w1", 60, now=due - timedelta(seconds=1)) == []
    [again] = store.claim("crm", 10, "w1", 60, now=due)

    assert again.delivery_id == claimed.delivery_id
    assert again.attempts == 2


def test_claim_takes_over_expired_lease(store: Store) -> None:
    seed(store, 1)
    clock = LeaseClock(store)
    [claimed] = store.claim("crm", 10, "crashed", 60, now=T0)

    assert store.claim("crm", 10, "w2", 60, now=clock.at(59)) == []
    [again] = store.claim("crm", 10, "w2", 60, now=clock.at(61))

    assert again.delivery_id == claimed.delivery_id
    assert again.attempts == 2
    assert one(store, again.delivery_id).claimed_by == "w2"
    # The worker that lost its lease can no longer record over the new holder.
    store.record("crm", [done(claimed)], worker="crashed")
    assert one(store, again.delivery_id).state == State.IN_FLIGHT


def test_a_claim_takes_the_oldest_due_of_every_kind_together(store: Store) -> None:
    seed(store, 6)
    clock = LeaseClock(store)
    early = store.claim("crm", 3, "w1", 60, now=T0)  # ids 1-3 in flight
    retry, expired, not_due = early
    later = T0 + timedelta(seconds=120)
    store.record(
        "crm",
        [
            DeliveryResult(retry.delivery_id, State.RETRY, error="503", next_attempt_at=T0),
            DeliveryResult(not_due.delivery_id, State.RETRY, error="503", next_attempt_at=later),
        ],
        worker="w1",
    )

    taken = store.claim("crm", 3, "w2", 60, now=clock.at(61))

    # a due retry, an expired lease and the oldest pending: by id, whatever their kind
    assert [c.delivery_id for c in taken] == [
        retry.delivery_id,
        expired.delivery_id,
        not_due.delivery_id + 1,
    ]


def test_claiming_pending_work_reads_the_queue_index_without_sorting(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    seed(store, 3)
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT deliveries.id") and "LIMIT" in statement:
            found = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, params)
            plans.append(" / ".join(str(row[3]) for row in found))

    event.listen(store.engine, "before_cursor_execute", explain)
    assert len(store.claim("crm", 2, "w1", 60, now=T0)) == 2
    pending = plans[0]
    assert "ix_deliveries_queue" in pending
    assert "TEMP B-TREE" not in pending


def test_concurrent_claims_are_disjoint(store: Store) -> None:
    seed(store, 40)
    barrier = threading.Barrier(2)
    got: dict[str, list[int]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        # A second Store is a second engine: separate connections, as in two replicas.
        own = Store(store.url)
        try:
            barrier.wait()
            while batch := own.claim("crm", 3, name, 60, now=T0):
                got[name].extend(c.delivery_id for c in batch)
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert not set(got["a"]) & set(got["b"])
    assert len(got["a"]) + len(got["b"]) == 40
    assert {r.claimed_by for r in rows(store)} <= {"a", "b"}
    assert all(r.attempts == 1 for r in rows(store))


@pytest.mark.postgres
def test_claim_skips_rows_locked_by_another_transaction(postgres_url: str) -> None:
    """FOR UPDATE SKIP LOCKED: a claim neither waits for nor takes rows another replica holds."""
    store = Store(postgres_url)
    store.migrate()
    seed(store, 5)
    other = create_engine(postgres_url)
    try:
        with other.begin() as conn:
            locked = conn.execute(
                text("SELECT id FROM deliveries ORDER BY id LIMIT 2 FOR UPDATE")
            ).scalars()
            held = set(locked)
            claimed = store.claim("crm", 10, "w1", 60, now=T0)
        assert len(held) == 2
        assert {c.delivery_id for c in claimed} == {r.id for r in rows(store)} - held
    finally:
        other.dispose()
        store.close()


# -- record and release ------------------------------------------------------------------------


def test_record_only_touches_rows_claimed_by_that_worker(store: Store) -> None:
    seed(store, 2)
    mine, theirs = store.claim("crm", 2, "w1", 60, now=T0)
    # A change while in flight must not let a stranger's DONE re-queue w1's work either.
    store.ingest(ACCOUNT, [msg("m001", content="changed")], ["crm"], now=T0)

    store.record("crm", [done(mine), done(theirs)], worker="w2")

    for claimed in (mine, theirs):
        row = one(store, claimed.delivery_id)
        assert (row.state, row.claimed_by, row.activity_id) == ("in_flight", "w1", None)
        assert row.attempts == 1


def test_record_states_and_fields(store: Store) -> None:
    seed(store, 3)
    a, b, c = store.claim("crm", 3, "w1", 60, now=T0)

    store.record(
        "crm",
        [
            DeliveryResult(a.delivery_id, State.DONE, "003A", "contact", "00T1", "create"),
            DeliveryResult(b.delivery_id, State.REVIEW, error="2 matches", review_candidates=["x"]),
            DeliveryResult(c.delivery_id, State.DEAD, error="INVALID_EMAIL"),
        ],
        worker="w1",
    )

    ra, rb, rc = one(store, a.delivery_id), one(store, b.delivery_id), one(store, c.delivery_id)
    assert (ra.state, ra.record_id, ra.record_kind, ra.activity_id, ra.action) == (
        "done",
        "003A",
        "contact",
        "00T1",
        "create",
    )
    assert (ra.claimed_version, ra.lease_until) == (1, None)
    assert (rb.state, rb.review_candidates, rb.last_error) == ("review", ["x"], "2 matches")
    assert (rc.state, rc.last_error) == ("dead", "INVALID_EMAIL")


def test_record_writes_and_drops_cache_in_one_call(store: Store) -> None:
    other = MatchKey(KeyKind.PHONE, "+14155550000")
    store.record(
        "crm",
        [],
        worker="w1",
        cache_writes=[
            CacheWrite(EMAIL, "old", "contact", {"email": "jane@example.com"}),
            CacheWrite(other, "old", "contact"),
        ],
    )
    seed(store, 1)
    [claimed] = store.claim("crm", 1, "w1", 60, now=T0)

    store.record(
        "crm",
        [done(claimed)],
        worker="w1",
        cache_writes=[CacheWrite(PHONE, "new", "lead", {"phone": "+14155551212"})],
        cache_drops=["old"],
    )

    cached = store.cache_get("crm", [EMAIL, PHONE, other])
    assert set(cached) == {PHONE}
    assert (cached[PHONE].record_id, cached[PHONE].record_kind) == ("new", "lead")
    assert cached[PHONE].snapshot == {"phone": "+14155551212"}
    assert one(store, claimed.delivery_id).state == State.DONE
    assert store.cache_get("elsewhere", [PHONE]) == {}  # the cache is per target


def test_cache_write_replaces_entry_and_cache_drop(store: Store) -> None:
    store.record("crm", [], worker="w1", cache_writes=[CacheWrite(EMAIL, "a", "contact")])
    store.record("crm", [], worker="w1", cache_writes=[CacheWrite(EMAIL, "b", "lead", {"x": "1"})])

    assert store.cache_get("crm", [EMAIL])[EMAIL].record_id == "b"
    store.record("crm", [], worker="w1", cache_drops=["b"])
    assert store.cache_get("crm", [EMAIL]) == {}


def test_release_with_refund_and_retry(store: Store) -> None:
    seed(store, 2)
    a, b = store.claim("crm", 2, "w1", 60, now=T0)
    later = datetime.now(UTC) + timedelta(hours=1)

    store.release([a.delivery_id], worker="w2", refund_attempt=True)  # not w2's to release
    assert one(store, a.delivery_id).state == State.IN_FLIGHT
    store.release([a.delivery_id], worker="w1", refund_attempt=True)
    store.release([b.delivery_id], worker="w1", next_attempt_at=later, error="429")

    ra, rb = one(store, a.delivery_id), one(store, b.delivery_id)
    assert (ra.state, ra.attempts, ra.lease_until) == ("pending", 0, None)
    assert (rb.state, rb.attempts, rb.next_attempt_at, rb.last_error) == ("retry", 1, later, "429")


# -- leases, windows, cursors, runs -------------------------------------------------------------


def test_leases(store: Store) -> None:
    clock = LeaseClock(store)
    assert store.acquire_lease("poll:main", "a", 30, now=T0)
    assert store.acquire_lease("poll:main", "a", 30, now=clock.at(20))  # renew
    # Held until T0+50 after the renewal, so b is refused after the first TTL would have run out.
    assert not store.acquire_lease("poll:main", "b", 30, now=clock.at(40))
    assert store.acquire_lease("poll:other", "b", 30, now=clock.at(40))  # leases are per name
    assert store.acquire_lease("poll:main", "b", 30, now=clock.at(51))  # expired
    assert not store.acquire_lease("poll:main", "a", 30, now=clock.at(52))

    store.release_lease("poll:main", "a")  # not a's any more: no effect
    assert not store.acquire_lease("poll:main", "a", 30, now=clock.at(53))
    store.release_lease("poll:main", "b")
    assert store.acquire_lease("poll:main", "a", 30, now=clock.at(54))


def test_windows_and_done_days(store: Store) -> None:
    d1, d2, d3 = date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)
    store.mark_window(ACCOUNT, d1, fetched=10, new=4)
    store.mark_window(ACCOUNT, d3, fetched=0, new=0)
    store.mark_window(ACCOUNT, d1, fetched=11, new=1)  # a re-run of a day is an upsert
    store.mark_window("other", d2, fetched=1, new=1)

    assert store.done_days(ACCOUNT, d1, d3) == {d1, d3}
    assert store.done_days(ACCOUNT, d2, d3) == {d3}
    assert store.done_days("other", d1, d3) == {d2}


def test_cursor_get_set(store: Store) -> None:
    assert store.get_cursor(ACCOUNT) is None
    store.set_cursor(ACCOUNT, T0)
    later = T0 + timedelta(hours=3)
    store.set_cursor(ACCOUNT, later.astimezone(timezone(timedelta(hours=-5))))  # stored as UTC
    store.set_cursor("other", T0)

    assert store.get_cursor(ACCOUNT) == later
    assert store.cursor_positions() == {ACCOUNT: later, "other": T0}


def test_runs(store: Store) -> None:
    assert store.last_success() is None
    poll = store.start_run("poll", "w1", now=T0)
    store.finish_run(poll, RunStatus.OK, {"fetched": 3, "when": T0})
    backfill = store.start_run("backfill", "w1", now=T0)
    store.finish_run(backfill, RunStatus.ERROR, {}, error="source down")
    running = store.start_run("poll", "w2", now=T0)

    runs = store.last_runs(limit=5)
    assert [r["id"] for r in runs] == [running, backfill, poll]
    assert runs[0]["status"] == "running"
    assert runs[0]["finished_at"] is None
    assert runs[1]["error"] == "source down"
    assert runs[2]["stats"] == {"fetched": 3, "when": str(T0)}  # JSON-safe
    assert len(store.last_runs(limit=2)) == 2
    finished = store.last_success("poll")
    assert finished is not None
    assert finished.tzinfo is not None
    assert finished == datetime.fromisoformat(runs[2]["finished_at"])
    assert store.last_success("backfill") is None


# -- operator views -------------------------------------------------------------------------------


def test_quarantine_dedupes_same_payload(store: Store) -> None:
    bad = {"id": "q1", "created": "not a date"}
    assert store.quarantine(ACCOUNT, [("q1", "bad date", bad)]) == 1
    assert store.quarantine(ACCOUNT, [("q1", "bad date", dict(bad))]) == 0
    assert store.quarantine(ACCOUNT, [(None, "no id", {"junk": True}), ("q1", "x", bad)]) == 1
    assert store.quarantine(ACCOUNT, []) == 0

    listed = store.quarantined()
    assert store.quarantine_count() == 2
    assert [(q["message_id"], q["reason"]) for q in listed] == [("q1", "bad date"), (None, "no id")]
    assert '"not a date"' in listed[0]["raw"]


def test_passed_over_lists_done_deliveries_that_chose_among_equals(store: Store) -> None:
    seed(store, 3)
    a, b, c = store.claim("crm", 3, "w1", 60, now=T0)
    chose = DeliveryResult(
        b.delivery_id, State.DONE, record_id="rec-2", review_candidates=["rec-3", "rec-4"]
    )
    review = DeliveryResult(c.delivery_id, State.REVIEW, error="tie", review_candidates=["x"])
    store.record("crm", [done(a), chose, review], worker="w1")

    assert [(p["message_id"], p["record_id"], p["passed_over"]) for p in store.passed_over()] == [
        ("m001", "rec-2", ["rec-3", "rec-4"])
    ]
    store.replay("m001")
    [again] = store.claim("crm", 1, "w1", 60, now=T0)
    store.record("crm", [done(again)], worker="w1")  # delivered again, to a clear winner
    assert store.passed_over() == []


def test_counts_problems_retry_dead_and_replay(store: Store) -> None:
    seed(store, 4)
    store.ingest(ACCOUNT, [msg("x1")], ["other"], now=T0)
    a, b, c, _d = store.claim("crm", 4, "w1", 60, now=T0)
    store.record(
        "crm",
        [
            DeliveryResult(a.delivery_id, State.DEAD, error="rejected"),
            DeliveryResult(b.delivery_id, State.REVIEW, error="ambiguous", review_candidates=["1"]),
            done(c),
        ],
        worker="w1",
    )

    assert store.counts()["crm"] == dict.fromkeys([s.value for s in State], 0) | {
        "dead": 1,
        "review": 1,
        "done": 1,
        "in_flight": 1,
    }
    problems = store.problems()
    assert [(p["message_id"], p["state"], p["reason"]) for p in problems] == [
        ("m000", "dead", "rejected"),
        ("m001", "review", "ambiguous"),
    ]
    assert problems[1]["candidates"] == ["1"]
    assert store.oldest_pending() == {"crm": T0, "other": T0}

    assert store.retry_dead(target="other") == 0
    assert store.retry_dead() == 1
    assert store.retry_dead(include_review=True) == 1
    assert (one(store, b.delivery_id).state, one(store, b.delivery_id).attempts) == ("pending", 0)

    assert store.replay("m002") == 1
    assert one(store, c.delivery_id).state == State.PENDING
    assert one(store, c.delivery_id).activity_id == "act-1"  # updated in place next time
    assert store.replay("m003") == 0  # in flight: left to its worker
    assert store.replay("x1", target="crm") == 0
    assert store.replay("m000", target="crm", account=ACCOUNT) == 1  # dead and retried: pending
    assert store.replay("m000", account="nobody") == 0


def test_resolve_review_requeues_with_the_operators_decision(store: Store) -> None:
    seed(store, 2)
    a, b = store.claim("crm", 2, "w1", 60, now=T0)
    review = [DeliveryResult(c.delivery_id, State.REVIEW, error="2 matches") for c in (a, b)]
    store.record("crm", review, worker="w1")

    assert store.resolve_review(a.delivery_id, record_id="c-9", record_kind="lead")
    assert store.resolve_review(b.delivery_id)
    assert not store.resolve_review(b.delivery_id)  # no longer in review

    claimed = {c.delivery_id: c for c in store.claim("crm", 2, "w1", 60, now=T0)}
    assert (claimed[a.delivery_id].record_id, claimed[a.delivery_id].record_kind) == ("c-9", "lead")
    assert claimed[a.delivery_id].settled is Settled.RECORD
    assert (claimed[b.delivery_id].record_id, claimed[b.delivery_id].settled) == (
        None,
        Settled.NEW,
    )
    assert claimed[a.delivery_id].attempts == 1


# -- backend details -----------------------------------------------------------------------------


def test_timestamps_come_back_aware_utc(store: Store) -> None:
    seed(store, 1)
    store.set_cursor(ACCOUNT, datetime(2024, 6, 1, 8, 0, tzinfo=UTC) - timedelta(hours=4))
    [claimed] = store.claim("crm", 1, "w1", 60, now=T0)
    row = one(store, claimed.delivery_id)

    moments = [
        store.get_cursor(ACCOUNT),
        row.lease_until,
        row.created_at,
        row.updated_at,
        *store.oldest_pending().values(),
    ]
    assert len(moments) == 5
    for moment in moments:
        assert moment is not None
        assert moment.utcoffset() == timedelta(0)
        assert moment.tzinfo == UTC
    LeaseClock(store).expect(row.lease_until, 60)


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        store.set_cursor(ACCOUNT, datetime(2024, 6, 1, 12, 0))
    assert store.get_cursor(ACCOUNT) is None


def test_schema_is_at_head(store: Store) -> None:
    from syncd.store.migrate import head_revision

    assert store.ping()
    assert store.schema_revision() == head_revision() is not None


def test_sqlite_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.db"
    store = Store(f"sqlite:///{path}")
    try:
        store.migrate()
        seed(store, 1)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = path.with_name("state.db-wal")
        if wal.exists():  # SQLite gives its side files the database file's mode
            assert stat.S_IMODE(wal.stat().st_mode) & 0o077 == 0
    finally:
        store.close()

    path.chmod(0o644)
    Store(f"sqlite:///{path}").close()  # an existing file is tightened, not left readable
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- fenced claims and in-doubt deliveries, on every backend ---------------------------------


def test_a_taken_over_claim_can_neither_mark_renew_nor_record(store: Store) -> None:
    seed(store, 2)
    clock = LeaseClock(store)
    mine = store.claim("crm", 10, "w1", 60, now=T0)
    ids = [c.delivery_id for c in mine]
    token = mine[0].token
    assert store.renew(ids, token=token, lease_seconds=60, now=T0) == set(ids)
    marked = store.mark_in_doubt(
        {ids[0]: {"action": "create"}}, token=token, lease_seconds=60, now=T0
    )
    assert marked == {ids[0]}
    theirs = store.claim("crm", 1, "w2", 60, now=clock.at(61))  # the first one, lease gone
    assert [c.delivery_id for c in theirs] == [ids[0]]
    assert theirs[0].in_doubt
    assert theirs[0].intent == {"action": "create"}

    assert store.renew(ids, token=token, lease_seconds=60) == {ids[1]}
    assert store.mark_in_doubt({ids[0]: {}}, token=token, lease_seconds=60) == set()
    recorded = store.record(
        "crm",
        [done(c) for c in mine],
        worker="w1",
        token=token,
        cache_writes=[CacheWrite(EMAIL, "rec-1", "contact")],
    )

    assert recorded is False  # rejected as a whole: the one still held is not recorded either
    assert [(r.state, r.claimed_by) for r in rows(store)] == [
        ("in_flight", "w2"),
        ("in_flight", "w1"),
    ]
    assert store.cache_get("crm", [EMAIL]) == {}
    assert store.record("crm", [done(theirs[0])], worker="w2", token=theirs[0].token) is True
    row = one(store, ids[0])
    assert (row.state, row.in_doubt, row.intent) == ("done", False, None)


def test_a_hand_back_keeps_the_doubt(store: Store) -> None:
    seed(store, 1)
    [mine] = store.claim("crm", 10, "w1", 60, now=T0)
    store.mark_in_doubt({mine.delivery_id: {"action": "log"}}, token=mine.token, lease_seconds=60)

    store.release([mine.delivery_id], worker="w1", refund_attempt=True, token=mine.token)

    row = one(store, mine.delivery_id)
    assert (row.state, row.attempts, row.in_doubt, row.intent) == (
        "pending",
        0,
        True,
        {"action": "log"},
    )
    [again] = store.claim("crm", 10, "w2", 60, now=T0)
    assert (again.in_doubt, again.intent, again.attempts) == (True, {"action": "log"}, 1)


def test_the_birth_is_the_database_s_own_and_kept(store: Store) -> None:
    born = store.born_at()
    assert born.tzinfo is not None
    assert abs(born - datetime.now(UTC)) < timedelta(minutes=5)
    store.set_born_at(T0)
    assert Store(store.url).born_at() == T0


def test_only_done_settles_the_doubt(store: Store) -> None:
    seed(store, 2)
    a, b = store.claim("crm", 10, "w1", 60, now=T0)
    store.mark_in_doubt(
        {a.delivery_id: {"action": "create"}, b.delivery_id: {"action": "create"}},
        token=a.token,
        lease_seconds=60,
        now=T0,
    )
    store.record(
        "crm",
        [
            DeliveryResult(a.delivery_id, State.REVIEW, review_candidates=["c-1", "c-2"]),
            DeliveryResult(b.delivery_id, State.DEAD, error="INVALID"),
        ],
        worker="w1",
        token=a.token,
    )
    assert {(r.state, r.in_doubt, bool(r.intent)) for r in rows(store)} == {
        ("review", True, False),  # the operator decides afresh
        ("dead", True, True),  # a requeue sends the same plan again
    }

    assert store.resolve_review(a.delivery_id, record_id="c-1")
    assert store.retry_dead("crm") == 1
    again = store.claim("crm", 10, "w1", 60, now=T0)
    assert [c.in_doubt for c in again] == [True, True]  # requeued: still reconciled first

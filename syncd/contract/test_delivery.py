"""What every connector must get right inside the real delivery loop.

``deliver_target`` runs with a SQLite state store, the match cache and the planner, so these
tests check the connector where it meets them: ambiguous matches, a caller who calls again
before the CRM's search index shows the contact we made, a cached record deleted in the CRM.
"""

from __future__ import annotations

import pytest

from syncd.contract.harness import ACCOUNT, Crm, Recording, message
from syncd.models import KeyKind, MatchKey, activity_marker
from syncd.store.store import State

PAT_PHONE = MatchKey(KeyKind.PHONE, "+14153927461")


def seed_twins(crm: Crm) -> set[str]:
    """Two equally good candidates: same name, same number in two spellings."""
    return {
        crm.emulator.seed_contact(first_name="Pat", last_name="Lee", phone="(415) 392-7461"),
        crm.emulator.seed_contact(first_name="Pat", last_name="Lee", phone="415.392.7461"),
    }


# -- 7. ambiguity -------------------------------------------------------------------------


def test_lookup_returns_every_contact_sharing_a_phone(crm: Crm) -> None:
    twins = seed_twins(crm)

    found = crm.connector.lookup([PAT_PHONE])

    assert {r.id for r in found[PAT_PHONE]} == twins


def test_ambiguous_match_goes_to_review_and_writes_nothing(crm: Crm) -> None:
    twins = seed_twins(crm)
    writes = crm.emulator.write_requests()
    msg = message(first_name="Pat", last_name="Lee", phone="+1 415 392 7461")

    stats = crm.deliver([msg], on_ambiguity="review")

    row = crm.delivery(msg.message_id)
    assert (row.state, stats.review) == (State.REVIEW, 1)
    assert set(row.review_candidates) == twins
    assert crm.emulator.write_requests() == writes
    assert crm.activities(activity_marker(ACCOUNT, msg.message_id)) == []


def test_best_attaches_to_one_candidate_and_records_the_others(crm: Crm) -> None:
    twins = seed_twins(crm)
    recording = Recording(crm.connector)
    msg = message(first_name="Pat", last_name="Lee", phone="+1 415 392 7461")

    stats = crm.deliver([msg], on_ambiguity="best", connector=recording)

    row = crm.delivery(msg.message_id)
    assert (row.state, stats.done) == (State.DONE, 1), row.last_error
    assert row.record_id in twins
    [plan] = recording.plans
    others = sorted(twins - {row.record_id})
    assert (plan.record_id, plan.alternatives) == (row.record_id, tuple(others))
    assert row.review_candidates == others  # recorded, and listed by `syncd status`
    assert [p["passed_over"] for p in crm.store.passed_over()] == [others]
    logged = crm.activities(activity_marker(ACCOUNT, msg.message_id))
    assert [a.record_id for a in logged] == [row.record_id]
    assert {c.id for c in crm.emulator.contacts()} == twins


def test_caller_known_by_company_and_name_only_is_matched_not_duplicated(crm: Crm) -> None:
    """No phone, no email: the planner's company-and-name rule needs the COMPANY key to
    bring back the contacts at that company."""
    company = crm.emulator.seed_company("Globex")
    sam = crm.emulator.seed_contact(
        first_name="Sam", last_name="Hill", company="Globex", company_id=company
    )
    msg = message(first_name="Sam", last_name="Hill", company="Globex Corporation")

    stats = crm.deliver([msg])

    row = crm.delivery(msg.message_id)
    assert (row.state, stats.done) == (State.DONE, 1), row.last_error
    assert row.record_id == sam
    assert [c.id for c in crm.emulator.contacts()] == [sam]


# -- 8. the same new caller, faster than search -------------------------------------------


@pytest.mark.parametrize(("batch_size", "batches"), [(1, 3), (10, 1)], ids=["3-batches", "1-batch"])
def test_same_new_caller_three_times_is_one_contact(
    crm: Crm, batch_size: int, batches: int
) -> None:
    spellings = ["(617) 253-1000", "+1 617 253 1000", "617.253.1000"]
    calls = [
        message(first_name="Nia", last_name="Park", phone=phone, content=f"Call number {i}.")
        for i, phone in enumerate(spellings, 1)
    ]

    stats = crm.deliver(calls, batch_size=batch_size)

    assert (stats.batches, stats.done, stats.failed) == (batches, 3, 0)
    contacts = crm.emulator.contacts()
    assert len(contacts) == 1, contacts
    markers = {activity_marker(ACCOUNT, m.message_id) for m in calls}
    logged = [a for a in crm.emulator.activities() if a.marker in markers]
    assert sorted(str(a.marker) for a in logged) == sorted(markers)
    assert {a.record_id for a in logged} == {contacts[0].id}
    assert {crm.delivery(m.message_id).record_id for m in calls} == {contacts[0].id}


def test_same_new_caller_in_batches_in_flight_together_is_one_contact(crm: Crm) -> None:
    """Three batches in flight at once (a connector that is not ``thread_safe`` gets them
    one at a time): the caller's three calls still make one contact, the others one each."""
    spellings = ["(617) 253-1000", "+1 617 253 1000", "617.253.1000"]
    calls = [
        message(first_name="Nia", last_name="Park", phone=phone, content=f"Call number {i}.")
        for i, phone in enumerate(spellings, 1)
    ]
    others = [
        message(first_name=f"Caller{i}", last_name="Lee", phone=f"+1 617 253 20{i:02d}")
        for i in range(6)
    ]

    stats = crm.deliver([*calls, *others], batch_size=3, concurrency=3)

    assert (stats.done, stats.failed) == (9, 0)
    contacts = crm.emulator.contacts()
    assert len(contacts) == 7, contacts
    assert len({crm.delivery(m.message_id).record_id for m in calls}) == 1


# -- 11. a cached record deleted in the CRM -----------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "",  # the cache knows every field: the connector must report the record gone
        "rae@quinn.example",  # something new to write: read() must omit the deleted record
    ],
    ids=["log-on-cached", "read-cached"],
)
def test_cached_record_deleted_in_the_crm_is_replaced(crm: Crm, email: str) -> None:
    key = MatchKey(KeyKind.PHONE, "+12129731234")
    first = message(first_name="Rae", last_name="Quinn", phone="(212) 973-1234", content="Hi.")
    crm.deliver([first])
    old = crm.delivery(first.message_id).record_id
    assert old
    assert crm.store.cache_get(crm.type, [key])[key].record_id == old

    crm.emulator.delete_record(old)
    second = message(
        first_name="Rae", last_name="Quinn", phone="212-973-1234", email=email, content="Again."
    )
    recording = Recording(crm.connector)
    stats = crm.deliver([second], connector=recording)

    row = crm.delivery(second.message_id)
    assert (row.state, stats.dead) == (State.DONE, 0), row.last_error
    assert row.record_id
    assert row.record_id != old
    assert crm.contact(row.record_id).last_name == "Quinn"
    logged = crm.activities(activity_marker(ACCOUNT, second.message_id))
    assert [a.record_id for a in logged] == [row.record_id]
    assert crm.store.cache_get(crm.type, [key])[key].record_id == row.record_id
    assert crm.store.counts()[crm.type][State.DEAD] == 0
    # Which road it took: a plan on the deleted record (and an Outcome naming it gone), or
    # none at all because read() reported it missing first.
    on_old = [p for p in recording.plans if p.record_id == old]
    assert len(on_old) == (0 if email else 1), recording.plans

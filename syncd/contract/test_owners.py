"""Owner rules on every connector with an emulator: each rule and each fall-through, judged by
what the emulator holds (the owner on each activity, emergency task and new record).

The emulators' users are the sandbox team (syncd/sandbox/team.py): Ana, Ben, Chloe, Dev, the
office manager, and Carl, who has left (an archived HubSpot owner, an inactive Salesforce User).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncd.config import DaemonSettings
from syncd.connector import ListsOwners
from syncd.contract.harness import ACCOUNT, Crm, message
from syncd.deliver import DeliveryStats, deliver_target
from syncd.models import Message, activity_marker
from syncd.owners import parse_owner_settings
from syncd.sandbox.team import SeedsOwners
from syncd.store.owners import owner_summary

OWNERS: dict[str, Any] = {
    "owners": {"Front desk": "office@example.com", "Sales line": "carl.former@example.com"},
    "owner_round_robin": [
        "ana.lopez@example.com",
        "carl.former@example.com",  # has left: skipped
        "ben.okafor@example.com",
        "dev.patel@example.com",
    ],
    "default_owner": "office@example.com",
    "owner_on_new_records": True,
}


@pytest.fixture
def owned(crm: Crm) -> Crm:
    if not isinstance(crm.connector, ListsOwners):
        pytest.skip(f"{crm.type} does not list CRM users (ListsOwners is optional)")
    if not isinstance(crm.emulator, SeedsOwners):
        pytest.skip(f"the {crm.type} emulator has no users to arrange")
    return crm


def _emu(crm: Crm) -> SeedsOwners:
    assert isinstance(crm.emulator, SeedsOwners)
    return crm.emulator


def _id(crm: Crm, email: str) -> str:
    return _emu(crm).owner_ids()[email]


def _to(msg: Message, delivered_to: str) -> Message:
    return replace(msg, delivered_to=delivered_to)


def _deliver(
    crm: Crm,
    batch: list[Message],
    table: dict[str, Any] | None = None,
    *,
    at: datetime | None = None,
) -> DeliveryStats:
    crm.store.ingest(ACCOUNT, batch, [crm.type])
    target = replace(crm.target(), owners=parse_owner_settings(table or OWNERS, "targets.t"))
    daemon = DaemonSettings(
        database_url=crm.store.url, retry_base_seconds=1.0, worker_id="contract"
    )
    moment = at or datetime.now(UTC)
    return deliver_target(
        crm.store, crm.connector, target, daemon, regions={ACCOUNT: "US"}, clock=lambda: moment
    )


def _activity_owners(crm: Crm, msg: Message) -> list[str | None]:
    """The owner of every activity and task the emulator holds for ``msg``."""
    found = crm.activities(activity_marker(msg.account, msg.message_id))
    assert found, f"no activity for {msg.message_id} in the {crm.type} emulator"
    return [_emu(crm).owner_of(a.id) for a in found]


def _record_of(crm: Crm, msg: Message) -> str:
    record_id = crm.delivery(msg.message_id).record_id
    assert record_id
    return str(record_id)


def _known(crm: Crm, phone: str, owner_email: str) -> str:
    record_id = crm.emulator.seed_contact(first_name="Kim", last_name="Known", phone=phone)
    _emu(crm).seed_owner(record_id, _id(crm, owner_email))
    return record_id


def test_the_records_active_owner_comes_first(owned: Crm) -> None:
    record = _known(owned, "+1 415 555 0101", "ben.okafor@example.com")
    msg = _to(message(first_name="Kim", last_name="Known", phone="(415) 555-0101",
                      emergency=True), "Front desk")  # fmt: skip
    stats = _deliver(owned, [msg])
    assert stats.done == 1
    assert _record_of(owned, msg) == record
    ben = _id(owned, "ben.okafor@example.com")
    owners = _activity_owners(owned, msg)
    assert owners == [ben] * len(owners)
    assert any(a.high_priority for a in owned.activities(activity_marker(ACCOUNT, msg.message_id)))
    assert owner_summary(owned.store)[owned.type]["by_rule"] == {"record": 1}


def test_an_inactive_record_owner_falls_through_to_the_mapping(owned: Crm) -> None:
    _known(owned, "+1 415 555 0102", "carl.former@example.com")
    msg = _to(message(first_name="Kim", last_name="Known", phone="(415) 555-0102",
                      emergency=True), "Front desk")  # fmt: skip
    _deliver(owned, [msg])
    office = _id(owned, "office@example.com")
    owners = _activity_owners(owned, msg)
    assert owners == [office] * len(owners)
    assert owner_summary(owned.store)[owned.type]["fell_back"] == []  # mapped: no fall-back
    assert owner_summary(owned.store)[owned.type]["by_rule"] == {"mapping": 1}


def test_a_mapped_name_owns_a_new_callers_contact_and_activity(owned: Crm) -> None:
    msg = _to(message(first_name="Noor", last_name="New", phone="(415) 555-0103"), "front DESK")
    _deliver(owned, [msg])
    office = _id(owned, "office@example.com")
    assert _activity_owners(owned, msg) == [office]
    assert _emu(owned).owner_of(_record_of(owned, msg)) == office


def test_an_exact_user_name_matches_and_a_near_one_does_not(owned: Crm) -> None:
    exact = _to(message(first_name="Ola", last_name="One", phone="(415) 555-0104"), "ana  LOPEZ")
    near = _to(message(first_name="Pia", last_name="Two", phone="(415) 555-0105"), "Anna Lopez")
    _deliver(owned, [exact, near], {**OWNERS, "owner_round_robin": []})
    assert _activity_owners(owned, exact) == [_id(owned, "ana.lopez@example.com")]
    assert _activity_owners(owned, near) == [_id(owned, "office@example.com")]  # default
    (fell,) = owner_summary(owned.store)[owned.type]["fell_back"]
    assert fell["message_id"] == near.message_id
    assert "name: no user is named 'Anna Lopez'" in fell["why"]


def test_new_callers_take_round_robin_turns_over_active_users(owned: Crm) -> None:
    batch = [
        _to(
            message(first_name=f"New{i}", last_name="Caller", phone=f"(415) 555-02{i:02d}"),
            "Dr. Rivera",
        )
        for i in range(4)
    ]
    _deliver(owned, batch)
    rotation = [_id(owned, f"{n}@example.com") for n in ("ana.lopez", "ben.okafor", "dev.patel")]
    got = [_activity_owners(owned, m) for m in batch]
    assert got == [[rotation[0]], [rotation[1]], [rotation[2]], [rotation[0]]]
    assert [_emu(owned).owner_of(_record_of(owned, m)) for m in batch] == [o[0] for o in got]
    assert owner_summary(owned.store)[owned.type]["by_rule"] == {"round_robin": 4}


def test_a_known_caller_for_nobody_goes_to_the_default_owner_with_why(owned: Crm) -> None:
    _known(owned, "+1 415 555 0106", "carl.former@example.com")
    msg = _to(message(first_name="Kim", last_name="Known", phone="(415) 555-0106",
                      emergency=True), "Sales line")  # fmt: skip
    _deliver(owned, [msg])
    office = _id(owned, "office@example.com")
    owners = _activity_owners(owned, msg)
    assert owners == [office] * len(owners)
    (fell,) = owner_summary(owned.store)[owned.type]["fell_back"]
    assert fell["rule"] == "default"
    for reason in (
        "record: record owner carl.former@example.com is inactive",
        "mapping: mapped user carl.former@example.com is inactive",
        "name: no user is named 'Sales line'",
        "round_robin: only for new records",
    ):
        assert reason in fell["why"]


def test_with_every_rule_spent_the_crm_default_stays_and_status_says_why(owned: Crm) -> None:
    table = {"owner_rules": ["mapping", "default"], "default_owner": "carl.former@example.com"}
    msg = _to(message(first_name="Uma", last_name="Unrouted", phone="(415) 555-0107"), "Nobody")
    stats = _deliver(owned, [msg], table)
    assert stats.done == 1  # no owner is no failure: the CRM's own default applies
    assert _id(owned, "carl.former@example.com") not in _activity_owners(owned, msg)
    (fell,) = owner_summary(owned.store)[owned.type]["fell_back"]
    assert fell["rule"] == "none"
    assert fell["why"] == (
        "mapping: no entry for 'Nobody'; default: default owner carl.former@example.com is inactive"
    )


def test_a_user_deactivated_after_the_list_was_read_costs_a_retry_not_a_message(
    owned: Crm,
) -> None:
    """The users are cached for an hour; the CRM refuses an owner deactivated meanwhile. The
    delivery is retried with the users read again and lands with the next rule's owner."""
    first = _to(message(first_name="Ann", last_name="One", phone="(415) 555-0108"), "Ana Lopez")
    _deliver(owned, [first])
    ana = _id(owned, "ana.lopez@example.com")
    assert _activity_owners(owned, first) == [ana]
    _emu(owned).set_user_active(ana, False)
    later = _to(message(first_name="Ann", last_name="One", phone="(415) 555-0108",
                        emergency=True), "Ana Lopez")  # fmt: skip
    now = datetime.now(UTC)
    refused = _deliver(owned, [later], at=now)
    assert refused.retry == 1
    assert refused.dead == 0
    assert owned.activities(activity_marker(ACCOUNT, later.message_id)) == []
    again = _deliver(owned, [], at=now + timedelta(minutes=5))
    assert again.done == 1
    office = _id(owned, "office@example.com")
    owners = _activity_owners(owned, later)
    assert owners == [office] * len(owners)  # every rule before the default named Ana

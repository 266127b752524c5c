"""The HubSpot connector against the HubSpot emulator, over loopback with the real client.

Request counts are read server-side from the emulator (``emulator.counts``), never from the
connector's own bookkeeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hubspot import HubSpot
from hubspot.crm.objects.exceptions import ApiException
from syncd_hubspot import HubSpotConnector, create
from syncd_hubspot.emulator.api import HubSpotEmulator

from syncd.connector import TargetContext, load_factory
from syncd.errors import AuthError, ConfigError, RateLimited, RetriableError
from syncd.models import Action, ActivitySpec, KeyKind, MatchKey, Message, Plan
from syncd.ratelimit import RateLimiter
from syncd.sandbox.crm import CrmEmulator, load_emulator
from syncd.sandbox.http import Faults

TARGET = "hubspot-test"
WHEN = datetime(2024, 5, 6, 14, 30, tzinfo=UTC)


class Recorder:
    """A RequestObserver that keeps what the connector reported."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, float]] = []

    def __call__(self, target: str, endpoint: str, status: int, waited: float) -> None:
        self.calls.append((target, endpoint, status, waited))


@pytest.fixture(scope="module")
def server() -> Iterator[HubSpotEmulator]:
    emu = HubSpotEmulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulator(server: HubSpotEmulator) -> HubSpotEmulator:
    server.reset()
    return server


def connect(
    emu: HubSpotEmulator, recorder: Recorder | None = None, **options: Any
) -> HubSpotConnector:
    context = TargetContext(
        name=TARGET,
        options={**emu.connector_options(), **options},
        observe=recorder or Recorder(),
    )
    connector = create(context)
    assert isinstance(connector, HubSpotConnector)
    return connector


def plan(
    n: int,
    *,
    action: Action = Action.CREATE,
    record_id: str | None = None,
    caller_key: str = "",
    fields: dict[str, str] | None = None,
    emergency: bool = False,
    existing_id: str | None = None,
    company_id: str | None = None,
    body: str = "Please call back",
) -> Plan:
    message = Message(account="acme", message_id=f"m{n}", created_at=WHEN, content=body)
    return Plan(
        delivery_id=n,
        message=message,
        action=action,
        record_id=record_id,
        caller_key=caller_key,
        fields=fields or {},
        company_id=company_id,
        activity=ActivitySpec(
            marker=f"syncd:acme:m{n}",
            subject=f"Message {n}",
            body=body,
            occurred_at=WHEN,
            emergency=emergency,
            existing_id=existing_id,
        ),
    )


def raw_client(emu: HubSpotEmulator, token: str | None = None) -> Any:
    return HubSpot(access_token=token or emu.token, host=emu.base_url)


# -- the emulator itself -----------------------------------------------------------------------


def test_emulator_is_registered_and_satisfies_the_protocol() -> None:
    emu = load_emulator("hubspot", search_lag=1.5)
    assert isinstance(emu, HubSpotEmulator)
    assert emu.search_lag == 1.5
    typed: CrmEmulator = emu  # mypy checks the Protocol statically
    with emu:  # isinstance reads base_url, which needs a running server
        assert isinstance(typed, CrmEmulator)
    assert load_factory("hubspot") is create


def test_emulator_calculates_searchable_phone_as_national_digits(emulator: HubSpotEmulator) -> None:
    uk = emulator.seed_contact(first_name="Uk", phone="+44 20 7946 0958")
    us = emulator.seed_contact(
        first_name="Us", phone="(207) 946-0958", mobile_phone="+1 415 555 0100"
    )
    records = {r["id"]: r for r in emulator.records("contacts")}
    # Both countries meet in the searchable property: the connector must tell them apart.
    assert records[uk]["hs_searchable_calculated_phone_number"] == "2079460958"
    assert records[us]["hs_searchable_calculated_phone_number"] == "2079460958"
    assert records[us]["hs_searchable_calculated_mobile_number"] == "4155550100"
    assert records[uk]["hs_calculated_phone_number"] == "+442079460958"
    assert records[us]["phone"] == "(207) 946-0958"  # stored as given


def _search(emu: HubSpotEmulator, groups: list[dict[str, Any]]) -> Any:
    api = raw_client(emu).crm.objects.search_api
    return api.do_search("contacts", {"filterGroups": groups, "limit": 10})


def _in(prop: str, n: int) -> dict[str, Any]:
    return {"propertyName": prop, "operator": "IN", "values": [f"{i:010d}" for i in range(n)]}


def _eq(prop: str, value: str = "x") -> dict[str, Any]:
    return {"propertyName": prop, "operator": "EQ", "value": value}


@pytest.mark.parametrize(
    ("groups", "words"),
    [
        ([{"filters": [_eq("email")]} for _ in range(6)], "filter groups"),
        ([{"filters": [_eq("email") for _ in range(11)]}], "filters in a filter group"),
        ([{"filters": [_eq("email") for _ in range(9)]} for _ in range(3)], "across all groups"),
        ([{"filters": [_in("phone", 101)]}], "Too many values"),
    ],
    ids=["6-groups", "11-filters-in-a-group", "27-filters", "101-in-values"],
)
def test_emulator_refuses_oversize_searches(
    emulator: HubSpotEmulator, groups: list[dict[str, Any]], words: str
) -> None:
    with pytest.raises(ApiException) as caught:
        _search(emulator, groups)
    assert caught.value.status == 400
    body = json.loads(caught.value.body)
    assert body["category"] == "VALIDATION_ERROR"
    assert words in body["message"]
    # The largest request within every limit is accepted.
    widest = [{"filters": [_in("phone", 100)] + [_eq("email")] * 4} for _ in range(5)]
    assert _search(emulator, widest).total == 0


def test_emulator_refuses_batches_over_100_and_upsert_by_phone(emulator: HubSpotEmulator) -> None:
    api = raw_client(emulator).crm.objects.batch_api
    with pytest.raises(ApiException) as caught:
        api.read("contacts", {"inputs": [{"id": str(i)} for i in range(101)], "properties": []})
    assert caught.value.status == 400
    with pytest.raises(ApiException) as caught:
        api.upsert("contacts", {"inputs": [{"idProperty": "phone", "id": "1", "properties": {}}]})
    assert caught.value.status == 400
    assert "not a unique property" in json.loads(caught.value.body)["message"]


def test_emulator_answers_a_bad_token_with_401(emulator: HubSpotEmulator) -> None:
    with pytest.raises(ApiException) as caught:
        _search_with(raw_client(emulator, token="wrong"))
    assert caught.value.status == 401
    assert json.loads(caught.value.body)["category"] == "INVALID_AUTHENTICATION"


def _search_with(client: Any) -> Any:
    return client.crm.objects.search_api.do_search("contacts", {"filterGroups": []})


def test_emulator_enforces_the_search_rate_limit() -> None:
    emu = HubSpotEmulator(search_rate_limit=(2, 60.0))
    with emu:
        client = raw_client(emu)
        _search_with(client)
        _search_with(client)
        with pytest.raises(ApiException) as caught:
            _search_with(client)
    assert caught.value.status == 429
    assert json.loads(caught.value.body)["policyName"] == "SECONDLY"
    # HubSpot documents its 429 without Retry-After: the connector must do without one.
    assert "Retry-After" not in caught.value.headers


# -- lookup ------------------------------------------------------------------------------------


def test_lookup_finds_a_phone_in_any_format_and_drops_other_countries(
    emulator: HubSpotEmulator,
) -> None:
    same = {
        emulator.seed_contact(first_name="A", phone="(207) 946-0958"),
        emulator.seed_contact(first_name="B", phone="+1 207.946.0958"),
        emulator.seed_contact(first_name="C", phone="2079460958"),
        emulator.seed_contact(first_name="D", mobile_phone="1-207-946-0958"),
    }
    uk = emulator.seed_contact(first_name="Uk", phone="+44 20 7946 0958")
    emulator.seed_contact(first_name="Other", phone="(207) 946-0959")
    key = MatchKey(KeyKind.PHONE, "+12079460958")

    found = connect(emulator).lookup([key])

    assert {r.id for r in found[key]} == same
    assert uk not in {r.id for r in found[key]}
    assert all(r.phones[0] == "+12079460958" for r in found[key])
    assert emulator.counts["contacts.search"] == 1


@pytest.mark.parametrize(
    ("stored", "e164"),
    [
        ("01174564243", "+441174564243"),  # as dialled in the UK
        ("441174564243", "+441174564243"),  # the "+" dropped
        ("089 9726173", "+49899726173"),
        ("49899726173", "+49899726173"),
        ("+44 117 456 4243", "+441174564243"),
    ],
)
def test_a_foreign_number_is_found_by_phone_alone_however_it_is_stored(
    emulator: HubSpotEmulator, stored: str, e164: str
) -> None:
    contact = emulator.seed_contact(first_name="Abroad", phone=stored)
    emulator.seed_contact(first_name="Other", phone="+1 312 555 0100")
    key = MatchKey(KeyKind.PHONE, e164)
    found = connect(emulator).lookup([key])
    assert [r.id for r in found[key]] == [contact]
    assert emulator.counts["contacts.search"] == 1


def test_lookup_returns_every_key_and_matches_email_company_and_name(
    emulator: HubSpotEmulator,
) -> None:
    company = emulator.seed_company("Acme Plumbing")
    person = emulator.seed_contact(
        first_name="Mary Ann", last_name="Smith", email="MA@Example.com", company="Acme Plumbing"
    )
    keys = [
        MatchKey(KeyKind.EMAIL, "ma@example.com"),
        MatchKey(KeyKind.COMPANY, "acme plumbing"),
        MatchKey(KeyKind.NAME, "mary ann smith"),
        MatchKey(KeyKind.PHONE, "+13125550100"),
        MatchKey(KeyKind.EMAIL, "nobody@example.com"),
    ]
    found = connect(emulator).lookup(keys)
    assert set(found) == set(keys)
    assert [r.id for r in found[keys[0]]] == [person]
    assert {(r.kind, r.id) for r in found[keys[1]]} == {("contact", person), ("company", company)}
    assert [r.id for r in found[keys[2]]] == [person]
    assert found[keys[3]] == []
    assert found[keys[4]] == []


def test_lookup_packs_250_phone_keys_into_three_searches(emulator: HubSpotEmulator) -> None:
    numbers = [f"+1312555{i:04d}" for i in range(250)]
    seeded = {
        numbers[7]: emulator.seed_contact(phone=f"(312) 555-{7:04d}"),
        numbers[180]: emulator.seed_contact(mobile_phone=f"312.555.{180:04d}"),
        numbers[249]: emulator.seed_contact(phone=f"+1 312 555 {249:04d}"),
    }
    keys = [MatchKey(KeyKind.PHONE, n) for n in numbers]

    found = connect(emulator).lookup(keys)

    # Each key asks for its national digits and, as a number stored without "+" may keep
    # them, its digits with the country code: 500 values in IN lists of 100.
    assert emulator.counts["contacts.search"] <= 4
    assert emulator.statuses[400] == 0
    assert {k.value: [r.id for r in v] for k, v in found.items() if v} == {
        n: [i] for n, i in seeded.items()
    }


def test_lookup_pages_through_results(emulator: HubSpotEmulator) -> None:
    ids = {emulator.seed_contact(first_name=f"P{i}", company="Big Co") for i in range(450)}
    key = MatchKey(KeyKind.COMPANY, "big co")
    found = connect(emulator).lookup([key])
    assert {r.id for r in found[key]} == ids
    assert emulator.counts["contacts.search"] == 3  # 200 + 200 + 50


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_company_keys_are_answered_from_the_listed_directory(emulator: HubSpotEmulator) -> None:
    acme = emulator.seed_company("Acme Plumbing, LLC")
    for i in range(150):  # two list pages
        emulator.seed_company(f"Bystander {i} Inc")
    clock = Clock()
    context = TargetContext(name=TARGET, options=emulator.connector_options(), observe=Recorder())
    connector = HubSpotConnector(context, clock=clock)
    key = MatchKey(KeyKind.COMPANY, "acme plumbing")

    first = connector.lookup([key])
    again = connector.lookup([MatchKey(KeyKind.COMPANY, "acme plumbing")])

    assert [(r.kind, r.id) for r in first[key] if r.kind == "company"] == [("company", acme)]
    assert [r.id for r in again[key] if r.kind == "company"] == [acme]
    assert emulator.counts["companies.list"] == 2  # once, not once per lookup
    assert emulator.counts["companies.search"] == 0

    initech = emulator.seed_company("Initech")
    other = MatchKey(KeyKind.COMPANY, "initech")
    assert [r for r in connector.lookup([other])[other] if r.kind == "company"] == []
    clock.now += connector.options.company_directory_refresh
    assert [r.id for r in connector.lookup([other])[other] if r.kind == "company"] == [initech]
    assert emulator.counts["companies.list"] == 4


def test_a_portal_with_too_many_companies_searches_them(emulator: HubSpotEmulator) -> None:
    acme = emulator.seed_company("Acme Plumbing")
    for i in range(3):
        emulator.seed_company(f"Bystander {i}")
    connector = connect(emulator, company_directory_max=2)
    key = MatchKey(KeyKind.COMPANY, "acme plumbing")

    for _ in range(2):
        assert [r.id for r in connector.lookup([key])[key] if r.kind == "company"] == [acme]

    assert emulator.counts["companies.list"] == 1  # it stopped listing at the cap, for good
    assert emulator.counts["companies.search"] == 2


def test_a_company_word_is_searched_once_and_own_creates_join_it(
    emulator: HubSpotEmulator,
) -> None:
    emulator.search_lag = 30.0  # nothing written from here on shows in search
    emulator.seed_contact(
        first_name="Sam", last_name="Hill", company="Acme Plumbing"
    )  # seen at once
    clock = Clock()
    context = TargetContext(name=TARGET, options=emulator.connector_options(), observe=Recorder())
    connector = HubSpotConnector(context, clock=clock)
    key = MatchKey(KeyKind.COMPANY, "acme plumbing")

    assert [r.first_name for r in connector.lookup([key])[key]] == ["Sam"]
    connector.apply(
        [plan(1, caller_key="k", fields={"first_name": "Jo", "company": "Acme Plumbing"})]
    )
    again = connector.lookup([key])[key]

    assert sorted(r.first_name for r in again) == ["Jo", "Sam"]  # Jo despite the index lag
    assert emulator.counts["contacts.search"] == 1
    clock.now += connector.options.colleague_memo_ttl
    connector.lookup([key])
    assert emulator.counts["contacts.search"] == 2


def test_read_returns_present_ids_only(emulator: HubSpotEmulator) -> None:
    alive = emulator.seed_contact(first_name="Al", email="al@example.com", phone="312-555-0100")
    dead = emulator.seed_contact(first_name="Gone")
    emulator.delete_record(dead)
    records = connect(emulator).read("contact", [alive, dead])
    assert list(records) == [alive]
    assert records[alive].phones == ("+13125550100",)
    assert records[alive].fields["phone"] == "312-555-0100"


# -- apply -------------------------------------------------------------------------------------


def test_one_new_caller_with_three_messages_is_one_contact_with_three_notes(
    emulator: HubSpotEmulator,
) -> None:
    fields = {"first_name": "Pat", "last_name": "Doe", "phone": "+13125550199"}
    plans = [plan(n, caller_key="phone:+13125550199", fields=fields) for n in (1, 2, 3)]

    outcomes = connect(emulator).apply(plans)

    contacts = emulator.contacts()
    assert len(contacts) == 1
    contact = contacts[0]
    assert (contact.first_name, contact.last_name, contact.phone) == ("Pat", "Doe", "+13125550199")
    assert [o.ok for o in outcomes] == [True, True, True]
    assert {o.record_id for o in outcomes} == {contact.id}
    assert all(o.created for o in outcomes)
    notes = emulator.activities()
    assert sorted(a.marker or "" for a in notes) == [p.activity.marker for p in plans]
    assert {a.record_id for a in notes} == {contact.id}
    assert sorted(o.activity_id or "" for o in outcomes) == sorted(a.id for a in notes)
    assert emulator.counts["contacts.batch_upsert"] == 1
    assert emulator.counts["notes.batch_create"] == 1


def test_applying_the_same_creates_twice_makes_nothing_twice(emulator: HubSpotEmulator) -> None:
    plans = [
        plan(n, caller_key="email:x@example.com", fields={"email": "X@example.com"}) for n in (1, 2)
    ]
    connector = connect(emulator)
    first = connector.apply(plans)
    # A crash before the outcomes were stored: the daemon hands the batch back in doubt.
    emulator.reset_counts()
    writes = emulator.write_requests()
    second = connector.apply([replace(p, in_doubt=True) for p in plans])

    assert len(emulator.contacts()) == 1
    assert len(emulator.activities()) == 2
    assert [o.ok for o in second] == [True, True]
    assert [o.reconciled for o in second] == [True, True]
    assert [o.record_id for o in second] == [o.record_id for o in first]
    assert [o.activity_id for o in second] == [o.activity_id for o in first]
    assert not any(o.created for o in second)
    # The cost of reconciling a batch: contacts by caller key and by email (an earlier
    # attempt may have logged on the email's holder), their notes, the notes' markers.
    assert emulator.counts == {
        "contacts.batch_read": 2,
        "associations.batch_read": 1,
        "notes.batch_read": 1,
    }
    assert emulator.write_requests() == writes


def test_create_without_caller_key_property_uses_batch_create(emulator: HubSpotEmulator) -> None:
    outcomes = connect(emulator, caller_key_property="").apply(
        [
            plan(1, caller_key="k1", fields={"first_name": "A"}),
            plan(2, caller_key="k2", fields={"first_name": "B"}),
        ]
    )
    assert emulator.counts["contacts.batch_create"] == 1
    assert emulator.counts["contacts.batch_upsert"] == 0
    names = {c.id: c.first_name for c in emulator.contacts()}
    assert [names[o.record_id or ""] for o in outcomes] == ["A", "B"]


def test_new_contact_is_associated_to_its_company(emulator: HubSpotEmulator) -> None:
    company = emulator.seed_company("Acme")
    outcome = connect(emulator).apply(
        [plan(1, caller_key="c", fields={"company": "Acme"}, company_id=company)]
    )[0]
    assert outcome.ok
    assert emulator.associated(outcome.record_id or "", "companies") == [company]
    assert emulator.contacts()[0].company_id == company
    # Linked by the contact's own associatedcompanyid, in the upsert.
    assert emulator.counts["contacts.batch_upsert"] == 1
    assert emulator.counts["associations.batch_create"] == 0


def test_a_company_deleted_since_listing_is_reported_gone_not_failed(
    emulator: HubSpotEmulator,
) -> None:
    alive = emulator.seed_company("Acme")
    gone = emulator.seed_company("Globex")
    emulator.delete_record(gone)
    outcomes = connect(emulator).apply(
        [
            plan(1, caller_key="a", fields={"company": "Acme"}, company_id=alive),
            plan(2, caller_key="g", fields={"company": "Globex"}, company_id=gone),
        ]
    )
    assert [o.ok for o in outcomes] == [True, True]
    assert outcomes[1].gone == (gone,)
    contacts = {c.id: c.company_id for c in emulator.contacts()}
    assert contacts == {outcomes[0].record_id: alive, outcomes[1].record_id: None}


def test_a_read_only_company_id_falls_back_to_the_associations_api(
    emulator: HubSpotEmulator,
) -> None:
    emulator.company_id_writable = False
    company = emulator.seed_company("Acme")
    connector = connect(emulator)
    for n in (1, 2):
        outcome = connector.apply(
            [plan(n, caller_key=f"c{n}", fields={"company": "Acme"}, company_id=company)]
        )[0]
        assert outcome.ok
        assert emulator.associated(outcome.record_id or "", "companies") == [company]
    assert emulator.statuses[400] == 1  # refused once; the connector remembers
    assert emulator.counts["associations.batch_create"] == 2


def test_an_email_that_exists_already_logs_on_that_contact(emulator: HubSpotEmulator) -> None:
    existing = emulator.seed_contact(first_name="Old", email="dup@example.com")
    outcome = connect(emulator).apply(
        [plan(1, caller_key="k", fields={"email": "dup@example.com"})]
    )[0]
    assert outcome.ok
    assert outcome.record_id == existing
    assert not outcome.created
    assert len(emulator.contacts()) == 1


def test_update_writes_only_the_given_fields(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(
        first_name="Lee", last_name="Chan", email="lee@example.com", phone="312-555-0123"
    )
    outcome = connect(emulator).apply(
        [
            plan(
                1,
                action=Action.UPDATE,
                record_id=contact,
                fields={"company": "Chan & Co", "first_name": ""},  # a blank never blanks
            )
        ]
    )[0]
    assert outcome.ok
    assert outcome.updated
    assert not outcome.created
    (stored,) = emulator.contacts()
    assert (stored.first_name, stored.last_name, stored.email, stored.phone, stored.company) == (
        "Lee",
        "Chan",
        "lee@example.com",
        "312-555-0123",
        "Chan & Co",
    )


def test_an_update_with_an_email_another_contact_holds_keeps_the_rest(
    emulator: HubSpotEmulator,
) -> None:
    emulator.seed_contact(first_name="Owner", email="taken@example.com")
    caller = emulator.seed_contact(first_name="Caller")
    outcome = connect(emulator).apply(
        [
            plan(
                1,
                action=Action.UPDATE,
                record_id=caller,
                fields={"email": "taken@example.com", "phone": "+13125550100"},
            )
        ]
    )[0]
    assert outcome.ok, outcome.error
    stored = {c.id: c for c in emulator.contacts()}[caller]
    assert (stored.email, stored.phone) == ("", "+13125550100")
    assert outcome.activity_id is not None


def test_a_log_plan_writes_no_contact(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(first_name="Lo")
    outcome = connect(emulator).apply([plan(1, action=Action.LOG, record_id=contact)])[0]
    assert outcome.ok
    assert not outcome.created
    assert not outcome.updated
    assert emulator.counts["contacts.batch_update"] == 0
    assert emulator.activities()[0].record_id == contact


def test_emergency_creates_a_high_priority_task(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(first_name="Em")
    owner = emulator.owner_ids()["ana.lopez@example.com"]  # HubSpot refuses an unknown owner
    outcome = connect(emulator, task_owner_id=owner).apply(
        [
            plan(1, action=Action.LOG, record_id=contact, emergency=True),
            plan(2, action=Action.LOG, record_id=contact),
        ]
    )
    assert all(o.ok for o in outcome)
    (task,) = emulator.records("tasks")
    assert task["hs_task_priority"] == "HIGH"
    assert task["hubspot_owner_id"] == owner
    assert task["hs_task_subject"] == "Emergency: Message 1"
    assert emulator.associated(task["id"], "contacts") == [contact]
    assert len(emulator.records("notes")) == 2


def test_emergency_task_can_be_switched_off(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(first_name="Em")
    connect(emulator, emergency_task=False).apply(
        [plan(1, action=Action.LOG, record_id=contact, emergency=True)]
    )
    assert emulator.records("tasks") == []


def test_activity_as_call(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(first_name="Cal")
    outcome = connect(emulator, activity="call").apply(
        [plan(1, action=Action.LOG, record_id=contact)]
    )[0]
    (call,) = emulator.records("calls")
    assert outcome.activity_id == call["id"]
    assert (call["hs_call_direction"], call["hs_call_status"]) == ("INBOUND", "COMPLETED")
    assert call["hs_call_title"] == "Message 1"
    assert emulator.associated(call["id"], "contacts") == [contact]


def test_caller_text_is_escaped_in_the_note(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(first_name="X")
    connect(emulator).apply(
        [plan(1, action=Action.LOG, record_id=contact, body="<script>x</script>\nok")]
    )
    (note,) = emulator.records("notes")
    assert "<script>" not in note["hs_note_body"]
    assert "&lt;script&gt;x&lt;/script&gt;<br>ok" in note["hs_note_body"]


def test_a_changed_message_updates_its_activity_in_place(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(first_name="Up")
    connector = connect(emulator)
    first = connector.apply([plan(1, action=Action.LOG, record_id=contact, body="v1")])[0]
    second = connector.apply(
        [plan(1, action=Action.LOG, record_id=contact, body="v2", existing_id=first.activity_id)]
    )[0]
    assert second.ok
    assert second.activity_id == first.activity_id
    (note,) = emulator.records("notes")
    assert "v2" in note["hs_note_body"]


def test_a_deleted_contact_is_reported_gone_and_fails_alone(emulator: HubSpotEmulator) -> None:
    alive = emulator.seed_contact(first_name="Alive")
    dead = emulator.seed_contact(first_name="Dead")
    emulator.delete_record(dead)
    plans = [plan(n, action=Action.LOG, record_id=alive if n % 2 else dead) for n in range(1, 7)]

    outcomes = connect(emulator).apply(plans)

    for o in outcomes:
        if o.delivery_id % 2:
            assert o.ok
            assert o.activity_id
        else:
            assert not o.ok
            assert o.gone == (dead,)
            assert o.retriable
    assert len(emulator.records("notes")) == 3
    # One refused batch, two reads that explain it, one resend: no bisecting.
    assert emulator.counts["notes.batch_create"] == 2
    assert emulator.counts["contacts.batch_read"] == 1


def test_an_update_of_a_deleted_contact_is_reported_gone(emulator: HubSpotEmulator) -> None:
    dead = emulator.seed_contact(first_name="Dead")
    emulator.delete_record(dead)
    outcome = connect(emulator).apply(
        [plan(1, action=Action.UPDATE, record_id=dead, fields={"company": "X"})]
    )[0]
    assert not outcome.ok
    assert outcome.gone == (dead,)
    assert emulator.records("notes") == []


def test_an_unknown_property_fails_only_its_own_plan(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(first_name="P")
    plans = [
        plan(
            n,
            action=Action.UPDATE,
            record_id=emulator.seed_contact(first_name=f"N{n}"),
            fields={"company": "C"},
        )
        for n in range(1, 4)
    ]
    plans.append(plan(9, action=Action.UPDATE, record_id=contact, fields={"no_such_property": "x"}))
    outcomes = connect(emulator).apply(plans)
    assert [o.ok for o in outcomes] == [True, True, True, False]
    assert "no_such_property" in (outcomes[3].error or "")
    assert not outcomes[3].retriable


# -- crash recovery ----------------------------------------------------------------------------


def test_an_in_doubt_batch_is_reconciled_at_once_despite_search_lag() -> None:
    emu = HubSpotEmulator(search_lag=30.0)
    with emu:
        connector = connect(emu)
        plans = [
            plan(n, caller_key="phone:+13125550142", fields={"phone": "+13125550142"})
            for n in range(1, 5)
        ]
        outcomes = connector.apply(plans)

        again = connector.apply([replace(p, in_doubt=True) for p in plans])

        # Search has not caught up (that is the lag); the associations read has.
        key = MatchKey(KeyKind.PHONE, "+13125550142")
        assert connector.lookup([key])[key] == []
        assert connector.find_activities([p.activity.marker for p in plans]) == {}
        assert len(emu.activities()) == 4
    assert all(o.reconciled for o in again)
    for o, a in zip(outcomes, again, strict=True):
        assert (a.activity_id, a.record_id) == (o.activity_id, o.record_id)


def test_find_activities_searches_the_marker_property_for_old_history() -> None:
    # Search lag 0: this test is about what find_activities asks, the lag is tested above.
    emu = HubSpotEmulator(search_lag=0.0)
    with emu:
        contact = emu.seed_contact(first_name="Old")
        connector = connect(emu)
        plans = [plan(n, action=Action.LOG, record_id=contact) for n in range(1, 4)]
        outcomes = connector.apply(plans)
        emu.reset_counts()
        found = connector.find_activities(
            [p.activity.marker for p in plans] + ["syncd:acme:m", "syncd:acme:never"]
        )
        assert emu.counts == {"notes.search": 1, "associations.batch_read": 1}
    assert set(found) == {p.activity.marker for p in plans}
    for o, p in zip(outcomes, plans, strict=True):
        assert (found[p.activity.marker].activity_id, found[p.activity.marker].record_id) == (
            o.activity_id,
            contact,
        )


def test_find_activities_falls_back_to_search_without_a_marker_property(
    emulator: HubSpotEmulator,
) -> None:
    emulator.search_lag = 0.0  # about the body search itself; lag is tested above
    contact = emulator.seed_contact(first_name="F")
    connector = connect(emulator, marker_property="")
    outcome = connector.apply([plan(1, action=Action.LOG, record_id=contact)])[0]
    found = connector.find_activities(["syncd:acme:m1", "syncd:acme:m2"])
    assert list(found) == ["syncd:acme:m1"]
    assert found["syncd:acme:m1"].activity_id == outcome.activity_id
    assert emulator.counts["notes.search"] == 1


# -- limits and failures -----------------------------------------------------------------------


def test_a_429_storm_still_delivers_every_plan_exactly_once(emulator: HubSpotEmulator) -> None:
    emulator.faults = Faults(rate_limit_ratio=0.33, retry_after=0.01, seed=20240506)
    known = emulator.seed_contact(first_name="Known")
    recorder = Recorder()
    plans = [
        plan(n, caller_key=f"k{n % 3}", fields={"first_name": f"New{n % 3}"}) for n in range(1, 7)
    ]
    plans += [
        plan(n, action=Action.UPDATE, record_id=known, fields={"company": "Q"})
        for n in range(7, 10)
    ]
    plans += [plan(n, action=Action.LOG, record_id=known, emergency=True) for n in range(10, 12)]

    outcomes = connect(emulator, recorder, max_retries=8).apply(plans)

    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok]
    assert emulator.faults.injected["429"] > 0
    assert any(status == 429 for *_, status, _ in recorder.calls)
    assert len(emulator.contacts()) == 4  # known + one per caller key
    markers = [a.marker or "" for a in emulator.activities() if not a.high_priority]
    assert sorted(markers) == sorted(p.activity.marker for p in plans)
    assert len(emulator.records("tasks")) == 2


def test_a_daily_limit_stops_at_once(emulator: HubSpotEmulator) -> None:
    emulator.daily_limit_reached = True
    with pytest.raises(RateLimited) as caught:
        connect(emulator).lookup([MatchKey(KeyKind.EMAIL, "a@example.com")])
    assert caught.value.daily
    assert emulator.counts["contacts.search"] == 1


def test_exhausted_retries_raise_rate_limited(emulator: HubSpotEmulator) -> None:
    emulator.faults = Faults(rate_limit_ratio=1.0, retry_after=0.001)
    with pytest.raises(RateLimited) as caught:
        connect(emulator, max_retries=2).lookup([MatchKey(KeyKind.EMAIL, "a@example.com")])
    assert caught.value.policy == "TEN_SECONDLY_ROLLING"
    assert emulator.counts["contacts.search"] == 3


def test_server_errors_are_retried(emulator: HubSpotEmulator) -> None:
    emulator.faults = Faults(error_ratio=0.5, seed=3)
    recorder = Recorder()
    contact = emulator.seed_contact(first_name="R")
    connector = HubSpotConnector(
        TargetContext(name=TARGET, options=emulator.connector_options(), observe=recorder),
        sleep=lambda s: None,
    )
    plans = [plan(n, action=Action.LOG, record_id=contact) for n in range(1, 4)]
    outcomes = connector.apply(plans)
    # Reads are retried; a 500 on a create is in doubt: read back, never resent at once.
    for _ in range(10):
        if all(o.ok for o in outcomes):
            break
        assert all(o.ok or o.retriable for o in outcomes), [o.error for o in outcomes]
        outcomes = connector.apply([replace(p, in_doubt=True) for p in plans])
    assert all(o.ok for o in outcomes)
    assert any(status == 500 for *_, status, _ in recorder.calls)
    assert sorted(a.marker or "" for a in emulator.activities()) == [
        f"syncd:acme:m{n}" for n in range(1, 4)
    ]


def test_an_outage_after_contacts_were_written_keeps_their_ids(emulator: HubSpotEmulator) -> None:
    tripped: list[bool] = []

    def outage_after_upsert(target: str, endpoint: str, status: int, waited: float) -> None:
        if endpoint == "contacts.batch_upsert" and status == 200 and not tripped:
            tripped.append(True)
            emulator.faults.outage(60.0)

    context = TargetContext(
        name=TARGET,
        options={**emulator.connector_options(), "max_retries": 1},
        observe=outage_after_upsert,
    )
    connector = HubSpotConnector(context, sleep=lambda s: None)
    plans = [plan(n, caller_key="k", fields={"first_name": "Out"}) for n in (1, 2)]

    interrupted = connector.apply(plans)

    (contact,) = emulator.contacts()
    assert [o.record_id for o in interrupted] == [contact.id, contact.id]
    assert all(o.created and not o.ok and o.retriable for o in interrupted)
    assert emulator.counts["notes.batch_create"] == 1  # a create in doubt is never resent blind
    emulator.faults.clear()
    again = connector.apply(plans)
    assert all(o.ok and not o.created for o in again)
    assert len(emulator.contacts()) == 1
    assert len(emulator.activities()) == 2


def test_nothing_written_means_the_error_is_raised(emulator: HubSpotEmulator) -> None:
    emulator.faults.outage(60.0)
    connector = HubSpotConnector(
        TargetContext(name=TARGET, options={**emulator.connector_options(), "max_retries": 1}),
        sleep=lambda s: None,
    )
    with pytest.raises(RetriableError):
        connector.apply([plan(1, caller_key="k")])


def test_an_unreachable_host_is_retriable() -> None:
    recorder = Recorder()
    connector = HubSpotConnector(
        TargetContext(
            name=TARGET,
            options={"access_token": "t", "host": "http://127.0.0.1:9", "max_retries": 1},
            observe=recorder,
        ),
        sleep=lambda s: None,
    )
    with pytest.raises(RetriableError):
        connector.read("contact", ["1"])
    assert [status for *_, status, _ in recorder.calls] == [0, 0]


def test_bad_token_raises_auth_error_without_the_token(emulator: HubSpotEmulator) -> None:
    recorder = Recorder()
    connector = connect(emulator, recorder, access_token="pat-na1-not-the-real-one")
    with pytest.raises(AuthError) as caught:
        connector.lookup([MatchKey(KeyKind.EMAIL, "a@example.com")])
    assert caught.value.where == TARGET
    assert "pat-na1-not-the-real-one" not in str(caught.value)
    assert recorder.calls == [(TARGET, "contacts.search", 401, 0.0)]
    with pytest.raises(AuthError):
        connector.apply([plan(1, caller_key="k")])


def test_check_reports_token_and_properties(emulator: HubSpotEmulator) -> None:
    lines = connect(emulator, contact_fields={"Account no": "account_number"}).check()
    by_name = {line.name: line for line in lines}
    assert by_name["access token"].ok
    assert by_name["property contacts.syncd_key"].ok
    assert by_name["property notes.syncd_marker"].ok, by_name["property notes.syncd_marker"]
    assert by_name["property tasks.syncd_marker"].ok
    assert not by_name["property contacts.account_number"].ok
    assert "missing" in by_name["property contacts.account_number"].detail

    emulator.remove_property("notes", "syncd_marker")
    lines = connect(emulator).check()
    assert [line.name for line in lines if not line.ok] == ["property notes.syncd_marker"]


def test_check_with_a_bad_token(emulator: HubSpotEmulator) -> None:
    lines = connect(emulator, access_token="bad-secret-value").check()
    assert len(lines) == 1
    assert not lines[0].ok
    assert "bad-secret-value" not in lines[0].detail


def test_every_request_is_observed(emulator: HubSpotEmulator) -> None:
    recorder = Recorder()
    connector = connect(emulator, recorder)
    connector.apply([plan(1, caller_key="k", fields={"first_name": "O"})])
    connector.lookup([MatchKey(KeyKind.EMAIL, "o@example.com")])
    assert len(recorder.calls) == emulator.total_requests
    assert {endpoint for _, endpoint, _, _ in recorder.calls} == set(emulator.counts)
    assert all(target == TARGET for target, *_ in recorder.calls)


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "access_token_env"),
        ({"access_token": "t", "activity": "email"}, "activity"),
        ({"access_token": "t", "marker_property": "Not A Name"}, "marker_property"),
        ({"access_token": "t", "rate_limit": {"calls": 0}}, "rate_limit.calls"),
        ({"access_token": "t", "rate_limit": {"calls": 10, "burst": 2}}, "rate_limit.burst"),
        ({"access_token": "t", "emergency_task": "yes"}, "emergency_task"),
        ({"access_token": "t", "timeout": True}, "timeout"),
        ({"access_token": "t", "marker_propery": "x"}, "marker_propery"),
        ({"access_token_env": "SYNCD_TEST_UNSET_VARIABLE_X"}, "access_token_env"),
    ],
)
def test_bad_options_name_their_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create(TargetContext(name="crm", options=options))
    assert caught.value.key == f"targets.crm.{key}"


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_TEST_HUBSPOT_TOKEN", "from-env")
    connector = create(
        TargetContext(name="crm", options={"access_token_env": "SYNCD_TEST_HUBSPOT_TOKEN"})
    )
    assert isinstance(connector, HubSpotConnector)
    assert connector.options.access_token == "from-env"
    assert "from-env" not in repr(connector.options)
    connector.close()


# -- the shared client-side limiter ------------------------------------------------------------


def test_rate_limiter_waits_for_the_window_and_penalties() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(3, 1.0, clock=lambda: now[0], sleep=sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire() == pytest.approx(1.0)  # the 4th waits for the 1st to leave
    limiter.penalize(5.0)
    assert limiter.blocked_for == pytest.approx(5.0)
    assert limiter.acquire() == pytest.approx(5.0)
    assert now[0] == pytest.approx(6.0)

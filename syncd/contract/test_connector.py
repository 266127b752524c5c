"""What every connector must do against its CRM, one method at a time.

Every test runs once per connector type that has an emulator (see ``conftest.py``). Records
are seeded straight into the emulator; what the connector did is read back from the
emulator's own state, never from the connector's answer alone.
"""

from __future__ import annotations

import phonenumbers
import pytest

from syncd.contract.harness import ACCOUNT, Crm, e164, message, visible_text
from syncd.match.keys import extract_keys
from syncd.match.names import normalize_company
from syncd.match.policy import COMPANY_KINDS, CONTACT_KINDS
from syncd.models import Action, KeyKind, MatchKey, activity_marker

# Valid numbers (phonenumbers.is_valid_number) in the spellings CRMs hold.
PHONES = {
    "+14153927461": "(415) 392-7461",
    "+12126392081": "+1 212 639 2081",
    "+16174951585": "617.495.1585",
    "+12129731234": "2129731234",
}
STRANGER = "+14153927462"  # one digit away from the first number above
NOBODY = "+16172531000"


def phone_key(number: str) -> MatchKey:
    return MatchKey(KeyKind.PHONE, number)


def company_key(name: str) -> MatchKey:
    """The COMPANY key the matcher derives from a caller who names ``name``."""
    return MatchKey(KeyKind.COMPANY, normalize_company(name))


def test_check_passes_against_the_emulator(crm: Crm) -> None:
    results = crm.check()
    assert results
    assert all(r.ok for r in results), [(r.name, r.detail) for r in results if not r.ok]


# -- 1. phones in any spelling ------------------------------------------------------------


def test_phone_lookup_finds_every_spelling_and_nothing_else(crm: Crm) -> None:
    seeded = {
        number: crm.emulator.seed_contact(first_name="Caller", last_name=str(i), phone=stored)
        for i, (number, stored) in enumerate(PHONES.items())
    }
    stranger = crm.emulator.seed_contact(first_name="Other", last_name="Person", phone=STRANGER)

    keys = [phone_key(n) for n in [*PHONES, NOBODY]]
    found = crm.connector.lookup(keys)

    for number, record_id in seeded.items():
        assert [r.id for r in found[phone_key(number)]] == [record_id], number
        assert all(number in r.phones for r in found[phone_key(number)])
    assert list(found[phone_key(NOBODY)]) == []
    assert stranger not in {r.id for records in found.values() for r in records}


def test_phone_lookup_finds_one_number_in_every_spelling(crm: Crm) -> None:
    number = "+14153927461"
    spellings = ["(415) 392-7461", "+1 415 392 7461", "415.392.7461", "4153927461"]
    assert phonenumbers.is_valid_number(phonenumbers.parse(number))
    seeded = {
        crm.emulator.seed_contact(first_name="Same", last_name=str(i), phone=stored)
        for i, stored in enumerate(spellings)
    }
    crm.emulator.seed_contact(first_name="Other", last_name="Person", phone=STRANGER)

    found = crm.connector.lookup([phone_key(number)])

    assert {r.id for r in found[phone_key(number)]} == seeded


def test_lookup_cost_does_not_grow_with_the_number_of_keys(crm: Crm) -> None:
    """Keys are packed into shared requests (counted by the emulator, nobody matches)."""
    crm.connector.lookup([phone_key(NOBODY)])  # log in, warm up
    few = [phone_key("+14153927400")]
    many = [phone_key(f"+1415392{7400 + i:04d}") for i in range(1, 11)]

    crm.emulator.reset_counts()
    crm.connector.lookup(few)
    cost_few = crm.emulator.total_requests
    crm.emulator.reset_counts()
    crm.connector.lookup(many)
    cost_many = crm.emulator.total_requests

    assert cost_many == cost_few, (cost_few, cost_many)


# -- 2. email and company -----------------------------------------------------------------


def test_email_lookup_ignores_case(crm: Crm) -> None:
    jane = crm.emulator.seed_contact(
        first_name="Jane", last_name="Doe", email="Jane.Doe@Example.com"
    )
    crm.emulator.seed_contact(first_name="Jane", last_name="Doe", email="jane.doe@example.org")
    keys = extract_keys(message(email="JANE.DOE@example.COM")).match_keys()
    assert [k.kind for k in keys] == [KeyKind.EMAIL]

    found = crm.connector.lookup(keys)

    assert [r.id for r in found[keys[0]]] == [jane]


COMPANIES = pytest.mark.parametrize(
    ("name", "decoy"),
    [
        ("Globex", "Globex Bank"),
        ("Initech LLC", "Initech Labs"),  # the key drops the legal suffix: "initech"
        ("Zoë 🚀 Ltd", "Zoe Rockets Ltd"),  # the key drops accents and symbols: "zoe"
    ],
)


def seed_company_with_contact(crm: Crm, name: str) -> tuple[str, str]:
    company = crm.emulator.seed_company(name)
    contact = crm.emulator.seed_contact(
        first_name="Sam", last_name="Hill", company=name, company_id=company
    )
    return company, contact


@COMPANIES
def test_company_key_finds_the_company_record(crm: Crm, name: str, decoy: str) -> None:
    company, _ = seed_company_with_contact(crm, name)
    seed_company_with_contact(crm, decoy)
    key = company_key(name)

    found = crm.connector.lookup([key])[key]

    assert {r.id for r in found if r.kind in COMPANY_KINDS} == {company}


@COMPANIES
def test_company_key_finds_the_contacts_at_the_company(crm: Crm, name: str, decoy: str) -> None:
    """The planner's company-and-name rule picks the caller among these contacts."""
    _, contact = seed_company_with_contact(crm, name)
    seed_company_with_contact(crm, decoy)
    key = company_key(name)

    found = crm.connector.lookup([key])[key]

    assert {r.id for r in found if r.kind in CONTACT_KINDS} == {contact}


# -- 3. create ----------------------------------------------------------------------------


def test_create_makes_one_contact_with_the_given_fields(crm: Crm) -> None:
    company = crm.emulator.seed_company("Globex")
    before = {c.id for c in crm.emulator.contacts()}
    msg = message(
        first_name="Hank",
        last_name="Scorpio",
        company="Globex",
        phone="(617) 495-1585",
        email="Hank.Scorpio@globex.example",
        content="Wants to talk about the volcano lease.",
    )
    plan = crm.new_plan(msg, company_id=company)

    outcome = crm.apply_one(plan)

    assert outcome.created
    assert outcome.record_id
    assert outcome.activity_id
    new = [c for c in crm.emulator.contacts() if c.id not in before]
    assert [c.id for c in new] == [outcome.record_id]
    contact = new[0]
    assert (contact.first_name, contact.last_name) == ("Hank", "Scorpio")
    assert contact.email.casefold() == "hank.scorpio@globex.example"
    assert e164(contact.phone) == "+16174951585"
    assert (contact.company, contact.company_id) == ("Globex", company)
    [activity] = crm.activities(plan.activity.marker)
    assert (activity.id, activity.record_id) == (outcome.activity_id, outcome.record_id)


# -- 4. updates ---------------------------------------------------------------------------


def test_update_writes_exactly_the_given_fields(crm: Crm) -> None:
    ann = crm.emulator.seed_contact(
        first_name="Ann", last_name="Old", email="ann@old.example", phone="(415) 392-7461"
    )
    before = crm.contact(ann)
    plan = crm.hand_plan(
        message(first_name="Ann", last_name="Newer", phone="(415) 392-7461"),
        Action.UPDATE,
        ann,
        {"last_name": "Newer", "email": "ann@new.example", "first_name": ""},
    )

    outcome = crm.apply_one(plan)

    assert (outcome.record_id, outcome.updated, outcome.created) == (ann, True, False)
    after = crm.contact(ann)
    assert after.last_name == "Newer"
    assert after.email.casefold() == "ann@new.example"
    assert after.first_name == "Ann", "an empty value must never blank a field"
    assert (after.phone, after.company) == (before.phone, before.company)


def test_log_writes_no_contact_field(crm: Crm) -> None:
    ann = crm.emulator.seed_contact(first_name="Ann", last_name="Old", phone="(415) 392-7461")
    before = crm.contact(ann)
    plan = crm.hand_plan(
        message(first_name="Ann", last_name="Other", phone="(415) 392-7461"),
        Action.LOG,
        ann,
        {"last_name": "Other"},
    )

    outcome = crm.apply_one(plan)

    assert (outcome.record_id, outcome.updated, outcome.created) == (ann, False, False)
    assert crm.contact(ann) == before
    assert [a.record_id for a in crm.activities(plan.activity.marker)] == [ann]


@pytest.mark.parametrize(
    ("policy", "last_name"),
    [("fill_blanks", "Old"), ("overwrite", "Newman")],
)
def test_field_policy_as_planned_from_a_read_record(crm: Crm, policy: str, last_name: str) -> None:
    stored_phone = "(415) 392-7461"
    ann = crm.emulator.seed_contact(first_name="Ann", last_name="Old", phone=stored_phone)
    record = crm.connector.read("contact", [ann])[ann]
    # No first name in the message: an empty value never blanks a field, under any policy.
    msg = message(last_name="Newman", phone="+1 415 392 7461", email="ann.newman@example.com")

    plan = crm.existing_plan(msg, record, field_policy=policy)
    assert plan.action is Action.UPDATE
    outcome = crm.apply_one(plan)

    assert (outcome.record_id, outcome.created) == (ann, False)
    after = crm.contact(ann)
    assert after.last_name == last_name
    assert after.email.casefold() == "ann.newman@example.com"  # blank: filled by both
    assert after.first_name == "Ann"
    assert after.phone == stored_phone  # same number: left as the CRM spelled it


# -- 5./6. the activity -------------------------------------------------------------------


def test_activity_carries_content_and_marker_and_is_found_at_once(crm: Crm) -> None:
    ann = crm.emulator.seed_contact(first_name="Ann", last_name="Lee", phone="(212) 639-2081")
    content = "Invoice 4471 is overdue; please call back before Friday."
    msg = message(
        message_id="M10", first_name="Ann", last_name="Lee", phone="212-639-2081", content=content
    )
    record = crm.connector.read("contact", [ann])[ann]
    plan = crm.existing_plan(msg, record)

    outcome = crm.apply_one(plan)

    marker = activity_marker(ACCOUNT, "M10")
    [activity] = crm.activities(marker)
    assert (activity.id, activity.record_id) == (outcome.activity_id, ann)
    assert content in visible_text(activity.body)
    # find_activities may search (HubSpot: for old history), and the index lags a minute
    # here: what it finds must be right; finding a fresh write is the in-doubt apply's job.
    found = crm.connector.find_activities([marker, activity_marker(ACCOUNT, "M1")])
    assert set(found) <= {marker}, "a marker that is a prefix of another must not match"
    if marker in found:
        assert (found[marker].activity_id, found[marker].record_id) == (outcome.activity_id, ann)
    crm.found_again(plan, outcome)


@pytest.mark.parametrize("emergency", [True, False])
def test_emergency_is_high_priority_and_nothing_else_is(crm: Crm, emergency: bool) -> None:
    bob = crm.emulator.seed_contact(first_name="Bob", last_name="Ray", phone="(617) 495-1585")
    msg = message(
        first_name="Bob",
        last_name="Ray",
        phone="617-495-1585",
        content="Water is coming through the ceiling!",
        emergency=emergency,
    )
    plan = crm.existing_plan(msg, crm.connector.read("contact", [bob])[bob])

    crm.apply_one(plan)

    logged = crm.activities(plan.activity.marker)
    assert logged
    assert all(a.record_id == bob for a in logged)
    assert any(a.high_priority for a in logged) is emergency


# -- 9. unicode ---------------------------------------------------------------------------


def test_accents_and_emoji_round_trip(crm: Crm) -> None:
    company = crm.emulator.seed_company("Zoë 🚀 Ltd")
    msg = message(
        first_name="José",
        last_name="Müller",
        company="Zoë 🚀 Ltd",
        phone="(212) 973-1234",
        content="Llamó José: ¿podemos vernos el miércoles? 🚀",
    )
    plan = crm.new_plan(msg, company_id=company)

    outcome = crm.apply_one(plan)

    assert outcome.record_id
    contact = crm.contact(outcome.record_id)
    assert (contact.first_name, contact.last_name) == ("José", "Müller")
    assert contact.company == "Zoë 🚀 Ltd"
    record = crm.connector.read("contact", [outcome.record_id])[outcome.record_id]
    assert (record.first_name, record.last_name) == ("José", "Müller")
    [activity] = crm.activities(plan.activity.marker)
    assert msg.content in visible_text(activity.body)


# -- 10. hostile text ---------------------------------------------------------------------

HOSTILE = [
    "Acme' OR Name != '",
    "x} OR {*",
    "\\",
    '"quoted"',
    "%_",
    "(a) AND [b]",
    "? & | ! { } [ ] ( ) ^ ~ * : \\ \" ' + -",
    "Acme\nUmbrella",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_neither_fails_nor_widens_a_lookup(crm: Crm, text: str) -> None:
    bystanders: set[str] = set()
    for name in ("Acme", "Umbrella"):
        company = crm.emulator.seed_company(name)
        bystanders.add(company)
        bystanders.add(
            crm.emulator.seed_contact(
                first_name="Pat", last_name=name, company=name, company_id=company
            )
        )
    keys = [
        MatchKey(KeyKind.COMPANY, text),  # raw: a connector must not trust key values
        MatchKey(KeyKind.NAME, text),
        MatchKey(KeyKind.EMAIL, f"{text}@example.com"),
    ]
    if normalize_company(text):
        keys.append(company_key(text))

    found = crm.connector.lookup(keys)

    assert set(found) == set(keys)
    hits = {r.id for records in found.values() for r in records}
    assert not hits & bystanders, f"{text!r} widened the match to {hits & bystanders}"
    assert crm.connector.find_activities([activity_marker(ACCOUNT, text)]) == {}


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_text_is_stored_verbatim(crm: Crm, text: str) -> None:
    company = crm.emulator.seed_company(text)
    decoy = crm.emulator.seed_company("Acme")
    msg = message(
        first_name="Pat",
        last_name=text,
        company=text,
        phone="(415) 392-7461",
        content=f"Caller said: {text}",
    )
    plan = crm.new_plan(msg, company_id=company)

    outcome = crm.apply_one(plan)

    assert outcome.record_id
    contact = crm.contact(outcome.record_id)
    assert (contact.last_name, contact.company, contact.company_id) == (text, text, company)
    [activity] = crm.activities(plan.activity.marker)
    assert msg.content in visible_text(activity.body)
    found = crm.connector.find_activities([plan.activity.marker])
    assert [ref.activity_id for ref in found.values()] in ([], [outcome.activity_id])
    key = MatchKey(KeyKind.COMPANY, text)
    assert decoy not in {r.id for r in crm.connector.lookup([key])[key]}
    crm.found_again(plan, outcome)


# -- 12. read -----------------------------------------------------------------------------


def test_read_returns_live_records_and_omits_deleted_ones(crm: Crm) -> None:
    live = crm.emulator.seed_contact(first_name="Liv", last_name="Ing", phone="(415) 392-7461")
    gone = crm.emulator.seed_contact(first_name="Del", last_name="Eted", phone="(212) 639-2081")
    company = crm.emulator.seed_company("Globex")
    crm.emulator.delete_record(gone)

    records = crm.connector.read("contact", [live, gone])

    assert set(records) == {live}
    assert (records[live].first_name, records[live].last_name) == ("Liv", "Ing")
    assert records[live].phones == ("+14153927461",)
    key = company_key("Globex")
    [found] = [r for r in crm.connector.lookup([key])[key] if r.kind in COMPANY_KINDS]
    assert set(crm.connector.read(found.kind, [company])) == {company}
    crm.emulator.delete_record(company)
    assert crm.connector.read(found.kind, [company]) == {}

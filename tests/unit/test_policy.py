"""The match policy: ``decide`` over keys and candidates, and ``plan_for`` under each mode."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from syncd.config import MatchPolicy, TargetSettings
from syncd.match.keys import extract_keys
from syncd.match.phones import PhoneKey, normalize_phone
from syncd.match.policy import (
    Decision,
    DecisionKind,
    canonical_fields,
    decide,
    plan_for,
    policy_keys,
)
from syncd.models import Action, CrmRecord, KeyKind, MatchKey, Message, Plan

EMAIL = MatchKey(KeyKind.EMAIL, "jane@example.com")
PHONE = MatchKey(KeyKind.PHONE, "+14155551212")
COMPANY = MatchKey(KeyKind.COMPANY, "acme")


def message(**fields: Any) -> Message:
    base: dict[str, Any] = {
        "account": "main",
        "message_id": "m-1",
        "created_at": datetime(2024, 6, 1, 14, 30, tzinfo=UTC),
        "content": "Please call back about the invoice.",
    }
    return Message(**(base | fields))


JANE = {"first_name": "Jane", "last_name": "Doe"}
JANE_FULL = JANE | {"phone": "(415) 555-1212", "email": "Jane@Example.com", "company": "Acme, Inc."}


def contact(rid: str, kind: str = "contact", **fields: Any) -> CrmRecord:
    return CrmRecord(id=rid, kind=kind, **fields)


@dataclass(frozen=True)
class Case:
    name: str
    fields: Mapping[str, object]
    candidates: Mapping[MatchKey, Sequence[CrmRecord]]
    kind: str
    record: str | None = None
    alternatives: tuple[str, ...] = ()
    company_id: str | None = None
    matched_by: str = ""
    policy: MatchPolicy = field(default_factory=MatchPolicy)


PHONE_TWINS = [
    contact("c1", first_name="Pat", last_name="Smith", phones=("+14155551212",)),
    contact("c2", first_name="Sam", last_name="Jones", phones=("+14155551212",)),
]

CASES = [
    Case(
        "single match by email",
        JANE_FULL,
        {EMAIL: [contact("c1", email="jane@example.com")], PHONE: [contact("c2")]},
        "existing",
        record="c1",
        matched_by="email",
    ),
    Case(
        "single match by phone (E.164)",
        JANE | {"phone": "415.555.1212"},
        {PHONE: [contact("c2", phones=("+14155551212",))]},
        "existing",
        record="c2",
        matched_by="phone",
    ),
    Case(
        "the same record under two phone keys is one match",
        JANE | {"phone": "415 555 1212", "caller_id": "+1 415 555 0000"},
        {
            PHONE: [contact("c2")],
            MatchKey(KeyKind.PHONE, "+14155550000"): [contact("c2")],
        },
        "existing",
        record="c2",
        matched_by="phone",
    ),
    Case(
        "single match by company and name",
        JANE | {"company": "ACME Inc"},
        {
            COMPANY: [
                contact("c3", first_name="Jane", last_name="Doe", company="Acme, Inc."),
                contact("c4", first_name="John", last_name="Roe", company="Acme, Inc."),
                contact("a1", kind="account", company="Acme, Inc."),
            ]
        },
        "existing",
        record="c3",
        matched_by="company_name",
    ),
    Case(
        "only a company: a new contact linked to it",
        JANE_FULL,
        {COMPANY: [contact("a9", kind="company", company="ACME Inc.")], EMAIL: [], PHONE: []},
        "new",
        company_id="a9",
    ),
    Case(
        "a same-company contact with another name is not a match",
        JANE | {"company": "Acme"},
        {COMPANY: [contact("c4", first_name="John", last_name="Roe", company="Acme")]},
        "new",
    ),
    Case(
        "a company with a different name is not linked",
        JANE_FULL,
        {COMPANY: [contact("a2", kind="account", company="Globex")]},
        "new",
    ),
    Case(
        "two equally good phone matches go to review",
        {"phone": "4155551212"},
        {PHONE: PHONE_TWINS},
        "review",
        alternatives=("c1", "c2"),
        matched_by="phone",
    ),
    Case(
        "on_ambiguity=best takes one and names the others",
        {"phone": "4155551212"},
        {PHONE: PHONE_TWINS},
        "existing",
        record="c1",
        alternatives=("c2",),
        matched_by="phone",
        policy=MatchPolicy(on_ambiguity="best"),
    ),
    Case(
        "a tie is broken by the name agreeing",
        {"first_name": "Sam", "last_name": "Jones", "phone": "4155551212"},
        {PHONE: PHONE_TWINS},
        "existing",
        record="c2",
        alternatives=("c1",),
        matched_by="phone",
    ),
    Case(
        "a tie is broken by the email agreeing",
        {"phone": "4155551212", "email": "sam@example.com"},
        {
            PHONE: [
                PHONE_TWINS[0],
                contact("c2", email="Sam@Example.com", phones=PHONE_TWINS[1].phones),
            ]
        },
        "existing",
        record="c2",
        alternatives=("c1",),
        matched_by="phone",
        policy=MatchPolicy(keys=("phone",)),
    ),
    Case(
        "a contact beats the lead it was converted from",
        {"phone": "4155551212"},
        {PHONE: [contact("l1", kind="lead"), contact("c9")]},
        "existing",
        record="c9",
        alternatives=("l1",),
        matched_by="phone",
    ),
    Case(
        "no keys at all: review",
        {"first_name": "Jane", "content": "call me"},
        {},
        "review",
    ),
    Case(
        "a name without a company is too little to create by",
        JANE,
        {},
        "review",
    ),
    Case(
        "policy keys=(phone,) ignores email candidates",
        JANE_FULL,
        {EMAIL: [contact("c1")], PHONE: [contact("c2")]},
        "existing",
        record="c2",
        matched_by="phone",
        policy=MatchPolicy(keys=("phone",)),
    ),
    Case(
        "policy keys=(phone, email) tries phone first",
        JANE_FULL,
        {EMAIL: [contact("c1")], PHONE: [contact("c2")]},
        "existing",
        record="c2",
        matched_by="phone",
        policy=MatchPolicy(keys=("phone", "email")),
    ),
    Case(
        "policy keys=(email,) makes a new caller when only the phone matches",
        JANE_FULL,
        {PHONE: [contact("c2")]},
        "new",
        policy=MatchPolicy(keys=("email",)),
    ),
    Case(
        "company records are never a contact match",
        {"email": "jane@example.com"},
        {EMAIL: [contact("a1", kind="account")]},
        "new",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_decide(case: Case) -> None:
    keys = extract_keys(message(**case.fields))

    decision = decide(keys, case.candidates, case.policy)

    assert decision.kind == case.kind
    assert (decision.record.id if decision.record else None) == case.record
    assert decision.alternatives == case.alternatives
    assert decision.company_id == case.company_id
    assert decision.matched_by == case.matched_by
    if case.kind == "review":
        assert decision.reason  # an operator sees why


def test_policy_keys_follow_the_policy_order() -> None:
    keys = extract_keys(message(**JANE_FULL, caller_id="415 555 0000"))
    other_phone = MatchKey(KeyKind.PHONE, "+14155550000")

    assert policy_keys(keys, MatchPolicy()) == [EMAIL, PHONE, other_phone, COMPANY]
    assert policy_keys(keys, MatchPolicy(keys=("phone", "email"))) == [PHONE, other_phone, EMAIL]
    assert policy_keys(keys, MatchPolicy(keys=("company_name",))) == [COMPANY]
    assert policy_keys(extract_keys(message()), MatchPolicy()) == []


def test_canonical_fields_are_normalized_and_drop_blanks() -> None:
    keys = extract_keys(message(**JANE_FULL))
    assert canonical_fields(message(**JANE_FULL), keys) == {
        "first_name": "Jane",
        "last_name": "Doe",
        "email": "jane@example.com",
        "phone": "+14155551212",
        "company": "Acme, Inc.",
    }
    sparse = message(first_name="  Jo ", phone="not a number")
    assert canonical_fields(sparse, extract_keys(sparse)) == {"first_name": "Jo"}


# -- plan_for -----------------------------------------------------------------------------------


def target(**overrides: Any) -> TargetSettings:
    return TargetSettings(name="crm", type="fake", **overrides)


def plan(
    fields: Mapping[str, object],
    decision: Decision,
    settings: TargetSettings,
    known: Mapping[str, str] | None = None,
) -> Plan | None:
    msg = message(**fields)
    return plan_for(7, msg, extract_keys(msg), decision, settings, known=known)


def existing(record: CrmRecord) -> Decision:
    return Decision(DecisionKind.EXISTING, record=record, matched_by="email")


def test_new_caller_under_upsert_is_created() -> None:
    msg = message(**JANE_FULL, custom_fields={"Account #": "A-17", "Ignored": "x"})
    settings = target(contact_fields={"Account #": "account_number__c"})

    result = plan_for(
        7, msg, extract_keys(msg), Decision(DecisionKind.NEW, company_id="a9"), settings
    )

    assert result is not None
    assert (result.action, result.delivery_id, result.record_id) == (Action.CREATE, 7, None)
    assert result.caller_key == "email:jane@example.com"
    assert result.company_id == "a9"
    assert dict(result.fields) == {
        "first_name": "Jane",
        "last_name": "Doe",
        "email": "jane@example.com",
        "phone": "+14155551212",
        "company": "Acme, Inc.",
        "account_number__c": "A-17",
    }
    assert result.activity.marker == "syncd:main:m-1"
    assert result.activity.existing_id is None
    assert "Please call back" in result.activity.body
    assert set(result.keys) == {EMAIL, PHONE, MatchKey(KeyKind.NAME, "acme|jane doe")}


def test_update_only_leaves_new_callers_alone() -> None:
    assert plan(JANE_FULL, Decision(DecisionKind.NEW), target(sync_mode="update_only")) is None


def test_review_has_no_plan() -> None:
    assert plan(JANE_FULL, Decision(DecisionKind.REVIEW, reason="x"), target()) is None


def test_create_only_logs_on_existing_without_fields() -> None:
    record = contact("c1")  # every field blank: upsert would fill them all
    result = plan_for(
        7,
        message(**JANE_FULL),
        extract_keys(message(**JANE_FULL)),
        existing(record),
        target(sync_mode="create_only"),
        existing_activity="00T1",
    )
    assert result is not None
    assert (result.action, dict(result.fields), result.record_id) == (Action.LOG, {}, "c1")
    assert result.activity.existing_id == "00T1"


def test_create_only_still_creates_new_callers() -> None:
    result = plan(JANE_FULL, Decision(DecisionKind.NEW), target(sync_mode="create_only"))
    assert result is not None
    assert result.action is Action.CREATE


FULL_RECORD = contact(
    "c1",
    first_name="Janet",
    last_name="Doe",
    email="",
    phones=(),
    fields={"first_name": "Janet", "last_name": "Doe", "company": "Acme"},
)


@pytest.mark.parametrize(
    ("policy", "record", "fields", "expected"),
    [
        # fill_blanks writes only what the CRM lacks, never "Janet" -> "Jane".
        (
            "fill_blanks",
            FULL_RECORD,
            JANE_FULL,
            {"email": "jane@example.com", "phone": "+14155551212"},
        ),
        # overwrite writes changed non-empty values, not equal ones.
        (
            "overwrite",
            FULL_RECORD,
            JANE_FULL,
            {
                "first_name": "Jane",
                "email": "jane@example.com",
                "phone": "+14155551212",
                "company": "Acme, Inc.",
            },
        ),
        # An empty value in the message never blanks the CRM.
        ("overwrite", FULL_RECORD, {"first_name": "Janet", "last_name": "", "company": " "}, {}),
        # Phones are compared as E.164: a differently formatted same number is no change.
        (
            "overwrite",
            contact("c1", phones=("+14155551212",), fields={"phone": "(415) 555-1212"}),
            {"phone": "415.555.1212"},
            {},
        ),
        (
            "fill_blanks",
            contact("c1", phones=("+14155550000",), fields={"phone": "415-555-0000"}),
            {"phone": "415.555.1212"},
            {},
        ),
        (
            "overwrite",
            contact("c1", phones=("+14155550000",), fields={"phone": "415-555-0000"}),
            {"phone": "415.555.1212"},
            {"phone": "+14155551212"},
        ),
    ],
    ids=[
        "fill-blanks",
        "overwrite",
        "empty-never-overwrites",
        "same-e164",
        "fill-has-phone",
        "new-phone",
    ],
)
def test_field_policies(
    policy: str, record: CrmRecord, fields: Mapping[str, object], expected: dict[str, str]
) -> None:
    result = plan(fields, existing(record), target(field_policy=policy))

    assert result is not None
    assert dict(result.fields) == expected
    assert result.action is (Action.UPDATE if expected else Action.LOG)
    assert result.record_id == "c1"


def test_known_snapshot_counts_as_filled() -> None:
    """The cache's snapshot says what a record is known to hold, so it is not written again."""
    record = contact("c1")  # a cache hit: no fields read from the CRM
    known = {"first_name": "Jane", "last_name": "Doe", "email": "jane@example.com"}
    known |= {"phone": "+14155551212", "company": "Acme, Inc."}

    result = plan(JANE_FULL, existing(record), target(), known=known)

    assert result is not None
    assert (result.action, dict(result.fields)) == (Action.LOG, {})


def test_an_extension_is_matched_without_and_written_with() -> None:
    """The key is E.164 alone (the switchboard is the same caller); the CRM gets the number
    with its extension, in the form that reads back to the same key and extension."""
    given = message(**(JANE | {"phone": "(415) 555-1212 x12"}))
    keys = extract_keys(given)
    assert [str(k) for k in policy_keys(keys, MatchPolicy(keys=("phone",)))] == [
        "phone:+14155551212"
    ]
    offered = canonical_fields(given, keys)
    assert offered["phone"] == "+14155551212 ext. 12"
    assert normalize_phone(offered["phone"]) == PhoneKey("+14155551212", "12")

    target = TargetSettings(name="crm", type="x", field_policy="overwrite")
    known_number = contact("c1", first_name="Jane", last_name="Doe", phones=("+14155551212",))
    plan = plan_for(1, given, keys, Decision(DecisionKind.EXISTING, record=known_number), target)
    assert plan is not None
    assert plan.fields["phone"] == "+14155551212 ext. 12"
    with_ext = contact(
        "c1",
        first_name="Jane",
        last_name="Doe",
        phones=("+14155551212",),
        fields={"phone": "+14155551212 ext. 12"},
    )
    plan = plan_for(1, given, keys, Decision(DecisionKind.EXISTING, record=with_ext), target)
    assert plan is not None
    assert "phone" not in plan.fields

"""The Salesforce connector end to end: real simple-salesforce, real HTTP, the loopback emulator.

Request counts are read server-side from the emulator, never from the connector.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound
from structlog.testing import capture_logs
from syncd_salesforce import SalesforceConnector, create
from syncd_salesforce.emulator import SalesforceEmulator
from syncd_salesforce.soql import sosl_or
from syncd_salesforce.transport import plain_http_for_loopback

from syncd.connector import Connector, TargetContext
from syncd.errors import AuthError, ConfigError, RateLimited, RetriableError
from syncd.models import Action, ActivitySpec, KeyKind, MatchKey, Message, Plan, activity_marker
from syncd.sandbox.crm import CrmEmulator
from syncd.sandbox.http import Faults, Request, Response

JANE = "+14155551212"
SANDBOX_OPTIONS = {
    "auth": "password",
    "username": "u@example.com",
    "password": "p",
    "security_token": "t",
    "instance_url": "http://127.0.0.1:9",
}
OCCURRED = datetime(2024, 5, 17, 15, 30, tzinfo=UTC)


@contextmanager
def running(**settings: Any) -> Iterator[SalesforceEmulator]:
    emulator = SalesforceEmulator(**settings)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def emulator() -> Iterator[SalesforceEmulator]:
    with running() as emulator:
        yield emulator


def connect(emulator: SalesforceEmulator, **options: Any) -> SalesforceConnector:
    table = {**emulator.connector_options(), "backoff": 0.0, **options}
    return create(TargetContext(name="sf-test", options=table))


def observed_connector(
    emulator: SalesforceEmulator, events: list[tuple[str, str, int, float]]
) -> SalesforceConnector:
    def observe(target: str, endpoint: str, status: int, waited: float) -> None:
        events.append((target, endpoint, status, waited))

    table = {**emulator.connector_options(), "backoff": 0.0}
    return create(TargetContext(name="sf-test", options=table, observe=observe))


def phone(e164: str = JANE) -> MatchKey:
    return MatchKey(KeyKind.PHONE, e164)


def plan(
    n: int,
    *,
    action: Action = Action.CREATE,
    caller_key: str = f"phone:{JANE}",
    phone_text: str = "(415) 555-1212",
    content: str = "Please call back about the invoice.",
    company: str = "",
    emergency: bool = False,
    record_id: str | None = None,
    company_id: str | None = None,
    fields: Mapping[str, str] | None = None,
    existing_id: str | None = None,
) -> Plan:
    message = Message(
        account="acct",
        message_id=f"M{n}",
        created_at=OCCURRED,
        first_name="Jane",
        last_name="Doe",
        company=company,
        phone=phone_text,
        content=content,
        is_emergency=emergency,
    )
    activity = ActivitySpec(
        marker=activity_marker("acct", f"M{n}"),
        subject="Call: Jane Doe",
        body=content,
        occurred_at=OCCURRED,
        emergency=emergency,
        properties={"Callback time": "after 3pm"},
        existing_id=existing_id,
    )
    default_fields = {"first_name": "Jane", "last_name": "Doe", "phone": phone_text}
    return Plan(
        delivery_id=n,
        message=message,
        action=action,
        activity=activity,
        record_id=record_id,
        caller_key=caller_key if action is Action.CREATE else "",
        fields=default_fields if fields is None else fields,
        company_id=company_id,
        keys=(phone(),),
    )


# -- the emulator is a CrmEmulator -----------------------------------------------------------


def test_emulator_and_connector_satisfy_the_protocols(emulator: SalesforceEmulator) -> None:
    assert isinstance(emulator, CrmEmulator)
    assert emulator.connector_options()["instance_url"] == emulator.base_url
    assert isinstance(connect(emulator), Connector)
    assert emulator.total_requests == 0  # creating a connector makes no request


# -- logins ------------------------------------------------------------------------------------


def _certificate(key: rsa.RSAPrivateKey) -> bytes:
    """A self-signed X.509 certificate for ``key``, as an admin uploads to the connected app."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "syncd test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _private_key(tmp_path: Path, emulator: SalesforceEmulator | None = None) -> Path:
    """A fresh key (generated here, never committed); its certificate goes to ``emulator``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if emulator is not None:
        emulator.jwt_certificate = _certificate(key)
    path = tmp_path / "server.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize("flow", ["password", "client_credentials", "jwt", "session"])
def test_each_auth_flow_logs_in(
    emulator: SalesforceEmulator, flow: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"instance_url": emulator.base_url, "auth": flow, "backoff": 0.0}
    if flow == "password":
        # Secrets by reference, as an operator would configure them.
        monkeypatch.setenv("SF_PASSWORD", emulator.password)
        token_file = tmp_path / "token"
        token_file.write_text(emulator.security_token + "\n")
        options = {
            **base,
            "username": emulator.username,
            "password_env": "SF_PASSWORD",
            "security_token_file": str(token_file),
        }
    elif flow == "client_credentials":
        options = {
            **base,
            "consumer_key": emulator.consumer_key,
            "consumer_secret": emulator.consumer_secret,
        }
    elif flow == "jwt":
        options = {
            **base,
            "username": emulator.username,
            "consumer_key": emulator.consumer_key,
            "privatekey_file": str(_private_key(tmp_path, emulator)),
        }
    else:
        options = {**base, "session_id": emulator.issue_session()}
    connector = create(TargetContext(name="sf-test", options=options))
    emulator.seed_contact(first_name="Jane", last_name="Doe", phone="(415) 555-1212")

    found = connector.lookup([phone()])

    assert [r.last_name for r in found[phone()]] == ["Doe"]
    assert emulator.counts["login"] == (0 if flow == "session" else 1)


def soap(emulator: SalesforceEmulator) -> dict[str, Any]:
    """Options for SOAP password login (``auth = "password"``) to ``emulator``."""
    return {
        "auth": "password",
        "username": emulator.username,
        "password": emulator.password,
        "security_token": emulator.security_token,
    }


def test_bad_password_is_an_auth_error(emulator: SalesforceEmulator) -> None:
    connector = connect(emulator, **{**soap(emulator), "password": "wrong"})
    with pytest.raises(AuthError) as raised:
        connector.lookup([phone()])
    assert raised.value.where == "sf-test"
    assert emulator.counts["login"] == 1  # refused is refused: no retry


def test_bad_client_secret_is_an_auth_error(emulator: SalesforceEmulator) -> None:
    options = {
        "auth": "client_credentials",
        "instance_url": emulator.base_url,
        "consumer_key": emulator.consumer_key,
        "consumer_secret": "nope",
    }
    connector = create(TargetContext(name="sf-test", options=options))
    with pytest.raises(AuthError):
        connector.lookup([phone()])


def test_expired_session_logs_in_again_once(emulator: SalesforceEmulator) -> None:
    connector = connect(emulator)
    connector.lookup([phone()])
    emulator.expire_sessions()

    connector.lookup([phone()])

    assert emulator.counts["login"] == 2
    assert emulator.statuses[401] == 1


def test_session_refused_after_relogin_is_an_auth_error() -> None:
    with running(session_ttl=0.0) as emulator:
        connector = connect(emulator)
        with pytest.raises(AuthError, match="after re-login"):
            connector.lookup([phone()])
        assert emulator.counts["login"] == 2  # once, then once more, then stop


def test_check_reports_good_and_bad_credentials(emulator: SalesforceEmulator) -> None:
    good = {r.name: r for r in connect(emulator).check()}
    assert all(r.ok for r in good.values()), good
    assert set(good) == {
        "login",
        "API v59.0",
        "Contact fields",
        "Task fields",
        "Account fields",
        "API limits",
    }

    bad = connect(emulator, **{**soap(emulator), "security_token": "stale"}).check()
    assert [(r.name, r.ok, r.auth_failed) for r in bad] == [("login", False, True)]
    assert "INVALID_LOGIN" in bad[0].detail

    with running() as down:
        down.faults.outage(600)
        [unreachable] = connect(down, retries=0).check()
    assert (unreachable.ok, unreachable.auth_failed) == (False, False)


def test_check_finds_a_missing_api_version(emulator: SalesforceEmulator) -> None:
    results = {r.name: r for r in connect(emulator, api_version="20.0").check()}
    assert results["login"].ok
    assert not results["API v20.0"].ok
    assert "20.0 is not available" in results["API v20.0"].detail


def test_check_finds_missing_fields(emulator: SalesforceEmulator) -> None:
    fields = {"Account #": "Account_Number__c"}
    results = {r.name: r for r in connect(emulator, contact_fields=fields).check()}
    assert not results["Contact fields"].ok
    assert "Account_Number__c" in results["Contact fields"].detail

    emulator.add_field("Contact", "Account_Number__c")
    assert all(r.ok for r in connect(emulator, contact_fields=fields).check())


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"auth": "saml"}, "auth"),
        ({"instance_url": "http://crm.example.com"}, "instance_url"),
        ({"record_type": "Opportunity"}, "record_type"),
        ({"caller_key_field": "Bad Field"}, "caller_key_field"),
        ({"search_objects": ["Account"]}, "search_objects"),
        (
            {
                "auth": "client_credentials",
                "instance_url": "",
                "consumer_key": "k",
                "consumer_secret": "s",
            },
            "domain",
        ),
        ({"auth": "password", "username": ""}, "username"),
        ({"timeout": "soon"}, "timeout"),
    ],
)
def test_bad_options_name_their_key(options: dict[str, Any], key: str) -> None:
    table = {**SANDBOX_OPTIONS, **options}
    with pytest.raises(ConfigError) as raised:
        create(TargetContext(name="sf-test", options=table))
    assert raised.value.key == key


def test_plain_http_only_for_loopback() -> None:
    assert plain_http_for_loopback("https://127.0.0.1:9/x") == "http://127.0.0.1:9/x"
    assert plain_http_for_loopback("https://localhost/x") == "http://localhost/x"
    assert plain_http_for_loopback("https://acme.my.salesforce.com/x").startswith("https://")
    assert plain_http_for_loopback("https://127.0.0.1.evil.com/x").startswith("https://")


# -- lookup ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stored", ["(415) 555-1212", "415.555.1212", "+1 415 555 1212"])
def test_a_phone_in_any_spelling_is_found_by_e164(
    emulator: SalesforceEmulator, stored: str
) -> None:
    contact = emulator.seed_contact(first_name="Jane", last_name="Doe", phone=stored)
    emulator.seed_contact(first_name="Other", last_name="Person", phone="(415) 555-1213")
    connector = connect(emulator)

    found = connector.lookup([phone()])

    assert [r.id for r in found[phone()]] == [contact]
    assert found[phone()][0].phones == (JANE,)
    # SOSL found it: the SOQL fallback is not spent on keys that already matched.
    assert emulator.counts["search"] == 1
    assert emulator.counts["query"] == 0


def test_a_record_written_moments_ago_is_found_despite_search_lag() -> None:
    with running(search_lag=120.0) as emulator:
        connector = connect(emulator)
        [outcome] = connector.apply([plan(1)])
        emulator.reset_counts()

        found = connector.lookup([phone()])

        assert [r.id for r in found[phone()]] == [outcome.record_id]
        assert emulator.counts["search"] == 1  # the index does not know it yet...
        assert emulator.counts["query"] == 1  # ...SOQL on the object we write to does


def test_email_name_and_company_keys(emulator: SalesforceEmulator) -> None:
    acme = emulator.seed_company("Acme, Inc.")
    emulator.seed_company("Acme Widgets")
    contact = emulator.seed_contact(
        first_name="Jane", last_name="Doe", email="Jane.Doe@Example.com", company_id=acme
    )
    lead = emulator.seed_lead(FirstName="Jane", LastName="Doe", Company="Acme")
    keys = [
        MatchKey(KeyKind.EMAIL, "jane.doe@example.com"),
        MatchKey(KeyKind.NAME, "jane doe"),
        MatchKey(KeyKind.COMPANY, "acme"),
    ]

    found = connect(emulator).lookup(keys)

    assert [r.id for r in found[keys[0]]] == [contact]
    assert {r.id for r in found[keys[1]]} == {contact, lead}
    # A company key finds the account, and the people there (the planner picks among them).
    assert {(r.id, r.kind) for r in found[keys[2]]} == {
        (acme, "account"),
        (contact, "contact"),
        (lead, "lead"),
    }
    assert found[keys[0]][0].company_id == acme
    assert found[keys[0]][0].company == "Acme, Inc."
    # One SOQL per object (Contact, Lead, Account) for every key kind together, all three in
    # one composite request, and one search, where case and accents fold.
    assert emulator.operations()["query"] == 3
    assert emulator.counts["composite"] == 1
    assert emulator.counts["search"] == 1


def test_a_company_key_folds_accents_through_search(emulator: SalesforceEmulator) -> None:
    zoe = emulator.seed_company("Zoë 🚀 Ltd")
    staff = emulator.seed_contact(first_name="Sam", last_name="Hill", company_id=zoe)
    emulator.seed_company("Zoe Rockets Ltd")
    key = MatchKey(KeyKind.COMPANY, "zoe")

    found = connect(emulator).lookup([key])

    assert {(r.id, r.kind) for r in found[key]} == {(zoe, "account"), (staff, "contact")}


def test_many_phone_keys_share_requests(emulator: SalesforceEmulator) -> None:
    keys = [phone(f"+1415555{n:04d}") for n in range(250)]
    emulator.seed_contact(last_name="Known", phone="415-555-0007")

    found = connect(emulator).lookup(keys)

    assert len(found[phone("+14155550007")]) == 1
    assert emulator.counts["search"] == 3  # 100 terms per SOSL request
    assert emulator.operations()["query"] == 2  # 249 misses, packed under the URL limit
    assert emulator.counts["composite"] == 1


HOSTILE = [
    "Acme' OR Name != '",
    "Acme%' OR Name LIKE '%",
    "x} OR {*",
    "back\\slash\\",
    "\\' OR Id != null OR Name = \\'",
    "\"quoted\" 'single'",
    "?&|!{}[]()^~*:\\\"'+-",
    "multi\nline\rname",
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_text_neither_fails_nor_widens(emulator: SalesforceEmulator, hostile: str) -> None:
    emulator.seed_company("Acme")
    emulator.seed_company("Globex")
    emulator.seed_contact(first_name="Jane", last_name="Doe", email="jane@example.com")
    connector = connect(emulator)
    keys = [
        MatchKey(KeyKind.COMPANY, hostile),
        MatchKey(KeyKind.NAME, hostile),
        MatchKey(KeyKind.EMAIL, hostile),
    ]

    assert all(records == [] for records in connector.lookup(keys).values())

    # The same text as a real record's name: found, and only that record.
    target = emulator.seed_company(hostile)
    assert [r.id for r in connector.lookup(keys[:1])[keys[0]]] == [target]

    # In SOSL too: one phrase, no error, nothing but an exact phrase match.
    sosl = f"FIND {{{sosl_or([hostile])}}} IN ALL FIELDS RETURNING Account(Id, Name)"
    rows = connector.client.search(sosl)
    assert all(row["Id"] == target for row in rows)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_content_is_stored_verbatim(emulator: SalesforceEmulator, hostile: str) -> None:
    [outcome] = connect(emulator).apply([plan(1, content=hostile, company=hostile)])

    assert outcome.ok, outcome.error
    [task] = emulator.records("Task")
    assert task["Description"].startswith(hostile)


def test_read_reports_missing_ids_as_gone(emulator: SalesforceEmulator) -> None:
    alive = emulator.seed_contact(last_name="Alive")
    dead = emulator.seed_contact(last_name="Dead")
    emulator.delete_record(dead)

    records = connect(emulator).read("contact", [alive, dead, "not-an-id", alive[:15]])

    assert set(records) == {alive, alive[:15]}
    assert records[alive].last_name == "Alive"
    assert emulator.counts["query"] == 1


# -- apply -------------------------------------------------------------------------------------


def test_one_caller_three_messages_makes_one_contact_three_tasks(
    emulator: SalesforceEmulator,
) -> None:
    acme = emulator.seed_company("Acme")
    connector = connect(emulator)
    plans = [plan(n, company_id=acme, emergency=n == 2) for n in range(3)]

    outcomes = connector.apply(plans)

    assert all(o.ok for o in outcomes), outcomes
    [contact] = emulator.contacts()
    assert {o.record_id for o in outcomes} == {contact.id}
    assert [o.created for o in outcomes] == [True, False, False]
    assert (contact.first_name, contact.last_name, contact.company_id) == ("Jane", "Doe", acme)
    assert contact.phone == "(415) 555-1212"
    tasks = {t["Id"]: t for t in emulator.records("Task")}
    assert [o.activity_id for o in outcomes] == list(tasks)
    for n, task in enumerate(tasks.values()):
        assert task["WhoId"] == contact.id
        assert task["TaskSubtype"] == "Call"
        assert task["Status"] == "Completed"
        assert task["ActivityDate"] == "2024-05-17"
        assert task["Subject"] == "Call: Jane Doe"  # the marker has a field of its own
        assert task["Syncd_Marker__c"] == f"syncd:acct:M{n}"
        assert task["CallType"] == "Inbound"
        assert (
            task["Description"] == "Please call back about the invoice.\n\nCallback time: after 3pm"
        )
        assert task["Priority"] == ("High" if n == 2 else "Normal")
    assert [a.marker for a in emulator.activities()] == [f"syncd:acct:M{n}" for n in range(3)]
    # The contact and its tasks in one request: the tasks' WhoId references the upsert.
    assert emulator.total_requests == 2  # login + one composite
    assert emulator.operations()["collections.upsert"] == 1
    assert emulator.operations()["collections.create"] == 1


def test_a_new_caller_costs_three_requests(emulator: SalesforceEmulator) -> None:
    acme = emulator.seed_company("Acme")
    connector = connect(emulator)
    connector.lookup([phone("+12125550100")])  # log in
    emulator.reset_counts()
    keys = [phone(), MatchKey(KeyKind.NAME, "jane doe"), MatchKey(KeyKind.COMPANY, "acme")]

    found = connector.lookup(keys)
    [outcome] = connector.apply([plan(1, company_id=acme)])

    assert [r.id for r in found[keys[2]]] == [acme]
    assert outcome.created
    assert outcome.activity_id
    # One search, one composite of queries, one composite of writes.
    assert dict(emulator.counts) == {"search": 1, "composite": 2}


def test_upsert_is_idempotent_across_retries(emulator: SalesforceEmulator) -> None:
    connector = connect(emulator)
    first = connector.apply([plan(1)])
    again = connector.apply([plan(1)])  # the same batch, re-sent after a crash

    assert len(emulator.contacts()) == 1
    assert again[0].record_id == first[0].record_id
    assert (first[0].created, again[0].created) == (True, False)
    key = emulator.records("Contact")[0]["Syncd_Key__c"]
    assert key
    assert JANE not in key  # a digest, not personal data


def test_without_an_external_id_inserts_look_up_first(emulator: SalesforceEmulator) -> None:
    connector = connect(emulator, caller_key_field="")
    first = connector.apply([plan(1), plan(2)])
    again = connector.apply([plan(3)])

    assert len(emulator.contacts()) == 1
    assert {o.record_id for o in [*first, *again]} == {first[0].record_id}
    assert emulator.counts["collections.upsert"] == 0


def test_duplicate_rule_match_links_to_the_existing_contact() -> None:
    with running(duplicate_rule=True) as emulator:
        existing = emulator.seed_contact(first_name="Jane", last_name="Doe", phone="415 555 1212")

        [outcome] = connect(emulator).apply([plan(1)])

        assert outcome.ok
        assert not outcome.created
        assert outcome.record_id == existing
        assert [c.id for c in emulator.contacts()] == [existing]
        assert [a.record_id for a in emulator.activities()] == [existing]
        assert emulator.counts["query"] == 0  # the error named the record


def test_duplicate_rule_without_details_falls_back_to_soql() -> None:
    with running(duplicate_rule=True) as emulator:
        emulator.duplicate_details = False
        existing = emulator.seed_contact(first_name="Jane", last_name="Doe", phone="415.555.1212")

        [outcome] = connect(emulator).apply([plan(1)])

        assert outcome.ok
        assert outcome.record_id == existing
        assert emulator.counts["query"] == 1


def test_updates_and_logs_on_existing_records(emulator: SalesforceEmulator) -> None:
    contact = emulator.seed_contact(first_name="Jane", last_name="Doe")
    connector = connect(emulator)
    outcomes = connector.apply(
        [
            plan(1, action=Action.UPDATE, record_id=contact, fields={"email": "jane@example.com"}),
            plan(2, action=Action.UPDATE, record_id=contact, fields={"Title": "CFO"}),
            plan(3, action=Action.LOG, record_id=contact, fields={}),
        ]
    )

    assert [(o.ok, o.updated) for o in outcomes] == [(True, True), (True, True), (True, False)]
    stored = emulator.record(contact)
    assert stored is not None
    assert (stored["Email"], stored["Title"]) == ("jane@example.com", "CFO")
    assert emulator.operations()["collections.update"] == 1  # one entry for both updates
    assert emulator.counts["composite"] == 1
    assert len(emulator.activities()) == 3


def test_a_changed_message_updates_its_task_in_place(emulator: SalesforceEmulator) -> None:
    contact = emulator.seed_contact(last_name="Doe")
    connector = connect(emulator)
    [first] = connector.apply([plan(1, action=Action.LOG, record_id=contact)])

    [second] = connector.apply(
        [
            plan(
                1,
                action=Action.LOG,
                record_id=contact,
                content="Corrected",
                existing_id=first.activity_id,
            )
        ]
    )

    assert second.ok
    assert second.activity_id == first.activity_id
    [task] = emulator.records("Task")
    assert task["Description"].startswith("Corrected")
    assert task["TaskSubtype"] == "Call"


def test_a_deleted_contact_is_reported_gone(emulator: SalesforceEmulator) -> None:
    contact = emulator.seed_contact(last_name="Doe")
    emulator.delete_record(contact)
    connector = connect(emulator)

    logged, updated = connector.apply(
        [
            plan(1, action=Action.LOG, record_id=contact),
            plan(2, action=Action.UPDATE, record_id=contact, fields={"Title": "CFO"}),
        ]
    )

    for outcome in (logged, updated):
        assert not outcome.ok
        assert outcome.retriable
        assert outcome.gone == (contact,)
    assert emulator.activities() == []


def test_per_record_rejections_are_outcomes(emulator: SalesforceEmulator) -> None:
    outcomes = connect(emulator).apply(
        [
            plan(1, caller_key="email:a", fields={"email": "not an email", "last_name": "A"}),
            plan(2, caller_key="email:b", fields={"last_name": "B"}),
        ]
    )

    assert not outcomes[0].ok
    assert "INVALID_EMAIL_ADDRESS" in str(outcomes[0].error)
    assert not outcomes[0].retriable
    assert outcomes[1].ok
    assert len(emulator.contacts()) == 1


def test_lead_record_type_fills_required_fields(emulator: SalesforceEmulator) -> None:
    connector = connect(emulator, record_type="Lead")
    [outcome] = connector.apply([plan(1, fields={"phone": "+1 415 555 1212"})])

    [lead] = emulator.contacts()
    assert outcome.ok
    assert outcome.record_kind == "lead"
    assert (lead.kind, lead.last_name, lead.company) == ("lead", "Doe", "Unknown")


def test_more_than_200_records_are_split(emulator: SalesforceEmulator) -> None:
    plans = [plan(n, caller_key=f"phone:+1212555{n:04d}") for n in range(450)]

    outcomes = connect(emulator).apply(plans)

    assert all(o.ok for o in outcomes)
    assert len(emulator.contacts()) == 450
    assert len(emulator.activities()) == 450
    assert emulator.operations()["collections.upsert"] == 3
    assert emulator.operations()["collections.create"] == 3
    assert emulator.counts["composite"] == 2  # at most five Collections per composite
    assert emulator.statuses[400] == 0


def test_find_activities_by_subject_and_by_field(emulator: SalesforceEmulator) -> None:
    contact = emulator.seed_contact(last_name="Doe")
    connect(emulator, marker_field="").apply([plan(1, action=Action.LOG, record_id=contact)])
    by_field = connect(emulator)  # marker_field defaults to Syncd_Marker__c
    by_field.apply([plan(2, action=Action.LOG, record_id=contact)])

    markers = ["syncd:acct:M1", "syncd:acct:M2", "syncd:acct:M9", "SYNCD:ACCT:M1"]
    by_subject = connect(emulator, marker_field="").find_activities(markers)
    assert set(by_subject) == {"syncd:acct:M1"}
    assert by_subject["syncd:acct:M1"].record_id == contact
    assert set(by_field.find_activities(markers)) == {"syncd:acct:M2"}


def test_record_links_need_no_request(emulator: SalesforceEmulator) -> None:
    configured = connect(emulator)
    assert configured.record_url("lead", "00Q000000000001AAA") == (
        f"{emulator.base_url}/lightning/r/Lead/00Q000000000001AAA/view"
    )
    # Without instance_url the org's host is known only once a login named it.
    unconfigured = connect(emulator, instance_url="", domain="acme.my")
    assert unconfigured.record_url("contact", "003X") is None
    assert emulator.total_requests == 0


# -- errors and limits -------------------------------------------------------------------------


def test_daily_limit_is_rate_limited_daily() -> None:
    with running(daily_limit=2) as emulator:
        emulator.seed_contact(last_name="Doe", phone="(415) 555-1212")
        connector = connect(emulator)
        connector.lookup([phone()])  # one SOSL request each: SOSL finds the contact
        connector.lookup([phone()])
        assert connector.api_usage == (2, 2)
        with pytest.raises(RateLimited) as raised:
            connector.lookup([phone()])
        assert raised.value.daily
        assert emulator.counts["search"] == 3  # refused is refused: no retry


def test_a_500_storm_is_ridden_out_without_duplicates(emulator: SalesforceEmulator) -> None:
    emulator.faults = Faults(error_ratio=0.5, seed=7)
    connector = connect(emulator, retries=10)

    outcomes = connector.apply([plan(n) for n in range(5)])
    found = connector.lookup([phone()])

    assert all(o.ok for o in outcomes)
    assert emulator.faults.injected["500"] > 0
    assert len(emulator.contacts()) == 1
    assert len(emulator.activities()) == 5  # ambiguous POSTs were reconciled, not repeated
    assert len(found[phone()]) == 1


def script_task_creates(emulator: SalesforceEmulator, *, lands: bool) -> None:
    """Answer every top-level Collections create in turn 503 before it runs (safe to repeat)
    and 500 after it ran (``lands``: the write is done and its answer lost) or instead of it."""
    routes = emulator._routes
    (index,) = [i for i, r in enumerate(routes) if r[2] == "collections.create"]
    method, pattern, endpoint, handler = routes[index]
    answered = [0]

    def scripted(request: Request) -> Response:
        answered[0] += 1
        if answered[0] % 2:
            return emulator.fault_response("outage", request)
        if lands:
            handler(request)
        return emulator.fault_response("500", request)

    routes[index] = (method, pattern, endpoint, scripted)


def test_creates_retry_in_one_loop_whatever_mix_of_refusals_and_errors(
    emulator: SalesforceEmulator,
) -> None:
    """One retry loop spends ``retries + 1`` creates in all, refusals and errors together; a
    loop inside a loop spent them for each outer try (8 here). Counted at the emulator."""
    contact = emulator.seed_contact(last_name="Doe")
    script_task_creates(emulator, lands=False)
    # Without a caller-key field nothing rides in a composite request: Tasks go alone.
    connector = connect(emulator, retries=3, caller_key_field="")

    with pytest.raises(RetriableError):
        connector.apply([plan(n, action=Action.LOG, record_id=contact) for n in range(3)])

    assert emulator.counts["collections.create"] == 4
    assert emulator.activities() == []


def test_a_create_refused_with_a_long_retry_after_goes_back_to_the_daemon(
    emulator: SalesforceEmulator,
) -> None:
    """503 with Retry-After: 3600 before the create ran: not retried in-process after our
    capped backoff (the org asked for an hour), and nothing looked up or sent again."""
    contact = emulator.seed_contact(last_name="Doe")
    emulator.faults.retry_after = 3600
    script_task_creates(emulator, lands=False)
    connector = connect(emulator, retries=3, caller_key_field="")
    emulator.reset_counts()

    with pytest.raises(RetriableError) as raised:
        connector.apply([plan(n, action=Action.LOG, record_id=contact) for n in range(2)])

    assert raised.value.retry_after == 3600
    assert emulator.counts["collections.create"] == 1
    assert emulator.counts["query"] == 0  # no reconcile: nothing can have landed


def test_a_create_whose_answer_was_lost_is_found_before_the_next_try(
    emulator: SalesforceEmulator,
) -> None:
    contact = emulator.seed_contact(last_name="Doe")
    script_task_creates(emulator, lands=True)
    connector = connect(emulator, retries=3, caller_key_field="")

    outcomes = connector.apply([plan(n, action=Action.LOG, record_id=contact) for n in range(3)])

    assert all(o.ok and o.activity_id for o in outcomes)
    assert emulator.counts["collections.create"] == 2  # refused, then landed: found, not resent
    markers = sorted(str(a.marker) for a in emulator.activities())
    assert markers == sorted(activity_marker("acct", f"M{n}") for n in range(3))


def test_an_outage_past_the_retries_is_retriable(emulator: SalesforceEmulator) -> None:
    connector = connect(emulator, retries=2)
    connector.lookup([phone()])
    emulator.faults.outage(600)

    with pytest.raises(RetriableError):
        connector.lookup([phone()])
    assert emulator.faults.injected["outage"] == 3


def test_every_request_is_observed_and_usage_exposed(emulator: SalesforceEmulator) -> None:
    observed: list[tuple[str, str, int, float]] = []
    connector = observed_connector(emulator, observed)
    connector.apply([plan(1)])
    connector.lookup([phone()])

    assert len(observed) == emulator.total_requests
    assert {e[1] for e in observed} == {"login", "composite", "search"}
    assert all(target == "sf-test" and status == 200 for target, _, status, _ in observed)
    used, limit = connector.api_usage or (0, 0)
    assert (used, limit) == (emulator.api_used, emulator.daily_limit)


def test_high_api_usage_and_exhaustion_are_alerted() -> None:
    with running(daily_limit=4) as emulator:
        emulator.seed_contact(last_name="Doe", phone="(415) 555-1212")
        connector = connect(emulator, daily_limit_alert_ratio=0.5)
        with capture_logs() as logs:
            for _ in range(4):
                connector.lookup([phone()])
            with pytest.raises(RateLimited):
                connector.lookup([phone()])
        events = [e["event"] for e in logs]
        assert events.count("salesforce.api_usage_high") == 1  # once per crossing, not per call
        assert events.count("salesforce.daily_limit_exceeded") == 1
        assert not any(emulator.password in str(e) for e in logs)


def test_a_query_on_a_missing_field_is_a_config_error(emulator: SalesforceEmulator) -> None:
    connector = connect(emulator, contact_fields={"Account #": "Account_Number__c"})
    with pytest.raises(ConfigError, match="INVALID_FIELD"):
        connector.lookup([MatchKey(KeyKind.EMAIL, "jane@example.com")])


def test_emulator_refuses_more_than_200_records(emulator: SalesforceEmulator) -> None:
    records = [{"attributes": {"type": "Contact"}, "LastName": f"N{n}"} for n in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        connect(emulator).client.collections(
            "POST", "composite/sobjects", records, idempotent=False
        )
    assert "EXCEEDED_ID_LIMIT" in str(raised.value)
    assert emulator.contacts() == []


def test_emulator_serves_sobject_crud(emulator: SalesforceEmulator) -> None:
    client = connect(emulator).client

    def rest(path: str, method: str = "GET", **body: Any) -> Any:
        return client.call(path, lambda sf: sf.restful(path, method=method, **body))

    created = rest("sobjects/Contact", "POST", json={"LastName": "Doe", "Phone": "4155551212"})
    record_id = created["id"]
    assert rest(f"sobjects/Contact/{record_id}")["Phone"] == "4155551212"  # stored as sent
    rest(f"sobjects/Contact/{record_id}", "PATCH", json={"FirstName": "Jane"})
    assert rest(f"sobjects/Contact/{record_id}")["Name"] == "Jane Doe"
    rest(f"sobjects/Contact/{record_id}", "DELETE")
    with pytest.raises(SalesforceResourceNotFound):
        rest(f"sobjects/Contact/{record_id}")
    with pytest.raises(SalesforceMalformedRequest, match="REQUIRED_FIELD_MISSING"):
        rest("sobjects/Lead", "POST", json={"LastName": "Doe"})
    assert emulator.write_requests() == 4

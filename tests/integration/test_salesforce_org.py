"""Salesforce as a real org behaves: logins, duplicate rules, Accounts and Leads, limits, paging,
answers that break off or make no sense, plans in doubt, and ``syncd setup``.

Every count is read at the emulator (records it holds, requests it served), never from syncd.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.login import SalesforceLogin
from syncd_salesforce import SalesforceConnector, create
from syncd_salesforce.emulator import SalesforceEmulator
from syncd_salesforce.emulator import schema as org_schema
from syncd_salesforce.writes import external_id

from syncd.check import run_check
from syncd.config import load_settings
from syncd.connector import TargetContext
from syncd.errors import AuthError, ConfigError, RateLimited, RetriableError
from syncd.models import (
    Action,
    ActivitySpec,
    KeyKind,
    MatchKey,
    Message,
    Outcome,
    Plan,
    activity_marker,
)
from syncd.sandbox.http import Request, Response, json_response
from syncd.sandbox.world import SandboxWorld
from syncd.setup import run_setup

TAKEN = datetime(2024, 5, 17, 15, 30, tzinfo=UTC)
JANE = "+14155551212"


@contextmanager
def org(**settings: Any) -> Iterator[SalesforceEmulator]:
    emulator = SalesforceEmulator(**settings)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def connect(emulator: SalesforceEmulator, **options: Any) -> SalesforceConnector:
    table = {**emulator.connector_options(), "backoff": 0.0, **options}
    return create(TargetContext(name="sf", options=table))


def message(n: int, **fields: Any) -> Message:
    values: dict[str, Any] = {
        "first_name": "Jane",
        "last_name": "Doe",
        "phone": "(415) 555-1212",
        "content": "Please call back.",
    }
    values.update(fields)
    return Message(account="acct", message_id=f"M{n}", created_at=TAKEN, **values)


def plan(
    n: int,
    *,
    msg: Message | None = None,
    action: Action = Action.CREATE,
    record_id: str | None = None,
    fields: dict[str, str] | None = None,
    in_doubt: bool = False,
    caller_key: str = f"phone:{JANE}",
    subject: str = "Call from Jane Doe",
) -> Plan:
    msg = msg or message(n)
    return Plan(
        delivery_id=n,
        message=msg,
        action=action,
        activity=ActivitySpec(
            marker=activity_marker(msg.account, msg.message_id),
            subject=subject,
            body=msg.content,
            occurred_at=TAKEN,
        ),
        record_id=record_id,
        record_kind="contact",
        caller_key=caller_key if action is Action.CREATE else "",
        fields={"first_name": "Jane", "last_name": "Doe"} if fields is None else fields,
        keys=(MatchKey(KeyKind.PHONE, JANE),),
        in_doubt=in_doubt,
    )


def one(outcomes: Any) -> Outcome:
    [outcome] = outcomes
    assert outcome.ok, outcome.error
    result: Outcome = outcome
    return result


def tasks_on(emulator: SalesforceEmulator, record_id: str) -> list[dict[str, Any]]:
    return [t for t in emulator.records("Task") if t["WhoId"] == record_id]


# -- logins ------------------------------------------------------------------------------------


def test_client_credentials_is_the_sandbox_login_and_renews_an_expired_session() -> None:
    with org() as emulator:
        connector = connect(emulator)
        assert connector.options.auth == "client_credentials"
        connector.lookup([MatchKey(KeyKind.PHONE, JANE)])
        emulator.expire_sessions()
        connector.lookup([MatchKey(KeyKind.PHONE, JANE)])
        assert emulator.counts["login"] == 2  # one token, then one renewal: no more
        assert emulator.statuses[401] == 1


def test_soap_login_at_65_is_refused_by_the_org_and_by_our_config() -> None:
    with org() as emulator:
        session = requests.Session()
        with pytest.raises(SalesforceAuthenticationFailed) as refused:
            SalesforceLogin(
                username=emulator.username,
                password=emulator.password,
                security_token=emulator.security_token,
                sf_version="65.0",
                session=session,
                scratch_url=emulator.base_url,
            )
        assert "UNSUPPORTED_API_VERSION" in str(refused.value)
        session.close()
        with pytest.raises(ConfigError) as config:
            connect(
                emulator,
                auth="password",
                username="u",
                password="p",
                api_version="65.0",
            )
        assert config.value.key == "auth"
        assert "65.0" in str(config.value)


def test_soap_login_still_works_below_65_and_check_warns() -> None:
    with org() as emulator:
        options = {
            "auth": "password",
            "username": emulator.username,
            "password": emulator.password,
            "security_token": emulator.security_token,
        }
        [login, *_] = connect(emulator, **options).check()
        assert login.ok
        assert "WARNING" in login.detail
        assert "client_credentials" in login.detail


def _key_and_certificate() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
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
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, cert.public_bytes(serialization.Encoding.PEM)


def test_jwt_bearer_is_checked_against_the_connected_apps_certificate() -> None:
    key, certificate = _key_and_certificate()
    other_key, _ = _key_and_certificate()
    with org(jwt_certificate=certificate) as emulator:
        base = {"auth": "jwt", "username": emulator.username}
        good = connect(emulator, **base, privatekey=key.decode())
        good.lookup([MatchKey(KeyKind.PHONE, JANE)])
        forged = connect(emulator, **base, privatekey=other_key.decode())
        with pytest.raises(AuthError):
            forged.lookup([MatchKey(KeyKind.PHONE, JANE)])
        # A renewal is a new assertion: the expired session is replaced, once.
        emulator.expire_sessions()
        good.lookup([MatchKey(KeyKind.PHONE, JANE)])
        assert emulator.counts["login"] == 3


def test_a_misspelt_option_is_a_configuration_error_naming_it() -> None:
    with org() as emulator, pytest.raises(ConfigError) as raised:
        connect(emulator, marker_feild="X__c")
    assert raised.value.key == "targets.sf.marker_feild"


# -- the org's fidelity ------------------------------------------------------------------------


def test_phones_are_stored_as_sent() -> None:
    with org() as emulator:
        connector = connect(emulator)
        msg = message(1, phone="+44 20 7946 0958", first_name="Ann", last_name="Lee")
        one(connector.apply([replace(plan(1, msg=msg), caller_key="phone:+442079460958")]))
        [contact] = emulator.contacts()
        assert contact.phone == "+442079460958"  # what the connector sent, not reformatted


def test_queries_page_at_the_page_size_and_every_row_is_read() -> None:
    with org(query_page_size=2) as emulator:
        ids = [emulator.seed_contact(last_name=f"Doe{n}") for n in range(5)]
        connector = connect(emulator)
        connector.lookup([MatchKey(KeyKind.PHONE, JANE)])  # log in
        emulator.reset_counts()
        found = connector.read("contact", ids)
        assert sorted(found) == sorted(ids)
        assert emulator.counts["query"] == 3  # 2 + 2 + 1 rows behind nextRecordsUrl


def _get(emulator: SalesforceEmulator, path: str, **params: str) -> requests.Response:
    token = emulator.issue_session()
    return requests.get(
        f"{emulator.base_url}/services/data/v59.0/{path}",
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def test_the_org_refuses_what_salesforce_refuses() -> None:
    with org() as emulator:
        long_query = (
            "SELECT Id FROM Contact WHERE LastName IN ("
            + ",".join(f"'n{n:05d}'" for n in range(2000))
            + ")"
        )
        assert _get(emulator, "query", q=long_query).status_code == 414
        short = _get(emulator, "search", q="FIND {a} IN ALL FIELDS RETURNING Contact(Id)")
        assert short.status_code == 400
        assert short.json()[0]["errorCode"] == "INVALID_SEARCH"
        token = emulator.issue_session()
        task = requests.post(
            f"{emulator.base_url}/services/data/v59.0/sobjects/Task",
            json={"Subject": "x", "Status": "Done"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert task.status_code == 400
        assert task.json()[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"


def test_both_403_request_limits() -> None:
    with org(daily_limit=5) as emulator:
        connector = connect(emulator)
        daily = None
        for _ in range(5):
            try:
                connector.lookup([MatchKey(KeyKind.PHONE, JANE)])
            except RateLimited as exc:
                daily = exc
                break
        assert daily is not None
        assert daily.daily  # "TotalRequests Limit exceeded.": pause the target
        assert emulator.statuses[403] == 1  # and no retry against a spent day
    with org() as emulator:
        connector = connect(emulator, retries=2)
        connector.lookup([MatchKey(KeyKind.PHONE, JANE)])  # log in
        emulator.faults.rate_limit_ratio = 1.0  # every request: the concurrency limit
        emulator.reset_counts()
        with pytest.raises(RateLimited) as concurrent:
            connector.lookup([MatchKey(KeyKind.PHONE, JANE)])
        assert not concurrent.value.daily  # a pause of seconds, not a paused target
        assert emulator.statuses[403] == 3  # refused before it ran: repeated, twice


# -- duplicate rules ---------------------------------------------------------------------------


def test_duplicate_rule_on_create_links_the_record_it_names() -> None:
    with org(duplicate_rule=True) as emulator:
        # A spelling syncd's own SOQL look-up does not try: only the org's rule sees it.
        seeded = emulator.seed_contact(first_name="Jane", last_name="Doe", phone="415-555-1212")
        connector = connect(emulator, caller_key_field="")
        outcome = one(connector.apply([plan(1)]))
        assert (outcome.record_id, outcome.created) == (seeded, False)
        assert len(emulator.contacts()) == 1
        assert len(tasks_on(emulator, seeded)) == 1


def test_duplicate_rule_on_upsert_links_the_record_it_names() -> None:
    with org(duplicate_rule=True) as emulator:
        seeded = emulator.seed_contact(first_name="Jane", last_name="Doe", phone="415-555-1212")
        outcome = one(connect(emulator).apply([plan(1)]))
        assert (outcome.record_id, outcome.created) == (seeded, False)
        assert len(emulator.contacts()) == 1
        assert len(tasks_on(emulator, seeded)) == 1


def test_a_new_lead_that_duplicates_a_contact_joins_the_contact() -> None:
    with org(duplicate_rule=True) as emulator:
        seeded = emulator.seed_contact(first_name="Jane", last_name="Doe", phone="415-555-1212")
        outcome = one(connect(emulator, new_record="lead").apply([plan(1)]))
        assert (outcome.record_id, outcome.record_kind) == (seeded, "contact")
        assert emulator.records("Lead") == []
        assert len(tasks_on(emulator, seeded)) == 1


def test_duplicate_rule_on_update_keeps_the_match_and_logs_the_call() -> None:
    with org(duplicate_rule=True) as emulator:
        other = emulator.seed_contact(first_name="Jane", last_name="Doe", email="jane@acme.test")
        matched = emulator.seed_contact(first_name="Jane", last_name="Doe", phone="415-555-1212")
        update = plan(
            1, action=Action.UPDATE, record_id=matched, fields={"email": "jane@acme.test"}
        )
        outcome = one(connect(emulator).apply([update]))
        assert outcome.record_id == matched
        assert len(emulator.contacts()) == 2  # nothing created
        assert len(tasks_on(emulator, matched)) == 1
        assert tasks_on(emulator, other) == []
        assert emulator.record(matched).get("Email") is None  # the objected field unwritten


def test_duplicate_rule_on_a_new_account_uses_the_account_it_names() -> None:
    with org(duplicate_rule=True) as emulator:
        emulator.account_name_rule = True
        connector = connect(emulator)
        company = MatchKey(KeyKind.COMPANY, "acme")
        connector.lookup([company])  # the matcher's look-up: no Account named Acme yet
        acme = emulator.seed_company("ACME, Inc.")  # ...one appears right after
        outcome = one(connector.apply([plan(1, msg=message(1, company="Acme"))]))
        assert [a["Id"] for a in emulator.records("Account")] == [acme]
        assert emulator.record(str(outcome.record_id))["AccountId"] == acme
        assert len(tasks_on(emulator, str(outcome.record_id))) == 1


# -- Accounts and Leads ------------------------------------------------------------------------


def test_a_company_becomes_an_account_and_a_colleague_joins_it() -> None:
    with org(duplicate_rule=True) as emulator:
        connector = connect(emulator)
        first = one(connector.apply([plan(1, msg=message(1, company="Globex Corp"))]))
        bob = message(2, company="Globex Corp", first_name="Bob", last_name="Ray", phone="")
        second = one(
            connector.apply(
                [
                    replace(
                        plan(2, msg=bob, caller_key="name:globex|bob ray"),
                        fields={"first_name": "Bob", "last_name": "Ray"},
                    )
                ]
            )
        )
        [account] = emulator.records("Account")
        assert account["Name"] == "Globex Corp"
        for outcome in (first, second):
            assert emulator.record(str(outcome.record_id))["AccountId"] == account["Id"]
        assert len(emulator.records("Contact")) == 2


def test_new_account_costs_no_request_after_a_lookup() -> None:
    with org() as emulator:
        connector = connect(emulator)
        connector.lookup([MatchKey(KeyKind.COMPANY, "initech")])
        emulator.reset_counts()
        one(connector.apply([plan(1, msg=message(1, company="Initech"))]))
        assert emulator.total_requests == 1  # Account, Contact and Task: one composite
        assert emulator.operations()["collections.create"] == 2  # the Account, the Task


def test_an_existing_contact_without_an_account_is_linked_not_moved() -> None:
    with org() as emulator:
        acme = emulator.seed_company("Acme")
        private = emulator.seed_contact(first_name="Jane", last_name="Doe")
        placed = emulator.seed_contact(first_name="Jim", last_name="Roe", company_id=acme)
        connector = connect(emulator)
        fill = plan(1, msg=message(1, company="Umbrella"), action=Action.UPDATE)
        fill = replace(fill, record_id=private, fields={"company": "Umbrella"})
        one(connector.apply([fill]))
        [umbrella] = [a["Id"] for a in emulator.records("Account") if a["Name"] == "Umbrella"]
        assert emulator.record(private)["AccountId"] == umbrella
        assert emulator.record(placed)["AccountId"] == acme  # not in the plan: untouched


def test_match_only_links_what_exists_and_creates_nothing() -> None:
    with org() as emulator:
        acme = emulator.seed_company("Acme Inc.")
        connector = connect(emulator, account="match_only")
        known = one(connector.apply([plan(1, msg=message(1, company="ACME"))]))
        bob = message(2, company="Nowhere Ltd", first_name="Bob", last_name="Ray")
        unknown = one(connector.apply([plan(2, msg=bob, caller_key="phone:+14155550000")]))
        assert emulator.record(str(known.record_id))["AccountId"] == acme
        assert emulator.record(str(unknown.record_id)).get("AccountId") is None
        assert [a["Id"] for a in emulator.records("Account")] == [acme]


def test_leads_carry_the_company_and_no_account() -> None:
    with org() as emulator:
        outcome = one(
            connect(emulator, new_record="lead").apply([plan(1, msg=message(1, company="Hooli"))])
        )
        lead = emulator.record(str(outcome.record_id))
        assert lead is not None
        assert lead["Company"] == "Hooli"
        assert emulator.records("Account") == []


def test_account_none_leaves_contacts_private() -> None:
    with org() as emulator:
        outcome = one(
            connect(emulator, account="none").apply([plan(1, msg=message(1, company="X Co"))])
        )
        assert emulator.record(str(outcome.record_id)).get("AccountId") is None
        assert emulator.records("Account") == []


# -- calls, lengths ----------------------------------------------------------------------------


@pytest.mark.parametrize("marker_field", ["Syncd_Marker__c", ""])
def test_fields_are_cut_to_their_lengths_and_the_marker_survives(marker_field: str) -> None:
    with org() as emulator:
        connector = connect(emulator, marker_field=marker_field)
        msg = message(1, content="x" * 40_000)
        msg = replace(msg, message_id="9" * 256)
        long = plan(1, msg=msg, subject="Call from " + "J" * 400)
        outcome = one(connector.apply([long]))
        [task] = emulator.records("Task")
        assert len(task["Subject"]) <= 255
        assert len(task["Description"]) <= 32_000
        assert (task["TaskSubtype"], task["CallType"]) == ("Call", "Inbound")
        found = connector.find_activities([long.activity.marker])
        assert found[long.activity.marker].activity_id == outcome.activity_id
        # Updated in place, the call stays a call.
        again = replace(long, action=Action.LOG, record_id=outcome.record_id)
        again = replace(again, activity=replace(again.activity, existing_id=outcome.activity_id))
        one(connector.apply([again]))
        [task] = emulator.records("Task")
        assert (task["TaskSubtype"], task["CallType"]) == ("Call", "Inbound")


# -- answers that break off or make no sense ---------------------------------------------------


def _malformed_after_landing(emulator: SalesforceEmulator, endpoint: str) -> None:
    """The next ``endpoint`` request is carried out, then answered 200 with nonsense."""
    original = emulator.dispatch
    left = [1]

    def dispatch(request: Request) -> Response:
        response = original(request)
        if left[0] and request.path.rstrip("/").endswith(endpoint):
            left[0] -= 1
            return json_response({"surprise": True}, 200)
        return response

    emulator.dispatch = dispatch  # type: ignore[method-assign]


def test_a_malformed_200_is_retriable_and_writes_nothing_twice() -> None:
    with org() as emulator:
        connector = connect(emulator)
        _malformed_after_landing(emulator, "/composite")
        outcome = one(connector.apply([plan(1)]))
        assert len(emulator.contacts()) == 1
        assert len(emulator.records("Task")) == 1
        assert outcome.activity_id == emulator.records("Task")[0]["Id"]
    with org() as emulator:
        # An insert answered with nonsense may have landed: found by phone, not repeated.
        connector = connect(emulator, caller_key_field="")
        connector.lookup([MatchKey(KeyKind.PHONE, JANE)])
        _malformed_after_landing(emulator, "/composite/sobjects")
        one(connector.apply([plan(2)]))
        assert len(emulator.contacts()) == 1
        assert len(emulator.records("Task")) == 1
    with org() as emulator:
        connector = connect(emulator, retries=0)
        connector.lookup([MatchKey(KeyKind.PHONE, JANE)])
        _malformed_after_landing(emulator, "/search")
        with pytest.raises(RetriableError):
            connector.lookup([MatchKey(KeyKind.PHONE, JANE)])


class Trickle:
    """A server on loopback that answers every request one byte every ``every`` seconds,
    for at most ``limit`` seconds."""

    def __init__(self, every: float = 2.0, limit: float = 30.0) -> None:
        self.every, self.limit = every, limit
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        started = time.monotonic()
        with conn:
            conn.recv(65536)
            for byte in answer:
                if self.stopped.is_set() or time.monotonic() - started > self.limit:
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                self.stopped.wait(self.every)

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def test_a_trickling_org_is_cut_off_at_the_deadline() -> None:
    trickle = Trickle()
    try:
        options = {
            "auth": "session",
            "session_id": "00D!trickle",
            "instance_url": f"http://127.0.0.1:{trickle.port}",
            "timeout": 5.0,
            "deadline": 5.0,
            "retries": 0,
        }
        connector = create(TargetContext(name="sf", options=options))
        started = time.monotonic()
        with pytest.raises(RetriableError):
            connector.lookup([MatchKey(KeyKind.PHONE, JANE)])
        elapsed = time.monotonic() - started
        assert elapsed < 5.0 + 3.0, elapsed  # bounded: the deadline, not the trickle's 2 min
    finally:
        trickle.close()


# -- in doubt ----------------------------------------------------------------------------------


def test_applied_then_applied_again_in_doubt_writes_nothing() -> None:
    with org(duplicate_rule=True) as emulator:
        connector = connect(emulator)
        first = one(connector.apply([plan(1)]))
        writes = emulator.write_requests()
        requests_before = emulator.total_requests
        second = one(connector.apply([plan(1, in_doubt=True)]))
        assert second.reconciled
        assert not second.created
        assert (second.record_id, second.activity_id) == (first.record_id, first.activity_id)
        assert emulator.write_requests() == writes
        assert emulator.operations()["collections.upsert"] == 1
        assert emulator.total_requests == requests_before + 1  # one SOQL by marker
        assert len(emulator.contacts()) == 1
        assert len(emulator.records("Task")) == 1


def test_a_write_that_landed_unanswered_is_found_not_repeated() -> None:
    with org() as emulator:
        connector = connect(emulator, timeout=0.5, deadline=1.0, retries=0)
        connector.lookup([MatchKey(KeyKind.PHONE, JANE)])  # log in
        original = emulator.dispatch
        release = threading.Event()

        def landed_then_silent(request: Request) -> Response:
            response = original(request)  # the org carries the writes out...
            if request.path.endswith("/composite"):
                release.wait(3.0)  # ...and its answer never arrives in time
            return response

        emulator.dispatch = landed_then_silent  # type: ignore[method-assign]
        with pytest.raises(RetriableError):
            connector.apply([plan(1)])
        release.set()
        emulator.dispatch = original  # type: ignore[method-assign]
        assert len(emulator.contacts()) == 1  # it did land
        again = one(connector.apply([plan(1, in_doubt=True)]))
        assert again.reconciled
        assert len(emulator.contacts()) == 1
        assert len(emulator.records("Task")) == 1


def test_a_contact_that_landed_before_an_interruption_is_found_not_written() -> None:
    with org() as emulator:
        # The earlier attempt's upsert landed (the record carries our key); its Task did not.
        landed = emulator.seed_contact(first_name="Jane", last_name="Doe")
        emulator.record(landed)  # exists
        with emulator.lock:
            emulator._records[landed].fields["Syncd_Key__c"] = external_id(f"phone:{JANE}")
        connector = connect(emulator)
        outcome = one(connector.apply([plan(1, in_doubt=True)]))
        assert (outcome.record_id, outcome.created, outcome.reconciled) == (landed, False, False)
        assert emulator.operations()["collections.upsert"] == 0  # found, not written again
        assert len(emulator.contacts()) == 1
        assert len(tasks_on(emulator, landed)) == 1


def test_an_update_that_landed_is_not_written_again() -> None:
    with org() as emulator:
        record = emulator.seed_contact(first_name="Jane", last_name="Doe", email="jane@x.test")
        update = plan(1, action=Action.UPDATE, record_id=record, fields={"email": "jane@x.test"})
        outcome = one(connect(emulator).apply([replace(update, in_doubt=True)]))
        assert outcome.record_id == record
        assert emulator.operations()["collections.update"] == 0
        assert len(tasks_on(emulator, record)) == 1


# -- setup ------------------------------------------------------------------------------------


def test_setup_on_a_fresh_org_then_check_is_green(tmp_path: Path) -> None:
    options = {"salesforce": {"custom_fields": False}}
    with SandboxWorld(messages=5, targets=["salesforce"], emulator_options=options) as world:
        path = tmp_path / "syncd.toml"
        world.write_config(str(path), f"sqlite:///{tmp_path / 'state.db'}")
        settings = load_settings(path)
        out = io.StringIO()
        assert run_check(settings, out) == 1
        assert "Contact.Syncd_Key__c is missing" in out.getvalue()
        assert "syncd setup --target salesforce" in out.getvalue()

        dry = io.StringIO()
        assert run_setup(settings, "salesforce", dry_run=True, out=dry) == 1
        assert dry.getvalue().count("[would_create]") == 2

        done = io.StringIO()
        assert run_setup(settings, "salesforce", dry_run=False, out=done) == 0, done.getvalue()
        assert done.getvalue().count("[created]") == 2

        again = io.StringIO()
        assert run_setup(settings, "salesforce", dry_run=False, out=again) == 0
        assert again.getvalue().count("[present]") == 2
        out = io.StringIO()
        assert run_check(settings, out) == 0, out.getvalue()


def test_check_names_a_missing_picklist_value_and_a_read_only_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(org_schema.PICKLISTS, ("Task", "CallType"), ("Internal", "Outbound"))
    with org() as emulator:
        marker = emulator.schema["Task"]["Syncd_Marker__c"]
        emulator.schema["Task"]["Syncd_Marker__c"] = replace(
            marker, createable=False, updateable=False
        )
        results = {r.name: r for r in connect(emulator).check()}
        task = results["Task fields"]
        assert not task.ok
        assert "Task.CallType lacks the value 'Inbound'" in task.detail
        assert "Task.Syncd_Marker__c is read-only" in task.detail
        assert "Edit access" in task.detail
        assert results["Contact fields"].ok


def test_setup_without_permission_prints_the_steps(tmp_path: Path) -> None:
    with org(custom_fields=False, can_customize=False) as emulator:
        steps = connect(emulator).setup(dry_run=False)
        assert [s.state for s in steps] == ["manual"] * 2
        assert all("Fields & Relationships > New" in s.detail for s in steps)

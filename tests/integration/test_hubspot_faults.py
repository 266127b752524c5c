"""HubSpot as it really is: faults at the moment a write has landed, a trickling server, what
HubSpot refuses, and the lengths it allows. Everything is counted at the emulator.

The emulator's ``after_write`` hook runs once a write was carried out and before its answer
goes out; what it returns is sent instead. That is the moment a fault hurts most: the CRM
holds the write, the connector does not know.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hubspot import HubSpot
from syncd_hubspot import HubSpotConnector, create
from syncd_hubspot.emulator.api import HubSpotEmulator

from syncd.connector import TargetContext
from syncd.errors import RateLimited, RetriableError
from syncd.models import Action, ActivitySpec, KeyKind, MatchKey, Message, Plan
from syncd.sandbox.http import Request, Response, json_response

TARGET = "crm"
WHEN = datetime(2024, 5, 6, 15, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[HubSpotEmulator]:
    emu = HubSpotEmulator()  # search lags 3 s (the default): nothing here may depend on it
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def emulator(server: HubSpotEmulator) -> Iterator[HubSpotEmulator]:
    server.reset()
    server.after_write = None
    yield server
    server.after_write = None


def connect(emu: HubSpotEmulator, **options: Any) -> HubSpotConnector:
    connector = create(TargetContext(name=TARGET, options={**emu.connector_options(), **options}))
    assert isinstance(connector, HubSpotConnector)
    return connector


def plan(
    n: int,
    *,
    action: Action = Action.CREATE,
    record_id: str | None = None,
    emergency: bool = False,
    message_id: str | None = None,
    body: str = "Please call back",
    phone: str = "",
    fields: dict[str, str] | None = None,
) -> Plan:
    mid = message_id or f"m{n}"
    msg = Message(account="acme", message_id=mid, created_at=WHEN, content=body, phone=phone)
    keys = (MatchKey(KeyKind.PHONE, phone),) if phone.startswith("+") else ()
    return Plan(
        delivery_id=n,
        message=msg,
        action=action,
        record_id=record_id,
        caller_key=f"k{n}" if action is Action.CREATE else "",
        fields=fields if fields is not None else {"last_name": f"Caller{n}"},
        keys=keys,
        activity=ActivitySpec(
            marker=f"syncd:acme:{mid}",
            subject=f"Message {n}",
            body=body,
            occurred_at=WHEN,
            emergency=emergency,
        ),
    )


def answer_once(endpoint: str, replacement: Response) -> Any:
    """An ``after_write`` hook: the first ``endpoint`` write lands, its answer is replaced."""
    used: list[str] = []

    def hook(name: str, response: Response) -> Response | None:
        if name == endpoint and not used:
            used.append(name)
            return replacement
        return None

    return hook


# -- answers lost or garbled after the write landed -----------------------------------------


@pytest.mark.parametrize(
    "garbled",
    [
        Response(status=200, body=b'{"status": "COMPLETE", "results": [{"id": ', headers={}),
        Response(status=200, body=b"<html>502 Bad Gateway</html>", headers={}),
        Response(status=201, body=b"[]", headers={}),
        json_response({"status": "error", "message": "internal error"}, status=500),
        json_response({"status": "error", "message": "gateway timeout"}, status=504),
    ],
    ids=["truncated-json", "html", "not-an-object", "500", "504"],
)
def test_a_lost_or_garbled_answer_to_a_create_never_doubles_it(
    emulator: HubSpotEmulator, garbled: Response
) -> None:
    contact = emulator.seed_contact(first_name="Known")
    emulator.after_write = answer_once("notes.batch_create", garbled)
    connector = connect(emulator, max_retries=2, backoff_cap=0.01)
    plans = [plan(n, action=Action.LOG, record_id=contact) for n in (1, 2)]

    outcomes = connector.apply(plans)

    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    notes = emulator.activities()
    assert sorted(a.marker or "" for a in notes) == ["syncd:acme:m1", "syncd:acme:m2"]
    assert sorted(o.activity_id or "" for o in outcomes) == sorted(a.id for a in notes)
    assert emulator.counts["notes.batch_create"] == 1, "found by reading, not sent again"


def test_a_malformed_answer_with_no_retry_left_is_retriable_not_a_traceback(
    emulator: HubSpotEmulator,
) -> None:
    emulator.after_write = answer_once(
        "contacts.batch_upsert", Response(status=200, body=b"{", headers={})
    )
    connector = connect(emulator, max_retries=0)
    new = plan(1)

    # The contact landed, the answer is unreadable, nothing else was written: the call
    # fails as a whole, retriable (the daemon retries in doubt), never a traceback.
    with pytest.raises(RetriableError):
        connector.apply([new])

    [again] = connector.apply([replace(new, in_doubt=True)])
    assert again.ok
    assert not again.reconciled  # the note was still missing
    assert len(emulator.contacts()) == 1
    assert len(emulator.activities()) == 1


def test_a_daily_limit_after_the_contact_writes_pauses_the_target(
    emulator: HubSpotEmulator,
) -> None:
    def exhaust(name: str, response: Response) -> None:
        if name == "contacts.batch_upsert":
            emulator.daily_limit_reached = True  # the contacts landed; the notes will not

    emulator.after_write = exhaust
    connector = connect(emulator)
    plans = [plan(n, emergency=True) for n in (1, 2)]

    with pytest.raises(RateLimited) as caught:
        connector.apply(plans)

    assert caught.value.daily, "a DAILY 429 must reach the daemon, not become a quick retry"
    assert len(emulator.contacts()) == 2
    assert emulator.counts["notes.batch_create"] == 1  # answered DAILY, not retried
    emulator.daily_limit_reached = False
    emulator.after_write = None
    outcomes = connector.apply([replace(p, in_doubt=True) for p in plans])
    assert all(o.ok and not o.reconciled for o in outcomes)
    assert len(emulator.contacts()) == 2
    assert len(emulator.records("notes")) == 2
    assert len(emulator.records("tasks")) == 2


def test_a_note_found_in_doubt_without_its_task_gets_only_the_task(
    emulator: HubSpotEmulator,
) -> None:
    """The lost write an outside fault proxy found: note landed, the task never did."""
    emulator.after_write = answer_once("tasks.batch_create", emulator.daily_limit_answer())
    connector = connect(emulator)
    emergency = plan(1, emergency=True)
    # The task create answered DAILY; what landed before stays.
    with pytest.raises(RateLimited):
        connector.apply([emergency])
    emulator.delete_record(emulator.records("tasks")[0]["id"])  # as if the task never landed
    emulator.after_write = None
    emulator.reset_counts()

    [outcome] = connector.apply([replace(emergency, in_doubt=True)])

    assert outcome.ok
    assert not outcome.reconciled
    assert len(emulator.records("notes")) == 1
    assert len(emulator.records("tasks")) == 1
    assert emulator.counts["notes.batch_create"] == 0
    assert emulator.counts["tasks.batch_create"] == 1


# -- a trickling server ---------------------------------------------------------------------


@pytest.fixture
def trickler() -> Iterator[str]:
    """A server that answers one byte every 2 s and never finishes."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    def trickle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" * 100:
                if stop.wait(2.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_a_trickling_server_is_cut_off_at_the_deadline(trickler: str) -> None:
    connector = create(
        TargetContext(
            name=TARGET,
            options={
                "access_token": "t",
                "host": trickler,
                "timeout": 5.0,  # never trips: a byte comes every 2 s
                "deadline": 3.0,
                "max_retries": 0,
            },
        )
    )
    started = time.monotonic()
    with pytest.raises(RetriableError):
        connector.read("contact", ["1"])
    elapsed = time.monotonic() - started
    assert elapsed < 3.0 + 2.5, f"took {elapsed:.1f} s, the deadline is 3 s"


# -- what HubSpot refuses -------------------------------------------------------------------


def test_the_emulator_refuses_unique_values_and_id_property_reads_on_activities(
    emulator: HubSpotEmulator,
) -> None:
    client = HubSpot(access_token=emulator.token, host=emulator.base_url)
    for object_type in ("notes", "calls", "tasks"):
        status, body = _raw(
            client.crm.properties.core_api.create,
            object_type,
            {
                "name": "my_key",
                "label": "My key",
                "type": "string",
                "fieldType": "text",
                "groupName": f"{object_type[:-1]}information",
                "hasUniqueValue": True,
            },
        )
        assert status == 400, object_type
        assert body["category"] == "VALIDATION_ERROR"
        assert {"status", "message", "correlationId"} <= set(body)
        status, body = _raw(
            client.crm.objects.batch_api.read,
            object_type,
            {"inputs": [{"id": "syncd:acme:m1"}], "idProperty": "syncd_marker", "properties": []},
        )
        assert status == 400, object_type
    status, _ = _raw(
        client.crm.properties.core_api.create,
        "contacts",
        {
            "name": "my_key",
            "label": "My key",
            "type": "string",
            "fieldType": "text",
            "groupName": "contactinformation",
            "hasUniqueValue": True,
        },
    )
    assert status == 201


def test_the_connector_never_sends_has_unique_value_for_an_activity() -> None:
    """Whatever the connector does -- set up, check, deliver, reconcile -- no request asks
    HubSpot for a unique activity property (the emulator would refuse it; this catches it
    even where a refusal might be handled quietly)."""
    emu = HubSpotEmulator(provisioned=False)
    sent: list[tuple[str, Any]] = []
    dispatch = emu.dispatch

    def record(request: Request) -> Response:
        sent.append((request.path, request.json() if request.body else None))
        return dispatch(request)

    emu.dispatch = record  # type: ignore[method-assign]
    with emu:
        for activity in ("note", "call"):
            connector = connect(emu, activity=activity)
            connector.setup(dry_run=False)
            connector.check()
            contact = emu.seed_contact(first_name="Any")
            plans = [plan(n, action=Action.LOG, record_id=contact, emergency=True) for n in (1, 2)]
            connector.apply(plans)
            connector.apply([replace(p, in_doubt=True) for p in plans])
            connector.find_activities([p.activity.marker for p in plans])
    activity_paths = ("/notes", "/calls", "/tasks")
    unique_asks = [
        (path, body)
        for path, body in sent
        if path.startswith("/crm/v3/properties/")
        and path.endswith(activity_paths)
        and isinstance(body, dict)
        and body.get("hasUniqueValue")
    ]
    id_property_reads = [
        path
        for path, body in sent
        if path.endswith("/batch/read")
        and any(f"/objects{p}/" in path for p in activity_paths)
        and isinstance(body, dict)
        and body.get("idProperty")
    ]
    assert sum(1 for path, _ in sent if path.startswith("/crm/v3/properties/")) >= 6
    assert unique_asks == []
    assert id_property_reads == []


def test_batch_upsert_answers_207_and_the_caller_is_logged_on_the_email_holder(
    emulator: HubSpotEmulator,
) -> None:
    holder = emulator.seed_contact(first_name="Has", email="taken@example.com")
    connector = connect(emulator)
    plans = [
        plan(1, fields={"last_name": "One", "email": "taken@example.com"}),
        plan(2, fields={"last_name": "Two"}),
    ]

    outcomes = connector.apply(plans)

    assert emulator.statuses[207] == 1
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert outcomes[0].record_id == holder
    assert not outcomes[0].created
    assert outcomes[1].created
    assert len(emulator.contacts()) == 2


def test_archived_records_leave_reads_but_archived_true_finds_them(
    emulator: HubSpotEmulator,
) -> None:
    gone = emulator.seed_contact(first_name="Gone")
    kept = emulator.seed_contact(first_name="Kept")
    client = HubSpot(access_token=emulator.token, host=emulator.base_url)
    client.crm.objects.basic_api.archive("contacts", gone)

    connector = connect(emulator)
    assert set(connector.read("contact", [gone, kept])) == {kept}
    status, body = _raw(
        client.crm.objects.batch_api.read,
        "contacts",
        {"inputs": [{"id": gone}], "properties": ["firstname"]},
        archived=True,
    )
    assert status == 200
    assert [(r["id"], r["archived"]) for r in body["results"]] == [(gone, True)]


# -- lengths and the call engagement --------------------------------------------------------


def test_every_field_is_cut_to_hubspots_length_and_the_marker_survives(
    emulator: HubSpotEmulator,
) -> None:
    long_id = "M" * 256
    huge = "<&> caller text " * 8000  # ~128,000 characters, more once escaped
    connector = connect(emulator)
    for activity, object_type in (("note", "notes"), ("call", "calls")):
        connector = connect(emulator, activity=activity)
        p = plan(
            1 if activity == "note" else 2,
            message_id=f"{long_id}{activity}",
            body=huge,
            emergency=True,
            fields={"last_name": "L" * 70_000, "company": huge},
        )
        [outcome] = connector.apply([p])
        assert outcome.ok, outcome.error
        [stored] = emulator.records(object_type)[-1:]
        body = stored["hs_note_body" if activity == "note" else "hs_call_body"]
        assert len(body) <= 65_536
        assert body.endswith(f"<p>syncd:acme:{long_id}{activity}</p>")
        assert stored["syncd_marker"] == p.activity.marker
        task = emulator.records("tasks")[-1]
        assert len(task["hs_task_body"]) <= 65_536
        assert task["syncd_marker"] == p.activity.marker
        contact = next(c for c in emulator.contacts() if c.id == outcome.record_id)
        assert len(contact.last_name) <= 65_536
        [again] = connector.apply([replace(p, in_doubt=True)])
        assert again.reconciled


def test_activity_call_logs_an_answered_inbound_call(emulator: HubSpotEmulator) -> None:
    contact = emulator.seed_contact(first_name="Cal")
    owner = emulator.owner_ids()["ana.lopez@example.com"]  # HubSpot refuses an unknown owner
    connector = connect(emulator, activity="call", task_owner_id=owner)

    [outcome] = connector.apply(
        [plan(1, action=Action.LOG, record_id=contact, phone="+14153927461")]
    )

    [call] = emulator.records("calls")
    assert call["id"] == outcome.activity_id
    assert call["hs_call_direction"] == "INBOUND"
    assert call["hs_call_status"] == "COMPLETED"
    assert call["hs_call_from_number"] == "+14153927461"
    assert call["hs_call_title"] == "Message 1"
    assert "Please call back" in call["hs_call_body"]
    assert call["hs_timestamp"] == "2024-05-06T15:30:00.000Z"
    assert call["hubspot_owner_id"] == owner
    client = HubSpot(access_token=emulator.token, host=emulator.base_url)
    status, body = _raw(
        client.crm.associations.v4.batch_api.get_page,
        "calls",
        "contacts",
        {"inputs": [{"id": call["id"]}]},
    )
    assert status == 200
    [row] = body["results"]
    assert [t["toObjectId"] for t in row["to"]] == [int(contact)]
    assert [a["typeId"] for a in row["to"][0]["associationTypes"]] == [194]


def _raw(method: Any, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Call a generated client method and return (status, parsed JSON), errors included."""
    try:
        response = method(*args, _preload_content=False, **kwargs)
    except Exception as exc:  # each API subpackage has its own ApiException
        return int(getattr(exc, "status", 0)), json.loads(getattr(exc, "body", "") or "null")
    return response.status, json.loads(response.data or b"null")

"""The HubSpot transport under the one retry policy: our loop is the only one (urllib3 retries
nothing inside it), a connection never made is repeated even for a create, and a create that
may have landed is never repeated. Connections are counted where urllib3 opens them."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3.util.connection
from syncd_hubspot.emulator.api import HubSpotEmulator
from syncd_hubspot.options import parse_options
from syncd_hubspot.transport import InDoubt, Transport

from syncd.connector import TargetContext
from syncd.errors import RetriableError

TARGET = "crm"
CONTACT = {"inputs": [{"properties": {"firstname": "Jane", "phone": "+14155551212"}}]}


@pytest.fixture(scope="module")
def emulator() -> Iterator[HubSpotEmulator]:
    emu = HubSpotEmulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


class Connections:
    """Stands in for urllib3's ``create_connection``: counts each connection opened and
    refuses the first ``refuse`` of them, as a host with nothing listening would."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.opened = 0
        self._real = urllib3.util.connection.create_connection

    def __call__(self, *args: Any, **kwargs: Any) -> socket.socket:
        self.opened += 1
        if self.opened <= self.refuse:
            raise ConnectionRefusedError(111, "Connection refused")
        return self._real(*args, **kwargs)


def refusing(emu: HubSpotEmulator, monkeypatch: pytest.MonkeyPatch, refuse: int) -> Connections:
    """A fresh emulator behind a host that refuses the first ``refuse`` connections."""
    emu.reset()
    connections = Connections(refuse)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", connections)
    return connections


def transport(emu: HubSpotEmulator, slept: list[float], **options: Any) -> Transport:
    context = TargetContext(name=TARGET, options={**emu.connector_options(), **options})
    observed: list[int] = []
    return Transport(
        parse_options(context),
        target=TARGET,
        observe=lambda target, endpoint, status, waited: observed.append(status),
        sleep=slept.append,
    )


def create(t: Transport) -> Any:
    return t.call(
        "contacts.batch_create", t.objects_batch.create, "contacts", CONTACT, idempotent=False
    )


def test_refused_connections_are_tried_once_per_attempt_then_retriable(
    emulator: HubSpotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections = refusing(emulator, monkeypatch, 1000)
    slept: list[float] = []

    with pytest.raises(RetriableError) as caught:
        create(transport(emulator, slept, max_retries=3))

    # Not InDoubt: nothing was sent. Four attempts, one connection each (urllib3's own
    # Retry once made three per attempt), three waits between them.
    assert not isinstance(caught.value, InDoubt)
    assert "network error" in str(caught.value)
    assert connections.opened == 4
    assert len(slept) == 3
    assert emulator.contacts() == []


def test_a_create_whose_connection_failed_is_sent_again_and_lands_once(
    emulator: HubSpotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    connections = refusing(emulator, monkeypatch, 2)
    slept: list[float] = []

    answer = create(transport(emulator, slept, max_retries=3))

    assert answer.ok
    assert connections.opened == 3
    assert len(slept) == 2
    assert [c.first_name for c in emulator.contacts()] == ["Jane"]


def test_a_create_answered_5xx_is_in_doubt_and_not_sent_again(
    emulator: HubSpotEmulator,
) -> None:
    emulator.reset()
    emulator.faults.error_ratio = 1.0
    slept: list[float] = []
    try:
        with pytest.raises(InDoubt):
            create(transport(emulator, slept, max_retries=3))
    finally:
        emulator.faults.clear()
    assert slept == []  # raised at the first answer: no second try

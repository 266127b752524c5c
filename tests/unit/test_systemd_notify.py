"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.systemd import Watchdog, notify, watchdog_interval


class FakeManager:
    """The receiving end of ``$NOTIFY_SOCKET``, as systemd binds it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def receive(self) -> str:
        self.sock.settimeout(5)
        return self.sock.recv(4096).decode("utf-8")

    def pending(self) -> list[str]:
        """Every datagram already queued, without waiting for more."""
        self.sock.setblocking(False)
        received = []
        try:
            while True:
                received.append(self.sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return received


@pytest.fixture
def manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManager]:
    # A short directory of our own: AF_UNIX paths are limited to 108 bytes, which pytest's
    # tmp_path can exceed.
    with tempfile.TemporaryDirectory(prefix="sd") as directory:
        path = str(Path(directory) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield FakeManager(sock)


@pytest.fixture
def abstract_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeManager]:
    name = f"syncd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield FakeManager(sock)


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


def test_ready_and_status_arrive_in_one_datagram(manager: FakeManager) -> None:
    assert notify("READY=1", "STATUS=polling 2 accounts") is True
    assert manager.receive() == "READY=1\nSTATUS=polling 2 accounts"


def test_watchdog_ping_arrives(manager: FakeManager) -> None:
    assert notify("WATCHDOG=1") is True
    assert manager.receive() == "WATCHDOG=1"


def test_abstract_namespace_socket(abstract_manager: FakeManager) -> None:
    assert notify("READY=1") is True
    assert abstract_manager.receive() == "READY=1"


def test_newlines_cannot_smuggle_extra_assignments(manager: FakeManager) -> None:
    notify("STATUS=caller said\nREADY=1")
    assert manager.receive() == "STATUS=caller said READY=1"


def test_a_vanished_socket_is_reported_not_raised(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert notify("READY=1") is False


def test_unsupported_address_kinds_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert notify("READY=1") is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("120000000", None, 60.0),
        ("120000000", "self", 60.0),
        ("120000000", "1", None),  # inherited from a parent: not ours to ping
        ("0", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected


def test_watchdog_pings_while_healthy(manager: FakeManager) -> None:
    watchdog = Watchdog(lambda: True, period=0.01)
    assert watchdog.start() is True
    try:
        first, second = manager.receive(), manager.receive()
    finally:
        watchdog.stop()
    assert (first, second) == ("WATCHDOG=1", "WATCHDOG=1")
    assert not watchdog.running


def test_watchdog_withholds_pings_while_unhealthy(manager: FakeManager) -> None:
    asked = threading.Semaphore(0)

    def healthy() -> bool:
        asked.release()
        return False

    watchdog = Watchdog(healthy, period=0.01)
    watchdog.start()
    try:
        for _ in range(3):  # three ping opportunities passed up
            assert asked.acquire(timeout=5)
    finally:
        watchdog.stop()  # joins the thread, so any datagram it sent is already queued
    assert manager.pending() == []
    assert watchdog.pings == 0


def test_watchdog_treats_a_raising_check_as_unhealthy(manager: FakeManager) -> None:
    asked = threading.Semaphore(0)

    def healthy() -> bool:
        asked.release()
        raise RuntimeError("scheduler state unreadable")

    watchdog = Watchdog(healthy, period=0.01)
    watchdog.start()
    try:
        assert asked.acquire(timeout=5)
        assert asked.acquire(timeout=5)
    finally:
        watchdog.stop()
    assert manager.pending() == []


def test_watchdog_without_a_period_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    watchdog = Watchdog(lambda: True)
    assert watchdog.start() is False
    assert not watchdog.running

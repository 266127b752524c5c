"""Every exchange with the source has an overall deadline, not only per-read timeouts (#20).

A server that sends one byte every 2 s never trips a 5 s read timeout; the deadline cuts it
off, and the cut is retried like any timeout. The server is a raw socket on loopback, so the
trickle is exactly what the test says it is.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from syncd.config import parse_settings
from syncd.daemon import Daemon
from syncd.errors import RetriableError
from syncd.sandbox.world import SandboxWorld
from syncd.source import BerkshireClient

BODY = b'{"success": true, "data": []}'


class Trickle:
    """Answers every connection with one byte every ``every`` seconds: the headers in
    ``mode="headers"``, or whole headers then the body in ``mode="body"``."""

    def __init__(self, mode: str, every: float = 2.0) -> None:
        self.mode = mode
        self.every = every
        self.connections = 0
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._answer, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _answer(self, conn: socket.socket) -> None:
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n"
        )
        with conn:
            conn.recv(65536)
            try:
                if self.mode == "body":
                    conn.sendall(head)
                    slow = BODY
                else:
                    slow = head + BODY
                for index in range(len(slow)):
                    if self._stop.wait(self.every):
                        return
                    conn.sendall(slow[index : index + 1])
            except OSError:  # the client hung up: what the deadline is for
                return

    def close(self) -> None:
        self._stop.set()
        self._accept.join(timeout=5)
        self._server.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture(params=["headers", "body"])
def trickle(request: pytest.FixtureRequest) -> Iterator[Trickle]:
    server = Trickle(request.param)
    try:
        yield server
    finally:
        server.close()


def test_a_trickling_source_is_cut_off_at_the_deadline_and_retried(trickle: Trickle) -> None:
    waits: list[float] = []
    berkshire = BerkshireClient(
        f"http://127.0.0.1:{trickle.port}",
        "ops@example.com",
        "token-value",
        timeout=5.0,  # each byte comes within it: per-read timeouts alone never fire
        deadline_seconds=3.0,
        max_attempts=2,
        sleep=waits.append,
    )
    began = time.monotonic()
    with berkshire, pytest.raises(RetriableError, match="timed out") as caught:
        berkshire.fetch_window("acme", date(2024, 3, 10), date(2024, 3, 10), ZoneInfo("UTC"))
    elapsed = time.monotonic() - began
    # Two attempts, each cut off at its 3 s deadline (a bounded wait, not a timing assertion:
    # without the deadline one attempt alone would take about 2 s a byte for 100+ bytes).
    assert elapsed < 2 * 3.0 + 2.0, elapsed
    assert trickle.connections == 2  # retried like a timeout
    assert len(waits) == 1
    assert "after 2 attempts" in str(caught.value)


def test_the_daemons_source_client_keeps_the_deadline(
    trickle: Trickle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client the daemon builds (its transport counts requests for the metrics) cuts a
    trickling source off at the account's deadline too: it once wrapped httpx's plain
    transport, where only per-read timeouts held."""
    monkeypatch.setitem(BerkshireClient.__init__.__kwdefaults__, "max_attempts", 1)
    with SandboxWorld(messages=1, days=1, targets=["hubspot"]) as world:
        doc = world.settings_doc(f"sqlite:///{tmp_path / 'state.db'}")
    doc["accounts"]["demo"].update(
        base_url=f"http://127.0.0.1:{trickle.port}", timeout_seconds=5.0, deadline_seconds=3.0
    )
    settings = parse_settings(doc, environ={})
    daemon = Daemon(settings)
    try:
        client = daemon.client(settings.accounts["demo"])
        began = time.monotonic()
        with pytest.raises(RetriableError, match="timed out"):
            client.fetch_window("demo", date(2024, 3, 10), date(2024, 3, 10), ZoneInfo("UTC"))
        elapsed = time.monotonic() - began
    finally:
        daemon.close()
    # One attempt cut off at its 3 s deadline (bounded, not timed: without the deadline it
    # takes about 2 s a byte for 100+ bytes).
    assert elapsed < 3.0 + 2.0, elapsed
    assert trickle.connections == 1

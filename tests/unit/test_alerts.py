"""Alerts: what the webhook receives, deduplication, and failures that must not escape."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import select

from syncd.alerts import Alerter, dead_letter_alert
from syncd.errors import ConfigError
from syncd.logging import register_secret
from syncd.store.alertbox import enqueue
from syncd.store.schema import alerts
from syncd.store.store import Store

WEBHOOK = "https://hooks.example.invalid/services/T000/B000/s3cr3tw3bh00k"


class Recorder:
    """An httpx transport that keeps every request and answers with ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status, text="ok")

    @property
    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def alerter(recorder: Recorder, clock: Clock) -> Iterator[Alerter]:
    with Alerter(WEBHOOK, transport=recorder.transport, clock=clock, instance="host-1") as alerts:
        yield alerts


def _all_text(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False)


def _fields(payload: dict[str, Any]) -> dict[str, str]:
    return {f["title"]: f["value"] for f in payload["attachments"][0]["fields"]}


def test_disabled_without_url() -> None:
    alerter = Alerter(None)
    assert not alerter.enabled
    assert alerter.auth_failure("berkshire:main", "Invalid token") is False


def test_auth_failure_posts_slack_json(alerter: Alerter, recorder: Recorder) -> None:
    assert alerter.auth_failure("salesforce", "INVALID_SESSION_ID") is True
    (request,) = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == WEBHOOK
    assert request.headers["content-type"] == "application/json"
    (payload,) = recorder.payloads
    assert payload["text"].startswith("[syncd] Authentication failed at salesforce")
    assert _fields(payload) == {"Where": "salesforce", "Detail": "INVALID_SESSION_ID"}
    assert payload["attachments"][0]["color"] == "#d00000"
    assert "host-1" in payload["attachments"][0]["footer"]


def test_identical_alerts_are_sent_once_per_interval(
    alerter: Alerter, recorder: Recorder, clock: Clock
) -> None:
    assert alerter.daily_limit("hubspot") is True
    clock.now += 299
    assert alerter.daily_limit("hubspot") is False
    assert alerter.daily_limit("salesforce") is True  # a different alert is not a duplicate
    clock.now += 2
    assert alerter.daily_limit("hubspot") is True
    assert len(recorder.requests) == 3


def test_dead_letter_names_the_message(alerter: Alerter, recorder: Recorder) -> None:
    alerter.dead_letter("hubspot", "msg-42", "property 'phone' is invalid")
    (payload,) = recorder.payloads
    assert "msg-42" in payload["text"]
    assert _fields(payload)["Reason"] == "property 'phone' is invalid"


def test_emergency_masks_the_caller_phone(alerter: Alerter, recorder: Recorder) -> None:
    alerter.emergency("main", "msg-7", "(415) 555-0199", "Pipe burst, call back on 415-555-0199")
    (payload,) = recorder.payloads
    fields = _fields(payload)
    assert fields["Caller"].endswith("99")
    assert fields["Caller"].startswith("+1")
    assert "555" not in _all_text(payload)
    assert "0199" not in _all_text(payload)
    assert fields["Summary"].startswith("Pipe burst, call back on")


def test_caller_text_cannot_ping_or_link(alerter: Alerter, recorder: Recorder) -> None:
    alerter.emergency("main", "msg-8", "Unknown", "<!channel> see <https://evil.example|invoice>")
    summary = _fields(recorder.payloads[0])["Summary"]
    assert summary == "&lt;!channel&gt; see &lt;https://evil.example|invoice&gt;"


def test_registered_secrets_are_cut_out(alerter: Alerter, recorder: Recorder) -> None:
    register_secret("tok-9f8e7d6c5b4a")
    alerter.auth_failure("berkshire:main", "token tok-9f8e7d6c5b4a refused")
    assert "tok-9f8e7d6c5b4a" not in recorder.requests[0].content.decode()


def test_long_details_are_bounded(alerter: Alerter, recorder: Recorder) -> None:
    alerter.dead_letter("sf", "msg-1", "x" * 10_000)
    assert len(_fields(recorder.payloads[0])["Reason"]) <= 500


def test_a_refusing_webhook_warns_without_the_url(clock: Clock) -> None:
    recorder = Recorder(status=500)
    alerter = Alerter(WEBHOOK, transport=recorder.transport, clock=clock)
    with structlog.testing.capture_logs() as logs:
        assert alerter.daily_limit("hubspot") is False
    assert [(log["log_level"], log.get("status")) for log in logs] == [("warning", 500)]
    assert "s3cr3tw3bh00k" not in repr(logs)
    # A failed alert is not remembered as sent: the next attempt goes out.
    recorder.status = 200
    assert alerter.daily_limit("hubspot") is True
    assert len(recorder.requests) == 2


def test_an_unreachable_webhook_never_raises(clock: Clock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    alerter = Alerter(WEBHOOK, transport=httpx.MockTransport(refuse), clock=clock)
    with structlog.testing.capture_logs() as logs:
        assert alerter.auth_failure("hubspot", "401") is False
    assert logs[0]["error"] == "ConnectError"
    assert "s3cr3tw3bh00k" not in repr(logs)


def test_a_url_that_is_not_http_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Alerter("ftp://hooks.example.invalid/s3cr3t")
    assert "s3cr3t" not in str(caught.value)


# -- over real loopback HTTP --------------------------------------------------------------------


class Webhook:
    """A loopback HTTP server that records what it is posted, like a chat webhook."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/abc"


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()


def test_posts_over_real_http(webhook: Webhook) -> None:
    with Alerter(webhook.url, timeout=5) as alerter:
        assert alerter.dead_letter("hubspot", "msg-1", "gone") is True
        assert alerter.dead_letter("hubspot", "msg-1", "gone") is False
    ((path, content_type, payload),) = webhook.received
    assert path == "/hooks/abc"
    assert content_type == "application/json"
    assert payload["text"] == "[syncd] Message msg-1 could not be delivered to hubspot"


def test_a_closed_port_never_raises(webhook: Webhook) -> None:
    url = webhook.url
    webhook.server.shutdown()
    webhook.server.server_close()
    with Alerter(url, timeout=2) as alerter:
        assert alerter.daily_limit("hubspot") is False


# -- the alert outbox: written first, sent by a retrying sender --------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'state.db'}")
    s.migrate()
    yield s
    s.close()


class Wall:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _rows(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(alerts).order_by(alerts.c.id)))


def test_an_alert_the_webhook_refused_is_kept_and_retried(store: Store) -> None:
    recorder, wall = Recorder(status=503), Wall()
    alerter = Alerter(WEBHOOK, transport=recorder.transport, store=store, wall=wall)

    assert alerter.emergency("main", "msg-7", "(415) 555-0199", "pipe burst") is False
    [row] = _rows(store)
    assert (row.sent_at, row.attempts, row.last_error) == (None, 1, "HTTP 503")
    # The daemon's one backoff with jitter: between half and all of 30 s after the failure.
    wait = (row.next_attempt_at.replace(tzinfo=UTC) - wall.now).total_seconds()
    assert 15.0 <= wait <= 30.0

    recorder.status = 200
    assert alerter.flush() == set()  # backing off: not due yet
    wall.now += timedelta(seconds=31)
    assert alerter.flush() == {"emergency:main:msg-7"}
    assert len(recorder.requests) == 2
    [row] = _rows(store)
    assert row.sent_at is not None


def test_an_alert_is_sent_once_across_restarts(store: Store) -> None:
    recorder = Recorder()
    for _ in range(2):  # a second daemon (a restart, a replica) sees the same emergency
        with Alerter(WEBHOOK, transport=recorder.transport, store=store) as alerter:
            alerter.emergency("main", "msg-7", "Unknown", "pipe burst")
            alerter.flush()
    assert len(recorder.requests) == 1
    assert len(_rows(store)) == 1


def test_dead_letters_recorded_with_their_outcome_are_sent_by_the_next_flush(
    store: Store,
) -> None:
    when = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    row = dead_letter_alert("hubspot", "main", "msg-9", "bad email jane@example.com", when)
    enqueue(store, [row], when)
    recorder = Recorder()
    alerter = Alerter(WEBHOOK, transport=recorder.transport, store=store)

    assert alerter.flush() == {row.key}
    fields = _fields(recorder.payloads[0])
    assert fields["Reason"] == "bad email j***@e***.com"
    assert "msg-9" in recorder.payloads[0]["text"]


def test_emails_are_masked_in_every_alert(alerter: Alerter, recorder: Recorder) -> None:
    alerter.emergency("main", "msg-1", "Unknown", "write to jane.doe@example.com or call")
    alerter.auth_failure("hubspot", "user ops@acme.example refused")
    text = "".join(_all_text(p) for p in recorder.payloads)
    assert "jane.doe@example.com" not in text
    assert "ops@acme.example" not in text
    assert "j***@e***.com" in text


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.invalid/s3cr3t",
        "http://localhost.evil.example/s3cr3t",
        "http://localhost@evil.example/s3cr3t",
        "http://10.0.0.1/s3cr3t",
    ],
)
def test_a_plain_http_webhook_off_this_host_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Alerter(url)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/h", "http://localhost:9/h", "http://[::1]:9/h"]
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    Alerter(url).close()


def test_an_emergency_is_written_with_its_message_and_sent_once(store: Store) -> None:
    from syncd.alerts import emergency_alerts
    from syncd.models import Message

    store.alerts_for_new = emergency_alerts
    flagged = Message(
        account="main", message_id="m-9", phone="(415) 555-0199", content="flood", is_emergency=True
    )
    calm = Message(account="main", message_id="m-10", content="call back")
    store.ingest("main", [flagged, calm], ["crm"])
    [row] = _rows(store)  # in the messages' own transaction, before anything was sent
    assert (row.key, row.sent_at) == ("emergency:main:m-9", None)
    assert "0199" not in json.dumps(row.payload)

    recorder = Recorder()
    with Alerter(WEBHOOK, transport=recorder.transport, store=store) as alerter:
        alerter.emergency("main", "m-9", "(415) 555-0199", "flood")  # the window callback
        alerter.flush()
    assert len(recorder.requests) == 1
    assert _fields(recorder.payloads[0])["Message"] == "m-9"

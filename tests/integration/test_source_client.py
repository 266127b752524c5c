"""BerkshireClient against the real simulator over loopback: ranges, details, auth, retries."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from structlog.testing import capture_logs

from syncd.errors import AuthError, RateLimited, RetriableError
from syncd.sandbox.berkshire import BerkshireSimulator, Envelope, KeyStyle
from syncd.sandbox.http import Request, Response, json_response
from syncd.source import BerkshireClient, SourceError
from syncd.source.client import parse_retry_after

NY = ZoneInfo("America/New_York")
EMAIL, TOKEN = "ops@example.com", "s3cr3t-t0ken-value"


def item(message_id: str, utc: str, **extra: object) -> dict[str, object]:
    return {
        "message id": message_id,
        "utc created at": utc,
        "first name": "Ann",
        "phone": "212-867-5309",
        "content": "Call back",
        # A detail field: the item is the whole message (a list in the "full" shape).
        "content with additional details": "",
        **extra,
    }


class Waits(list[float]):
    """An injected ``sleep`` that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class Ceiling(random.Random):
    """Jitter that always picks the top of its range, so backoff is exactly visible."""

    def uniform(self, a: float, b: float) -> float:
        return b


@pytest.fixture(scope="module")
def server() -> Iterator[BerkshireSimulator]:
    # One server for the module: starting and stopping one costs about half a second.
    with BerkshireSimulator(email=EMAIL, token=TOKEN, tz="America/New_York") as simulator:
        yield simulator


@pytest.fixture
def sim(server: BerkshireSimulator) -> BerkshireSimulator:
    server.reset()
    server.summary_only = False
    server.faults.retry_after = 1.0
    return server


@pytest.fixture(scope="module")
def generated() -> Iterator[BerkshireSimulator]:
    end = datetime(2024, 3, 8, 12, tzinfo=UTC)
    with BerkshireSimulator.generated(60, 12, days=3, seed=7, end=end) as simulator:
        yield simulator


class InFlight(httpx.BaseTransport):
    """The real HTTP transport, counting requests in flight and the most ever at once."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.now = self.most = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            return self._inner.handle_request(request)
        finally:
            with self._lock:
                self.now -= 1

    def close(self) -> None:
        self._inner.close()


def detail_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("berkshire-detail")]


def client(sim: BerkshireSimulator, **kw: Any) -> BerkshireClient:
    kw.setdefault("sleep", Waits())
    return BerkshireClient(sim.base_url, kw.pop("email", EMAIL), kw.pop("token", TOKEN), **kw)


# -- ranges and spellings ---------------------------------------------------------------------


def test_list_filters_whole_days_in_the_account_time_zone(sim: BerkshireSimulator) -> None:
    sim.add_messages(
        [
            item("before", "2024-03-10T04:59:59Z"),  # 23:59:59 EST on 03-09
            item("first", "2024-03-10T05:00:00Z"),  # 00:00 EST on 03-10
            item("last", "2024-03-12T03:59:59Z"),  # 23:59:59 EDT on 03-11 (DST began 03-10)
            item("after", "2024-03-12T04:00:00Z"),  # 00:00 EDT on 03-12
        ]
    )
    with client(sim) as berkshire:
        result = berkshire.fetch_window("acme", date(2024, 3, 10), date(2024, 3, 11), NY)
    assert [m.message_id for m in result.messages] == ["first", "last"]
    assert result.messages[0].created_at == datetime(2024, 3, 10, 5, tzinfo=UTC)
    assert sim.count_between(date(2024, 3, 10), date(2024, 3, 11)) == 2
    assert sim.counts["list"] == 1


@pytest.mark.parametrize("key_style", ["spaces", "snake", "camel"])
@pytest.mark.parametrize("envelope", ["success", "data", "list"])
def test_every_spelling_and_envelope_reads_the_same(
    generated: BerkshireSimulator, key_style: KeyStyle, envelope: Envelope
) -> None:
    sim = generated
    sim.reset_counts()
    sim.key_style, sim.envelope = key_style, envelope
    with client(sim, email="demo@example.com", token="sandbox-token") as berkshire:
        result = berkshire.fetch_window("acme", date(2024, 3, 1), date(2024, 3, 9), NY)
    assert result.quarantined == []
    assert len(result.messages) == 60
    # The documented shape: summaries in the list, one detail request per message.
    assert sim.counts["detail"] == 60
    emails = {m.custom_fields.get("Email") or m.custom_fields.get("email") for m in result.messages}
    assert emails - {None}  # custom fields survived the re-spelling
    assert all(m.created_at is not None and not m.summary for m in result.messages)
    assert sorted(m.message_id for m in result.messages) == sorted(
        str(m["message id"]) for m in sim.messages
    )


# -- details ----------------------------------------------------------------------------------


def test_summaries_are_completed_by_detail_fetches(sim: BerkshireSimulator) -> None:
    sim.summary_only = True
    sim.add_messages(
        [item(f"M{n}", "2024-03-10T15:00:00Z", **{"caller id": f"x{n}"}) for n in range(5)]
    )
    with client(sim) as berkshire:
        result = berkshire.fetch_window("acme", date(2024, 3, 10), date(2024, 3, 10), NY)
    assert sim.counts["detail"] == 5
    assert [m.caller_id for m in result.messages] == [f"x{n}" for n in range(5)]
    assert all(not m.summary and m.content == "Call back" for m in result.messages)


@pytest.mark.parametrize(("mode", "details"), [("never", 0), ("always", 3), ("auto", 0)])
def test_fetch_details_setting(sim: BerkshireSimulator, mode: str, details: int) -> None:
    sim.add_messages([item(f"M{n}", "2024-03-10T15:00:00Z") for n in range(3)])
    with client(sim, fetch_details=mode) as berkshire:
        result = berkshire.fetch_window("acme", date(2024, 3, 10), date(2024, 3, 10), NY)
    assert len(result.messages) == 3
    assert sim.counts["detail"] == details


def test_summary_only_with_details_off_keeps_summaries(sim: BerkshireSimulator) -> None:
    sim.summary_only = True
    sim.add_messages([item("M1", "2024-03-10T15:00:00Z")])
    with client(sim, fetch_details="never") as berkshire:
        (message,) = berkshire.fetch_window("a", date(2024, 3, 10), date(2024, 3, 10), NY).messages
    assert message.summary is True
    assert message.phone == ""
    assert sim.counts["detail"] == 0


@pytest.mark.parametrize("concurrency", [1, 4])
def test_detail_answers_that_lack_or_garble_the_message(concurrency: int) -> None:
    class Flaky(BerkshireSimulator):
        def _detail(self, request: Request) -> Response:
            match request.params["id"]:
                case "gone":
                    return json_response({"success": False, "info": "Message not found"}, 404)
                case "garbled":
                    return json_response({"data": {"message id": {"oops": 1}, "phone": "x"}})
                case _:  # a detail answer without any id: the listed id is used
                    return json_response({"data": {"phone": "212-867-5309", "content": "full"}})

    with (
        Flaky(email=EMAIL, token=TOKEN, summary_only=True) as flaky,
        client(flaky, detail_concurrency=concurrency) as berkshire,
    ):
        flaky.add_messages([item(i, "2024-03-10T15:00:00Z") for i in ("gone", "garbled", "ok")])
        result = berkshire.fetch_window("acme", date(2024, 3, 10), date(2024, 3, 10), NY)
    assert [(m.message_id, m.summary, m.content) for m in result.messages] == [
        ("gone", True, ""),  # vanished between list and detail: the summary is kept
        ("ok", False, "full"),
    ]
    assert result.messages[1].created_at == datetime(2024, 3, 10, 15, tzinfo=UTC)  # from the list
    (garbled,) = result.quarantined
    assert garbled.message_id == "garbled"
    assert garbled.reason == "detail: message id is a dict, not a string"
    assert flaky.counts["detail"] == 3


def summaries(sim: BerkshireSimulator, count: int) -> None:
    """``count`` summary-only messages ``M0``.. listed in an order that is not their time's."""
    sim.summary_only = True
    sim.add_messages(
        [
            item(f"M{n}", f"2024-03-10T{n * 7 % 24:02d}:{n:02d}:00Z", **{"caller id": f"x{n}"})
            for n in range(count)
        ]
    )


def test_concurrent_details_keep_the_list_order(sim: BerkshireSimulator) -> None:
    summaries(sim, 30)
    windows = []
    before = set(detail_threads())  # other tests' clients not closed yet
    for concurrency in (1, 4):
        sim.reset_counts()
        with client(sim, detail_concurrency=concurrency) as berkshire:
            windows.append(berkshire.fetch_window("acme", date(2024, 3, 9), date(2024, 3, 10), NY))
        assert sim.counts["detail"] == 30
    sequential, concurrent = windows
    assert concurrent.messages == sequential.messages
    assert [m.message_id for m in concurrent.messages] == [f"M{n}" for n in range(30)]
    assert [m.caller_id for m in concurrent.messages] == [f"x{n}" for n in range(30)]
    assert not any(m.summary for m in concurrent.messages)
    assert set(detail_threads()) <= before  # the pool is gone with the client


@pytest.mark.parametrize("concurrency", [1, 2, 4])
def test_details_overlap_up_to_the_bound(sim: BerkshireSimulator, concurrency: int) -> None:
    summaries(sim, 12)
    sim.faults.delay = 0.05  # every answer takes a while, so fetches that can overlap do
    transport = InFlight()
    with client(sim, detail_concurrency=concurrency, transport=transport) as berkshire:
        result = berkshire.fetch_window("acme", date(2024, 3, 9), date(2024, 3, 10), NY)
    assert len(result.messages) == 12
    assert sim.counts["detail"] == 12
    if concurrency == 1:
        assert transport.most == 1
    else:
        assert 1 < transport.most <= concurrency


def test_detail_concurrency_must_be_positive(sim: BerkshireSimulator) -> None:
    with pytest.raises(ValueError, match="detail_concurrency"):
        client(sim, detail_concurrency=0)


class FailingDetail(BerkshireSimulator):
    """Answers the detail of ``M0`` with a refused token (``auth``) or a 500 (``500``)."""

    failure = "auth"

    def _detail(self, request: Request) -> Response:
        if request.params["id"] != "M0":
            return super()._detail(request)
        if self.failure == "auth":
            return json_response({"success": False, "info": "Invalid token", "data": {}}, 404)
        return json_response({"success": False, "info": "Internal server error"}, 500)


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize(("failure", "error"), [("auth", AuthError), ("500", RetriableError)])
def test_a_failed_detail_fails_the_window(
    concurrency: int, failure: str, error: type[Exception]
) -> None:
    with FailingDetail(email=EMAIL, token=TOKEN) as failing:
        failing.failure = failure
        summaries(failing, 40)
        failing.faults.delay = 0.01  # so the fetches after M0 are still queued when it fails
        berkshire = client(failing, detail_concurrency=concurrency, max_attempts=2)
        with berkshire:
            with pytest.raises(error):
                berkshire.fetch_window("acme", date(2024, 3, 9), date(2024, 3, 10), NY)
            fetched = failing.counts["detail"]
            time.sleep(0.1)  # ten answers' time: nothing is still fetching once the error is out
            assert failing.counts["detail"] == fetched
        attempts = 1 if failure == "auth" else 2  # an auth error is not retried
        if concurrency == 1:
            assert failing.counts["detail"] == attempts  # nothing after M0
        else:  # the fetches queued behind the failure were dropped, not all run
            assert failing.counts["detail"] < attempts + 39


def test_malformed_details_are_quarantined_in_list_order(sim: BerkshireSimulator) -> None:
    class Garbling(BerkshireSimulator):
        def _detail(self, request: Request) -> Response:
            if int(request.params["id"][1:]) % 5 == 2:
                return json_response({"data": {"message id": ["bad"], "phone": "x"}})
            return super()._detail(request)

    with Garbling(email=EMAIL, token=TOKEN) as garbling:
        summaries(garbling, 20)
        garbling.extra_items = ["junk"]
        for concurrency in (1, 4):
            with client(garbling, detail_concurrency=concurrency) as berkshire:
                result = berkshire.fetch_window("acme", date(2024, 3, 9), date(2024, 3, 10), NY)
            assert [q.message_id for q in result.quarantined] == [None, "M2", "M7", "M12", "M17"]
            assert result.quarantined[1].reason == "detail: message id is a list, not a string"
            expected = [f"M{n}" for n in range(20) if n % 5 != 2]
            assert [m.message_id for m in result.messages] == expected


def test_get_raw_quotes_the_id_and_returns_none_when_unknown(sim: BerkshireSimulator) -> None:
    sim.add_messages([item("A/B 7?x", "2024-03-10T15:00:00Z")])
    with client(sim) as berkshire:
        found = berkshire.get_raw("A/B 7?x")
        missing = berkshire.get_raw("nope")
    assert found is not None
    assert found["message id"] == "A/B 7?x"
    assert missing is None
    assert sim.counts["detail"] == 2


# -- malformed items --------------------------------------------------------------------------


def test_a_quarantined_item_does_not_stop_the_rest(sim: BerkshireSimulator) -> None:
    sim.add_messages(
        [item("good-1", "2024-03-10T15:00:00Z"), item("good-2", "2024-03-10T16:00:00Z")]
    )
    sim.extra_items = [
        {"first name": "No id\u0000"},  # NUL would break a PostgreSQL insert of the raw item
        {"message id": {"nested": "dict"}},
        "just a string",
        None,
        item("good-1", "2024-03-10T17:00:00Z", content="edited"),  # duplicate: last one wins
    ]
    with client(sim) as berkshire:
        result = berkshire.fetch_window("acme", date(2024, 3, 10), date(2024, 3, 10), NY)
    assert [m.message_id for m in result.messages] == ["good-2", "good-1"]
    assert result.messages[1].content == "edited"
    reasons = [q.reason for q in result.quarantined]
    assert reasons == [
        "missing message id",
        "message id is a dict, not a string",
        "item is a str, not an object",
        "item is a NoneType, not an object",
    ]
    assert result.quarantined[0].raw == {"first name": "No id"}
    assert result.quarantined[1].raw == {"message id": {"nested": "dict"}}


# -- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize(("email", "token"), [(EMAIL, "wrong-token"), ("other@example.com", TOKEN)])
def test_refused_credentials_are_an_auth_error_without_the_token(
    sim: BerkshireSimulator, email: str, token: str
) -> None:
    with capture_logs() as logs, client(sim, email=email, token=token) as berkshire:
        with pytest.raises(AuthError) as caught:
            berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
        with pytest.raises(AuthError):
            berkshire.get_raw("M1")  # a 404 that means "bad token", not "no such message"
    assert caught.value.where == "berkshire"
    assert "token was refused" in str(caught.value)
    assert token not in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert token not in repr(logs)
    assert sim.counts["list"] == 1  # auth failures are not retried


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_are_auth_errors(status: int) -> None:
    class Forbidding(BerkshireSimulator):
        def _list(self, request: Request) -> Response:
            return json_response({"message": "Forbidden"}, status)

    with (
        Forbidding(email=EMAIL, token=TOKEN) as forbidding,
        client(forbidding) as berkshire,
        pytest.raises(AuthError, match=f"HTTP {status}"),
    ):
        berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    assert forbidding.counts["list"] == 1


def test_auth_error_is_not_confused_with_a_missing_message(sim: BerkshireSimulator) -> None:
    with client(sim) as berkshire:
        assert berkshire.get_raw("missing") is None


# -- retries ----------------------------------------------------------------------------------


def test_429_retry_after_is_honoured_then_success(sim: BerkshireSimulator) -> None:
    sim.add_messages([item("M1", "2024-03-10T15:00:00Z")])
    sim.faults.rate_limit_ratio = 1.0
    sim.faults.retry_after = 2.5

    class ClearAfterTwo(Waits):
        def __call__(self, seconds: float) -> None:
            super().__call__(seconds)
            if len(self) == 2:
                sim.faults.rate_limit_ratio = 0.0

    waits = ClearAfterTwo()
    with client(sim, sleep=waits) as berkshire:
        items = berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    assert len(items) == 1
    assert waits == [2.5, 2.5]
    assert sim.counts["list"] == 3
    assert sim.faults.injected["429"] == 2


def test_retry_after_is_capped_and_rate_limit_surfaces(sim: BerkshireSimulator) -> None:
    sim.faults.rate_limit_ratio = 1.0
    sim.faults.retry_after = 3600
    waits = Waits()
    berkshire = client(sim, sleep=waits, max_attempts=3, backoff_cap=7.0)
    with berkshire, pytest.raises(RateLimited) as caught:
        berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    assert waits == [7.0, 7.0]
    assert caught.value.retry_after == 3600
    assert sim.counts["list"] == 3


def test_retry_after_as_an_http_date() -> None:
    class DatedSimulator(BerkshireSimulator):
        def fault_response(self, fault: str, request: Request) -> Response:
            when = datetime.now(UTC) + timedelta(seconds=30)
            return json_response(
                {"success": False}, 429, {"Retry-After": format_datetime(when, usegmt=True)}
            )

    with DatedSimulator(email=EMAIL, token=TOKEN) as sim:
        sim.faults.rate_limit_ratio = 1.0
        waits = Waits()
        with client(sim, sleep=waits, max_attempts=2) as berkshire, pytest.raises(RateLimited):
            berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    (wait,) = waits
    assert 20 < wait <= 30


def test_5xx_backoff_is_exponential_capped_then_retriable_error(sim: BerkshireSimulator) -> None:
    sim.faults.error_ratio = 1.0
    waits = Waits()
    berkshire = client(
        sim, sleep=waits, max_attempts=6, backoff_base=0.5, backoff_cap=3.0, rng=Ceiling()
    )
    with berkshire, pytest.raises(RetriableError) as caught:
        berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    assert not isinstance(caught.value, RateLimited)
    assert "failed after 6 attempts: HTTP 500" in str(caught.value)
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]  # doubling, then the cap
    assert sim.counts["list"] == 6


def test_full_jitter_stays_under_the_doubling_ceiling(sim: BerkshireSimulator) -> None:
    sim.faults.outage(3600)  # 503 to everything
    waits = Waits()
    berkshire = client(
        sim, sleep=waits, max_attempts=8, backoff_base=1.0, backoff_cap=16.0, rng=random.Random(3)
    )
    with berkshire, pytest.raises(RetriableError):
        berkshire.get_raw("M1")
    ceilings = [min(16.0, 2.0**n) for n in range(7)]
    assert len(waits) == 7
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))
    assert len(set(waits)) == 7  # jittered, not a fixed schedule
    assert sim.counts["detail"] == 8


def test_slow_answers_time_out_then_retriable_error(sim: BerkshireSimulator) -> None:
    sim.faults.delay = 1.0
    berkshire = client(sim, timeout=0.2, max_attempts=2)
    with berkshire, pytest.raises(RetriableError) as caught:
        berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    assert "timed out" in str(caught.value)
    assert sim.counts["list"] == 2


def test_network_errors_are_retried_then_retriable_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits = Waits()
    with (
        BerkshireClient(
            f"http://127.0.0.1:{port}", EMAIL, TOKEN, sleep=waits, max_attempts=3
        ) as berkshire,
        pytest.raises(RetriableError) as caught,
    ):
        berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    assert "network error" in str(caught.value)
    assert len(waits) == 2


def test_garbled_answers_are_source_errors() -> None:
    class Garbled(BerkshireSimulator):
        def _list(self, request: Request) -> Response:
            body = b'{"data": [{"message id": "M1"'  # cut short
            return Response(200, body, {"Content-Type": "application/json"})

    with (
        Garbled(email=EMAIL, token=TOKEN) as garbled,
        client(garbled) as berkshire,
        pytest.raises(SourceError, match="not JSON"),
    ):
        berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    assert garbled.counts["list"] == 1  # a source fault is not retried in a loop


def test_an_unexpected_status_is_a_source_error_with_the_service_info() -> None:
    class Refusing(BerkshireSimulator):
        def _list(self, request: Request) -> Response:
            body = {"success": False, "info": "Invalid date format", "data": {}}
            return json_response(body, 400)

    with (
        Refusing(email=EMAIL, token=TOKEN) as refusing,
        client(refusing) as berkshire,
        pytest.raises(SourceError, match="HTTP 400: Invalid date format") as caught,
    ):
        berkshire.list_raw(date(2024, 3, 10), date(2024, 3, 10))
    assert caught.value.info == "Invalid date format"


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("soon", None), ("", None), (None, None)],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2024, 3, 10, 12, tzinfo=UTC)
    assert parse_retry_after("Sun, 10 Mar 2024 12:01:00 GMT", now=now) == 60.0
    assert parse_retry_after("Sun, 10 Mar 2024 11:00:00 GMT", now=now) == 0.0

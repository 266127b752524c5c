"""The Berkshire simulator speaks the documented API over HTTP; the generator is realistic."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import phonenumbers
import pytest

from syncd.sandbox.berkshire import BerkshireSimulator, Envelope, KeyStyle
from syncd.sandbox.generate import CUSTOM_PREFIX, Caller, callers_of, make_callers, make_messages
from syncd.sandbox.http import Faults
from syncd.source.parse import parse_datetime

EMAIL, TOKEN = "demo@example.com", "sandbox-token"
AUTH = {"X-API-EMAIL": EMAIL, "X-API-TOKEN": TOKEN, "Accept": "application/json"}
NY = ZoneInfo("America/New_York")

M1 = {
    "message id": "M1",
    "utc created at": "2024-03-10T15:00:00Z",
    "first name": "Ann",
    "last name": "Lee",
    "phone": "212-867-5309",
    "caller id": "(212) 867-5309",
    "content": "Call back",
    f"{CUSTOM_PREFIX} Best time to call": "noon",
}
M2 = {**M1, "message id": "M2", "utc created at": "2024-03-12T03:30:00Z"}  # 03-11 local


@pytest.fixture(scope="module")
def server() -> Iterator[BerkshireSimulator]:
    with BerkshireSimulator() as simulator:
        yield simulator


@pytest.fixture
def sim(server: BerkshireSimulator) -> BerkshireSimulator:
    server.reset()
    server.envelope, server.key_style, server.summary_only = "success", "spaces", False
    server.add_messages([M1, M2])
    return server


@pytest.fixture
def http(sim: BerkshireSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim.base_url, headers=AUTH) as client:
        yield client


# -- the documented API -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-EMAIL": EMAIL, "X-API-TOKEN": "wrong"},
        {"X-API-EMAIL": "other@example.com", "X-API-TOKEN": TOKEN},
        {},
    ],
)
@pytest.mark.parametrize("path", ["/v2/messages", "/v2/messages/M1"])
def test_bad_credentials_get_the_documented_404(
    sim: BerkshireSimulator, headers: dict[str, str], path: str
) -> None:
    response = httpx.get(sim.base_url + path, headers=headers)
    assert response.status_code == 404
    assert response.json() == {"success": False, "info": "Invalid token", "data": {}}


def test_unknown_message_is_a_different_404(http: httpx.Client) -> None:
    response = http.get("/v2/messages/nope")
    assert response.status_code == 404
    assert response.json() == {"success": False, "info": "Message not found", "data": {}}


def test_list_all_and_by_local_day(http: httpx.Client, sim: BerkshireSimulator) -> None:
    def ids(**params: str) -> list[object]:
        response = http.get("/v2/messages", params=params)
        assert response.status_code == 200
        return [item["message id"] for item in response.json()["data"]]

    assert ids() == ["M1", "M2"]
    assert ids(from_date="03-10-2024", to_date="03-10-2024") == ["M1"]
    assert ids(from_date="03-11-2024", to_date="03-11-2024") == ["M2"]  # 23:30 EDT, not UTC 03-12
    assert ids(from_date="03-12-2024", to_date="03-31-2024") == []
    assert ids(from_date="03-11-2024") == ["M2"]
    assert sim.counts["list"] == 5
    assert sim.count_between(date(2024, 3, 10), date(2024, 3, 11)) == 2


@pytest.mark.parametrize("bad", ["2024-03-10", "13-01-2024", "03/10/2024", "yesterday"])
def test_malformed_date_is_a_400_json_error(http: httpx.Client, bad: str) -> None:
    response = http.get("/v2/messages", params={"from_date": bad, "to_date": "03-10-2024"})
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert "MM-DD-YYYY" in response.json()["info"]


@pytest.mark.parametrize(
    ("envelope", "unwrap"),
    [
        ("success", lambda body: body["data"] if body["success"] is True else None),
        ("data", lambda body: body["data"]),
        ("list", lambda body: body),
    ],
)
def test_envelopes(
    http: httpx.Client, sim: BerkshireSimulator, envelope: Envelope, unwrap: Callable[[Any], Any]
) -> None:
    sim.envelope = envelope
    listed = unwrap(http.get("/v2/messages").json())
    single = unwrap(http.get("/v2/messages/M1").json())
    assert [item["message id"] for item in listed] == ["M1", "M2"]
    assert single["message id"] == "M1"


@pytest.mark.parametrize(
    ("style", "keys"),
    [
        ("spaces", {"message id", "utc created at", f"{CUSTOM_PREFIX} Best time to call"}),
        (
            "snake",
            {
                "message_id",
                "utc_created_at",
                "content_with_additional_details_table_best_time_to_call",
            },
        ),
        ("camel", {"messageId", "utcCreatedAt", "contentWithAdditionalDetailsTableBestTimeToCall"}),
    ],
)
def test_key_styles(
    http: httpx.Client, sim: BerkshireSimulator, style: KeyStyle, keys: set[str]
) -> None:
    sim.key_style = style
    (listed, _) = http.get("/v2/messages").json()["data"]
    single = http.get("/v2/messages/M1").json()["data"]
    assert keys <= set(listed)
    assert set(listed) == set(single)


def test_summary_only_lists_summaries_and_details_are_full(
    http: httpx.Client, sim: BerkshireSimulator
) -> None:
    sim.summary_only = True
    listed = http.get("/v2/messages").json()["data"][0]
    single = http.get("/v2/messages/M1").json()["data"]
    assert set(listed) == {"message id", "first name", "last name", "utc created at"}
    assert single["phone"] == "212-867-5309"
    assert sim.counts == Counter({"list": 1, "detail": 1})


def test_the_default_list_shape_is_the_documented_summary() -> None:
    """The document: the list endpoints return "a summary", /v2/messages/<id> the message.
    The default list leaves out exactly the detail fields (and the table's prefixed keys)."""
    with BerkshireSimulator(email=EMAIL, token=TOKEN, messages=[M1]) as fresh:
        assert fresh.list_shape == "summary"
        with httpx.Client(base_url=fresh.base_url, headers=AUTH) as client:
            (listed,) = client.get("/v2/messages").json()["data"]
            single = client.get("/v2/messages/M1").json()["data"]
        assert set(single) - set(listed) == {f"{CUSTOM_PREFIX} Best time to call"}
        assert listed["phone"] == "212-867-5309"  # the rest of the message is in the summary
        assert (fresh.list_requests, fresh.detail_requests) == (1, 1)


def test_ids_are_url_unquoted(http: httpx.Client, sim: BerkshireSimulator) -> None:
    sim.add_messages([{**M1, "message id": "a/b c"}])
    response = http.get("/v2/messages/a%2Fb%20c")
    assert response.json()["data"]["message id"] == "a/b c"


def test_update_message_changes_details_and_days(
    http: httpx.Client, sim: BerkshireSimulator
) -> None:
    sim.update_message(
        "M1", content="Edited", first_name="Anne", utc_created_at="2024-03-11T15:00:00Z"
    )
    single = http.get("/v2/messages/M1").json()["data"]
    assert (single["content"], single["first name"]) == ("Edited", "Anne")
    assert sim.count_between(date(2024, 3, 10), date(2024, 3, 10)) == 0
    assert sim.count_between(date(2024, 3, 11), date(2024, 3, 11)) == 2
    sim.update_message("M1", brand_new_field="x")
    assert sim.messages[0]["brand new field"] == "x"
    with pytest.raises(KeyError):
        sim.update_message("nope", content="x")


def test_messages_is_a_copy(sim: BerkshireSimulator) -> None:
    sim.messages[0]["content"] = "mutated"
    assert sim.messages[0]["content"] == "Call back"


def test_stored_messages_need_an_id(sim: BerkshireSimulator) -> None:
    with pytest.raises(ValueError, match="message id"):
        sim.add_messages([{"first name": "No id"}])


def test_extra_items_are_served_verbatim(http: httpx.Client, sim: BerkshireSimulator) -> None:
    sim.extra_items = ["junk", {"message id": {"x": 1}}]
    assert http.get("/v2/messages").json()["data"][2:] == ["junk", {"message id": {"x": 1}}]


@pytest.mark.parametrize(
    ("setup", "status", "info"),
    [
        (lambda f: setattr(f, "rate_limit_ratio", 1.0), 429, "Too many requests"),
        (lambda f: setattr(f, "error_ratio", 1.0), 500, "Internal server error"),
        (lambda f: f.outage(60), 503, "Service unavailable"),
    ],
)
def test_faults_answer_in_the_service_shape(
    http: httpx.Client,
    sim: BerkshireSimulator,
    setup: Callable[[Faults], None],
    status: int,
    info: str,
) -> None:
    sim.faults.retry_after = 7
    setup(sim.faults)
    response = http.get("/v2/messages")
    assert response.status_code == status
    assert response.json() == {"success": False, "info": info, "data": {}}
    assert (response.headers.get("Retry-After") == "7") is (status == 429)


# -- generated traffic ------------------------------------------------------------------------

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 15, tzinfo=UTC)


@pytest.fixture(scope="module")
def callers() -> list[Caller]:
    return make_callers(300, seed=11)


@pytest.fixture(scope="module")
def traffic(callers: list[Caller]) -> list[dict[str, object]]:
    return make_messages(callers, 3000, start=START, end=END, seed=11, first_id=101)


def test_generation_is_deterministic(
    callers: list[Caller], traffic: list[dict[str, object]]
) -> None:
    assert make_callers(300, seed=11) == callers
    assert make_messages(callers, 3000, start=START, end=END, seed=11, first_id=101) == traffic
    assert make_messages(callers, 50, start=START, end=END, seed=12) != traffic[:50]


def test_ids_times_and_local_dates(traffic: list[dict[str, object]]) -> None:
    assert [m["message id"] for m in traffic] == [f"M{n:06d}" for n in range(101, 3101)]
    utc = [parse_datetime(m["utc created at"]) or END + timedelta(1) for m in traffic]
    assert all(START <= u <= END for u in utc)
    assert utc == sorted(utc)
    for message, moment in zip(traffic[:200], utc[:200], strict=True):
        local = parse_datetime(message["raw created at"], NY)
        assert local == moment
        assert message["created at"] == moment.astimezone(NY).strftime("%m/%d/%Y %I:%M %p")


def test_callers_are_distinct_and_realistic(callers: list[Caller]) -> None:
    assert len({(c.first_name, c.last_name, c.company) for c in callers}) == 300
    phones = [c.e164 for c in callers if c.e164]
    assert len(phones) == len(set(phones))
    emails = [c.email for c in callers if c.email]
    assert len(emails) == len(set(emails))
    assert all(c.email for c in callers if not c.e164)  # no phone, but an email
    for caller in callers:
        if caller.e164:
            number = phonenumbers.parse(caller.e164)
            assert phonenumbers.is_valid_number(number), caller.e164
            assert phonenumbers.region_code_for_number(number) == caller.region
    regions = Counter(c.region for c in callers)
    assert regions["US"] > regions["CA"] > 0
    assert regions["GB"] > 0
    assert regions["DE"] > 0
    companies = " ".join(c.company for c in callers)
    for marker in ("&", "'", "The ", "LLC", "Inc"):
        assert marker in companies
    names = {c.first_name for c in callers} | {c.last_name for c in callers}
    assert any(not name.isascii() for name in names)


def test_every_rendered_phone_is_the_callers_number(
    callers: list[Caller], traffic: list[dict[str, object]]
) -> None:
    who = callers_of(traffic, callers)
    assert len(who) == len(traffic)
    spellings: set[str] = set()
    for message in traffic:
        caller = callers[who[str(message["message id"])]]
        usable = []
        for field in ("phone", "caller id"):
            text = str(message[field])
            if not any(ch.isdigit() for ch in text):
                assert text in ("", "Unknown", "Restricted", "Private", "UNKNOWN CALLER")
                continue
            number = phonenumbers.parse(text, "US")
            assert phonenumbers.is_valid_number(number), text
            assert (
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                == caller.e164
            )
            usable.append(text)
            spellings.add(re.sub(r"\d", "9", text))
        if not usable:
            assert caller.e164 is None
            assert message[f"{CUSTOM_PREFIX} Email"] == caller.email
    assert {
        "(999) 999-9999",
        "999-999-9999",
        "999.999.9999",
        "+9 999 999 9999",  # +1 212 ... with every digit a 9
        "9999999999",
    } <= spellings
    assert any(" x" in s or " ext. " in s for s in spellings)


def test_traffic_shape(traffic: list[dict[str, object]], callers: list[Caller]) -> None:
    emergencies = sum(1 for m in traffic if m["is emergency"] is True)
    assert 0.015 * len(traffic) < emergencies < 0.05 * len(traffic)
    no_phone = sum(
        1 for m in traffic if not any(ch.isdigit() for ch in f"{m['phone']}{m['caller id']}")
    )
    assert 0.005 * len(traffic) < no_phone < 0.03 * len(traffic)
    hidden = sum(
        1 for m in traffic if m["phone"] in ("Unknown", "Restricted", "Private") and m["caller id"]
    )
    assert hidden > 0
    calls = Counter(callers_of(traffic, callers).values())
    assert max(calls.values()) > 5 * statistics.median(calls.values())  # a few call a lot
    labels = Counter(
        k.removeprefix(CUSTOM_PREFIX).strip()
        for m in traffic
        for k in m
        if k.startswith(f"{CUSTOM_PREFIX} ")
    )
    assert set(labels) == {"Email", "Best time to call", "Account #", "Reason"}


def test_generated_simulator() -> None:
    end = datetime(2024, 3, 8, 12, tzinfo=UTC)
    sim = BerkshireSimulator.generated(40, 10, days=2, seed=3, end=end, key_style="camel")
    assert len(sim.messages) == 40
    assert len(sim.callers) == 10
    assert sim.key_style == "camel"
    assert sim.count_between(date(2024, 3, 6), date(2024, 3, 8)) == 40
    first = parse_datetime(sim.messages[0]["utc created at"])
    assert first is not None
    assert first >= end - timedelta(days=2)

"""The emulators' indexes answer exactly what a scan of every stored item answers.

The Berkshire simulator answers a date range from messages indexed by local day, the HubSpot
emulator narrows a search to the records its postings name; both keep a private ``_full_scan``
switch that answers the old way, the reference each answer here is compared with. Requests go
through ``dispatch`` (the HTTP server's entry point) without a socket.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from syncd_hubspot.emulator import records as hubspot_records
from syncd_hubspot.emulator.api import HubSpotEmulator

from syncd.sandbox.berkshire import BerkshireSimulator
from syncd.sandbox.http import Emulator, Request

NY = ZoneInfo("America/New_York")
BERKSHIRE_AUTH = {"X-API-EMAIL": "demo@example.com", "X-API-TOKEN": "sandbox-token"}
HUBSPOT_AUTH = {"Authorization": "Bearer sandbox-hubspot-token"}


def _call(
    emulator: Emulator,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any = None,
    query: dict[str, list[str]] | None = None,
) -> tuple[int, Any]:
    request = Request(
        method=method,
        path=path,
        query=query or {},
        headers=headers,
        body=b"" if body is None else json.dumps(body).encode(),
    )
    response = emulator.dispatch(request)
    return response.status, json.loads(response.body)


# -- Berkshire: messages by local day -------------------------------------------------------
def _ids(sim: BerkshireSimulator, start: date | None, end: date | None) -> list[str]:
    query = {}
    if start is not None:
        query["from_date"] = [start.strftime("%m-%d-%Y")]
    if end is not None:
        query["to_date"] = [end.strftime("%m-%d-%Y")]
    status, body = _call(sim, "GET", "/v2/messages", BERKSHIRE_AUTH, query=query)
    assert status == 200
    return [item["message id"] for item in body["data"]]


def _both_ways(
    sim: BerkshireSimulator, start: date | None, end: date | None
) -> tuple[list[str], list[str]]:
    indexed = _ids(sim, start, end)
    sim._full_scan = True
    try:
        return indexed, _ids(sim, start, end)
    finally:
        sim._full_scan = False


def _counts_both_ways(sim: BerkshireSimulator, start: date, end: date) -> tuple[int, int]:
    indexed = sim.count_between(start, end)
    sim._full_scan = True
    try:
        return indexed, sim.count_between(start, end)
    finally:
        sim._full_scan = False


BASE_DAY = date(2024, 3, 8)  # DST starts in New York on 03-10


def _random_message(rng: random.Random, message_id: str) -> dict[str, object]:
    """A message near local midnight on one of ten days, dated in one of three ways."""
    day = BASE_DAY + timedelta(days=rng.randrange(10))
    local = datetime(day.year, day.month, day.day, tzinfo=NY) + timedelta(
        minutes=rng.choice([-61, -1, 0, 1, 59, 60, 61, 600, 1439])
    )
    item: dict[str, object] = {"message id": message_id, "first name": "Ann"}
    style = rng.randrange(4)
    if style == 0:
        item["utc created at"] = local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif style == 1:
        item["created at"] = local.strftime("%Y-%m-%dT%H:%M:%S")  # naive: the account's zone
    elif style == 2:
        item["utc created at"] = "not a date"  # no local day at all
    return item  # style 3: no date key either


def _random_range(rng: random.Random) -> tuple[date | None, date | None]:
    def day() -> date | None:
        return None if rng.random() < 0.25 else BASE_DAY + timedelta(days=rng.randrange(-2, 12))

    return day(), day()


@pytest.fixture
def berkshire() -> BerkshireSimulator:
    return BerkshireSimulator(tz="America/New_York")


def test_a_day_is_the_account_time_zone_s_day(berkshire: BerkshireSimulator) -> None:
    berkshire.add_messages(
        [
            {"message id": "late", "utc created at": "2024-03-10T03:59:00Z"},  # 03-09 23:59 EST
            {"message id": "early", "utc created at": "2024-03-10T05:00:00Z"},  # 03-10 00:00 EST
            {"message id": "naive", "created at": "2024-03-10T23:59:00"},  # local 03-10
            {"message id": "undated", "first name": "Ann"},
        ]
    )
    assert _ids(berkshire, date(2024, 3, 9), date(2024, 3, 9)) == ["late"]
    assert _ids(berkshire, date(2024, 3, 10), date(2024, 3, 10)) == ["early", "naive"]
    assert _ids(berkshire, date(2024, 3, 10), None) == ["early", "naive"]
    assert _ids(berkshire, None, date(2024, 3, 9)) == ["late"]
    assert _ids(berkshire, None, None) == ["late", "early", "naive", "undated"]
    assert _ids(berkshire, date(2024, 3, 11), date(2024, 3, 9)) == []
    assert berkshire.count_between(date(2024, 3, 1), date(2024, 3, 31)) == 3


def test_update_message_moves_it_to_its_new_day(berkshire: BerkshireSimulator) -> None:
    berkshire.add_messages(
        [
            {"message id": "A", "utc created at": "2024-03-10T15:00:00Z"},
            {"message id": "B", "utc created at": "2024-03-11T15:00:00Z"},
        ]
    )
    berkshire.update_message("A", utc_created_at="2024-03-12T03:30:00Z")  # 03-11 23:30 EDT
    assert _ids(berkshire, date(2024, 3, 10), date(2024, 3, 10)) == []
    assert _ids(berkshire, date(2024, 3, 11), date(2024, 3, 11)) == ["A", "B"]  # stored order
    berkshire.update_message("B", utc_created_at="garbled")
    assert _ids(berkshire, date(2024, 3, 1), None) == ["A"]
    assert berkshire.count_between(date(2024, 3, 10), date(2024, 3, 12)) == 1
    berkshire.add_messages([{"message id": "B", "created at": "2024-03-10T08:00:00"}])
    assert _ids(berkshire, date(2024, 3, 10), None) == ["A", "B"]  # a replacement keeps its place


def test_reset_forgets_the_index(berkshire: BerkshireSimulator) -> None:
    berkshire.add_messages([{"message id": "A", "utc created at": "2024-03-10T15:00:00Z"}])
    berkshire.reset()
    berkshire.add_messages([{"message id": "B", "utc created at": "2024-03-11T15:00:00Z"}])
    assert _ids(berkshire, date(2024, 3, 1), date(2024, 3, 31)) == ["B"]
    assert berkshire.count_between(date(2024, 3, 10), date(2024, 3, 10)) == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_ranges_match_a_full_scan(berkshire: BerkshireSimulator, seed: int) -> None:
    rng = random.Random(seed)
    berkshire.add_messages([_random_message(rng, f"M{n}") for n in range(300)])
    answered = 0
    for round_ in range(4):
        for _ in range(40):
            start, end = _random_range(rng)
            indexed, scanned = _both_ways(berkshire, start, end)
            assert indexed == scanned, (start, end)
            answered += len(indexed)
            if start is not None and end is not None:
                count, scanned_count = _counts_both_ways(berkshire, start, end)
                assert count == scanned_count == sum(1 for _ in indexed), (start, end)
        # Move some messages to other days (or none), replace others, add new ones.
        for n in rng.sample(range(300), 30):
            moved = _random_message(rng, f"M{n}")
            dated = {k: v for k, v in moved.items() if "created" in k}
            if dated and rng.random() < 0.5:
                ((key, value),) = dated.items()
                berkshire.update_message(f"M{n}", **{key.replace(" ", "_"): value})
            else:
                berkshire.add_messages([moved])
        berkshire.add_messages([_random_message(rng, f"N{round_}-{n}") for n in range(20)])
    assert answered > 0


# -- HubSpot: search postings ---------------------------------------------------------------
class _Clock:
    """Stands in for the ``time`` module in the emulator: search lag without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(hubspot_records, "time", fake)
    return fake


@pytest.fixture
def hubspot(clock: _Clock) -> HubSpotEmulator:
    return HubSpotEmulator(rate_limit=None, search_rate_limit=None)


FIRST = ["José", "JOSE", "jose", "Ann", "ann-marie", "Zoë", "Li"]
LAST = ["Lee", "O'Brien", "lee", "García", "Smith Jones"]
PHONES = [
    "(212) 555-0101",
    "+1 212-555-0101",
    "212.555.0102",
    "+44 20 7946 0958",
    "020 7946 0958",
    "555-0199",
    "",
]
COMPANIES = ["Acme, Inc.", "ACME Corp", "acmé corp", "Globex (NYC)", "Initech", "Umbrella <Co>"]
WORDS = ["acme", "ACME", "corp", "corp.", "inc", "globex", "(nyc)", "co", "acm*", "*corp", "in?"]


def _contact_props(rng: random.Random) -> dict[str, str]:
    props = {
        "firstname": rng.choice(FIRST),
        "lastname": rng.choice(LAST),
        "phone": rng.choice(PHONES),
        "company": rng.choice(COMPANIES),
    }
    if rng.random() < 0.5:
        props["email"] = f"{props['firstname'][:3]}{rng.randrange(10**6)}@Example.com"
    return {k: v for k, v in props.items() if rng.random() < 0.9}


def _value(rng: random.Random, prop: str) -> str:
    pool = {
        "firstname": FIRST,
        "lastname": LAST,
        "company": COMPANIES,
        "name": COMPANIES,
        "phone": PHONES,
        "hs_searchable_calculated_phone_number": ["2125550101", "2079460958", "5550199", "7"],
    }.get(prop, ["x"])
    value = rng.choice(pool)
    return rng.choice([value, value.upper(), value.lower()])


OPERATORS = [
    "EQ",
    "EQ",
    "IN",
    "IN",
    "CONTAINS_TOKEN",
    "CONTAINS_TOKEN",
    "NEQ",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "GT",
    "NOT_CONTAINS_TOKEN",
]


def _random_filter(rng: random.Random, props: list[str]) -> dict[str, Any]:
    prop = rng.choice(props)
    operator = rng.choice(OPERATORS)
    flt: dict[str, Any] = {"propertyName": prop, "operator": operator}
    if operator in ("IN", "NOT_IN"):
        flt["values"] = [_value(rng, prop) for _ in range(rng.randrange(1, 4))]
    elif operator.endswith("CONTAINS_TOKEN"):
        flt["value"] = rng.choice(WORDS)
    elif operator != "HAS_PROPERTY" and operator != "NOT_HAS_PROPERTY":
        flt["value"] = _value(rng, prop)
    return flt


def _random_groups(rng: random.Random, props: list[str]) -> list[dict[str, Any]]:
    return [
        {"filters": [_random_filter(rng, props) for _ in range(rng.randrange(1, 4))]}
        for _ in range(rng.randrange(0, 4))
    ]


CONTACT_PROPS = [
    "firstname",
    "lastname",
    "company",
    "phone",
    "hs_searchable_calculated_phone_number",
]


def _search(
    hubspot: HubSpotEmulator, object_type: str, groups: list[dict[str, Any]], after: int = 0
) -> tuple[int, Any]:
    body = {
        "filterGroups": groups,
        "limit": 200,
        "after": after,
        "properties": ["firstname", "lastname", "company", "phone", "name"],
    }
    return _call(hubspot, "POST", f"/crm/v3/objects/{object_type}/search", HUBSPOT_AUTH, body)


def _search_both_ways(
    hubspot: HubSpotEmulator, object_type: str, groups: list[dict[str, Any]], after: int = 0
) -> tuple[Any, Any]:
    status, indexed = _search(hubspot, object_type, groups, after)
    assert status == 200, indexed
    hubspot._full_scan = True
    try:
        status, scanned = _search(hubspot, object_type, groups, after)
    finally:
        hubspot._full_scan = False
    assert status == 200, scanned
    return indexed, scanned


def _total(hubspot: HubSpotEmulator, object_type: str, groups: list[dict[str, Any]]) -> int:
    status, body = _search(hubspot, object_type, groups)
    assert status == 200, body
    return int(body["total"])


def _write(
    hubspot: HubSpotEmulator, object_type: str, action: str, inputs: list[dict[str, Any]]
) -> Any:
    status, body = _call(
        hubspot,
        "POST",
        f"/crm/v3/objects/{object_type}/batch/{action}",
        HUBSPOT_AUTH,
        {"inputs": inputs},
    )
    assert status in (200, 201), body
    return body


def _postings_rebuilt(hubspot: HubSpotEmulator) -> dict[tuple[str, str, str], Any]:
    """The postings as built from scratch now: what incremental upkeep must have left."""
    kept = {
        key: {t: set(ids) for t, ids in terms.items()} for key, terms in hubspot._postings.items()
    }
    hubspot._postings.clear()
    hubspot._posted.clear()
    for kind, object_type, prop in kept:
        hubspot._postings_for(kind, object_type, prop)
    return kept


def test_phone_digits_and_folded_tokens_find_their_records(hubspot: HubSpotEmulator) -> None:
    a = hubspot.seed_contact(first_name="José", phone="(212) 555-0101")
    b = hubspot.seed_contact(first_name="jose", phone="+44 20 7946 0958")
    company = hubspot.seed_company("Acme, Inc. (NYC)")
    phone = {"propertyName": "hs_searchable_calculated_phone_number", "operator": "EQ"}
    found = _search(hubspot, "contacts", [{"filters": [{**phone, "value": "2125550101"}]}])[1]
    assert [r["id"] for r in found["results"]] == [a]
    by_name = [{"filters": [{"propertyName": "firstname", "operator": "IN", "values": ["JOSÉ"]}]}]
    assert [r["id"] for r in _search(hubspot, "contacts", by_name)[1]["results"]] == [a]
    for word in ("acme", "NYC", "inc", "ac*"):
        token = {"propertyName": "name", "operator": "CONTAINS_TOKEN", "value": word}
        assert _total(hubspot, "companies", [{"filters": [token]}]) == 1, word
    assert _total(hubspot, "contacts", [{"filters": [{**phone, "value": "2079460958"}]}]) == 1
    hubspot.delete_record(b)
    assert _total(hubspot, "contacts", [{"filters": [{**phone, "value": "2079460958"}]}]) == 0
    assert company in hubspot._postings[("token", "companies", "name")]["acme"]


def test_only_groups_without_an_exact_filter_scan(hubspot: HubSpotEmulator) -> None:
    for n in range(10):
        hubspot.seed_contact(first_name=f"N{n}", last_name="Lee")
    eq = {"propertyName": "firstname", "operator": "EQ", "value": "n3"}
    neq = {"propertyName": "lastname", "operator": "NEQ", "value": "lee"}
    narrowed = hubspot._candidates("contacts", [{"filters": [eq, neq]}])
    assert narrowed is not None
    assert len(narrowed) == 1
    assert hubspot._candidates("contacts", [{"filters": [eq]}, {"filters": [neq]}]) is None
    assert hubspot._candidates("contacts", []) is None


def test_search_lag_serves_the_old_version_from_the_postings(
    hubspot: HubSpotEmulator, clock: _Clock
) -> None:
    contact = hubspot.seed_contact(first_name="Zed", phone="212-555-0101")
    zed = [{"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "zed"}]}]
    yan = [{"filters": [{"propertyName": "firstname", "operator": "EQ", "value": "YAN"}]}]
    assert _total(hubspot, "contacts", zed) == 1  # postings built before the write
    hubspot.search_lag = 10.0
    _write(hubspot, "contacts", "update", [{"id": contact, "properties": {"firstname": "Yan"}}])
    clock.now += 5
    assert _search_both_ways(hubspot, "contacts", zed)[0]["total"] == 1
    assert _search_both_ways(hubspot, "contacts", yan)[0]["total"] == 0
    clock.now += 6
    assert _search_both_ways(hubspot, "contacts", zed)[0]["total"] == 0
    assert _search_both_ways(hubspot, "contacts", yan)[0]["total"] == 1
    created = _write(hubspot, "contacts", "create", [{"properties": {"firstname": "Yan"}}])
    assert _search_both_ways(hubspot, "contacts", yan)[0]["total"] == 1  # not searchable yet
    clock.now += 11
    indexed, scanned = _search_both_ways(hubspot, "contacts", yan)
    assert [r["id"] for r in indexed["results"]] == [contact, created["results"][0]["id"]]
    assert indexed == scanned


@pytest.mark.parametrize("seed", range(6))
def test_random_searches_match_a_full_scan(
    hubspot: HubSpotEmulator, clock: _Clock, seed: int
) -> None:
    rng = random.Random(seed)
    companies = [hubspot.seed_company(rng.choice(COMPANIES)) for _ in range(15)]
    contacts = [
        hubspot.seed_contact(
            first_name=rng.choice(FIRST),
            last_name=rng.choice(LAST),
            phone=rng.choice(PHONES),
            company=rng.choice(COMPANIES),
            email=f"seed{seed}-{n}@example.com" if rng.random() < 0.5 else "",
        )
        for n in range(40)
    ]
    hubspot.search_lag = rng.choice([0.0, 10.0])
    matched = narrowed = 0
    for round_ in range(6):
        for _ in range(25):
            object_type = rng.choice(["contacts", "contacts", "companies"])
            props = CONTACT_PROPS if object_type == "contacts" else ["name"]
            groups = _random_groups(rng, props)
            indexed, scanned = _search_both_ways(hubspot, object_type, groups)
            assert indexed == scanned, groups
            matched += indexed["total"]
            narrowed += hubspot._candidates(object_type, groups) is not None
            if indexed["total"] > 3:  # a later page too
                later = _search_both_ways(hubspot, object_type, groups, after=2)
                assert later[0] == later[1]
        # Writes of every kind, some inside the lag window of the searches above.
        clock.now += rng.choice([1.0, 4.0, 12.0])
        _write(
            hubspot,
            "contacts",
            "update",
            [
                {"id": i, "properties": _contact_props(rng)}
                for i in rng.sample(contacts, 5)
                if rng.random() < 0.9
            ]
            or [{"id": contacts[0], "properties": {"firstname": "Ann"}}],
        )
        new = _write(
            hubspot,
            "contacts",
            "upsert",
            [
                {
                    "idProperty": "syncd_key",
                    "id": f"key-{rng.randrange(30)}-{round_}",
                    "properties": {"firstname": rng.choice(FIRST), "phone": rng.choice(PHONES)},
                }
            ],
        )
        contacts.extend(r["id"] for r in new["results"] if r["new"])
        company = rng.choice(companies)
        status, _ = _call(
            hubspot,
            "PATCH",
            f"/crm/v3/objects/companies/{company}",
            HUBSPOT_AUTH,
            {"properties": {"name": rng.choice(COMPANIES)}},
        )
        assert status == 200
        hubspot.seed_contact(first_name=rng.choice(FIRST), company_id=rng.choice(companies))
        gone = rng.choice(contacts)
        hubspot.delete_record(gone)
        contacts.remove(gone)
    assert matched > 0
    assert narrowed > 0
    # What was kept up write by write is what building afresh gives.
    kept = _postings_rebuilt(hubspot)
    assert kept
    assert {k: {t: set(ids) for t, ids in v.items()} for k, v in hubspot._postings.items()} == kept

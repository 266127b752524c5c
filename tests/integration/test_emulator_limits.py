"""The emulators' latency and the vendors' limits they enforce, read at the emulator.

Latency is checked as a lower bound (an answer never comes sooner than it should); refusals
are counted in ``refused`` and shown by ``GET /_sandbox/state``, apart from injected faults.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from syncd_hubspot.emulator import HubSpotEmulator
from syncd_salesforce.emulator import SalesforceEmulator

from syncd.sandbox.berkshire import BerkshireSimulator

LATENCY = 0.05


@pytest.fixture
def hubspot() -> Iterator[HubSpotEmulator]:
    emulator = HubSpotEmulator(rate_limit=(3, 60.0), search_rate_limit=(1, 60.0)).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def salesforce() -> Iterator[SalesforceEmulator]:
    emulator = SalesforceEmulator().start()
    try:
        yield emulator
    finally:
        emulator.stop()


def _hubspot(emulator: HubSpotEmulator, path: str, body: object | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {emulator.token}"}
    url = f"{emulator.base_url}{path}"
    if body is None:
        return httpx.get(url, headers=headers)
    return httpx.post(url, json=body, headers=headers)


def _timed(call: object) -> tuple[httpx.Response, float]:
    assert callable(call)
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def test_hubspot_answers_wait_the_latency_and_searches_twice_it(hubspot: HubSpotEmulator) -> None:
    hubspot.latency = LATENCY
    assert hubspot.latency_of("contacts.list") == LATENCY
    assert hubspot.latency_of("contacts.search") == 2 * LATENCY
    read, read_took = _timed(lambda: _hubspot(hubspot, "/crm/v3/objects/contacts"))
    search, search_took = _timed(
        lambda: _hubspot(hubspot, "/crm/v3/objects/contacts/search", {"filterGroups": []})
    )
    assert (read.status_code, search.status_code) == (200, 200)
    assert read_took >= LATENCY
    assert search_took >= 2 * LATENCY


def test_hubspot_refuses_past_its_limits_in_the_documented_shape(
    hubspot: HubSpotEmulator,
) -> None:
    search = {"filterGroups": []}
    first = _hubspot(hubspot, "/crm/v3/objects/contacts/search", search)
    second = _hubspot(hubspot, "/crm/v3/objects/contacts/search", search)
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["policyName"] == "SECONDLY"
    assert "Retry-After" not in second.headers  # HubSpot documents none
    read = "/crm/v3/objects/contacts"
    assert _hubspot(hubspot, read).status_code == 200
    burst = _hubspot(hubspot, read)
    assert burst.status_code == 429
    assert burst.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    hubspot.faults.rate_limit_ratio = 1.0  # an injected 429 is a fault, not a refusal
    assert _hubspot(hubspot, read).status_code == 429
    state = httpx.get(f"{hubspot.base_url}/_sandbox/state").json()
    assert state["refused"] == {"SECONDLY": 1, "TEN_SECONDLY_ROLLING": 1}
    assert state["statuses"]["429"] == 3


def test_hubspot_tiers_set_the_documented_burst_limit() -> None:
    starter = HubSpotEmulator(tier="starter").start()
    try:
        limit = _hubspot(starter, "/crm/v3/objects/contacts")
        assert limit.headers["X-HubSpot-RateLimit-Max"] == "100"
    finally:
        starter.stop()


def _sf_get(emulator: SalesforceEmulator, token: str, path: str) -> httpx.Response:
    url = f"{emulator.base_url}/services/data/v60.0{path}"
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_salesforce_refuses_a_request_while_too_many_long_ones_run(
    salesforce: SalesforceEmulator,
) -> None:
    """Production orgs allow 25 requests of 20 s or longer at once; scaled down here to one
    request of 0.05 s, held open by a slow ``limits`` answer."""
    salesforce.concurrent_long_requests = 1
    salesforce.long_request_seconds = 0.05
    salesforce.latency = LATENCY
    salesforce.latency_factors = {"limits": 20.0}  # one second
    token = salesforce.issue_session()
    slow: list[httpx.Response] = []
    holder = threading.Thread(target=lambda: slow.append(_sf_get(salesforce, token, "/limits")))
    holder.start()
    time.sleep(0.2)
    refused = _sf_get(salesforce, token, "/sobjects")
    holder.join()
    after = _sf_get(salesforce, token, "/sobjects")
    assert slow[0].status_code == 200
    assert refused.status_code == 403
    assert refused.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert refused.json()[0]["message"].startswith("ConcurrentPerOrgLongTxn")
    assert after.status_code == 200
    assert salesforce.refused == {"ConcurrentPerOrgLongTxn": 1}


def test_short_requests_at_once_are_never_refused(salesforce: SalesforceEmulator) -> None:
    """No limit on concurrent requests shorter than 20 s: 30 at once all pass."""
    salesforce.latency = LATENCY
    token = salesforce.issue_session()
    answers: list[int] = []
    threads = [
        threading.Thread(target=lambda: answers.append(_sf_get(salesforce, token, "/").status_code))
        for _ in range(30)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 30
    assert not salesforce.refused


def test_salesforce_refuses_past_its_daily_allocation() -> None:
    with SalesforceEmulator(daily_limit=2) as emulator:
        token = emulator.issue_session()
        statuses = [_sf_get(emulator, token, "/").status_code for _ in range(3)]
        assert statuses == [200, 200, 403]
        assert emulator.refused == {"TotalRequests": 1}
        assert emulator.counts["resources"] == 3
        emulator.stop()


def test_the_simulator_waits_the_latency_too() -> None:
    with BerkshireSimulator.generated(3, 2) as simulator:
        simulator.latency = LATENCY
        headers = {"X-API-EMAIL": simulator.email, "X-API-TOKEN": simulator.token}
        answer, took = _timed(
            lambda: httpx.get(f"{simulator.base_url}/v2/messages", headers=headers)
        )
        simulator.stop()
    assert answer.status_code == 200
    assert took >= LATENCY

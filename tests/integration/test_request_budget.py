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


def test_backfill_stays_within_the_request_budget(run: dict[str, Any]) -> None:
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


def test_new_caller_costs_at_most_three_requests(run: dict[str, Any]) -> None:
    steady = run["steady_state"]
    assert steady["new_caller_delivered"] == 1
    assert steady["new_caller_requests"] <= benchlib.MAX_NEW_CALLER_REQUESTS, steady[
        "new_caller_by_endpoint"
    ]

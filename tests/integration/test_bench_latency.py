"""The benchmark with latency on, at small scale: request counts only, never seconds.

Each registered CRM type runs the benchmark's own code (``tests/perf/benchlib.py``, simulators
in-process) twice over the same messages, without and with latency on every answer. Latency
must change no request count; the source costs one list request a day window plus one detail
request a message; no answer was refused for a limit; and the limit bound and utilization keys
agree with the per-endpoint counts they are computed from. ``accounts_bench``'s poll cycle runs
on one replica process and on two, which must split the accounts without fetching any twice.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import accounts_bench  # tests/perf is on pytest's pythonpath (pyproject)
import benchlib
import pytest

from syncd.connector import available
from syncd.sandbox.crm import emulator_types

MESSAGES = 150
LATENCY_MS = 5.0


def bench_types() -> list[str]:
    return sorted(set(available()) & set(emulator_types()))


def _run(target: str, latency_ms: float) -> dict[str, Any]:
    spec = benchlib.BenchSpec.for_messages(target, MESSAGES, naive_sample=0, latency_ms=latency_ms)
    return benchlib.run_bench(spec, in_process=True)


@pytest.fixture(scope="module", params=bench_types())
def runs(request: pytest.FixtureRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    return _run(request.param, 0.0), _run(request.param, LATENCY_MS)


def test_latency_changes_no_request_count(runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    still, slow = runs
    assert slow["latency_ms"] == LATENCY_MS
    assert slow["delivery"]["done"] + slow["delivery"]["review"] == MESSAGES
    assert slow["requests_by_endpoint"] == still["requests_by_endpoint"]
    assert slow["requests_per_message"] == still["requests_per_message"]
    assert (
        slow["steady_state"]["known_caller_requests"]
        == still["steady_state"]["known_caller_requests"]
    )
    assert slow["rerun"]["crm_requests"] == 0


def test_source_costs_a_request_a_window_and_a_detail_a_message(
    runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    for run in runs:
        ingest = run["ingest"]
        assert ingest["new"] == ingest["details"] == MESSAGES
        assert run["source_requests_by_endpoint"] == {
            "list": ingest["windows"],
            "detail": MESSAGES,
        }
        assert run["source_requests"] == ingest["windows"] + MESSAGES
        assert run["checks"]["source_requests"]


def test_no_answer_was_refused_for_a_limit(runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    for run in runs:
        assert run["limit_refusals"] == {}
        assert "429" not in run["responses_by_status"]
        assert run["checks"]["within_limits"]


def test_bound_and_utilization_follow_from_the_counts(
    runs: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    for run in runs:
        limits = benchlib.profile_for(run["target"]).limits
        bounds = run["limit_bounds"]
        assert set(bounds) == {limit.name for limit in limits}
        finite = []
        for limit in limits:
            counted = sum(
                n for endpoint, n in run["requests_by_endpoint"].items() if limit.counts(endpoint)
            )
            assert bounds[limit.name]["requests"] == counted
            if limit.calls is None or not counted:
                assert bounds[limit.name]["bound_messages_per_second"] is None
                continue
            expected = limit.calls / limit.period / (counted / MESSAGES)
            got = bounds[limit.name]["bound_messages_per_second"]
            assert math.isclose(got, expected, abs_tol=0.05)
            finite.append(got)
        assert finite, "every CRM profile has a limit that bounds the rate"
        assert run["limit_bound_messages_per_second"] == min(finite)
        assert math.isclose(
            run["limit_utilization"],
            run["messages_per_second"] / run["limit_bound_messages_per_second"],
            abs_tol=0.001,
        )


def test_two_replicas_split_the_accounts_and_fetch_each_once() -> None:
    """``accounts_bench``'s poll cycle at small scale: two replica processes on one store poll
    every account once between them, costing the source what one replica does."""
    spec = accounts_bench.Spec(
        accounts=6, per_day=2, days=2, latency_ms=LATENCY_MS, seed=3, database_url=None
    )
    one, two = (accounts_bench.run_cycle(spec, replicas) for replicas in (1, 2))
    for run in (one, two):
        assert run["accounts_polled"] == spec.accounts
        assert all(not r["errors"] for r in run["per_replica"])
        assert run["source_requests_by_endpoint"] == {
            "list": run["windows"],
            "detail": run["messages_new"],
        }
        handled = Counter[str]()
        for replica in run["per_replica"]:
            assert not any(replica["failed"].values())
            handled.update(replica["delivered"])
            handled.update(replica["review"])
        # Every account delivers to HubSpot, every other one to Salesforce as well.
        assert handled["hubspot"] == run["messages_new"] > handled["salesforce"] > 0
    assert [r["accounts_polled"] for r in one["per_replica"]] == [spec.accounts]
    assert len(two["per_replica"]) == 2
    assert two["source_requests"] == one["source_requests"]
    assert two["messages_new"] == one["messages_new"]
    assert two["crm_requests"].keys() == one["crm_requests"].keys()

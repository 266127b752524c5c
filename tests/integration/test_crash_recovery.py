"""Crash safety: ``syncd run`` is SIGKILLed at random moments, again and again, and restarted,
until the sandbox is in sync; then nothing is lost and nothing is there twice.

The routine is the crash soak's (``tests/perf/crash_soak.py``), run short: 300 messages from
60 callers into both CRM targets, 20 kills. The kill timings are random; their seed is printed
and ``SYNCD_CRASH_SEED`` replays a run. The world (messages, pre-seeded CRMs) is fixed, so the
ground truth is one whose matching is known to be right and only the crashes vary.
"""

from __future__ import annotations

import json
import os
import random

import crash_soak  # tests/perf is on pytest's pythonpath (pyproject)
import pytest

pytestmark = pytest.mark.slow

WORLD_SEED = 1


SOAK = crash_soak


def test_sigkill_at_random_moments_loses_nothing_and_doubles_nothing() -> None:
    seed = int(os.environ.get("SYNCD_CRASH_SEED") or random.SystemRandom().randrange(2**31))
    print(f"crash test seed {seed} (replay with SYNCD_CRASH_SEED={seed})")
    options = SOAK.SoakOptions(
        messages=300,
        callers=60,
        days=2,
        kills=20,
        seed=seed,
        world_seed=WORLD_SEED,
        signals=("SIGKILL",),
        faults=("none",),
        once_share=0.0,
        # Slow enough answers that the work outlasts most of the 20 lives on a fast machine too:
        # at the soak's default 0.05 s, CI once finished everything within 7 lives.
        crm_delay=0.12,
    )

    figures = SOAK.run_soak(options)

    print(json.dumps(figures, sort_keys=True))
    assert figures["kills"] == 20
    assert figures["kills_with_work_left"] >= 10, "the kills should land while there is work"
    assert figures["claims_retaken"] > 0, "no killed worker's claim was ever taken up again"
    assert figures["messages_lost"] == 0
    assert figures["duplicate_contacts"] == 0
    assert figures["duplicate_activities"] == 0
    for name, audit in figures["per_target"].items():
        assert audit["activities"] == audit["messages"] == 300, name
        assert audit["contacts_created"] == audit["callers_needing_contact"], (name, audit)
        assert audit["unexpected_contacts"] == audit["missing_contacts"] == 0, (name, audit)
        assert audit["not_found_by_marker"] == 0, (name, audit)
        assert audit["deliveries"]["done"] == 300, (name, audit["deliveries"])
    assert figures["ok"], f"seed {seed}: {figures}"


def test_signals_and_faults_at_random_moments_lose_nothing_and_double_nothing() -> None:
    """SIGKILL, SIGINT or SIGTERM to ``run`` or ``run --once``, while one CRM answers 500s,
    429s, slowly, not at all, or lands an activity write and then answers with the daily
    limit or a malformed body."""
    seed = int(os.environ.get("SYNCD_CRASH_SEED") or random.SystemRandom().randrange(2**31))
    print(f"crash test seed {seed} (replay with SYNCD_CRASH_SEED={seed})")
    options = SOAK.SoakOptions(
        messages=300, callers=60, days=2, kills=20, seed=seed, world_seed=WORLD_SEED
    )

    figures = SOAK.run_soak(options)

    print(json.dumps(figures, sort_keys=True))
    assert sum(figures["signals"].get(s, 0) for s in SOAK.SIGNALS) == figures["kills"] > 0
    assert sum(figures["faults_chosen"].values()) == 20
    assert figures["messages_lost"] == 0
    assert figures["duplicate_contacts"] == 0
    assert figures["duplicate_activities"] == 0
    assert figures["ok"], f"seed {seed}: {figures}"

"""A backfill delivers full rounds while it still fetches (syncd.alongside).

Counted at the emulators: the CRM's activities while the fetching is held at a window, the
CRM's requests against the same backfill delivered only after fetching, and every message
exactly once after an interrupt that lands while a round delivered alongside is writing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from crash_soak import AfterWrite
from test_faults import Rig, crm  # the fault suite's rig, same directory
from test_nothing_twice import sigint, writers

from syncd import daemon as daemon_module
from syncd.alongside import DeliverAlongside
from syncd.ingest import IngestStats
from syncd.sandbox.http import Emulator
from syncd.sandbox.world import SandboxWorld

TARGETS = ("hubspot", "salesforce")
MESSAGES, CALLERS, DAYS = 480, 80, 6
BATCH, WIDTH = 20, 2  # a full round: 40 deliveries; a day window holds ~70 messages


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld(messages=MESSAGES, callers=CALLERS, days=DAYS, targets=list(TARGETS)) as w:
        yield w


def make_rig(world: SandboxWorld, tmp_path: Path) -> Rig:
    return Rig(
        world,
        tmp_path,
        batch_size=BATCH,
        targets={name: {"concurrency": WIDTH} for name in TARGETS},
    )


def span(rig: Rig) -> tuple[date, date]:
    tz = rig.settings.accounts["demo"].timezone
    today = rig.clock().astimezone(tz).date()
    return today - timedelta(days=DAYS), today


def crm_requests(emulator: Emulator) -> Counter[str]:
    return Counter({k: v for k, v in emulator.counts.items() if ":" not in k})


def test_rounds_are_delivered_while_the_backfill_still_fetches(
    world: SandboxWorld, tmp_path: Path
) -> None:
    """The fetching is held at its third window until each CRM has activities: only
    delivery beside the fetching can log them (without it this waits out its 30 s)."""
    rig = make_rig(world, tmp_path)
    seen: dict[str, int] = {}

    def on_window(day: date, stats: IngestStats) -> None:
        windows = len(seen) + 1
        if windows == 3:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                logged = [len(world.emulators[name].activities()) for name in TARGETS]
                if min(logged) >= BATCH * WIDTH:  # a whole round on each, not its first batch
                    break
                time.sleep(0.05)
        seen[day.isoformat()] = sum(len(world.emulators[n].activities()) for n in TARGETS)

    try:
        report = rig.daemon.backfill(*span(rig), on_window=on_window)
        assert report.ok, report.errors
        third = list(seen.values())[2]
        assert third >= 2 * BATCH * WIDTH  # a full round on each CRM before the 3rd window
        assert list(seen.values())[-1] < 2 * MESSAGES  # ... and not all of it: alongside
        assert rig.unfinished() == 0
        rig.assert_exactly_once()
    finally:
        rig.close()


def test_alongside_costs_no_more_crm_requests_than_delivering_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same backfill, delivered alongside and delivered only after fetching: full rounds
    only, so no target's request count grows."""
    counted: dict[str, dict[str, Counter[str]]] = {}
    for way in ("alongside", "after"):
        if way == "after":  # nothing is delivered alongside: every round after the fetching
            monkeypatch.setattr(
                daemon_module.Daemon,
                "_deliver_alongside",
                lambda self, report: DeliverAlongside(lambda name: True, {}, self.stop),
            )
        with SandboxWorld(
            messages=MESSAGES, callers=CALLERS, days=DAYS, targets=list(TARGETS)
        ) as world:
            (tmp_path / way).mkdir()
            rig = make_rig(world, tmp_path / way)
            try:
                before = {name: crm_requests(crm(world, name)) for name in TARGETS}
                report = rig.daemon.backfill(*span(rig))
                assert report.ok, report.errors
                rig.assert_exactly_once()
                counted[way] = {
                    name: crm_requests(crm(world, name)) - before[name] for name in TARGETS
                }
            finally:
                rig.close()
    for name in TARGETS:
        after, alongside = counted["after"][name], counted["alongside"][name]
        assert alongside.total() <= after.total(), (name, alongside, after)


@pytest.mark.parametrize("target", TARGETS)
def test_sigint_while_a_round_alongside_is_writing(
    world: SandboxWorld, tmp_path: Path, target: str
) -> None:
    """^C lands after a write of a round delivered alongside (the fetching goes on in the
    main thread): the backfill stops, no delivery thread outlives it, and after a restart
    every message is at each CRM exactly once."""
    assert world.berkshire is not None
    world.berkshire.latency = 0.01  # the fetching outlasts the first rounds
    rig = make_rig(world, tmp_path)
    try:
        cut = AfterWrite(crm(world, target), sigint, left=1)
        with pytest.raises(KeyboardInterrupt):
            rig.daemon.backfill(*span(rig))
        cut.remove()
        assert cut.hits == 1
        assert writers() == []
        assert not [t.name for t in threading.enumerate() if t.name.startswith("alongside")]
        rig.restart()
        rig.daemon.backfill(*span(rig))
        rig.until_settled()
        rig.assert_exactly_once()
    finally:
        rig.close()

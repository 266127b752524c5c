"""Several batches of one target in flight at once must not create a caller twice.

The hazard: two batches, each holding a message from the same NEW caller, look the caller up
at the same moment, find nobody, and each creates them -- two contacts. Here every caller
calls many times and the batches are tiny, so each caller's messages are spread over many
batches and most batches of a round would hold the same new callers. Counted AT THE
EMULATORS: contacts per caller, activities per marker (the fault suite's audit).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_faults import Rig, crm  # the fault suite's rig, same directory

from syncd import deliver
from syncd.partition import link_keys
from syncd.sandbox.world import SandboxWorld
from syncd.store.store import Claimed

TARGETS = ("hubspot", "salesforce")
MESSAGES, CALLERS = 240, 30  # 8 messages a caller, most callers new to the CRM
BATCH, WIDTH = 12, 4


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld(messages=MESSAGES, callers=CALLERS, days=3, targets=list(TARGETS)) as w:
        yield w


def concurrent_rig(world: SandboxWorld, tmp_path: Path) -> Rig:
    return Rig(
        world,
        tmp_path,
        targets={name: {"concurrency": WIDTH} for name in TARGETS},
        batch_size=BATCH,
    )


class Overlap:
    """Counts the batches of a target in flight at once (wraps ``_deliver_batch``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}
        self.most: dict[str, int] = {}
        inner = deliver._deliver_batch

        def counted(*args: Any, **kw: Any) -> None:
            name = args[2].name
            with self.lock:
                self.active[name] = self.active.get(name, 0) + 1
                self.most[name] = max(self.most.get(name, 0), self.active[name])
            try:
                inner(*args, **kw)
            finally:
                with self.lock:
                    self.active[name] -= 1

        monkeypatch.setattr(deliver, "_deliver_batch", counted)


def test_concurrent_batches_create_each_caller_once(
    world: SandboxWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overlap = Overlap(monkeypatch)
    rig = concurrent_rig(world, tmp_path)
    try:
        report = rig.cycle()
        assert not report.errors, report.errors
        for name in TARGETS:
            stats = report.targets[name]
            assert stats.done == MESSAGES, stats.as_dict()
            assert stats.batches >= MESSAGES // BATCH  # tiny batches, many rounds
            assert overlap.most[name] >= 2, overlap.most  # batches really were in flight together
        audits = rig.assert_exactly_once()
        for name in TARGETS:
            created = len(world.emulators[name].contacts()) - len(rig.pre[name])
            assert report.targets[name].contacts_created == created
            assert audits[name].clean
        # A second cycle over the same state writes nothing.
        before = {name: crm(world, name).total_requests for name in TARGETS}
        again = rig.cycle()
        assert all(s.claimed == 0 for s in again.targets.values())
        assert {name: crm(world, name).total_requests for name in TARGETS} == before
    finally:
        rig.close()


def test_every_callers_messages_stay_in_one_batch_of_a_round(
    world: SandboxWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The construction itself: within a round no caller (email, phone, company) is in two
    batches. Checked on the batches the daemon really delivered."""
    rounds: list[list[list[Claimed]]] = []
    split = deliver.partition

    def watched(claimed: Sequence[Claimed], *args: Any) -> list[list[Claimed]]:
        batches = split(claimed, *args)
        rounds.append(batches)
        return batches

    monkeypatch.setattr(deliver, "partition", watched)
    rig = concurrent_rig(world, tmp_path)
    try:
        rig.cycle()
    finally:
        rig.close()
    regions = {a.name: a.region for a in rig.settings.accounts.values()}
    split_rounds = [r for r in rounds if len(r) > 1]
    assert split_rounds, "no claim was split: the test attacks nothing"
    for batches in split_rounds:
        owner: dict[str, int] = {}
        for index, batch in enumerate(batches):
            for claimed in batch:
                keys = deliver._keys_of(claimed, regions)
                for key in link_keys(claimed, keys):
                    assert owner.setdefault(key, index) == index, f"{key} in two batches"


def test_without_the_partition_the_same_attack_finds_duplicates(
    world: SandboxWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack is real: with claims dealt round-robin instead (callers split across
    batches in flight), some caller becomes two contacts. Shows what the partition prevents
    (and that the audit above can fail)."""

    def dealt(claimed: Sequence[Claimed], keys: Any, size: int, width: int) -> list[list[Claimed]]:
        count = min(width, max(1, -(-len(claimed) // size)))
        return [list(claimed[i::count]) for i in range(count) if claimed[i::count]]

    monkeypatch.setattr(deliver, "partition", dealt)
    # Every batch waits at its lookup until its round-mates looked up too: the race, always.
    barrier_for: dict[str, threading.Barrier] = {}
    lookup = deliver._Batch.from_crm

    def raced(self: deliver._Batch, items: list[deliver._Item]) -> None:
        lookup(self, items)
        barrier = barrier_for.setdefault(self.target.name, threading.Barrier(WIDTH))
        try:
            barrier.wait(timeout=2)
        except threading.BrokenBarrierError:
            barrier.reset()

    monkeypatch.setattr(deliver._Batch, "from_crm", raced)
    rig = concurrent_rig(world, tmp_path)
    try:
        rig.cycle()
        with pytest.raises(AssertionError, match=r"duplicate_contacts=[1-9]"):
            rig.assert_exactly_once(("hubspot",))
    finally:
        rig.close()

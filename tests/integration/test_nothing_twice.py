"""Nothing twice, end to end: each way a batch can be cut short after its writes landed, and
each way two workers can disagree about who holds a delivery, against the sandbox's CRM
emulators, counted AT THE EMULATORS (activities per marker, contacts per caller).

One test per row of issue 20's table (SIGINT mid-batch, a daily limit after the writes, a
200 with a malformed body, two replicas whose clocks differ by more than the lease, a lost
state store), plus a CRM slower than the lease while a second replica runs.

The attacks sit on the emulators' dispatch: the write is carried out, then the answer is
replaced (a daily limit, a malformed body) or the daemon is interrupted (SIGINT) before it
can record the outcome -- the moment a write has landed but is not yet recorded.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from crash_soak import AfterWrite, daily_limit, malformed, writes_activities, writes_contacts
from crm_audit import assert_exactly_once  # tests/lib
from test_faults import FAST_TARGETS, Rig, crm  # the fault suite's rig, same directory

from syncd import deliver
from syncd.config import Settings
from syncd.daemon import CycleReport, Daemon
from syncd.demo import sandbox_settings
from syncd.sandbox.http import Emulator, Request, Response
from syncd.sandbox.world import SandboxWorld
from syncd.store.files import SIDE_SUFFIXES
from syncd.store.store import Store

TARGETS = ("hubspot", "salesforce")
MESSAGES, CALLERS = 40, 12


def sigint(emulator: Emulator, request: Request, response: Response) -> Response:
    """^C to the daemon while its write is in the CRM and the answer is on its way."""
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.2)  # the signal lands while the daemon still waits for this answer
    return response


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld(messages=MESSAGES, callers=CALLERS, days=2, targets=list(TARGETS)) as w:
        for emulator in w.emulators.values():
            emulator.faults.retry_after = 0.01
        yield w


@pytest.fixture
def rig(world: SandboxWorld, tmp_path: Path) -> Iterator[Rig]:
    r = Rig(world, tmp_path)
    yield r
    r.close()


def writers() -> list[str]:
    """The delivery threads still alive (a target's, or a batch's in a round)."""
    names = [t.name for t in threading.enumerate() if t.is_alive()]
    return [n for n in names if n.startswith(("target", "deliver:"))]


def activity_writes(world: SandboxWorld) -> dict[str, int]:
    return {name: len(e.activities()) for name, e in world.emulators.items()}


# -- the table's rows --------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_sigint_mid_batch_after_the_writes_landed(
    rig: Rig, world: SandboxWorld, target: str
) -> None:
    attack = AfterWrite(crm(world, target), sigint, left=1)
    with pytest.raises(KeyboardInterrupt):
        rig.cycle()
    attack.remove()
    assert attack.hits == 1
    assert writers() == []

    rig.restart()
    rig.until_settled()

    rig.assert_exactly_once()


@pytest.mark.parametrize("part", ["contacts", "activities"])
@pytest.mark.parametrize("target", TARGETS)
def test_sigint_between_the_parts_of_a_plan(
    rig: Rig, world: SandboxWorld, target: str, part: str
) -> None:
    """Interrupted once the contacts landed (before any activity), or once the activities
    landed (before the emergency tasks, where a CRM writes them apart): every part --
    contact, activity, emergency task -- is there exactly once afterwards."""
    writes = writes_contacts if part == "contacts" else writes_activities
    attack = AfterWrite(crm(world, target), sigint, left=1, writes=writes)
    with pytest.raises(KeyboardInterrupt):
        rig.cycle()
    attack.remove()
    assert attack.hits == 1

    rig.restart()
    rig.until_settled()

    rig.assert_exactly_once()


@pytest.mark.parametrize("target", TARGETS)
def test_daily_limit_after_the_writes_landed(rig: Rig, world: SandboxWorld, target: str) -> None:
    attack = AfterWrite(crm(world, target), daily_limit, left=1)
    paused = rig.cycle()
    attack.remove()
    assert attack.hits == 1
    assert any("daily" in e.lower() for e in paused.errors), paused.as_dict()

    rig.clock.advance(2 * 3600)  # past the pause
    rig.until_settled()

    rig.assert_exactly_once()


@pytest.mark.parametrize("target", TARGETS)
def test_200_with_a_malformed_body_after_the_writes_landed(
    rig: Rig, world: SandboxWorld, target: str
) -> None:
    attack = AfterWrite(crm(world, target), malformed, left=3)
    rig.cycle()  # never a traceback: the connector copes, or the batch fails and is retried
    attack.remove()
    assert attack.hits >= 1

    rig.clock.advance(61)
    rig.until_settled()

    rig.assert_exactly_once()


@pytest.mark.parametrize("attack", ["sigint", "daily_limit"])
@pytest.mark.parametrize("target", TARGETS)
def test_concurrent_batches_cut_short_after_the_writes_landed(
    world: SandboxWorld, tmp_path: Path, target: str, attack: str
) -> None:
    """The rows above with three batches of a target in flight at once (batches of 4): one
    batch's write lands and then the daemon is interrupted, or that batch is told the daily
    limit is spent, while its round-mates are mid-flight. Every part exactly once after."""
    rig = Rig(world, tmp_path, batch_size=4, targets={target: {"concurrency": 3}})
    try:
        action = sigint if attack == "sigint" else daily_limit
        cut = AfterWrite(crm(world, target), action, left=1)
        if attack == "sigint":
            with pytest.raises(KeyboardInterrupt):
                rig.cycle()
            # No batch goes on writing behind the interrupted cycle (the cut batch's answer
            # is still 0.2 s away when ^C lands): what follows cannot race it.
            assert writers() == []
            rig.restart()
        else:
            rig.cycle()
            rig.clock.advance(2 * 3600)  # past the pause
        cut.remove()
        assert cut.hits == 1
        rig.until_settled()
        rig.assert_exactly_once()
    finally:
        rig.close()


@pytest.mark.postgres
def test_two_replicas_on_postgres_one_clock_ahead_by_more_than_the_lease(
    world: SandboxWorld, postgres_url: str
) -> None:
    """Replica b's clock runs 120 s ahead with 60 s leases: compared on b's own clock every
    claim of a's would look expired. Leases are measured on the database's clock, so b
    takes none of a's claims."""
    for emulator in world.emulators.values():
        emulator.faults.delay = 0.02  # batches outlast a few of b's claim attempts
    pre = {name: {c.id for c in e.contacts()} for name, e in world.emulators.items()}
    skew = timedelta(seconds=120)
    replicas = []
    for worker, ahead in (("replica-a", timedelta(0)), ("replica-b", skew)):
        settings = sandbox_settings(
            world, postgres_url, worker_id=worker, batch_size=5, lease_seconds=60
        )
        replicas.append(Daemon(settings, clock=lambda ahead=ahead: datetime.now(UTC) + ahead))
    replicas[0].migrate()
    start = threading.Barrier(2)
    reports: dict[str, list[CycleReport]] = {"replica-a": [], "replica-b": []}

    def loop(daemon: Daemon) -> None:
        start.wait()
        for _ in range(200):
            reports[daemon.settings.daemon.worker_id].append(daemon.run_cycle())
            store = daemon.store
            if store.message_count() == MESSAGES and not _unfinished(store):
                return

    threads = [threading.Thread(target=loop, args=(d,)) for d in replicas]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        assert not any(t.is_alive() for t in threads), "a replica did not finish"
        counts = replicas[0].store.counts()
        stolen = sum(s.targets[t].rejected for r in reports.values() for s in r for t in s.targets)
    finally:
        for daemon in replicas:
            daemon.close()

    assert stolen == 0  # no claim was taken over, so no outcome had to be rejected
    _audit(world, replicas[0], pre, counts)


def test_a_lost_store_rebuilt_and_synced_again_writes_nothing(tmp_path: Path) -> None:
    """Sync 500 messages, delete the state store, sync the same days again into a new one:
    not one new activity or contact at either CRM; the recovery's requests are reported."""
    with SandboxWorld(messages=500, callers=150, days=3, targets=list(TARGETS)) as world:
        first = Rig(world, tmp_path)
        try:
            first.until_settled()
            first.assert_exactly_once()
            pre = first.pre
        finally:
            first.close()
        before = {
            name: (len(e.contacts()), len(e.activities()), e.total_requests)
            for name, e in world.emulators.items()
        }
        for suffix in ("", *SIDE_SUFFIXES):  # a new container: a fresh, empty state file
            Path(f"{first.db_path}{suffix}").unlink(missing_ok=True)

        again = Rig(world, tmp_path)
        try:
            again.pre = pre
            settled = again.until_settled()
            again.assert_exactly_once()
        finally:
            again.close()
        after = {
            name: (len(e.contacts()), len(e.activities()), e.total_requests)
            for name, e in world.emulators.items()
        }

    recovery = {name: after[name][2] - before[name][2] for name in TARGETS}
    print(json.dumps({"store_loss_recovery_requests": recovery, "messages": 500}))
    for name in TARGETS:
        assert after[name][:2] == before[name][:2], name  # 0 new contacts, 0 new activities
    reconciled = sum(s.reconciled for r in settled for s in r.targets.values())
    assert reconciled == 500 * len(TARGETS)


def _slow_race(
    world: SandboxWorld, tmp_path: Path, *, batch_size: int, lease: float
) -> tuple[CycleReport, CycleReport, AfterWrite, dict[str, dict[str, int]], Daemon]:
    """Replica a's first activity write lands at once but its answer is held for several
    leases; meanwhile replica b runs a cycle. Returns (a's report, b's, the attack, counts,
    a daemon to audit with)."""
    url = f"sqlite:///{tmp_path / 'state.db'}"
    target = "salesforce"
    released = threading.Event()

    def slow_answer(emulator: Emulator, request: Request, response: Response) -> Response:
        released.wait(timeout=lease * 6)  # held until b has run
        return response

    attack = AfterWrite(crm(world, target), slow_answer, left=1)
    daemons = []
    for worker in ("slow-a", "quick-b"):
        settings = sandbox_settings(
            world, url, worker_id=worker, batch_size=batch_size, lease_seconds=lease
        )
        daemons.append(Daemon(_only(settings, target)))
    daemons[0].migrate()
    a, b = daemons
    results: dict[str, CycleReport] = {}
    thread = threading.Thread(target=lambda: results.setdefault("a", a.run_cycle()))
    try:
        thread.start()
        deadline = time.monotonic() + 30
        while attack.hits == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert attack.hits == 1, "a's write never reached the CRM"
        time.sleep(lease * 2)  # a's answer is slower than the lease: two leases and counting
        b_report = b.run_cycle()
        released.set()
        thread.join(timeout=60)
        attack.remove()
        counts = b.store.counts()
    finally:
        released.set()
        for daemon in daemons:
            daemon.close()
    return results["a"], b_report, attack, counts, b


def test_a_crm_slower_than_the_lease_while_a_second_replica_runs(
    world: SandboxWorld, tmp_path: Path
) -> None:
    """a's claim is renewed while it waits on the CRM: b takes none of a's deliveries (it
    has nothing left to do), nothing is written twice, nothing rejected."""
    pre = {name: {c.id for c in e.contacts()} for name, e in world.emulators.items()}
    # A 1.5 s lease renewed every 0.5 s (a loaded machine may stall a thread, not for a
    # second); held 3 s in all, within the client's 5 s read timeout.
    a, b, _, counts, daemon = _slow_race(world, tmp_path, batch_size=50, lease=1.5)

    assert b.targets["salesforce"].claimed == 0
    assert a.targets["salesforce"].rejected == 0
    assert a.targets["salesforce"].done == MESSAGES
    _audit(world, daemon, pre, counts, targets=("salesforce",))


def test_a_frozen_worker_is_taken_over_and_its_stale_outcome_rejected(
    world: SandboxWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """a is frozen (no heartbeat: a paused VM, a stopped process) past its lease while its
    write is in the CRM; b takes the claims over, finds the writes by marker and records
    them; a's outcome, when its answer finally comes, is rejected as a whole. Batches of 5,
    so a's held request is the only activity write of its batch."""
    monkeypatch.setattr(deliver, "HEARTBEAT_SHARE", 1000.0)
    pre = {name: {c.id for c in e.contacts()} for name, e in world.emulators.items()}
    a, b, _, counts, daemon = _slow_race(world, tmp_path, batch_size=5, lease=1.0)

    assert b.targets["salesforce"].in_doubt >= 5  # a's batch, taken over
    assert a.targets["salesforce"].rejected == 5  # the stale worker's outcome
    _audit(world, daemon, pre, counts, targets=("salesforce",))


# -- helpers -----------------------------------------------------------------------------------


def _unfinished(store: Store) -> int:
    states = ("pending", "in_flight", "retry")
    return sum(n for t in store.counts().values() for s, n in t.items() if s in states)


def _only(settings: Settings, target: str) -> Settings:
    """The settings with one target (the other CRM plays no part in the race), whose
    client retries without sleeping."""
    accounts = {name: replace(a, targets=(target,)) for name, a in settings.accounts.items()}
    chosen = settings.targets[target]
    options = {**chosen.options, **FAST_TARGETS.get(target, {})}
    return replace(settings, accounts=accounts, targets={target: replace(chosen, options=options)})


def _audit(
    world: SandboxWorld,
    daemon: Daemon,
    pre: dict[str, set[str]],
    counts: dict[str, dict[str, int]],
    targets: tuple[str, ...] = TARGETS,
) -> None:
    assert_exactly_once(world, daemon.settings, pre, counts, targets, patience=15.0)


def test_an_outage_pauses_the_target_instead_of_spending_every_attempt(
    rig: Rig, world: SandboxWorld
) -> None:
    """HubSpot answers 503 to everything: after ``breaker_failures`` failed batches the
    target is paused (visible in ``syncd status``), no delivery goes dead, and once the CRM
    is back every message arrives once."""
    hubspot = crm(world, "hubspot")
    hubspot.faults.outage(3600)
    for attempt in range(rig.settings.daemon.breaker_failures):
        if attempt:
            rig.clock.advance(61)  # past the retry back-off
        rig.cycle()

    status = rig.status()
    breaker = status["targets"]["hubspot"]["breaker"]
    assert breaker["failures"] == rig.settings.daemon.breaker_failures
    assert breaker["open_until"] is not None
    assert status["targets"]["hubspot"]["deliveries"].get("dead", 0) == 0
    before = hubspot.total_requests
    rig.cycle()  # paused: HubSpot is not asked
    assert hubspot.total_requests == before

    hubspot.faults.clear()
    rig.clock.advance(3600)
    rig.until_settled()
    assert rig.status()["targets"]["hubspot"]["breaker"]["failures"] == 0
    rig.assert_exactly_once()

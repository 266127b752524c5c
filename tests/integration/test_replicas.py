"""Two replicas on one PostgreSQL database and one sandbox share the work and deliver every
message exactly once.

Each replica is a :class:`~syncd.daemon.Daemon` with its own ``worker_id``, running cycles in
its own thread, as two pods of one deployment would. One polls the account (the poll lease);
both claim deliveries (``FOR UPDATE SKIP LOCKED``), so no delivery is worked on twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from crm_audit import assert_exactly_once  # tests/lib
from sqlalchemy import func, select

from syncd.daemon import CycleReport, Daemon
from syncd.demo import sandbox_settings
from syncd.sandbox.http import Emulator, Request, Response
from syncd.sandbox.world import SandboxWorld
from syncd.store.schema import deliveries
from syncd.store.store import Store

pytestmark = pytest.mark.postgres

MESSAGES, CALLERS = 150, 40
TARGETS = ("hubspot", "salesforce")
WORKERS = ("replica-a", "replica-b")


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld(messages=MESSAGES, callers=CALLERS, days=2, targets=list(TARGETS)) as w:
        yield w


def _replica(
    world: SandboxWorld, url: str, worker: str, batch_size: int = 10, concurrency: int = 3
) -> Daemon:
    """A replica; ``concurrency``: its batches in flight per target (it claims that many
    batches' worth at once)."""
    settings = sandbox_settings(
        world, url, worker_id=worker, batch_size=batch_size, lease_seconds=60
    )
    targets = {n: replace(t, concurrency=concurrency) for n, t in settings.targets.items()}
    return Daemon(replace(settings, targets=targets))


def crm(world: SandboxWorld, name: str) -> Emulator:
    """An emulator as the HTTP server it is (counts, dispatch)."""
    emulator: object = world.emulators[name]
    assert isinstance(emulator, Emulator)
    return emulator


def _unfinished(store: Store) -> int:
    states = ("pending", "in_flight", "retry")
    return sum(n for t in store.counts().values() for s, n in t.items() if s in states)


def _run(
    daemon: Daemon, start: threading.Barrier, reports: list[CycleReport], messages: int = MESSAGES
) -> None:
    """Cycles, as a replica's scheduler would run them, until every message is delivered."""
    start.wait()
    for _ in range(500):
        reports.append(daemon.run_cycle())
        if daemon.store.message_count() == messages and not _unfinished(daemon.store):
            return


def test_two_replicas_share_the_work_and_deliver_once(
    world: SandboxWorld, postgres_url: str
) -> None:
    pre = {name: {c.id for c in e.contacts()} for name, e in world.emulators.items()}
    replicas = [_replica(world, postgres_url, worker) for worker in WORKERS]
    replicas[0].migrate()
    reports: dict[str, list[CycleReport]] = {worker: [] for worker in WORKERS}
    start = threading.Barrier(len(replicas))
    threads = [
        threading.Thread(target=_run, args=(d, start, reports[d.settings.daemon.worker_id]))
        for d in replicas
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
        assert not any(t.is_alive() for t in threads), "a replica did not finish"
        split = _split(replicas[0].store)
        counts = replicas[0].store.counts()
    finally:
        for daemon in replicas:
            daemon.close()

    every = [r for worker in WORKERS for r in reports[worker]]
    # Errors are allowed (two replicas share one CRM's rate limits, and retry); losses are not.
    errors = [e for r in every for e in r.errors]
    print(f"two-replica split (done deliveries by worker): {split}; cycle errors: {errors}")
    assert not any(r.auth_failures for r in every)
    polled = {w: sum(1 for r in reports[w] if r.accounts) for w in WORKERS}
    for name in TARGETS:
        assert counts[name]["done"] == MESSAGES, counts
    assert sum(sum(s.values()) for s in split.values()) == MESSAGES * len(TARGETS)
    assert all(split[w] for w in WORKERS), f"one replica did all the work: {split}"
    assert sorted(bool(polled[w]) for w in WORKERS) == [False, True], polled  # one poller

    assert_exactly_once(world, replicas[0].settings, pre, counts, TARGETS)


def _split(store: Store) -> dict[str, dict[str, Any]]:
    """Deliveries done, by the worker that claimed them last, per target."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.claimed_by, deliveries.c.target, func.count())
            .where(deliveries.c.state == "done")
            .group_by(deliveries.c.claimed_by, deliveries.c.target)
        )
        out: dict[str, dict[str, Any]] = {}
        for worker, target, n in rows:
            out.setdefault(str(worker), {})[str(target)] = int(n)
        return out


class CreateGate:
    """Holds a CRM's contact writes until ``pair`` of them are waiting, or ``timeout``: two
    replicas that each looked a new caller up and found nobody then write at the same time.
    A replica that waits for another's outcomes first never arrives, and the gate times out."""

    def __init__(self, emulator: Emulator, *, pair: int = 2, timeout: float = 1.5) -> None:
        self.emulator, self.pair, self.timeout = emulator, pair, timeout
        self.waiting = 0
        self.arrived = threading.Condition()
        self._dispatch = emulator.dispatch
        emulator.dispatch = self  # type: ignore[method-assign]

    def __call__(self, request: Request) -> Response:
        if _writes_contacts(request):
            with self.arrived:
                self.waiting += 1
                self.arrived.notify_all()
                self.arrived.wait_for(lambda: self.waiting >= self.pair, timeout=self.timeout)
        return self._dispatch(request)


def _writes_contacts(request: Request) -> bool:
    if request.method == "GET":
        return False
    if request.path.endswith(("/contacts/batch/upsert", "/contacts/batch/create")):
        return True
    return b'"Contact"' in request.body and b'"attributes"' in request.body  # Salesforce


@pytest.mark.parametrize("target", TARGETS)
def test_one_new_caller_on_two_replicas_is_one_contact(postgres_url: str, target: str) -> None:
    """The same new caller in two messages, one with an email and one with only the phone, so
    their caller keys differ; each replica takes one and both find nobody in the CRM. One
    target, so that neither replica is busy elsewhere when the other claims."""
    with SandboxWorld(
        messages=2, callers=1, days=1, targets=[target], known_share=0, company_share=0
    ) as world:
        berkshire = world.berkshire
        assert berkshire is not None
        caller = {
            "first name": "Ada",
            "last name": "Lovelace",
            "company name": "",
            "is emergency": False,  # one activity a message, no emergency task beside it
        }
        phone = {"phone": "(415) 867-5309", "caller id": ""}
        email = "content with additional details table Email"
        for message in berkshire.messages:
            for key in [k for k in message if k.startswith("content with additional details")]:
                message[key] = ""
            berkshire.add_messages([{**message, **caller, **phone}])
        first, second = sorted(str(m["message id"]) for m in berkshire.messages)
        berkshire.update_message(first, **{email: "ada@example.com"})
        gate = CreateGate(crm(world, target))
        # One message a claim, so that each replica takes one (a replica with batches in
        # flight together would claim both, and the replicas would never race).
        replicas = [
            _replica(world, postgres_url, worker, batch_size=1, concurrency=1) for worker in WORKERS
        ]
        replicas[0].migrate()
        start = threading.Barrier(len(replicas))
        threads = [threading.Thread(target=_run, args=(d, start, [], 2)) for d in replicas]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert not any(t.is_alive() for t in threads), "a replica did not finish"
            split = _split(replicas[0].store)
        finally:
            for daemon in replicas:
                daemon.close()

        print(f"one new caller, two replicas, {target}: {split}")
        assert sorted(split) == sorted(WORKERS), "each replica should take one message"
        assert gate.waiting >= 1
        contacts = world.emulators[target].contacts()
        assert len(contacts) == 1, contacts
        markers = sorted(a.marker or "" for a in world.emulators[target].activities())
        assert markers == [f"syncd:demo:{first}", f"syncd:demo:{second}"]

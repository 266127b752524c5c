"""Faults, end to end: the daemon in process against the whole sandbox over loopback.

CRM outages, 429 storms, slow and ambiguous answers, expired sessions, a source that is down
or slow, a locked database, refused credentials and junk in the source's answers. Whatever
happens, every message reaches every CRM exactly once, the source cursor never moves past an
unfinished window, and what could not be done is visible in ``syncd status --json``.

Time is a :class:`Clock` the test moves, not sleeping: retry back-offs and leases are read
against it, and the clients' own retry sleeps are cut short by fast-retry target options.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import crash_soak  # tests/perf is on pytest's pythonpath (pyproject)
import pytest
from crm_audit import assert_exactly_once  # tests/lib
from sqlalchemy import event, select
from syncd_hubspot.emulator.api import HubSpotEmulator

from syncd.config import AccountSettings, Settings, parse_settings
from syncd.daemon import CycleReport, Daemon
from syncd.sandbox.generate import make_messages
from syncd.sandbox.http import Emulator, Faults, Request, Response
from syncd.sandbox.toml import dumps
from syncd.sandbox.world import SandboxWorld
from syncd.source.client import BerkshireClient
from syncd.store.schema import deliveries
from syncd.store.store import Store

MESSAGES, CALLERS = 40, 12
TARGETS = ("hubspot", "salesforce")
# Connector retry loops that sleep milliseconds, not seconds; the daemon's back-off is what
# these tests watch.
FAST_TARGETS: Mapping[str, Mapping[str, Any]] = {
    "hubspot": {"max_retries": 1, "backoff_cap": 0.01, "timeout": 5.0},
    "salesforce": {"retries": 1, "backoff": 0.01, "timeout": 5.0},
}


SOAK = crash_soak


class Clock:
    """The daemon's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FastSourceDaemon(Daemon):
    """A Daemon whose Berkshire client retries without sleeping (the test owns time)."""

    def client(self, account: AccountSettings) -> BerkshireClient:
        if account.name not in self._clients:
            self._clients[account.name] = BerkshireClient(
                account.base_url,
                account.email,
                account.token,
                timeout=account.timeout_seconds,
                max_attempts=2,
                sleep=lambda _: None,
            )
        return self._clients[account.name]


class Rig:
    """A started sandbox, a daemon on a fresh SQLite store, and the same config on disk for
    the CLI (``syncd status``, ``syncd retry``, ``syncd run --once``)."""

    def __init__(
        self,
        world: SandboxWorld,
        tmp: Path,
        *,
        account: Mapping[str, Any] | None = None,
        targets: Mapping[str, Mapping[str, Any]] | None = None,
        **daemon: Any,
    ) -> None:
        self.world = world
        self.db_path = tmp / "state.db"
        defaults: dict[str, Any] = {
            "retry_base_seconds": 1.0,
            "retry_cap_seconds": 60.0,
            "max_attempts": 3,
            "lease_seconds": 30.0,
        }
        doc = world.settings_doc(f"sqlite:///{self.db_path}", **{**defaults, **daemon})
        for name, table in doc["targets"].items():
            table.update(FAST_TARGETS.get(name, {}))
            table.update((targets or {}).get(name, {}))
        doc["accounts"]["demo"].update(account or {})
        self.config = tmp / "syncd.toml"
        self.config.write_text(dumps(doc), encoding="utf-8")
        self.config.chmod(0o600)
        self.settings: Settings = parse_settings(doc, environ={})
        self.clock = Clock()
        self.daemon = FastSourceDaemon(self.settings, clock=self.clock)
        self.daemon.migrate()
        self.pre = {name: {c.id for c in e.contacts()} for name, e in world.emulators.items()}

    @property
    def store(self) -> Store:
        return self.daemon.store

    def cycle(self) -> CycleReport:
        return self.daemon.run_cycle()

    def until_settled(self, step: float = 61.0, limit: int = 30) -> list[CycleReport]:
        """Cycles, moving the clock past every back-off, until nothing is left to do."""
        reports = []
        for _ in range(limit):
            reports.append(self.cycle())
            if not self.unfinished():
                return reports
            self.clock.advance(step)
        raise AssertionError(f"still unfinished after {limit} cycles: {self.store.counts()}")

    def unfinished(self) -> int:
        states = ("pending", "in_flight", "retry")
        return sum(n for t in self.store.counts().values() for s, n in t.items() if s in states)

    def state(self, target: str) -> dict[str, int]:
        counts: dict[str, int] = self.store.counts().get(target, {})
        return {state: n for state, n in counts.items() if n}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args, "--config", str(self.config)],
            env=SOAK.syncd_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def status(self) -> dict[str, Any]:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        status: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return status

    def assert_exactly_once(self, targets: tuple[str, ...] = TARGETS) -> dict[str, Any]:
        """Every message on every target once; contacts only for callers who needed one."""
        counts = self.store.counts()
        return assert_exactly_once(self.world, self.settings, self.pre, counts, targets)

    def restart(self) -> None:
        """The operator's next start after ^C: an interrupted daemon stays stopped."""
        self.daemon.close()
        self.daemon = FastSourceDaemon(self.settings, clock=self.clock)

    def close(self) -> None:
        self.daemon.close()


INJECTED: Counter[str] = Counter()  # every fault this module injected, for its summary


def tally(world: SandboxWorld) -> None:
    """Add the faults the sandbox's servers injected so far (call before replacing them)."""
    servers: list[object] = [world.berkshire, *world.emulators.values()]
    for server in servers:
        if isinstance(server, Emulator):
            INJECTED.update({f"{server.name} {k}": n for k, n in server.faults.injected.items()})
            server.faults.injected.clear()


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    print(f"\nfaults injected: {json.dumps(dict(sorted(INJECTED.items())))}")


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld(messages=MESSAGES, callers=CALLERS, days=2, targets=list(TARGETS)) as w:
        for emulator in w.emulators.values():
            emulator.faults.retry_after = 0.01  # 429s ask for milliseconds, not a second
        yield w
        tally(w)


@pytest.fixture
def make_rig(world: SandboxWorld, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(**options: Any) -> Rig:
        rigs.append(Rig(world, tmp_path, **options))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


def crm(world: SandboxWorld, name: str) -> Emulator:
    """An emulator as the HTTP server it is (faults, counts, dispatch)."""
    emulator: object = world.emulators[name]
    assert isinstance(emulator, Emulator)
    return emulator


def errors_of(rig: Rig, target: str, state: str) -> list[str]:
    with rig.store.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.last_error).where(
                deliveries.c.target == target, deliveries.c.state == state
            )
        )
        return [str(r[0]) for r in rows]


def next_attempts(rig: Rig, target: str) -> list[datetime]:
    with rig.store.engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.next_attempt_at).where(
                deliveries.c.target == target, deliveries.c.state == "retry"
            )
        )
        return [r[0].replace(tzinfo=UTC) if r[0].tzinfo is None else r[0] for r in rows]


# -- CRM faults -------------------------------------------------------------------------------


def test_crm_outage_retries_later_and_delivers_once(rig: Rig, world: SandboxWorld) -> None:
    hubspot = crm(world, "hubspot")
    hubspot.faults.outage(3600)

    first = rig.cycle()

    assert first.exit_code == 1
    assert any("hubspot" in e for e in first.errors)
    assert rig.state("hubspot") == {"retry": MESSAGES}
    assert rig.state("salesforce") == {"done": MESSAGES}  # the other target flows on
    due = next_attempts(rig, "hubspot")
    assert len(due) == MESSAGES
    assert all(when > rig.clock.now for when in due)
    assert all("503" in error for error in errors_of(rig, "hubspot", "retry")), errors_of(
        rig, "hubspot", "retry"
    )
    assert hubspot.faults.injected["outage"] > 0

    hubspot.faults.clear()
    before = hubspot.total_requests
    rig.cycle()  # nothing is due yet: HubSpot is left alone
    assert hubspot.total_requests == before
    assert rig.state("hubspot") == {"retry": MESSAGES}

    rig.clock.advance(max(due).timestamp() - rig.clock.now.timestamp() + 1)
    last = rig.cycle()
    assert last.exit_code == 0, last.as_dict()
    rig.assert_exactly_once()


def test_429_storm_and_server_errors(make_rig: Callable[..., Rig], world: SandboxWorld) -> None:
    """A third of all CRM requests refused with 429 and a tenth with 500, on both CRMs."""
    rig = make_rig(max_attempts=50)  # this test is about retrying, not giving up
    tally(world)
    for seed, name in enumerate(TARGETS):
        crm(world, name).faults = Faults(
            rate_limit_ratio=0.33, error_ratio=0.1, retry_after=0.01, seed=seed
        )

    rig.until_settled()

    injected = {name: dict(crm(world, name).faults.injected) for name in TARGETS}
    assert all(counts.get("429", 0) > 0 for counts in injected.values()), injected
    for name in TARGETS:  # the audit reads the final state; the storm is over
        crm(world, name).faults.clear()
    rig.assert_exactly_once()


class SlowWrites:
    """Holds the next ``left`` writes of ``kind`` (``contacts`` or ``activities``) for ``slow``
    seconds before the emulator carries them out. Above the client's timeout, the client gives
    up on a write the CRM then makes anyway: the ambiguous case that retries must not turn into
    duplicates. Installed on the emulator's dispatch, so reads go by untouched."""

    _HUBSPOT = {"contacts": "/contacts/batch/upsert", "activities": "/notes/batch/create"}
    _SALESFORCE = {"contacts": "Contact", "activities": "Task"}

    def __init__(self, emulator: Emulator, kind: str, *, slow: float, left: int) -> None:
        self.emulator, self.kind, self.slow, self.left = emulator, kind, slow, left
        self.held = 0
        self._dispatch = emulator.dispatch
        emulator.dispatch = self  # type: ignore[method-assign]

    def __call__(self, request: Request) -> Response:
        if self._wanted(request):
            with self.emulator.lock:
                hold = self.left > 0
                self.left -= hold
                self.held += hold
            if hold:
                time.sleep(self.slow)
        return self._dispatch(request)

    def _wanted(self, request: Request) -> bool:
        if request.method == "GET":
            return False
        if request.path.endswith(self._HUBSPOT[self.kind]):
            return True
        try:  # Salesforce writes carry records typed by "attributes" (Collections, composite)
            body = request.json()
        except ValueError:  # the SOAP login
            return False
        return self._SALESFORCE[self.kind] in _record_types(body)

    def remove(self) -> None:
        del self.emulator.dispatch  # the class's own again


def _record_types(node: object) -> set[str]:
    if isinstance(node, list):
        return set().union(*(_record_types(n) for n in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set().union(*(_record_types(v) for v in node.values())) if node else set()
    attributes = node.get("attributes")
    if isinstance(attributes, dict) and isinstance(attributes.get("type"), str):
        found.add(attributes["type"])
    return found


@pytest.mark.parametrize("writes", ["contacts", "activities"])
def test_slow_answers_and_writes_the_client_gave_up_on(
    make_rig: Callable[..., Rig], world: SandboxWorld, writes: str
) -> None:
    rig = make_rig(targets={name: {"timeout": 0.5} for name in TARGETS})
    slowed = []
    for name in TARGETS:
        emulator = crm(world, name)
        emulator.faults.delay = 0.05  # every answer slow, within the timeout
        slowed.append(SlowWrites(emulator, writes, slow=1.2, left=2))

    first = rig.cycle()
    time.sleep(1.3)  # let the CRMs finish the writes their clients stopped waiting for

    assert first.errors, first.as_dict()
    for slow in slowed:
        assert slow.held >= 1, slow.emulator.name
        INJECTED[f"{slow.emulator.name} write the client gave up on"] += slow.held
        slow.remove()
    rig.clock.advance(61)
    rig.until_settled()
    rig.assert_exactly_once()


def test_expired_sessions_are_renewed(tmp_path: Path) -> None:
    """Salesforce sessions that last a fraction of a second: the connector logs in again."""
    options = {"salesforce": {"session_ttl": 0.1}}
    with SandboxWorld(
        messages=MESSAGES, callers=CALLERS, days=2, targets=["salesforce"], emulator_options=options
    ) as world:
        salesforce = crm(world, "salesforce")
        salesforce.faults.delay = 0.06  # a session outlives one request, not three
        rig = Rig(world, tmp_path)
        try:
            report = rig.cycle()
            assert report.exit_code == 0, report.as_dict()
            assert salesforce.counts["login"] > 1
            assert salesforce.statuses[401] > 0  # sessions did expire under the connector
            INJECTED["salesforce expired session"] += salesforce.statuses[401]
            rig.assert_exactly_once(("salesforce",))
        finally:
            rig.close()


# -- source faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["down", "slow"])
def test_source_fault_leaves_the_cursor_alone(
    make_rig: Callable[..., Rig], world: SandboxWorld, fault: str
) -> None:
    rig = make_rig(account={"timeout_seconds": 0.3})
    berkshire = world.berkshire
    assert berkshire is not None
    first = rig.cycle()
    assert first.ok
    cursor = rig.store.get_cursor("demo")
    assert cursor == rig.clock.now

    # Two new calls today, then the source fails for the next poll.
    callers = world.callers[:2]
    late = make_messages(
        callers, 2, start=rig.clock.now - timedelta(minutes=5), end=rig.clock.now, first_id=900
    )
    berkshire.add_messages(late)
    if fault == "down":
        berkshire.faults.outage(3600)
    else:
        berkshire.faults.delay = 0.5  # past the account's 0.3 s timeout
        INJECTED["berkshire answer slower than the timeout"] += 1
    rig.clock.advance(300)
    failed = rig.cycle()

    assert failed.exit_code == 1
    assert any(e.startswith("demo:") for e in failed.errors), failed.errors
    assert rig.store.get_cursor("demo") == cursor  # not past the unfinished window
    assert rig.store.message_count() == MESSAGES
    injected = dict(berkshire.faults.injected)

    berkshire.faults.clear()
    rig.clock.advance(300)
    recovered = rig.cycle()

    assert recovered.ok, recovered.as_dict()
    assert rig.store.get_cursor("demo") == rig.clock.now
    assert rig.store.message_count() == MESSAGES + 2
    assert fault == "slow" or injected["outage"] > 0
    rig.assert_exactly_once()


# -- the state store --------------------------------------------------------------------------


def short_busy_timeout(rig: Rig, milliseconds: int = 200) -> None:
    """The store waits 30 s for a lock; a test need not. Runs after the store's own set-up."""

    @event.listens_for(rig.store.engine, "connect")
    def _busy(dbapi_conn: Any, _: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={milliseconds}")
        cursor.close()


class WriteLock:
    """Another process's write transaction on the SQLite state file."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.held = threading.Event()

    def take(self) -> None:
        if not self.held.is_set():
            self._conn.execute("BEGIN IMMEDIATE")
            self.held.set()

    def release(self) -> None:
        if self.held.is_set():
            self._conn.execute("ROLLBACK")
            self.held.clear()

    def close(self) -> None:
        self.release()
        self._conn.close()


@dataclass
class LockOnRequest(Faults):
    """Takes ``lock`` when the emulator receives its first request to ``endpoint``: the
    store is locked while the CRM is mid-write, so the outcomes cannot be recorded."""

    emulator: Emulator | None = None
    endpoint: str = ""
    lock: WriteLock | None = None

    def pick(self) -> str | None:
        assert self.emulator is not None
        assert self.lock is not None
        with self.emulator.lock:
            if self.emulator.counts[self.endpoint]:
                self.lock.take()
        return super().pick()


@pytest.mark.parametrize("when", ["before the cycle", "while the CRM writes"])
def test_locked_database_fails_the_cycle_cleanly(rig: Rig, world: SandboxWorld, when: str) -> None:
    short_busy_timeout(rig)
    lock = WriteLock(rig.db_path)
    try:
        if when == "before the cycle":
            lock.take()
        else:
            hubspot = crm(world, "hubspot")
            hubspot.faults = LockOnRequest(
                emulator=hubspot, endpoint="notes.batch_create", lock=lock
            )
        failed = rig.cycle()
        assert lock.held.is_set()
        INJECTED["state store write lock"] += 1
    finally:
        lock.close()

    assert failed.exit_code == 1
    assert failed.errors == ["database: database is locked"]
    if when == "before the cycle":
        assert rig.store.message_count() == 0
        assert rig.store.get_cursor("demo") is None
    crm(world, "hubspot").faults = Faults()
    rig.clock.advance(rig.settings.daemon.lease_seconds + 1)  # claims cut short are retaken
    settled = rig.until_settled()
    assert settled[-1].ok, settled[-1].as_dict()
    if when == "while the CRM writes":
        # The notes landed but their outcomes could not be recorded: found, not rewritten.
        assert settled[0].targets["hubspot"].reconciled == MESSAGES
    rig.assert_exactly_once()


# -- giving up, and being told to try again ----------------------------------------------------


def test_dead_after_max_attempts_shown_in_status_and_requeued_by_retry(
    make_rig: Callable[..., Rig], world: SandboxWorld
) -> None:
    # A breaker that never opens: every failure spends an attempt (test_nothing_twice shows
    # an outage pausing the target instead).
    rig = make_rig(breaker_failures=100)
    hubspot = crm(world, "hubspot")
    hubspot.faults.outage(3600)
    max_attempts = rig.settings.daemon.max_attempts

    for attempt in range(1, max_attempts + 1):
        report = rig.cycle()
        assert report.targets.get("hubspot") is None  # the outage reached the daemon
        expected = "dead" if attempt == max_attempts else "retry"
        assert rig.state("hubspot") == {expected: MESSAGES}, attempt
        rig.clock.advance(61)

    status = rig.status()
    assert status["targets"]["hubspot"]["deliveries"]["dead"] == MESSAGES
    dead = status["dead"]
    assert len(dead) == MESSAGES
    assert {d["target"] for d in dead} == {"hubspot"}
    assert all("503" in d["reason"] and d["attempts"] == max_attempts for d in dead), dead[0]
    before = hubspot.total_requests
    rig.cycle()
    assert hubspot.total_requests == before  # dead is dead: no more attempts on its own

    requeued = rig.cli("retry", "--target", "hubspot")
    assert requeued.returncode == 0, requeued.stderr
    assert f"requeued {MESSAGES} deliveries" in requeued.stdout
    assert rig.state("hubspot") == {"pending": MESSAGES}

    hubspot.faults.clear()
    assert rig.cycle().ok
    assert rig.status()["dead"] == []
    rig.assert_exactly_once()


def test_refused_credentials_pause_only_that_target(rig: Rig, world: SandboxWorld) -> None:
    hubspot: object = world.emulators["hubspot"]
    assert isinstance(hubspot, HubSpotEmulator)
    token = hubspot.token
    hubspot.token = "rotated-by-an-admin"
    INJECTED["hubspot token refused"] += 1

    report = rig.cycle()

    assert report.exit_code == 3
    assert report.auth_failures
    assert all("hubspot" in f for f in report.auth_failures)
    assert rig.state("salesforce") == {"done": MESSAGES}  # the other target still delivers
    assert rig.state("hubspot") == {"pending": MESSAGES}  # given back, no attempt spent
    before = hubspot.total_requests
    rig.cycle()
    assert hubspot.total_requests == before  # paused: not asked again at once

    once = rig.cli("run", "--once")
    assert once.returncode == 3, once.stderr[-2000:]

    hubspot.token = token
    rig.clock.advance(16 * 60)  # past the pause
    assert rig.cycle().ok
    rig.assert_exactly_once()


# -- bad input --------------------------------------------------------------------------------

JUNK: list[object] = [
    "not an object",
    42,
    None,
    ["a", "list"],
    {"content": "a message without an id", "phone": "(212) 555-0100"},
    {"message id": "", "content": "an empty id"},
    {"message id": 3.5, "content": "a fractional id"},
    {"message id": ["M-1"], "content": "an id that is a list"},
]


def test_junk_in_the_list_is_quarantined_and_the_rest_flow_on(
    rig: Rig, world: SandboxWorld
) -> None:
    berkshire = world.berkshire
    assert berkshire is not None
    berkshire.extra_items = list(JUNK)  # appended to every list answer
    INJECTED["berkshire junk item"] += len(JUNK)

    first = rig.cycle()
    second = rig.cycle()  # the same junk again: not a new problem

    assert first.ok, first.as_dict()
    assert first.accounts["demo"].quarantined == len(JUNK)
    assert second.accounts["demo"].quarantined == 0
    quarantined = rig.status()["quarantined"]
    assert len(quarantined) == len(JUNK)
    assert sorted(q["reason"] for q in quarantined) == sorted(
        [
            "item is a str, not an object",
            "item is a int, not an object",
            "item is a NoneType, not an object",
            "item is a list, not an object",
            "missing message id",
            "missing message id",  # an empty id is no id
            "message id is a fractional number",
            "message id is a list, not a string",
        ]
    )
    raws = {q["raw"] for q in quarantined}
    assert json.dumps("not an object") in raws
    assert any("a message without an id" in raw for raw in raws)
    rig.assert_exactly_once()

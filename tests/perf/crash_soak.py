"""Crash soak: interrupt a real ``syncd run`` at random moments until the sandbox is in sync.

Each life of the daemon is ``syncd run`` or ``syncd run --once``, ended by SIGKILL, SIGINT or
SIGTERM at a random moment (a graceful stop that does not come within ``grace`` seconds is
finished with SIGKILL), while a random fault is injected at a random CRM: 500s, 429s, slow
answers, an outage, or -- the hardest -- an activity write that LANDS and is then answered
with the daily limit or a malformed 200 body. ``--signals`` and ``--faults`` narrow the menu.

The sandbox (Berkshire simulator and every CRM emulator) runs in this process; the daemon runs
as a subprocess against it, with a short interval, short leases and small batches so that the
kills land mid-delivery and a killed worker's claims are retaken quickly. After the last kill,
``syncd run --once`` is repeated until ``syncd status --json`` shows nothing left to do. Then
every CRM is audited against the generator's ground truth:

* contacts created == callers of the generated messages who were not pre-seeded in that CRM;
* one activity per message (grouped by marker), found again by ``find_activities``;
* no message missing, no delivery dead or held for review.

Run::

    python tests/perf/crash_soak.py --messages 2000 --callers 300 --kills 100 [--seed N] \
        [--signals SIGKILL,SIGINT,SIGTERM] [--faults none,500s,429s,slow,outage,daily,malformed]

The last line printed is one JSON object with the figures; the exit code is 1 if the audit
found anything lost or doubled. ``tests/integration/test_crash_recovery.py`` runs a short
version of the same routine in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.exc import OperationalError

from syncd.connector import TargetContext, load_factory
from syncd.demo import sandbox_settings
from syncd.logging import configure_logging
from syncd.match.phones import normalize_phone
from syncd.models import activity_marker
from syncd.sandbox.crm import CrmEmulator, StoredContact
from syncd.sandbox.generate import Caller, callers_of
from syncd.sandbox.http import Emulator, Request, Response, json_response
from syncd.sandbox.world import SandboxWorld
from syncd.store.schema import deliveries
from syncd.store.store import Store

__all__ = [
    "AfterWrite",
    "SoakOptions",
    "TargetAudit",
    "daily_limit",
    "malformed",
    "run_soak",
    "syncd_env",
    "writes_activities",
    "writes_contacts",
]

TARGETS = ("hubspot", "salesforce")
SIGNALS = ("SIGKILL", "SIGINT", "SIGTERM")
FAULTS = ("none", "500s", "429s", "slow", "outage", "daily", "malformed")
UNFINISHED = ("pending", "in_flight", "retry")
ACCOUNT = "demo"  # the sandbox config's account name: part of every marker


@dataclass(frozen=True)
class SoakOptions:
    messages: int = 2000
    callers: int = 300
    days: int = 3
    kills: int = 100
    seed: int = 0  # the kill timings
    world_seed: int | None = None  # the generated messages and CRMs; default: ``seed``
    # Each life of the daemon lasts uniform(min_life, max_life) seconds after start-up (the
    # time syncd takes to import here and now, measured once: on a loaded machine it can take
    # longer than a whole life, and lives that never reach the work prove nothing).
    min_life: float = 0.4
    max_life: float = 2.0
    batch_size: int = 20
    lease_seconds: float = 2.0
    # Search lag on every CRM emulator: a contact created just before a kill is invisible to
    # the lookup that follows the restart, as in the real CRMs.
    search_lag: float = 0.0
    # Each CRM answer takes this long, so deliveries outlast a life and kills land mid-batch
    # however few requests a batch needs.
    crm_delay: float = 0.05
    targets: tuple[str, ...] = TARGETS
    max_once_runs: int = 40
    # How each life ends, picked at random per life.
    signals: tuple[str, ...] = SIGNALS
    # Faults injected at one random CRM per life, picked at random ("none" is a clean life).
    faults: tuple[str, ...] = FAULTS
    # Seconds a SIGINT/SIGTERM may take to stop the daemon before it is SIGKILLed.
    grace: float = 15.0
    # Share of lives that are ``syncd run --once`` (SIGINT there interrupts a batch; a life
    # may also end by itself when its one cycle is done).
    once_share: float = 0.5


@dataclass
class TargetAudit:
    """What one CRM holds after the soak, against the ground truth."""

    messages: int = 0
    callers_needing_contact: int = 0
    contacts_created: int = 0
    duplicate_contacts: int = 0
    unexpected_contacts: int = 0  # created for someone who was pre-seeded or never called
    missing_contacts: int = 0
    misattributed: int = 0  # activities logged on another caller's contact
    activities: int = 0  # messages with an activity, by marker
    duplicate_activities: int = 0
    missing_messages: int = 0
    not_found_by_marker: int = 0  # markers find_activities could not find again
    deliveries: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        finished = all(self.deliveries.get(s, 0) == 0 for s in (*UNFINISHED, "dead", "review"))
        return (
            finished
            and self.deliveries.get("done", 0) == self.messages
            and self.contacts_created == self.callers_needing_contact
            and self.activities == self.messages
            and not (
                self.duplicate_contacts
                or self.unexpected_contacts
                or self.missing_contacts
                or self.misattributed
                or self.duplicate_activities
                or self.missing_messages
                or self.not_found_by_marker
            )
        )


def writes_activities(request: Request) -> bool:
    """An activity write on either CRM: HubSpot's engagement batch creates, Salesforce's
    Task records (sObject Collections or composite, typed by ``attributes``)."""
    if request.method == "GET":
        return False
    path = request.path
    if "/crm/v3/objects/" in path and path.endswith("/batch/create"):
        kind = path.split("/crm/v3/objects/")[1].split("/")[0]
        return kind in ("notes", "calls", "tasks", "0-4", "0-46", "0-48", "0-27")
    return b'"Task"' in request.body and b'"attributes"' in request.body


def writes_contacts(request: Request) -> bool:
    """A contact (or lead) write on either CRM."""
    if request.method == "GET":
        return False
    if "/crm/v3/objects/contacts/batch/" in request.path:
        return request.path.rsplit("/", 1)[-1] in ("create", "upsert", "update")
    body = request.body
    return b'"attributes"' in body and (b'"Contact"' in body or b'"Lead"' in body)


Then = Callable[[Emulator, Request, Response], Response]


class AfterWrite:
    """Once an activity write has been CARRIED OUT by the emulator, ``then`` turns the next
    ``left`` answers into something else: the moment a write landed but is not recorded.
    Installed on the emulator's dispatch, so reads and other writes go by untouched."""

    def __init__(
        self,
        emulator: Emulator,
        then: Then | None = None,
        left: int = 0,
        writes: Callable[[Request], bool] = writes_activities,
    ) -> None:
        self.emulator, self.then, self.left, self.hits = emulator, then, left, 0
        self.writes = writes
        self._dispatch = emulator.dispatch
        emulator.dispatch = self  # type: ignore[method-assign]

    def arm(self, then: Then | None, left: int = 1) -> None:
        with self.emulator.lock:
            self.then, self.left = then, left if then is not None else 0

    def __call__(self, request: Request) -> Response:
        response = self._dispatch(request)  # the write lands
        if self.writes(request) and 200 <= response.status < 300:
            with self.emulator.lock:
                then = self.then if self.left > 0 else None
                self.left -= then is not None
                self.hits += then is not None
            if then is not None:
                return then(self.emulator, request, response)
        return response

    def remove(self) -> None:
        del self.emulator.dispatch  # the class's own again


def daily_limit(emulator: Emulator, request: Request, response: Response) -> Response:
    """Each vendor's documented daily-limit answer, given after the write was made: HubSpot's
    429 with ``policyName: DAILY``, Salesforce's 403 REQUEST_LIMIT_EXCEEDED TotalRequests."""
    if emulator.name == "hubspot":
        body: object = {
            "status": "error",
            "message": "You have reached your daily limit.",
            "errorType": "RATE_LIMIT",
            "policyName": "DAILY",
            "correlationId": "00000000-0000-0000-0000-000000000000",
        }
        return json_response(body, status=429)
    body = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    return json_response(body, status=403)


def malformed(emulator: Emulator, request: Request, response: Response) -> Response:
    """200, and a body cut off a third of the way (a proxy, a truncated read)."""
    return Response(200, response.body[: max(1, len(response.body) // 3)], response.headers)


def _inject(fault: str, emulator: Emulator, after: AfterWrite, base_delay: float) -> None:
    """Set one CRM's faults for the next life (every other CRM is clean)."""
    emulator.faults.clear()
    emulator.faults.delay = base_delay
    after.arm(None)
    if fault == "500s":
        emulator.faults.error_ratio = 0.2
    elif fault == "429s":
        emulator.faults.rate_limit_ratio = 0.2
    elif fault == "slow":
        emulator.faults.delay = base_delay + 0.3
    elif fault == "outage":
        emulator.faults.outage(3600)
    elif fault == "daily":
        after.arm(daily_limit)
    elif fault == "malformed":
        after.arm(malformed, left=2)


def syncd_env(**settings: object) -> dict[str, str]:
    """This process's environment without any ``SYNCD_*`` variable of the caller's (a CI
    variable such as ``SYNCD_REQUIRE_POSTGRES`` would be read as an unknown config key), plus
    ``SYNCD_<KEY>`` overrides for ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env.update({f"SYNCD_{k.upper()}": str(v) for k, v in settings.items()})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _startup_seconds() -> float:
    """How long a ``syncd`` process takes to import what a daemon run needs."""
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-c", "import syncd.cli, syncd.daemon, syncd_hubspot, syncd_salesforce"],
        check=True,
    )
    return time.monotonic() - began


def _syncd(*args: str) -> list[str]:
    return [sys.executable, "-m", "syncd", *args]


def _identity(first: str, last: str, company: str) -> tuple[str, str, str]:
    return (first.strip().casefold(), last.strip().casefold(), company.strip().casefold())


class _CallerIndex:
    """Maps a CRM contact back to the generated caller it stands for."""

    def __init__(self, callers: Sequence[Caller]) -> None:
        self._by_name: dict[tuple[str, str], list[Caller]] = {}
        for caller in callers:
            key = _identity(caller.first_name, caller.last_name, "")[:2]
            self._by_name.setdefault(key, []).append(caller)

    def find(self, contact: StoredContact) -> Caller | None:
        found = self._by_name.get(_identity(contact.first_name, contact.last_name, "")[:2], [])
        for narrow in (self._same_company, self._same_email, self._same_phone):
            if len(found) <= 1:
                break
            found = [c for c in found if narrow(c, contact)] or found
        return found[0] if len(found) == 1 else None

    @staticmethod
    def _same_company(caller: Caller, contact: StoredContact) -> bool:
        return bool(contact.company) and _identity("", "", caller.company) == _identity(
            "", "", contact.company
        )

    @staticmethod
    def _same_email(caller: Caller, contact: StoredContact) -> bool:
        return bool(contact.email) and (caller.email or "").casefold() == contact.email.casefold()

    @staticmethod
    def _same_phone(caller: Caller, contact: StoredContact) -> bool:
        key = normalize_phone(contact.phone, caller.region)
        return key is not None and key.e164 == caller.e164


def audit_target(
    emulator: CrmEmulator,
    pre_seeded: set[str],
    callers: Sequence[Caller],
    message_callers: Mapping[str, int],
    find_activities: Callable[[Sequence[str]], Mapping[str, object]],
    deliveries: Mapping[str, int],
) -> TargetAudit:
    """Compare one CRM with the ground truth. ``pre_seeded`` holds the ids of the contacts
    that existed before the run; ``message_callers`` maps message id -> caller index."""
    index = _CallerIndex(callers)
    seeded_callers = {
        c.index
        for c in (index.find(s) for s in emulator.contacts() if s.id in pre_seeded)
        if c is not None
    }
    needing = set(message_callers.values()) - seeded_callers
    created = [c for c in emulator.contacts() if c.id not in pre_seeded]
    mapped = Counter(c.index if c else None for c in (index.find(x) for x in created))
    audit = TargetAudit(
        messages=len(message_callers),
        callers_needing_contact=len(needing),
        contacts_created=len(created),
        deliveries=dict(deliveries),
    )
    audit.duplicate_contacts = sum(n - 1 for i, n in mapped.items() if i is not None and n > 1)
    audit.unexpected_contacts = sum(n for i, n in mapped.items() if i is None or i not in needing)
    audit.missing_contacts = len(needing - set(mapped))

    # Two activities for one message with the same subject and priority are one too many;
    # a note plus an emergency task for the same message are two different things.
    groups = Counter(
        (a.marker, a.subject, a.high_priority) for a in emulator.activities() if a.marker
    )
    markers = {activity_marker(ACCOUNT, mid) for mid in message_callers}
    logged = {marker for marker, _, _ in groups}
    audit.activities = len(markers & logged)
    audit.missing_messages = len(markers - logged)
    audit.duplicate_activities = sum(n - 1 for n in groups.values() if n > 1)
    owners = {c.id: index.find(c) for c in emulator.contacts()}
    caller_of = {activity_marker(ACCOUNT, mid): i for mid, i in message_callers.items()}
    for activity in emulator.activities():
        owner = owners.get(activity.record_id or "")
        caller = caller_of.get(activity.marker or "")
        if owner is not None and caller is not None and owner.index != caller:
            audit.misattributed += 1
    wanted = sorted(markers)
    # find_activities may search (HubSpot: by marker, for old history): let the index lag pass.
    time.sleep(emulator.search_lag)
    found: set[str] = set()
    for start in range(0, len(wanted), 100):
        found.update(find_activities(wanted[start : start + 100]))
    audit.not_found_by_marker = len(markers - found)
    return audit


def _status(config: Path, env: Mapping[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        _syncd("status", "--json", "--config", str(config)),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    status: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return status


def _unfinished(status: Mapping[str, Any]) -> dict[str, int]:
    out: dict[str, int] = Counter()
    for target in status["targets"].values():
        for state in UNFINISHED:
            out[state] += int(target["deliveries"].get(state, 0))
    return dict(out)


def _recovery(store: Store) -> dict[str, int]:
    """How the kills show in the store: deliveries claimed more than once (a killed worker's
    claim retaken), and of those, how many were settled by finding their activity by marker
    (the CRM write had happened, its record had not) instead of writing it again."""
    with store.engine.connect() as conn:
        retaken = conn.execute(
            select(func.count()).select_from(deliveries).where(deliveries.c.attempts > 1)
        ).scalar_one()
        reconciled = conn.execute(
            select(func.count()).select_from(deliveries).where(deliveries.c.action == "reconciled")
        ).scalar_one()
    return {"claims_retaken": int(retaken), "reconciled_by_marker": int(reconciled)}


def _work_left(store: Store, messages: int) -> bool:
    try:
        counts = store.counts()
        ingested = store.message_count()
    except OperationalError:  # killed before the first migration finished: no tables yet
        return True
    return ingested < messages or any(
        states.get(state) for states in counts.values() for state in UNFINISHED
    )


def _interrupted(store: Store, pid: int) -> int:
    """Claims the killed process held (a batch between claim and record): its worker id is
    the daemon's default, ``host:pid``."""
    mine = and_(
        deliveries.c.state == "in_flight",
        deliveries.c.claimed_by == f"{socket.gethostname()}:{pid}",
    )
    try:
        with store.engine.connect() as conn:
            held = conn.execute(select(func.count()).select_from(deliveries).where(mine))
            return int(held.scalar_one())
    except OperationalError:
        return 0


def run_soak(options: SoakOptions, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the soak and return its figures; ``figures["ok"]`` is the verdict."""
    rng = random.Random(options.seed)
    world_seed = options.seed if options.world_seed is None else options.world_seed
    say(f"crash soak: seed {options.seed}, world seed {world_seed}")
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="syncd-soak-") as tmp,
        SandboxWorld(
            messages=options.messages,
            callers=options.callers,
            days=options.days,
            seed=world_seed,
            targets=list(options.targets),
        ) as world,
    ):
        for emulator in world.emulators.values():
            emulator.search_lag = options.search_lag
            emulator.faults.delay = options.crm_delay
        pre = {name: {c.id for c in emu.contacts()} for name, emu in world.emulators.items()}
        database_url = f"sqlite:///{Path(tmp) / 'state.db'}"
        config = Path(tmp) / "syncd.toml"
        world.write_config(str(config), database_url)
        env = syncd_env(
            interval_seconds=1,
            jitter_seconds=0,
            lease_seconds=options.lease_seconds,
            batch_size=options.batch_size,
            log_format="json",
            # Faults are meant to be survived, not to end in dead letters or hour-long pauses.
            max_attempts=1000,
            retry_base_seconds=0.2,
            retry_cap_seconds=2,
            breaker_pause_seconds=1,
            breaker_max_pause_seconds=2,
            daily_limit_pause_seconds=1,
        )
        log_path = Path(tmp) / "daemon.log"
        store = Store(database_url)
        kills = interrupted = with_work = claims_cut = forced = 0
        startup = _startup_seconds()
        signals_sent: Counter[str] = Counter()
        faults_chosen: Counter[str] = Counter()
        once_lives = 0
        crms = {name: emu for name, emu in world.emulators.items() if isinstance(emu, Emulator)}
        after = {name: AfterWrite(emu) for name, emu in crms.items()}
        try:
            with log_path.open("ab") as log:
                for _ in range(options.kills):
                    life = startup + rng.uniform(options.min_life, options.max_life)
                    how = rng.choice(options.signals)
                    fault = rng.choice(options.faults)
                    victim = rng.choice(sorted(crms))
                    for name, emu in crms.items():
                        chosen = fault if name == victim else "none"
                        _inject(chosen, emu, after[name], options.crm_delay)
                    faults_chosen[f"{victim} {fault}" if fault != "none" else fault] += 1
                    once = rng.random() < options.once_share
                    once_lives += once
                    argv = ["run", "--once"] if once else ["run"]
                    proc = subprocess.Popen(
                        _syncd(*argv, "--config", str(config)),
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                    try:
                        code = proc.wait(timeout=life)
                    except subprocess.TimeoutExpired:
                        proc.send_signal(getattr(signal, how))
                        signals_sent[how] += 1
                        try:
                            proc.wait(timeout=options.grace)
                        except subprocess.TimeoutExpired:
                            proc.send_signal(signal.SIGKILL)  # a stop that never came
                            proc.wait()
                            forced += 1
                        kills += 1
                    else:
                        if not once:
                            raise RuntimeError(f"`syncd run` exited by itself with {code}")
                        signals_sent["exited by itself (--once)"] += 1
                    held = _interrupted(store, proc.pid)
                    interrupted += held > 0
                    claims_cut += held
                    with_work += _work_left(store, options.messages)
            for name, emu in crms.items():  # the faults are over: let everything settle
                _inject("none", emu, after[name], options.crm_delay)
            once_runs = 0
            status = _status(config, env)
            # Until every message is in and delivered (lives too short to start up ingest
            # nothing: the --once runs below then do all the work).
            while any(_unfinished(status).values()) or _work_left(store, options.messages):
                if once_runs >= options.max_once_runs:
                    raise RuntimeError(f"still unfinished: {_unfinished(status)}")
                if _unfinished(status).get("pending", 0) == 0:
                    # Only leases of killed workers or retry back-offs left: let them run out.
                    time.sleep(options.lease_seconds)
                once_runs += 1
                with log_path.open("ab") as log:
                    subprocess.run(
                        _syncd("run", "--once", "--config", str(config)),
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                        timeout=600,
                        check=False,
                    )
                status = _status(config, env)
            recovery = _recovery(store)
        except BaseException:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
            say(f"daemon log tail:\n{tail}")
            raise
        finally:
            store.close()

        settings = sandbox_settings(world, database_url)
        assert world.berkshire is not None
        message_callers = callers_of(world.berkshire.messages, world.callers)
        audits: dict[str, TargetAudit] = {}
        for name, emulator in world.emulators.items():
            target = settings.targets[name]
            connector = load_factory(target.type)(TargetContext(name, target.options))
            try:
                audits[name] = audit_target(
                    emulator,
                    pre[name],
                    world.callers,
                    message_callers,
                    connector.find_activities,
                    status["targets"][name]["deliveries"],
                )
            finally:
                connector.close()
        faults = {name: dict(emu.faults.injected) for name, emu in world.emulators.items()}
        for name, wrapper in after.items():
            faults[name]["answer replaced after a write landed"] = wrapper.hits
            wrapper.remove()

    figures: dict[str, Any] = {
        "seed": options.seed,
        "world_seed": world_seed,
        "messages": options.messages,
        "callers": options.callers,
        "targets": list(options.targets),
        "kills": kills,
        "interruptions": kills,
        "signals": dict(sorted(signals_sent.items())),
        "graceful_stops_forced": forced,
        "once_lives": once_lives,
        "faults_chosen": dict(sorted(faults_chosen.items())),
        "kills_with_work_left": with_work,
        "kills_mid_delivery": interrupted,
        "startup_seconds": round(startup, 2),
        "claims_held_at_kill": claims_cut,
        "once_runs": once_runs,
        **recovery,
        "seconds": round(time.monotonic() - started, 1),
        "messages_lost": sum(a.missing_messages for a in audits.values()),
        "duplicate_contacts": sum(a.duplicate_contacts for a in audits.values()),
        "duplicate_activities": sum(a.duplicate_activities for a in audits.values()),
        "misattributed_activities": sum(a.misattributed for a in audits.values()),
        "per_target": {name: asdict(a) for name, a in audits.items()},
        "faults_injected": faults,
        "ok": all(a.clean for a in audits.values()),
    }
    return figures


def _parse(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--callers", type=int, default=300)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--world-seed", type=int, default=None, help="default: --seed")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--search-lag", type=float, default=0.0)
    parser.add_argument("--max-life", type=float, default=2.0)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--signals", default=",".join(SIGNALS), help="how lives end")
    parser.add_argument("--faults", default=",".join(FAULTS), help="faults to pick from")
    parser.add_argument("--json", action="store_true", help="accepted; JSON is always printed")
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    args = _parse(argv)
    configure_logging(level="warning")  # the audit's own connectors: stderr, quietly
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    options = SoakOptions(
        messages=args.messages,
        callers=args.callers,
        days=args.days,
        kills=args.kills,
        seed=seed,
        world_seed=args.world_seed,
        batch_size=args.batch_size,
        search_lag=args.search_lag,
        max_life=args.max_life,
        targets=tuple(t for t in args.targets.split(",") if t),
        signals=tuple(s for s in args.signals.split(",") if s),
        faults=tuple(f for f in args.faults.split(",") if f),
    )
    figures = run_soak(options, say=lambda line: print(line, file=sys.stderr))
    print(json.dumps(figures, sort_keys=True))
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark as a library: ``bench.py`` is its command line and
``tests/integration/test_request_budget.py`` its CI check, so both measure the same thing.

One run, against one CRM type:

1. a sandbox: the Berkshire simulator holding the messages and one CRM emulator in which a
   quarter of the callers already exist. :class:`ChildSandbox` runs it in a child process, so
   the bench process's peak RSS is syncd's alone; :class:`LocalSandbox` runs it in-process;
2. a backfill of every day holding messages into a fresh state store, then delivery (timed);
3. the same backfill again, through a new :class:`Daemon` as a second ``syncd run --backfill``
   would: it must cost no CRM request;
4. steady state: one new message from a caller syncd already delivered, one poll; then one from
   a caller nobody has seen;
5. the naive baseline: a sample of the same messages, each through ``connector.lookup`` with
   one key and ``connector.apply`` with one plan, against a fresh copy of the CRM.

Every request figure is counted by the emulator (or the Berkshire simulator), server-side, and
read over HTTP from ``GET <server>/_sandbox/state``. With ``latency_ms`` every answer of the
CRM emulator and of the simulator waits that long (some CRM endpoints a documented multiple),
and the CRM's limits (:class:`LimitClass`, enforced by its emulator) bound the throughput
the run's request mix allows: ``limit_bound_messages_per_second``.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import resource
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from fnmatch import fnmatchcase
from multiprocessing.connection import Connection
from typing import Any, Protocol

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from syncd.config import Settings, parse_settings
from syncd.connector import Connector, TargetContext, load_factory
from syncd.daemon import CycleReport, Daemon
from syncd.logging import configure_logging
from syncd.match.keys import extract_keys
from syncd.match.policy import DecisionKind, decide, plan_for, policy_keys
from syncd.models import Message
from syncd.sandbox.generate import Caller, callers_of, make_callers, make_messages
from syncd.sandbox.world import SandboxWorld
from syncd.source.client import BerkshireClient

__all__ = [
    "PROFILES",
    "BenchSpec",
    "ChildSandbox",
    "CrmProfile",
    "LimitClass",
    "LocalSandbox",
    "Sandbox",
    "crm_counts",
    "emit",
    "fresh_database",
    "limit_bounds",
    "quiet_logging",
    "run_bench",
]

# A busy answering-service account takes on the order of a hundred messages a day; the
# benchmark keeps that density whatever N is, so a day window (and with it ingest's working
# set) stays the same size at 10,000 and at 100,000 messages.
MESSAGES_PER_DAY = 100
NAIVE_SAMPLE = 300
SEED = 7

# What the benchmark promises (DESIGN.md section 6 and the performance issue).
MAX_REQUESTS_PER_MESSAGE = 0.05
MIN_MESSAGES_PER_SECOND = 300.0
MAX_PEAK_RSS_MB = 250.0
MAX_KNOWN_CALLER_REQUESTS = 2
MAX_NEW_CALLER_REQUESTS = 3


# -- CRM profiles ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LimitClass:
    """One limit the CRM's emulator enforces: at most ``calls`` requests to the endpoints
    matching ``endpoints`` (``fnmatch`` on the emulator's endpoint names, less ``exclude``) per
    ``period`` seconds. ``calls=None`` is a limit that caps no rate (``note`` says why)."""

    name: str
    calls: int | None
    period: float
    endpoints: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ("unrouted",)
    note: str = ""

    def counts(self, endpoint: str) -> bool:
        def hit(patterns: tuple[str, ...]) -> bool:
            return any(fnmatchcase(endpoint, p) for p in patterns)

        return hit(self.endpoints) and not hit(self.exclude)


@dataclass(frozen=True)
class CrmProfile:
    """How the benchmark sets up one CRM type.

    ``connector``/``emulator`` are the rate-limit tier the run is measured under (the emulator
    enforces ``limits``, the connector is told about them); ``naive_connector``/``naive_emulator``
    lift every limit for the naive baseline, which counts requests and is never timed.
    """

    rate_limit: Mapping[str, Any]
    limits: tuple[LimitClass, ...] = ()
    connector: Mapping[str, Any] = field(default_factory=dict)
    emulator: Mapping[str, Any] = field(default_factory=dict)
    naive_connector: Mapping[str, Any] = field(default_factory=dict)
    naive_emulator: Mapping[str, Any] = field(default_factory=dict)


# Salesforce's total allocation per rolling 24 h for an Enterprise Edition org: 100,000 plus
# 1,000 per user license ("API Request Limits and Allocations"); we take 100 licenses.
SALESFORCE_DAILY_ALLOCATION = 100_000 + 1_000 * 100
DAY = 86_400.0

PROFILES: dict[str, CrmProfile] = {
    # HubSpot's Professional/Enterprise tier: 190 requests per rolling 10 s, and 5 searches a
    # second (the connector keeps its default of 4 searches a second: a margin for clock skew).
    "hubspot": CrmProfile(
        rate_limit={
            "calls": 190,
            "period": 10.0,
            "search_calls": 5,
            "search_period": 1.0,
            "enforced_by": "emulator",
        },
        limits=(
            LimitClass("TEN_SECONDLY_ROLLING", 190, 10.0),
            LimitClass("SECONDLY", 5, 1.0, endpoints=("*.search",)),
        ),
        connector={"rate_limit": {"calls": 190, "period": 10.0}},
        emulator={"tier": "professional", "search_rate_limit": (5, 1.0)},
        naive_connector={
            "rate_limit": {"calls": 100_000, "period": 1.0},
            "search_rate_limit": {"calls": 100_000, "period": 1.0},
        },
        naive_emulator={"rate_limit": None, "search_rate_limit": None},
    ),
    # Salesforce limits requests per rolling 24 h and long-running (20 s+) requests at once,
    # never per second; the connector paces itself at 20 requests a second (its own choice).
    "salesforce": CrmProfile(
        rate_limit={
            "calls": 20,
            "period": 1.0,
            "enforced_by": "connector; org: daily allocation, concurrent long requests",
            "daily_allocation": SALESFORCE_DAILY_ALLOCATION,
        },
        limits=(
            # Logins and the version list are not API requests of the allocation.
            LimitClass(
                "TotalRequests",
                SALESFORCE_DAILY_ALLOCATION,
                DAY,
                exclude=("unrouted", "login", "versions"),
                note="a day's allocation spent evenly: the rate the org sustains all day",
            ),
            LimitClass(
                "ConcurrentPerOrgLongTxn",
                None,
                20.0,
                note="25 requests of 20 s or longer at once; no answer here takes 20 s",
            ),
        ),
        connector={"requests_per_second": 20.0},
        emulator={"daily_limit": SALESFORCE_DAILY_ALLOCATION},
        naive_connector={"requests_per_second": 1000.0},
    ),
}


def profile_for(target: str) -> CrmProfile:
    return PROFILES.get(target, CrmProfile(rate_limit={"enforced_by": "defaults"}))


# -- the spec -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSpec:
    target: str
    messages: int
    callers: int
    days: int
    seed: int = SEED
    naive_sample: int = NAIVE_SAMPLE
    database_url: str | None = None  # None: a fresh SQLite file in a temporary directory
    latency_ms: float = 0.0  # added to every CRM and source answer
    source_latency_ms: float | None = None  # the source's alone (None: ``latency_ms``)
    detail_concurrency: int | None = None  # the account's (None: syncd's default)

    @property
    def source_latency(self) -> float:
        return self.latency_ms if self.source_latency_ms is None else self.source_latency_ms

    @classmethod
    def for_messages(
        cls,
        target: str,
        messages: int,
        *,
        callers: int | None = None,
        days: int | None = None,
        **kw: Any,
    ) -> BenchSpec:
        """Defaults: a fifth as many callers as messages, ``MESSAGES_PER_DAY`` a day."""
        if messages < 1:
            raise ValueError("messages must be at least 1")
        return cls(
            target=target,
            messages=messages,
            callers=callers or max(1, messages // 5),
            days=days or max(1, math.ceil(messages / MESSAGES_PER_DAY)),
            **kw,
        )


@dataclass(frozen=True)
class WorldSpec:
    """What a sandbox process needs to build the world (picklable)."""

    target: str
    messages: int
    callers: int
    days: int
    seed: int
    end: datetime
    emulator: Mapping[str, Any]
    naive_emulator: Mapping[str, Any]
    latency_ms: float = 0.0
    source_latency_ms: float = 0.0


# -- the sandbox, here or in a child process ------------------------------------------------
class Sandbox(Protocol):
    def settings_doc(self, database_url: str) -> dict[str, Any]: ...

    def crm_url(self) -> str: ...

    def source_url(self) -> str: ...

    def add_message(self, known_caller: bool, at: datetime) -> str: ...

    def naive_crm(self) -> tuple[dict[str, Any], str]: ...

    def cpu_seconds(self) -> float | None: ...

    def close(self) -> None: ...


class LocalSandbox:
    """The world in this process (CI: fast start, RSS not measured)."""

    def __init__(self, spec: WorldSpec, *, own_process: bool = False) -> None:
        self.spec = spec
        self.own_process = own_process
        self.world = SandboxWorld(
            messages=spec.messages,
            callers=spec.callers,
            days=spec.days,
            seed=spec.seed,
            end=spec.end,
            targets=[spec.target],
            emulator_options={spec.target: dict(spec.emulator)},
        ).start()
        assert self.world.berkshire is not None
        # The naive baseline's CRM (below) never waits: it is counted, not timed.
        self.world.berkshire.latency = spec.source_latency_ms / 1000
        self.world.emulators[spec.target].latency = spec.latency_ms / 1000
        self._naive: SandboxWorld | None = None
        self._added = 0

    def settings_doc(self, database_url: str) -> dict[str, Any]:
        return self.world.settings_doc(database_url)

    def crm_url(self) -> str:
        return self.world.emulators[self.spec.target].base_url

    def source_url(self) -> str:
        assert self.world.berkshire is not None
        return self.world.berkshire.base_url

    def add_message(self, known_caller: bool, at: datetime) -> str:
        """Put one message left at ``at`` into the account; returns its id.

        The known caller is the most frequent one; the new one is the next caller the
        generator would have made, so no CRM holds them."""
        berkshire = self.world.berkshire
        assert berkshire is not None
        callers = self.world.callers
        caller = self._known_caller(callers) if known_caller else self._new_caller(len(callers))
        self._added += 1
        message_id = f"B{self._added:06d}"
        for attempt in range(100):  # an emergency would add a task by design: keep it ordinary
            (message,) = make_messages(
                [caller],
                1,
                start=at - timedelta(minutes=1),
                end=at,
                seed=self.spec.seed * 1000 + self._added * 100 + attempt,
            )
            if not message["is emergency"]:
                break
        message["message id"] = message_id
        berkshire.add_messages([message])
        return message_id

    def _known_caller(self, callers: list[Caller]) -> Caller:
        """The caller with a phone who called most often: syncd has surely delivered to them."""
        assert self.world.berkshire is not None
        calls = Counter(callers_of(self.world.berkshire.messages, callers).values())
        for index, _ in calls.most_common():
            if callers[index].e164:
                return callers[index]
        raise RuntimeError("no caller with a phone number in the sandbox")

    def _new_caller(self, known: int) -> Caller:
        count = known
        while True:
            count += 1
            caller = make_callers(count, seed=self.spec.seed)[-1]
            if caller.e164:
                return caller

    def naive_crm(self) -> tuple[dict[str, Any], str]:
        """A fresh CRM seeded exactly like the first, without rate limits: (options, url)."""
        if self._naive is None:
            self._naive = SandboxWorld(
                messages=1,
                callers=self.spec.callers,
                seed=self.spec.seed,
                end=self.spec.end,
                targets=[self.spec.target],
                emulator_options={self.spec.target: dict(self.spec.naive_emulator)},
            ).start()
        emulator = self._naive.emulators[self.spec.target]
        return emulator.connector_options(), emulator.base_url

    def cpu_seconds(self) -> float | None:
        """CPU the sandbox has used, when it has a process of its own (else None)."""
        return time.process_time() if self.own_process else None

    def close(self) -> None:
        if self._naive is not None:
            self._naive.stop()
        self.world.stop()


def _serve(conn: Connection, spec: WorldSpec) -> None:
    """Child process: build the world, then run the parent's calls until ``close``."""
    try:
        sandbox = LocalSandbox(spec, own_process=True)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", None))
    try:
        while True:
            name, args = conn.recv()
            if name == "close":
                break
            try:
                conn.send(("ok", getattr(sandbox, name)(*args)))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        sandbox.close()
        with suppress(OSError):  # the parent may be gone already
            conn.send(("ok", None))


class ChildSandbox:
    """The world in a child process (``spawn``: it shares no memory with the bench)."""

    def __init__(self, spec: WorldSpec) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, spec), name="syncd-bench-sandbox", daemon=True
        )
        self._process.start()
        child.close()
        self._answer()

    def _answer(self) -> Any:
        if not self._conn.poll(600):
            raise RuntimeError("the sandbox process did not answer within 10 minutes")
        try:
            status, value = self._conn.recv()
        except EOFError:
            code = self._process.exitcode
            raise RuntimeError(f"the sandbox process exited (code {code})") from None
        if status != "ok":
            raise RuntimeError(f"sandbox process failed:\n{value}")
        return value

    def _call(self, name: str, *args: Any) -> Any:
        self._conn.send((name, args))
        return self._answer()

    def settings_doc(self, database_url: str) -> dict[str, Any]:
        doc: dict[str, Any] = self._call("settings_doc", database_url)
        return doc

    def crm_url(self) -> str:
        return str(self._call("crm_url"))

    def source_url(self) -> str:
        return str(self._call("source_url"))

    def add_message(self, known_caller: bool, at: datetime) -> str:
        return str(self._call("add_message", known_caller, at))

    def naive_crm(self) -> tuple[dict[str, Any], str]:
        options, url = self._call("naive_crm")
        return dict(options), str(url)

    def cpu_seconds(self) -> float | None:
        return float(self._call("cpu_seconds"))

    def close(self) -> None:
        if self._process.is_alive():
            with suppress(OSError, EOFError, RuntimeError):
                self._call("close")
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()


# -- measuring ------------------------------------------------------------------------------
def quiet_logging() -> None:
    """Warnings only: the daemon's per-batch info lines would cost time and bury the result."""
    configure_logging(level="warning")
    logging.getLogger().setLevel(logging.WARNING)


def emit(result: Mapping[str, Any], summary: str | None) -> int:
    """Print ``summary`` (unless None), then the result as one JSON object, last; exit 0."""
    if summary is not None:
        print(summary)
    print(json.dumps(result, sort_keys=True))
    return 0


def crm_counts(base_url: str) -> Counter[str]:
    """Requests by endpoint as the emulator counted them, answers by status as
    ``status:<code>`` (429s are requests too), and answers refused because one of the
    service's limits was reached as ``refused:<limit>``. The admin route is not counted."""
    response = httpx.get(f"{base_url}/_sandbox/state", timeout=30)
    response.raise_for_status()
    state = response.json()
    counts = Counter({str(k): int(v) for k, v in state["counts"].items()})
    counts.update({f"status:{k}": int(v) for k, v in state.get("statuses", {}).items()})
    counts.update({f"refused:{k}": int(v) for k, v in state.get("refused", {}).items()})
    return counts


@dataclass
class _Counted:
    """What a server counted between two readings of :func:`crm_counts`."""

    by_endpoint: dict[str, int]
    by_status: dict[str, int]
    refused: dict[str, int]

    @property
    def requests(self) -> int:
        return sum(self.by_endpoint.values())


def _delta(after: Counter[str], before: Counter[str]) -> _Counted:
    changed = {k: after[k] - before[k] for k in sorted(after) if after[k] != before[k]}

    def part(prefix: str) -> dict[str, int]:
        return {k.removeprefix(prefix): v for k, v in changed.items() if k.startswith(prefix)}

    plain = {k: v for k, v in changed.items() if ":" not in k}
    return _Counted(plain, part("status:"), part("refused:"))


def limit_bounds(
    limits: tuple[LimitClass, ...], by_endpoint: Mapping[str, int], messages: int
) -> dict[str, dict[str, Any]]:
    """For each limit: the requests of its class this run made, and the messages a second
    the limit allows at that many requests a message (None: it bounds nothing)."""
    bounds: dict[str, dict[str, Any]] = {}
    for limit in limits:
        requests = sum(n for endpoint, n in by_endpoint.items() if limit.counts(endpoint))
        per_message = requests / messages if messages else 0.0
        bound = None
        if limit.calls is not None and per_message:
            bound = round(limit.calls / limit.period / per_message, 1)
        bounds[limit.name] = {
            "calls": limit.calls,
            "period_seconds": limit.period,
            "requests": requests,
            "requests_per_message": round(per_message, 5),
            "bound_messages_per_second": bound,
            **({"note": limit.note} if limit.note else {}),
        }
    return bounds


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB), children excluded."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextmanager
def fresh_database(url: str | None) -> Iterator[str]:
    """An empty state store: a SQLite file in a temporary directory, or a new schema in the
    PostgreSQL database ``url`` names (dropped afterwards)."""
    if url is None or make_url(url).get_backend_name() == "sqlite":
        with tempfile.TemporaryDirectory(prefix="syncd-bench-") as tmp:
            yield f"sqlite:///{tmp}/state.db"
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _settings(sandbox: Sandbox, spec: BenchSpec, database_url: str) -> Settings:
    doc = sandbox.settings_doc(database_url)
    # Steady-state polls look back as far as a production daemon does, not over the sandbox.
    doc["syncd"].pop("lookback_days", None)
    # The emulators are fresh: syncd never wrote to them, so nothing predating the store needs
    # reconciling (a real first install over a CRM syncd never saw may say the same).
    doc["syncd"]["reconcile_before_birth"] = False
    doc["targets"][spec.target].update(profile_for(spec.target).connector)
    if spec.detail_concurrency is not None:
        for account in doc["accounts"].values():
            account["detail_concurrency"] = spec.detail_concurrency
    return parse_settings(doc, environ={})


def _backfill_span(settings: Settings, end: datetime, days: int) -> tuple[date, date]:
    tz = next(iter(settings.accounts.values())).timezone
    first = (end - timedelta(days=days)).astimezone(tz).date()
    return first, end.astimezone(tz).date()


@dataclass
class _Cycle:
    report: CycleReport
    seconds: float
    cpu_seconds: float  # this process's: syncd's own work
    sandbox_cpu_seconds: float | None  # the simulators' and emulator's, when apart
    crm: _Counted
    source: _Counted

    @property
    def by_endpoint(self) -> dict[str, int]:
        return self.crm.by_endpoint

    @property
    def by_status(self) -> dict[str, int]:
        return self.crm.by_status

    @property
    def requests(self) -> int:
        return self.crm.requests


def _run_cycle(
    daemon: Daemon, sandbox: Sandbox, url: str, span: tuple[date, date] | None
) -> _Cycle:
    """One cycle (the backfill of ``span``, or a poll), timed, and counted by the emulator
    and the simulator."""
    source_url = sandbox.source_url()
    before, source_before = crm_counts(url), crm_counts(source_url)
    sandbox_cpu = sandbox.cpu_seconds()
    cpu, t0 = time.process_time(), time.perf_counter()
    report = daemon.backfill(*span) if span else daemon.run_cycle()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu
    after = sandbox.cpu_seconds()
    spent = None if after is None or sandbox_cpu is None else after - sandbox_cpu
    crm, source = _delta(crm_counts(url), before), _delta(crm_counts(source_url), source_before)
    return _Cycle(report, seconds, cpu, spent, crm, source)


def run_bench(spec: BenchSpec, *, in_process: bool = False) -> dict[str, Any]:
    """Run the whole benchmark and return the figures (see ``tests/perf/README.md``)."""
    profile = profile_for(spec.target)
    world = WorldSpec(
        target=spec.target,
        messages=spec.messages,
        callers=spec.callers,
        days=spec.days,
        seed=spec.seed,
        end=datetime.now(UTC),
        emulator=profile.emulator,
        naive_emulator=profile.naive_emulator,
        latency_ms=spec.latency_ms,
        source_latency_ms=spec.source_latency,
    )
    sandbox: Sandbox = LocalSandbox(world) if in_process else ChildSandbox(world)
    try:
        with fresh_database(spec.database_url) as database_url:
            return _measure(spec, world, sandbox, database_url)
    finally:
        sandbox.close()


def _measure(
    spec: BenchSpec, world: WorldSpec, sandbox: Sandbox, database_url: str
) -> dict[str, Any]:
    settings = _settings(sandbox, spec, database_url)
    span = _backfill_span(settings, world.end, spec.days)
    url = sandbox.crm_url()
    rss_at_start = peak_rss_mb()

    daemon = Daemon(settings)
    daemon.migrate()
    try:
        first = _run_cycle(daemon, sandbox, url, span)
        # Steady state, on the daemon that did the backfill: a long-running daemon is warm
        # (a Salesforce session, say), so its polls cost only what the new message needs.
        steady: dict[str, Any] = {}
        for label, known in (("known_caller", True), ("new_caller", False)):
            sandbox.add_message(known, datetime.now(UTC))
            poll = _run_cycle(daemon, sandbox, url, None)
            delivered = poll.report.targets.get(spec.target)
            steady[f"{label}_requests"] = poll.requests
            steady[f"{label}_by_endpoint"] = poll.by_endpoint
            steady[f"{label}_delivered"] = delivered.done if delivered else 0
    finally:
        daemon.close()
    stats = first.report.targets.get(spec.target)

    # A second `syncd run --backfill` over the same range: a new daemon, the same store.
    daemon = Daemon(settings)
    try:
        rerun = _run_cycle(daemon, sandbox, url, span)
    finally:
        daemon.close()
    peak = peak_rss_mb()

    naive = _naive(spec, settings, sandbox, span) if spec.naive_sample else None
    seconds = first.seconds
    messages_per_second = round(spec.messages / seconds, 1)
    bounds = limit_bounds(profile_for(spec.target).limits, first.by_endpoint, spec.messages)
    bound = min(
        (b["bound_messages_per_second"] for b in bounds.values() if b["bound_messages_per_second"]),
        default=None,
    )
    result: dict[str, Any] = {
        "target": spec.target,
        "messages": spec.messages,
        "callers": spec.callers,
        "days": spec.days,
        "db": make_url(database_url).get_backend_name(),
        "seed": spec.seed,
        "rate_limit": dict(profile_for(spec.target).rate_limit),
        "seconds": round(seconds, 3),
        "messages_per_second": messages_per_second,
        "crm_requests": first.requests,
        "requests_per_message": round(first.requests / spec.messages, 4),
        "latency_ms": spec.latency_ms,
        "source_latency_ms": spec.source_latency,
        "detail_concurrency": settings.accounts[next(iter(settings.accounts))].detail_concurrency,
        "limit_bound_messages_per_second": bound,
        "limit_utilization": round(messages_per_second / bound, 3) if bound else None,
        "limit_bounds": bounds,
        "limit_refusals": first.crm.refused,
        "source_requests": first.source.requests,
        "source_requests_by_endpoint": first.source.by_endpoint,
        "cpu_seconds": {
            "syncd": round(first.cpu_seconds, 2),
            "sandbox": _round(first.sandbox_cpu_seconds),
        },
        "requests_by_endpoint": first.by_endpoint,
        "responses_by_status": first.by_status,
        "peak_rss_mb": peak,
        "rss_at_start_mb": rss_at_start,
        "delivery": stats.as_dict() if stats else {},
        "ingest": first.report.ingest.as_dict(),
        "errors": first.report.errors + first.report.auth_failures,
        "rerun": {
            "seconds": round(rerun.seconds, 3),
            "crm_requests": rerun.requests,
            "messages_new": rerun.report.ingest.new,
        },
        "steady_state": steady,
    }
    if naive is not None:
        result.update(naive)
    result["checks"] = _checks(result)
    return result


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _checks(r: Mapping[str, Any]) -> dict[str, bool]:
    steady = r["steady_state"]
    return {
        "requests_per_message": r["requests_per_message"] <= MAX_REQUESTS_PER_MESSAGE,
        "messages_per_second": (r["messages_per_second"] or 0) >= MIN_MESSAGES_PER_SECOND,
        "peak_rss_mb": r["peak_rss_mb"] <= MAX_PEAK_RSS_MB,
        "rerun_requests": r["rerun"]["crm_requests"] == 0,
        "rerun_seconds": r["rerun"]["seconds"] < r["seconds"] / 10,
        "known_caller": steady["known_caller_requests"] <= MAX_KNOWN_CALLER_REQUESTS,
        "new_caller": steady["new_caller_requests"] <= MAX_NEW_CALLER_REQUESTS,
        "all_delivered": not (r["delivery"].get("dead") or r["delivery"].get("retry")),
        # No answer refused for a limit (a refused request is retried, and costs a request).
        "within_limits": not r["limit_refusals"],
        # One list request per day window, one detail request per message needing it.
        "source_requests": r["source_requests"] == r["ingest"]["windows"] + r["ingest"]["details"],
    }


# -- the naive baseline ---------------------------------------------------------------------
def _sample_messages(settings: Settings, span: tuple[date, date], count: int) -> list[Message]:
    """The first ``count`` messages of the run, fetched from the source as syncd would."""
    account = next(iter(settings.accounts.values()))
    found: list[Message] = []
    with BerkshireClient(account.base_url, account.email, account.token) as client:
        day = span[0]
        while day <= span[1] and len(found) < count:
            found += client.fetch_window(account.name, day, day, account.timezone).messages
            day += timedelta(days=1)
    return found[:count]


def _naive(
    spec: BenchSpec, settings: Settings, sandbox: Sandbox, span: tuple[date, date]
) -> dict[str, Any]:
    """One lookup with one key, then one plan applied, per message: no cache, no batching."""
    messages = _sample_messages(settings, span, spec.naive_sample)
    options, url = sandbox.naive_crm()
    options.update(profile_for(spec.target).naive_connector)
    account = next(iter(settings.accounts.values()))
    target = settings.targets[spec.target]
    connector: Connector = load_factory(target.type)(
        TargetContext(name=spec.target, options=options, default_region=account.region)
    )
    before = crm_counts(url)
    try:
        for number, message in enumerate(messages, start=1):
            keys = extract_keys(message, account.region)
            wanted = policy_keys(keys, target.match)[:1]
            candidates = connector.lookup(wanted) if wanted else {}
            decision = decide(keys, candidates, target.match)
            if decision.kind == DecisionKind.REVIEW:
                continue
            plan = plan_for(number, message, keys, decision, target, caller_key=keys.caller_key)
            if plan is not None:
                connector.apply([plan])
    finally:
        connector.close()
    counted = _delta(crm_counts(url), before)
    sample = len(messages)
    return {
        "naive_requests_per_message": round(counted.requests / sample, 3) if sample else None,
        "naive_sample": sample,
        "naive_requests_by_endpoint": counted.by_endpoint,
    }

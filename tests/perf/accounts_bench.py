"""Many accounts: one poll cycle over 200 accounts, on one replica and on two.

    python tests/perf/accounts_bench.py --json
    python tests/perf/accounts_bench.py --db postgresql+psycopg://postgres@127.0.0.1/test --json

Each account is its own Berkshire account (its own credentials and messages, a few a day),
all behind one simulated API on loopback, as the real one serves every account from one host;
each delivers to one target (HubSpot) or two (HubSpot and Salesforce), the CRM emulators
enforcing the limits of ``benchlib.PROFILES``. For 1 and then 2 replicas, on a fresh store and
fresh emulators each time: the replicas (``Daemon`` processes, started together, sharing the
store) each run one poll cycle (``run_cycle``). Poll-turn leases split the accounts between
them. The last line printed is one JSON object; per run: ``seconds`` (wall time until the
last replica finished), ``source_requests`` (counted by the simulator), ``crm_requests`` per
target (counted by the emulators), and per replica its ``accounts_polled``, ``seconds``,
``peak_rss_mb`` (that process's own), ingest and delivery counts. Two replicas share a store
best on PostgreSQL (``--db``); the default is a SQLite file both processes open.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event
from typing import Any

from benchlib import SEED, crm_counts, emit, fresh_database, peak_rss_mb, profile_for, quiet_logging

from syncd.config import parse_settings
from syncd.daemon import Daemon
from syncd.memory import cap_malloc_arenas
from syncd.sandbox.berkshire import BerkshireSimulator
from syncd.sandbox.crm import CrmEmulator, load_emulator
from syncd.sandbox.generate import make_callers, make_messages
from syncd.sandbox.http import Emulator, Request, Response

TARGETS = ("hubspot", "salesforce")
TOKEN = "sandbox-token"  # the simulator's made-up credential


class AccountsSource(Emulator):
    """One host answering for many Berkshire accounts: each request goes to the simulator of
    the account its ``X-API-EMAIL`` names (an unknown one gets the documented 404). The
    simulators count their own requests and wait their own latency."""

    name = "berkshire-accounts"

    def __init__(self, simulators: Sequence[BerkshireSimulator]) -> None:
        super().__init__()
        self.simulators = {simulator.email: simulator for simulator in simulators}
        self.route("GET", r"/v2/messages(?:/.*)?", "account", self._answer)

    def _answer(self, request: Request) -> Response:
        simulator = self.simulators.get(request.header("X-API-EMAIL") or "")
        return (simulator or next(iter(self.simulators.values()))).dispatch(request)

    def source_counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for simulator in self.simulators.values():
            total.update(simulator.counts)
        return total


@dataclass(frozen=True)
class Spec:
    accounts: int
    per_day: int
    days: int
    latency_ms: float
    seed: int
    database_url: str | None


def _email(index: int) -> str:
    return f"account{index:03d}@example.com"


@contextmanager
def _sandbox(spec: Spec, end: datetime) -> Iterator[tuple[AccountsSource, dict[str, CrmEmulator]]]:
    simulators = []
    for index in range(spec.accounts):
        callers = make_callers(max(2, spec.per_day * spec.days // 2), seed=spec.seed * 1000 + index)
        messages = make_messages(
            callers,
            spec.per_day * spec.days,
            start=end - timedelta(days=spec.days),
            end=end,
            seed=spec.seed * 1000 + index,
            first_id=index * 10_000 + 1,
        )
        simulator = BerkshireSimulator(email=_email(index), token=TOKEN, messages=messages)
        simulator.latency = spec.latency_ms / 1000
        simulators.append(simulator)
    source = AccountsSource(simulators)
    crms: dict[str, CrmEmulator] = {}
    try:
        source.start()
        for name in TARGETS:
            crms[name] = load_emulator(name, **dict(profile_for(name).emulator))
            crms[name].latency = spec.latency_ms / 1000
            crms[name].start()
        yield source, crms
    finally:
        for emulator in crms.values():
            emulator.stop()
        source.stop()


def _settings_doc(
    spec: Spec, source: AccountsSource, crms: dict[str, CrmEmulator], database_url: str
) -> dict[str, Any]:
    targets = {
        name: {"type": name, **emulator.connector_options(), **profile_for(name).connector}
        for name, emulator in crms.items()
    }
    accounts = {
        f"account{index:03d}": {
            "base_url": source.base_url,
            "email": _email(index),
            "token": TOKEN,
            "timezone": "America/New_York",
            "region": "US",
            # Every other account delivers to both CRMs.
            "targets": list(TARGETS) if index % 2 else [TARGETS[0]],
        }
        for index in range(spec.accounts)
    }
    return {
        "syncd": {
            "database_url": database_url,
            "health_address": "",
            "retry_base_seconds": 1.0,
            "reconcile_before_birth": False,
        },
        "accounts": accounts,
        "targets": targets,
    }


def _replica(doc: dict[str, Any], worker: str, go: Event, out: Any) -> None:
    """A replica's process: one poll cycle once every replica is ready."""
    quiet_logging()
    cap_malloc_arenas()  # as `syncd` does at start
    settings = parse_settings({**doc, "syncd": {**doc["syncd"], "worker_id": worker}}, environ={})
    daemon = Daemon(settings)
    rss_at_start = peak_rss_mb()
    go.wait()
    t0 = time.perf_counter()
    try:
        report = daemon.run_cycle()
    finally:
        daemon.close()
    seconds = time.perf_counter() - t0
    out.put(
        {
            "worker": worker,
            "seconds": round(seconds, 3),
            "accounts_polled": len(report.accounts),
            "ingest": report.ingest.as_dict(),
            "delivered": {name: stats.done for name, stats in report.targets.items()},
            "review": {name: stats.review for name, stats in report.targets.items()},
            "failed": {name: stats.failed for name, stats in report.targets.items()},
            "errors": report.errors + report.auth_failures,
            "peak_rss_mb": peak_rss_mb(),
            "rss_at_start_mb": rss_at_start,
        }
    )


def run_cycle(spec: Spec, replicas: int) -> dict[str, Any]:
    """Fresh store and emulators; ``replicas`` processes run one poll cycle together."""
    end = datetime.now(UTC)
    context = multiprocessing.get_context("spawn")
    with _sandbox(spec, end) as (source, crms), fresh_database(spec.database_url) as url:
        doc = _settings_doc(spec, source, crms, url)
        setup = Daemon(parse_settings(doc, environ={}))
        setup.migrate()
        setup.close()
        crm_before = {name: crm_counts(emulator.base_url) for name, emulator in crms.items()}
        go, out = context.Event(), context.Queue()
        processes = [
            context.Process(target=_replica, args=(doc, f"replica-{n + 1}", go, out))
            for n in range(replicas)
        ]
        for process in processes:
            process.start()
        time.sleep(3.0)  # the replicas import syncd and connect before the clock starts
        t0 = time.perf_counter()
        go.set()
        results = [out.get(timeout=1800) for _ in processes]
        seconds = time.perf_counter() - t0
        for process in processes:
            process.join(timeout=60)
        crm: dict[str, dict[str, int]] = {}
        for name, emulator in crms.items():
            delta = crm_counts(emulator.base_url) - crm_before[name]
            crm[name] = {k: v for k, v in sorted(delta.items()) if ":" not in k}
        source_by_endpoint = dict(sorted(source.source_counts().items()))
    results.sort(key=lambda r: str(r["worker"]))
    return {
        "replicas": replicas,
        "seconds": round(seconds, 3),
        "source_requests": sum(source_by_endpoint.values()),
        "source_requests_by_endpoint": source_by_endpoint,
        "crm_requests": {name: sum(counts.values()) for name, counts in crm.items()},
        "crm_requests_by_endpoint": crm,
        "accounts_polled": sum(r["accounts_polled"] for r in results),
        "messages_new": sum(r["ingest"]["new"] for r in results),
        "windows": sum(r["ingest"]["windows"] for r in results),
        "details": sum(r["ingest"]["details"] for r in results),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "per_replica": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accounts_bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=200, metavar="A")
    parser.add_argument("--per-day", type=int, default=4, metavar="M", help="messages a day")
    parser.add_argument("--days", type=int, default=3, metavar="D")
    parser.add_argument("--latency-ms", type=float, default=0.0, metavar="L")
    parser.add_argument("--replicas", default="1,2", help="comma-separated (default 1,2)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--db", metavar="URL", help="a PostgreSQL URL (a fresh schema a run)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    quiet_logging()
    cap_malloc_arenas()  # as `syncd` does at start
    spec = Spec(args.accounts, args.per_day, args.days, args.latency_ms, args.seed, args.db)
    runs = [run_cycle(spec, int(n)) for n in args.replicas.split(",")]
    result = {
        "accounts": spec.accounts,
        "messages": spec.accounts * spec.per_day * spec.days,
        "per_day": spec.per_day,
        "days": spec.days,
        "latency_ms": spec.latency_ms,
        "db": "postgresql" if args.db else "sqlite",
        "runs": runs,
    }
    summary = "\n".join(
        f"{run['replicas']} replica(s): {run['seconds']} s, accounts "
        f"{ {r['worker']: r['accounts_polled'] for r in run['per_replica']} }, "
        f"{run['source_requests']} source requests, CRM {run['crm_requests']}, "
        f"peak RSS {run['peak_rss_mb']} MB"
        for run in runs
    )
    return emit(result, None if args.json else summary)


if __name__ == "__main__":
    sys.exit(main())

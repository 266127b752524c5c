"""The daemon's wiring: store, source clients and connectors for one Settings, and a cycle.

A cycle polls every account (one replica per account, through a lease), then delivers every
target. Failures stay where they belong: a source that is down leaves its cursor alone and the
other accounts flow on; a CRM that refuses our credentials pauses only that target.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import OperationalError

from syncd.alerts import Alerter, emergency_alerts
from syncd.config import AccountSettings, Settings
from syncd.connector import Connector, TargetContext, load_factory
from syncd.deliver import DeliveryStats, TargetPaused, check_claim, deliver_target
from syncd.errors import AuthError, RetriableError, SyncdError
from syncd.ingest import IngestStats, WindowCallback, backfill_days, ingest_days, poll_days
from syncd.logging import register_secret
from syncd.metrics import Metrics
from syncd.source.client import BerkshireClient
from syncd.store.store import Store

__all__ = ["CycleReport", "Daemon"]

log = structlog.get_logger(__name__)

AUTH_PAUSE = timedelta(minutes=15)  # credentials may be rotated: look again, but not often


@dataclass
class CycleReport:
    kind: str
    started_at: datetime
    seconds: float = 0.0
    accounts: dict[str, IngestStats] = field(default_factory=dict)
    targets: dict[str, DeliveryStats] = field(default_factory=dict)
    auth_failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ingest(self) -> IngestStats:
        total = IngestStats()
        for stats in self.accounts.values():
            total.add(stats)
        return total

    @property
    def exit_code(self) -> int:
        if self.auth_failures:
            return 3
        if self.errors or any(t.failed for t in self.targets.values()):
            return 1
        return 0

    @property
    def ok(self) -> bool:
        return not self.auth_failures and not self.errors

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "seconds": round(self.seconds, 3),
            "accounts": {name: s.as_dict() for name, s in self.accounts.items()},
            "targets": {name: s.as_dict() for name, s in self.targets.items()},
            "auth_failures": self.auth_failures,
            "errors": self.errors,
        }


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        alerter: Alerter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.metrics = metrics or Metrics()
        self.alerter = alerter or Alerter(settings.daemon.alert_webhook_url)
        self.clock = clock
        self.stop = stop or threading.Event()
        self.store = Store(settings.daemon.database_url)
        if getattr(self.alerter, "store", None) is None:
            # Alerts go to the store's outbox first, then out (retried until the webhook
            # takes them); dead letters are written there with their outcome.
            self.alerter.attach(self.store)
        if settings.daemon.alert_emergencies and self.alerter.enabled:
            # An emergency's alert is written with the message: a crash cannot lose it.
            self.store.alerts_for_new = emergency_alerts
        self._clients: dict[str, BerkshireClient] = {}
        self._connectors: dict[str, Connector] = {}
        self.paused: dict[str, tuple[datetime, str]] = {}
        self.last_cycle: CycleReport | None = None
        # Seconds spent waiting on each CRM's rate limits (backfill progress shows them).
        self.crm_waited: defaultdict[str, float] = defaultdict(float)
        self.on_batch: Callable[[str, DeliveryStats], None] | None = None
        self._lock = threading.Lock()  # one cycle at a time, whatever calls it
        for account in settings.accounts.values():
            register_secret(account.token)
        for target in settings.targets.values():
            for key, value in target.options.items():
                secretish = any(w in key for w in ("token", "password", "secret", "session"))
                if secretish and isinstance(value, str) and not key.endswith(("_env", "_file")):
                    register_secret(value)

    # -- parts -----------------------------------------------------------------------------
    def client(self, account: AccountSettings) -> BerkshireClient:
        if account.name not in self._clients:
            self._clients[account.name] = BerkshireClient(
                account.base_url,
                account.email,
                account.token,
                timeout=account.timeout_seconds,
                fetch_details=account.fetch_details,
                detail_concurrency=account.detail_concurrency,
            )
        return self._clients[account.name]

    def region_of_target(self, target: str) -> str:
        for account in self.settings.accounts.values():
            if target in account.targets:
                return account.region
        return "US"

    def connector(self, name: str) -> Connector:
        if name not in self._connectors:
            target = self.settings.targets[name]
            context = TargetContext(
                name=name,
                options=target.options,
                default_region=self.region_of_target(name),
                observe=self._observe,
            )
            connector = load_factory(target.type)(context)
            if self.dry_run:
                wrap = load_factory("dry-run")
                connector = wrap(TargetContext(name=name, options={"inner": connector}))
            self._connectors[name] = connector
        return self._connectors[name]

    def _observe(self, target: str, endpoint: str, status: int, waited: float) -> None:
        self.crm_waited[target] += waited
        self.metrics.observe_request(target, endpoint, status, waited)
        # The fence, after every CRM answer: a batch taken over by another worker (we were
        # frozen past the lease) stops here, before its connector sends another write.
        check_claim()

    def migrate(self) -> None:
        self.store.migrate()

    def close(self) -> None:
        # Hand the poll leases back: the next `run --once` (another pid, so another holder)
        # would otherwise skip polling until they expire.
        for account in self.settings.accounts:
            try:
                self.store.release_lease(f"poll:{account}", self.settings.daemon.worker_id)
            except Exception:  # a database that is gone must not hide why we are closing
                log.warning("could not release poll lease", account=account)
        for client in self._clients.values():
            client.close()
        for connector in self._connectors.values():
            connector.close()
        self.alerter.close()
        self.store.close()

    # -- cycles ----------------------------------------------------------------------------
    def run_cycle(self) -> CycleReport:
        """One poll of every account, then delivery to every target."""
        return self._cycle("poll", None, None)

    def backfill(
        self, start: date, end: date, on_window: WindowCallback | None = None
    ) -> CycleReport:
        """Fetch ``start..end`` by day windows (resuming after finished ones), then deliver."""
        return self._cycle("backfill", (start, end), on_window)

    def _cycle(
        self, kind: str, span: tuple[date, date] | None, on_window: WindowCallback | None
    ) -> CycleReport:
        with self._lock:
            started = self.clock()
            t0 = time.monotonic()
            report = CycleReport(kind=kind, started_at=started)
            run_id: int | None = None
            try:
                run_id = self.store.start_run(kind, self.settings.daemon.worker_id, started)
                for account in self.settings.accounts.values():
                    if self.stop.is_set():
                        break
                    self._ingest_account(account, report, started, span, on_window)
                for name in self._targets_in_use():
                    if self.stop.is_set():
                        break
                    self._deliver(name, report)
            except OperationalError as exc:
                # Locked or unreachable: a failed cycle, not a crash. Every step commits on
                # its own, cursors move only after their windows, and claims cut short here
                # are retaken when their lease runs out: the next cycle picks up the rest.
                report.errors.append(f"database: {_db_problem(exc)}")
                log.error("database unavailable; cycle abandoned", error=_db_problem(exc))
            finally:
                report.seconds = time.monotonic() - t0
                status = "ok" if report.ok else ("auth_failed" if report.auth_failures else "error")
                if run_id is not None:
                    try:
                        self.store.finish_run(
                            run_id,
                            status,
                            report.as_dict(),
                            "; ".join(report.errors + report.auth_failures) or None,
                        )
                    except OperationalError as exc:
                        log.error("could not record the run", error=_db_problem(exc))
                self._update_metrics(report)
                self.last_cycle = report
                self._flush_alerts()
            return report

    def _flush_alerts(self) -> None:
        """Send what the alert outbox holds (this cycle's alerts, earlier ones that failed)."""
        try:
            self.alerter.flush()
        except Exception as exc:  # alerting must never break a cycle; the rows stay
            log.warning("alert outbox not flushed", error=type(exc).__name__)

    def _targets_in_use(self) -> list[str]:
        seen: dict[str, None] = {}
        for account in self.settings.accounts.values():
            for target in account.targets:
                seen.setdefault(target, None)
        return list(seen)

    def _ingest_account(
        self,
        account: AccountSettings,
        report: CycleReport,
        started: datetime,
        span: tuple[date, date] | None,
        on_window: WindowCallback | None,
    ) -> None:
        daemon = self.settings.daemon
        lease = f"poll:{account.name}"
        ttl = max(daemon.lease_seconds, daemon.interval_seconds * 2)
        if not self.store.acquire_lease(lease, daemon.worker_id, ttl, started):
            log.info("another replica polls this account", account=account.name)
            return
        today = started.astimezone(account.timezone).date()

        def window_done(day: date, stats: IngestStats) -> None:
            # Alert as each window lands: a backfill never holds a year of emergencies.
            if daemon.alert_emergencies:
                for message in stats.emergencies:
                    self.alerter.emergency(
                        account.name,
                        message.message_id,
                        message.phone or message.caller_id,
                        message.content[:200],
                    )
            if on_window is not None:
                on_window(day, stats)

        try:
            if span is None:
                days = poll_days(
                    started,
                    account.timezone,
                    daemon.lookback_days,
                    self.store.get_cursor(account.name),
                )
                stats = ingest_days(
                    self.store,
                    self.client(account),
                    account,
                    days,
                    stop=self.stop,
                    on_window=window_done,
                )
                if not self.stop.is_set():
                    # Signpost: the next poll starts from where this run *started*.
                    self.store.set_cursor(account.name, started)
            else:
                done = self.store.done_days(account.name, span[0], span[1])
                days = backfill_days(span[0], span[1], done)
                stats = ingest_days(
                    self.store,
                    self.client(account),
                    account,
                    days,
                    mark_before=today,
                    stop=self.stop,
                    on_window=window_done,
                )
            report.accounts[account.name] = stats
            log.info("account polled", account=account.name, **stats.as_dict())
        except AuthError as exc:
            report.auth_failures.append(str(exc))
            log.error("source refused our credentials", account=account.name, error=str(exc))
            self.alerter.auth_failure(f"berkshire account {account.name}", str(exc))
        except (RetriableError, SyncdError) as exc:
            report.errors.append(f"{account.name}: {exc}")
            log.warning(
                "source unavailable; cursor left where it was", account=account.name, error=str(exc)
            )

    def _deliver(self, name: str, report: CycleReport) -> None:
        now = self.clock()
        paused = self.paused.get(name)
        if paused and paused[0] > now:
            log.warning("target paused", target=name, until=paused[0].isoformat(), reason=paused[1])
            return
        target = self.settings.targets[name]
        regions = {a.name: a.region for a in self.settings.accounts.values()}
        try:
            stats = deliver_target(
                self.store, self.connector(name), target, self.settings.daemon,
                regions=regions, stop=self.stop, dry_run=self.dry_run, clock=self.clock,
                on_batch=self.on_batch,
            )  # fmt: skip
            report.targets[name] = stats
            self.paused.pop(name, None)
            # Dead letters are already in the alert outbox, written with their outcomes.
            log.info("target delivered", target=name, **stats.as_dict())
        except AuthError as exc:
            self.paused[name] = (now + AUTH_PAUSE, "authentication failed")
            report.auth_failures.append(str(exc))
            log.error("CRM refused our credentials: target paused", target=name, error=str(exc))
            self.alerter.auth_failure(f"target {name}", str(exc))
        except TargetPaused as exc:
            self.paused[name] = (exc.until, exc.reason)
            report.errors.append(str(exc))
            log.error("target paused", target=name, until=exc.until.isoformat(), reason=exc.reason)
            if exc.kind == "outage":
                self.alerter.outage(name, exc.until, exc.reason)
            else:
                self.alerter.daily_limit(name)
        except RetriableError as exc:
            report.errors.append(f"{name}: {exc}")
            log.warning("CRM unavailable; deliveries will be retried", target=name, error=str(exc))

    def _update_metrics(self, report: CycleReport) -> None:
        m = self.metrics
        for account, stats in report.accounts.items():
            m.messages_fetched.labels(account=account).inc(stats.fetched)
            m.messages_new.labels(account=account).inc(stats.new)
            m.messages_quarantined.labels(account=account).inc(stats.quarantined)
            if report.ok:
                m.last_success_timestamp.labels(account=account).set(report.started_at.timestamp())
        m.cycle_duration_seconds.labels(kind=report.kind).observe(report.seconds)
        for name, connector in self._connectors.items():
            # Optional: connectors that know their API quota (Salesforce's Sforce-Limit-Info).
            usage = getattr(connector, "api_usage", None)
            if isinstance(usage, tuple) and len(usage) == 2:
                m.set_api_usage(name, int(usage[0]), int(usage[1]))
        try:
            counts = self.store.counts()
        except Exception:  # metrics must never break a cycle
            return
        m.set_deliveries({(t, s): n for t, states in counts.items() for s, n in states.items()})

    # -- readiness -------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        try:
            self.store.ping()
        except Exception as exc:
            return False, f"database unreachable: {type(exc).__name__}"
        cycle = self.last_cycle
        if cycle is None:
            return False, "no cycle finished yet"
        age = (self.clock() - cycle.started_at).total_seconds()
        limit = self.settings.daemon.interval_seconds * 3 + self.settings.daemon.jitter_seconds
        if not cycle.ok:
            return False, "last cycle failed: " + "; ".join(cycle.auth_failures + cycle.errors)[
                :300
            ]
        if age > limit:
            return False, f"last cycle {int(age)}s ago"
        return True, "ok"


def _db_problem(exc: OperationalError) -> str:
    """The driver's own words ("database is locked"): SQLAlchemy's text carries the statement
    and its parameters, which hold message data."""
    return str(exc.orig) if exc.orig is not None else type(exc).__name__


def summary_counts(report: CycleReport) -> Mapping[str, int]:
    """The demo/backfill summary numbers, across targets."""
    ingest = report.ingest
    t = report.targets.values()
    return {
        "messages_fetched": ingest.fetched,
        "messages_new": ingest.new,
        "contacts_created": sum(s.contacts_created for s in t),
        "contacts_updated": sum(s.contacts_updated for s in t),
        "activities_logged": sum(s.activities_logged for s in t),
        "review": sum(s.review for s in t),
        "failed": sum(s.failed for s in t),
    }

"""The daemon's wiring: store, source clients and connectors for one Settings, and a cycle.

A cycle polls every account (one replica per account, through a lease), then delivers every
target. Failures stay where they belong: a source that is down leaves its cursor alone and the
other accounts flow on; a CRM that refuses our credentials pauses only that target.
"""

from __future__ import annotations

import contextvars
import copy
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import structlog
from sqlalchemy.exc import OperationalError

from syncd.alerts import Alerter, emergency_alerts
from syncd.alongside import DeliverAlongside
from syncd.config import AccountSettings, Settings
from syncd.connector import Connector, ReportsQuota, TargetContext, load_factory, shares_instance
from syncd.deliver import DeliveryStats, check_claim, deliver_target
from syncd.dryrun_store import roll_back, rolled_back_store
from syncd.errors import AuthError, PauseKind, RetriableError, SyncdError, TargetPaused
from syncd.inflight import wait_for_all
from syncd.ingest import (
    IngestStats,
    WindowCallback,
    backfill_days,
    ingest_days,
    poll_plan,
    reconcile_days,
)
from syncd.logging import register_secret
from syncd.metrics import Metrics, ObservingTransport, verified_tls
from syncd.polling import PollLease, poll_lease_name, take_turn, turn_lease_name
from syncd.ratelimit import RateLimiter
from syncd.source.client import BerkshireClient
from syncd.source.deadline import DeadlineTransport
from syncd.store.records import RunKind, RunStatus, State
from syncd.store.source_state import first_read_day, open_gaps, record_gap
from syncd.store.store import Store

__all__ = ["CycleReport", "Daemon"]

log = structlog.get_logger(__name__)

AUTH_PAUSE = timedelta(minutes=15)  # credentials may be rotated: look again, but not often


@dataclass
class CycleReport:
    kind: RunKind
    started_at: datetime
    dry_run: bool = False
    seconds: float = 0.0
    accounts: dict[str, IngestStats] = field(default_factory=dict)
    targets: dict[str, DeliveryStats] = field(default_factory=dict)
    # Targets that failed or paused in a pass of this cycle (a backfill delivers in several).
    failed_targets: set[str] = field(default_factory=set)
    auth_failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    run_id: int | None = None

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

    @property
    def status(self) -> RunStatus:
        if self.ok:
            return RunStatus.OK
        return RunStatus.AUTH_FAILED if self.auth_failures else RunStatus.ERROR

    @property
    def recorded_kind(self) -> str:
        """The kind as the run history and the metrics name it (``dry-poll`` for a dry run)."""
        return self.kind.recorded(dry_run=self.dry_run)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.recorded_kind,
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
        # A dry run tells nobody about what it only pretended to do.
        self.alerter = alerter or Alerter(None if dry_run else settings.daemon.alert_webhook_url)
        self.clock = clock
        self.stop = stop or threading.Event()
        self.store = Store(settings.daemon.database_url)
        # Run history always goes to the real store; a dry run does everything else on a
        # store whose writes are rolled back (syncd.dryrun_store), so it changes no state.
        self._runs = self.store
        if dry_run:
            self.store = rolled_back_store(settings.daemon.database_url)
        # Last sign of life of a running cycle (a source or CRM answer): the watchdog reads it.
        self.last_progress = time.monotonic()
        if getattr(self.alerter, "store", None) is None:
            # Alerts go to the store's outbox first, then out (retried until the webhook
            # takes them); dead letters are written there with their outcome.
            self.alerter.attach(self.store)
        if settings.daemon.alert_emergencies and self.alerter.enabled:
            # An emergency's alert is written with the message: a crash cannot lose it.
            self.store.alerts_for_new = emergency_alerts
        self._clients: dict[str, BerkshireClient] = {}
        self._connectors: dict[str, Connector] = {}
        self._pools: dict[str, list[Connector]] = {}
        self._limiters: dict[str, dict[str, RateLimiter]] = {}
        self.paused: dict[str, tuple[datetime, str]] = {}
        self.last_cycle: CycleReport | None = None
        # Seconds spent waiting on each CRM's rate limits (backfill progress shows them).
        self.crm_waited: defaultdict[str, float] = defaultdict(float)
        self.on_batch: Callable[[str, DeliveryStats], None] | None = None
        self._alongside: DeliverAlongside | None = None  # a backfill's deliveries as it fetches
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
                deadline_seconds=account.deadline_seconds,
                fetch_details=account.fetch_details,
                detail_concurrency=account.detail_concurrency,
                transport=ObservingTransport(
                    partial(self._observe_source, account.name),
                    # The exchange deadline holds here too, and every detail thread and
                    # window fetching ahead keeps its connection alive (httpx keeps 20).
                    DeadlineTransport(
                        verify=verified_tls(),
                        limits=httpx.Limits(
                            max_connections=100,
                            max_keepalive_connections=max(20, account.detail_concurrency + 4),
                        ),
                    ),
                ),
            )
        return self._clients[account.name]

    def region_of_target(self, target: str) -> str:
        for account in self.settings.accounts.values():
            if target in account.targets:
                return account.region
        return "US"

    def connector(self, name: str) -> Connector:
        if name not in self._connectors:
            self._connectors[name] = self._new_connector(name)
        return self._connectors[name]

    def _new_connector(self, name: str) -> Connector:
        target = self.settings.targets[name]
        context = TargetContext(
            name=name,
            options=target.options,
            default_region=self.region_of_target(name),
            observe=self._observe,
            limiters=self._limiters.setdefault(name, {}),  # shared by the target's pool
        )
        connector = load_factory(target.type)(context)
        if self.dry_run:
            wrap = load_factory("dry-run")
            connector = wrap(TargetContext(name=name, options={"inner": connector}))
        return connector

    def pool(self, name: str) -> list[Connector]:
        """The extra connectors for a target's concurrent batches: none for a connector that
        is ``thread_safe`` (it is shared), else one instance per further batch in flight."""
        first = self.connector(name)
        wanted = self.settings.targets[name].concurrency - 1
        if self.dry_run or wanted <= 0 or shares_instance(first):
            return []
        extra = self._pools.setdefault(name, [])
        while len(extra) < wanted:
            extra.append(self._new_connector(name))
        return extra

    def _observe_source(self, account: str, status: int) -> None:
        self.last_progress = time.monotonic()
        self.metrics.source_requests.labels(account=account, status=str(status)).inc()

    def _observe(self, target: str, endpoint: str, status: int, waited: float) -> None:
        self.last_progress = time.monotonic()
        self.crm_waited[target] += waited
        self.metrics.observe_request(target, endpoint, status, waited)
        # The fence, after every CRM answer: a batch taken over by another worker (we were
        # frozen past the lease) stops here, before its connector sends another write.
        check_claim()

    def migrate(self) -> None:
        self._runs.migrate()

    def close(self) -> None:
        # Hand the poll leases back: the next `run --once` (another pid, so another holder)
        # would otherwise skip polling until they expire.
        # A daemon that never ran a cycle holds no lease (and may have no database at all).
        for account in self.settings.accounts if self.last_cycle is not None else ():
            try:
                for lease in (poll_lease_name(account), turn_lease_name(account)):
                    self.store.release_lease(lease, self.settings.daemon.worker_id)
            except Exception:  # a database that is gone must not hide why we are closing
                log.warning("could not release poll lease", account=account)
        for client in self._clients.values():
            client.close()
        for connector in self._connectors.values():
            connector.close()
        for extra in self._pools.values():
            for connector in extra:
                connector.close()
        self.alerter.close()
        self.store.close()
        if self._runs is not self.store:
            self._runs.close()

    # -- cycles ----------------------------------------------------------------------------
    def run_cycle(self) -> CycleReport:
        """One poll of every account, then delivery to every target."""
        return self._cycle(RunKind.POLL, None, None)

    def backfill(
        self,
        start: date,
        end: date,
        on_window: WindowCallback | None = None,
        *,
        refetch: bool = False,
    ) -> CycleReport:
        """Fetch ``start..end`` by day windows (resuming after finished ones; ``refetch``:
        every window again, every detail too), then deliver."""
        return self._cycle(RunKind.BACKFILL, (start, end), on_window, refetch=refetch)

    def reconcile(self) -> CycleReport:
        """Re-read the last ``reconcile_days`` days of every account (late and changed
        messages), then deliver. Its own run record: kind ``reconcile``."""
        return self._cycle(RunKind.RECONCILE, None, None)

    def reconcile_due(self) -> bool:
        daemon = self.settings.daemon
        if daemon.reconcile_days <= 0:
            return False
        last = self.store.last_success(RunKind.RECONCILE)
        if last is None:
            return True
        return (self.clock() - last).total_seconds() >= daemon.reconcile_interval_seconds

    def _cycle(
        self,
        kind: RunKind,
        span: tuple[date, date] | None,
        on_window: WindowCallback | None,
        *,
        refetch: bool = False,
    ) -> CycleReport:
        with self._lock:
            started = self.clock()
            t0 = self.last_progress = time.monotonic()
            report = CycleReport(kind=kind, started_at=started, dry_run=self.dry_run)
            run_id: int | None = None
            try:
                roll_back(self.store)  # a dry run's earlier reads may hold SQLite's lock
                worker = self.settings.daemon.worker_id
                run_id = self._runs.start_run(report.recorded_kind, worker, started)
                report.run_id = run_id
                # Every log line of this cycle carries the run id `syncd status` shows.
                structlog.contextvars.bind_contextvars(run_id=run_id)
                with self._deliver_alongside(report) as alongside:
                    self._alongside = alongside
                    for account in self.settings.accounts.values():
                        if self.stop.is_set():
                            break
                        self._ingest_account(account, report, started, span, on_window, refetch)
                self._alongside = None
                self._deliver_all(report)
                alongside.raise_failures()
            except KeyboardInterrupt:
                self.stop.set()  # interrupted is stopping, as `syncd run` is on a signal
                raise
            except OperationalError as exc:
                # Locked or unreachable: a failed cycle, not a crash. Every step commits on
                # its own, cursors move only after their windows, and claims cut short here
                # are retaken when their lease runs out: the next cycle picks up the rest.
                report.errors.append(f"database: {_db_problem(exc)}")
                log.error("database unavailable; cycle abandoned", error=_db_problem(exc))
            finally:
                report.seconds = time.monotonic() - t0
                roll_back(self.store)  # a dry run's writes end here, before its run record
                if run_id is not None:
                    try:
                        self._runs.finish_run(
                            run_id,
                            report.status,
                            report.as_dict(),
                            "; ".join(report.errors + report.auth_failures) or None,
                        )
                    except OperationalError as exc:
                        log.error("could not record the run", error=_db_problem(exc))
                self._update_metrics(report)
                self.last_cycle = report
                self._flush_alerts()
                structlog.contextvars.unbind_contextvars("run_id")
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
        refetch: bool = False,
    ) -> None:
        daemon = self.settings.daemon
        kind = report.kind  # a dry run reads as its kind would
        lease = PollLease(self.store, account.name, daemon.worker_id, daemon.poll_lease_seconds)
        if kind is RunKind.BACKFILL:
            if not lease.wait(daemon.backfill_wait_seconds, self.stop):
                holder = lease.current_holder() or "another process"
                problem = (
                    f"{account.name}: not backfilled: {holder} is fetching this account and "
                    f"did not finish within {daemon.backfill_wait_seconds:g}s "
                    "(syncd.backfill_wait_seconds); run the backfill again later"
                )
                report.errors.append(problem)
                log.error("backfill could not start", account=account.name, holder=holder)
                return
        elif kind is RunKind.POLL:
            if not take_turn(self.store, account.name, daemon):
                log.info("another replica polls this account", account=account.name)
                return
            if not lease.take():
                log.info("another process is fetching this account", account=account.name)
                return
        elif not lease.wait(2 * daemon.poll_lease_seconds, self.stop):
            # A reconcile waits out a poll; not done, it is due again next cycle.
            report.errors.append(f"{account.name}: reconcile skipped, account busy")
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
            if self._alongside is not None:
                self._alongside.landed(account.targets, stats.new + stats.changed)
            if on_window is not None:
                on_window(day, stats)

        def fetch(
            days: Sequence[date], mark_before: date | None = None, refetch: bool = False
        ) -> IngestStats:
            """Read ``days`` under the lease, renewing it as windows land."""
            return ingest_days(
                self.store,
                self.client(account),
                account,
                days,
                stop=self.stop,
                on_window=window_done,
                keep_going=lease.renew,
                renew_every=daemon.poll_lease_seconds / 3,
                mark_before=mark_before,
                refetch=refetch,
                # The next window fetches while this one ends (a dry run's store is one
                # connection: one thread at a time).
                ahead=1 if self.dry_run else 2,
            )

        try:
            if kind is RunKind.POLL:
                days, skipped = poll_plan(
                    started,
                    account.timezone,
                    daemon.lookback_days,
                    self.store.get_cursor(account.name),
                )
                if skipped is not None:
                    self._gap(account.name, *skipped)
                stats = fetch(days)
                if not self.stop.is_set() and stats.windows == len(days):
                    # Signpost: the next poll starts from where this run *started*.
                    self.store.set_cursor(account.name, started)
            elif kind is RunKind.RECONCILE:
                floor = first_read_day(self.store, account.name, daemon.lookback_days)
                days = [
                    day
                    for day in reconcile_days(started, account.timezone, daemon.reconcile_days)
                    if floor is not None and day >= floor
                ]
                stats = fetch(days)
                self.metrics.reconcile_found.labels(account=account.name, found="new").inc(
                    stats.new
                )
                self.metrics.reconcile_found.labels(account=account.name, found="changed").inc(
                    stats.changed
                )
                log.info("account reconciled", account=account.name, **stats.as_dict())
            else:
                assert span is not None
                done = set() if refetch else self.store.done_days(account.name, *span)
                days = backfill_days(span[0], span[1], done)
                if not days:
                    log.info(
                        "every window of the backfill was done already; --refetch reads them again",
                        account=account.name,
                    )
                stats = fetch(days, mark_before=today, refetch=refetch)
            if stats.windows < len(days) and not self.stop.is_set():
                report.errors.append(
                    f"{account.name}: lost the poll lease after {stats.windows} of "
                    f"{len(days)} windows; the rest are fetched next time"
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
        finally:
            try:
                lease.release()
            except OperationalError:
                log.warning("could not release the poll lease", account=account.name)

    def _gap(self, account: str, first: date, last: date) -> None:
        """Days before the catch-up cap: say so once, loudly, with the command that fills them."""
        if not record_gap(self.store, account, first, last):
            return
        days = (last - first).days + 1
        command = f"syncd run --backfill --from {first} --to {last}"
        log.error(
            "days skipped by the catch-up cap; a backfill fills them",
            account=account,
            first_day=first.isoformat(),
            last_day=last.isoformat(),
            days=days,
            command=command,
        )
        self.alerter.send(
            f"{days} day(s) of account {account} were not polled (daemon down too long)",
            fields={"Account": account, "Days": f"{first} .. {last}", "Fill them with": command},
            severity="warning",
        )

    def _deliver_alongside(self, report: CycleReport) -> DeliverAlongside:
        """A backfill delivers each target's full rounds while it still fetches (see
        :mod:`syncd.alongside`); other cycles, and a dry run, deliver after fetching."""
        backfill = report.kind is RunKind.BACKFILL
        names = self._targets_in_use() if backfill and not self.dry_run else []
        batch = self.settings.daemon.batch_size
        full = {name: batch * self.settings.targets[name].concurrency for name in names}

        def deliver_round(name: str) -> bool:
            return self._deliver(name, report, rounds=1)

        return DeliverAlongside(deliver_round, full, self.stop)

    def _deliver_all(self, report: CycleReport) -> None:
        """Every target, at the same time: each has its own CRM, rate limits and claims.
        A dry run goes one target at a time (its store rolls back one connection)."""
        names = self._targets_in_use()
        if self.dry_run or len(names) <= 1:
            for name in names:
                if self.stop.is_set():
                    break
                self._deliver(name, report)
            return
        with ThreadPoolExecutor(len(names), thread_name_prefix="target") as threads:
            # Each thread logs with the cycle's context (its run id).
            futures = [
                threads.submit(contextvars.copy_context().run, self._deliver, name, report)
                for name in names
            ]
            # ^C: every target ends its batch in flight; none goes on writing behind our back.
            wait_for_all(futures, self.stop)
        for future in futures:
            future.result()  # a database error: the cycle fails, as it would one by one

    def _deliver(self, name: str, report: CycleReport, *, rounds: int | None = None) -> bool:
        """Deliver what is due for target ``name`` (``rounds``: at most that many rounds of
        batches); its counts are added to ``report``. False when the target failed or is
        paused."""
        now = self.clock()
        paused = self.paused.get(name)
        if paused and paused[0] > now:
            log.warning("target paused", target=name, until=paused[0].isoformat(), reason=paused[1])
            return False
        target = self.settings.targets[name]
        regions = {a.name: a.region for a in self.settings.accounts.values()}
        stats = DeliveryStats()
        try:
            deliver_target(
                self.store, self.connector(name), target, self.settings.daemon,
                regions=regions, stop=self.stop, dry_run=self.dry_run, clock=self.clock,
                on_batch=self._progress(name, report), stats=stats, pool=self.pool(name),
                max_batches=rounds,
            )  # fmt: skip
            earlier = report.targets.setdefault(name, DeliveryStats())
            earlier.add(stats)
            self.paused.pop(name, None)
            # Dead letters are already in the alert outbox, written with their outcomes.
            log.info("target delivered", target=name, **stats.as_dict())
            return True
        except AuthError as exc:
            report.failed_targets.add(name)
            self.paused[name] = (now + AUTH_PAUSE, "authentication failed")
            report.auth_failures.append(str(exc))
            log.error("CRM refused our credentials: target paused", target=name, error=str(exc))
            self.alerter.auth_failure(f"target {name}", str(exc))
        except TargetPaused as exc:
            report.failed_targets.add(name)
            self.paused[name] = (exc.until, exc.reason)
            report.errors.append(str(exc))
            log.error("target paused", target=name, until=exc.until.isoformat(), reason=exc.reason)
            if exc.kind == PauseKind.OUTAGE:
                self.alerter.outage(name, exc.until, exc.reason)
            else:
                self.alerter.daily_limit(name)
        except RetriableError as exc:
            report.failed_targets.add(name)
            report.errors.append(f"{name}: {exc}")
            log.warning("CRM unavailable; deliveries will be retried", target=name, error=str(exc))
        finally:
            # What this replica settled, failed batches included (a dry run settles nothing).
            if not self.dry_run:
                for outcome in (State.DONE, State.REVIEW, State.SKIPPED, State.RETRY, State.DEAD):
                    self.metrics.delivery_outcomes.labels(target=name, outcome=outcome).inc(
                        getattr(stats, outcome)
                    )
        return False

    def _progress(
        self, name: str, report: CycleReport
    ) -> Callable[[str, DeliveryStats], None] | None:
        """``on_batch`` with the counts of this cycle's earlier passes at ``name`` added (a
        backfill delivers in several: see :mod:`syncd.alongside`)."""
        on_batch = self.on_batch
        earlier = report.targets.get(name)
        if on_batch is None or earlier is None:
            return on_batch
        before = copy.deepcopy(earlier)

        def with_earlier(target: str, stats: DeliveryStats) -> None:
            total = copy.deepcopy(before)
            total.add(stats)
            on_batch(target, total)

        return with_earlier

    def _update_metrics(self, report: CycleReport) -> None:
        m = self.metrics
        for account, stats in report.accounts.items():
            m.messages_fetched.labels(account=account).inc(stats.fetched)
            m.messages_new.labels(account=account).inc(stats.new)
            m.messages_quarantined.labels(account=account).inc(stats.quarantined)
            m.source_reads.labels(account=account, kind="list").inc(stats.windows)
            m.source_reads.labels(account=account, kind="detail").inc(stats.details)
            if report.ok:
                m.last_success_timestamp.labels(account=account).set(report.started_at.timestamp())
        m.cycle_duration_seconds.labels(kind=report.recorded_kind).observe(report.seconds)
        m.cycles.labels(kind=report.recorded_kind, result=report.status).inc()
        for name in report.targets:
            failed_here = name in report.failed_targets
            if not failed_here and not self.dry_run:
                m.target_last_success_timestamp.labels(target=name).set(
                    report.started_at.timestamp()
                )
        for name, connector in self._connectors.items():
            usage = connector.api_usage if isinstance(connector, ReportsQuota) else None
            if usage is not None:
                m.set_api_usage(name, *usage)
        try:
            # Database-wide gauges from one replica only, so a sum over replicas is right.
            daemon = self.settings.daemon
            ttl = max(daemon.lease_seconds, daemon.interval_seconds * 3)
            if not self._runs.acquire_lease("metrics", daemon.worker_id, ttl, self.clock()):
                m.drop_database_gauges()
                return
            counts = self._runs.counts()
            oldest = self._runs.oldest_pending()
            gaps: dict[str, int] = dict.fromkeys(self.settings.accounts, 0)
            for gap in open_gaps(self._runs):
                gaps[gap.account] = gaps.get(gap.account, 0) + gap.missing
        except Exception:  # metrics must never break a cycle
            return
        m.database_gauges_exporter.set(1)
        for account, missing in gaps.items():
            m.source_gap_days.labels(account=account).set(missing)
        m.set_deliveries({(t, s): n for t, states in counts.items() for s, n in states.items()})
        m.set_oldest_pending(oldest, set(self._targets_in_use()), self.clock())

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

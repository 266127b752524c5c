"""The long-running loop: an APScheduler interval job, health endpoint, systemd readiness and
watchdog, and a clean stop on SIGTERM/SIGINT.

The job never overlaps itself (``max_instances=1``) and missed runs collapse into one
(``coalesce``). On a signal the current cycle stops claiming new batches, records the batch
it holds, and the process exits 0.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from types import FrameType

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from syncd import systemd
from syncd.console import create_console
from syncd.daemon import Daemon
from syncd.health import HealthServer

__all__ = ["run_forever"]

log = structlog.get_logger(__name__)


class _Heartbeat:
    """When the job last started and finished: /healthz and the systemd watchdog read it."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.finished = time.monotonic()
        self.running = False
        self.source_auth_failed = False


def _parse_address(address: str) -> tuple[str, int] | None:
    if not address:
        return None
    host, _, port = address.rpartition(":")
    return (host.strip("[]") or "127.0.0.1", int(port))


def run_forever(daemon: Daemon) -> int:
    settings = daemon.settings.daemon
    stop = daemon.stop
    beat = _Heartbeat()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def job() -> None:
        beat.started, beat.running = time.monotonic(), True
        try:
            report = daemon.run_cycle()
            log.info("cycle finished", **report.as_dict())
            if not stop.is_set() and report.ok and daemon.reconcile_due():
                # The deep re-scan for late and changed messages (its own run record).
                reconciled = daemon.reconcile()
                log.info("reconcile finished", **reconciled.as_dict())
            if report.auth_failures and any("berkshire" in f for f in report.auth_failures):
                # A refused source token will not fix itself: stop so the operator sees it.
                beat.source_auth_failed = True
                stop.set()
        except Exception:
            log.exception("cycle failed")
        finally:
            beat.finished, beat.running = time.monotonic(), False

    stall_limit = settings.interval_seconds * 3 + settings.lease_seconds + settings.jitter_seconds

    def alive() -> bool:
        if beat.running:
            return time.monotonic() - beat.started < stall_limit
        return time.monotonic() - beat.finished < stall_limit

    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        job,
        IntervalTrigger(seconds=settings.interval_seconds, jitter=settings.jitter_seconds or None),
        id="cycle",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=int(settings.interval_seconds),
        next_run_time=datetime.now(UTC),
    )
    health: HealthServer | None = None
    address = _parse_address(settings.health_address)
    if address is not None:
        # The console shares the address; it reads the daemon's store and pauses.
        console = create_console(daemon.settings, daemon.store, paused=lambda: dict(daemon.paused))
        health = HealthServer(
            address[0], address[1], metrics=daemon.metrics, alive=alive, ready=daemon.readiness,
            console=console,
        )  # fmt: skip
        health.start()
        log.info("health endpoint listening", url=health.url)
    watchdog = systemd.Watchdog(healthy=alive)
    scheduler.start()
    watchdog.start()
    systemd.notify("READY=1", "STATUS=polling")
    log.info(
        "syncd running",
        interval_seconds=settings.interval_seconds,
        accounts=list(daemon.settings.accounts),
    )
    try:
        while not stop.wait(1.0):
            pass
    finally:
        systemd.notify("STOPPING=1")
        scheduler.shutdown(wait=True)  # the running cycle sees `stop` and winds down
        watchdog.stop()
        if health is not None:
            health.stop()
            console.state.console.close()
        log.info("syncd stopped")
    return 3 if beat.source_auth_failed else 0

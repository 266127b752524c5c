"""Who fetches an account from the source, and when: the leases around polls and backfills.

Two leases per account, both in the store's ``leases`` table:

* ``poll:<account>`` is held while anything fetches the account (a poll, a reconcile, a
  backfill), so two processes never ingest the same account at once. It is short
  (``poll_lease_seconds``) and renewed between day windows, and released at the end: a
  killed process blocks the next one for at most that long.
* ``poll-turn:<account>`` says which replica polls the account on schedule. Its holder keeps
  it from cycle to cycle (``interval * 1.5`` plus jitter); the other replicas skip the account
  while it is held, so replicas share accounts instead of polling each one twice. A backfill
  ignores it. A clean shutdown hands it back (the next ``run --once`` is another process).

A lease whose holder is provably gone is taken over at once instead of waiting for it to run
out: the default worker id is ``host:pid``, and a holder on this host whose pid no longer
exists died (SIGKILL, OOM) without handing it back. Anything less certain (another host, a
custom worker id, a pid that exists) waits for the expiry.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

import structlog
from sqlalchemy import select

from syncd.config import DaemonSettings
from syncd.store.schema import leases
from syncd.store.store import Store

__all__ = ["PollLease", "acquire", "poll_lease_name", "take_turn", "turn_lease_name"]

log = structlog.get_logger(__name__)


def poll_lease_name(account: str) -> str:
    return f"poll:{account}"


def turn_lease_name(account: str) -> str:
    return f"poll-turn:{account}"


class PollLease:
    """The ``poll:<account>`` lease for one holder. Renewal is ``acquire_lease`` again as the
    same holder (the store decides expiry)."""

    def __init__(self, store: Store, account: str, holder: str, ttl: float) -> None:
        self.store = store
        self.name = poll_lease_name(account)
        self.holder = holder
        self.ttl = ttl

    def take(self) -> bool:
        return acquire(self.store, self.name, self.holder, self.ttl)

    def renew(self) -> bool:
        """Extend the lease between windows; False when another process took it over."""
        return self.take()

    def wait(
        self,
        limit: float,
        stop: threading.Event | None = None,
        *,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> bool:
        """Take the lease, waiting up to ``limit`` seconds for its holder to finish (or, if it
        died, for the lease to run out). False when it is still held then, or on ``stop``."""
        until = clock() + limit
        while True:
            if self.take():
                return True
            left = until - clock()
            if left <= 0:
                return False
            pause = min(every, left)
            if stop is not None:
                if stop.wait(pause):
                    return False
            else:
                time.sleep(pause)

    def current_holder(self) -> str | None:
        return _holder(self.store, self.name)

    def release(self) -> None:
        self.store.release_lease(self.name, self.holder)


def take_turn(store: Store, account: str, settings: DaemonSettings) -> bool:
    """Keep (or take) this replica's turn to poll ``account`` on schedule."""
    ttl = settings.interval_seconds * 1.5 + settings.jitter_seconds
    return acquire(store, turn_lease_name(account), settings.worker_id, ttl)


def acquire(store: Store, name: str, holder: str, ttl: float) -> bool:
    """``store.acquire_lease``, taking the lease over from a holder that provably died."""
    if store.acquire_lease(name, holder, ttl):
        return True
    other = _holder(store, name)
    if other is None or other == holder or not _dead_here(other):
        return False
    log.info("taking over a lease its dead holder left", lease=name, holder=other)
    store.release_lease(name, other)
    return store.acquire_lease(name, holder, ttl)


def _holder(store: Store, name: str) -> str | None:
    with store.engine.connect() as conn:
        holder: str | None = conn.execute(
            select(leases.c.holder).where(leases.c.name == name)
        ).scalar()
    return holder


def _dead_here(holder: str) -> bool:
    """True only when ``holder`` is a ``host:pid`` of this host whose process is gone."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # alive under another user; or not a pid
        return False
    return False

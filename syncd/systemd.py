"""The sd_notify protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET``.

No libsystemd binding is needed: the protocol is newline-separated ``KEY=value`` lines in a
single AF_UNIX datagram (see ``sd_notify(3)``). Outside systemd the variable is unset and
every call here is a cheap no-op, so the daemon calls them unconditionally.

The :class:`Watchdog` pings only while the caller's ``healthy()`` says the daemon is making
progress: a scheduler that hangs stops the pings, and systemd (``WatchdogSec=``) kills and
restarts the service. A watchdog thread that pinged unconditionally would prove nothing.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable

import structlog

__all__ = ["Watchdog", "notify", "watchdog_interval"]

_log = structlog.get_logger(__name__)


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=polling"``) to the service manager.

    Returns True when the datagram was sent; False when not under systemd (``NOTIFY_SOCKET``
    unset or of an unsupported kind) or the send failed. Never raises: status reporting
    must not take the daemon down.
    """
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not states or not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        return False  # e.g. systemd 253's vsock: addresses, which we do not need
    # A newline inside a value would smuggle in another assignment (STATUS= may carry text
    # that came from elsewhere); the protocol has no escaping, so flatten it.
    payload = "\n".join(state.replace("\n", " ") for state in states).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(payload)
    except OSError as exc:
        _log.debug("sd_notify failed", error=str(exc))
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings systemd asks for, or None when it asks for none.

    That is half of ``WATCHDOG_USEC``, as ``sd_watchdog_enabled(3)`` recommends, so one late
    ping is not fatal. ``WATCHDOG_PID``, when set, must be this process: the variables are
    inherited by children, which must not ping on the service's behalf.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2_000_000


class Watchdog:
    """Pings ``WATCHDOG=1`` every ``period`` seconds while ``healthy()`` returns True.

    ``period`` defaults to :func:`watchdog_interval`; when that is None too (not under a
    systemd watchdog) :meth:`start` does nothing. ``healthy`` runs on the watchdog thread;
    one that raises counts as unhealthy.
    """

    def __init__(self, healthy: Callable[[], bool], period: float | None = None) -> None:
        self.healthy = healthy
        self.period = period if period is not None else watchdog_interval()
        self.pings = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> bool:
        """Start pinging in a daemon thread; False when no watchdog is configured."""
        if self.period is None or self.period <= 0:
            return False
        if self.running:
            return True
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, args=(self.period,), name="syncd-watchdog", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self, period: float) -> None:
        # Ping at once, then every period: systemd counts from READY=1, not from our start.
        while True:
            if self._is_healthy():
                if notify("WATCHDOG=1"):
                    self.pings += 1
            else:
                _log.warning("watchdog withheld: daemon unhealthy")
            if self._stopping.wait(period):
                return

    def _is_healthy(self) -> bool:
        try:
            return bool(self.healthy())
        except Exception:
            _log.warning("watchdog health check raised", exc_info=True)
            return False

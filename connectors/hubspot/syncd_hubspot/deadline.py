"""An overall deadline for every HTTP exchange with HubSpot, on top of per-read timeouts.

urllib3's timeouts bound each socket operation: a server that trickles one byte every two
seconds never trips a five-second read timeout and can hold a request for ever. Here every
exchange runs under a watchdog: the connection the exchange uses registers itself (a
connection subclass installed in the client's pool manager) and, when the deadline passes, the
watchdog shuts its socket down. The blocked read fails at once, urllib3 drops the connection,
and the caller sees a network failure, retried (or reported in doubt) like a timeout.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["Exchange", "install", "under_deadline"]

_local = threading.local()


class Exchange:
    """One request's watch: the connection it uses and whether its time ran out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None
        self.expired = False

    def attach(self, connection: Any) -> None:
        with self._lock:
            self._connection = connection
            if self.expired:
                self._cut()

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            self._cut()

    def _cut(self) -> None:
        sock = getattr(self._connection, "sock", None)
        if sock is not None:
            with suppress(OSError):  # already closed: nothing left to cut
                sock.shutdown(socket.SHUT_RDWR)


def _current() -> Exchange | None:
    exchange: Exchange | None = getattr(_local, "exchange", None)
    return exchange


class _Watched:
    """Mixed into urllib3's connections: register with the running exchange."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        exchange = _current()
        if exchange is not None:
            exchange.attach(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        exchange = _current()
        if exchange is not None:
            exchange.attach(self)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def install(pool_manager: urllib3.PoolManager) -> None:
    """Make ``pool_manager`` open watched connections (before its first request)."""
    pool_manager.clear()
    pool_manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


@contextmanager
def under_deadline(seconds: float) -> Iterator[Exchange]:
    """Run the block's HTTP exchange under a deadline; ``Exchange.expired`` says if it hit."""
    exchange = Exchange()
    previous = _current()
    _local.exchange = exchange
    watchdog = threading.Timer(seconds, exchange.expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield exchange
    finally:
        watchdog.cancel()
        _local.exchange = previous

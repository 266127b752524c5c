"""An overall deadline for each HTTP exchange, on top of httpx's per-operation timeouts.

httpx times each connect, read and write on its own: a server that sends one byte every two
seconds never trips a five-second read timeout and holds a cycle for as long as it likes.
Here every socket operation of an exchange gets ``min(its own timeout, time left before the
exchange's deadline)``, through an httpcore network backend; past the deadline the operation
raises httpcore's own timeout, which httpx turns into :class:`httpx.ReadTimeout` (or
``WriteTimeout``/``ConnectTimeout``) -- a timeout like any other, retried as one.

The deadline lives in a thread-local set around each request (:func:`deadline`), so the
threads fetching details in parallel each keep their own.
"""

from __future__ import annotations

import ssl
import threading
import time
import typing
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx

__all__ = ["DeadlineTransport", "deadline"]

_local = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Socket operations in this thread must end within ``seconds`` from now."""
    _local.until = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.until = None


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    until: float | None = getattr(_local, "until", None)
    if until is None:
        return timeout
    left = until - time.monotonic()
    if left <= 0:
        raise error("the exchange's overall deadline passed")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (TLS verification and all) over a connection pool whose sockets
    honour :func:`deadline`. httpx offers no public hook for the network backend, so the pool
    it built is replaced by an identical one with ours (``tests/integration`` has a trickling
    server that fails if this ever stops working)."""

    def __init__(
        self, *, verify: bool | ssl.SSLContext = True, limits: httpx.Limits | None = None
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        # One context for both pools (httpx's, replaced below, and ours): a given one is used
        # as it is, so many transports can share one (see syncd.metrics.verified_tls).
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        super().__init__(verify=context, limits=limits)
        self._pool = httpcore.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Backend(),
        )

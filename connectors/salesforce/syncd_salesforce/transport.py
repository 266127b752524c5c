"""The ``requests.Session`` every Salesforce call goes through.

simple-salesforce accepts a session and sends *everything* through it (logins included), which
makes it the one place to: reach a loopback emulator over plain HTTP (the library always
builds ``https://`` URLs), pace requests, apply the timeout and the deadline, read
``Sforce-Limit-Info`` and report each request to the observer.

The timeout bounds each read; a server that trickles a byte now and then never trips it. The
deadline bounds the whole exchange: requests has none, so a timer shuts the socket of the
connection the request is using down when it passes, and the request fails as a
:class:`DeadlineExceeded` (a ``requests.Timeout``: retried like one, reconciled like one).
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter

from syncd.plugin import RateLimiter
from syncd_salesforce.options import LOOPBACK_HOSTS

__all__ = ["DeadlineExceeded", "SalesforceSession", "classify", "plain_http_for_loopback"]

_API_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
_DATA_PATH = re.compile(r"/services/data/v[\d.]+/(?P<rest>.*)")

# (endpoint, status, seconds waited for the rate limiter)
Observer = Callable[[str, int, float], None]
UsageListener = Callable[[int, int], None]


class DeadlineExceeded(requests.Timeout):
    """The whole exchange took longer than the deadline (a trickling server, say)."""


class _Exchange:
    """The connection one request is using, for its deadline timer to cut."""

    def __init__(self) -> None:
        self.connection: urllib3.connection.HTTPConnection | None = None
        self.cut = False
        self.lock = threading.Lock()

    def expire(self) -> None:
        with self.lock:
            self.cut = True
            sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: the request is over anyway
                sock.shutdown(socket.SHUT_RDWR)


_exchange = threading.local()


def _register(connection: urllib3.connection.HTTPConnection) -> None:
    exchange: _Exchange | None = getattr(_exchange, "current", None)
    if exchange is not None:
        with exchange.lock:
            exchange.connection = connection


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _register(self)
        super().request(*args, **kwargs)


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections tell the current exchange which socket they use."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def plain_http_for_loopback(url: str) -> str:
    """``https://127.0.0.1:8000/x`` -> ``http://127.0.0.1:8000/x``; any other URL unchanged.

    Only loopback hosts are rewritten, so a real org is always reached over verified TLS.
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname in LOOPBACK_HOSTS:
        return urlunsplit(parts._replace(scheme="http"))
    return url


def classify(method: str, url: str) -> str:
    """A short endpoint name for metrics: ``query``, ``search``, ``collections.upsert``..."""
    path = urlsplit(url).path
    if "/services/Soap/u/" in path or path.endswith("/services/oauth2/token"):
        return "login"
    match = _DATA_PATH.fullmatch(path)
    if match is None:
        return "versions" if path.rstrip("/").endswith("/services/data") else "other"
    rest = match.group("rest").strip("/")
    head = rest.split("/", 1)[0]
    if head in ("query", "queryAll", "search", "limits"):
        return head
    if rest == "":
        return "resources"
    if rest.startswith("composite/sobjects"):
        if rest.count("/") >= 3:
            return "collections.upsert"
        return {"POST": "collections.create", "PATCH": "collections.update"}.get(
            method.upper(), "collections.read"
        )
    if rest.startswith("sobjects"):
        if rest.endswith("/describe") or rest == "sobjects":
            return "describe"
        verb = {"POST": "create", "PATCH": "update", "DELETE": "delete"}.get(method.upper(), "get")
        return f"sobject.{verb}"
    return head


class SalesforceSession(requests.Session):
    """Loopback-aware, paced, observed. ``last_response`` is per thread (for Retry-After)."""

    def __init__(
        self,
        *,
        timeout: float,
        deadline: float | None = None,
        limiter: RateLimiter | None = None,
        observe: Observer | None = None,
        on_usage: UsageListener | None = None,
    ) -> None:
        super().__init__()
        self.timeout = timeout
        self.deadline = deadline
        # urllib3 retries nothing: SalesforceClient.call runs the one retry loop (nested
        # retries would multiply its attempts and repeat a create it must not).
        adapter = _DeadlineAdapter(max_retries=0)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.limiter = limiter
        self._observe = observe
        self._on_usage = on_usage
        self._local = threading.local()

    @property
    def last_response(self) -> requests.Response | None:
        response: requests.Response | None = getattr(self._local, "response", None)
        return response

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        method_s = method.decode() if isinstance(method, bytes) else method
        url_s = plain_http_for_loopback(url.decode() if isinstance(url, bytes) else url)
        kwargs.setdefault("timeout", self.timeout)
        kwargs.pop("verify", None)  # verification is not negotiable: the session default holds
        endpoint = classify(method_s, url_s)
        waited = self.limiter.acquire() if self.limiter is not None else 0.0
        self._local.response = None
        try:
            response = self._within_deadline(method_s, url_s, *args, **kwargs)
        except requests.RequestException:
            self._report(endpoint, 0, waited)
            raise
        self._local.response = response
        self._report(endpoint, response.status_code, waited)
        usage = _API_USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if usage is not None and self._on_usage is not None:
            self._on_usage(int(usage.group(1)), int(usage.group(2)))
        return response

    def _within_deadline(
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if self.deadline is None:
            response: requests.Response = super().request(method, url, *args, **kwargs)
            return response
        exchange = _Exchange()
        timer = threading.Timer(self.deadline, exchange.expire)
        timer.daemon = True
        _exchange.current = exchange
        timer.start()
        try:
            response = super().request(method, url, *args, **kwargs)
            return response
        except requests.RequestException as exc:
            if exchange.cut:
                raise DeadlineExceeded(f"no complete answer within {self.deadline:g} s") from exc
            raise
        finally:
            timer.cancel()
            _exchange.current = None

    def _report(self, endpoint: str, status: int, waited: float) -> None:
        if self._observe is not None:
            self._observe(endpoint, status, waited)

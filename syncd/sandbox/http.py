"""A small routed HTTP server for the emulators, with request counting and fault injection.

Each emulator subclasses :class:`Emulator`, registers routes, and gets for free:
``counts`` by endpoint (server-side), ``refused`` (answers a subclass gave because one of its
service's limits was reached), injected 429/5xx/slow answers (:class:`Faults`), an emulated
network ``latency`` on every answer, the requests being answered (``in_flight``, for limits on
concurrency), and start/stop on an ephemeral loopback port.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["Emulator", "Faults", "Request", "Response", "json_response"]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    hdrs = {"Content-Type": "application/json;charset=UTF-8"}
    if headers:
        hdrs.update(headers)
    body = b"" if payload is None else json.dumps(payload).encode("utf-8")
    return Response(status=status, body=body, headers=hdrs)


Handler = Callable[[Request], Response]


@dataclass
class Faults:
    """Injected misbehaviour, applied before routing. All fields may be changed at run time.

    ``rate_limit_ratio``/``error_ratio`` refuse that share of requests with 429/500;
    ``outage_until`` (a ``time.monotonic()`` value) answers 503 to everything until then;
    ``delay`` sleeps before answering. ``seed`` makes the random choices repeatable.
    """

    rate_limit_ratio: float = 0.0
    error_ratio: float = 0.0
    delay: float = 0.0
    outage_until: float = 0.0
    retry_after: float = 1.0
    seed: int | None = None
    injected: Counter[str] = field(default_factory=Counter)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self._rng.seed(self.seed)

    def outage(self, seconds: float) -> None:
        self.outage_until = time.monotonic() + seconds

    def clear(self) -> None:
        self.rate_limit_ratio = self.error_ratio = self.delay = 0.0
        self.outage_until = 0.0

    def pick(self) -> str | None:
        """Which fault, if any, this request gets: ``outage``, ``429``, ``500`` or None."""
        if self.delay:
            time.sleep(self.delay)
        if self.outage_until and time.monotonic() < self.outage_until:
            self.injected["outage"] += 1
            return "outage"
        roll = self._rng.random()
        if roll < self.rate_limit_ratio:
            self.injected["429"] += 1
            return "429"
        if roll < self.rate_limit_ratio + self.error_ratio:
            self.injected["500"] += 1
            return "500"
        return None


class _QuietServer(ThreadingHTTPServer):
    # socketserver's default backlog is 5: a client opening dozens of connections at once
    # (detail fetches, batches in flight) would see resets no real service gives it.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or was killed (the crash tests do it on purpose) is normal
        # here; anything else is an emulator bug and is still printed.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Emulator:
    """Base of every sandbox server. Subclasses call :meth:`route` and may override
    :meth:`fault_response` to answer injected faults in their service's own shape.

    ``latency`` (seconds, 0 by default) is waited before every routed answer, outside the
    lock, so concurrent requests overlap as they would over a network; an endpoint matching a
    pattern of ``latency_factors`` (``fnmatch`` on the endpoint name) waits that multiple.
    """

    name = "emulator"
    # Endpoint name pattern -> how many times ``latency`` its answer takes (first match wins).
    latency_factors: Mapping[str, float] = {}

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: list[tuple[str, re.Pattern[str], str, Handler]] = []
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        # Answers refused because a limit of the service was reached, by the limit's name.
        self.refused: Counter[str] = Counter()
        self.faults = Faults()
        self.latency = 0.0
        self.lock = threading.RLock()
        # Requests being answered: ticket -> when it arrived (``time.monotonic()``); each
        # server thread answers one request at a time, and knows its ticket.
        self._in_flight: dict[int, float] = {}
        self._tickets = itertools.count()
        self._answering = threading.local()
        self._host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- routing ---------------------------------------------------------------------------
    def route(self, method: str, pattern: str, endpoint: str, handler: Handler) -> None:
        """Register ``handler`` for ``method`` and a full-match regex ``pattern`` on the path.
        ``endpoint`` is the name requests are counted under."""
        self._routes.append((method.upper(), re.compile(pattern), endpoint, handler))

    def fault_response(self, fault: str, request: Request) -> Response:
        status = {"outage": 503, "429": 429, "500": 500}[fault]
        headers = {"Retry-After": f"{self.faults.retry_after:g}"} if status == 429 else {}
        return json_response({"error": fault}, status=status, headers=headers)

    def not_found(self, request: Request) -> Response:
        return json_response({"error": "not found", "path": request.path}, status=404)

    def admin_state(self) -> dict[str, Any]:
        """What ``GET /_sandbox/state`` shows: counts, and whatever a subclass adds. Lets a
        test in another process (the crash test) inspect an emulator without its Python API."""
        with self.lock:
            return {
                "counts": dict(self.counts),
                "statuses": {str(k): v for k, v in self.statuses.items()},
                "refused": dict(self.refused),
            }

    def latency_of(self, endpoint: str) -> float:
        """Seconds an answer from ``endpoint`` waits: ``latency`` times its factor."""
        if not self.latency:
            return 0.0
        for pattern, factor in self.latency_factors.items():
            if fnmatchcase(endpoint, pattern):
                return self.latency * factor
        return self.latency

    def running_longer_than(self, seconds: float) -> int:
        """How many other requests than the one this thread answers have been in the
        answering for ``seconds`` or more."""
        since = time.monotonic() - seconds
        mine = getattr(self._answering, "ticket", None)
        with self.lock:
            return sum(1 for t, at in self._in_flight.items() if at <= since and t != mine)

    def refuse(self, limit: str) -> None:
        """Count an answer refused because ``limit`` was reached (see ``refused``)."""
        with self.lock:
            self.refused[limit] += 1

    def dispatch(self, request: Request) -> Response:
        if request.method == "GET" and request.path == "/_sandbox/state":
            return json_response(self.admin_state())  # not counted: it is not the service's API
        for method, pattern, endpoint, handler in self._routes:
            if method != request.method:
                continue
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            request.params = {k: v for k, v in match.groupdict().items() if v is not None}
            with self.lock:
                self.counts[endpoint] += 1
                ticket = next(self._tickets)
                self._in_flight[ticket] = time.monotonic()
            self._answering.ticket = ticket
            try:
                wait = self.latency_of(endpoint)
                if wait:
                    time.sleep(wait)
                fault = self.faults.pick()
                response = self.fault_response(fault, request) if fault else handler(request)
            finally:
                self._answering.ticket = None
                with self.lock:
                    del self._in_flight[ticket]
            with self.lock:
                self.statuses[response.status] += 1
            return response
        with self.lock:
            self.counts["unrouted"] += 1
        return self.not_found(request)

    @property
    def total_requests(self) -> int:
        with self.lock:
            return (
                sum(v for k, v in self.counts.items() if k != "unrouted") + self.counts["unrouted"]
            )

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.statuses.clear()
            self.refused.clear()

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError(f"{self.name} emulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        emulator = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle on, the body waits for the
            # client's delayed ACK (~40 ms a request on Linux), which would swamp every timing.
            disable_nagle_algorithm = True

            def _handle(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Request(
                    method=self.command,
                    path=split.path,
                    query=parse_qs(split.query, keep_blank_values=True),
                    headers=dict(self.headers.items()),
                    body=body,
                )
                try:
                    response = emulator.dispatch(request)
                except Exception as exc:  # an emulator bug must show, not hang the client
                    response = json_response({"error": f"emulator error: {exc!r}"}, status=500)
                self.send_response(response.status)
                for key, value in response.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return None

        server = _QuietServer((self._host, self._port), _Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            # A short poll interval: stop() waits for it, and tests start hundreds of servers.
            target=lambda: server.serve_forever(poll_interval=0.05),
            name=f"{self.name}-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

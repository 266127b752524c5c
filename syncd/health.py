"""Liveness, readiness and metrics over HTTP, for container runtimes and Prometheus.

``/healthz`` answers "is the process making progress?" (a failing liveness check gets the
container restarted), ``/readyz`` answers "should it get work?" with a reason an operator can
read, ``/metrics`` is the Prometheus exposition. The server runs on daemon threads so it
never keeps a stopping daemon alive, and it writes no access log: scrapes every few seconds
would drown the daemon's own logs.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog

from syncd.metrics import CONTENT_TYPE, Metrics

__all__ = ["HealthServer"]

_log = structlog.get_logger(__name__)

_TEXT = "text/plain; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client hanging up mid-answer is not news.
        _log.debug("health request failed", client=str(client_address), exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` (0: any free port).

    ``alive`` and ``ready`` are called on every request, from the server's threads; they
    must be cheap and thread-safe. One that raises counts as a failed check.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        metrics: Metrics,
        alive: Callable[[], bool],
        ready: Callable[[], tuple[bool, str]],
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.alive = alive
        self.ready = ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, with the real port when 0 was asked for."""
        if self._server is None:
            raise RuntimeError("health server is not started")
        host, port = self._server.server_address[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> HealthServer:
        """Bind and serve in the background. Raises OSError if the port is taken."""
        if self._server is not None:
            return self
        server_class = _Server6 if ":" in self.host else _Server
        self._server = server_class((self.host, self.port), self._handler_class())
        # A short poll interval only bounds how long stop() waits for the loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="syncd-health", daemon=True
        )
        self._thread.start()
        _log.debug("health server listening", url=self.url)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling ----------------------------------------------------------------------
    def _answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of ``path``."""
        if path == "/healthz":
            alive = _checked(lambda: (bool(self.alive()), ""))[0]
            return (200, _TEXT, b"ok\n") if alive else (503, _TEXT, b"not alive\n")
        if path == "/readyz":
            ready, reason = _checked(self.ready)
            body = json.dumps({"ready": bool(ready), "reason": reason}).encode("utf-8")
            return (200 if ready else 503), "application/json", body
        if path == "/metrics":
            return 200, CONTENT_TYPE, self.metrics.render()
        return 404, _TEXT, b"not found\n"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            server_version = "syncd-health"
            sys_version = ""

            def _respond(self, *, body_wanted: bool) -> None:
                status, content_type, body = owner._answer(urlsplit(self.path).path)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body_wanted:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._respond(body_wanted=True)

            def do_HEAD(self) -> None:
                self._respond(body_wanted=False)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return _Handler


def _checked(check: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    """Run a check; one that raises has failed. The answer names the exception type only:
    these endpoints are unauthenticated and a message may carry hosts or account names."""
    try:
        return check()
    except Exception as exc:
        _log.warning("health check raised", exc_info=True)
        return False, f"check failed: {type(exc).__name__}"

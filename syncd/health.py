"""Liveness, readiness and metrics over HTTP, for container runtimes and Prometheus; the web
console (:mod:`syncd.console`) on the same address when one is given.

``/healthz`` answers "is the process making progress?" (a failing liveness check gets the
container restarted), ``/readyz`` answers "should it get work?" with a reason an operator can
read, ``/metrics`` is the Prometheus exposition. One ASGI app (Starlette) served by uvicorn
on a socket bound here, so a taken port fails :meth:`HealthServer.start` with OSError at
once. The server runs on a daemon thread so it never keeps a stopping daemon alive, and it
writes no access log: scrapes every few seconds would drown the daemon's own logs.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from syncd.metrics import CONTENT_TYPE, Metrics

__all__ = ["HealthServer"]

_log = structlog.get_logger(__name__)

_NO_STORE = {"Cache-Control": "no-store"}


class HealthServer:
    """Serves ``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` (0: any free port),
    and ``console`` (an ASGI app) under ``/console/`` when given.

    ``alive`` and ``ready`` are called on every request, from the server's thread; they
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
        console: Any = None,
    ) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.alive = alive
        self.ready = ready
        self.console = console
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server, with the real port when 0 was asked for."""
        if self._socket is None:
            raise RuntimeError("health server is not started")
        host, port = self._socket.getsockname()[:2]
        host = str(host)
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def app(self) -> Starlette:
        routes: list[Any] = [
            Route("/healthz", self._healthz, methods=["GET", "HEAD"]),
            Route("/readyz", self._readyz, methods=["GET", "HEAD"]),
            Route("/metrics", self._metrics, methods=["GET", "HEAD"]),
        ]
        if self.console is not None:
            routes.append(Route("/", _to_console, methods=["GET", "HEAD"]))
            routes.append(Mount("/console", app=self.console))
        return Starlette(routes=routes)

    def start(self) -> HealthServer:
        """Bind and serve in the background. Raises OSError if the port is taken."""
        if self._server is not None:
            return self
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(
            self.app(),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            loop="asyncio",
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._socket, self._server = sock, server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])),
            name="syncd-health",
            daemon=True,
        )
        self._thread.start()
        _log.debug("health server listening", url=self.url)
        return self

    def stop(self) -> None:
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- endpoints (plain functions: Starlette runs them on its thread pool, so a slow
    # readiness check never stalls the event loop) ----------------------------------------
    def _healthz(self, request: Request) -> Response:
        alive = _checked(lambda: (bool(self.alive()), ""))[0]
        if alive:
            return PlainTextResponse("ok\n", headers=_NO_STORE)
        return PlainTextResponse("not alive\n", status_code=503, headers=_NO_STORE)

    def _readyz(self, request: Request) -> Response:
        ready, reason = _checked(self.ready)
        body = json.dumps({"ready": bool(ready), "reason": reason})
        return Response(
            body,
            status_code=200 if ready else 503,
            media_type="application/json",
            headers=_NO_STORE,
        )

    def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE, headers=_NO_STORE)


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=303)


def _checked(check: Callable[[], tuple[bool, str]]) -> tuple[bool, str]:
    """Run a check; one that raises has failed. The answer names the exception type only:
    these endpoints are unauthenticated and a message may carry hosts or account names."""
    try:
        return check()
    except Exception as exc:
        _log.warning("health check raised", exc_info=True)
        return False, f"check failed: {type(exc).__name__}"

"""The console's pages and actions: overview, review queue, dead letters, message history.

Server-rendered (Jinja2 templates, one CSS file): every page reads with JavaScript off, and
every action is an HTML form POST guarded by :mod:`syncd.console.security`. The one script
(``static/console.js``) only refreshes the overview's figures in place, while the reader lets
it.
Handlers are plain functions, so Starlette runs their store and CRM reads on its thread pool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from importlib.resources import files
from typing import Any

import anyio
import jinja2
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncd.config import Settings
from syncd.console import actions
from syncd.console.records import CandidateReader
from syncd.console.security import SESSION_COOKIE, SESSION_SECONDS, Guard, session_key
from syncd.history import (
    Masker,
    dead_groups,
    dead_ids,
    find_messages,
    message_history,
    overview,
    review_items,
)
from syncd.logging import register_secret
from syncd.store.records import State
from syncd.store.store import Store

__all__ = ["Console", "create_console"]

_log = structlog.get_logger(__name__)

Paused = Callable[[], Mapping[str, tuple[datetime, str]]]
REFRESH_SECONDS = 30

_HEADERS = {
    # Only our own script file, no frames, forms only to ourselves: a page that renders
    # caller text must not be able to run it.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not "no-referrer": under it browsers send "Origin: null" on our own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in _HEADERS.items()
                    if k.lower().encode() not in have
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


class Console:
    """The console's state: settings, store, the guard, the candidate reader."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        paused: Paused | None = None,
        reader: CandidateReader | None = None,
        refresh_seconds: int = REFRESH_SECONDS,
    ) -> None:
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self.store = store
        self.paused = paused
        token = settings.daemon.console_token
        register_secret(token)  # never in a log line, whatever logs it
        self.guard = Guard(token)
        self.mask = Masker(show_pii=settings.daemon.console_show_pii)
        self.reader = reader or CandidateReader(settings)
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("syncd.console", "templates"),
            autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
            undefined=jinja2.StrictUndefined,
        )
        env.filters["mask"] = self.mask
        env.filters["duration"] = _duration
        env.filters["when"] = _when
        self.templates = Jinja2Templates(env=env)

    def close(self) -> None:
        self.reader.close()

    # -- rendering -----------------------------------------------------------------------------
    def page(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        return self.templates.TemplateResponse(
            request,
            name,
            {
                "base": base,
                "can_act": self.guard.enabled,
                "signed_in": self.guard.signed_in(request),
                "csrf": self.guard.csrf_token(request),
                "notice": request.session.pop("notice", ""),
                "path": request.url.path,
                **context,
            },
            status_code=status_code,
        )

    def refused(self, request: Request, reason: str) -> Response:
        _log.warning("console action refused", path=request.url.path, reason=reason)
        return self.page(request, "refused.html", status_code=403, reason=reason)

    def back(self, request: Request, where: str, notice: str) -> Response:
        """See other: the page the action came from, with a one-time notice (kept in the
        session, not the URL, so nobody can put words in the console's mouth by a link)."""
        base = str(request.scope.get("root_path", "")).rstrip("/")
        if self.guard.signed_in(request):
            request.session["notice"] = notice
        return RedirectResponse(f"{base}{where}", 303)

    # -- pages ---------------------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        paused = self.paused() if self.paused else None
        view = overview(
            self.store,
            self.settings.account_targets(),
            list(self.settings.targets),
            paused=paused,
        )
        return self.page(
            request,
            "overview.html",
            view=view,
            pause_known=self.paused is not None,
            refresh=self.refresh_seconds,
        )

    def review(self, request: Request) -> Response:
        items = []
        for item in review_items(self.store):
            candidates, error = self.reader.candidates(
                item["target"], item["candidates"], item["message"], item["account"]
            )
            items.append({"item": item, "candidates": candidates, "error": error})
        held = sum(by_state.get(State.REVIEW, 0) for by_state in self.store.counts().values())
        return self.page(request, "review.html", items=items, held=held)

    def dead(self, request: Request) -> Response:
        return self.page(request, "dead.html", groups=dead_groups(self.store))

    def messages(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()[:200]
        regions = sorted({a.region for a in self.settings.accounts.values()}) or ["US"]
        found = find_messages(self.store, query, regions=regions) if query else []
        return self.page(request, "messages.html", query=query, found=found)

    def message(self, request: Request) -> Response:
        message_id = request.query_params.get("id", "")
        account = request.query_params.get("account") or None
        logs = message_history(self.store, message_id, account) if message_id else []
        return self.page(
            request,
            "message.html",
            message_id=message_id,
            logs=self.mask.view(logs),
            status_code=200 if logs else 404,
        )

    def login_form(self, request: Request) -> Response:
        return self.page(request, "login.html", error="")

    # -- actions -------------------------------------------------------------------------------
    async def login(self, request: Request) -> Response:
        form = await request.form()
        if not self.guard.enabled:
            return self.refused(request, "The console is read-only: no operator token is set.")
        if not self.guard.same_origin(request):
            return self.refused(request, "Refused: the form was not posted from this console.")
        if not self.guard.check_token(str(form.get("token", ""))):
            _log.warning("console sign-in refused")
            await anyio.sleep(1.0)  # a guesser gets one try a second per connection
            return self.page(request, "login.html", status_code=403, error="Wrong token.")
        self.guard.sign_in(request)
        _log.info("console operator signed in")
        return self.back(request, "/", "Signed in: actions are enabled.")

    async def logout(self, request: Request) -> Response:
        form = await request.form()
        reason = self.guard.refuse(request, form)
        if reason is None:
            request.session.clear()
        return self.back(request, "/", "")

    async def settle(self, request: Request) -> Response:
        form = await request.form()
        reason = self.guard.refuse(request, form)
        if reason is not None:
            return self.refused(request, reason)
        delivery_id = _int(request.path_params.get("delivery_id"))
        item = next(iter(review_items(self.store, delivery_id=delivery_id)), None)
        if item is None:
            return self.back(request, "/review", f"Delivery {delivery_id} is no longer held.")
        choice = str(form.get("choice", ""))
        if choice == "new":
            record_id, kind = None, "contact"
        elif choice.startswith("record:"):
            record_id = choice[len("record:") :]
            kind = str(form.get(f"kind:{record_id}", "contact"))
            if record_id not in item["candidates"] or kind not in ("contact", "lead"):
                return self.refused(request, "Refused: that record is not one of the candidates.")
        else:
            return self.refused(request, "Refused: choose a record or 'create new'.")
        settled = self.store.resolve_review(
            delivery_id, record_id=record_id, record_kind=kind, by=actions.WORKER
        )
        if not settled:
            return self.back(request, "/review", f"Delivery {delivery_id} is no longer held.")
        _log.info("console settled review item", delivery_id=delivery_id, record_id=record_id)
        what = f"attached to {record_id}" if record_id else "to be created as a new record"
        return self.back(
            request, "/review", f"Delivery {delivery_id} queued, {what}: the next cycle sends it."
        )

    async def retry(self, request: Request) -> Response:
        form = await request.form()
        reason = self.guard.refuse(request, form)
        if reason is not None:
            return self.refused(request, reason)
        if form.get("delivery_id"):
            ids = [_int(form.get("delivery_id"))]
        else:
            ids = dead_ids(self.store, str(form.get("target", "")), str(form.get("reason", "")))
        count = actions.retry_dead(self.store, ids)
        _log.info("console retried dead letters", count=count)
        plural = "delivery" if count == 1 else "deliveries"
        return self.back(request, "/dead", f"Requeued {count} {plural}: the next cycle sends them.")


def _int(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return -1


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _when(iso: str | None) -> str:
    """An ISO time as "2026-12-07 10:41:05 UTC" (or a dash)."""
    if not iso:
        return "\u2013"
    return iso[:19].replace("T", " ") + " UTC"


def create_console(
    settings: Settings,
    store: Store,
    *,
    paused: Paused | None = None,
    reader: CandidateReader | None = None,
    refresh_seconds: int = REFRESH_SECONDS,
) -> Starlette:
    """The console as an ASGI app (mount it, e.g. under ``/console`` on the health server).
    ``paused`` reports the daemon's paused targets (until, why) when the console runs in it."""
    console = Console(
        settings, store, paused=paused, reader=reader, refresh_seconds=refresh_seconds
    )
    static = StaticFiles(directory=str(files("syncd.console") / "static"))
    app = Starlette(
        routes=[
            Route("/", console.overview, name="overview"),
            Route("/review", console.review, name="review"),
            Route("/review/{delivery_id:int}", console.settle, methods=["POST"]),
            Route("/dead", console.dead, name="dead"),
            Route("/dead/retry", console.retry, methods=["POST"]),
            Route("/messages", console.messages, name="messages"),
            Route("/message", console.message, name="message"),
            Route("/login", console.login_form, name="login"),
            Route("/login", console.login, methods=["POST"]),
            Route("/logout", console.logout, methods=["POST"]),
            Mount("/static", app=static, name="static"),
        ],
        middleware=[
            Middleware(_SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=session_key(settings.daemon.console_token),
                session_cookie=SESSION_COOKIE,
                max_age=SESSION_SECONDS,
                same_site="strict",
                https_only=False,  # loopback HTTP by default; a TLS proxy in front adds Secure
            ),
        ],
    )
    app.state.console = console
    return app

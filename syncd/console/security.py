"""Who may act in the console, and proof that a form was posted from the console's own page.

Reading needs nothing (like ``/metrics``, it is served on loopback by default, and people's
phones and emails are masked). Acting needs the operator token (``console_token_env``):
without one configured the console is read-only and every POST is refused. An operator signs
in once with the token; the session cookie is signed (itsdangerous, through Starlette's
SessionMiddleware) with a key derived from the token, HttpOnly and SameSite=Strict, and holds
a random CSRF token that every form must send back (the synchronizer-token pattern). A POST
whose ``Origin`` is not this server is refused before anything else. Scripts may instead send
``Authorization: Bearer <token>``: a browser never adds that header by itself, so it needs no
CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["Guard", "exposure_warnings", "session_key"]

SESSION_COOKIE = "syncd_console"
SESSION_SECONDS = 8 * 3600


def session_key(token: str | None) -> str:
    """The cookie-signing key: derived from the token (replicas and restarts agree, a new
    token signs every operator out), random when there is no token (nobody can sign in)."""
    if not token:
        return secrets.token_urlsafe(32)
    return hmac.new(token.encode(), b"syncd-console-session", hashlib.sha256).hexdigest()


class Guard:
    def __init__(self, token: str | None) -> None:
        self._token = token

    @property
    def enabled(self) -> bool:
        """True when actions are possible at all (a token is configured)."""
        return bool(self._token)

    def check_token(self, given: str) -> bool:
        return bool(self._token) and hmac.compare_digest(
            given.encode(), (self._token or "").encode()
        )

    def signed_in(self, request: Request) -> bool:
        return bool(self._token) and bool(request.session.get("operator"))

    def sign_in(self, request: Request) -> None:
        request.session.clear()
        request.session["operator"] = True
        request.session["csrf"] = secrets.token_urlsafe(32)

    def csrf_token(self, request: Request) -> str:
        return str(request.session.get("csrf", "")) if self.signed_in(request) else ""

    def same_origin(self, request: Request) -> bool:
        """A POST from another site carries its own Origin (browsers always send one on a
        cross-site POST); a missing Origin is a non-browser client."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        host = request.headers.get("host", "")
        return origin != "null" and urlsplit(origin).netloc == host

    def refuse(self, request: Request, form: Mapping[str, Any]) -> str | None:
        """Why this POST may not act, or None when it may."""
        if not self._token:
            return "The console is read-only: no operator token is configured."
        if not self.same_origin(request):
            return "Refused: the form was not posted from this console."
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            if self.check_token(bearer[7:].strip()):
                return None
            return "Refused: wrong operator token."
        if not self.signed_in(request):
            return "Refused: sign in with the operator token first."
        sent = str(form.get("csrf", ""))
        if not sent or not hmac.compare_digest(sent.encode(), self.csrf_token(request).encode()):
            return "Refused: the form has expired or did not come from this console."
        return None


def exposure_warnings(health_address: str, token: str | None) -> list[str]:
    """``syncd check``'s warning: the console (on the health address) reachable beyond this
    machine with no operator token. Reading stays open there, actions are off; a token at
    least proves who may act, so set one (and put TLS in front) before binding wider."""
    if not health_address or token:
        return []
    host = health_address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return []
    try:
        if ipaddress.ip_address(host).is_loopback:
            return []
    except ValueError:
        pass  # a host name: assume it resolves beyond loopback
    return [
        f"health_address {health_address} serves the console beyond loopback without an "
        "operator token: set console_token_env in [syncd], or bind 127.0.0.1"
    ]

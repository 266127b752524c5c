"""Logging in, one function per flow, answering ``(session_id, instance host)``.

simple-salesforce's own login helpers do the wire work (SOAP body, token POST, error parsing);
we pick the URL. The library hard-codes ``https://<domain>.salesforce.com`` for token logins,
which cannot name an emulator or a My Domain given as a full host, so the token endpoint is
built here from ``instance_url``/``domain`` and handed to its ``token_login``.

We log in ourselves and give the client a bare session id on purpose: simple-salesforce's
built-in refresh retries an expired session up to three times, silently; syncd wants exactly
one re-login and then a loud :class:`~syncd.errors.AuthError`.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import jwt
import requests
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.login import SalesforceLogin, token_login

from syncd.plugin import AuthError, ConfigError, RetriableError
from syncd_salesforce.options import SalesforceOptions

__all__ = ["login"]

_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def login(options: SalesforceOptions, session: requests.Session, *, where: str) -> tuple[str, str]:
    """Log in with the configured flow. Raises AuthError (refused) or RetriableError."""
    try:
        if options.auth == "session":
            return str(options.session_id), urlsplit(str(options.instance_url)).netloc
        if options.auth == "password":
            return _password(options, session)
        if options.auth == "client_credentials":
            return _client_credentials(options, session)
        return _jwt_bearer(options, session)
    except SalesforceAuthenticationFailed as exc:
        # The helpers report a 5xx (or a 429) as an authentication failure with the HTTP
        # status as code: that is an outage, not a refusal.
        if isinstance(exc.code, int) and (exc.code >= 500 or exc.code == 429):
            raise RetriableError(f"login answered HTTP {exc.code}") from exc
        raise AuthError(f"login refused ({exc.code}): {exc.auth_message}", where=where) from exc
    except requests.RequestException as exc:
        raise RetriableError(f"login failed: {type(exc).__name__}") from exc
    except (AttributeError, KeyError, TypeError) as exc:  # a token answer of an unexpected shape
        raise RetriableError(f"unexpected login answer: {exc!r}") from exc


def _password(options: SalesforceOptions, session: requests.Session) -> tuple[str, str]:
    session_id, instance = SalesforceLogin(
        username=options.username,
        password=options.password,
        security_token=options.security_token,
        sf_version=options.api_version,
        session=session,
        domain=options.domain,
        # The library's own escape hatch for a non-standard login host (scratch orgs).
        scratch_url=options.instance_url,
    )
    return str(session_id), str(instance)


def _client_credentials(options: SalesforceOptions, session: requests.Session) -> tuple[str, str]:
    credentials = f"{options.consumer_key}:{options.consumer_secret}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(credentials).decode()}
    session_id, instance = token_login(
        f"{options.login_base}/services/oauth2/token",
        {"grant_type": "client_credentials"},
        options.domain,
        str(options.consumer_key),
        headers,
        None,
        session,
    )
    return str(session_id), str(instance)


def _jwt_bearer(options: SalesforceOptions, session: requests.Session) -> tuple[str, str]:
    audience = (
        "https://test.salesforce.com"
        if options.domain == "test"
        else "https://login.salesforce.com"
    )
    claims = {
        "iss": options.consumer_key,
        "sub": options.username,
        "aud": audience,
        "exp": int((datetime.now(UTC) + timedelta(minutes=3)).timestamp()),
    }
    try:
        assertion = jwt.encode(claims, str(options.privatekey), algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"cannot sign with this key: {exc}", key="privatekey_file") from exc
    session_id, instance = token_login(
        f"{options.login_base}/services/oauth2/token",
        {"grant_type": _JWT_BEARER, "assertion": assertion},
        options.domain,
        str(options.consumer_key),
        None,
        None,
        session,
    )
    return str(session_id), str(instance)

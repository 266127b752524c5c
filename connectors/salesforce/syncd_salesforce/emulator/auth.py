"""Logins and sessions: SOAP ``login()``, the OAuth token grants, session expiry.

Sources: Salesforce Help article 005132110, "Platform SOAP API login() Retirement" (``login()``
only below API 65.0, and disabled by default in new orgs); "OAuth 2.0 Client Credentials Flow
for Server-to-Server Integration", "OAuth 2.0 Username-Password Flow" and "OAuth 2.0 JWT Bearer
Flow for Server-to-Server Integration" (the token endpoint's grants, answers and errors); REST
API Developer Guide, "Status Codes and Error Responses" (401 ``INVALID_SESSION_ID``).
"""

from __future__ import annotations

import base64
import html
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

import jwt

from syncd.sandbox.http import Request, Response, json_response

from .records import OrgRecords
from .schema import ORG_ID, USER_ID

__all__ = ["SOAP_LOGIN_VERSIONS", "Logins"]

# SOAP login() exists only up to API 64.0 (Salesforce help article 005132110).
SOAP_LOGIN_VERSIONS = tuple(f"{v}.0" for v in range(31, 65))


class Logins(OrgRecords):
    """``POST services/Soap/u/<ver>`` and ``POST services/oauth2/token``; valid sessions."""

    username: str
    password: str
    security_token: str
    consumer_key: str
    consumer_secret: str
    # The certificate (or public key) PEM uploaded to the connected app for JWT bearer.
    jwt_certificate: bytes | None
    # False: an org where SOAP login() is disabled (the default for new orgs).
    soap_login_enabled: bool
    session_ttl: float | None
    _sessions: dict[str, float]

    def _session_valid(self, token: str) -> bool:
        """Whether ``token`` is a session this org issued and has not expired."""
        with self.lock:
            issued = self._sessions.get(token)
        if issued is None:
            return False
        return self.session_ttl is None or self._now() - issued < self.session_ttl

    def issue_session(self) -> str:
        """A valid session id, as an admin or another tool would hand one to syncd."""
        return self._new_session()

    def expire_sessions(self) -> None:
        """Invalidate every session now, as an admin's "log out all users" would."""
        with self.lock:
            self._sessions.clear()

    def _new_session(self) -> str:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(24)}"
        with self.lock:
            self._sessions[token] = self._now()
        return token

    def _soap_fault(self, code: str, message: str) -> Response:
        fault = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
            ' xmlns:sf="urn:fault.partner.soap.sforce.com"'
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
            f"<soapenv:Fault><faultcode>sf:{code}</faultcode>"
            f"<faultstring>{code}: {html.escape(message)}</faultstring>"
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
        )
        return Response(500, fault.encode(), {"Content-Type": "text/xml;charset=UTF-8"})

    def _soap_login(self, request: Request) -> Response:
        # Salesforce help article 005132110: login() is not available from API 65.0 on, and
        # is disabled by default in new orgs.
        if request.params.get("ver") not in SOAP_LOGIN_VERSIONS:
            return self._soap_fault(
                "UNSUPPORTED_API_VERSION",
                f"login() is not available in API version {request.params.get('ver')}",
            )
        if not self.soap_login_enabled:
            return self._soap_fault(
                "INVALID_OPERATION", "SOAP API login() is disabled by default in this org"
            )
        body = request.body.decode("utf-8", "replace")

        def element(name: str) -> str:
            match = re.search(rf"<(?:[\w-]+:)?{name}>(.*?)</(?:[\w-]+:)?{name}>", body, re.DOTALL)
            return html.unescape(match.group(1)) if match else ""

        username, password = element("username"), element("password")
        if username != self.username or password != self.password + self.security_token:
            fault = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
                ' xmlns:sf="urn:fault.partner.soap.sforce.com"'
                ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
                "<soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode>"
                "<faultstring>INVALID_LOGIN: Invalid username, password, security token; or user"
                ' locked out.</faultstring><detail><sf:LoginFault xsi:type="sf:LoginFault">'
                "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>Invalid"
                " username, password, security token; or user locked out.</sf:exceptionMessage>"
                "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
            )
            return Response(500, fault.encode(), {"Content-Type": "text/xml;charset=UTF-8"})
        version = request.params.get("ver", "59.0")
        server = f"{self.base_url}/services/Soap/u/{version}/{ORG_ID[:15]}"
        answer = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
            ' xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{self.base_url}/services/Soap/m/{version}/{ORG_ID[:15]}"
            "</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
            f"<serverUrl>{server}</serverUrl><sessionId>{self._new_session()}</sessionId>"
            f"<userId>{USER_ID}</userId><userInfo><organizationId>{ORG_ID}</organizationId>"
            f"<userName>{html.escape(self.username)}</userName></userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(200, answer.encode(), {"Content-Type": "text/xml;charset=UTF-8"})

    def _oauth_token(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type", "")
        client = (form.get("client_id"), form.get("client_secret"))
        basic = (request.header("Authorization") or "").removeprefix("Basic ").strip()
        if basic:
            try:
                key, _, secret = base64.b64decode(basic).decode().partition(":")
                client = (key, secret)
            except ValueError:
                client = (None, None)
        good_client = client == (self.consumer_key, self.consumer_secret)
        if grant == "client_credentials":
            ok, error = good_client, "invalid_client"
        elif grant == "password":
            password_ok = form.get("password") in (
                self.password,
                self.password + self.security_token,
            )
            ok, error = (
                good_client and form.get("username") == self.username and password_ok,
                "invalid_grant",
            )
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            ok, error = self._jwt_ok(form.get("assertion", "")), "invalid_grant"
        else:
            return json_response(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
                400,
            )
        if not ok:
            description = (
                "invalid client credentials"
                if error == "invalid_client"
                else "authentication failure"
            )
            return json_response({"error": error, "error_description": description}, 400)
        return json_response(
            {
                "access_token": self._new_session(),
                "instance_url": self.base_url,
                "id": f"{self.base_url}/id/{ORG_ID}/{USER_ID}",
                "token_type": "Bearer",
                "issued_at": str(int(time.time() * 1000)),
                "signature": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        )

    def _jwt_ok(self, assertion: str) -> bool:
        """OAuth 2.0 JWT Bearer Flow for Server-to-Server Integration (Salesforce Help): an
        RS256 assertion signed with the key whose certificate the connected app holds, ``iss``
        the consumer key, ``sub`` the username, ``aud`` login/test.salesforce.com or the My
        Domain URL, ``exp`` within three minutes. No certificate configured: every assertion
        is refused (the less forgiving choice)."""
        if self.jwt_certificate is None:
            return False
        key: Any = self.jwt_certificate
        if b"BEGIN CERTIFICATE" in self.jwt_certificate:
            from cryptography import x509

            key = x509.load_pem_x509_certificate(self.jwt_certificate).public_key()
        audiences = ["https://login.salesforce.com", "https://test.salesforce.com", self.base_url]
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=audiences,
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.PyJWTError:
            return False
        fresh = float(claims["exp"]) <= time.time() + 3 * 60 + 30  # 30 s of clock skew
        return fresh and claims["iss"] == self.consumer_key and claims["sub"] == self.username

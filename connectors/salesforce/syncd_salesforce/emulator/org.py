"""The emulated org: its options, what tests seed and read, the routes and their guards.

See the package docstring for what it models and the documents it follows. The org's parts,
one concern a module: ``schema`` (objects and fields), ``records`` (data, indexes, rollback),
``soql`` and ``search`` (reading), ``writes`` (saving a record, duplicate rules), ``composite``
(composite requests and sObject Collections), ``auth`` (logins and sessions), ``users``
(``User`` and ``OwnerId``); ``query`` parses SOQL and SOSL.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Unpack
from urllib.parse import urlencode

from syncd.sandbox.crm import ContactSeed, StoredActivity, StoredContact
from syncd.sandbox.http import Request, Response, json_response

from . import users as salesforce_users
from .auth import Logins
from .composite import Composite
from .schema import API_VERSIONS, CUSTOM_FIELDS, Field, default_schema
from .search import Sosl
from .soql import QUERY_PAGE_SIZE

__all__ = ["SalesforceEmulator"]

# "Limits on the REST API": URI plus headers at most 16,384 bytes (414 / 431 past it).
MAX_URI_BYTES = 16_384

# "API Request Limits and Allocations" (Salesforce Developer Limits and Allocations Quick
# Reference): at most 25 concurrent requests lasting 20 s or longer in a production org or
# sandbox (5 in Developer Edition and trial orgs), refused with REQUEST_LIMIT_EXCEEDED; no
# limit on concurrent requests shorter than 20 s. The total allocation per rolling 24 hours is
# ``daily_limit`` (Enterprise Edition: 100,000 plus 1,000 per user license).
CONCURRENT_LONG_REQUESTS = 25
LONG_REQUEST_SECONDS = 20.0

WRITE_ENDPOINTS = frozenset(
    {
        "collections.create",
        "collections.update",
        "collections.upsert",
        "sobject.create",
        "sobject.update",
        "sobject.delete",
    }
)

_DATA = r"/services/data/v(?P<ver>\d+\.\d)"


class SalesforceEmulator(Logins, Composite, Sosl):
    name = "salesforce"
    # An emulated ``latency`` (syncd.sandbox.http.Emulator) is waited twice by a SOSL search
    # (an index lookup across objects) and a composite request (its subrequests run one after
    # another): our choice, not a Salesforce figure.
    latency_factors = {"search": 2.0, "composite": 2.0}

    def __init__(
        self,
        *,
        username: str = "sandbox@example.com",
        password: str = "sandbox-password",  # noqa: S107 - public sandbox credentials
        security_token: str = "sandbox-security-token",  # noqa: S107
        consumer_key: str = "sandbox-key",
        consumer_secret: str = "sandbox-secret",  # noqa: S107
        search_lag: float = 0.0,
        duplicate_rule: bool = False,
        session_ttl: float | None = None,
        daily_limit: int = 1_000_000,
        concurrent_long_requests: int = CONCURRENT_LONG_REQUESTS,
        long_request_seconds: float = LONG_REQUEST_SECONDS,
        query_page_size: int = QUERY_PAGE_SIZE,
        jwt_certificate: bytes | None = None,
        custom_fields: bool = True,
        can_customize: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        schema = default_schema()
        if not custom_fields:  # a fresh org: the fields syncd needs are not there yet
            for sobject, name in CUSTOM_FIELDS:
                del schema[sobject][name]
        self._init_records(schema, daily_limit)
        # auth.Logins
        self.username = username
        self.password = password
        self.security_token = security_token
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.jwt_certificate = jwt_certificate
        self.soap_login_enabled = True
        self.session_ttl = session_ttl
        self._sessions = {}
        # soql.Soql and search.Sosl
        self.query_page_size = query_page_size
        self._cursors = {}
        self.search_lag = search_lag
        # writes.Writes
        self.duplicate_rule = duplicate_rule
        self.duplicate_action = "allow"
        self.account_name_rule = False
        self.duplicate_details = True
        self.write_counts = Counter()
        self._local = threading.local()
        # composite.Composite
        self.composite_counts = Counter()
        self._inner_routes = []
        # The guards in front of every data API route (``_api``).
        self.concurrent_long_requests = concurrent_long_requests
        self.long_request_seconds = long_request_seconds
        # The integration user's "Customize Application" permission (Tooling API writes).
        self.can_customize = can_customize
        salesforce_users.install(self)  # User, OwnerId, the sandbox team
        self._routes_setup()

    def connector_options(self) -> dict[str, Any]:
        return {
            "auth": "client_credentials",
            "consumer_key": self.consumer_key,
            "consumer_secret": self.consumer_secret,
            "instance_url": self.base_url,
            "backoff": 0.05,
        }

    def seed_company(self, name: str) -> str:
        return self._seed("Account", {"Name": name})

    def seed_contact(self, **fields: Unpack[ContactSeed]) -> str:
        """A Contact stored exactly as given (an import, not a typed entry: no reformatting),
        visible to search at once. ``company`` without ``company_id`` seeds the Account."""
        company, company_id = fields.get("company"), fields.get("company_id")
        if company and company_id is None:
            company_id = self.seed_company(company)
        values: dict[str, Any] = {"LastName": fields.get("last_name") or "Unknown"}
        given: Mapping[str, Any] = fields
        for name, key in (("FirstName", "first_name"), ("Email", "email"), ("Phone", "phone")):
            if given.get(key):
                values[name] = given[key]
        if company_id:
            values["AccountId"] = company_id
        return self._seed("Contact", values)

    def seed_user(self, first_name: str, last_name: str, email: str, active: bool = True) -> str:
        return salesforce_users.seed_user(self, first_name, last_name, email, active)

    def seed_owner(self, record_id: str, owner_id: str | None) -> None:
        """Set a record's owner directly (no request counted)."""
        with self.lock:
            record = self._records[record_id]
            record.fields["OwnerId"] = owner_id
            if record.versions:  # as if it had always been so: search sees it at once too
                record.versions[-1] = (record.versions[-1][0], dict(record.fields))
            self._store(record)

    def owner_ids(self) -> dict[str, str]:
        """User id by email, inactive users included (tests)."""
        with self.lock:
            return {str(r.fields.get("Email")): r.id for r in self._live("User")}

    def set_user_active(self, owner_id: str, active: bool) -> None:
        with self.lock:
            user = self._records[owner_id]
            user.fields["IsActive"] = active
            self._store(user)

    def owner_of(self, record_id: str) -> str | None:
        found = self.record(record_id)
        return (found.get("OwnerId") or None) if found else None

    def seed_lead(self, **values: Any) -> str:
        values.setdefault("LastName", "Unknown")
        values.setdefault("Company", "Unknown")
        return self._seed("Lead", values)

    def delete_record(self, record_id: str) -> None:
        with self.lock:
            record = self._find(record_id)
            if record is not None:
                self._mark_deleted(record)

    def contacts(self) -> list[StoredContact]:
        with self.lock:
            out = []
            for record in self._live("Contact", "Lead"):
                f = record.fields
                if record.sobject == "Contact":
                    account = self._find(str(f.get("AccountId") or ""))
                    company = str(account.fields.get("Name") or "") if account else ""
                    company_id = f.get("AccountId")
                else:
                    company, company_id = str(f.get("Company") or ""), None
                out.append(
                    StoredContact(
                        id=record.id,
                        kind=record.sobject.lower(),
                        first_name=str(f.get("FirstName") or ""),
                        last_name=str(f.get("LastName") or ""),
                        email=str(f.get("Email") or ""),
                        phone=str(f.get("Phone") or ""),
                        company=company,
                        company_id=company_id,
                    )
                )
            return out

    def activities(self) -> list[StoredActivity]:
        with self.lock:
            out = []
            for record in self._live("Task"):
                f = record.fields
                subject = str(f.get("Subject") or "")
                marker = _marker(subject) or next(
                    (
                        str(v)
                        for k, v in f.items()
                        if k.endswith("__c") and isinstance(v, str) and v.startswith("syncd:")
                    ),
                    None,
                )
                out.append(
                    StoredActivity(
                        id=record.id,
                        record_id=f.get("WhoId"),
                        marker=marker,
                        subject=subject,
                        body=str(f.get("Description") or ""),
                        high_priority=f.get("Priority") == "High",
                    )
                )
            return out

    def write_requests(self) -> int:
        with self.lock:
            return sum(self.write_counts.values())

    def reset_counts(self) -> None:
        super().reset_counts()
        with self.lock:
            self.write_counts.clear()
            self.composite_counts.clear()

    def operations(self) -> Counter[str]:
        """Operations by endpoint, whether sent alone or inside a composite request."""
        with self.lock:
            alone = Counter({k: v for k, v in self.counts.items() if k != "composite"})
            return alone + self.composite_counts

    def record(self, record_id: str) -> dict[str, Any] | None:
        """The stored fields of a record (deleted or not), for assertions."""
        with self.lock:
            found = self._find(record_id, include_deleted=True)
            return None if found is None else {"Id": found.id, **found.fields}

    def records(self, sobject: str) -> list[dict[str, Any]]:
        with self.lock:
            return [{"Id": r.id, **r.fields} for r in self._live(sobject)]

    def add_field(self, sobject: str, name: str, *, external_id: bool = False) -> None:
        with self.lock:
            self.schema[sobject][name] = Field(name, external_id=external_id)

    def _routes_setup(self) -> None:
        self.route("POST", r"/services/Soap/u/(?P<ver>[\d.]+)(?:/.*)?", "login", self._soap_login)
        self.route("POST", r"/services/oauth2/token", "login", self._oauth_token)
        self.route("GET", r"/services/data/?", "versions", self._versions)
        api = self._api_route
        api("GET", r"/?", "resources", self._resources)
        api("GET", r"/limits/?", "limits", self._limits)
        api("GET", r"/query/?", "query", self._query)
        api("GET", r"/query/(?P<locator>01g\w+)-\d+/?", "query", self._query_more)
        api("GET", r"/search/?", "search", self._search)
        api("GET", r"/sobjects/?", "describe", self._describe_global)
        sobject = r"/sobjects/(?P<type>\w+)"
        api("GET", sobject + r"/describe/?", "describe", self._describe)
        api("POST", sobject + r"/?", "sobject.create", self._sobject_create)
        api("GET", sobject + r"/(?P<id>\w+)/?", "sobject.get", self._sobject_get)
        api("PATCH", sobject + r"/(?P<id>\w+)/?", "sobject.update", self._sobject_update)
        api("DELETE", sobject + r"/(?P<id>\w+)/?", "sobject.delete", self._sobject_delete)
        collections = r"/composite/sobjects"
        api("POST", collections + r"/?", "collections.create", self._coll_create)
        api("PATCH", collections + r"/?", "collections.update", self._coll_update)
        upsert = collections + r"/(?P<type>\w+)/(?P<field>\w+)/?"
        api("PATCH", upsert, "collections.upsert", self._coll_upsert)
        api("POST", r"/composite/?", "composite", self._composite)
        api("POST", r"/tooling/sobjects/CustomField/?", "tooling.create", self._tooling_field)

    def _api_route(
        self, method: str, pattern: str, endpoint: str, handler: Callable[[Request], Response]
    ) -> None:
        """A data API route: guarded over HTTP, and reachable from a composite request."""
        self.route(method, _DATA + pattern, endpoint, self._api(handler))
        self._inner_routes.append((method, re.compile(_DATA + pattern), endpoint, handler))

    def _api(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """Session check, concurrency and daily limits, API version, then the handler."""

        def guarded(request: Request) -> Response:
            too_long = self._too_long(request)
            if too_long is not None:
                return too_long
            token = (request.header("Authorization") or "").removeprefix("Bearer ").strip()
            if not self._session_valid(token):
                return self._answer(
                    [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
                    401,
                )
            # Other requests running 20 s or more (this one has run only its ``latency``).
            long_running = self.running_longer_than(self.long_request_seconds)
            if long_running >= self.concurrent_long_requests:
                self.refuse("ConcurrentPerOrgLongTxn")
                return self._answer(
                    [
                        {
                            "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                            "errorCode": "REQUEST_LIMIT_EXCEEDED",
                        }
                    ],
                    403,
                )
            with self.lock:
                self.api_used += 1
                over = self.api_used > self.daily_limit
            self._local.duplicate_header = request.header("Sforce-Duplicate-Rule-Header")
            if over:
                self.refuse("TotalRequests")
                return self._answer(
                    [
                        {
                            "message": "TotalRequests Limit exceeded.",
                            "errorCode": "REQUEST_LIMIT_EXCEEDED",
                        }
                    ],
                    403,
                )
            return self._run(handler, request)

        return guarded

    def _too_long(self, request: Request) -> Response | None:
        """REST API Developer Guide, "Limits": the URI and the headers may hold 16,384 bytes;
        past it the answer is 414 (URI) or 431 (headers). The URI is measured as sent (the
        path plus the query string re-encoded)."""
        query = urlencode([(k, v) for k, vs in request.query.items() for v in vs])
        uri = len(request.path.encode()) + (len(query) + 1 if query else 0)
        if uri > MAX_URI_BYTES:
            return self._answer([{"message": "URI Too Long", "errorCode": "URI_TOO_LONG"}], 414)
        headers = sum(len(k) + len(v) + 4 for k, v in request.headers.items())
        if uri + headers > MAX_URI_BYTES:
            return self._answer(
                [{"message": "Request Header Fields Too Large", "errorCode": "HEADERS_TOO_LARGE"}],
                431,
            )
        return None

    def fault_response(self, fault: str, request: Request) -> Response:
        # The "429" fault is Salesforce's concurrent-request limit, which it answers with 403
        # REQUEST_LIMIT_EXCEEDED ("API Request Limits and Allocations"), never 429.
        status = {"outage": 503, "429": 403, "500": 500}[fault]
        with self.lock:
            limit = self._limit_header()
        if "/services/Soap/" in request.path or "/oauth2/" in request.path:
            # Login endpoints fail like the edge does: a bare text page, not a SOAP/OAuth
            # body; the edge throttles with a 429 (the API request limits do not apply).
            status = 429 if fault == "429" else status
            headers = {"Retry-After": f"{self.faults.retry_after:g}", **limit}
            return Response(
                status, b"Service Unavailable", {**headers, "Content-Type": "text/plain"}
            )
        headers = {"Retry-After": f"{self.faults.retry_after:g}"} if status == 503 else {}
        headers.update(limit)
        code, message = {
            503: ("SERVER_UNAVAILABLE", "Server temporarily unavailable"),
            403: ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
            500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId"),
        }[status]
        return json_response(
            [{"message": message, "errorCode": code}], status=status, headers=headers
        )

    def _versions(self, request: Request) -> Response:
        return self._answer(
            [{"label": f"v{v}", "url": f"/services/data/v{v}", "version": v} for v in API_VERSIONS]
        )

    def _resources(self, request: Request) -> Response:
        base = f"/services/data/v{request.params['ver']}"
        names = ("sobjects", "query", "queryAll", "search", "limits", "composite")
        return self._answer({name: f"{base}/{name}" for name in names})

    def _limits(self, request: Request) -> Response:
        with self.lock:
            remaining = max(0, self.daily_limit - self.api_used)
        return self._answer({"DailyApiRequests": {"Max": self.daily_limit, "Remaining": remaining}})

    def _describe_global(self, request: Request) -> Response:
        return self._answer({"sobjects": [{"name": n, "queryable": True} for n in self.schema]})

    def _describe(self, request: Request) -> Response:
        sobject = request.params["type"]
        fields = self.schema.get(sobject)
        if fields is None:
            return self._not_found()
        # REST API Developer Guide, sObject Describe: object-level permissions of the user.
        return self._answer(
            {
                "name": sobject,
                "createable": True,
                "updateable": True,
                "queryable": True,
                "fields": [f.describe() for f in fields.values()],
            }
        )

    def _tooling_field(self, request: Request) -> Response:
        """Tooling API, ``CustomField`` create: ``{"FullName": "Contact.X__c", "Metadata":
        {"type": "Text", "length": 255, "externalId": true, "label": ...}}``. Needs the
        "Customize Application" permission; a field that exists is a DUPLICATE_VALUE."""
        if not self.can_customize:
            return self._answer(
                [
                    {
                        "message": "insufficient access rights on entity: CustomField",
                        "errorCode": "INSUFFICIENT_ACCESS",
                    }
                ],
                403,
            )
        body = request.json() or {}
        full_name = str(body.get("FullName") or "")
        metadata = body.get("Metadata") or {}
        sobject, _, name = full_name.partition(".")
        if sobject not in self.schema or not re.fullmatch(r"[A-Za-z]\w*__c", name):
            return self._answer(
                [{"message": f"invalid FullName: {full_name}", "errorCode": "INVALID_FIELD"}], 400
            )
        kind = str(metadata.get("type") or "")
        length = metadata.get("length")
        if kind != "Text" or not isinstance(length, int) or not 1 <= length <= 255:
            return self._answer(
                [
                    {
                        "message": "Text fields need a length of 1-255",
                        "errorCode": "FIELD_INTEGRITY_EXCEPTION",
                    }
                ],
                400,
            )
        with self.lock:
            if name in self.schema[sobject]:
                return self._answer(
                    [
                        {
                            "message": f"duplicate value found: {full_name} already exists",
                            "errorCode": "DUPLICATE_DEVELOPER_NAME",
                        }
                    ],
                    400,
                )
            self.schema[sobject][name] = Field(
                name,
                length=length,
                external_id=bool(metadata.get("externalId")),
                sobject=sobject,
            )
            self._sequence += 1
            field_id = f"00N000{self._sequence:09d}AAA"
        return self._answer({"id": field_id, "success": True, "errors": [], "warnings": []}, 201)


def _marker(subject: str) -> str | None:
    start = subject.rfind(" [syncd:")
    if start < 0 or not subject.endswith("]"):
        return None
    return subject[start + 2 : -1]

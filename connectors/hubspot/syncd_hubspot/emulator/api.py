"""A HubSpot CRM emulator on loopback, for the real ``hubspot-api-client``.

It answers the endpoints syncd's connector uses, in HubSpot's shapes, and refuses what HubSpot
refuses where getting it wrong would hide a bug. Built from HubSpot's documentation, sharing
no code with ``connectors/hubspot`` or ``syncd/match``:

* search limits (developer changelog, "Expanded Filtering Capabilities", Aug 2024): at most 5
  filter groups, 10 filters a group, 25 filters in all; 200 results a page and 10,000 a query
  (CRM search guide, "Limitations"); 400 ``VALIDATION_ERROR`` otherwise. ``IN`` lists: HubSpot
  documents no cap; ``in_values_cap`` (100) is our own, the less forgiving choice;
* search *lags* writes (CRM search guide: "it may take a few moments for newly created or
  updated objects to appear"): ``search_lag`` seconds, 3 by default, so every test meets it;
  batch read and upsert are immediately consistent;
* batches of at most 100 inputs, validated as a whole (an unknown property, an association
  to a missing record refuses all of them); 207 multi-status for ids that do not exist and,
  on batch upsert, for inputs that fail on their own (a unique value another record holds);
  409 "Contact already exists. Existing ID: N" only on *create* (contacts API guide);
* unique-value properties (``hasUniqueValue``) only on contacts and companies here (developer
  changelog, "Unique Properties support for newly created Contact properties": companies,
  deals, tickets, custom objects and now contacts; never notes, calls or tasks): creating one
  on an activity object is refused with a 400, and so is a batch read by ``idProperty`` there;
* text values at most 65,536 characters (knowledge base, "Property field types in HubSpot":
  single- and multi-line text added through the CRM);
* archive (``DELETE``, ``batch/archive``): archived records leave reads, search and
  associations; ``archived=true`` lists and reads them (objects API guide, "Archive");
* ``hs_searchable_calculated_phone_number``: the number "without country code" (default
  contact properties); our own model below, see :func:`searchable_phone`;
* bearer-token auth (401 ``INVALID_AUTHENTICATION``), rolling rate limits per 10 s and for
  search per second, 429 bodies with ``policyName`` and, as documented, *no* ``Retry-After``
  (API usage guidelines, "Rate limits"); a switch for the DAILY limit. The private-app burst
  limit by tier is :data:`BURST_LIMITS` (``tier=``); refusals are counted in ``refused`` by
  policy name;
* an emulated ``latency`` on every answer (see :class:`syncd.sandbox.http.Emulator`); a search
  takes twice as long as other calls (``latency_factors``). That factor is our choice, not a
  HubSpot figure: a search queries an index and pages through it, where a batch call reads
  or writes records by id.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Unpack

from syncd.sandbox.crm import ContactSeed, StoredActivity, StoredContact
from syncd.sandbox.http import Emulator, Faults, Request, Response, json_response

from . import owners as hubspot_owners
from .schema import (
    CALCULATED,
    DEFAULT_PROPERTIES,
    DEFAULT_RETURNED,
    READ_ONLY,
    UNIQUE,
)

__all__ = ["HubSpotEmulator"]

OBJECT_TYPES = ("contacts", "companies", "notes", "calls", "tasks")
_TYPE_IDS = {
    "contacts": "0-1",
    "companies": "0-2",
    "notes": "0-46",
    "calls": "0-48",
    "tasks": "0-27",
}
_SINGULAR = {
    "contacts": "CONTACT",
    "companies": "COMPANY",
    "notes": "NOTE",
    "calls": "CALL",
    "tasks": "TASK",
}
_ACTIVITY_TYPES = ("notes", "calls", "tasks")

# HUBSPOT_DEFINED association type id -> (from, to), with the inverse type id.
_ASSOCIATIONS: dict[int, tuple[str, str, int]] = {
    1: ("contacts", "companies", 2),
    2: ("companies", "contacts", 1),
    279: ("contacts", "companies", 280),
    280: ("companies", "contacts", 279),
    202: ("notes", "contacts", 201),
    201: ("contacts", "notes", 202),
    190: ("notes", "companies", 189),
    189: ("companies", "notes", 190),
    194: ("calls", "contacts", 193),
    193: ("contacts", "calls", 194),
    182: ("calls", "companies", 181),
    181: ("companies", "calls", 182),
    204: ("tasks", "contacts", 203),
    203: ("contacts", "tasks", 204),
    192: ("tasks", "companies", 191),
    191: ("companies", "tasks", 192),
}
_PRIMARY_COMPANY = 1
# Private apps' burst limit (requests per rolling 10 s) by account tier: API usage guidelines,
# "Rate limits", and the developer changelog "Increasing our API limits" (Professional and
# Enterprise 190, the API Limit Increase capacity pack 250, which does not stack).
BURST_LIMITS: dict[str, tuple[int, float]] = {
    "free": (100, 10.0),
    "starter": (100, 10.0),
    "professional": (190, 10.0),
    "enterprise": (190, 10.0),
    "api_limit_increase": (250, 10.0),
}
# CRM search: five requests a second per authentication token (API usage guidelines, "Rate
# limits"). The guidelines exempt no endpoint from the burst limit, so searches count there too.
SEARCH_LIMIT = (5, 1.0)
_WRITE_ENDPOINTS = frozenset(
    {"batch_create", "batch_update", "batch_upsert", "batch_archive", "create", "update"}
)

MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25
MAX_PAGE = 200
MAX_RESULTS = 10_000
MAX_BATCH = 100
# Knowledge base, "Property field types in HubSpot": text added through the CRM.
MAX_TEXT = 65_536
# Objects that may hold unique-value properties here (see the module docstring).
_UNIQUE_ALLOWED = frozenset({"contacts", "companies"})
_OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)
_TOKEN_SPLIT = re.compile(r"[\s<>]+")
_EDGE_PUNCTUATION = ".,;:!?()[]{}\"'"
_MARKER_IN_TEXT = re.compile(r"syncd:[^\s<>\"']+")


def _default_group(object_type: str) -> str:
    return f"{object_type[:-1]}information"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Refused(Exception):
    """Raised inside a handler to answer with a HubSpot error body."""

    def __init__(
        self,
        status: int,
        message: str,
        category: str = "VALIDATION_ERROR",
        context: Mapping[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.category, self.context = status, message, category, context


def _error_body(
    message: str, category: str, context: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if context:
        body["context"] = dict(context)
    return body


@dataclass
class _Record:
    id: str
    type: str
    props: dict[str, str]
    created_at: str
    updated_at: str
    # (searchable from, snapshot): search answers from the newest snapshot already visible.
    index: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    archived_at: str | None = None

    def searchable(self, now: float) -> dict[str, str] | None:
        visible = [snap for at, snap in self.index if at <= now]
        return visible[-1] if visible else None

    def as_json(self, properties: Iterable[str]) -> dict[str, Any]:
        return {
            "id": self.id,
            "properties": {name: self.props.get(name) for name in properties},
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": self.archived_at is not None,
            **({"archivedAt": self.archived_at} if self.archived_at else {}),
        }


@dataclass(frozen=True)
class _PropertyDef:
    name: str
    unique: bool = False
    calculated: bool = False
    group: str = ""
    label: str = ""

    def as_json(self, object_type: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name.replace("_", " ").title(),
            "description": "",
            "options": [],
            "type": "string",
            "fieldType": "text",
            "groupName": self.group or _default_group(object_type),
            "hasUniqueValue": self.unique,
            "calculated": self.calculated,
            "hidden": False,
            "formField": False,
            "modificationMetadata": {
                "archivable": True,
                "readOnlyDefinition": False,
                "readOnlyValue": self.calculated,
            },
        }


class _Window:
    """Server-side sliding window: at most ``calls`` admitted requests per ``period``."""

    def __init__(self, calls: int, period: float) -> None:
        self.calls, self.period = calls, period
        self._sent: deque[float] = deque()

    def admit(self, now: float) -> float:
        """0.0 when admitted (and counted), else seconds until a slot frees up."""
        while self._sent and self._sent[0] <= now - self.period:
            self._sent.popleft()
        if len(self._sent) >= self.calls:
            return self._sent[0] + self.period - now
        self._sent.append(now)
        return 0.0

    def remaining(self) -> int:
        return max(self.calls - len(self._sent), 0)


# ITU-T E.164 country calling codes of one and two digits; every other code has three.
_CC_ONE = frozenset({"1", "7"})
_CC_TWO = frozenset(
    {
        *("20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44"),
        *("45", "46", "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58"),
        *("60", "61", "62", "63", "64", "65", "66", "81", "82", "84", "86", "90", "91"),
        *("92", "93", "94", "95", "98"),
    }
)
_EXTENSION = re.compile(r"(?i)\s*(?:ext\.?|extension|x|#)\s*\d+\s*$")


def searchable_phone(text: str) -> tuple[str, str] | None:
    """(searchable digits, E.164 or "") for a stored phone, by our reading of HubSpot's docs.

    HubSpot documents ``hs_searchable_calculated_phone_number`` only as the phone "without
    country code". Where it is silent we choose the less forgiving reading:

    * a country code is recognised only after a leading ``+`` (ITU-T E.164 code lengths);
      ``001 415...`` or ``1 415...`` keep every digit, so they do not meet ``4153927461``;
    * an extension (``ext 12``, ``x12``, ``#12``) at the end is dropped; other text is not
      read as digits (``1-800-FLOWERS`` keeps only the digits it has);
    * fewer than 5 digits calculate nothing; no region or default country is assumed, so
      ``hs_calculated_phone_number`` (E.164) exists only for numbers written with ``+``.
    """
    if not text or not text.strip():
        return None
    bare = _EXTENSION.sub("", text.strip())
    digits = "".join(ch for ch in bare if ch.isascii() and ch.isdigit())
    if len(digits) < 5:
        return None
    if not bare.startswith("+"):
        return digits, ""
    for size, codes in ((1, _CC_ONE), (2, _CC_TWO)):
        if digits[:size] in codes:
            return digits[size:], f"+{digits}"
    return digits[3:], f"+{digits}"


class _ContactSeed(ContactSeed, total=False):
    mobile_phone: str


# ``seed_contact``'s keywords -> the contact properties they fill.
_SEED_PROPERTIES = {
    "first_name": "firstname",
    "last_name": "lastname",
    "email": "email",
    "phone": "phone",
    "mobile_phone": "mobilephone",
    "company": "company",
}


class HubSpotEmulator(Emulator):
    """HubSpot's CRM v3/v4 API, enough of it for syncd. See the module docstring."""

    name = "hubspot"
    owner_book: hubspot_owners.OwnerBook  # GET /crm/v3/owners (syncd_hubspot.emulator.owners)
    latency_factors = {"*.search": 2.0}  # see the module docstring

    def __init__(
        self,
        *,
        token: str = "sandbox-hubspot-token",  # noqa: S107 - a fake credential for loopback
        search_lag: float = 3.0,
        rate_limit: tuple[int, float] | None = BURST_LIMITS["professional"],
        search_rate_limit: tuple[int, float] | None = SEARCH_LIMIT,
        tier: str | None = None,
        in_values_cap: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
        provisioned: bool = True,
        retry_after_header: bool = False,
    ) -> None:
        super().__init__(host=host, port=port)
        self.token = token
        # False: a fresh portal without the properties ``syncd setup`` creates.
        self.provisioned = provisioned
        # HubSpot documents its 429 without Retry-After; a test may switch one on.
        self.retry_after_header = retry_after_header
        self.search_lag = search_lag
        self._initial_search_lag = search_lag
        self.in_values_cap = in_values_cap
        self.portal_id = 62515
        if tier is not None:  # the tier's documented burst limit, over ``rate_limit``
            rate_limit = BURST_LIMITS[tier]
        self._limits = (rate_limit, search_rate_limit)
        self._records: dict[str, _Record] = {}
        # from id -> {(to id, type id)}; both directions are stored.
        self._links: dict[str, set[tuple[str, int]]] = {}
        # (object type, unique property) -> {folded value: record id}
        self._unique: dict[tuple[str, str], dict[str, str]] = {}
        self._unique_of: dict[str, dict[tuple[str, str], str]] = {}  # the reverse
        self._properties: dict[str, dict[str, _PropertyDef]] = {}
        self._groups: dict[str, dict[str, str]] = {}  # object type -> group name -> label
        self._archived: dict[str, _Record] = {}
        # Called with (endpoint, answer) after a write request was carried out, before its
        # answer is sent; what it returns (if anything) is sent instead. Fault tests attack
        # there, the moment a write has landed but is not yet known: a lost or malformed
        # answer, a DAILY 429, a SIGKILL of the daemon.
        self.after_write: Callable[[str, Response], Response | None] | None = None
        self._by_type: dict[str, dict[str, _Record]] = {t: {} for t in OBJECT_TYPES}
        # Search narrows its candidates with postings: (kind, object type, property) -> term ->
        # ids of the records any of whose kept snapshots holds the term ("value": the folded
        # value EQ and IN compare; "token": a folded CONTAINS_TOKEN token). A superset of what
        # search may see under lag; the filters then test each candidate as before. Built on
        # the first search that can use them, kept in step by every write after that.
        self._postings: dict[tuple[str, str, str], dict[str, set[str]]] = {}
        self._posted: dict[str, dict[tuple[str, str, str], set[str]]] = {}  # id -> terms held
        self._full_scan = False  # tests: search by testing every record, as a reference
        self.reset()
        self._register_routes()

    def reset(self) -> None:
        """Forget every record, count, fault and limit state; keep the server running.

        Lets one started emulator serve many tests (starting and stopping one costs ~0.5 s).
        """
        rate_limit, search_rate_limit = self._limits
        with self.lock:
            self.search_lag = self._initial_search_lag
            self.daily_limit_reached = False  # set True to answer every request with a DAILY 429
            self.faults = Faults()
            self.reset_counts()
            self._general = _Window(*rate_limit) if rate_limit else None
            self._search = _Window(*search_rate_limit) if search_rate_limit else None
            self._records.clear()
            self._archived.clear()
            for by_id in self._by_type.values():
                by_id.clear()
            self._postings.clear()
            self._posted.clear()
            self._links.clear()
            self._unique.clear()
            self._unique_of.clear()
            self._next_id = 1001
            self._writes = 0
            self._properties.clear()
            self._groups = {
                t: {_default_group(t): f"{t[:-1].title()} information"} for t in OBJECT_TYPES
            }
            for object_type in OBJECT_TYPES:
                defs = {n: _PropertyDef(n) for n in DEFAULT_PROPERTIES[object_type]}
                defs.update(
                    {n: _PropertyDef(n, calculated=True) for n in CALCULATED.get(object_type, ())}
                )
                defs.update({n: _PropertyDef(n, calculated=True) for n in READ_ONLY})
                self._properties[object_type] = defs
            for object_type, names in UNIQUE.items():
                for n in names:
                    self._properties[object_type][n] = _PropertyDef(n, unique=True)
            # Setting a contact's primary company id links the two, as HubSpot does; a test
            # turns it read-only to see the connector fall back to the associations API.
            self.company_id_writable = True
            # The custom properties the connector's defaults expect, as ``syncd setup`` makes
            # them: the caller key unique on contacts, the marker *not* unique on activities.
            if self.provisioned:
                self.add_property("contacts", "syncd_key", unique=True)
                for object_type in _ACTIVITY_TYPES:
                    self.add_property(object_type, "syncd_marker")
            hubspot_owners.reset(self)

    # -- routes ----------------------------------------------------------------------------
    def _register_routes(self) -> None:
        for t in OBJECT_TYPES:
            base = f"/crm/v3/objects/{t}"
            self._add("POST", f"{base}/search", f"{t}.search", self._handle_search, t, search=True)
            self._add("POST", f"{base}/batch/read", f"{t}.batch_read", self._handle_batch_read, t)
            self._add(
                "POST", f"{base}/batch/create", f"{t}.batch_create", self._handle_batch_create, t
            )
            self._add(
                "POST", f"{base}/batch/update", f"{t}.batch_update", self._handle_batch_update, t
            )
            self._add(
                "POST", f"{base}/batch/upsert", f"{t}.batch_upsert", self._handle_batch_upsert, t
            )
            self._add(
                "POST", f"{base}/batch/archive", f"{t}.batch_archive", self._handle_batch_archive, t
            )
            self._add("GET", base, f"{t}.list", self._handle_list, t)
            self._add("DELETE", rf"{base}/(?P<id>[^/]+)", f"{t}.archive", self._handle_archive, t)
            self._add(
                "POST",
                f"/crm/v3/properties/{t}",
                "properties.create",
                self._handle_property_create,
                t,
            )
            self._add(
                "GET",
                rf"/crm/v3/properties/{t}/groups/(?P<name>[^/]+)",
                "groups.get",
                self._handle_group,
                t,
            )
            self._add(
                "POST",
                f"/crm/v3/properties/{t}/groups",
                "groups.create",
                self._handle_group_create,
                t,
            )
            self._add("GET", rf"{base}/(?P<id>[^/]+)", f"{t}.get", self._handle_get, t)
            self._add("PATCH", rf"{base}/(?P<id>[^/]+)", f"{t}.update", self._handle_patch, t)
            self._add(
                "GET",
                rf"/crm/v3/properties/{t}/(?P<name>[^/]+)",
                "properties.get",
                self._handle_property,
                t,
            )
        pair = r"/crm/v4/associations/(?P<from>[a-z_]+)/(?P<to>[a-z_]+)/batch"
        self._add(
            "POST", f"{pair}/create", "associations.batch_create", self._handle_assoc_create, ""
        )
        self._add("POST", f"{pair}/read", "associations.batch_read", self._handle_assoc_read, "")
        self._add("GET", "/account-info/v3/details", "account.details", self._handle_account, "")
        hubspot_owners.register(self)

    def _add(
        self,
        method: str,
        pattern: str,
        endpoint: str,
        handler: Callable[[str, Request, Any], Response],
        object_type: str,
        *,
        search: bool = False,
    ) -> None:
        writes = method in ("PATCH", "DELETE") or endpoint.split(".")[-1] in _WRITE_ENDPOINTS

        def wrapped(request: Request) -> Response:
            response = self._guard(request, object_type, handler, search=search)
            hook = self.after_write
            if writes and hook is not None and response.status < 300:
                return hook(endpoint, response) or response
            return response

        self.route(method, pattern, endpoint, wrapped)

    def _guard(
        self,
        request: Request,
        object_type: str,
        handler: Callable[[str, Request, Any], Response],
        *,
        search: bool,
    ) -> Response:
        """Auth, limits and JSON parsing in HubSpot's order, then the handler under the lock."""
        if request.header("Authorization") != f"Bearer {self.token}":
            return json_response(
                _error_body(
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "INVALID_AUTHENTICATION",
                ),
                status=401,
            )
        with self.lock:
            if self.daily_limit_reached:
                self.refuse("DAILY")
                return self._rate_limited("DAILY", "daily", retry_after=None)
            now = time.monotonic()
            if self._general is not None:
                wait = self._general.admit(now)
                if wait:
                    self.refuse("TEN_SECONDLY_ROLLING")
                    return self._rate_limited("TEN_SECONDLY_ROLLING", "ten_secondly_rolling", wait)
            if search and self._search is not None:
                wait = self._search.admit(now)
                if wait:
                    self.refuse("SECONDLY")
                    return self._rate_limited("SECONDLY", "secondly", wait)
            try:
                body = request.json() if request.body else None
            except ValueError as exc:
                return json_response(
                    _error_body(f"Invalid input JSON: {exc}", "VALIDATION_ERROR"), status=400
                )
            try:
                response = handler(object_type, request, body)
            except _Refused as refused:
                response = json_response(
                    _error_body(refused.message, refused.category, refused.context),
                    status=refused.status,
                )
            if not search and self._general is not None:
                response.headers.update(
                    {
                        "X-HubSpot-RateLimit-Interval-Milliseconds": str(
                            int(self._general.period * 1000)
                        ),
                        "X-HubSpot-RateLimit-Max": str(self._general.calls),
                        "X-HubSpot-RateLimit-Remaining": str(self._general.remaining()),
                    }
                )
            return response

    def _rate_limited(self, policy: str, label: str, retry_after: float | None) -> Response:
        body = {
            "status": "error",
            "message": f"You have reached your {label} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "groupName": f"publicapi:private-app-api-calls-{label}:{self.portal_id}",
        }
        send = retry_after is not None and self.retry_after_header
        headers = {"Retry-After": f"{retry_after:.3f}"} if send else {}
        return json_response(body, status=429, headers=headers)

    def daily_limit_answer(self) -> Response:
        """HubSpot's DAILY 429, for a test's ``after_write`` to send."""
        return self._rate_limited("DAILY", "daily", retry_after=None)

    def fault_response(self, fault: str, request: Request) -> Response:
        if fault == "429":
            return self._rate_limited(
                "TEN_SECONDLY_ROLLING", "ten_secondly_rolling", self.faults.retry_after
            )
        if fault == "500":
            return json_response(_error_body("internal error", "INTERNAL_ERROR"), status=500)
        return json_response(_error_body("Service Unavailable", "SERVICE_UNAVAILABLE"), status=503)

    # -- state helpers (callers hold the lock) ------------------------------------------------
    def _new_id(self) -> str:
        record_id = str(self._next_id)
        self._next_id += 1
        return record_id

    def _get(self, object_type: str, record_id: str) -> _Record | None:
        record = self._records.get(str(record_id))
        return record if record is not None and record.type == object_type else None

    def _find_unique(self, object_type: str, prop: str, value: str) -> _Record | None:
        record_id = self._unique.get((object_type, prop), {}).get(value.casefold())
        return self._get(object_type, record_id) if value and record_id else None

    def _reindex(self, record: _Record) -> None:
        """Keep the unique-value indexes in step with ``record`` (after a write)."""
        self._unindex(record.id)
        held = self._unique_of.setdefault(record.id, {})
        for name, definition in self._properties[record.type].items():
            if definition.unique and record.props.get(name):
                folded = record.props[name].casefold()
                self._unique.setdefault((record.type, name), {})[folded] = record.id
                held[(record.type, name)] = folded

    def _unindex(self, record_id: str) -> None:
        for key, folded in self._unique_of.pop(record_id, {}).items():
            index = self._unique.get(key, {})
            if index.get(folded) == record_id:
                del index[folded]

    def _derive(self, record: _Record) -> None:
        """Fill the properties HubSpot calculates itself."""
        props = record.props
        props["hs_object_id"] = record.id
        props["createdate"] = record.created_at
        props["lastmodifieddate"] = record.updated_at
        if record.type != "contacts":
            return
        if props.get("email"):
            props["email"] = props["email"].strip().lower()
        for source, target in (
            ("phone", "hs_searchable_calculated_phone_number"),
            ("mobilephone", "hs_searchable_calculated_mobile_number"),
        ):
            calculated = searchable_phone(props.get(source, ""))
            if calculated:
                props[target] = calculated[0]
                if source == "phone" and calculated[1]:
                    props["hs_calculated_phone_number"] = calculated[1]
            else:
                props.pop(target, None)
                if source == "phone":
                    props.pop("hs_calculated_phone_number", None)

    def _store(self, record: _Record, *, lag: float | None = None) -> None:
        self._derive(record)
        self._records[record.id] = record
        self._by_type[record.type][record.id] = record
        self._reindex(record)
        visible_at = time.monotonic() + (self.search_lag if lag is None else lag)
        if lag is not None and lag <= 0:
            visible_at = float("-inf")
        record.index.append((visible_at, dict(record.props)))
        # Older snapshots are only needed until the newest one is visible.
        now = time.monotonic()
        while len(record.index) > 1 and record.index[1][0] <= now:
            record.index.pop(0)
        for key, postings in self._postings.items():
            if key[1] == record.type:
                self._post(record, key, postings)

    def _post(
        self, record: _Record, key: tuple[str, str, str], postings: dict[str, set[str]]
    ) -> None:
        """Put ``record`` under the terms its kept snapshots hold now, and under no other."""
        kind, _, prop = key
        values = [snap.get(prop) or "" for _, snap in record.index]
        terms = _terms(kind, values)
        held = self._posted.setdefault(record.id, {})
        old = held.get(key, set())
        for term in old - terms:
            ids = postings[term]
            ids.discard(record.id)
            if not ids:
                del postings[term]
        for term in terms - old:
            postings.setdefault(term, set()).add(record.id)
        if terms:
            held[key] = terms
        else:
            held.pop(key, None)

    def _unpost(self, record_id: str) -> None:
        for key, terms in self._posted.pop(record_id, {}).items():
            postings = self._postings[key]
            for term in terms:
                ids = postings[term]
                ids.discard(record_id)
                if not ids:
                    del postings[term]

    def _postings_for(self, kind: str, object_type: str, prop: str) -> dict[str, set[str]]:
        key = (kind, object_type, prop)
        postings = self._postings.get(key)
        if postings is None:
            postings = self._postings[key] = {}
            for record in self._by_type[object_type].values():
                self._post(record, key, postings)
        return postings

    def _candidates(self, object_type: str, groups: Sequence[Mapping[str, Any]]) -> set[str] | None:
        """Ids of the records that may pass some filter group; None when any record may.

        A group is narrowed by its most selective EQ, IN or CONTAINS_TOKEN filter; a group
        with none of them (NEQ, GT, NOT_HAS_PROPERTY...) leaves the whole type to test."""
        if self._full_scan or not groups:
            return None
        found: set[str] = set()
        for group in groups:
            narrowest: set[str] | None = None
            for flt in group["filters"]:
                ids = self._narrow(object_type, flt)
                if ids is not None and (narrowest is None or len(ids) < len(narrowest)):
                    narrowest = ids
            if narrowest is None:
                return None
            found |= narrowest
        return found

    def _narrow(self, object_type: str, flt: Mapping[str, Any]) -> set[str] | None:
        """A superset of the ids whose snapshots pass ``flt``, folded as ``_compile`` folds."""
        operator = flt.get("operator", "EQ")
        prop = str(flt["propertyName"])
        if operator == "CONTAINS_TOKEN":
            pattern = _fold_token(str(flt.get("value", "")).casefold())
            postings = self._postings_for("token", object_type, prop)
            if any(ch in pattern for ch in "*?["):  # a wildcard: match the vocabulary
                wanted = {t for t in postings if fnmatchcase(t, pattern)}
            else:
                wanted = {pattern}
        elif operator == "EQ":
            wanted = {str(flt.get("value", "")).casefold()}
            postings = self._postings_for("value", object_type, prop)
        elif operator == "IN":
            wanted = {str(v).casefold() for v in flt.get("values") or []}
            postings = self._postings_for("value", object_type, prop)
        else:
            return None
        return set().union(*(postings.get(term, ()) for term in wanted))

    def _link(self, from_id: str, to_id: str, type_id: int) -> None:
        inverse = _ASSOCIATIONS[type_id][2]
        self._links.setdefault(from_id, set()).add((to_id, type_id))
        self._links.setdefault(to_id, set()).add((from_id, inverse))
        if type_id == _PRIMARY_COMPANY:
            contact = self._get("contacts", from_id)
            if contact is not None:
                contact.props["associatedcompanyid"] = to_id
                self._store(contact)

    def _check_properties(self, object_type: str, props: Mapping[str, Any]) -> dict[str, str]:
        defs = self._properties[object_type]
        problems = []
        for name, value in props.items():
            definition = defs.get(name)
            if definition is None:
                problems.append(
                    {
                        "isValid": False,
                        "message": f'Property "{name}" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST",
                        "name": name,
                    }
                )
            elif definition.calculated or (
                name == "associatedcompanyid" and not self.company_id_writable
            ):
                problems.append(
                    {
                        "isValid": False,
                        "message": f'"{name}" is a read only property; its value cannot be set.',
                        "error": "READ_ONLY_VALUE",
                        "name": name,
                    }
                )
            elif value is not None and len(str(value)) > MAX_TEXT:
                problems.append(
                    {
                        "isValid": False,
                        "message": f"{name} is longer than {MAX_TEXT} characters",
                        "error": "INVALID_LENGTH",
                        "name": name,
                    }
                )
        problems += hubspot_owners.owner_problems(self, props)
        if problems:
            raise _Refused(400, f"Property values were not valid: {json.dumps(problems)}")
        return {name: "" if value is None else str(value) for name, value in props.items()}

    def _check_company_id(self, object_type: str, props: Mapping[str, str]) -> None:
        company = props.get("associatedcompanyid", "")
        if object_type == "contacts" and company and self._get("companies", company) is None:
            problem = {
                "isValid": False,
                "message": f"{company} is not a valid company id",
                "error": "INVALID_OBJECT_ID",
                "name": "associatedcompanyid",
            }
            raise _Refused(400, f"Property values were not valid: {json.dumps([problem])}")

    def _link_company_id(self, record: _Record, props: Mapping[str, str]) -> None:
        company = props.get("associatedcompanyid", "")
        if record.type == "contacts" and company:
            self._link(record.id, company, _PRIMARY_COMPANY)

    def _check_unique(
        self,
        object_type: str,
        props: Mapping[str, str],
        own_id: str | None,
        seen: dict[tuple[str, str], str],
        token: str,
    ) -> None:
        """Refuse a unique property's value that another record, or another input of the same
        batch (``seen``: value -> input token), already holds."""
        for name, definition in self._properties[object_type].items():
            value = props.get(name, "")
            if not definition.unique or not value:
                continue
            holder = self._find_unique(object_type, name, value)
            if holder is not None and holder.id != own_id:
                if object_type == "contacts" and name == "email" and own_id is None:
                    # Documented for create only (contacts API guide).
                    raise _Refused(
                        409, f"Contact already exists. Existing ID: {holder.id}", "CONFLICT"
                    )
                # Elsewhere HubSpot documents no text: ours names no holder (less forgiving).
                raise _Refused(
                    409,
                    f"A {_SINGULAR[object_type].lower()} with the unique value {value!r} for "
                    f"property {name!r} already exists.",
                    "CONFLICT",
                )
            key = (name, value.casefold())
            if seen.setdefault(key, token) != token:
                raise _Refused(
                    400, f"Duplicate value {value!r} for unique property {name!r} in batch input"
                )

    @staticmethod
    def _inputs(body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, Mapping) or not isinstance(body.get("inputs"), list):
            raise _Refused(400, "Invalid input JSON: 'inputs' is required")
        inputs = body["inputs"]
        if not inputs:
            raise _Refused(400, "inputs: size must be between 1 and 100")
        if len(inputs) > MAX_BATCH:
            raise _Refused(
                400, f"inputs: size must be between 1 and {MAX_BATCH} (received {len(inputs)})"
            )
        if not all(isinstance(i, Mapping) for i in inputs):
            raise _Refused(400, "Invalid input JSON: each input must be an object")
        return [dict(i) for i in inputs]

    def _returned(self, object_type: str, body: Any) -> list[str]:
        asked = body.get("properties") if isinstance(body, Mapping) else None
        names = (
            list(asked)
            if isinstance(asked, list) and asked
            else list(DEFAULT_RETURNED[object_type])
        )
        return list(dict.fromkeys([*names, *READ_ONLY]))

    @staticmethod
    def _batch(
        results: list[dict[str, Any]], errors: list[dict[str, Any]], status: int
    ) -> Response:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": _now_iso(),
            "completedAt": _now_iso(),
        }
        if errors:
            # HubSpot's StandardError: every item carries links and errors (often empty).
            body["errors"] = [{"links": {}, "errors": [], "context": {}, **e} for e in errors]
            body["numErrors"] = len(errors)
            return json_response(body, status=207)
        return json_response(body, status=status)

    @staticmethod
    def _not_found(object_type: str, ids: list[str]) -> dict[str, Any]:
        return {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": f"Could not get some {_SINGULAR[object_type]} objects, they may be deleted "
            "or not exist. Check that ids are valid.",
            "context": {"ids": ids},
        }

    # -- search ----------------------------------------------------------------------------
    def _handle_search(self, object_type: str, request: Request, body: Any) -> Response:
        body = body if isinstance(body, Mapping) else {}
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list):
            raise _Refused(400, "Invalid input JSON: filterGroups must be a list")
        if len(groups) > MAX_GROUPS:
            raise _Refused(
                400,
                f"Too many filter groups ({len(groups)}). "
                f"The maximum number of filter groups is {MAX_GROUPS}.",
            )
        total_filters = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, Mapping) else None
            if not isinstance(filters, list):
                raise _Refused(400, "Invalid input JSON: each filter group needs 'filters'")
            if len(filters) > MAX_FILTERS_PER_GROUP:
                raise _Refused(
                    400,
                    f"Too many filters in a filter group ({len(filters)}). "
                    f"The maximum number of filters per group is {MAX_FILTERS_PER_GROUP}.",
                )
            total_filters += len(filters)
            for flt in filters:
                self._check_filter(flt)
        if total_filters > MAX_FILTERS:
            raise _Refused(
                400,
                f"Too many filters ({total_filters}). "
                f"The maximum number of filters across all groups is {MAX_FILTERS}.",
            )
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= MAX_PAGE:
            raise _Refused(400, f"limit must be between 1 and {MAX_PAGE}")
        try:
            after = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise _Refused(400, "after must be a numeric paging cursor") from None
        if after + limit > MAX_RESULTS:
            raise _Refused(
                400,
                f"Search results are limited to {MAX_RESULTS} records per query; "
                "narrow the filters",
            )
        compiled = [[_compile(f) for f in g["filters"]] for g in groups]
        now = time.monotonic()
        matches: list[tuple[_Record, dict[str, str]]] = []
        of_type = self._by_type[object_type]
        candidates = self._candidates(object_type, groups)
        pool = of_type.values() if candidates is None else [of_type[i] for i in candidates]
        for record in pool:
            snapshot = record.searchable(now)
            if snapshot is None:
                continue
            if not compiled or any(all(test(snapshot) for test in g) for g in compiled):
                matches.append((record, snapshot))
        matches.sort(key=lambda pair: int(pair[0].id))
        names = self._returned(object_type, body)
        page = matches[after : after + limit]
        results = []
        for record, snapshot in page:
            obj = record.as_json(names)
            obj["properties"] = {name: snapshot.get(name) for name in names}
            results.append(obj)
        payload: dict[str, Any] = {"total": len(matches), "results": results}
        if after + limit < len(matches):
            payload["paging"] = {"next": {"after": str(after + limit)}}
        return json_response(payload)

    def _check_filter(self, flt: Any) -> None:
        if not isinstance(flt, Mapping) or not flt.get("propertyName"):
            raise _Refused(400, "Invalid input JSON: a filter needs propertyName and operator")
        operator = flt.get("operator", "EQ")
        if operator not in _OPERATORS:
            raise _Refused(400, f"Unknown operator {operator!r}")
        if operator in ("IN", "NOT_IN"):
            values = flt.get("values")
            if not isinstance(values, list) or not values:
                raise _Refused(400, f"{operator} needs a non-empty 'values' list")
            if len(values) > self.in_values_cap:
                raise _Refused(
                    400,
                    f"Too many values ({len(values)}) in an {operator} filter on "
                    f"{flt['propertyName']}. The maximum is {self.in_values_cap}.",
                )

    # -- batch endpoints -------------------------------------------------------------------
    def _handle_batch_read(self, object_type: str, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        id_property = body.get("idProperty") if isinstance(body, Mapping) else None
        if id_property:
            self._require_unique(object_type, id_property)
        names = self._returned(object_type, body)
        archived = (request.arg("archived", "false") or "").lower() == "true"
        results, missing = [], []
        for item in inputs:
            wanted = str(item.get("id", ""))
            if archived:
                record = self._archived.get(wanted)
                record = record if record is not None and record.type == object_type else None
            elif id_property:
                record = self._find_unique(object_type, id_property, wanted)
            else:
                record = self._get(object_type, wanted)
            if record is None:
                missing.append(wanted)
            else:
                results.append(record.as_json(names))
        errors = [self._not_found(object_type, missing)] if missing else []
        return self._batch(results, errors, 200)

    def _require_unique(self, object_type: str, prop: str) -> None:
        if object_type not in _UNIQUE_ALLOWED and prop != "hs_object_id":
            raise _Refused(
                400,
                f"idProperty is not supported for {object_type}: only unique-value properties "
                "of objects that have them can be used",
            )
        definition = self._properties[object_type].get(prop)
        if definition is None or not definition.unique:
            raise _Refused(
                400,
                f"{prop} is not a unique property of {object_type}; idProperty must name a "
                "property with unique values",
            )

    def _handle_batch_create(self, object_type: str, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        prepared: list[tuple[dict[str, str], list[tuple[str, int]]]] = []
        seen: dict[tuple[str, str], str] = {}
        missing: list[str] = []
        for item in inputs:
            props = self._check_properties(object_type, item.get("properties") or {})
            self._check_company_id(object_type, props)
            links = self._parse_associations(object_type, item.get("associations") or [], missing)
            prepared.append((props, links))
        if missing:
            raise _Refused(
                400,
                "One or more associations are invalid: "
                f"object(s) {', '.join(missing)} do not exist",
                context={"ids": missing},
            )
        for index, (props, _) in enumerate(prepared):
            self._check_unique(object_type, props, None, seen, f"input:{index}")
        results = []
        for props, links in prepared:
            record = self._create(object_type, props)
            self._link_company_id(record, props)
            for to_id, type_id in links:
                self._link(record.id, to_id, type_id)
            results.append(record.as_json(record.props))
        self._writes += 1
        return self._batch(results, [], 201)

    def _parse_associations(
        self, object_type: str, associations: Any, missing: list[str]
    ) -> list[tuple[str, int]]:
        links: list[tuple[str, int]] = []
        if not isinstance(associations, list):
            raise _Refused(400, "Invalid input JSON: associations must be a list")
        for assoc in associations:
            to_id = str(((assoc or {}).get("to") or {}).get("id", ""))
            for spec in (assoc or {}).get("types") or []:
                type_id = spec.get("associationTypeId")
                known = _ASSOCIATIONS.get(type_id) if isinstance(type_id, int) else None
                if (
                    spec.get("associationCategory", "HUBSPOT_DEFINED") != "HUBSPOT_DEFINED"
                    or known is None
                ):
                    raise _Refused(400, f"Invalid association type {type_id!r}")
                if known[0] != object_type:
                    raise _Refused(
                        400, f"Association type {type_id} is not valid from {object_type}"
                    )
                if self._get(known[1], to_id) is None:
                    missing.append(to_id)
                links.append((to_id, type_id))
        return links

    def _create(self, object_type: str, props: Mapping[str, str]) -> _Record:
        stamp = _now_iso()
        record = _Record(self._new_id(), object_type, dict(props), stamp, stamp)
        self._store(record)
        return record

    def _update(self, record: _Record, props: Mapping[str, str]) -> None:
        record.props.update(props)
        record.updated_at = _now_iso()
        self._store(record)

    def _handle_batch_update(self, object_type: str, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        ids = [str(i.get("id", "")) for i in inputs]
        if len(set(ids)) != len(ids):
            raise _Refused(400, "Duplicate IDs found in batch input")
        seen: dict[tuple[str, str], str] = {}
        prepared = []
        for record_id, item in zip(ids, inputs, strict=True):
            props = self._check_properties(object_type, item.get("properties") or {})
            self._check_company_id(object_type, props)
            record = self._get(object_type, record_id)
            if record is not None:
                self._check_unique(
                    object_type, {**record.props, **props}, record.id, seen, record.id
                )
            prepared.append((record_id, record, props))
        results, missing = [], []
        for record_id, record, props in prepared:
            if record is None:
                missing.append(record_id)
                continue
            self._update(record, props)
            self._link_company_id(record, props)
            results.append(record.as_json(record.props))
        if results:
            self._writes += 1
        errors = [self._not_found(object_type, missing)] if missing else []
        return self._batch(results, errors, 200)

    def _handle_batch_upsert(self, object_type: str, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        seen: dict[tuple[str, str], str] = {}
        prepared = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            id_property = item.get("idProperty")
            value = str(item.get("id") or "")
            if not id_property or not value:
                raise _Refused(400, "Each upsert input needs idProperty and id")
            self._require_unique(object_type, id_property)
            props = self._check_properties(object_type, item.get("properties") or {})
            self._check_company_id(object_type, props)
            props[id_property] = value
            record = self._find_unique(object_type, id_property, value)
            merged = {**(record.props if record else {}), **props}
            own = record.id if record else None
            try:
                self._check_unique(object_type, merged, own, seen, own or f"new:{value}")
            except _Refused as refused:
                # One input failing on its own fails alone: a 207 names it, the rest land.
                # The wording is ours; HubSpot documents no text (and no "Existing ID").
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": f"Upsert of {id_property}={value!r} failed: a unique value "
                        "is already held by another record",
                        "context": {"ids": [value]},
                    }
                )
                del refused
                continue
            prepared.append((record, props))
        results = []
        for record, props in prepared:
            is_new = record is None
            if record is None:
                record = self._create(object_type, props)
            else:
                self._update(record, props)
            self._link_company_id(record, props)
            obj = record.as_json(record.props)
            obj["new"] = is_new
            results.append(obj)
        if results:
            self._writes += 1
        return self._batch(results, errors, 200)

    # -- single-record endpoints -----------------------------------------------------------
    def _handle_list(self, object_type: str, request: Request, body: Any) -> Response:
        try:
            limit = min(int(request.arg("limit", "10") or 10), 100)
            after = int(request.arg("after", "0") or 0)
        except ValueError:
            raise _Refused(400, "limit and after must be numbers") from None
        if (request.arg("archived", "false") or "").lower() == "true":
            pool = [r for r in self._archived.values() if r.type == object_type]
        else:
            pool = list(self._by_type[object_type].values())
        records = sorted(pool, key=lambda r: int(r.id))
        names = request.query.get("properties") or list(DEFAULT_RETURNED[object_type])
        page = records[after : after + limit]
        payload: dict[str, Any] = {"results": [r.as_json([*names, *READ_ONLY]) for r in page]}
        if after + limit < len(records):
            payload["paging"] = {"next": {"after": str(after + limit)}}
        return json_response(payload)

    def _handle_get(self, object_type: str, request: Request, body: Any) -> Response:
        record = self._get(object_type, request.params["id"])
        if record is None:
            raise _Refused(
                404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND"
            )
        names = request.query.get("properties") or list(DEFAULT_RETURNED[object_type])
        return json_response(record.as_json([*names, *READ_ONLY]))

    def _handle_patch(self, object_type: str, request: Request, body: Any) -> Response:
        record = self._get(object_type, request.params["id"])
        if record is None:
            raise _Refused(
                404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND"
            )
        props = self._check_properties(object_type, (body or {}).get("properties") or {})
        self._check_company_id(object_type, props)
        self._check_unique(object_type, {**record.props, **props}, record.id, {}, record.id)
        self._update(record, props)
        self._link_company_id(record, props)
        self._writes += 1
        return json_response(record.as_json(record.props))

    def _handle_archive(self, object_type: str, request: Request, body: Any) -> Response:
        # Objects API guide, "Archive": 204 with no body; archiving twice is not an error.
        if self._get(object_type, request.params["id"]) is not None:
            self._archive(request.params["id"])
            self._writes += 1
        return Response(status=204, body=b"", headers={})

    def _handle_batch_archive(self, object_type: str, request: Request, body: Any) -> Response:
        archived = [
            self._archive(str(item.get("id", "")))
            for item in self._inputs(body)
            if self._get(object_type, str(item.get("id", ""))) is not None
        ]
        if archived:
            self._writes += 1
        return Response(status=204, body=b"", headers={})

    def _handle_property_create(self, object_type: str, request: Request, body: Any) -> Response:
        """Properties API guide, "Create a property": name, label, type, fieldType and
        groupName are required; ``hasUniqueValue`` only where HubSpot has unique values."""
        body = body if isinstance(body, Mapping) else {}
        missing = [
            k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)
        ]
        if missing:
            raise _Refused(400, f"Missing required field(s): {', '.join(missing)}")
        name = str(body["name"])
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,99}", name):
            raise _Refused(400, f"Property name {name!r} is not valid")
        if body.get("hasUniqueValue") and object_type not in _UNIQUE_ALLOWED:
            raise _Refused(
                400,
                f"Unique value properties are not supported for object type {object_type}",
                "VALIDATION_ERROR",
                {"hasUniqueValue": ["true"]},
            )
        if body["type"] != "string" or body["fieldType"] not in ("text", "textarea"):
            raise _Refused(400, "this emulator creates string text properties only")
        group = str(body["groupName"])
        if group not in self._groups[object_type]:
            raise _Refused(400, f"Property group {group!r} does not exist for {object_type}")
        if name in self._properties[object_type]:
            raise _Refused(409, f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
        definition = _PropertyDef(
            name, unique=bool(body.get("hasUniqueValue")), group=group, label=str(body["label"])
        )
        self._properties[object_type][name] = definition
        self._writes += 1
        return json_response(definition.as_json(object_type), status=201)

    def _handle_group(self, object_type: str, request: Request, body: Any) -> Response:
        name = request.params["name"]
        label = self._groups[object_type].get(name)
        if label is None:
            raise _Refused(
                404, f"Unable to find group {name} for {object_type}", "OBJECT_NOT_FOUND"
            )
        return json_response({"name": name, "label": label, "displayOrder": -1, "archived": False})

    def _handle_group_create(self, object_type: str, request: Request, body: Any) -> Response:
        body = body if isinstance(body, Mapping) else {}
        name, label = str(body.get("name") or ""), str(body.get("label") or "")
        if not name or not label:
            raise _Refused(400, "A property group needs a name and a label")
        if name in self._groups[object_type]:
            raise _Refused(409, f"Group named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
        self._groups[object_type][name] = label
        self._writes += 1
        payload = {"name": name, "label": label, "displayOrder": -1, "archived": False}
        return json_response(payload, status=201)

    def _handle_property(self, object_type: str, request: Request, body: Any) -> Response:
        name = request.params["name"]
        definition = self._properties[object_type].get(name)
        if definition is None:
            raise _Refused(
                404,
                f"Unable to find property {name} for object type {object_type}",
                "OBJECT_NOT_FOUND",
            )
        return json_response(definition.as_json(object_type))

    def _handle_account(self, object_type: str, request: Request, body: Any) -> Response:
        return json_response(
            {
                "portalId": self.portal_id,
                "accountType": "SANDBOX",
                "timeZone": "US/Eastern",
                "companyCurrency": "USD",
                "additionalCurrencies": [],
                "utcOffset": "-05:00",
                "utcOffsetMilliseconds": -18000000,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            }
        )

    # -- v4 associations -------------------------------------------------------------------
    def _pair(self, request: Request) -> tuple[str, str]:
        from_type, to_type = request.params["from"], request.params["to"]
        if from_type not in OBJECT_TYPES or to_type not in OBJECT_TYPES:
            raise _Refused(400, f"Unknown object type in {from_type}/{to_type}")
        return from_type, to_type

    def _handle_assoc_create(self, object_type: str, request: Request, body: Any) -> Response:
        from_type, to_type = self._pair(request)
        inputs = self._inputs(body)
        results, errors = [], []
        for item in inputs:
            from_id = str((item.get("from") or {}).get("id", ""))
            to_id = str((item.get("to") or {}).get("id", ""))
            types = item.get("types") or []
            for spec in types:
                known = _ASSOCIATIONS.get(spec.get("associationTypeId"))
                if known is None or known[:2] != (from_type, to_type):
                    raise _Refused(
                        400,
                        f"Invalid association type {spec.get('associationTypeId')!r} "
                        f"for {from_type} to {to_type}",
                    )
            absent = [
                i for i, t in ((from_id, from_type), (to_id, to_type)) if self._get(t, i) is None
            ]
            if absent:
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "subCategory": "crm.associations.INVALID_OBJECT_IDS",
                        "message": f"No {from_type} or {to_type} with id(s) {', '.join(absent)}",
                        "context": {"ids": absent},
                    }
                )
                continue
            for spec in types:
                self._link(from_id, to_id, int(spec["associationTypeId"]))
            results.append(
                {
                    "fromObjectTypeId": _TYPE_IDS[from_type],
                    "fromObjectId": int(from_id),
                    "toObjectTypeId": _TYPE_IDS[to_type],
                    "toObjectId": int(to_id),
                    "labels": [],
                }
            )
        if results:
            self._writes += 1
        return self._batch(results, errors, 201)

    def _handle_assoc_read(self, object_type: str, request: Request, body: Any) -> Response:
        from_type, to_type = self._pair(request)
        results, missing = [], []
        for item in self._inputs(body):
            from_id = str(item.get("id", ""))
            if self._get(from_type, from_id) is None:
                missing.append(from_id)
                continue
            targets: dict[str, list[int]] = {}
            for target, type_id in sorted(self._links.get(from_id, ())):
                if self._get(to_type, target) is not None:
                    targets.setdefault(target, []).append(type_id)
            if targets:
                results.append(
                    {
                        "from": {"id": from_id},
                        "to": [
                            {
                                "toObjectId": int(target),
                                "associationTypes": [
                                    {"category": "HUBSPOT_DEFINED", "typeId": t, "label": None}
                                    for t in type_ids
                                ],
                            }
                            for target, type_ids in targets.items()
                        ],
                    }
                )
        errors = [self._not_found(from_type, missing)] if missing else []
        return self._batch(results, errors, 200)

    # -- CrmEmulator API (direct, uncounted) ------------------------------------------------
    def connector_options(self) -> dict[str, Any]:
        return {"access_token": self.token, "host": self.base_url}

    def add_property(
        self, object_type: str, name: str, *, unique: bool = False, group: str = ""
    ) -> None:
        if unique and object_type not in _UNIQUE_ALLOWED:
            raise ValueError(f"HubSpot has no unique-value properties on {object_type}")
        with self.lock:
            self._properties[object_type][name] = _PropertyDef(name, unique=unique, group=group)
            self._unique.pop((object_type, name), None)
            if unique:
                for record in self._by_type[object_type].values():
                    self._reindex(record)

    def remove_property(self, object_type: str, name: str) -> None:
        with self.lock:
            self._properties[object_type].pop(name, None)
            self._unique.pop((object_type, name), None)

    def seed_user(self, first_name: str, last_name: str, email: str, active: bool = True) -> str:
        """Add an owner (an inactive one is archived); returns its owner id."""
        with self.lock:
            return self.owner_book.add(first_name, last_name, email, archived=not active)

    def seed_owner(self, record_id: str, owner_id: str | None) -> None:
        """Set a record's owner directly (no request counted), as a HubSpot user would."""
        with self.lock:
            record = self._records[str(record_id)]
            record.props["hubspot_owner_id"] = owner_id or ""
            self._store(record, lag=0.0)

    def owner_ids(self) -> dict[str, str]:
        """Owner id by email, archived owners included (tests)."""
        with self.lock:
            return {o.email: o.id for o in self.owner_book.owners.values()}

    def set_user_active(self, owner_id: str, active: bool) -> None:
        with self.lock:
            self.owner_book.owners[owner_id].archived = not active

    def owner_of(self, record_id: str) -> str | None:
        with self.lock:
            record = self._records.get(str(record_id))
            return (record.props.get("hubspot_owner_id") or None) if record else None

    def seed_company(self, name: str) -> str:
        with self.lock:
            stamp = _now_iso()
            record = _Record(self._new_id(), "companies", {"name": name}, stamp, stamp)
            self._store(record, lag=0.0)
            return record.id

    def seed_contact(self, **fields: Unpack[_ContactSeed]) -> str:
        given: Mapping[str, Any] = fields
        props = {prop: str(given[key]) for key, prop in _SEED_PROPERTIES.items() if given.get(key)}
        company_id = fields.get("company_id")
        with self.lock:
            stamp = _now_iso()
            record = _Record(self._new_id(), "contacts", props, stamp, stamp)
            self._store(record, lag=0.0)
            if company_id:
                self._link(record.id, company_id, _PRIMARY_COMPANY)
                self._store(record, lag=0.0)
            return record.id

    def delete_record(self, record_id: str) -> None:
        """Archive a record, as deleting one in HubSpot does (``archived=true`` still reads it)."""
        with self.lock:
            self._archive(str(record_id))

    def _archive(self, record_id: str) -> bool:
        with self.lock:
            record = self._records.pop(record_id, None)
            if record is None:
                return False
            record.archived_at = _now_iso()
            self._archived[record.id] = record
            del self._by_type[record.type][record.id]
            self._unindex(record.id)
            self._unpost(record.id)
            for target, _ in self._links.pop(record.id, set()):
                self._links[target] = {
                    link for link in self._links.get(target, set()) if link[0] != record.id
                }
            return True

    def records(self, object_type: str) -> list[dict[str, str]]:
        """Every record of a type as ``{"id": ..., **properties}`` (for tests)."""
        with self.lock:
            return [
                {"id": r.id, **r.props}
                for r in sorted(self._by_type[object_type].values(), key=lambda r: int(r.id))
            ]

    def associated(self, record_id: str, to_type: str) -> list[str]:
        with self.lock:
            targets = {t for t, _ in self._links.get(str(record_id), ()) if self._get(to_type, t)}
            return sorted(targets, key=int)

    def contacts(self) -> Sequence[StoredContact]:
        with self.lock:
            return [
                StoredContact(
                    id=r.id,
                    kind="contact",
                    first_name=r.props.get("firstname", ""),
                    last_name=r.props.get("lastname", ""),
                    email=r.props.get("email", ""),
                    phone=r.props.get("phone", ""),
                    company=r.props.get("company", ""),
                    company_id=r.props.get("associatedcompanyid") or None,
                )
                for r in sorted(self._by_type["contacts"].values(), key=lambda r: int(r.id))
            ]

    def activities(self) -> Sequence[StoredActivity]:
        with self.lock:
            found = []
            activities = (r for t in _ACTIVITY_TYPES for r in self._by_type[t].values())
            for record in sorted(activities, key=lambda r: int(r.id)):
                props = record.props
                body = (
                    props.get("hs_note_body")
                    or props.get("hs_call_body")
                    or props.get("hs_task_body")
                    or ""
                )
                marker = next((v for v in props.values() if v.startswith("syncd:")), None)
                if marker is None:
                    in_text = _MARKER_IN_TEXT.search(body)
                    marker = in_text.group(0) if in_text else None
                linked = sorted({t for t, _ in self._links.get(record.id, ())}, key=int)
                owners = [t for t in linked if self._get("contacts", t)] or linked
                found.append(
                    StoredActivity(
                        id=record.id,
                        record_id=owners[0] if owners else None,
                        marker=marker,
                        subject=props.get("hs_task_subject") or props.get("hs_call_title") or "",
                        body=body,
                        high_priority=props.get("hs_task_priority") == "HIGH",
                    )
                )
            return found

    def write_requests(self) -> int:
        with self.lock:
            return self._writes


Predicate = Callable[[Mapping[str, str]], bool]


def _fold_token(token: str) -> str:
    """A search token as the index keeps it: lowercase, accents off, edge punctuation off.

    An assumption about HubSpot's analyzer (text search engines commonly fold this way);
    exact-value operators (EQ, IN) are not folded beyond case.
    """
    decomposed = unicodedata.normalize("NFKD", token.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return bare.strip(_EDGE_PUNCTUATION) or bare


def _tokens(text: str) -> Iterator[str]:
    """The folded tokens of a (casefolded) property value, as CONTAINS_TOKEN sees them."""
    return (_fold_token(t) for t in _TOKEN_SPLIT.split(text) if t)


def _terms(kind: str, values: Iterable[str]) -> set[str]:
    """The posting terms of a property's values: what EQ/IN or CONTAINS_TOKEN compares."""
    folded = [v.casefold() for v in values]
    if kind == "value":
        return {v for v in folded if v}  # an empty value never passes EQ or IN
    return {t for v in folded for t in _tokens(v)}


def _compile(flt: Mapping[str, Any]) -> Predicate:
    """One search filter as a test of a record's searchable snapshot (strings compare folded)."""
    operator = flt.get("operator", "EQ")
    prop = str(flt["propertyName"])

    def value(props: Mapping[str, str]) -> str:
        return (props.get(prop) or "").casefold()

    if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        want = operator == "HAS_PROPERTY"
        return lambda props: bool(value(props)) is want
    if operator in ("IN", "NOT_IN"):
        wanted = {str(v).casefold() for v in flt.get("values") or []}
        want = operator == "IN"
        return lambda props: (bool(value(props)) and value(props) in wanted) is want
    target = str(flt.get("value", "")).casefold()
    if operator in ("EQ", "NEQ"):
        want = operator == "EQ"
        return lambda props: (bool(value(props)) and value(props) == target) is want
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        want = operator == "CONTAINS_TOKEN"
        pattern = _fold_token(target)

        def has_token(props: Mapping[str, str]) -> bool:
            return any(fnmatchcase(t, pattern) for t in _tokens(value(props))) is want

        return has_token
    high = str(flt.get("highValue", "")).casefold()
    return lambda props: bool(value(props)) and _compare(operator, value(props), target, high)


def _compare(operator: str, have: str, low: str, high: str) -> bool:
    def key(text: str) -> tuple[int, float, str]:
        try:
            return (0, float(text), "")
        except ValueError:
            return (1, 0.0, text)

    h, lo, hi = key(have), key(low), key(high)
    return {
        "LT": h < lo,
        "LTE": h <= lo,
        "GT": h > lo,
        "GTE": h >= lo,
        "BETWEEN": lo <= h <= hi,
    }.get(operator, False)

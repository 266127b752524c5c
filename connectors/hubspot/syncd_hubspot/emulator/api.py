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

One concern a module: ``records`` (the portal's data and indexes), ``objects`` (the objects
API), ``search``, ``properties``, ``associations`` (v4), ``limits`` (429s and faults),
``owners``, ``phones`` (the searchable phone model), ``schema`` (HubSpot's default properties);
this module assembles them and holds the routes, the guard in front of them, and what tests
seed and read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Unpack

from syncd.sandbox.crm import ContactSeed, StoredActivity, StoredContact
from syncd.sandbox.http import Faults, Request, Response, json_response

from . import owners as hubspot_owners
from .associations import Associations
from .limits import BURST_LIMITS, SEARCH_LIMIT, RateLimits, Window
from .objects import Objects
from .properties import Properties
from .records import (
    ACTIVITY_TYPES,
    OBJECT_TYPES,
    PRIMARY_COMPANY,
    PropertyDef,
    Record,
    Refused,
    default_group,
    error_body,
    now_iso,
)
from .schema import CALCULATED, DEFAULT_PROPERTIES, READ_ONLY, UNIQUE
from .search import Search

__all__ = ["HubSpotEmulator"]

_WRITE_ENDPOINTS = frozenset(
    {"batch_create", "batch_update", "batch_upsert", "batch_archive", "create", "update"}
)

_MARKER_IN_TEXT = re.compile(r"syncd:[^\s<>\"']+")


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


class HubSpotEmulator(Associations, Properties, Objects, Search, RateLimits):
    """HubSpot's CRM v3/v4 API, enough of it for syncd. See the module docstring."""

    name = "hubspot"
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
        self.retry_after_header = retry_after_header
        self.search_lag = search_lag
        self._initial_search_lag = search_lag
        self.in_values_cap = in_values_cap
        self.portal_id = 62515
        if tier is not None:  # the tier's documented burst limit, over ``rate_limit``
            rate_limit = BURST_LIMITS[tier]
        self._limits = (rate_limit, search_rate_limit)
        # The portal's data (records.PortalRecords), emptied by ``reset``.
        self._records = {}
        self._links = {}
        self._unique = {}
        self._unique_of = {}
        self._properties = {}
        self._groups = {}
        self._archived = {}
        self._by_type = {t: {} for t in OBJECT_TYPES}
        self._postings = {}
        self._posted = {}
        self._full_scan = False
        # Called with (endpoint, answer) after a write request was carried out, before its
        # answer is sent; what it returns (if anything) is sent instead. Fault tests attack
        # there, the moment a write has landed but is not yet known: a lost or malformed
        # answer, a DAILY 429, a SIGKILL of the daemon.
        self.after_write: Callable[[str, Response], Response | None] | None = None
        self.reset()
        self._register_routes()

    def reset(self) -> None:
        """Forget every record, count, fault and limit state; keep the server running.

        Lets one started emulator serve many tests (starting and stopping one costs ~0.5 s).
        """
        rate_limit, search_rate_limit = self._limits
        with self.lock:
            self.search_lag = self._initial_search_lag
            self.daily_limit_reached = False
            self.faults = Faults()
            self.reset_counts()
            self._burst = Window(*rate_limit) if rate_limit else None
            self._searches = Window(*search_rate_limit) if search_rate_limit else None
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
                t: {default_group(t): f"{t[:-1].title()} information"} for t in OBJECT_TYPES
            }
            for object_type in OBJECT_TYPES:
                defs = {n: PropertyDef(n) for n in DEFAULT_PROPERTIES[object_type]}
                defs.update(
                    {n: PropertyDef(n, calculated=True) for n in CALCULATED.get(object_type, ())}
                )
                defs.update({n: PropertyDef(n, calculated=True) for n in READ_ONLY})
                self._properties[object_type] = defs
            for object_type, names in UNIQUE.items():
                for n in names:
                    self._properties[object_type][n] = PropertyDef(n, unique=True)
            self.company_id_writable = True
            # The custom properties the connector's defaults expect, as ``syncd setup`` makes
            # them: the caller key unique on contacts, the marker *not* unique on activities.
            if self.provisioned:
                self.add_property("contacts", "syncd_key", unique=True)
                for object_type in ACTIVITY_TYPES:
                    self.add_property(object_type, "syncd_marker")
            hubspot_owners.reset(self)

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
                error_body(
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                    "INVALID_AUTHENTICATION",
                ),
                status=401,
            )
        with self.lock:
            over = self._over_limit(search=search)
            if over is not None:
                return over
            try:
                body = request.json() if request.body else None
            except ValueError as exc:
                return json_response(
                    error_body(f"Invalid input JSON: {exc}", "VALIDATION_ERROR"), status=400
                )
            try:
                response = handler(object_type, request, body)
            except Refused as refused:
                response = json_response(
                    error_body(refused.message, refused.category, refused.context),
                    status=refused.status,
                )
            if not search:
                response.headers.update(self._limit_headers())
            return response

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

    def connector_options(self) -> dict[str, Any]:
        return {"access_token": self.token, "host": self.base_url}

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
            stamp = now_iso()
            record = Record(self._new_id(), "companies", {"name": name}, stamp, stamp)
            self._store(record, lag=0.0)
            return record.id

    def seed_contact(self, **fields: Unpack[_ContactSeed]) -> str:
        given: Mapping[str, Any] = fields
        props = {prop: str(given[key]) for key, prop in _SEED_PROPERTIES.items() if given.get(key)}
        company_id = fields.get("company_id")
        with self.lock:
            stamp = now_iso()
            record = Record(self._new_id(), "contacts", props, stamp, stamp)
            self._store(record, lag=0.0)
            if company_id:
                self._link(record.id, company_id, PRIMARY_COMPANY)
                self._store(record, lag=0.0)
            return record.id

    def delete_record(self, record_id: str) -> None:
        """Archive a record, as deleting one in HubSpot does (``archived=true`` still reads it)."""
        with self.lock:
            self._archive(str(record_id))

    def records(self, object_type: str) -> list[dict[str, str]]:
        """Every record of a type as ``{"id": ..., **properties}`` (for tests)."""
        with self.lock:
            return [
                {"id": r.id, **r.props}
                for r in sorted(self._by_type[object_type].values(), key=lambda r: int(r.id))
            ]

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
            activities = (r for t in ACTIVITY_TYPES for r in self._by_type[t].values())
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

"""The emulated org: schema, records and their indexes, the REST endpoints, logins.

See the package docstring for what it models and the documents it follows."""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import secrets
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any, Unpack
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt

from syncd.sandbox.crm import ContactSeed, StoredActivity, StoredContact
from syncd.sandbox.http import Emulator, Request, Response, json_response

from . import users as salesforce_users
from .duplicates import account_rule_matches, person_rule_matches
from .query import (
    SyntaxProblem,
    Term,
    _Bool,
    _Cmp,
    _Returning,
    _Search,
    _Str,
    parse_soql,
    parse_sosl,
)

__all__ = ["SalesforceEmulator"]

ORG_ID = "00D000000000001AAA"
USER_ID = "005000000000001AAA"
# API versions 31.0 to 66.0 answer; SOAP login() exists only up to 64.0 (Salesforce help
# article 005132110, "Platform SOAP API login() Retirement").
API_VERSIONS = tuple(f"{v}.0" for v in range(31, 67))
SOAP_LOGIN_VERSIONS = tuple(f"{v}.0" for v in range(31, 65))
# "Limits on the REST API": URI plus headers at most 16,384 bytes (414 / 431 past it).
MAX_URI_BYTES = 16_384
# "API Request Limits and Allocations" (Salesforce Developer Limits and Allocations Quick
# Reference): at most 25 concurrent requests lasting 20 s or longer in a production org or
# sandbox (5 in Developer Edition and trial orgs), refused with REQUEST_LIMIT_EXCEEDED; no
# limit on concurrent requests shorter than 20 s. The total allocation per rolling 24 hours is
# ``daily_limit`` (Enterprise Edition: 100,000 plus 1,000 per user license).
CONCURRENT_LONG_REQUESTS = 25
LONG_REQUEST_SECONDS = 20.0
# SOQL and SOSL Reference: query results come in batches of 2,000 rows at most.
QUERY_PAGE_SIZE = 2000
# Object Reference, Task and Lead: the values of the restricted picklists in a new org.
PICKLISTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Task", "Status"): (
        "Not Started",
        "In Progress",
        "Completed",
        "Waiting on someone else",
        "Deferred",
    ),
    ("Task", "Priority"): ("High", "Normal", "Low"),
    ("Task", "TaskSubtype"): ("Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"),
    ("Task", "CallType"): ("Internal", "Inbound", "Outbound"),
    ("Lead", "Status"): (
        "Open - Not Contacted",
        "Working - Contacted",
        "Closed - Converted",
        "Closed - Not Converted",
    ),
}
# Custom fields syncd asks an admin for (``syncd setup`` creates them through the Tooling API).
CUSTOM_FIELDS = (("Contact", "Syncd_Key__c"), ("Lead", "Syncd_Key__c"), ("Task", "Syncd_Marker__c"))
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
_MAX_COLLECTION = 200
_DATA = r"/services/data/v(?P<ver>\d+\.\d)"


# ==========================================================================================
# Schema
# ==========================================================================================


@dataclass(frozen=True)
class _Field:
    name: str
    type: str = "string"  # id, string, phone, email, reference, date, textarea, picklist
    length: int = 255
    required: bool = False
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    reference_to: tuple[str, ...] = ()
    sobject: str = ""

    def describe(self) -> dict[str, Any]:
        values = PICKLISTS.get((self.sobject, self.name), ()) if self.type == "picklist" else ()
        return {
            "picklistValues": [
                {"value": v, "label": v, "active": True, "defaultValue": False} for v in values
            ],
            "restrictedPicklist": bool(values),
            "custom": self.name.endswith("__c"),
            "name": self.name,
            "type": self.type,
            "length": self.length,
            "nillable": not self.required and self.type != "id",
            "createable": self.createable,
            "updateable": self.updateable,
            "externalId": self.external_id,
            "idLookup": self.external_id or self.type == "id",
            "referenceTo": list(self.reference_to),
            "relationshipName": self.name[:-2] if self.type == "reference" else None,
        }


def _id() -> _Field:
    return _Field("Id", "id", 18, createable=False, updateable=False)


def _computed_name() -> _Field:
    return _Field("Name", "string", 121, createable=False, updateable=False)


_PREFIXES = {"Account": "001", "Contact": "003", "Lead": "00Q", "Task": "00T", "User": "005"}


def _default_schema() -> dict[str, dict[str, _Field]]:
    fields = {
        "Account": [
            _id(),
            _Field("Name", required=True),
            _Field("Phone", "phone", 40),
            _Field("Website"),
            _Field("Description", "textarea", 32_000),
        ],
        "Contact": [
            _id(),
            _Field("FirstName", length=40),
            _Field("LastName", length=80, required=True),
            _computed_name(),
            _Field("Email", "email", 80),
            _Field("Phone", "phone", 40),
            _Field("MobilePhone", "phone", 40),
            _Field("AccountId", "reference", 18, reference_to=("Account",)),
            _Field("Title", length=128),
            _Field("Description", "textarea", 32_000),
            _Field("Syncd_Key__c", external_id=True),
        ],
        "Lead": [
            _id(),
            _Field("FirstName", length=40),
            _Field("LastName", length=80, required=True),
            _computed_name(),
            _Field("Company", required=True),
            _Field("Email", "email", 80),
            _Field("Phone", "phone", 40),
            _Field("MobilePhone", "phone", 40),
            _Field("Status", "picklist", 40),
            _Field("Description", "textarea", 32_000),
            _Field("Syncd_Key__c", external_id=True),
        ],
        "Task": [
            _id(),
            _Field("Subject"),
            _Field("Description", "textarea", 32_000),
            _Field("Status", "picklist", 40),
            _Field("Priority", "picklist", 40),
            _Field("WhoId", "reference", 18, reference_to=("Contact", "Lead")),
            _Field("WhatId", "reference", 18, reference_to=("Account",)),
            _Field("ActivityDate", "date", 10),
            _Field("TaskSubtype", "picklist", 40, updateable=False),
            _Field("CallType", "picklist", 40),
            _Field("Syncd_Marker__c", external_id=True),
        ],
    }
    return {
        sobject: {f.name: replace(f, sobject=sobject) for f in flist}
        for sobject, flist in fields.items()
    }


# ==========================================================================================
# Records
# ==========================================================================================


@dataclass
class _Record:
    sobject: str
    id: str
    fields: dict[str, Any]
    # (monotonic time written, field values then): what the lagging search index sees.
    versions: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    deleted: bool = False


# A record's state as an undo log keeps it: (deleted, fields, versions), or None for "created".
_Saved = tuple[bool, dict[str, Any], list[tuple[float, dict[str, Any]]]] | None
_NO_IDS: frozenset[str] = frozenset()
# What the indexes narrowed each node of one query's tree to, by id(node); None: cannot tell.
_Narrowed = dict[int, set[str] | None]


class _Index:
    """Keys to the ids of one sObject's records, kept current on every write and rollback.

    Only ever a prefilter: each bucket is a superset of the records a condition or search term
    can match, and the exact matcher still runs on them. Deleted records stay filed (the
    readers skip them), so deleting needs no upkeep."""

    __slots__ = ("buckets", "held", "keys_of")

    def __init__(self, keys_of: Callable[[_Record], set[str]]) -> None:
        self.keys_of = keys_of
        self.buckets: dict[str, set[str]] = {}
        self.held: dict[str, frozenset[str]] = {}  # id -> the keys it is filed under

    def file(self, record: _Record) -> None:
        new = frozenset(self.keys_of(record))
        old = self.held.get(record.id, _NO_IDS)
        if new == old:
            return
        for key in old - new:
            self._discard(key, record.id)
        for key in new - old:
            self.buckets.setdefault(key, set()).add(record.id)
        if new:
            self.held[record.id] = new
        else:
            del self.held[record.id]

    def drop(self, record_id: str) -> None:
        for key in self.held.pop(record_id, _NO_IDS):
            self._discard(key, record_id)

    def _discard(self, key: str, record_id: str) -> None:
        bucket = self.buckets[key]
        bucket.discard(record_id)
        if not bucket:
            del self.buckets[key]

    def get(self, key: str) -> set[str] | frozenset[str]:
        return self.buckets.get(key, _NO_IDS)


# LIKE narrows on the first or last N characters, N the longest of these the pattern's literal
# text covers (each N its own index, built when first needed); SOSL wildcard terms narrow on a
# word's first _WORD_PREFIX letters.
_AFFIXES = (64, 48, 32, 24, 20, *range(16, 0, -1))
_WORD_PREFIX = 3
_LIKE_FOLD: dict[str, str] = {}


def _like_fold(text: str) -> str:
    """Each character as the ASCII character a case-insensitive LIKE literal matches it with
    (``re``'s rules: "K" the Kelvin sign matches "k"), or itself when there is none."""
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch.lower())
            continue
        folded = _LIKE_FOLD.get(ch)
        if folded is None:
            folded = next(
                (
                    a
                    for a in "abcdefghijklmnopqrstuvwxyz"
                    if re.fullmatch(a, ch, re.IGNORECASE | re.DOTALL)
                ),
                ch,
            )
            _LIKE_FOLD[ch] = folded
        out.append(folded)
    return "".join(out)


def _like_ends(like: str) -> tuple[str, str]:
    """The literal text before the first and after the last wildcard of a LIKE regex (as
    ``_decode`` builds it: ``.*`` for %, ``.`` for _, every other character ``re.escape``d)."""
    tokens: list[str | None] = []  # None: a wildcard
    i = 0
    while i < len(like):
        if like.startswith(".*", i):
            tokens.append(None)
            i += 2
        elif like[i] == ".":
            tokens.append(None)
            i += 1
        elif like[i] == "\\" and i + 1 < len(like):
            tokens.append(like[i + 1])
            i += 2
        else:
            tokens.append(like[i])
            i += 1
    if None not in tokens:
        whole = "".join(t for t in tokens if t is not None)
        return whole, whole
    first = tokens.index(None)
    last = len(tokens) - 1 - tokens[::-1].index(None)
    lead = "".join(t for t in tokens[:first] if t is not None)
    trail = "".join(t for t in tokens[last + 1 :] if t is not None)
    return lead, trail


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension)\s*\d+\s*$", re.IGNORECASE)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _phone_key(value: str) -> str:
    digits = _digits(_EXTENSION.sub("", value))
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


def _words(value: str) -> list[str]:
    """Search tokens, case and accents folded: search finds "Zoë" for "zoe" (SOQL does not)."""
    folded = unicodedata.normalize("NFKD", value.casefold())
    return re.findall(r"\w+", "".join(ch for ch in folded if not unicodedata.combining(ch)))


def _error(code: str, message: str, fields: Sequence[str] = ()) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": list(fields)}


def _rest_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-record errors (``statusCode``) as a whole-request body (``errorCode``)."""
    out = []
    for e in errors:
        item = {"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}
        if "duplicateResult" in e:
            item["duplicateResult"] = e["duplicateResult"]
        out.append(item)
    return out


# ==========================================================================================
# The emulator
# ==========================================================================================


class SalesforceEmulator(Emulator):
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
        self.username = username
        self.password = password
        self.security_token = security_token
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.search_lag = search_lag
        # The standard Contact, Lead and Account duplicate rules (action "Allow" with an
        # alert: an API save is blocked unless the DuplicateRuleHeader says allowSave=true).
        self.duplicate_rule = duplicate_rule
        # "block": the rule's action is Block, which allowSave cannot pass.
        self.duplicate_action = "allow"
        # A custom Account rule on the normalized name alone (the standard one needs more).
        self.account_name_rule = False
        self.query_page_size = query_page_size
        # The certificate (or public key) PEM uploaded to the connected app for JWT bearer.
        self.jwt_certificate = jwt_certificate
        # False: an org where SOAP login() is disabled (the default for new orgs).
        self.soap_login_enabled = True
        # The integration user's "Customize Application" permission (Tooling API writes).
        self.can_customize = can_customize
        self._cursors: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._local = threading.local()  # per request: its DuplicateRuleHeader
        # Real orgs include the matched records in a DUPLICATES_DETECTED error; some API
        # paths do not. False exercises a client's fallback.
        self.duplicate_details = True
        self.session_ttl = session_ttl
        self.daily_limit = daily_limit
        self.api_used = 0
        self.concurrent_long_requests = concurrent_long_requests
        self.long_request_seconds = long_request_seconds
        self.schema = _default_schema()
        if not custom_fields:  # a fresh org: the fields syncd needs are not there yet
            for sobject, name in CUSTOM_FIELDS:
                del self.schema[sobject][name]
        self.write_counts: Counter[str] = Counter()
        self._records: dict[str, _Record] = {}
        self._by_prefix15: dict[str, str] = {}
        self._sequence = 0
        # Where each record sits in ``_records`` (the order a scan answers in), and indexes
        # built on first use by (kind, sObject, field), so a query reads only its candidates.
        self._position: dict[str, int] = {}
        self._positions = itertools.count()
        self._indexes: dict[tuple[str, str, str], _Index] = {}
        self._indexes_of: dict[str, list[_Index]] = {}
        self._full_scan = False  # tests: answer by the full scan, to compare with the indexes
        self._scans = 0  # full scans done: tests check the indexes were used
        # While a request may roll back: (record id, state before its first change here).
        self._undo: list[tuple[str, _Saved]] | None = None
        self._undo_depth = 0
        self._sessions: dict[str, float] = {}
        # Data API routes, unguarded: what a composite request's subrequests dispatch to.
        self._inner_routes: list[
            tuple[str, re.Pattern[str], str, Callable[[Request], Response]]
        ] = []
        # Operations carried out inside composite requests, by endpoint (``counts`` has the
        # HTTP requests, each composite once).
        self.composite_counts: Counter[str] = Counter()
        salesforce_users.install(self)  # User, OwnerId, the sandbox team
        self._routes_setup()

    # -- CrmEmulator API ---------------------------------------------------------------------
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

    # -- test helpers -------------------------------------------------------------------------
    def record(self, record_id: str) -> dict[str, Any] | None:
        """The stored fields of a record (deleted or not), for assertions."""
        with self.lock:
            found = self._find(record_id, include_deleted=True)
            return None if found is None else {"Id": found.id, **found.fields}

    def records(self, sobject: str) -> list[dict[str, Any]]:
        with self.lock:
            return [{"Id": r.id, **r.fields} for r in self._live(sobject)]

    def issue_session(self) -> str:
        """A valid session id, as an admin or another tool would hand one to syncd."""
        return self._new_session()

    def expire_sessions(self) -> None:
        """Invalidate every session now, as an admin's "log out all users" would."""
        with self.lock:
            self._sessions.clear()

    def add_field(self, sobject: str, name: str, *, external_id: bool = False) -> None:
        with self.lock:
            self.schema[sobject][name] = _Field(name, external_id=external_id)

    # -- storage ----------------------------------------------------------------------------
    def _new_id(self, sobject: str) -> str:
        self._sequence += 1
        return f"{_PREFIXES[sobject]}000{self._sequence:09d}AAA"

    def _seed(self, sobject: str, values: Mapping[str, Any]) -> str:
        with self.lock:
            record = _Record(sobject, self._new_id(sobject), dict(values))
            record.versions.append((float("-inf"), dict(values)))
            self._store(record)
            return record.id

    def _store(self, record: _Record) -> None:
        if record.id not in self._records:
            self._position[record.id] = next(self._positions)
            if self._undo is not None:
                self._undo.append((record.id, None))
        self._records[record.id] = record
        self._by_prefix15[record.id[:15]] = record.id
        for index in self._indexes_of.get(record.sobject, ()):
            index.file(record)

    def _touch(self, record: _Record) -> None:
        """Keep a record's state before it changes, while the request may still roll back."""
        if self._undo is not None:
            self._undo.append(
                (record.id, (record.deleted, dict(record.fields), list(record.versions)))
            )

    def _mark_deleted(self, record: _Record) -> None:
        self._touch(record)
        record.deleted = True

    def _find(self, record_id: str, *, include_deleted: bool = False) -> _Record | None:
        full = record_id if len(record_id) == 18 else self._by_prefix15.get(record_id[:15], "")
        record = self._records.get(full) if len(record_id) in (15, 18) else None
        if record is None or (record.deleted and not include_deleted):
            return None
        return record

    def _live(self, *sobjects: str) -> Iterator[_Record]:
        return (r for r in self._records.values() if r.sobject in sobjects and not r.deleted)

    def _candidates(self, sobject: str, ids: Iterable[str] | None) -> Iterator[_Record]:
        """The live records of ``sobject`` among ``ids``, in the order ``_live`` yields them;
        every live one (a full scan) for None."""
        if ids is None:
            self._scans += 1
            return self._live(sobject)
        found = [self._records[i] for i in ids if i in self._records]
        found.sort(key=lambda r: self._position[r.id])
        return (r for r in found if r.sobject == sobject and not r.deleted)

    # -- indexes ------------------------------------------------------------------------------
    def _index(self, kind: str, sobject: str, name: str = "") -> _Index:
        """The index of this kind, built over every stored record on first use."""
        spec = (kind, sobject, name)
        index = self._indexes.get(spec)
        if index is None:
            index = _Index(self._keys_function(kind, name))
            for record in self._records.values():
                if record.sobject == sobject:
                    index.file(record)
            self._indexes[spec] = index
            self._indexes_of.setdefault(sobject, []).append(index)
        return index

    def _keys_function(self, kind: str, name: str) -> Callable[[_Record], set[str]]:
        def text(record: _Record) -> str | None:
            value = self._value(record, name)  # what SOQL compares: Name computed, Id the id
            return None if value is None else str(value)

        def equal(record: _Record) -> set[str]:  # _equal: case-folded
            value = text(record)
            return set() if value is None else {value.casefold()}

        def id15(record: _Record) -> set[str]:  # _equal on ids: the first 15 characters
            value = text(record)
            return {value[:15]} if value is not None and len(value) in (15, 18) else set()

        def stored(record: _Record) -> set[str]:  # the raw field, as upserts compare it
            value = record.fields.get(name)
            return {value} if isinstance(value, str) else set()

        def affix(record: _Record) -> set[str]:  # LIKE: the first or last N characters
            value = text(record)
            size = int(kind[6:])
            if value is None or len(value) < size:
                return set()
            return {_like_fold(value[:size] if kind.startswith("prefix") else value[-size:])}

        def contact_phones(record: _Record) -> set[str]:  # the duplicate rule's keys
            return {_phone_key(str(record.fields.get(f) or "")) for f in ("Phone", "MobilePhone")}

        def search_phones(record: _Record) -> set[str]:  # _search_hit: equal or ends with
            out: set[str] = set()
            for _, values in record.versions:
                for field_name in _GROUP_FIELDS["PHONE"].get(record.sobject, ()):
                    theirs = _phone_key(str(values.get(field_name) or ""))
                    out.update(theirs[i:] for i in range(len(theirs) - 6))
            return out

        def search_words(record: _Record) -> set[str]:  # every version: the search lags
            texts = {str(v) for _, values in record.versions for v in values.values() if v}
            words = {w for t in texts for w in _words(t)}
            if kind == "words":
                return words
            return {w[:n] for w in words for n in range(1, min(len(w), _WORD_PREFIX) + 1)}

        functions: dict[str, Callable[[_Record], set[str]]] = {
            "equal": equal,
            "id15": id15,
            "stored": stored,
            **{f"{end}{size}": affix for end in ("prefix", "suffix") for size in _AFFIXES},
            "contact-phones": contact_phones,
            "search-phones": search_phones,
            "words": search_words,
            "word-starts": search_words,
        }
        return functions[kind]

    def _narrow(self, sobject: str, node: Any, seen: _Narrowed) -> set[str] | None:
        """Ids that may match a SOQL condition (a superset), or None when the indexes cannot
        tell (NOT, !=, ranges, numbers, null, LIKE without enough literal text). ``seen``
        gets the same for every AND and OR part, for ``_matches_within``."""
        if node is None or self._full_scan:
            return None
        found = self._narrow_node(sobject, node, seen)
        seen[id(node)] = found
        return found

    def _narrow_node(self, sobject: str, node: Any, seen: _Narrowed) -> set[str] | None:
        if isinstance(node, _Bool):
            if node.op == "NOT":
                return None
            return _combine(node.op, [self._narrow(sobject, part, seen) for part in node.parts])
        return self._narrow_comparison(sobject, node)

    def _narrow_comparison(self, sobject: str, node: _Cmp) -> set[str] | None:
        values = [node.value] if node.op in ("=", "LIKE") else node.value
        if node.op not in ("=", "IN", "LIKE") or not all(isinstance(v, _Str) for v in values):
            return None
        head, _, rest = node.field.partition(".")
        out: set[str] = set()
        if rest:
            # Account.Name = 'x': the records whose AccountId points at a record with Name 'x'
            # (of any sObject: a reference is read by its id alone).
            targets: set[str] = set()
            for target in self.schema:
                found = self._narrow_comparison(target, _Cmp(rest, node.op, node.value))
                if found is None:
                    return None
                targets |= found
            references = self._index("id15", sobject, head + "Id")
            for target_id in targets:
                out |= references.get(target_id[:15])
            return out
        if node.op == "LIKE":
            return self._narrow_like(sobject, node.field, node.value)
        id_like = node.field == "Id" or node.field.endswith("Id")
        equal = self._index("equal", sobject, node.field)
        ids = self._index("id15", sobject, node.field) if id_like else None
        for value in values:
            out |= equal.get(value.text.casefold())
            if ids is not None and len(value.text) in (15, 18):
                out |= ids.get(value.text[:15])
        return out

    def _narrow_like(self, sobject: str, name: str, value: _Str) -> set[str] | None:
        lead, trail = _like_ends(value.like)
        for size in _AFFIXES:
            if len(lead) >= size and lead[:size].isascii():
                return set(self._index(f"prefix{size}", sobject, name).get(lead[:size].lower()))
            if len(trail) >= size and trail[-size:].isascii():
                return set(self._index(f"suffix{size}", sobject, name).get(trail[-size:].lower()))
        return None

    def _narrow_search(
        self, sobject: str, node: Any, group: str, seen: _Narrowed
    ) -> set[str] | None:
        """Ids that may match a SOSL search (a superset): every version of a record is
        filed, since the lagging index may answer with an older one. ``seen`` gets the same
        for every part, for ``_search_hit_within``."""
        if self._full_scan:
            return None
        found = self._narrow_search_node(sobject, node, group, seen)
        seen[id(node)] = found
        return found

    def _narrow_search_node(
        self, sobject: str, node: Any, group: str, seen: _Narrowed
    ) -> set[str] | None:
        if isinstance(node, _Search):
            if node.op == "ANDNOT":
                self._narrow_search(sobject, node.parts[1], group, seen)
                return self._narrow_search(sobject, node.parts[0], group, seen)
            parts = [self._narrow_search(sobject, part, group, seen) for part in node.parts]
            return _combine(node.op, parts)
        term: Term = node
        found: set[str] = set()
        if group in ("PHONE", "ALL"):
            digits = _phone_key(term.text)
            if len(digits) >= 7:
                found |= self._index("search-phones", sobject).get(digits)
            if group == "PHONE":
                return found
        wanted = _words(term.text)
        if not wanted:
            return found
        words = self._index("words", sobject)
        sets = [words.get(w) for w in wanted[:-1]]
        if term.wildcard:
            sets.append(self._index("word-starts", sobject).get(wanted[-1][:_WORD_PREFIX]))
        else:
            sets.append(words.get(wanted[-1]))
        sets.sort(key=len)
        return found | set(sets[0]).intersection(*sets[1:])

    # -- routing ----------------------------------------------------------------------------
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

    def _limit_header(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.daily_limit}"}

    def _answer(self, payload: Any, status: int = 200) -> Response:
        with self.lock:
            headers = self._limit_header()
        return json_response(payload, status=status, headers=headers)

    def _api(self, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        """Session check, concurrency and daily limits, API version, then the handler."""

        def guarded(request: Request) -> Response:
            too_long = self._too_long(request)
            if too_long is not None:
                return too_long
            token = (request.header("Authorization") or "").removeprefix("Bearer ").strip()
            with self.lock:
                issued = self._sessions.get(token)
                expired = self.session_ttl is not None and issued is not None
                if expired and time.monotonic() - (issued or 0.0) >= (self.session_ttl or 0.0):
                    issued = None
                if issued is None:
                    return self._answer(
                        [
                            {
                                "message": "Session expired or invalid",
                                "errorCode": "INVALID_SESSION_ID",
                            }
                        ],
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

    def _run(self, handler: Callable[[Request], Response], request: Request) -> Response:
        if request.params.get("ver") not in API_VERSIONS:
            return self._not_found()
        try:
            return handler(request)
        except SyntaxProblem as exc:
            return self._answer([{"message": str(exc), "errorCode": exc.code}], 400)
        except (ValueError, TypeError, AttributeError) as exc:
            return self._answer([{"message": str(exc), "errorCode": "JSON_PARSER_ERROR"}], 400)

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

    # -- logins -----------------------------------------------------------------------------
    def _new_session(self) -> str:
        token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(24)}"
        with self.lock:
            self._sessions[token] = time.monotonic()
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

    # -- small resources --------------------------------------------------------------------
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

    def _not_found(self) -> Response:
        return self._answer(
            [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}], 404
        )

    # -- tooling ----------------------------------------------------------------------------
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
            self.schema[sobject][name] = _Field(
                name,
                length=length,
                external_id=bool(metadata.get("externalId")),
                sobject=sobject,
            )
            self._sequence += 1
            field_id = f"00N000{self._sequence:09d}AAA"
        return self._answer({"id": field_id, "success": True, "errors": [], "warnings": []}, 201)

    # -- composite --------------------------------------------------------------------------
    def _composite(self, request: Request) -> Response:
        """``POST composite``: up to 25 subrequests, at most 5 of them queries or sObject
        Collections, run in order; ``@{ref.path}`` in a url or body reads an earlier answer.
        One API call, whatever it contains."""
        body = request.json()
        subrequests = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subrequests, list) or not subrequests:
            return self._answer(
                [{"message": "compositeRequest is required", "errorCode": "INVALID_FIELD"}], 400
            )
        heavy = sum(1 for sub in subrequests if _HEAVY.search(str((sub or {}).get("url", ""))))
        if len(subrequests) > _MAX_SUBREQUESTS or heavy > _MAX_HEAVY_SUBREQUESTS:
            message = (
                f"A composite request may hold {_MAX_SUBREQUESTS} subrequests, of which"
                f" {_MAX_HEAVY_SUBREQUESTS} queries or sObject Collections"
            )
            return self._answer([{"message": message, "errorCode": "LIMIT_EXCEEDED"}], 400)
        all_or_none = bool(body.get("allOrNone"))
        answers: dict[str, Any] = {}
        out: list[dict[str, Any]] = []
        with self.lock, self._transaction() as savepoint:
            for sub in subrequests:
                reference = str(sub.get("referenceId") or "")
                try:
                    url = _resolve(str(sub.get("url") or ""), answers)
                    payload = _resolve(sub.get("body"), answers)
                except _Unresolved as exc:
                    out.append(
                        _subanswer(
                            reference,
                            400,
                            [{"message": str(exc), "errorCode": "PROCESSING_HALTED"}],
                        )
                    )
                    continue
                response = self._dispatch_inner(
                    str(sub.get("method") or "GET"), url, payload, request
                )
                answer = json.loads(response.body) if response.body else None
                if 200 <= response.status < 300:
                    answers[reference] = answer
                out.append(_subanswer(reference, response.status, answer))
            if all_or_none and any(a["httpStatusCode"] >= 300 for a in out):
                self._rollback(savepoint)
                halted = [
                    {
                        "message": "The transaction was rolled back since another operation"
                        " in the same transaction failed.",
                        "errorCode": "PROCESSING_HALTED",
                    }
                ]
                out = [
                    a if a["httpStatusCode"] >= 300 else _subanswer(a["referenceId"], 400, halted)
                    for a in out
                ]
        return self._answer({"compositeResponse": out})

    def _dispatch_inner(self, method: str, url: str, payload: Any, outer: Request) -> Response:
        parts = urlsplit(url)
        for route_method, pattern, endpoint, handler in self._inner_routes:
            match = pattern.fullmatch(parts.path)
            if route_method != method.upper() or match is None or endpoint == "composite":
                continue
            self.composite_counts[endpoint] += 1
            inner = Request(
                method=method.upper(),
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers=outer.headers,
                body=b"" if payload is None else json.dumps(payload).encode(),
                params={k: v for k, v in match.groupdict().items() if v is not None},
            )
            return self._run(handler, inner)
        return self._not_found()

    @contextmanager
    def _transaction(self) -> Iterator[tuple[int, int]]:
        """A savepoint for ``_rollback`` (caller holds the lock): the undo log's length and
        the id sequence. Transactions nest (a collection inside a composite request)."""
        if self._undo is None:
            self._undo = []
        self._undo_depth += 1
        try:
            yield len(self._undo), self._sequence
        finally:
            self._undo_depth -= 1
            if self._undo_depth == 0:
                self._undo = None

    # -- reading ----------------------------------------------------------------------------
    def _check_type(self, sobject: str) -> dict[str, _Field]:
        fields = self.schema.get(sobject)
        if fields is None:
            raise SyntaxProblem(f"sObject type '{sobject}' is not supported.", "INVALID_TYPE")
        return fields

    def _check_path(self, sobject: str, path: str) -> None:
        fields = self._check_type(sobject)
        head, _, rest = path.partition(".")
        if not rest:
            if head not in fields:
                raise SyntaxProblem(
                    f"No such column '{head}' on entity '{sobject}'.", "INVALID_FIELD"
                )
            return
        reference = fields.get(head + "Id")
        if reference is None or reference.type != "reference":
            raise SyntaxProblem(f"Didn't understand relationship '{head}'", "INVALID_FIELD")
        if not any(rest in self.schema[target] for target in reference.reference_to):
            raise SyntaxProblem(
                f"No such column '{rest}' on the {head} relationship", "INVALID_FIELD"
            )

    def _check_condition(self, sobject: str, node: Any) -> None:
        if isinstance(node, _Cmp):
            self._check_path(sobject, node.field)
        elif isinstance(node, _Bool):
            for part in node.parts:
                self._check_condition(sobject, part)

    def _value(self, record: _Record, path: str, fields: Mapping[str, Any] | None = None) -> Any:
        values = record.fields if fields is None else fields
        head, _, rest = path.partition(".")
        if rest:
            target = self._find(str(values.get(head + "Id") or ""))
            return None if target is None else self._value(target, rest)
        if head == "Id":
            return record.id
        if head == "Name" and record.sobject in ("Contact", "Lead"):
            name = " ".join(str(values.get(k) or "") for k in ("FirstName", "LastName")).strip()
            return name or None
        return values.get(head)

    def _matches(self, record: _Record, node: Any, fields: Mapping[str, Any] | None = None) -> bool:
        if node is None:
            return True
        if isinstance(node, _Bool):
            results = (self._matches(record, part, fields) for part in node.parts)
            if node.op == "AND":
                return all(results)
            if node.op == "OR":
                return any(results)
            return not next(results)
        value = self._value(record, node.field, fields)
        id_like = node.field == "Id" or node.field.endswith("Id")
        if node.op in ("IN", "NOTIN"):
            hit = any(_equal(value, v, id_like) for v in node.value)
            return hit if node.op == "IN" else not hit
        if node.op == "LIKE":
            pattern = re.compile(node.value.like, re.IGNORECASE | re.DOTALL)
            return value is not None and pattern.fullmatch(str(value)) is not None
        if node.op == "=":
            return _equal(value, node.value, id_like)
        if node.op == "!=":
            return not _equal(value, node.value, id_like)
        return _ordered(value, node.op, node.value)

    def _matches_within(self, record: _Record, node: Any, seen: _Narrowed) -> bool:
        """``_matches``, skipping the AND and OR parts whose candidates (``_narrow``) leave the
        record out: those cannot match it, so the answer is the same, without evaluating a
        hundred-part OR on every candidate."""
        if not seen:
            return self._matches(record, node)
        if isinstance(node, _Bool) and node.op != "NOT":
            results = (
                _may_match(seen, p, record.id) and self._matches_within(record, p, seen)
                for p in node.parts
            )
            return any(results) if node.op == "OR" else all(results)
        return self._matches(record, node)

    def _row(
        self, record: _Record, paths: Sequence[str], version: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        ver = API_VERSIONS[-1]
        row: dict[str, Any] = {
            "attributes": {
                "type": record.sobject,
                "url": f"/services/data/v{ver}/sobjects/{record.sobject}/{record.id}",
            }
        }
        values = record.fields if version is None else version
        for path in paths:
            head, _, rest = path.partition(".")
            if not rest:
                row[head] = self._value(record, head, values)
                continue
            target = self._find(str(values.get(head + "Id") or ""))
            if target is None:
                row[head] = None
                continue
            nested = row.get(head) or {
                "attributes": {
                    "type": target.sobject,
                    "url": f"/services/data/v{ver}/sobjects/{target.sobject}/{target.id}",
                }
            }
            nested[rest] = self._value(target, rest)
            row[head] = nested
        return row

    def _query(self, request: Request) -> Response:
        query = parse_soql(request.arg("q") or "")
        for path in query.fields:
            self._check_path(query.sobject, path)
        self._check_condition(query.sobject, query.where)
        with self.lock:
            seen: _Narrowed = {}
            ids = self._narrow(query.sobject, query.where, seen)
            candidates = self._candidates(query.sobject, ids)
            records = [r for r in candidates if self._matches_within(r, query.where, seen)]
            if query.order_by is not None:
                key_field, descending = query.order_by
                records.sort(key=lambda r: str(self._value(r, key_field) or ""), reverse=descending)
            if query.limit is not None:
                records = records[: query.limit]
            rows = [self._row(r, query.fields) for r in records]
        return self._page(request.params["ver"], rows, len(rows))

    def _page(self, version: str, rows: list[dict[str, Any]], total: int) -> Response:
        """One batch of a query's rows (SOQL and SOSL Reference, "Query Results": at most
        2,000 a batch, the rest behind ``nextRecordsUrl``)."""
        size = max(1, self.query_page_size)
        body: dict[str, Any] = {"totalSize": total, "done": len(rows) <= size}
        if len(rows) > size:
            locator = f"01g{secrets.token_hex(6).upper()}"
            with self.lock:
                self._cursors[locator] = (rows[size:], total)
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{size}"
        body["records"] = rows[:size]
        return self._answer(body)

    def _query_more(self, request: Request) -> Response:
        with self.lock:
            cursor = self._cursors.pop(request.params["locator"], None)
        if cursor is None:
            return self._answer(
                [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}], 400
            )
        return self._page(request.params["ver"], *cursor)

    def _search(self, request: Request) -> Response:
        query = parse_sosl(request.arg("q") or "")
        for term in query.terms():
            # SOSL Reference, FIND: a term must hold at least two characters.
            if len(term.text.strip()) < 2:
                raise SyntaxProblem(
                    "search term must be longer than one character", "INVALID_SEARCH"
                )
        specs = query.returning or tuple(_Returning(s) for s in ("Account", "Contact", "Lead"))
        for spec in specs:
            for path in spec.fields:
                self._check_path(spec.sobject, path)
            self._check_condition(spec.sobject, spec.where)
        horizon = time.monotonic() - self.search_lag
        rows: list[dict[str, Any]] = []
        with self.lock:
            for spec in specs:
                found = []
                seen: _Narrowed = {}
                ids = self._narrow_search(spec.sobject, query.search, query.group, seen)
                for record in self._candidates(spec.sobject, ids):
                    indexed = _indexed_version(record, horizon)
                    if indexed is None:
                        continue
                    if _search_hit_within(
                        query.search, record, indexed, query.group, seen
                    ) and self._matches(record, spec.where, indexed):
                        found.append(self._row(record, spec.fields, indexed))
                rows += found[: spec.limit] if spec.limit is not None else found
        limit = min(query.limit or 2000, 2000)
        return self._answer({"searchRecords": rows[:limit]})

    # -- writing ----------------------------------------------------------------------------
    def _write(
        self, sobject: str, values: Mapping[str, Any], existing: _Record | None = None
    ) -> tuple[_Record | None, list[dict[str, Any]]]:
        """Validate and store one record (caller holds the lock): (record, errors)."""
        schema = self.schema.get(sobject)
        if schema is None:
            return None, [_error("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")]
        clean: dict[str, Any] = {}
        not_writable = []
        for name, value in values.items():
            if name in ("attributes", "Id", "id"):
                continue
            spec = schema.get(name)
            if spec is None:
                return None, [
                    _error(
                        "INVALID_FIELD",
                        f"No such column '{name}' on sobject of type {sobject}",
                        [name],
                    )
                ]
            if not (spec.updateable if existing else spec.createable):
                not_writable.append(name)
                continue
            if value is not None and not isinstance(value, str | int | float | bool):
                return None, [
                    _error("JSON_PARSER_ERROR", f"Cannot deserialize value of {name}", [name])
                ]
            text = "" if value is None else str(value)
            if len(text) > spec.length:
                return None, [
                    _error(
                        "STRING_TOO_LONG",
                        f"{name}: data value too large: {text[:40]}... (max length={spec.length})",
                        [name],
                    )
                ]
            if spec.type == "email" and text and not _EMAIL.fullmatch(text):
                return None, [
                    _error(
                        "INVALID_EMAIL_ADDRESS", f"{name}: invalid email address: {text}", [name]
                    )
                ]
            if spec.type == "date" and text:
                try:
                    date.fromisoformat(text)
                except ValueError:
                    return None, [
                        _error(
                            "INVALID_TYPE_ON_FIELD_IN_RECORD",
                            f"{name}: value not of required type: {text}",
                            [name],
                        )
                    ]
            values_allowed = PICKLISTS.get((sobject, name))
            if values_allowed is not None and text and text not in values_allowed:
                return None, [
                    _error(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        f"{spec.name}: bad value for restricted picklist field: {text}",
                        [name],
                    )
                ]
            if spec.type == "reference" and text:
                problem = self._reference_problem(spec, text) or (
                    salesforce_users.owner_problem(name, self._find(text), sobject)
                )
                if problem is not None:
                    return None, [problem]
            clean[name] = text if value is not None else None
        if not_writable:
            return None, [
                _error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {', '.join(not_writable)}. Please check the"
                    " security settings of this field and verify that it is read/write for your"
                    " profile or permission set.",
                    not_writable,
                )
            ]
        merged = {**(existing.fields if existing else {}), **clean}
        if existing is None:
            salesforce_users.default_owner(sobject, merged)
        missing = [f.name for f in schema.values() if f.required and not merged.get(f.name)]
        if missing:
            return None, [
                _error(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
            ]
        if self.duplicate_rule and sobject in _DUPLICATE_RULES and not self._save_allowed():
            # Duplicate Management: active rules run on create and on edit, through the API
            # as in the UI (upserts too); the alert blocks an API save unless allowed.
            duplicates = self._duplicates_of(sobject, merged, existing)
            if duplicates:
                return None, [self._duplicate_error(sobject, duplicates)]
        if existing is not None:
            self._touch(existing)
        record = existing or _Record(sobject, self._new_id(sobject), {})
        record.fields = merged
        record.versions.append((time.monotonic(), dict(merged)))
        del record.versions[:-5]
        self._store(record)
        return record, []

    def _reference_problem(self, spec: _Field, value: str) -> dict[str, Any] | None:
        target = self._find(value, include_deleted=True)
        if target is None or target.sobject not in spec.reference_to:
            return _error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [spec.name])
        if target.deleted:
            return _error("ENTITY_IS_DELETED", "entity is deleted", [spec.name])
        return None

    def _save_allowed(self) -> bool:
        """SOAP/REST ``DuplicateRuleHeader``: ``allowSave=true`` saves past a rule whose
        action is Allow (with an alert); a Block rule holds whatever the header says."""
        header = str(getattr(self._local, "duplicate_header", "") or "")
        allow = re.search(r"allowSave\s*=\s*true", header, re.IGNORECASE) is not None
        return allow and self.duplicate_action == "allow"

    def _duplicates_of(
        self, sobject: str, values: Mapping[str, Any], existing: _Record | None
    ) -> list[_Record]:
        """Live records the standard matching rule pairs with ``values`` (the record being
        saved itself excepted), narrowed by phone and email indexes before the rule runs."""
        found: list[_Record] = []
        for other in _DUPLICATE_RULES[sobject]:
            if sobject == "Account":
                ids: set[str] | None = None
            elif self._full_scan:
                ids = None
            else:
                ids = set()
                phones = self._index("contact-phones", other)
                for name in ("Phone", "MobilePhone"):
                    key = _phone_key(str(values.get(name) or ""))
                    if len(key) >= 7:
                        ids |= phones.get(key)
                email = str(values.get("Email") or "")
                if email:
                    ids |= self._index("equal", other, "Email").get(email.casefold())
            for record in self._candidates(other, ids):
                if existing is not None and record.id == existing.id:
                    continue
                if sobject == "Account":
                    hit = account_rule_matches(
                        values, record.fields, name_only=self.account_name_rule
                    )
                else:
                    hit = person_rule_matches(values, record.fields)
                if hit:
                    found.append(record)
        return found

    def _duplicate_error(self, sobject: str, matches: Sequence[_Record]) -> dict[str, Any]:
        """DUPLICATES_DETECTED as the REST API reports it (SOAP API Developer Guide,
        ``DuplicateError`` / ``DuplicateResult``): the rule, and per matched object the
        records found."""
        message = "Use one of these records?"
        error = _error("DUPLICATES_DETECTED", message)
        if self.duplicate_details:
            ver = API_VERSIONS[-1]
            by_type: dict[str, list[_Record]] = {}
            for match in matches:
                by_type.setdefault(match.sobject, []).append(match)
            error["duplicateResult"] = {
                "allowSave": self.duplicate_action == "allow",
                "duplicateRule": f"Standard_{sobject}_Duplicate_Rule",
                "duplicateRuleEntityType": sobject,
                "errorMessage": message,
                "matchResults": [
                    {
                        "entityType": entity,
                        "errors": [],
                        "matchEngine": "FuzzyMatchEngine",
                        "matchRecords": [
                            {
                                "additionalInformation": [],
                                "fieldDiffs": [],
                                "matchConfidence": 100.0,
                                "record": {
                                    "attributes": {
                                        "type": entity,
                                        "url": f"/services/data/v{ver}/sobjects/{entity}/{r.id}",
                                    },
                                    "Id": r.id,
                                },
                            }
                            for r in records
                        ],
                        "rule": f"Standard_{entity}_Match_Rule_v1_1",
                        "size": len(records),
                        "success": True,
                    }
                    for entity, records in by_type.items()
                ],
            }
        return error

    def _counted_write(self, endpoint: str) -> None:
        with self.lock:
            self.write_counts[endpoint] += 1

    def _sobject_create(self, request: Request) -> Response:
        self._counted_write("sobject.create")
        with self.lock:
            record, errors = self._write(request.params["type"], request.json() or {})
        if record is None:
            return self._answer(_rest_errors(errors), 400)
        return self._answer({"id": record.id, "success": True, "errors": []}, 201)

    def _sobject_get(self, request: Request) -> Response:
        with self.lock:
            record = self._find(request.params["id"])
            if record is None or record.sobject != request.params["type"]:
                return self._not_found()
            row = self._row(record, list(self.schema[record.sobject]))
        return self._answer(row)

    def _sobject_update(self, request: Request) -> Response:
        self._counted_write("sobject.update")
        with self.lock:
            found = self._find(request.params["id"], include_deleted=True)
            if found is None or found.sobject != request.params["type"]:
                return self._not_found()
            if found.deleted:
                return self._answer(
                    [
                        {
                            "message": "entity is deleted",
                            "errorCode": "ENTITY_IS_DELETED",
                            "fields": [],
                        }
                    ],
                    404,
                )
            record, errors = self._write(found.sobject, request.json() or {}, found)
        if record is None:
            return self._answer(_rest_errors(errors), 400)
        return Response(204, b"", self._limit_header())

    def _sobject_delete(self, request: Request) -> Response:
        self._counted_write("sobject.delete")
        with self.lock:
            record = self._find(request.params["id"])
            if record is None or record.sobject != request.params["type"]:
                return self._not_found()
            self._mark_deleted(record)
        return Response(204, b"", self._limit_header())

    def _collection_body(self, request: Request) -> tuple[list[Any], bool] | Response:
        body = request.json()
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            return self._answer(
                [{"message": "records is required", "errorCode": "INVALID_FIELD"}], 400
            )
        if len(records) > _MAX_COLLECTION:
            return self._answer(
                [
                    {
                        "message": "record limit reached. cannot submit more than 200 records"
                        " into this call",
                        "errorCode": "EXCEEDED_ID_LIMIT",
                    }
                ],
                400,
            )
        return records, bool(body.get("allOrNone"))

    def _collection(
        self,
        request: Request,
        endpoint: str,
        one: Callable[[Any, set[str]], dict[str, Any]],
    ) -> Response:
        parsed = self._collection_body(request)
        if isinstance(parsed, Response):
            return parsed
        records, all_or_none = parsed
        self._counted_write(endpoint)
        with self.lock, self._transaction() as savepoint:
            seen: set[str] = set()
            results = [one(item, seen) for item in records]
            if all_or_none and not all(r["success"] for r in results):
                self._rollback(savepoint)
                results = [
                    r
                    if not r["success"]
                    else {
                        "id": None,
                        "success": False,
                        "errors": [
                            _error(
                                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                "Record rolled back because not all records were valid and the"
                                " request was using AllOrNone header",
                            )
                        ],
                    }
                    for r in results
                ]
        return self._answer(results)

    def _rollback(self, savepoint: tuple[int, int]) -> None:
        """Undo every change since the savepoint, newest first: the records the request
        created go, the ones it changed or deleted get back their state."""
        mark, sequence = savepoint
        undo = self._undo if self._undo is not None else []
        while len(undo) > mark:
            rid, saved = undo.pop()
            record = self._records[rid]
            if saved is None:
                del self._records[rid]
                self._by_prefix15.pop(rid[:15], None)
                del self._position[rid]
                for index in self._indexes_of.get(record.sobject, ()):
                    index.drop(rid)
            else:
                record.deleted, record.fields, record.versions = saved
                for index in self._indexes_of.get(record.sobject, ()):
                    index.file(record)
        self._sequence = sequence

    def _coll_create(self, request: Request) -> Response:
        def one(item: Any, seen: set[str]) -> dict[str, Any]:
            sobject = str(((item or {}).get("attributes") or {}).get("type") or "")
            if not sobject:
                return _failed([_error("INVALID_TYPE", "Must send a concrete entity type.")])
            if item.get("id") or item.get("Id"):
                return _failed(
                    [_error("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])]
                )
            record, errors = self._write(sobject, item)
            return (
                _failed(errors)
                if record is None
                else {"id": record.id, "success": True, "errors": []}
            )

        return self._collection(request, "collections.create", one)

    def _coll_update(self, request: Request) -> Response:
        def one(item: Any, seen: set[str]) -> dict[str, Any]:
            record_id = str((item or {}).get("id") or (item or {}).get("Id") or "")
            if record_id in seen:
                return _failed(
                    [_error("DUPLICATE_VALUE", f"Duplicate id in list: {record_id}", [])]
                )
            seen.add(record_id)
            target = self._find(record_id, include_deleted=True)
            if target is None:
                return _failed([_error("MALFORMED_ID", f"invalid record id: {record_id}", ["Id"])])
            if target.deleted:
                return _failed([_error("ENTITY_IS_DELETED", "entity is deleted", [])])
            sobject = str((item.get("attributes") or {}).get("type") or target.sobject)
            if sobject != target.sobject:
                return _failed([_error("INVALID_TYPE", f"id {record_id} is not a {sobject}")])
            record, errors = self._write(sobject, item, target)
            return (
                _failed(errors)
                if record is None
                else {"id": record.id, "success": True, "errors": []}
            )

        return self._collection(request, "collections.update", one)

    def _coll_upsert(self, request: Request) -> Response:
        sobject, key_field = request.params["type"], request.params["field"]
        spec = self.schema.get(sobject, {}).get(key_field)
        if spec is None or not spec.external_id:
            return self._answer(
                [
                    {
                        "message": "Provided external ID field does not exist or is not"
                        f" accessible: {key_field}",
                        "errorCode": "NOT_FOUND",
                    }
                ],
                404,
            )

        def one(item: Any, seen: set[str]) -> dict[str, Any]:
            declared = ((item or {}).get("attributes") or {}).get("type")
            if declared != sobject:
                return _failed([_error("INVALID_TYPE", f"records must be of type {sobject}")])
            key = str(item.get(key_field) or "")
            if not key:
                return _failed(
                    [_error("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])]
                )
            if key in seen:
                return _failed(
                    [
                        _error(
                            "DUPLICATE_EXTERNAL_ID",
                            f"Duplicate external id specified: {key}",
                            [key_field],
                        )
                    ]
                )
            seen.add(key)
            ids = None if self._full_scan else self._index("stored", sobject, key_field).get(key)
            candidates = self._candidates(sobject, ids)
            matches = [r for r in candidates if r.fields.get(key_field) == key]
            if len(matches) > 1:
                return _failed(
                    [
                        _error(
                            "DUPLICATE_EXTERNAL_ID",
                            f"{key_field}: more than one record found for external id field: {key}",
                            [key_field],
                        )
                    ]
                )
            existing = matches[0] if matches else None
            record, errors = self._write(sobject, item, existing)
            if record is None:
                return _failed(errors)
            return {"id": record.id, "success": True, "errors": [], "created": existing is None}

        return self._collection(request, "collections.upsert", one)


# ==========================================================================================
# Helpers for matching
# ==========================================================================================


_MAX_SUBREQUESTS = 25
# The objects each standard duplicate rule compares a saved record with.
_DUPLICATE_RULES: dict[str, tuple[str, ...]] = {
    "Contact": ("Contact",),
    "Lead": ("Lead", "Contact"),
    "Account": ("Account",),
}
_MAX_HEAVY_SUBREQUESTS = 5
_HEAVY = re.compile(r"/(?:query|queryAll)/?(?:\?|$)|/composite/sobjects")
_REF = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_REF_STEP = re.compile(r"\.([A-Za-z0-9_]+)|\[(\d+)\]")


class _Unresolved(Exception):
    """A composite reference to an answer that failed or lacks the field."""


def _reference(match: re.Match[str], answers: Mapping[str, Any]) -> Any:
    name, path = match.group(1), match.group(2)
    if name not in answers:
        raise _Unresolved(
            f"Invalid reference specified. Provided referenceId ('{name}') was undefined or null"
        )
    value = answers[name]
    for field_name, index in _REF_STEP.findall(path):
        try:
            value = value[int(index)] if index else value[field_name]
        except (KeyError, IndexError, TypeError):
            value = None
        if value is None:
            raise _Unresolved(f"Invalid reference specified. No value for {name}{path} found.")
    return value


def _resolve(value: Any, answers: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole is not None:
            return _reference(whole, answers)
        return _REF.sub(lambda m: str(_reference(m, answers)), value)
    if isinstance(value, dict):
        return {k: _resolve(v, answers) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, answers) for v in value]
    return value


def _subanswer(reference: str, status: int, body: Any) -> dict[str, Any]:
    return {"body": body, "httpHeaders": {}, "httpStatusCode": status, "referenceId": reference}


def _failed(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": None, "success": False, "errors": errors}


def _marker(subject: str) -> str | None:
    start = subject.rfind(" [syncd:")
    if start < 0 or not subject.endswith("]"):
        return None
    return subject[start + 2 : -1]


def _equal(value: Any, literal: Any, id_like: bool) -> bool:
    if literal is None:
        return value is None or value == ""
    if isinstance(literal, bool):
        return value is literal
    if isinstance(literal, float):
        try:
            return value is not None and float(value) == literal
        except (TypeError, ValueError):
            return False
    if value is None:
        return False
    text = literal.text if isinstance(literal, _Str) else str(literal)
    if id_like and len(text) in (15, 18) and len(str(value)) in (15, 18):
        return str(value)[:15] == text[:15]
    return str(value).casefold() == text.casefold()


def _ordered(value: Any, op: str, literal: Any) -> bool:
    if value is None or literal is None:
        return False
    left: Any
    right: Any
    if isinstance(literal, float):
        try:
            left, right = float(value), literal
        except (TypeError, ValueError):
            return False
    else:
        left = str(value).casefold()
        right = (literal.text if isinstance(literal, _Str) else str(literal)).casefold()
    return bool(
        {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
    )


def _indexed_version(record: _Record, horizon: float) -> dict[str, Any] | None:
    """The record as the search index knows it: its newest version written before horizon."""
    for written, values in record.versions[::-1]:
        if written <= horizon:
            return values
    return None


_GROUP_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "NAME": {
        "Account": ("Name",),
        "Contact": ("FirstName", "LastName"),
        "Lead": ("FirstName", "LastName", "Company"),
    },
    "EMAIL": {"Contact": ("Email",), "Lead": ("Email",)},
    "PHONE": {
        "Account": ("Phone",),
        "Contact": ("Phone", "MobilePhone"),
        "Lead": ("Phone", "MobilePhone"),
    },
}


def _may_match(seen: _Narrowed, node: Any, record_id: str) -> bool:
    """False when the indexes rule the record out for this part of a query."""
    ids = seen.get(id(node))
    return ids is None or record_id in ids


def _search_hit_within(
    node: Any, record: _Record, values: Mapping[str, Any], group: str, seen: _Narrowed
) -> bool:
    """``_search_hit``, skipping the parts whose candidates (``_narrow_search``) leave the
    record out: those cannot match it, so the answer is the same."""
    if not seen:
        return _search_hit(node, record.sobject, values, group)
    if isinstance(node, _Search):

        def hit(part: Any) -> bool:
            return _may_match(seen, part, record.id) and _search_hit_within(
                part, record, values, group, seen
            )

        if node.op == "OR":
            return any(hit(p) for p in node.parts)
        if node.op == "AND":
            return all(hit(p) for p in node.parts)
        first, second = node.parts
        return hit(first) and not hit(second)
    return _search_hit(node, record.sobject, values, group)


def _search_hit(node: Any, sobject: str, values: Mapping[str, Any], group: str) -> bool:
    if isinstance(node, _Search):
        if node.op == "OR":
            return any(_search_hit(p, sobject, values, group) for p in node.parts)
        if node.op == "AND":
            return all(_search_hit(p, sobject, values, group) for p in node.parts)
        first, second = node.parts
        return _search_hit(first, sobject, values, group) and not _search_hit(
            second, sobject, values, group
        )
    term: Term = node
    phone_fields = _GROUP_FIELDS["PHONE"].get(sobject, ())
    if group in ("PHONE", "ALL"):
        digits = _phone_key(term.text)
        if len(digits) >= 7 and not re.search(r"[^\d\s().+\-]", term.text):
            for name in phone_fields:
                theirs = _phone_key(str(values.get(name) or ""))
                if theirs and (
                    theirs == digits or (len(digits) < len(theirs) and theirs.endswith(digits))
                ):
                    return True
        if group == "PHONE":
            return False
    if group in ("NAME", "EMAIL"):
        names = _GROUP_FIELDS[group].get(sobject, ())
    else:
        names = tuple(k for k, v in values.items() if isinstance(v, str))
    wanted = _words(term.text)
    if not wanted:
        return False
    for name in names:
        have = _words(str(values.get(name) or ""))
        for start in range(len(have) - len(wanted) + 1):
            window = have[start : start + len(wanted)]
            if window[:-1] == wanted[:-1] and (
                window[-1] == wanted[-1] or (term.wildcard and window[-1].startswith(wanted[-1]))
            ):
                return True
    return False


def _combine(op: str, parts: list[set[str] | None]) -> set[str] | None:
    """Candidates of an OR (the union; None, "cannot narrow", if any part is) or of an AND
    (the intersection of the parts that narrow)."""
    if op == "OR":
        out: set[str] = set()
        for part in parts:
            if part is None:
                return None
            out |= part
        return out
    known = sorted((p for p in parts if p is not None), key=len)
    return set.intersection(*known) if known else None

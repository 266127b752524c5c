"""The portal's data: records and their snapshots, properties, links, the indexes upon them.

Every other part of the emulator reads and writes through :class:`PortalRecords`, the base of
the emulator class. A write keeps a snapshot of the record that search may see only after
``search_lag`` (CRM search guide: "it may take a few moments for newly created or updated
objects to appear"); batch reads see the record at once. Unique-value properties are indexed
for ``idProperty`` reads and upserts; search's postings are a superset of what it may see.
"""

from __future__ import annotations

import re
import time
import unicodedata
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syncd.sandbox.http import Emulator, Response, json_response

from .phones import searchable_phone
from .schema import DEFAULT_RETURNED, READ_ONLY

__all__ = [
    "ACTIVITY_TYPES",
    "ASSOCIATIONS",
    "MAX_BATCH",
    "MAX_TEXT",
    "OBJECT_TYPES",
    "PRIMARY_COMPANY",
    "SINGULAR",
    "TYPE_IDS",
    "UNIQUE_ALLOWED",
    "PortalRecords",
    "PropertyDef",
    "Record",
    "Refused",
    "default_group",
    "error_body",
    "fold_token",
    "now_iso",
    "value_tokens",
]

OBJECT_TYPES = ("contacts", "companies", "notes", "calls", "tasks")

TYPE_IDS = {
    "contacts": "0-1",
    "companies": "0-2",
    "notes": "0-46",
    "calls": "0-48",
    "tasks": "0-27",
}

SINGULAR = {
    "contacts": "CONTACT",
    "companies": "COMPANY",
    "notes": "NOTE",
    "calls": "CALL",
    "tasks": "TASK",
}

ACTIVITY_TYPES = ("notes", "calls", "tasks")

# HUBSPOT_DEFINED association type id -> (from, to), with the inverse type id.
ASSOCIATIONS: dict[int, tuple[str, str, int]] = {
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

PRIMARY_COMPANY = 1

MAX_BATCH = 100

# Knowledge base, "Property field types in HubSpot": text added through the CRM.
MAX_TEXT = 65_536

# Objects that may hold unique-value properties here (see the module docstring).
UNIQUE_ALLOWED = frozenset({"contacts", "companies"})

_TOKEN_SPLIT = re.compile(r"[\s<>]+")

_EDGE_PUNCTUATION = ".,;:!?()[]{}\"'"


def default_group(object_type: str) -> str:
    return f"{object_type[:-1]}information"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Refused(Exception):
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


def error_body(
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
class Record:
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
class PropertyDef:
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
            "groupName": self.group or default_group(object_type),
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


class PortalRecords(Emulator):
    """Records, properties and links (callers hold ``lock``), and how a batch answers."""

    search_lag: float
    _records: dict[str, Record]
    _by_type: dict[str, dict[str, Record]]
    _archived: dict[str, Record]
    # from id -> {(to id, type id)}; both directions are stored.
    _links: dict[str, set[tuple[str, int]]]
    # (object type, unique property) -> {folded value: record id}
    _unique: dict[tuple[str, str], dict[str, str]]
    _unique_of: dict[str, dict[tuple[str, str], str]]  # the reverse
    _properties: dict[str, dict[str, PropertyDef]]
    _groups: dict[str, dict[str, str]]  # object type -> group name -> label
    # Search narrows its candidates with postings: (kind, object type, property) -> term ->
    # ids of the records any of whose kept snapshots holds the term ("value": the folded
    # value EQ and IN compare; "token": a folded CONTAINS_TOKEN token). A superset of what
    # search may see under lag; the filters then test each candidate. Built on the first
    # search that can use them, kept in step by every write after that.
    _postings: dict[tuple[str, str, str], dict[str, set[str]]]
    _posted: dict[str, dict[tuple[str, str, str], set[str]]]  # id -> terms held
    _full_scan: bool  # tests: search by testing every record, as a reference
    _next_id: int
    _writes: int  # write requests carried out

    def _now(self) -> float:
        """The clock of search's lag and of the rate limits' windows."""
        return time.monotonic()

    def _new_id(self) -> str:
        record_id = str(self._next_id)
        self._next_id += 1
        return record_id

    def _get(self, object_type: str, record_id: str) -> Record | None:
        record = self._records.get(str(record_id))
        return record if record is not None and record.type == object_type else None

    def _find_unique(self, object_type: str, prop: str, value: str) -> Record | None:
        record_id = self._unique.get((object_type, prop), {}).get(value.casefold())
        return self._get(object_type, record_id) if value and record_id else None

    def _reindex(self, record: Record) -> None:
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

    def _derive(self, record: Record) -> None:
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

    def _store(self, record: Record, *, lag: float | None = None) -> None:
        self._derive(record)
        self._records[record.id] = record
        self._by_type[record.type][record.id] = record
        self._reindex(record)
        visible_at = self._now() + (self.search_lag if lag is None else lag)
        if lag is not None and lag <= 0:
            visible_at = float("-inf")
        record.index.append((visible_at, dict(record.props)))
        # Older snapshots are only needed until the newest one is visible.
        now = self._now()
        while len(record.index) > 1 and record.index[1][0] <= now:
            record.index.pop(0)
        for key, postings in self._postings.items():
            if key[1] == record.type:
                self._post(record, key, postings)

    def _post(
        self, record: Record, key: tuple[str, str, str], postings: dict[str, set[str]]
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

    def _link(self, from_id: str, to_id: str, type_id: int) -> None:
        inverse = ASSOCIATIONS[type_id][2]
        self._links.setdefault(from_id, set()).add((to_id, type_id))
        self._links.setdefault(to_id, set()).add((from_id, inverse))
        if type_id == PRIMARY_COMPANY:
            contact = self._get("contacts", from_id)
            if contact is not None:
                contact.props["associatedcompanyid"] = to_id
                self._store(contact)

    def _archive(self, record_id: str) -> bool:
        with self.lock:
            record = self._records.pop(record_id, None)
            if record is None:
                return False
            record.archived_at = now_iso()
            self._archived[record.id] = record
            del self._by_type[record.type][record.id]
            self._unindex(record.id)
            self._unpost(record.id)
            for target, _ in self._links.pop(record.id, set()):
                self._links[target] = {
                    link for link in self._links.get(target, set()) if link[0] != record.id
                }
            return True

    @staticmethod
    def _inputs(body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, Mapping) or not isinstance(body.get("inputs"), list):
            raise Refused(400, "Invalid input JSON: 'inputs' is required")
        inputs = body["inputs"]
        if not inputs:
            raise Refused(400, "inputs: size must be between 1 and 100")
        if len(inputs) > MAX_BATCH:
            raise Refused(
                400, f"inputs: size must be between 1 and {MAX_BATCH} (received {len(inputs)})"
            )
        if not all(isinstance(i, Mapping) for i in inputs):
            raise Refused(400, "Invalid input JSON: each input must be an object")
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
            "startedAt": now_iso(),
            "completedAt": now_iso(),
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
            "message": f"Could not get some {SINGULAR[object_type]} objects, they may be deleted "
            "or not exist. Check that ids are valid.",
            "context": {"ids": ids},
        }


def fold_token(token: str) -> str:
    """A search token as the index keeps it: lowercase, accents off, edge punctuation off.

    An assumption about HubSpot's analyzer (text search engines commonly fold this way);
    exact-value operators (EQ, IN) are not folded beyond case.
    """
    decomposed = unicodedata.normalize("NFKD", token.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return bare.strip(_EDGE_PUNCTUATION) or bare


def value_tokens(text: str) -> Iterator[str]:
    """The folded tokens of a (casefolded) property value, as CONTAINS_TOKEN sees them."""
    return (fold_token(t) for t in _TOKEN_SPLIT.split(text) if t)


def _terms(kind: str, values: Iterable[str]) -> set[str]:
    """The posting terms of a property's values: what EQ/IN or CONTAINS_TOKEN compares."""
    folded = [v.casefold() for v in values]
    if kind == "value":
        return {v for v in folded if v}  # an empty value never passes EQ or IN
    return {t for v in folded for t in value_tokens(v)}

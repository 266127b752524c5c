"""The org's data: records, the indexes that find them, the undo log that rolls them back.

Every other part of the emulator reads and writes records through :class:`OrgRecords`, the base
of the emulator class. A record keeps its last few versions with the time each was written:
SOQL reads the newest, while SOSL reads what its lagging index had seen (``search.py``).
Indexes are only ever prefilters, kept current on every write and rollback; the exact matchers
still run on their candidates, so an answer is what a scan of every record would give.
"""

from __future__ import annotations

import itertools
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from syncd.sandbox.http import Emulator, Request, Response, json_response

from .query import SyntaxProblem
from .schema import API_VERSIONS, PREFIXES, Field

__all__ = [
    "AFFIXES",
    "GROUP_FIELDS",
    "WORD_PREFIX",
    "Index",
    "Narrowed",
    "OrgRecords",
    "Record",
    "fold_words",
    "phone_key",
    "record_error",
]


@dataclass
class Record:
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
Narrowed = dict[int, set[str] | None]


class Index:
    """Keys to the ids of one sObject's records, kept current on every write and rollback.

    Only ever a prefilter: each bucket is a superset of the records a condition or search term
    can match, and the exact matcher still runs on them. Deleted records stay filed (the
    readers skip them), so deleting needs no upkeep."""

    __slots__ = ("buckets", "held", "keys_of")

    def __init__(self, keys_of: Callable[[Record], set[str]]) -> None:
        self.keys_of = keys_of
        self.buckets: dict[str, set[str]] = {}
        self.held: dict[str, frozenset[str]] = {}  # id -> the keys it is filed under

    def file(self, record: Record) -> None:
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
# word's first WORD_PREFIX letters.
AFFIXES = (64, 48, 32, 24, 20, *range(16, 0, -1))

WORD_PREFIX = 3

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


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


_EXTENSION = re.compile(r"\s*(?:x|ext\.?|extension)\s*\d+\s*$", re.IGNORECASE)


def phone_key(value: str) -> str:
    digits = _digits(_EXTENSION.sub("", value))
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


def fold_words(value: str) -> list[str]:
    """Search tokens, case and accents folded: search finds "Zoë" for "zoe" (SOQL does not)."""
    folded = unicodedata.normalize("NFKD", value.casefold())
    return re.findall(r"\w+", "".join(ch for ch in folded if not unicodedata.combining(ch)))


GROUP_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
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


def record_error(code: str, message: str, fields: Sequence[str] = ()) -> dict[str, Any]:
    return {"statusCode": code, "message": message, "fields": list(fields)}


class OrgRecords(Emulator):
    """Records and their indexes (callers hold ``lock``), and how a data API answer is made."""

    schema: dict[str, dict[str, Field]]
    api_used: int
    daily_limit: int
    _records: dict[str, Record]
    _by_prefix15: dict[str, str]
    _sequence: int
    # Where each record sits in ``_records`` (the order a scan answers in), and indexes
    # built on first use by (kind, sObject, field), so a query reads only its candidates.
    _position: dict[str, int]
    _positions: Iterator[int]
    _indexes: dict[tuple[str, str, str], Index]
    _indexes_of: dict[str, list[Index]]
    _full_scan: bool  # tests: answer by the full scan, to compare with the indexes
    _scans: int  # full scans done: tests check the indexes were used
    # While a request may roll back: (record id, state before its first change here).
    _undo: list[tuple[str, _Saved]] | None
    _undo_depth: int

    def _init_records(self, schema: dict[str, dict[str, Field]], daily_limit: int) -> None:
        self.schema = schema
        self.api_used = 0
        self.daily_limit = daily_limit
        self._records = {}
        self._by_prefix15 = {}
        self._sequence = 0
        self._position = {}
        self._positions = itertools.count()
        self._indexes = {}
        self._indexes_of = {}
        self._full_scan = False
        self._scans = 0
        self._undo = None
        self._undo_depth = 0

    def _now(self) -> float:
        """The clock versions are written by and the search index lags on."""
        return time.monotonic()

    def _new_id(self, sobject: str) -> str:
        self._sequence += 1
        return f"{PREFIXES[sobject]}000{self._sequence:09d}AAA"

    def _seed(self, sobject: str, values: Mapping[str, Any]) -> str:
        with self.lock:
            record = Record(sobject, self._new_id(sobject), dict(values))
            record.versions.append((float("-inf"), dict(values)))
            self._store(record)
            return record.id

    def _store(self, record: Record) -> None:
        if record.id not in self._records:
            self._position[record.id] = next(self._positions)
            if self._undo is not None:
                self._undo.append((record.id, None))
        self._records[record.id] = record
        self._by_prefix15[record.id[:15]] = record.id
        for index in self._indexes_of.get(record.sobject, ()):
            index.file(record)

    def _touch(self, record: Record) -> None:
        """Keep a record's state before it changes, while the request may still roll back."""
        if self._undo is not None:
            self._undo.append(
                (record.id, (record.deleted, dict(record.fields), list(record.versions)))
            )

    def _mark_deleted(self, record: Record) -> None:
        self._touch(record)
        record.deleted = True

    def _find(self, record_id: str, *, include_deleted: bool = False) -> Record | None:
        full = record_id if len(record_id) == 18 else self._by_prefix15.get(record_id[:15], "")
        record = self._records.get(full) if len(record_id) in (15, 18) else None
        if record is None or (record.deleted and not include_deleted):
            return None
        return record

    def _live(self, *sobjects: str) -> Iterator[Record]:
        return (r for r in self._records.values() if r.sobject in sobjects and not r.deleted)

    def _candidates(self, sobject: str, ids: Iterable[str] | None) -> Iterator[Record]:
        """The live records of ``sobject`` among ``ids``, in the order ``_live`` yields them;
        every live one (a full scan) for None."""
        if ids is None:
            self._scans += 1
            return self._live(sobject)
        found = [self._records[i] for i in ids if i in self._records]
        found.sort(key=lambda r: self._position[r.id])
        return (r for r in found if r.sobject == sobject and not r.deleted)

    def _index(self, kind: str, sobject: str, name: str = "") -> Index:
        """The index of this kind, built over every stored record on first use."""
        spec = (kind, sobject, name)
        index = self._indexes.get(spec)
        if index is None:
            index = Index(self._keys_function(kind, name))
            for record in self._records.values():
                if record.sobject == sobject:
                    index.file(record)
            self._indexes[spec] = index
            self._indexes_of.setdefault(sobject, []).append(index)
        return index

    def _keys_function(self, kind: str, name: str) -> Callable[[Record], set[str]]:
        def text(record: Record) -> str | None:
            value = self._value(record, name)  # what SOQL compares: Name computed, Id the id
            return None if value is None else str(value)

        def equal(record: Record) -> set[str]:  # _equal: case-folded
            value = text(record)
            return set() if value is None else {value.casefold()}

        def id15(record: Record) -> set[str]:  # _equal on ids: the first 15 characters
            value = text(record)
            return {value[:15]} if value is not None and len(value) in (15, 18) else set()

        def stored(record: Record) -> set[str]:  # the raw field, as upserts compare it
            value = record.fields.get(name)
            return {value} if isinstance(value, str) else set()

        def affix(record: Record) -> set[str]:  # LIKE: the first or last N characters
            value = text(record)
            size = int(kind[6:])
            if value is None or len(value) < size:
                return set()
            return {_like_fold(value[:size] if kind.startswith("prefix") else value[-size:])}

        def contact_phones(record: Record) -> set[str]:  # the duplicate rule's keys
            return {phone_key(str(record.fields.get(f) or "")) for f in ("Phone", "MobilePhone")}

        def search_phones(record: Record) -> set[str]:  # _search_hit: equal or ends with
            out: set[str] = set()
            for _, values in record.versions:
                for field_name in GROUP_FIELDS["PHONE"].get(record.sobject, ()):
                    theirs = phone_key(str(values.get(field_name) or ""))
                    out.update(theirs[i:] for i in range(len(theirs) - 6))
            return out

        def search_words(record: Record) -> set[str]:  # every version: the search lags
            texts = {str(v) for _, values in record.versions for v in values.values() if v}
            words = {w for t in texts for w in fold_words(t)}
            if kind == "words":
                return words
            return {w[:n] for w in words for n in range(1, min(len(w), WORD_PREFIX) + 1)}

        functions: dict[str, Callable[[Record], set[str]]] = {
            "equal": equal,
            "id15": id15,
            "stored": stored,
            **{f"{end}{size}": affix for end in ("prefix", "suffix") for size in AFFIXES},
            "contact-phones": contact_phones,
            "search-phones": search_phones,
            "words": search_words,
            "word-starts": search_words,
        }
        return functions[kind]

    def _value(self, record: Record, path: str, fields: Mapping[str, Any] | None = None) -> Any:
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

    def _row(
        self, record: Record, paths: Sequence[str], version: Mapping[str, Any] | None = None
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

    def _limit_header(self) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.api_used}/{self.daily_limit}"}

    def _answer(self, payload: Any, status: int = 200) -> Response:
        with self.lock:
            headers = self._limit_header()
        return json_response(payload, status=status, headers=headers)

    def _not_found(self) -> Response:
        return self._answer(
            [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}], 404
        )

    def _run(self, handler: Callable[[Request], Response], request: Request) -> Response:
        if request.params.get("ver") not in API_VERSIONS:
            return self._not_found()
        try:
            return handler(request)
        except SyntaxProblem as exc:
            return self._answer([{"message": str(exc), "errorCode": exc.code}], 400)
        except (ValueError, TypeError, AttributeError) as exc:
            return self._answer([{"message": str(exc), "errorCode": "JSON_PARSER_ERROR"}], 400)

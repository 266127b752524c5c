"""Finding candidates for match keys, and reading records by id, in as few requests as possible.

Phones: SOSL first, SOQL for what it missed. ``FIND {...} IN PHONE FIELDS`` matches every
spelling an org may hold ("415.555.1212", "+1 (415) 555-1212 x3") and covers Contact and Lead
in one request, but its index lags writes by up to minutes. SOQL ``Phone IN (<spellings>)`` is
immediately consistent but sees only the spellings it lists. So SOQL runs only for the keys
SOSL missed, and only for what the lag can hide: records written in the last minutes, which
are in practice ours. We write phones in one spelling (:func:`written_phone`) to the
``record_type`` object, so a handful of spellings on one object suffices, and it rides in the
same request as the email and name keys. Steady state (known, indexed callers): one request
per batch; a batch of new callers: one SOSL plus one SOQL per object (plus one for companies).
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from syncd.plugin import (
    ActivityRef,
    CrmRecord,
    KeyKind,
    MatchKey,
    connector_logger,
    format_variants,
    national_digits,
    normalize_company,
    normalize_person,
    normalize_phone,
    same_company,
    same_number,
)
from syncd_salesforce.client import SalesforceClient
from syncd_salesforce.options import SalesforceOptions
from syncd_salesforce.soql import (
    MAX_SOSL_SEARCH_CHARS,
    format_soql,
    pack,
    soql_in,
    sosl_or,
)

__all__ = [
    "SOBJECT_BY_KIND",
    "Lookup",
    "marker_in_subject",
    "recent_spellings",
    "stored_marker",
    "to_record",
    "written_phone",
]

log = connector_logger("salesforce")

_BASE_FIELDS = {
    "Contact": (
        "Id",
        "FirstName",
        "LastName",
        "Email",
        "Phone",
        "MobilePhone",
        "AccountId",
        "Account.Name",
        "OwnerId",
    ),
    "Lead": ("Id", "FirstName", "LastName", "Email", "Phone", "MobilePhone", "Company", "OwnerId"),
    "Account": ("Id", "Name", "Phone"),
    "Task": ("Id", "Subject", "WhoId", "Status", "Priority", "ActivityDate"),
}
SOBJECT_BY_KIND = {
    "contact": "Contact",
    "lead": "Lead",
    "account": "Account",
    "company": "Account",
    "task": "Task",
    "activity": "Task",
}
_MAX_SOSL_ROWS = 2000  # Salesforce's cap on one search's results: at the cap, split and ask again
_MAX_SOSL_TERMS = 100
_NAME_MAX = 255  # longest Name/Company/Email Salesforce stores: longer keys cannot match
_COMPANY_READ_FRESH = 30.0  # seconds: a lookup and the apply that follows it
_COMPANY_READ_MAX = 20_000
_MARKER_HEAD = 80  # of a long marker, kept readable before its digest
_LIKE_MIN = 3  # shorter company names are compared exactly, never as a LIKE prefix
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


@dataclass(frozen=True, slots=True)
class _Statement:
    """A SOQL statement and the keys its rows are matched against."""

    sobject: str
    soql: str
    keys: list[MatchKey]


def written_phone(e164: str) -> str:
    """The one spelling syncd writes: what a US-locale org shows, "(415) 555-1212", for North
    American numbers; E.164 for the rest."""
    return format_variants(e164)[0]


def recent_spellings(e164: str) -> list[str]:
    """Spellings a record written in the last minutes may hold: ours, and the org's usual."""
    return list(dict.fromkeys([*format_variants(e164)[:3], e164]))


def stored_marker(marker: str) -> str:
    """The marker as a Task holds it: whole when it fits a 255-character field, else its head
    and a digest of all of it (a 256-character message id still finds its one Task)."""
    if len(marker) <= _NAME_MAX:
        return marker
    digest = hashlib.sha256(marker.encode("utf-8")).hexdigest()[:40]
    return f"{marker[:_MARKER_HEAD]}#{digest}"


def marker_in_subject(subject: str) -> str | None:
    """The marker a Subject ends with (``... [syncd:acct:M1]``), else None."""
    start = subject.rfind(" [syncd:")
    if start < 0 or not subject.endswith("]"):
        return None
    return subject[start + 2 : -1]


def _is_id(value: str) -> bool:
    return len(value) in (15, 18) and set(value) <= _ID_CHARS


def _text(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    return value if isinstance(value, str) else ""


def to_record(
    sobject: str, raw: Mapping[str, Any], *, region: str, extra: Iterable[str] = ()
) -> CrmRecord:
    """A Salesforce row as a :class:`CrmRecord` in canonical field names."""
    record_id = _text(raw, "Id")
    if sobject == "Account":
        name = _text(raw, "Name")
        return CrmRecord(id=record_id, kind="account", company=name, fields={"company": name})
    if sobject == "Task":
        return CrmRecord(
            id=record_id,
            kind="task",
            fields={"subject": _text(raw, "Subject"), "who_id": _text(raw, "WhoId")},
        )
    phones: list[str] = []
    for name in ("Phone", "MobilePhone"):
        key = normalize_phone(_text(raw, name), region) if raw.get(name) else None
        if key is not None and key.e164 not in phones:
            phones.append(key.e164)
    if sobject == "Contact":
        account = raw.get("Account")
        company = _text(account, "Name") if isinstance(account, Mapping) else ""
        company_id = _text(raw, "AccountId") or None
    else:
        company, company_id = _text(raw, "Company"), None
    fields = {
        "first_name": _text(raw, "FirstName"),
        "last_name": _text(raw, "LastName"),
        "email": _text(raw, "Email"),
        "phone": _text(raw, "Phone"),
        "company": company,
    }
    for name in extra:
        value = raw.get(name)
        fields[name] = "" if value is None else str(value)
    return CrmRecord(
        id=record_id,
        kind=sobject.lower(),
        first_name=fields["first_name"],
        last_name=fields["last_name"],
        email=fields["email"],
        phones=tuple(phones),
        company=company,
        company_id=company_id,
        fields=fields,
        owner_id=_text(raw, "OwnerId") or None,
    )


class Lookup:
    def __init__(self, client: SalesforceClient, options: SalesforceOptions, region: str) -> None:
        self.client = client
        self.options = options
        self.region = region
        # Company keys whose Accounts a SOQL read just returned (key -> monotonic time), so
        # the writer need not ask again before creating one (see accounts.py).
        self._companies_read: dict[str, float] = {}

    def looked_up(self, company_key: str) -> bool:
        """True when Accounts were read by SOQL for this company key in the last seconds."""
        at = self._companies_read.get(company_key)
        return at is not None and time.monotonic() - at <= _COMPANY_READ_FRESH

    # -- fields ----------------------------------------------------------------------------
    def extra_fields(self, sobject: str) -> tuple[str, ...]:
        """Mapped custom fields, read only on the object they belong to (``record_type``)."""
        if sobject != self.options.record_type:
            return ()
        base = _BASE_FIELDS[sobject]
        return tuple(
            f for f in dict.fromkeys(self.options.contact_fields.values()) if f not in base
        )

    def fields(self, sobject: str) -> tuple[str, ...]:
        return _BASE_FIELDS[sobject] + self.extra_fields(sobject)

    def _record(self, sobject: str, raw: Mapping[str, Any]) -> CrmRecord:
        return to_record(sobject, raw, region=self.region, extra=self.extra_fields(sobject))

    def _rows(self, sobject: str, where: str) -> list[CrmRecord]:
        soql = f"SELECT {', '.join(self.fields(sobject))} FROM {sobject} WHERE {where}"
        return [self._record(sobject, row) for row in self.client.query_all(soql)]

    # -- lookup ----------------------------------------------------------------------------
    def lookup(self, keys: Sequence[MatchKey]) -> dict[MatchKey, list[CrmRecord]]:
        found: dict[MatchKey, dict[str, CrmRecord]] = {key: {} for key in keys}

        def add(results: Mapping[MatchKey, Sequence[CrmRecord]]) -> None:
            for key, records in results.items():
                found[key].update((r.id, r) for r in records)

        unique = list(found)
        phones = [k for k in unique if k.kind is KeyKind.PHONE]
        companies = [k for k in unique if k.kind is KeyKind.COMPANY and k.value.strip()]
        add(self.search(phones, companies))
        others = [k for k in unique if k.kind in (KeyKind.EMAIL, KeyKind.NAME)] + companies
        per_object = {sobject: list(others) for sobject in self.options.search_objects}
        per_object.setdefault(self.options.record_type, []).extend(
            k for k in phones if not found[k]
        )
        # Every SOQL statement of the batch in one composite request (one API call).
        statements = [
            s for obj, wanted in per_object.items() for s in self._statements(obj, wanted)
        ]
        statements += self._account_statements(companies)
        queried = self._run(statements)
        add(queried)
        self._remember_companies(companies)
        if companies and "Contact" in per_object:
            # The Contact statement matched Account.Name like the Account statement matched
            # Name: only accounts that search alone found still need their contacts read.
            covered = {r.id for k in companies for r in queried.get(k, ()) if r.kind == "account"}
            add(self._contacts_at(companies, found, covered))
        return {key: list(found[key].values()) for key in keys}

    def search(
        self, phones: Sequence[MatchKey], companies: Sequence[MatchKey] = ()
    ) -> dict[MatchKey, list[CrmRecord]]:
        """One SOSL request for many keys: phones by national digits, companies by their
        normalized words (search folds case and accents, which SOQL cannot), post-filtered by
        E.164 / normalized-name equality."""
        terms: list[tuple[MatchKey, str]] = []
        for key in phones:
            try:
                terms.append((key, national_digits(key.value)))
            except ValueError:
                log.warning("salesforce.bad_phone_key", kind=key.kind.value)
        # SOSL ignores terms shorter than two characters; longer than a name cannot match.
        terms += [(k, k.value) for k in companies if 2 <= len(k.value.strip()) <= _NAME_MAX]
        objects = list(self.options.search_objects)
        if companies:
            objects.append("Account")
        returning = ", ".join(f"{obj}({', '.join(self.fields(obj))})" for obj in objects)
        group = "ALL" if companies else "PHONE"  # phone fields are among ALL FIELDS
        found: dict[MatchKey, list[CrmRecord]] = defaultdict(list)
        chunks = pack(
            terms,
            lambda chunk: sosl_or([term for _, term in chunk]),
            limit=MAX_SOSL_SEARCH_CHARS,
            measure=len,
            max_items=_MAX_SOSL_TERMS,
        )
        for chunk, _ in chunks:
            self._search_chunk(chunk, f"IN {group} FIELDS RETURNING {returning}", found)
        return found

    def _search_chunk(
        self,
        chunk: list[tuple[MatchKey, str]],
        scope: str,
        found: dict[MatchKey, list[CrmRecord]],
    ) -> None:
        search = sosl_or([term for _, term in chunk])
        rows = self.client.search(f"FIND {{{search}}} {scope}")
        if len(rows) >= _MAX_SOSL_ROWS and len(chunk) > 1:
            # Results were cut at the cap: some keys may have lost their rows. Ask in halves.
            middle = len(chunk) // 2
            self._search_chunk(chunk[:middle], scope, found)
            self._search_chunk(chunk[middle:], scope, found)
            return
        by_phone = {key.value: key for key, _ in chunk if key.kind is KeyKind.PHONE}
        companies = [key for key, _ in chunk if key.kind is KeyKind.COMPANY]
        for row in rows:
            sobject = str((row.get("attributes") or {}).get("type") or "")
            if sobject not in _BASE_FIELDS:
                continue
            record = self._record(sobject, row)
            if sobject != "Account":  # search matches loosely: E.164 equality decides
                for e164 in record.phones:
                    if e164 in by_phone:
                        found[by_phone[e164]].append(record)
                if not record.phones:  # a phone, if any, unreadable here: maybe foreign
                    for key in by_phone.values():
                        if _matches(key, record):
                            found[key].append(record)
            for key in companies:
                if _matches(key, record):
                    found[key].append(record)

    def soql_candidates(
        self, sobject: str, keys: Sequence[MatchKey]
    ) -> dict[MatchKey, list[CrmRecord]]:
        """Immediately consistent candidates on one object for phone, email, name and company
        keys (every kind in one WHERE clause, packed under the URL limit)."""
        return self._run(self._statements(sobject, keys))

    def _statements(self, sobject: str, keys: Sequence[MatchKey]) -> list[_Statement]:
        items: list[tuple[MatchKey, list[str]]] = []
        for key in dict.fromkeys(keys):
            if key.kind is KeyKind.PHONE:
                try:
                    items.append((key, recent_spellings(key.value)))
                except ValueError:
                    continue
            elif 0 < len(key.value) <= _NAME_MAX:
                items.append((key, [key.value]))
        company_field = {"Contact": "Account.Name", "Lead": "Company"}.get(sobject, "")
        prefix = f"SELECT {', '.join(self.fields(sobject))} FROM {sobject} WHERE "
        return [
            _Statement(sobject, soql, [key for key, _ in chunk])
            for chunk, soql in pack(items, partial(_where, prefix, company_field))
        ]

    def _account_statements(self, keys: Sequence[MatchKey]) -> list[_Statement]:
        """Accounts by exact name (SOQL ``IN`` ignores case) or by normalized name, through a
        prefix ``LIKE`` (index-friendly, same request) post-filtered by normalization."""
        items = [k for k in dict.fromkeys(keys) if 0 < len(k.value) <= _NAME_MAX]
        prefix = f"SELECT {', '.join(self.fields('Account'))} FROM Account WHERE "
        return [
            _Statement("Account", soql, chunk)
            for chunk, soql in pack(items, lambda c: prefix + _company_where("Name", c))
        ]

    def _remember_companies(self, keys: Sequence[MatchKey]) -> None:
        now = time.monotonic()
        if len(self._companies_read) > _COMPANY_READ_MAX:
            self._companies_read = {
                k: t for k, t in self._companies_read.items() if now - t <= _COMPANY_READ_FRESH
            }
        for key in keys:
            self._companies_read[key.value] = now

    def accounts(self, keys: Sequence[MatchKey]) -> dict[MatchKey, list[CrmRecord]]:
        """Accounts whose name is, or fuzzily resembles, each (normalized) company key: one
        immediately consistent SOQL read for all of them."""
        statements = self._account_statements(keys)
        found: dict[MatchKey, list[CrmRecord]] = defaultdict(list)
        results = self.client.query_many([s.soql for s in statements])
        for statement, rows in zip(statements, results, strict=True):
            for row in rows:
                record = self._record("Account", row)
                for key in statement.keys:
                    if _matches(key, record) or same_company(record.company, key.value):
                        found[key].append(record)
        return found

    def _run(self, statements: Sequence[_Statement]) -> dict[MatchKey, list[CrmRecord]]:
        found: dict[MatchKey, list[CrmRecord]] = defaultdict(list)
        results = self.client.query_many([s.soql for s in statements])
        for statement, rows in zip(statements, results, strict=True):
            for row in rows:
                record = self._record(statement.sobject, row)
                for key in statement.keys:
                    if _matches(key, record):
                        found[key].append(record)
        return found

    def _contacts_at(
        self,
        keys: Sequence[MatchKey],
        found: Mapping[MatchKey, Mapping[str, CrmRecord]],
        covered: set[str],
    ) -> dict[MatchKey, list[CrmRecord]]:
        """Contacts of accounts only search matched (an accented name, say)."""
        missing: dict[str, list[MatchKey]] = defaultdict(list)
        for key in keys:
            for record in found[key].values():
                if record.kind == "account" and record.id not in covered:
                    missing[record.id].append(key)
        out: dict[MatchKey, list[CrmRecord]] = defaultdict(list)
        for _chunk, where in pack(list(missing), lambda c: soql_in("AccountId", c)):
            for record in self._rows("Contact", where):
                for key in missing.get(record.company_id or "", ()):
                    out[key].append(record)
        return out

    # -- activities ------------------------------------------------------------------------
    def find_activities(self, markers: Sequence[str]) -> dict[str, ActivityRef]:
        """Tasks carrying these markers. With ``marker_field`` an indexed equality; without,
        ``Subject LIKE '%[marker]'`` (a scan on a big Task table: prefer the field)."""
        asked = {stored_marker(m): m for m in dict.fromkeys(markers) if m}
        field = self.options.marker_field
        select = f"SELECT Id, WhoId, Subject{', ' + field if field else ''} FROM Task WHERE "
        out: dict[str, ActivityRef] = {}
        # SOQL compares case-insensitively; markers are case-sensitive: ``asked`` decides.
        for _, soql in pack(list(asked), lambda c: select + _marker_where(field, c)):
            for row in self.client.query_all(soql):
                held = _text(row, field) if field else marker_in_subject(_text(row, "Subject"))
                marker = asked.get(held or "")
                if marker is not None and marker not in out:
                    who = _text(row, "WhoId") or None
                    out[marker] = ActivityRef(
                        marker=marker, activity_id=_text(row, "Id"), record_id=who
                    )
        return out

    # -- read ------------------------------------------------------------------------------
    def read(self, kind: str, ids: Sequence[str]) -> dict[str, CrmRecord]:
        sobject = SOBJECT_BY_KIND.get(kind.lower())
        if sobject is None:
            raise ValueError(f"unknown record kind {kind!r}")
        # A malformed id would fail the whole query (MALFORMED_ID): it cannot exist, so it is gone.
        wanted = [i for i in dict.fromkeys(ids) if _is_id(i)]
        asked: dict[str, list[str]] = defaultdict(list)  # 15-char prefix -> ids as asked
        for record_id in wanted:
            asked[record_id[:15]].append(record_id)
        out: dict[str, CrmRecord] = {}
        for _chunk, where in pack(list(asked), lambda c: soql_in("Id", c)):
            for record in self._rows(sobject, where):
                for requested in asked.get(record.id[:15], ()):
                    out[requested] = record
        return out


def _where(prefix: str, company_field: str, chunk: Sequence[tuple[MatchKey, list[str]]]) -> str:
    def values(kind: KeyKind) -> list[str]:
        return [v for k, vs in chunk if k.kind is kind for v in vs]

    parts = []
    if phones := values(KeyKind.PHONE):
        parts.append(soql_in("Phone", phones))
    if emails := values(KeyKind.EMAIL):
        parts.append(soql_in("Email", emails))
    if names := values(KeyKind.NAME):
        parts.append(soql_in("Name", names))
    companies = [k for k, _ in chunk if k.kind is KeyKind.COMPANY]
    if companies and company_field:
        parts.append(_company_where(company_field, companies))
    return prefix + (" OR ".join(parts) or "Id = null")


def _marker_where(field: str, markers: Sequence[str]) -> str:
    if field:
        return soql_in(field, markers)
    return " OR ".join(format_soql("Subject LIKE '%[{:like}]'", m) for m in markers)


def _company_where(field: str, keys: Sequence[MatchKey]) -> str:
    values = [k.value for k in keys]
    parts = [soql_in(field, values)]
    for value in values:
        if len(value) < _LIKE_MIN:  # "z%" would read half the table: exact names only
            continue
        parts.append(format_soql(f"{field} LIKE '{{:like}}%'", value))
        parts.append(format_soql(f"{field} LIKE 'the {{:like}}%'", value))
    return " OR ".join(parts)


def _matches(key: MatchKey, record: CrmRecord) -> bool:
    if key.kind is KeyKind.PHONE:
        if key.value in record.phones:
            return True
        # A foreign number stored without its country code is unreadable in the org's
        # region, but reads as the caller's in the caller's own.
        return not record.phones and same_number(record.fields.get("phone", ""), key.value)
    if key.kind is KeyKind.EMAIL:
        return record.email.casefold() == key.value.casefold()
    if key.kind is KeyKind.NAME:
        return normalize_person(record.first_name, record.last_name) == key.value
    if key.kind is KeyKind.COMPANY and record.company:
        return (
            record.company.casefold() == key.value.casefold()
            or normalize_company(record.company) == key.value
        )
    return False

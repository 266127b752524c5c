"""Reading from HubSpot: candidates for match keys (search) and records by id (batch read).

Search is what HubSpot offers for "who has this phone", but it lags writes by seconds and
allows ~5 requests a second, so keys are packed (see :mod:`syncd_hubspot.search`) and
every candidate is checked again here: ``hs_searchable_calculated_phone_number`` holds only
the national digits, so +44 20 7946 0958 and +1 207-946-0958 meet in one search and are told
apart by E.164 afterwards.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import phonenumbers

from syncd.plugin import (
    CrmRecord,
    KeyKind,
    MatchKey,
    RetriableError,
    chunks,
    connector_logger,
    format_variants,
    national_digits,
    normalize_company,
)
from syncd_hubspot.candidates import answer
from syncd_hubspot.colleagues import ColleagueMemo
from syncd_hubspot.companies import CompanyDirectory
from syncd_hubspot.options import HubSpotOptions
from syncd_hubspot.records import (
    COMPANY_PROPERTIES,
    CONTACT_PROPERTIES,
    company_record,
    contact_record,
)
from syncd_hubspot.search import RESULT_WINDOW, Group, in_groups, pack, search_body
from syncd_hubspot.transport import ApiResult, Transport

__all__ = ["Reader"]

log = connector_logger("hubspot")

READ_BATCH = 100
# HubSpot fills these from ``phone``/``mobilephone``: the number "without country code".
# They are all a phone search asks: ``phone`` EQ compares strings exactly, so asking it for
# E.164 only found numbers stored as E.164, whose country code HubSpot strips anyway.
_CALCULATED_PHONE_PROPERTIES = (
    "hs_searchable_calculated_phone_number",
    "hs_searchable_calculated_mobile_number",
)

_OBJECT_TYPES = {"contact": "contacts", "company": "companies"}


def _casefold(text: str) -> str:
    return " ".join(text.casefold().split())


def _name_splits(full: str) -> list[tuple[str, str]]:
    """Every way to cut "mary ann smith" into (first, last): names do not say where."""
    words = full.split()
    return [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]


def _fail(what: str, result: ApiResult) -> RetriableError:
    return RetriableError(
        f"HubSpot {what} refused ({result.status} {result.category}): {result.message}"
    )


class Reader:
    def __init__(
        self,
        transport: Transport,
        options: HubSpotOptions,
        region: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._t = transport
        self._options = options
        self._region = region
        self._contact_props = list(
            dict.fromkeys([*CONTACT_PROPERTIES, *options.contact_fields.values()])
        )
        self._calling_code = f"+{phonenumbers.country_code_for_region(region) or 1}"
        self._clock = clock
        self.colleagues: ColleagueMemo[CrmRecord] = ColleagueMemo(
            ttl=options.colleague_memo_ttl,
            max_contacts=options.colleague_memo_max,
            clock=clock,
            convert=self.contact,
            keep=self._contact_props,
        )
        self.companies = CompanyDirectory(
            transport,
            max_companies=options.company_directory_max,
            refresh=options.company_directory_refresh,
            clock=clock,
        )

    # -- records ---------------------------------------------------------------------------
    def contact(self, obj: Mapping[str, Any]) -> CrmRecord:
        return contact_record(obj, region=self._region, contact_fields=self._options.contact_fields)

    def company(self, obj: Mapping[str, Any]) -> CrmRecord:
        return company_record(obj, region=self._region)

    # -- lookup ----------------------------------------------------------------------------
    def lookup(self, keys: Sequence[MatchKey]) -> dict[MatchKey, list[CrmRecord]]:
        found: dict[MatchKey, list[CrmRecord]] = {key: [] for key in keys}
        by_kind: dict[KeyKind, list[MatchKey]] = {}
        for key in found:
            by_kind.setdefault(key.kind, []).append(key)

        # Company words answered within the memo's ttl are not searched again: the memo
        # gives each such key its contacts at the company; the searches answer every key.
        companies = by_kind.get(KeyKind.COMPANY, [])
        words = {key: _longest_word(key.value) for key in companies}
        searched: list[MatchKey] = []
        for key in companies:
            held = (
                self.colleagues.get(words[key], normalize_company(key.value))
                if words[key]
                else None
            )
            if held is None:
                searched.append(key)
            else:
                found[key].extend(held)
        contact_groups = self._contact_groups(by_kind, searched)
        if contact_groups:
            pending = self.colleagues.collect(
                {words[key] for key in searched if words[key]}, self._clock()
            )
            ids_of = {key: {r.id for r in records} for key, records in found.items()}

            def take(page: list[dict[str, Any]]) -> None:
                # A page at a time: a search of many company words matches thousands.
                pending.add(page)
                for key, hits in answer(found, [self.contact(obj) for obj in page]).items():
                    for record in hits:
                        if record.id not in ids_of[key]:
                            ids_of[key].add(record.id)
                            found[key].append(record)

            if self._search("contacts", contact_groups, self._contact_props, take):
                pending.commit()

        if companies and self.companies.available():
            listed = self.companies.find(k.value for k in companies)
            for key in companies:
                found[key].extend(self.company(o) for o in listed[key.value])
            return found
        groups = _token_groups("name", companies)
        if groups:
            objs = self.search("companies", groups, COMPANY_PROPERTIES)
            company_records = [self.company(o) for o in objs]
            for key, hits in answer(companies, company_records).items():
                found[key].extend(hits)
        return found

    def _contact_groups(
        self, by_kind: Mapping[KeyKind, list[MatchKey]], companies: Sequence[MatchKey]
    ) -> list[Group]:
        cap = self._options.in_values_cap
        groups: list[Group] = []
        phones = [k.value for k in by_kind.get(KeyKind.PHONE, [])]
        if phones:
            national = []
            for e164 in phones:
                try:
                    digits = national_digits(e164)
                except ValueError:  # not an E.164 key: nothing to ask for
                    log.debug("hubspot.phone_key_not_e164")
                    continue
                national.append(digits)
                # HubSpot documents the calculated number only as "without country code";
                # a number stored without "+" ("1-207-946-0958") may keep every digit.
                national.append(e164[1:])
                if not e164.startswith(self._calling_code):
                    # A foreign number is often stored as dialled at home ("089 9726173",
                    # "01174564243") or without its "+": ask for what HubSpot may calculate
                    # from each such spelling, read in the portal's country or digit by digit.
                    for v in format_variants(e164):
                        national += [c for c in (_calculated(v, self._region), _digits(v)) if c]
            national = list(dict.fromkeys(national))
            for prop in _CALCULATED_PHONE_PROPERTIES:
                groups += in_groups(prop, national, cap)
        # Values are sent lowercased so the match does not depend on how HubSpot folds case.
        emails = [k.value.casefold() for k in by_kind.get(KeyKind.EMAIL, [])]
        groups += in_groups("email", emails, cap)
        groups += _token_groups("company", companies)
        names = [_casefold(k.value) for k in by_kind.get(KeyKind.NAME, [])]
        for some in chunks(names, cap):
            # firstname IN (...) AND lastname IN (...) is a superset of the pairs we want;
            # the exact pairs are picked out after the search.
            splits = [s for name in some for s in _name_splits(name)]
            firsts = list(dict.fromkeys(first for first, _ in splits))
            lasts = list(dict.fromkeys(last for _, last in splits))
            for first_values in chunks(firsts, cap):
                for last_values in chunks(lasts, cap):
                    groups.append(
                        Group(
                            (
                                {
                                    "propertyName": "firstname",
                                    "operator": "IN",
                                    "values": first_values,
                                },
                                {
                                    "propertyName": "lastname",
                                    "operator": "IN",
                                    "values": last_values,
                                },
                            )
                        )
                    )
        return groups

    def search(
        self, object_type: str, groups: Sequence[Group], properties: Sequence[str]
    ) -> list[dict[str, Any]]:
        """Every record matching any group, each once, following ``paging.next.after``."""
        seen: dict[str, dict[str, Any]] = {}

        def take(page: list[dict[str, Any]]) -> None:
            for obj in page:
                seen.setdefault(str(obj.get("id")), obj)

        self._search(object_type, groups, properties, take)
        return list(seen.values())

    def _search(
        self,
        object_type: str,
        groups: Sequence[Group],
        properties: Sequence[str],
        take: Callable[[list[dict[str, Any]]], None],
    ) -> bool:
        """Hand every page of records matching any group to ``take`` (a record matching
        groups sent in two requests comes twice); False when some were not read because
        a request matched more than RESULT_WINDOW."""
        complete = True
        for request_groups in pack(groups):
            after: str | None = None
            fetched = 0
            while True:
                body = search_body(request_groups, properties, after)
                result = self._t.call(
                    f"{object_type}.search",
                    self._t.objects_search.do_search,
                    object_type,
                    body,
                    search=True,
                )
                if not result.ok:
                    raise _fail(f"{object_type} search", result)
                page = result.results()
                take(page)
                fetched += len(page)
                after = result.next_after()
                if not after or not page:
                    break
                if fetched >= RESULT_WINDOW:
                    # The rest are not read: HubSpot pages no further.
                    log.warning(
                        "hubspot.search_window_full", object_type=object_type, over=RESULT_WINDOW
                    )
                    complete = False
                    break
        return complete

    # -- read ------------------------------------------------------------------------------
    def read(self, kind: str, ids: Sequence[str]) -> dict[str, CrmRecord]:
        object_type = _OBJECT_TYPES.get(kind, kind)
        props = self._contact_props if object_type == "contacts" else list(COMPANY_PROPERTIES)
        convert = self.contact if object_type == "contacts" else self.company
        return {
            obj_id: convert(obj) for obj_id, obj in self.read_raw(object_type, ids, props).items()
        }

    def read_raw(
        self,
        object_type: str,
        ids: Iterable[str],
        properties: Sequence[str],
        *,
        id_property: str | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Batch read; keyed by the id asked for (the ``id_property`` value when one is given).

        Absent keys are records that do not exist (HubSpot answers them in a 207's errors, or
        with a 404 when none exists).
        """
        wanted = list(dict.fromkeys(i for i in ids if i))
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunks(wanted, READ_BATCH):
            body: dict[str, Any] = {
                "inputs": [{"id": i} for i in chunk],
                "properties": list(properties),
                # Required by HubSpot's published schema (BatchReadInputSimplePublicObjectId).
                "propertiesWithHistory": [],
            }
            if id_property:
                body["idProperty"] = id_property
            result = self._t.call(
                f"{object_type}.batch_read",
                self._t.objects_batch.read,
                object_type,
                body,
                archived=False,
            )
            if result.status == 404:
                continue
            if not result.ok:
                raise _fail(f"{object_type} batch read", result)
            for obj in result.results():
                if id_property:
                    props = obj.get("properties") or {}
                    key = str(props.get(id_property) or "")
                else:
                    key = str(obj.get("id") or "")
                if key in chunk:
                    found[key] = obj
        return found


def _token_groups(prop: str, keys: Iterable[MatchKey]) -> list[Group]:
    """One ``CONTAINS_TOKEN`` group per company key, on its longest word.

    A normalized name ("initech") is not a stored spelling ("Initech, LLC"), so ``IN`` cannot
    find it; a token can, and the exact comparison afterwards drops "Initech Labs". The word
    comes from :func:`normalize_company`, so it holds letters and digits only: no ``*``
    wildcard from caller text reaches the search.
    """
    groups: list[Group] = []
    for word in dict.fromkeys(_longest_word(k.value) for k in keys):
        if word:
            groups.append(
                Group(({"propertyName": prop, "operator": "CONTAINS_TOKEN", "value": word},))
            )
    return groups


def _calculated(text: str, region: str) -> str:
    """The national digits HubSpot calculates from a stored phone ``text`` in the portal's
    country ``region`` ("" when it holds no digits)."""
    try:
        return phonenumbers.national_significant_number(phonenumbers.parse(text, region))
    except phonenumbers.NumberParseException:
        return re.sub(r"\D", "", text).lstrip("0")


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _longest_word(value: str) -> str:
    words = normalize_company(value).split()
    return max(words, key=len) if words else ""

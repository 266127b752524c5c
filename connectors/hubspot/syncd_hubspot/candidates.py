"""Which records in hand answer which match key, without testing every pair.

A lookup holds what its searches returned plus the remembered colleagues of every company
word it asked about: thousands of records for hundreds of keys in a large backfill, and a
phone test can parse numbers. So records are indexed once by what each key kind compares
(E.164 phones, folded email, normalized company, normalized person) and each key reads its
index; only records whose phone no region could read are tested, once per country the
keys come from.

A record answers a key exactly when :func:`matches` says so (the tests pin that down).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import phonenumbers

from syncd.plugin import (
    CrmRecord,
    KeyKind,
    MatchKey,
    normalize_company,
    normalize_person,
    normalize_phone,
    same_number,
)

__all__ = ["answer", "matches"]


def matches(key: MatchKey, record: CrmRecord) -> bool:
    """The definition: does ``record`` answer ``key``?"""
    value = key.value
    if key.kind is KeyKind.PHONE:
        # A foreign number stored without its country code is unreadable in the portal's
        # region, but reads as the caller's in the caller's own.
        return value in record.phones or (
            not record.phones and same_number(record.fields.get("phone", ""), value)
        )
    if key.kind is KeyKind.EMAIL:
        return record.email.casefold() == value.casefold()
    if key.kind is KeyKind.COMPANY:
        # Keys are normalized by the matcher; normalizing again also defuses a raw value.
        wanted = normalize_company(value)
        return bool(wanted) and normalize_company(record.company) == wanted
    person = normalize_person(value, None)  # KeyKind.NAME, folded as the matcher folds it
    return bool(person) and normalize_person(record.first_name, record.last_name) == person


def answer(
    keys: Iterable[MatchKey], records: Sequence[CrmRecord]
) -> dict[MatchKey, list[CrmRecord]]:
    """Each key's records, in the order of ``records`` (what :func:`matches` would pick)."""
    index: dict[tuple[KeyKind, str], list[int]] = defaultdict(list)
    unreadable: list[int] = []  # no phone read in the portal's region, but a phone is stored
    for i, record in enumerate(records):
        for phone in record.phones:
            index[(KeyKind.PHONE, phone)].append(i)
        if not record.phones and record.fields.get("phone"):
            unreadable.append(i)
        if record.email:
            index[(KeyKind.EMAIL, record.email.casefold())].append(i)
        company = normalize_company(record.company)
        if company:
            index[(KeyKind.COMPANY, company)].append(i)
        person = normalize_person(record.first_name, record.last_name)
        if person:
            index[(KeyKind.NAME, person)].append(i)

    keys = list(dict.fromkeys(keys))
    phone_keys = [k.value for k in keys if k.kind is KeyKind.PHONE]
    if unreadable and phone_keys:
        _index_unreadable(records, unreadable, phone_keys, index)

    found: dict[MatchKey, list[CrmRecord]] = {}
    for key in keys:
        value = key.value
        if key.kind is KeyKind.EMAIL:
            value = value.casefold()
        elif key.kind is KeyKind.COMPANY:
            value = normalize_company(value)
        elif key.kind is KeyKind.NAME:
            value = normalize_person(value, None)
        hits = sorted(set(index.get((key.kind, value), ()))) if value else []
        found[key] = [records[i] for i in hits]
    return found


def _index_unreadable(
    records: Sequence[CrmRecord],
    unreadable: list[int],
    phone_keys: list[str],
    index: dict[tuple[KeyKind, str], list[int]],
) -> None:
    """Read each unreadable stored phone as :func:`same_number` would for these keys: in
    "US" (its default region), then in each key's own country."""
    homes = {home for e164 in phone_keys if (home := _home(e164)) and home != "US"}
    wanted = set(phone_keys)
    for i in unreadable:
        text = records[i].fields.get("phone", "")
        readings = {normalize_phone(text, "US")}
        for home in homes:
            key = normalize_phone(text, home)
            # same_number reads in the key's own country only: keep the reading when that
            # country is the one the number belongs to.
            if key is not None and _home(key.e164) == home:
                readings.add(key)
        for reading in readings:
            if reading is not None and reading.e164 in wanted:
                index[(KeyKind.PHONE, reading.e164)].append(i)


def _home(e164: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None

"""The standard matching rules of a Salesforce org, as the emulator applies them on save.

Salesforce Help, "Standard Contact Matching Rule and Standard Lead Matching Rule" (activated by
default): the matching equation is

    (FirstName AND LastName AND Title AND Account/Company Name)
    OR (FirstName AND LastName AND Email)
    OR (FirstName AND LastName AND Phone AND Account/Company Name)
    OR (FirstName AND LastName AND MailingStreet AND (City OR ZIP OR Phone))
    OR (FirstName AND LastName AND MailingStreet AND Title)
    OR (FirstName AND LastName AND Title AND Email)
    OR (FirstName AND LastName AND Phone)

with blank fields never matching ("Don't match"). First name is compared fuzzily (exact,
initials, name variants); last name exactly or within a keyboard distance; email and phone
exactly. Fields the emulator does not store (Title, MailingStreet...) are blank, so on the
records syncd writes the equation reduces to: first and last name match AND (email OR phone).
The fuzzy parts are modelled by their safe core: case- and accent-insensitive equality, and a
first name that is one's initial matching the other's first letter.

"Standard Account Matching Rule": the account name (fuzzy) together with a billing city, ZIP,
street or phone. An account that has only a name never matches it; ``name_only_accounts``
models the custom rule many orgs add: the normalized name alone.

This module shares nothing with syncd's matcher; it follows the documents above.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

__all__ = ["account_rule_matches", "company_key", "person_rule_matches"]

_LEGAL = re.compile(r"\b(inc|incorporated|llc|ltd|limited|corp|corporation|co|company|gmbh)\b")


def _fold(value: Any) -> str:
    text = unicodedata.normalize("NFKD", str(value or "").casefold())
    return " ".join("".join(c for c in text if not unicodedata.combining(c)).split())


def _digits(value: Any) -> str:
    digits = re.sub(r"\D", "", str(value or ""))
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


def _first_names_match(mine: str, theirs: str) -> bool:
    if not mine or not theirs:
        return False
    if mine == theirs:
        return True
    short, long = sorted((mine.rstrip("."), theirs.rstrip(".")), key=len)
    return len(short) == 1 and long.startswith(short)


def person_rule_matches(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """The standard Contact/Lead matching equation between two records' field values."""
    if not _first_names_match(_fold(new.get("FirstName")), _fold(old.get("FirstName"))):
        return False
    last = _fold(new.get("LastName"))
    if not last or last != _fold(old.get("LastName")):
        return False
    email = _fold(new.get("Email"))
    if email and email == _fold(old.get("Email")):
        return True
    mine = {_digits(new.get(f)) for f in ("Phone", "MobilePhone")} - {""}
    theirs = {_digits(old.get(f)) for f in ("Phone", "MobilePhone")} - {""}
    return bool(mine & theirs)


def company_key(name: Any) -> str:
    """An account name as the fuzzy name criterion compares it: case, accents, punctuation and
    legal suffixes folded away."""
    words = re.sub(r"[^\w\s]", " ", _fold(name))
    return " ".join(_LEGAL.sub(" ", words).split())


def account_rule_matches(
    new: Mapping[str, Any], old: Mapping[str, Any], *, name_only: bool
) -> bool:
    name = company_key(new.get("Name"))
    if not name or name != company_key(old.get("Name")):
        return False
    if name_only:
        return True
    phone = _digits(new.get("Phone"))
    return bool(phone) and phone == _digits(old.get("Phone"))

"""Salesforce ``User`` records and ``OwnerId`` in the emulator.

Built from Salesforce's documentation, not from our connector:

- Object Reference, User: ``Id`` (prefix 005), ``Name``, ``FirstName``, ``LastName``,
  ``Email``, ``Username``, ``IsActive`` (boolean); queried with SOQL like any object. Users
  are not created through the data API in this emulator (``createable`` false).
- ``OwnerId`` on Contact, Lead and Task references a User; a record created without one is
  owned by the user who creates it (the integration user, :data:`USER_ID`).
- An inactive owner is refused with ``INACTIVE_OWNER_OR_USER`` ("operation performed with
  inactive user ... as owner of ...", Salesforce help article 000205862). Contacts and Leads
  never take one; Tasks only with the "Set Audit Fields upon Record Creation and Update
  Records with Inactive Owners" permission, which the emulated integration user lacks.
  An id that is no User is ``INVALID_CROSS_REFERENCE_KEY`` (the emulator's reference check).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from syncd.sandbox.team import TEAM

from .records import Record
from .schema import USER_ID, Field, id_field

if TYPE_CHECKING:
    from .org import SalesforceEmulator

__all__ = ["default_owner", "install", "owner_problem", "seed_user"]

_OWNED = ("Contact", "Lead", "Task")


def install(emulator: SalesforceEmulator) -> None:
    """Add the User object and ``OwnerId`` fields, and seed the integration user and the
    sandbox team (called once, at the end of the emulator's ``__init__``)."""
    emulator.schema["User"] = {
        f.name: f
        for f in (
            id_field(),
            Field("Name", length=121, createable=False, updateable=False),
            Field("FirstName", length=40, createable=False),
            Field("LastName", length=80, createable=False),
            Field("Email", "email", 128, createable=False),
            Field("Username", length=80, createable=False),
            Field("IsActive", "boolean", 5, createable=False),
        )
    }
    for sobject in _OWNED:
        emulator.schema[sobject]["OwnerId"] = Field(
            "OwnerId", "reference", 18, reference_to=("User",)
        )
    _put(emulator, USER_ID, "Integration", "User", emulator.username, True)
    for member in TEAM:
        seed_user(emulator, member.first_name, member.last_name, member.email, member.active)


def seed_user(
    emulator: SalesforceEmulator, first_name: str, last_name: str, email: str, active: bool
) -> str:
    # Users number apart from other records, so seeding them shifts no other record's id.
    with emulator.lock:
        count = sum(1 for _ in emulator._live("User"))
    return _put(emulator, f"005000{100 + count:09d}AAA", first_name, last_name, email, active)


def _put(
    emulator: SalesforceEmulator, user_id: str, first: str, last: str, email: str, active: bool
) -> str:
    values = {
        "Name": f"{first} {last}".strip(),
        "FirstName": first,
        "LastName": last,
        "Email": email,
        "Username": email,
        "IsActive": active,
    }
    with emulator.lock:
        record = Record("User", user_id, values)
        record.versions.append((float("-inf"), dict(values)))
        emulator._store(record)
    return user_id


def owner_problem(field: str, target: Record | None, sobject: str) -> dict[str, Any] | None:
    """``INACTIVE_OWNER_OR_USER`` when ``OwnerId`` names a deactivated user."""
    if field != "OwnerId" or target is None or target.sobject != "User":
        return None
    if target.fields.get("IsActive"):
        return None
    return {
        "statusCode": "INACTIVE_OWNER_OR_USER",
        "message": f"operation performed with inactive user [{target.id[:15]}] as owner of"
        f" [{sobject.lower()}]",
        "fields": [],
    }


def default_owner(sobject: str, values: MutableMapping[str, Any]) -> None:
    """A record created without an owner is owned by the user who creates it."""
    if sobject in _OWNED and not values.get("OwnerId"):
        values["OwnerId"] = USER_ID

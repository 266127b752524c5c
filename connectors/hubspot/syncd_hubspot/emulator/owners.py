"""HubSpot owners in the emulator: ``GET /crm/v3/owners`` and the check of ``hubspot_owner_id``.

Built from HubSpot's documentation, not from our connector:

- CRM API | Owners (developers.hubspot.com/docs/api-reference/latest/crm/owners/guide):
  ``GET /crm/v3/owners`` lists owners, read-only; each has ``id`` (what assigns ownership),
  ``email``, ``type`` ("PERSON"), ``firstName``, ``lastName``, ``userId`` (a *user* id,
  refused as an owner), ``userIdIncludingInactive``, ``createdAt``, ``updatedAt``,
  ``archived`` and ``teams``. Query: ``email``, ``after``, ``limit``, ``archived``.
- "Retrieve all owners" and the generated clients (``get_page(email, after, limit,
  archived)``): pages with ``paging.next.after``; ``archived=true`` lists the archived
  owners *instead of* the active ones (the less forgiving reading: a client that wants both
  asks twice). Archived owners carry ``userId: null`` and keep ``userIdIncludingInactive``
  (HubSpot/hubspot-api-python#314). ``limit`` up to 500, 100 by default; more is refused.
- Writing ``hubspot_owner_id`` with a value that is not an owner's ``id`` is refused with a
  400 "Property values were not valid" naming ``INVALID_OWNER_ID``; the documentation is
  silent on archived owners, so they are refused too (the less forgiving choice).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syncd.sandbox.http import Request, Response, json_response
from syncd.sandbox.team import TEAM

from .records import Refused

if TYPE_CHECKING:
    from .api import HubSpotEmulator

__all__ = ["Owner", "OwnerBook", "owner_problems", "register", "reset"]

_MAX_LIMIT = 500
_PROPERTY = "hubspot_owner_id"


@dataclass
class Owner:
    id: str
    email: str
    first_name: str
    last_name: str
    user_id: int
    archived: bool = False
    stamp: str = "2024-01-02T09:00:00.000Z"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "type": "PERSON",
            "firstName": self.first_name,
            "lastName": self.last_name,
            "userId": None if self.archived else self.user_id,
            "userIdIncludingInactive": self.user_id,
            "createdAt": self.stamp,
            "updatedAt": self.stamp,
            "archived": self.archived,
            "teams": [],
        }


@dataclass
class OwnerBook:
    owners: dict[str, Owner] = field(default_factory=dict)
    next_id: int = 41_629_779

    def add(self, first_name: str, last_name: str, email: str, *, archived: bool = False) -> str:
        owner_id = str(self.next_id)
        self.next_id += 1
        self.owners[owner_id] = Owner(
            owner_id, email, first_name, last_name, 9_586_504 + len(self.owners), archived
        )
        return owner_id


def reset(emulator: HubSpotEmulator) -> None:
    """Called from the emulator's reset (lock held): the sandbox team as owners (every
    object's ``hubspot_owner_id`` is in the default schema, ``emulator.schema``)."""
    book = OwnerBook()
    for member in TEAM:
        book.add(member.first_name, member.last_name, member.email, archived=not member.active)
    emulator.owner_book = book


def register(emulator: HubSpotEmulator) -> None:
    emulator._add("GET", r"/crm/v3/owners/?", "owners.list", _handler(emulator), "")


def _handler(emulator: HubSpotEmulator) -> Any:
    def handle(object_type: str, request: Request, body: Any) -> Response:
        try:
            limit = int(request.arg("limit", "100") or 100)
            after = int(request.arg("after", "0") or 0)
        except ValueError:
            raise Refused(400, "limit and after must be numbers") from None
        if not 1 <= limit <= _MAX_LIMIT or after < 0:
            raise Refused(400, f"limit must be between 1 and {_MAX_LIMIT}")
        archived = (request.arg("archived", "false") or "false").lower() == "true"
        email = (request.arg("email") or "").strip().lower()
        found = [
            o
            for o in sorted(emulator.owner_book.owners.values(), key=lambda o: int(o.id))
            if o.archived == archived and (not email or o.email.lower() == email)
        ]
        page = found[after : after + limit]
        payload: dict[str, Any] = {"results": [o.as_json() for o in page]}
        if after + limit < len(found):
            payload["paging"] = {"next": {"after": str(after + limit)}}
        return json_response(payload)

    return handle


def owner_problems(book: OwnerBook, props: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-property problems of a write that names an owner HubSpot would refuse."""
    value = props.get(_PROPERTY)
    if value in (None, ""):
        return []
    owner = book.owners.get(str(value))
    if owner is not None and not owner.archived:
        return []
    return [
        {
            "isValid": False,
            "message": f"{json.dumps(str(value))} is not a valid owner id",
            "error": "INVALID_OWNER_ID",
            "name": _PROPERTY,
        }
    ]

"""HubSpot owners for syncd's owner rules (the ``ListsOwners`` capability).

``GET /crm/v3/owners`` lists the active owners; ``archived=true`` lists the archived ones
(HubSpot's CRM API | Owners guide; hubspot-api-client ``owners_api.get_page``). Both are
read, so a record owned by someone who has left is known as inactive rather than unknown.
An owner is assigned by its ``id`` in ``hubspot_owner_id`` (never the ``userId``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from syncd.plugin import CrmUser, Plan, RetriableError

if TYPE_CHECKING:
    from syncd_hubspot.transport import Transport

__all__ = ["OWNER_PROPERTY", "activity_owner", "list_owners", "record_owner"]

OWNER_PROPERTY = "hubspot_owner_id"
_PAGE = 100  # the documented default page size


def list_owners(transport: Transport) -> list[CrmUser]:
    users: list[CrmUser] = []
    for archived in (False, True):
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": _PAGE, "archived": archived}
            if after:
                kwargs["after"] = after
            result = transport.call("owners.list", transport.owners.get_page, **kwargs)
            if not result.ok:
                raise RetriableError(f"HubSpot owners: {result.message}")
            users += [_user(o, archived) for o in result.results() if o.get("id") is not None]
            after = result.next_after()
            if after is None:
                break
    return users


def _user(owner: Mapping[str, Any], archived: bool) -> CrmUser:
    name = " ".join(str(owner.get(k) or "").strip() for k in ("firstName", "lastName")).strip()
    return CrmUser(
        id=str(owner["id"]),
        email=str(owner.get("email") or ""),
        name=name,
        active=not (archived or owner.get("archived")),
    )


def activity_owner(plan: Plan) -> dict[str, str]:
    """The owner property of the plan's note/call/task, when the core resolved one."""
    return {OWNER_PROPERTY: plan.owner_id} if plan.owner_id else {}


def record_owner(plan: Plan) -> dict[str, str]:
    """The owner property of a contact the plan creates, when configured."""
    return activity_owner(plan) if plan.owner_on_record else {}

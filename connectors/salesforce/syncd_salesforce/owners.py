"""Salesforce users for syncd's owner rules (the ``ListsOwners`` capability).

``User`` is queried with SOQL like any object (Object Reference: ``Id``, ``Name``,
``Email``, ``IsActive``); inactive users are read too, so a record owned by someone who has
left is known as inactive. An owner goes in ``OwnerId`` on the Task and on a new Contact or
Lead; Salesforce refuses an inactive one (``INACTIVE_OWNER_OR_USER``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncd.plugin import CrmUser, Plan

if TYPE_CHECKING:
    from syncd_salesforce.client import SalesforceClient

__all__ = ["OWNER_FIELD", "USERS_SOQL", "list_users", "record_owner", "task_owner"]

OWNER_FIELD = "OwnerId"
USERS_SOQL = "SELECT Id, Name, Email, IsActive FROM User"


def list_users(client: SalesforceClient) -> list[CrmUser]:
    return [
        CrmUser(
            id=str(row["Id"]),
            email=str(row.get("Email") or ""),
            name=str(row.get("Name") or ""),
            active=row.get("IsActive") is True,
        )
        for row in client.query_all(USERS_SOQL)
        if row.get("Id")
    ]


def task_owner(plan: Plan) -> dict[str, str]:
    """The Task's owner, when the core resolved one (else the org's default: the creator)."""
    return {OWNER_FIELD: plan.owner_id} if plan.owner_id else {}


def record_owner(plan: Plan) -> dict[str, str]:
    """The owner of a Contact/Lead the plan creates, when configured."""
    return task_owner(plan) if plan.owner_on_record else {}

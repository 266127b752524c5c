"""The sandbox's CRM users and how its messages are routed to them.

Every emulator seeds these people as its users (HubSpot owners, Salesforce Users), the
generated messages carry a ``delivered to`` drawn from :data:`DELIVERED_TO`, and the sandbox
config maps some of those names (:data:`OWNER_MAPPING`). So the demo shows every owner rule:
a user's own name, a mapped name, a name nobody has (round-robin for new callers, the default
owner otherwise), and known callers whose record owner is active -- or has left (falls
through). The config names only active users, so ``syncd check`` passes on it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_OWNER",
    "DELIVERED_TO",
    "OWNER_MAPPING",
    "ROUND_ROBIN",
    "TEAM",
    "Member",
    "SeedsOwners",
    "delivered_to",
    "owner_config",
    "record_owner",
]


@dataclass(frozen=True)
class Member:
    first_name: str
    last_name: str
    email: str
    active: bool = True

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


TEAM = (
    Member("Ana", "Lopez", "ana.lopez@example.com"),
    Member("Ben", "Okafor", "ben.okafor@example.com"),
    Member("Chloe", "Martin", "chloe.martin@example.com"),
    Member("Dev", "Patel", "dev.patel@example.com"),
    Member("Office", "Manager", "office@example.com"),
    Member("Carl", "Former", "carl.former@example.com", active=False),  # has left
)
DELIVERED_TO = (
    "Ana Lopez",  # a user's name
    "ben okafor",  # the same, spelt loosely (exact after normalizing)
    "Front desk",  # mapped
    "Billing",  # mapped
    "Sales line",  # nobody
    "Dr. Rivera",  # nobody
    "",  # not delivered to anyone in particular
)
OWNER_MAPPING = {
    "Front desk": "office@example.com",
    "Billing": "chloe.martin@example.com",
}
ROUND_ROBIN = ("ana.lopez@example.com", "ben.okafor@example.com", "dev.patel@example.com")
DEFAULT_OWNER = "office@example.com"


def delivered_to(message_id: str) -> str:
    """The ``delivered to`` of a generated message (a hash, so the generator's random
    stream, and so every other generated value, stays as it was)."""
    return DELIVERED_TO[zlib.crc32(message_id.encode()) % len(DELIVERED_TO)]


def record_owner(index: int) -> Member:
    """The owner of the ``index``-th contact seeded in a CRM (some have left)."""
    return TEAM[index % len(TEAM)]


def owner_config() -> dict[str, Any]:
    """The owner keys of a sandbox target table."""
    return {
        "owners": dict(OWNER_MAPPING),
        "owner_round_robin": list(ROUND_ROBIN),
        "default_owner": DEFAULT_OWNER,
        "owner_on_new_records": True,
    }


@runtime_checkable
class SeedsOwners(Protocol):
    """An emulator with CRM users (HubSpot owners, Salesforce Users) a test can arrange."""

    def seed_user(self, first_name: str, last_name: str, email: str, active: bool = True) -> str:
        """Add a user (inactive: archived/deactivated); returns the id that owns records."""
        ...

    def seed_owner(self, record_id: str, owner_id: str | None) -> None:
        """Set a record's owner directly, as a person in the CRM would."""
        ...

    def owner_ids(self) -> dict[str, str]:
        """Every user's owner id by email, inactive ones included."""
        ...

    def owner_of(self, record_id: str) -> str | None:
        """The owner of a record, activity or task as stored (None: none set)."""
        ...

    def set_user_active(self, owner_id: str, active: bool) -> None:
        """Deactivate (archive) a user or bring them back, as an admin would."""
        ...

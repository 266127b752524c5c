"""Domain values that cross module boundaries: messages, match keys, CRM records, plans, outcomes.

They are plain frozen dataclasses so that every stage (source, store, match, connector) can
be tested on its own with values built by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "Action",
    "ActivityRef",
    "ActivitySpec",
    "CheckResult",
    "CrmRecord",
    "CrmUser",
    "KeyKind",
    "MatchKey",
    "Message",
    "Outcome",
    "Plan",
    "SetupState",
    "SetupStep",
    "activity_marker",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One answering-service message, normalized from whatever spelling the source used.

    ``account`` is the *configured* account name (our key), ``account_number`` the source's.
    ``raw`` keeps the payload exactly as received, unknown keys included.
    """

    account: str
    message_id: str
    created_at: datetime | None = None  # UTC, timezone-aware
    first_name: str = ""
    last_name: str = ""
    company: str = ""
    phone: str = ""
    caller_id: str = ""
    email: str = ""
    content: str = ""
    is_emergency: bool = False
    status: str = ""
    sender: str = ""  # the source's "from"
    resource: str = ""
    account_number: str = ""
    delivered_at: str = ""
    delivered_to: str = ""
    custom_fields: Mapping[str, str] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    # True when built from a list summary that lacks the details a full fetch would give.
    summary: bool = False

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name.strip(), self.last_name.strip()) if p)

    def content_hash(self) -> str:
        """Hash of what matters to a CRM; a change schedules an update of the delivery.

        ``status``, ``delivered_at`` and ``delivered_to`` count: the service changes them after
        the call, and the activity (updated in place, never duplicated) shows the current
        state. ``from``, ``resource``, ``account_number`` and the raw payload do not.
        """
        doc = {
            "id": self.message_id,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "company": self.company,
            "phone": self.phone,
            "caller_id": self.caller_id,
            "email": self.email,
            "content": self.content,
            "is_emergency": self.is_emergency,
            "status": self.status,
            "delivered_at": self.delivered_at,
            "delivered_to": self.delivered_to,
            "custom_fields": dict(sorted(self.custom_fields.items())),
        }
        blob = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


def activity_marker(account: str, message_id: str) -> str:
    """The stable marker every activity carries, so a crash can be reconciled, not repeated."""
    return f"syncd:{account}:{message_id}"


class KeyKind(StrEnum):
    EMAIL = "email"
    PHONE = "phone"  # value is E.164, extension dropped
    COMPANY = "company"  # value is the normalized company name
    NAME = "name"  # value is the normalized "first last"


@dataclass(frozen=True, slots=True, order=True)
class MatchKey:
    kind: KeyKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.value}"


@dataclass(frozen=True, slots=True)
class CrmRecord:
    """A CRM record as a connector read it, in syncd's canonical field names.

    ``kind`` is ``contact``, ``lead``, ``company`` or ``account``. ``phones`` are E.164.
    ``fields`` holds canonical field -> current value (``first_name``, ``last_name``,
    ``email``, ``phone``, ``company`` and any mapped custom field), for fill-blanks decisions.
    """

    id: str
    kind: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    phones: tuple[str, ...] = ()
    company: str = ""
    company_id: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    # The CRM user who owns the record (HubSpot ``hubspot_owner_id``, Salesforce ``OwnerId``),
    # when the connector read it; see :mod:`syncd.owners`.
    owner_id: str | None = None

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name.strip(), self.last_name.strip()) if p)


@dataclass(frozen=True, slots=True)
class CrmUser:
    """A CRM user who can own records and activities (a HubSpot owner, a Salesforce User).

    ``active`` is False for a deactivated user or an archived owner: the CRM refuses (or
    should not be given) them as the owner of new work.
    """

    id: str
    email: str = ""
    name: str = ""
    active: bool = True


class Action(StrEnum):
    CREATE = "create"  # new contact/lead, then the activity
    UPDATE = "update"  # write ``fields`` to an existing record, then the activity
    LOG = "log"  # existing record, nothing to write: only the activity


@dataclass(frozen=True, slots=True)
class ActivitySpec:
    """What to log on the record: a note/call/task, depending on the connector."""

    marker: str
    subject: str
    body: str
    occurred_at: datetime
    emergency: bool = False
    properties: Mapping[str, str] = field(default_factory=dict)
    # Set when the message changed after it was delivered: update this activity in place.
    existing_id: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """One delivery's decided work for one target. Connectors carry plans out in batches.

    Plans in one batch that share ``caller_key`` with ``Action.CREATE`` are the same new
    caller: the connector must create one record and log every activity on it.
    """

    delivery_id: int
    message: Message
    action: Action
    activity: ActivitySpec
    record_id: str | None = None
    record_kind: str = "contact"
    caller_key: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    company_id: str | None = None
    keys: tuple[MatchKey, ...] = ()
    alternatives: tuple[str, ...] = ()
    # An earlier attempt at this delivery may have reached the CRM (a crash, a signal, a
    # hand-back, a timeout, a lost store) before its outcome was recorded. The connector must
    # then find each part of the plan (the contact by caller key or id, the activity and any
    # emergency task by marker) through an immediately consistent read *before* writing it,
    # and write only the parts that are missing. Never a plain resend.
    in_doubt: bool = False
    # The CRM user the activity and any emergency task go to (see :mod:`syncd.owners`), the
    # rule that chose them ("record", "mapping", "name", "round_robin", "default"), and
    # whether a record this plan creates gets that owner too. None: the CRM's default.
    owner_id: str | None = None
    owner_rule: str = ""
    owner_on_record: bool = False


# Not frozen: a connector fills one in step by step as a PlanProgress (syncd.connector), and
# hands the daemon a snapshot (PlanProgress.outcome()), which nothing changes afterwards.
@dataclass(slots=True)
class Outcome:
    """What happened to one plan. A per-record rejection is an Outcome, not an exception."""

    delivery_id: int
    ok: bool
    record_id: str | None = None
    record_kind: str = "contact"
    created: bool = False
    updated: bool = False
    activity_id: str | None = None
    error: str | None = None
    retriable: bool = False
    retry_after: float | None = None
    # Record ids the CRM reported as deleted or merged: drop them from the match cache.
    gone: tuple[str, ...] = ()
    # An in-doubt plan whose every part was found already in the CRM: nothing was written.
    reconciled: bool = False


@dataclass(frozen=True, slots=True)
class ActivityRef:
    """An activity found in the CRM by its marker (crash recovery)."""

    marker: str
    activity_id: str
    record_id: str | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of ``syncd check``: what was tried and whether it worked."""

    name: str
    ok: bool
    detail: str = ""
    # The credentials were refused (``syncd check`` exits 3), as opposed to anything else.
    auth_failed: bool = False


class SetupState(StrEnum):
    """What ``syncd setup`` found or did for one piece a target needs."""

    PRESENT = "present"  # nothing to do
    CREATED = "created"
    WOULD_CREATE = "would_create"  # a dry run
    MANUAL = "manual"  # we lack the permission: the step's detail says what an admin does

    @property
    def done(self) -> bool:
        return self in (SetupState.PRESENT, SetupState.CREATED)


@dataclass(frozen=True, slots=True)
class SetupStep:
    """One piece a target needs (a field, a property, a group) and what ``syncd setup`` did
    (``state``); ``detail`` says more, for ``manual`` the exact steps for an admin."""

    name: str
    state: SetupState
    detail: str = ""

    def __post_init__(self) -> None:
        # A connector written against the first release passes the plain string.
        object.__setattr__(self, "state", SetupState(self.state))

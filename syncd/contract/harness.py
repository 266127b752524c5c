"""The contract harness: one connector type, its contract world, and a state store.

What the suite's tests use: :class:`Crm` (the connector built through its entry point, the
world it talks to, plans made by syncd's own planner, delivery runs through syncd's own
delivery loop), :class:`ContractWorld` (what a connector's contract fixture must offer,
defined beside the emulators in ``syncd.sandbox.crm``), and helpers to make messages and
read what a CRM stored.
"""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy import select

from syncd.config import DaemonSettings, MatchPolicy, TargetSettings
from syncd.connector import Connector, available
from syncd.deliver import DeliveryStats, deliver_target
from syncd.match.keys import extract_keys
from syncd.match.phones import normalize_phone
from syncd.match.policy import Decision, DecisionKind, plan_for
from syncd.models import (
    Action,
    ActivityRef,
    ActivitySpec,
    CheckResult,
    CrmRecord,
    MatchKey,
    Message,
    Outcome,
    Plan,
    activity_marker,
)
from syncd.sandbox.crm import ContractWorld, StoredActivity, StoredContact
from syncd.store.schema import deliveries, messages
from syncd.store.store import Store

__all__ = [
    "ACCOUNT",
    "CONTRACT_GROUP",
    "SEARCH_LAG",
    "ContractWorld",
    "Crm",
    "Recording",
    "StoredActivity",
    "StoredContact",
    "contract_types",
    "e164",
    "load_world",
    "message",
    "visible_text",
]

# A connector's contract fixture: a callable returning a fresh, unstarted ContractWorld,
# registered under the connector's own type name.
CONTRACT_GROUP = "syncd.contract.v1"

ACCOUNT = "acct"
REGIONS = {ACCOUNT: "US"}
SEARCH_LAG = 60.0  # seconds; longer than any test runs, so lagging search never catches up
TAKEN_AT = datetime(2024, 5, 6, 15, 30, tzinfo=UTC)


def _worlds() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=CONTRACT_GROUP)}


def contract_types() -> list[str]:
    """Connector types that registered a contract world (and are installed)."""
    return sorted(set(available()) & set(_worlds()))


def load_world(type_name: str) -> ContractWorld:
    """A fresh world from ``type_name``'s contract fixture (entry point ``syncd.contract.v1``)."""
    factory: Callable[[], ContractWorld] = _worlds()[type_name].load()
    world = factory()
    if not isinstance(world, ContractWorld):
        raise TypeError(f"{type_name}: its contract fixture did not return a ContractWorld")
    return world


def e164(text: str) -> str:
    """The E.164 form of a phone as stored in a CRM, "" when it holds no number."""
    key = normalize_phone(text)
    return key.e164 if key else ""


_BREAK = re.compile(r"(?i)<br\s*/?>|</p>\s*<p[^>]*>")
_TAG = re.compile(r"<[^>]+>")


def visible_text(body: str) -> str:
    """An activity body as a person reads it. Rich-text bodies (HubSpot notes) lose their
    tags and entities, keeping line breaks; plain-text bodies (Salesforce) pass unchanged."""
    if not _TAG.search(body):
        return body
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", body)))


_message_ids = itertools.count(1)


def message(
    *,
    message_id: str | None = None,
    first_name: str = "",
    last_name: str = "",
    company: str = "",
    phone: str = "",
    email: str = "",
    content: str = "Please call back.",
    emergency: bool = False,
) -> Message:
    """A message of the contract account; each call gets a new message id unless given."""
    return Message(
        account=ACCOUNT,
        message_id=message_id or f"M{next(_message_ids):05d}",
        created_at=TAKEN_AT,
        first_name=first_name,
        last_name=last_name,
        company=company,
        phone=phone,
        email=email,
        content=content,
        is_emergency=emergency,
    )


class Recording:
    """A connector passed through unchanged, keeping every plan it was asked to apply."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.name = inner.name
        self.plans: list[Plan] = []

    def lookup(self, keys: Sequence[MatchKey]) -> Mapping[MatchKey, Sequence[CrmRecord]]:
        return self.inner.lookup(keys)

    def read(self, kind: str, ids: Sequence[str]) -> Mapping[str, CrmRecord]:
        return self.inner.read(kind, ids)

    def apply(self, plans: Sequence[Plan]) -> Sequence[Outcome]:
        self.plans.extend(plans)
        return self.inner.apply(plans)

    def find_activities(self, markers: Sequence[str]) -> Mapping[str, ActivityRef]:
        return self.inner.find_activities(markers)

    def check(self) -> Sequence[CheckResult]:
        return self.inner.check()

    def close(self) -> None:
        self.inner.close()


@dataclass
class Crm:
    """One connector type under test, its emulator, and a state store for delivery runs."""

    type: str
    emulator: ContractWorld
    connector: Connector
    store_path: Path
    _deliveries: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _store: Store | None = None

    # -- settings --------------------------------------------------------------------------
    def target(
        self,
        *,
        field_policy: str = "fill_blanks",
        on_ambiguity: str = "review",
    ) -> TargetSettings:
        return TargetSettings(
            name=self.type,
            type=self.type,
            field_policy=field_policy,  # type: ignore[arg-type]
            match=MatchPolicy(on_ambiguity=on_ambiguity),  # type: ignore[arg-type]
            options=self.emulator.connector_options(),
        )

    # -- plans -----------------------------------------------------------------------------
    def new_plan(self, msg: Message, *, company_id: str | None = None) -> Plan:
        """What the planner makes of a caller nobody knows."""
        plan = plan_for(
            next(self._deliveries),
            msg,
            extract_keys(msg),
            Decision(DecisionKind.NEW, company_id=company_id),
            self.target(),
        )
        assert plan is not None
        assert plan.action is Action.CREATE
        return plan

    def existing_plan(
        self, msg: Message, record: CrmRecord, *, field_policy: str = "fill_blanks"
    ) -> Plan:
        """What the planner makes of a caller matched to ``record`` (as ``read`` gave it)."""
        plan = plan_for(
            next(self._deliveries),
            msg,
            extract_keys(msg),
            Decision(DecisionKind.EXISTING, record=record, matched_by="phone"),
            self.target(field_policy=field_policy),
        )
        assert plan is not None
        return plan

    def hand_plan(
        self,
        msg: Message,
        action: Action,
        record_id: str,
        fields: Mapping[str, str],
    ) -> Plan:
        """A plan built by hand, for what the planner would never ask but a connector must
        still get right (a LOG carrying fields, an empty value)."""
        return Plan(
            delivery_id=next(self._deliveries),
            message=msg,
            action=action,
            activity=ActivitySpec(
                marker=activity_marker(msg.account, msg.message_id),
                subject=f"Call from {msg.full_name or 'unknown caller'}",
                body=msg.content,
                occurred_at=TAKEN_AT,
                emergency=msg.is_emergency,
            ),
            record_id=record_id,
            fields=dict(fields),
        )

    def found_again(self, plan: Plan, outcome: Outcome) -> None:
        """The plan applied again *in doubt* finds what it wrote at once (search lags a
        minute here): reconciled, the same ids, nothing written twice."""
        again = self.apply_one(replace(plan, in_doubt=True))
        assert again.reconciled, again
        assert (again.record_id, again.activity_id) == (outcome.record_id, outcome.activity_id)
        assert len(self.activities(plan.activity.marker)) == 1

    def apply_one(self, plan: Plan) -> Outcome:
        outcomes = self.connector.apply([plan])
        assert len(outcomes) == 1, outcomes
        outcome = outcomes[0]
        assert outcome.delivery_id == plan.delivery_id
        assert outcome.ok, outcome.error
        return outcome

    # -- the emulator's view ---------------------------------------------------------------
    def contact(self, record_id: str) -> StoredContact:
        found = [c for c in self.emulator.contacts() if c.id == record_id]
        assert len(found) == 1, f"no live contact {record_id} in the {self.type} emulator"
        return found[0]

    def activities(self, marker: str) -> list[StoredActivity]:
        return [a for a in self.emulator.activities() if a.marker == marker]

    def check(self) -> list[CheckResult]:
        return list(self.connector.check())

    # -- delivery --------------------------------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(f"sqlite:///{self.store_path}")
            self._store.migrate()
        return self._store

    def deliver(
        self,
        batch: list[Message],
        *,
        batch_size: int = 500,
        on_ambiguity: str = "review",
        connector: Connector | None = None,
        concurrency: int = 1,
    ) -> DeliveryStats:
        """Ingest ``batch`` and run the delivery loop until nothing is due (one batch at a
        time unless ``concurrency`` says otherwise)."""
        self.store.ingest(ACCOUNT, batch, [self.type])
        daemon = DaemonSettings(
            database_url=self.store.url,
            batch_size=batch_size,
            retry_base_seconds=1.0,
            worker_id="contract",
        )
        return deliver_target(
            self.store,
            connector or self.connector,
            replace(self.target(on_ambiguity=on_ambiguity), concurrency=concurrency),
            daemon,
            regions=REGIONS,
        )

    def delivery(self, message_id: str) -> Any:
        """The delivery row of ``message_id`` for this target."""
        query = (
            select(deliveries)
            .join(messages, messages.c.id == deliveries.c.message_pk)
            .where(messages.c.message_id == message_id, deliveries.c.target == self.type)
        )
        with self.store.engine.connect() as conn:
            return conn.execute(query).one()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

"""The delivery step that gives each plan its owner, and records what it decided.

Called from :mod:`syncd.deliver` once per batch, after planning and before the connector
applies the plans: at most one read of the CRM's users per refresh interval, one store query
for owners of records the match cache answered, and one store update for round-robin turns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from syncd.models import Action, CrmRecord, Outcome, Plan
from syncd.owners.directory import directory_for, forget
from syncd.owners.rules import OwnerFacts, Resolution, resolve_owner
from syncd.owners.settings import OwnerSettings
from syncd.store import owners as owner_store

if TYPE_CHECKING:
    from syncd.store.store import Store

__all__ = ["OwnerStep"]

log = structlog.get_logger(__name__)
_warned: set[str] = set()
# What the CRMs answer when the owner we wrote is no longer valid (Salesforce, HubSpot).
OWNER_REFUSALS = ("INACTIVE_OWNER_OR_USER", "INVALID_OWNER_ID")


class OwnerStep:
    """One batch's owner work for one target."""

    def __init__(
        self,
        store: Store,
        connector: object,
        target: str,
        settings: OwnerSettings,
        *,
        dry_run: bool = False,
    ) -> None:
        self.store, self.connector, self.target = store, connector, target
        self.settings, self.dry_run = settings, dry_run
        self.decided: dict[int, tuple[Resolution, str | None]] = {}

    def assign(self, plans: Sequence[Plan], records: Mapping[int, CrmRecord | None]) -> list[Plan]:
        """The plans with ``owner_id``/``owner_rule`` set (unchanged when owners are off)."""
        if not self.settings.enabled or not plans:
            return list(plans)
        directory = directory_for(self.connector, self.settings.refresh_seconds)
        if directory is None:
            if not self.dry_run and self.target not in _warned:
                _warned.add(self.target)
                log.warning("owner rules configured but the connector cannot list users",
                            target=self.target)  # fmt: skip
            return list(plans)
        record_owner: dict[int, str | None] = {}
        unknown: dict[int, str] = {}
        for plan in plans:
            record = records.get(plan.delivery_id)
            owner = record.owner_id if record is not None else None
            record_owner[plan.delivery_id] = owner
            if owner is None and plan.action is not Action.CREATE and plan.record_id:
                unknown[plan.delivery_id] = plan.record_id
        if unknown and "record" in self.settings.rules:
            # A caller the match cache answered was not read: use the owner seen last time.
            seen = owner_store.record_owners(self.store, self.target, unknown.values())
            for delivery_id, record_id in unknown.items():
                record_owner[delivery_id] = seen.get(record_id)
        facts = {
            p.delivery_id: OwnerFacts(
                delivered_to=p.message.delivered_to,
                record_owner_id=record_owner[p.delivery_id],
                new_record=p.action is Action.CREATE,
            )
            for p in plans
        }
        first = {
            p.delivery_id: resolve_owner(self.settings, directory, facts[p.delivery_id])
            for p in plans
        }
        # One turn per new caller (plans sharing a caller key create one record).
        callers: list[str] = []
        for plan in plans:
            key = plan.caller_key or f"delivery:{plan.delivery_id}"
            if first[plan.delivery_id].needs_turn and key not in callers:
                callers.append(key)
        turn_of: dict[str, int] = {}
        if callers:
            start = (
                0 if self.dry_run else owner_store.take_turns(self.store, self.target, len(callers))
            )
            turn_of = {key: start + i for i, key in enumerate(callers)}
        out: list[Plan] = []
        for plan in plans:
            resolution = first[plan.delivery_id]
            if resolution.needs_turn:
                turn = turn_of[plan.caller_key or f"delivery:{plan.delivery_id}"]
                resolution = resolve_owner(self.settings, directory, facts[plan.delivery_id], turn)
            self.decided[plan.delivery_id] = (resolution, record_owner[plan.delivery_id])
            out.append(
                dataclasses.replace(
                    plan,
                    owner_id=resolution.owner_id,
                    owner_rule=resolution.rule,
                    owner_on_record=self.settings.on_new_records and plan.action is Action.CREATE,
                )
            )
        return out

    def checked(self, outcomes: Sequence[Outcome]) -> list[Outcome]:
        """An owner deactivated since the users were read is refused by the CRM: read the
        users again and retry those deliveries (they then fall through to the next rule)
        instead of setting them aside as failed."""
        out = list(outcomes)
        refused = [
            i
            for i, o in enumerate(out)
            if not o.ok
            and o.delivery_id in self.decided
            and self.decided[o.delivery_id][0].owner_id
            and any(code in (o.error or "") for code in OWNER_REFUSALS)
        ]
        if refused:
            forget(self.connector)
            log.warning("owner refused by the CRM; re-reading its users", target=self.target,
                        deliveries=len(refused))  # fmt: skip
            for i in refused:
                out[i] = dataclasses.replace(out[i], retriable=True)
        return out

    def record(self, plans: Sequence[Plan], outcomes: Sequence[Outcome], now: datetime) -> None:
        """Remember the owner of each delivered message (for status, the demo, and the next
        call from a caller the match cache knows)."""
        if self.dry_run or not self.decided:
            return
        by_id = {p.delivery_id: p for p in plans}
        rows: list[owner_store.Assignment] = []
        for outcome in outcomes:
            plan = by_id.get(outcome.delivery_id)
            decided = self.decided.get(outcome.delivery_id)
            if not outcome.ok or plan is None or decided is None:
                continue
            resolution, record_owner = decided
            if outcome.created and plan.owner_on_record and plan.owner_id:
                record_owner = plan.owner_id
            rows.append(
                owner_store.Assignment(
                    delivery_id=plan.delivery_id,
                    target=self.target,
                    message_id=plan.message.message_id,
                    record_id=outcome.record_id,
                    record_owner_id=record_owner,
                    owner_id=resolution.owner_id,
                    rule=resolution.rule,
                    reasons=resolution.reasons,
                )
            )
        owner_store.record_assignments(self.store, rows, now)

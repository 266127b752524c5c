"""The ``dry-run`` connector: plans are recorded, nothing is written anywhere.

As a target type (``type = "dry-run"``) it knows no CRM records, so every caller is new.
``syncd run --dry-run`` wraps each real connector in it (``options["inner"]``): lookups and
reads go to the real CRM, which only ever *reads*, and writes are recorded instead of made.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from syncd.plugin import (
    Action,
    ActivityRef,
    CheckResult,
    Connector,
    CrmRecord,
    CrmUser,
    ListsOwners,
    MatchKey,
    Outcome,
    Plan,
    TargetContext,
)

__all__ = ["DryRunConnector", "create"]

# Ids of the records and activities it only pretended to write; the CRM never saw them.
_PREFIX = "dry-run:"


class DryRunConnector:
    def __init__(self, name: str, inner: Connector | None = None) -> None:
        self.name = name
        self.inner = inner
        self.plans: list[Plan] = []
        self._lock = threading.Lock()

    def lookup(self, keys: Sequence[MatchKey]) -> Mapping[MatchKey, Sequence[CrmRecord]]:
        return self.inner.lookup(keys) if self.inner else {key: [] for key in keys}

    def read(self, kind: str, ids: Sequence[str]) -> Mapping[str, CrmRecord]:
        if self.inner is None:
            return {i: CrmRecord(id=i, kind=kind) for i in ids}
        # Ids it made up (recorded while the target was of type dry-run) name nothing in the
        # real CRM, which may refuse them as malformed: leave them out, as records gone.
        real = [i for i in ids if not i.startswith(_PREFIX)]
        return self.inner.read(kind, real) if real else {}

    def apply(self, plans: Sequence[Plan]) -> Sequence[Outcome]:
        with self._lock:
            self.plans.extend(plans)
        outcomes = []
        for plan in plans:
            created = plan.action is Action.CREATE
            record_id = plan.record_id or f"{_PREFIX}{plan.caller_key}"
            outcomes.append(
                Outcome(
                    plan.delivery_id,
                    ok=True,
                    record_id=record_id,
                    record_kind=plan.record_kind,
                    created=created,
                    updated=plan.action is Action.UPDATE,
                    activity_id=plan.activity.existing_id or f"{_PREFIX}{plan.activity.marker}",
                )
            )
        return outcomes

    def find_activities(self, markers: Sequence[str]) -> Mapping[str, ActivityRef]:
        return self.inner.find_activities(markers) if self.inner else {}

    def check(self) -> Sequence[CheckResult]:
        if self.inner:
            return self.inner.check()
        return [CheckResult("dry-run", True, "records plans, writes nothing")]

    def close(self) -> None:
        if self.inner:
            self.inner.close()


class _ListingOwners(DryRunConnector):
    """A dry run of a connector that lists the CRM's users: owner rules still read them, so
    the dry run shows who would own each message (the list is a read; nothing is written)."""

    def __init__(self, name: str, inner: Connector, users: ListsOwners) -> None:
        super().__init__(name, inner)
        self._users = users

    def owners(self) -> Sequence[CrmUser]:
        return self._users.owners()


def create(context: TargetContext) -> Connector:
    inner: object = context.options.get("inner")
    if inner is None:
        return DryRunConnector(context.name)
    if not isinstance(inner, Connector):
        raise TypeError("dry-run: options['inner'] must be a Connector")
    if isinstance(inner, ListsOwners):
        return _ListingOwners(context.name, inner, inner)
    return DryRunConnector(context.name, inner)

"""A CRM in two dicts that records every call, for the delivery tests: it honours the
in-doubt contract (an in-doubt plan whose activity is already there is reconciled, not
written) and counts activity writes per marker, so a duplicate is countable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from syncd.models import (
    Action,
    ActivityRef,
    CheckResult,
    CrmRecord,
    MatchKey,
    Outcome,
    Plan,
)

__all__ = ["FakeConnector"]

TARGET = "crm"


@dataclass
class FakeConnector:
    """A CRM in two dicts that records every call, so a test can count them. Records it
    creates can be read and looked up afterwards, as in a real CRM."""

    name: str = TARGET
    records: dict[MatchKey, list[CrmRecord]] = field(default_factory=dict)
    readable: dict[str, CrmRecord] = field(default_factory=dict)
    activities: dict[str, ActivityRef] = field(default_factory=dict)
    # Per-plan outcome override; None means success.
    fail: Callable[[Plan], Outcome | None] = lambda plan: None
    raises: BaseException | None = None
    silent: bool = False  # answer apply() with no outcomes at all
    # Called once the writes of an apply() have landed, before it answers: raise here to
    # attack the moment a write is in the CRM but not yet recorded.
    after_write: Callable[[list[Plan]], None] | None = None
    # Called after each plan's write, as a real connector calls the daemon's request
    # observer after each answer (``syncd.deliver.check_claim`` is the fence there).
    each_answer: Callable[[Plan], None] | None = None
    lookups: list[list[MatchKey]] = field(default_factory=list)
    reads: list[tuple[str, list[str]]] = field(default_factory=list)
    applied: list[list[Plan]] = field(default_factory=list)
    found: list[list[str]] = field(default_factory=list)
    written: Counter[str] = field(default_factory=Counter)  # activity writes per marker

    def lookup(self, keys: Sequence[MatchKey]) -> Mapping[MatchKey, Sequence[CrmRecord]]:
        self.lookups.append(list(keys))
        return {key: self.records.get(key, []) for key in keys}

    def read(self, kind: str, ids: Sequence[str]) -> Mapping[str, CrmRecord]:
        self.reads.append((kind, list(ids)))
        return {i: self.readable[i] for i in ids if i in self.readable}

    def apply(self, plans: Sequence[Plan]) -> Sequence[Outcome]:
        self.applied.append(list(plans))
        if self.raises is not None:
            raise self.raises
        if self.silent:
            return []
        outcomes = []
        for plan in plans:
            failed = self.fail(plan)
            if failed is not None:
                outcomes.append(failed)
                continue
            marker = plan.activity.marker
            if plan.in_doubt and marker in self.activities:  # the contract: find, then write
                ref = self.activities[marker]
                outcomes.append(
                    Outcome(
                        plan.delivery_id,
                        ok=True,
                        record_id=ref.record_id,
                        activity_id=ref.activity_id,
                        reconciled=True,
                    )
                )
                continue
            created = plan.action is Action.CREATE
            record_id = plan.record_id or f"new:{plan.caller_key}"  # one record per caller_key
            if created:
                record = CrmRecord(record_id, plan.record_kind, fields=dict(plan.fields))
                self.readable[record_id] = record
                for key in plan.keys:
                    self.records.setdefault(key, []).append(record)
            self.written[marker] += 1
            self.activities[marker] = ActivityRef(marker, f"act:{plan.delivery_id}", record_id)
            if self.each_answer is not None:
                self.each_answer(plan)
            outcomes.append(
                Outcome(
                    plan.delivery_id,
                    ok=True,
                    record_id=record_id,
                    record_kind=plan.record_kind,
                    created=created,
                    updated=plan.action is Action.UPDATE,
                    activity_id=f"act:{plan.delivery_id}",
                )
            )
        if self.after_write is not None:
            self.after_write(list(plans))
        return outcomes

    def find_activities(self, markers: Sequence[str]) -> Mapping[str, ActivityRef]:
        self.found.append(list(markers))
        return {m: self.activities[m] for m in markers if m in self.activities}

    def check(self) -> Sequence[CheckResult]:
        return [CheckResult("fake", True)]

    def close(self) -> None:
        return None

    @property
    def duplicates(self) -> int:
        """Activity writes beyond the first, per marker."""
        return sum(n - 1 for n in self.written.values() if n > 1)

    @property
    def plans(self) -> list[Plan]:
        return [p for batch in self.applied for p in batch]

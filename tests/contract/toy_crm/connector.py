"""The toy connector: everything it needs from syncd comes from ``syncd.plugin``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from syncd.plugin import (
    Action,
    ActivityRef,
    CheckResult,
    Connector,
    CrmRecord,
    KeyKind,
    MatchKey,
    Outcome,
    Plan,
    PlanProgress,
    TargetContext,
    normalize_company,
    normalize_phone,
)

from .service import CRMS, Row

FIELDS = ("first_name", "last_name", "email", "phone", "company")


class ToyConnector:
    def __init__(self, context: TargetContext) -> None:
        self.name, self.context = context.name, context
        self.crm = CRMS[str(context.options["crm"])]

    def _seen(self, endpoint: str) -> None:
        self.context.observe(self.name, endpoint, 200, 0.0)

    def _record(self, row: Row) -> CrmRecord:
        v = row.values
        if row.kind == "company":
            return CrmRecord(id=row.id, kind="company", company=v["name"])
        key = normalize_phone(v.get("phone", ""), self.context.default_region)
        return CrmRecord(
            id=row.id, kind="contact", first_name=v.get("first_name", ""),
            last_name=v.get("last_name", ""), email=v.get("email", ""),
            phones=(key.e164,) if key else (), company=v.get("company", ""),
            company_id=v.get("company_id") or None, fields={f: v.get(f, "") for f in FIELDS},
        )  # fmt: skip

    def lookup(self, keys: Sequence[MatchKey]) -> Mapping[MatchKey, Sequence[CrmRecord]]:
        rows = [*self.crm.search("contact"), *self.crm.search("company")]
        records = [self._record(r) for r in rows]

        def hit(key: MatchKey, r: CrmRecord) -> bool:
            if key.kind is KeyKind.PHONE:
                return key.value in r.phones
            if key.kind is KeyKind.EMAIL:
                return bool(r.email) and r.email.casefold() == key.value.casefold()
            if key.kind is KeyKind.COMPANY:
                return bool(r.company) and normalize_company(r.company) == key.value
            return f"{r.first_name} {r.last_name}".casefold() == key.value.casefold()

        return {key: [r for r in records if hit(key, r)] for key in keys}

    def read(self, kind: str, ids: Sequence[str]) -> Mapping[str, CrmRecord]:
        return {r.id: self._record(r) for r in self.crm.get(list(ids))}

    def apply(self, plans: Sequence[Plan]) -> Sequence[Outcome]:
        made: dict[str, str] = {}  # caller key -> the contact created for it
        done = []
        for plan in plans:
            state, wrote = PlanProgress(plan, plan.record_id, plan.record_kind), False
            if plan.in_doubt and plan.caller_key:  # an earlier attempt may have written
                known = self.crm.where("contact", "caller_key", {plan.caller_key})
                if known:
                    made[plan.caller_key] = known[0].id
            if plan.action is Action.CREATE and plan.caller_key in made:
                state.record_id = made[plan.caller_key]
            elif plan.action is Action.CREATE:
                values = {**plan.fields, "company_id": plan.company_id or ""}
                state.record_id = self.crm.put("contact", {**values, "caller_key": plan.caller_key})
                made[plan.caller_key], state.created, wrote = state.record_id, True, True
                self._seen("contact.create")
            elif not (rows := self.crm.get([plan.record_id or ""])):  # deleted or merged
                state.fail("the record is gone", retriable=True, gone=[plan.record_id or ""])
                done.append(state.outcome())
                continue
            elif plan.action is Action.UPDATE:
                row = rows[0]
                changes = {k: v for k, v in plan.fields.items() if v and row.values.get(k) != v}
                if changes:
                    self.crm.patch(plan.record_id, changes)
                    wrote = True
                    self._seen("contact.update")
                state.updated = True
            old = self.find_activities([plan.activity.marker]) if plan.in_doubt else {}
            if plan.activity.marker in old:
                state.activity_id = old[plan.activity.marker].activity_id
            else:
                state.activity_id = self.crm.put("note", {
                    "record_id": state.record_id or "", "marker": plan.activity.marker,
                    "subject": plan.activity.subject, "body": plan.activity.body,
                    "high_priority": "1" if plan.activity.emergency else "",
                })  # fmt: skip
                wrote = True
                self._seen("note.create")
            done.append(replace(state.outcome(), reconciled=plan.in_doubt and not wrote))
        return done

    def find_activities(self, markers: Sequence[str]) -> Mapping[str, ActivityRef]:
        rows = self.crm.where("note", "marker", set(markers))
        return {
            r.values["marker"]: ActivityRef(r.values["marker"], r.id, r.values["record_id"])
            for r in rows
        }

    def check(self) -> Sequence[CheckResult]:
        return [CheckResult("toy", True, f"in-memory CRM {self.crm.name!r}")]

    def close(self) -> None:
        return None


def create(context: TargetContext) -> Connector:
    return ToyConnector(context)

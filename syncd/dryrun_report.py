"""What ``syncd run --dry-run`` prints: the plan per target, one entry per caller.

Every planned delivery is grouped under its caller (the record it goes to, or the new caller's
key), with field-level ``old -> new`` values read from the CRM (one batched read per record
kind). Text output shows the first ``limit`` callers and says how many it left out; ``--json``
prints everything as one JSON object on the last line. Phones and emails are masked unless
``mask_phones = false``: the plan is read by people outside the CRM.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import structlog

from syncd.connector import Connector, RecordsPlans
from syncd.match.phones import mask_phone, mask_phones_in
from syncd.models import Action, CrmRecord, Plan

__all__ = ["plan_report", "print_plans"]

_log = structlog.get_logger(__name__)
_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")


def mask_pii(text: str) -> str:
    """Phones to ``+1 *** *** **67``, emails to ``j***@example.com``."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", mask_phones_in(text))


def _mask_value(field: str, value: str) -> str:
    if "phone" in field or "mobile" in field:
        return mask_phone(value) if value else value
    return mask_pii(value)


def _mask_key(caller_key: str) -> str:
    kind, _, rest = caller_key.partition(":")
    if kind == "phone":
        return f"phone:{mask_phone(rest)}"
    return f"{kind}:{mask_pii(rest)}" if rest else caller_key


def _old_value(record: CrmRecord | None, field: str) -> str | None:
    if record is None:
        return None
    if field in record.fields:
        return record.fields[field]
    if field == "phone":
        return record.phones[0] if record.phones else ""
    value = getattr(record, field, None)
    return value if isinstance(value, str) else None


def _current(connector: Connector, plans: Sequence[Plan]) -> dict[str, CrmRecord]:
    """The records the plans update, as the CRM has them now (read-only, batched by kind)."""
    wanted: dict[str, list[str]] = {}
    for plan in plans:
        if plan.record_id and plan.fields:
            wanted.setdefault(plan.record_kind, []).append(plan.record_id)
    found: dict[str, CrmRecord] = {}
    for kind, ids in wanted.items():
        try:
            found.update(connector.read(kind, list(dict.fromkeys(ids))))
        except Exception as exc:  # a plan without old values is still a plan
            _log.warning("dry run: current values unreadable", kind=kind, error=str(exc))
    return found


def plan_report(
    name: str, connector: Connector, plans: Sequence[Plan], *, mask: bool = True
) -> dict[str, Any]:
    """One target's plan, grouped by caller, as plain data (what ``--json`` prints)."""
    records = _current(connector, plans)
    callers: dict[str, dict[str, Any]] = {}
    show = (lambda f, v: _mask_value(f, v)) if mask else (lambda f, v: v)
    for plan in plans:
        who = plan.record_id or plan.caller_key or f"delivery:{plan.delivery_id}"
        entry = callers.get(who)
        if entry is None:
            entry = callers[who] = {
                "record": plan.record_id,
                "record_kind": plan.record_kind,
                "caller": (_mask_key(plan.caller_key) if mask else plan.caller_key) or None,
                "action": plan.action.value,
                "fields": {},
                "messages": [],
            }
        if plan.action is Action.CREATE or entry["action"] == Action.LOG:
            entry["action"] = plan.action.value
        record = records.get(plan.record_id or "")
        for field, new in sorted(plan.fields.items()):
            old = _old_value(record, field)
            entry["fields"][field] = {
                "old": show(field, old) if old else old,
                "new": show(field, new),
            }
        entry["messages"].append(
            {
                "message_id": plan.message.message_id,
                "activity": mask_pii(plan.activity.subject) if mask else plan.activity.subject,
                "emergency": plan.activity.emergency,
            }
        )
    return {
        "target": name,
        "planned_deliveries": len(plans),
        "callers": len(callers),
        "plans": list(callers.values()),
    }


def print_plans(
    connectors: Mapping[str, Connector],
    out: TextIO,
    *,
    as_json: bool = False,
    limit: int = 200,
    mask: bool = True,
) -> None:
    reports = [
        plan_report(
            name,
            connector,
            connector.plans if isinstance(connector, RecordsPlans) else [],
            mask=mask,
        )
        for name, connector in connectors.items()
    ]
    if as_json:
        out.write(json.dumps({"dry_run": True, "targets": reports}, sort_keys=True) + "\n")
        return
    for report in reports:
        out.write(
            f"[dry-run] target {report['target']}: {report['planned_deliveries']} planned "
            f"deliveries to {report['callers']} callers (nothing written)\n"
        )
        for entry in report["plans"][:limit]:
            who = (
                f"{entry['record_kind']} {entry['record']}"
                if entry["record"]
                else f"new {entry['record_kind']} ({entry['caller'] or '?'})"
            )
            out.write(f"  {entry['action']:6} {who}\n")
            for field, change in entry["fields"].items():
                new = json.dumps(change["new"], ensure_ascii=False)
                if entry["action"] == Action.CREATE:
                    out.write(f"      {field}: {new}\n")
                    continue
                old = (
                    "(unread)"
                    if change["old"] is None
                    else json.dumps(change["old"], ensure_ascii=False)
                )
                out.write(f"      {field}: {old} -> {new}\n")
            for message in entry["messages"]:
                out.write(f"    {message['message_id']}: {message['activity']}\n")
        left = len(report["plans"]) - limit
        if left > 0:
            out.write(
                f"  ... {left} more callers not shown (limit {limit}; "
                "`syncd run --dry-run --json` lists them all)\n"
            )

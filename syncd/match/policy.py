"""Who is this caller in this CRM? A pure decision over keys and candidates, then a plan.

``decide`` never talks to a CRM or the store: it is handed the caller's keys and every
candidate the cache or the connector found, and returns a :class:`Decision`. ``plan_for``
turns a decision into the connector's :class:`~syncd.models.Plan` under the target's sync
mode and field policy. Both are functions of their inputs, so they are tested table-wise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from syncd.config import MatchPolicy, TargetSettings
from syncd.match.keys import CallerKeys
from syncd.match.names import normalize_company, same_company, same_person
from syncd.match.phones import phone_value
from syncd.models import (
    Action,
    ActivitySpec,
    CrmRecord,
    KeyKind,
    MatchKey,
    Message,
    Plan,
    activity_marker,
)

__all__ = [
    "CONTACT_KINDS",
    "Decision",
    "DecisionKind",
    "canonical_fields",
    "decide",
    "plan_for",
    "policy_keys",
]

CONTACT_KINDS = ("contact", "lead")
COMPANY_KINDS = ("company", "account")
CANONICAL = ("first_name", "last_name", "email", "phone", "company")


class DecisionKind(StrEnum):
    """What the match decided for a message."""

    EXISTING = "existing"  # attach to ``record``
    NEW = "new"  # create a record
    REVIEW = "review"  # an operator chooses
    SKIP = "skip"


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    record: CrmRecord | None = None
    alternatives: tuple[str, ...] = ()
    company_id: str | None = None
    matched_by: str = ""  # email | phone | company_name | cache
    # Why it went to review; on an "existing" decision, why on_ambiguity="best" had to choose
    # (the others are ``alternatives``, recorded for ``syncd status``).
    reason: str = ""


def name_key(keys: CallerKeys) -> MatchKey | None:
    """The cache key for a company-plus-name match ("acme|jane doe")."""
    if keys.company and keys.person:
        return MatchKey(KeyKind.NAME, f"{keys.company}|{keys.person}")
    return None


def policy_keys(keys: CallerKeys, policy: MatchPolicy) -> list[MatchKey]:
    """The keys this policy may look up, strongest first."""
    out: list[MatchKey] = []
    for name in policy.keys:
        if name == "email":
            out += [MatchKey(KeyKind.EMAIL, e) for e in keys.emails]
        elif name == "phone":
            out += [MatchKey(KeyKind.PHONE, p.e164) for p in keys.phones]
        elif name == "company_name" and keys.company:
            out.append(MatchKey(KeyKind.COMPANY, keys.company))
    return out


def _score(record: CrmRecord, keys: CallerKeys, policy: MatchPolicy) -> float:
    """Tie-break: how many independent facts point at this record."""
    score = 0.0
    if record.email and record.email.lower() in keys.emails:
        score += 4
    if set(record.phones) & {p.e164 for p in keys.phones}:
        score += 2
    if keys.person and same_person(record.full_name, keys.person, policy.name_threshold):
        score += 1
    if keys.company and same_company(record.company, keys.company, policy.company_threshold):
        score += 0.5
    if record.kind == "contact":
        score += 0.25  # a converted contact beats the lead it came from
    return score


def _pick(
    found: list[CrmRecord], keys: CallerKeys, policy: MatchPolicy, matched_by: str
) -> Decision:
    unique = list({r.id: r for r in found}.values())
    if len(unique) == 1:
        return Decision(DecisionKind.EXISTING, record=unique[0], matched_by=matched_by)
    ranked = sorted(unique, key=lambda r: (-_score(r, keys, policy), r.id))
    best, runner_up = ranked[0], ranked[1]
    others = tuple(r.id for r in ranked[1:])
    if _score(best, keys, policy) > _score(runner_up, keys, policy):
        return Decision(
            DecisionKind.EXISTING, record=best, alternatives=others, matched_by=matched_by
        )
    tie = f"{len(ranked)} equally good {matched_by} matches"
    if policy.on_ambiguity == "best":
        return Decision(
            DecisionKind.EXISTING,
            record=best,
            alternatives=others,
            matched_by=matched_by,
            reason=tie,
        )
    return Decision(
        DecisionKind.REVIEW,
        alternatives=tuple(r.id for r in ranked),
        matched_by=matched_by,
        reason=tie,
    )


def decide(
    keys: CallerKeys,
    candidates: Mapping[MatchKey, Sequence[CrmRecord]],
    policy: MatchPolicy,
) -> Decision:
    for name in policy.keys:
        found: list[CrmRecord] = []
        if name == "email":
            for email in keys.emails:
                found += candidates.get(MatchKey(KeyKind.EMAIL, email), ())
        elif name == "phone":
            for phone in keys.phones:
                found += candidates.get(MatchKey(KeyKind.PHONE, phone.e164), ())
        elif name == "company_name" and keys.company and keys.person:
            for record in candidates.get(MatchKey(KeyKind.COMPANY, keys.company), ()):
                if (
                    record.kind in CONTACT_KINDS
                    and same_company(record.company, keys.company, policy.company_threshold)
                    and same_person(record.full_name, keys.person, policy.name_threshold)
                ):
                    found.append(record)
        found = [r for r in found if r.kind in CONTACT_KINDS]
        if found:
            return _pick(found, keys, policy, name)
    if not keys.caller_key:
        return Decision(
            DecisionKind.REVIEW, reason="no phone, email or company and name to match or create by"
        )
    company_id = None
    if keys.company:
        companies = [
            r
            for r in candidates.get(MatchKey(KeyKind.COMPANY, keys.company), ())
            if r.kind in COMPANY_KINDS
            and same_company(r.company, keys.company, policy.company_threshold)
        ]
        if companies:
            exact = [r for r in companies if normalize_company(r.company) == keys.company]
            company_id = sorted(exact or companies, key=lambda r: r.id)[0].id
    return Decision(DecisionKind.NEW, company_id=company_id)


def canonical_fields(message: Message, keys: CallerKeys) -> dict[str, str]:
    """What the message says about the caller, in syncd's canonical field names."""
    # The match key is E.164 alone; what the CRM gets keeps the extension ("ext. 12").
    phone = phone_value(keys.phones[0]) if keys.phones else ""
    values = {
        "first_name": message.first_name.strip(),
        "last_name": message.last_name.strip(),
        "email": keys.emails[0] if keys.emails else "",
        "phone": phone,
        "company": message.company.strip(),
    }
    return {k: v for k, v in values.items() if v}


def _field_updates(
    offered: Mapping[str, str], record: CrmRecord, known: Mapping[str, str], policy: str
) -> dict[str, str]:
    current = {**known, **{k: v for k, v in record.fields.items() if v}}
    updates: dict[str, str] = {}
    for name, value in offered.items():
        if not value:
            continue  # an empty value never overwrites data
        have = current.get(name, "")
        has_phone = bool(record.phones or have)
        number = value.split(" ext. ", 1)[0]
        same = number in record.phones and value in (number, have)
        if name == "phone" and has_phone and (policy == "fill_blanks" or same):
            continue
        if policy == "fill_blanks" and have:
            continue
        if policy == "overwrite" and have == value:
            continue
        updates[name] = value
    return updates


def _activity(
    message: Message, keys: CallerKeys, target: TargetSettings, existing_id: str | None
) -> ActivitySpec:
    who = message.full_name or (keys.phones[0].e164 if keys.phones else "") or "unknown caller"
    subject = f"Call from {who}" + (
        f" ({message.company.strip()})" if message.company.strip() else ""
    )
    if message.is_emergency:
        subject = f"EMERGENCY: {subject}"
    lines = [message.content.strip()] if message.content.strip() else []
    details = [
        ("Caller", message.full_name),
        ("Company", message.company),
        ("Phone", message.phone),
        ("Caller ID", message.caller_id if message.caller_id != message.phone else ""),
        ("Email", ", ".join(keys.emails)),
        # The service's own state of the message; a change updates this activity in place.
        ("Status", message.status),
        ("Delivered at", message.delivered_at),
        ("Delivered to", message.delivered_to),
    ]
    details += [(label, value) for label, value in message.custom_fields.items()]
    lines += [f"{label}: {value}" for label, value in details if value and str(value).strip()]
    taken = message.created_at.isoformat() if message.created_at else "unknown time"
    lines.append(
        f"Message {message.message_id} taken {taken} (Berkshire account {message.account})"
    )
    properties = {
        crm: message.custom_fields[label]
        for label, crm in target.activity_fields.items()
        if message.custom_fields.get(label)
    }
    return ActivitySpec(
        marker=activity_marker(message.account, message.message_id),
        subject=subject,
        body="\n".join(lines),
        occurred_at=message.created_at or datetime.now(UTC),
        emergency=message.is_emergency,
        properties=properties,
        existing_id=existing_id,
    )


def plan_for(
    delivery_id: int,
    message: Message,
    keys: CallerKeys,
    decision: Decision,
    target: TargetSettings,
    *,
    caller_key: str = "",
    existing_activity: str | None = None,
    known: Mapping[str, str] | None = None,
) -> Plan | None:
    """The plan for a decision, or None when the sync mode says to leave this caller alone."""
    offered = canonical_fields(message, keys)
    offered.update(
        {
            crm: message.custom_fields[label]
            for label, crm in target.contact_fields.items()
            if message.custom_fields.get(label)
        }
    )
    activity = _activity(message, keys, target, existing_activity)
    cache_keys = [MatchKey(KeyKind.EMAIL, e) for e in keys.emails]
    cache_keys += [MatchKey(KeyKind.PHONE, p.e164) for p in keys.phones]
    nk = name_key(keys)
    if nk is not None:
        cache_keys.append(nk)
    if decision.kind == DecisionKind.EXISTING and decision.record is not None:
        record = decision.record
        updates: dict[str, str] = {}
        if target.sync_mode != "create_only":
            updates = _field_updates(offered, record, known or {}, target.field_policy)
        return Plan(
            delivery_id=delivery_id,
            message=message,
            action=Action.UPDATE if updates else Action.LOG,
            activity=activity,
            record_id=record.id,
            record_kind=record.kind,
            fields=updates,
            keys=tuple(cache_keys),
            alternatives=decision.alternatives,
        )
    if decision.kind == DecisionKind.NEW:
        if target.sync_mode == "update_only":
            return None
        return Plan(
            delivery_id=delivery_id,
            message=message,
            action=Action.CREATE,
            activity=activity,
            caller_key=caller_key or keys.caller_key,
            fields=offered,
            company_id=decision.company_id,
            keys=tuple(cache_keys),
        )
    return None

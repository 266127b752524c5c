"""One line saying how a delivery's match was decided, for the per-message sync log.

"existing by phone +15551234567", "existing by cache email jo@example.com",
"existing (operator's choice)", "new", "new (operator)", "review by phone: 2 candidates".
Keys are stored as found; whoever shows the line to a person masks phones and emails
(:class:`syncd.history.Masker`).
"""

from __future__ import annotations

from syncd.match.keys import CallerKeys
from syncd.match.policy import Decision, DecisionKind, name_key

__all__ = ["describe"]


def describe(decision: Decision, keys: CallerKeys) -> str:
    if decision.kind == DecisionKind.EXISTING:
        if decision.matched_by == "operator":
            return "existing (operator's choice)"
        key = _key_that_matched(decision, keys)
        text = f"existing by {decision.matched_by or 'match'}"
        return f"{text} {key}" if key else text
    if decision.kind == DecisionKind.NEW:
        return "new (operator)" if decision.matched_by == "operator" else "new"
    if decision.kind == DecisionKind.REVIEW:
        count = len(decision.alternatives)
        return f"review by {decision.matched_by or 'match'}: {count} candidates"
    return decision.kind


def _key_that_matched(decision: Decision, keys: CallerKeys) -> str:
    """The caller's key the chosen record shares: email, then phone, then company and name."""
    record = decision.record
    if record is None:
        return ""
    if record.email and record.email.lower() in keys.emails:
        return f"email {record.email.lower()}"
    for phone in keys.phones:
        if phone.e164 in record.phones:
            return f"phone {phone.e164}"
    if decision.matched_by == "company_name":
        nk = name_key(keys)
        return f"name {nk.value}" if nk else ""
    # From the match cache the record is only an id: name the caller's strongest key.
    if keys.emails:
        return f"email {keys.emails[0]}"
    if keys.phones:
        return f"phone {keys.phones[0].e164}"
    return ""

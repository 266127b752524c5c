"""New Contacts join an Account: found by company name, or created (``account`` option).

``match_or_create`` (default): a new caller who names a company is linked to the Account of
that name. The matcher's look-up may already have found it (``plan.company_id``): that look-up
read Accounts by name through SOQL (immediately consistent) moments ago, so a company it
covered and found nothing for is created without asking again. Any other company (the matcher
not asked about companies, a look-up older than a few seconds, a plan in doubt) is read first by
name: exact, then normalized, then fuzzy as the matcher compares companies. So a caller from a
company another caller named a minute ago joins that Account, and a retried batch does not
create it twice. Callers of one batch naming the same company share one new Account.
``match_only`` links only what the matcher found; ``none`` never links (a "private" Contact).
Leads carry ``Company`` instead.

Cost: nothing extra in the common case (the Account create rides in the composite request that
creates the Contacts, which reference it); one SOQL request when a company was not just looked
up; a separate create only for batches too big to fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from syncd.plugin import (
    Action,
    KeyKind,
    MatchKey,
    PlanProgress,
    connector_logger,
    normalize_company,
    same_company,
)
from syncd_salesforce.errors import parse_errors
from syncd_salesforce.lookup import Lookup
from syncd_salesforce.options import SalesforceOptions

__all__ = ["Accounts", "Pending", "created_or_duplicate"]

log = connector_logger("salesforce")

_NAME_MAX = 255  # Account.Name


@dataclass
class Pending:
    """Accounts still to create: normalized company key -> name, and which states need each."""

    names: dict[str, str] = field(default_factory=dict)
    states: dict[str, list[PlanProgress]] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # as they become known

    @property
    def for_updates(self) -> bool:
        """True when an existing Contact waits for one of these Accounts."""
        return any(s.plan.action is Action.UPDATE for g in self.states.values() for s in g)

    def key_of(self, state: PlanProgress) -> str | None:
        return next((k for k, group in self.states.items() if state in group), None)

    def reference(self, key: str, ref: str) -> str:
        """``@{ref[i].id}``: the id a create of :meth:`records` under ``ref`` gave ``key``."""
        return f"@{{{ref}[{list(self.names).index(key)}].id}}"

    def resolved(self, record: dict[str, Any], ref: str) -> dict[str, Any]:
        """``record`` with an ``AccountId`` reference to ``ref`` replaced by the known id, or
        left out when that Account could not be made."""
        value = record.get("AccountId")
        prefix = f"@{{{ref}["
        if not isinstance(value, str) or not value.startswith(prefix):
            return record
        key = list(self.names)[int(value[len(prefix) :].split("]", 1)[0])]
        out = {k: v for k, v in record.items() if k != "AccountId"}
        if key in self.ids:
            out["AccountId"] = self.ids[key]
        return out

    def records(self) -> list[dict[str, Any]]:
        return [{"attributes": {"type": "Account"}, "Name": name} for name in self.names.values()]

    def resolve(self, results: Sequence[dict[str, Any]]) -> dict[str, str]:
        """Account ids by key from a create's results (a duplicate rule's match counts)."""
        out: dict[str, str] = {}
        for key, result in zip(self.names, results, strict=False):
            account_id = created_or_duplicate(result)
            if account_id:
                out[key] = account_id
            else:  # the contact is still worth creating: unlinked, not lost
                log.warning(
                    "salesforce.account_not_created",
                    errors="; ".join(map(str, parse_errors(result.get("errors")))),
                )
        return out

    def link(self, ids: dict[str, str]) -> None:
        self.ids.update(ids)
        for key, states in self.states.items():
            if key in ids:
                for state in states:
                    state.plan = replace(state.plan, company_id=ids[key])


def _company(state: PlanProgress) -> str:
    return " ".join(state.plan.message.company.split())[:_NAME_MAX]


class Accounts:
    def __init__(self, options: SalesforceOptions, lookup: Lookup) -> None:
        self.options = options
        self.lookup = lookup

    def plan(self, states: Sequence[PlanProgress]) -> Pending:
        """Set ``company_id`` on the new-caller plans as the ``account`` option says, from
        Accounts found; what is left to create comes back."""
        pending = Pending()
        new = [s for s in states if s.plan.action is Action.CREATE and not s.failed]
        new = new if self.options.record_type == "Contact" else []
        # An existing Contact offered a company (fill_blanks: it has no Account yet) gets
        # linked like a new one: filled, never overwritten unless the field policy says so.
        existing = [
            s
            for s in states
            if s.plan.action is Action.UPDATE
            and s.plan.record_kind == "contact"
            and s.plan.fields.get("company")
            and not s.plan.company_id
            and not s.failed
        ]
        if self.options.account == "none":
            for state in new:
                state.plan = replace(state.plan, company_id=None)
            return pending
        for state in [*new, *existing]:
            name = _company(state)
            key = normalize_company(name) or name.casefold()
            if not state.plan.company_id and key:
                pending.states.setdefault(key, []).append(state)
                pending.names.setdefault(key, name)
        doubtful = {k for k, group in pending.states.items() if any(s.plan.in_doubt for s in group)}
        ask = {
            k: n for k, n in pending.names.items() if k in doubtful or not self.lookup.looked_up(k)
        }
        found = self.find(ask) if ask else {}
        pending.link(found)
        for key in found:
            del pending.names[key], pending.states[key]
        if self.options.account == "match_only":
            return Pending()
        return pending

    def find(self, names: dict[str, str]) -> dict[str, str]:
        """Accounts for these companies (normalized key -> name), by an immediately consistent
        SOQL read: exact or normalized name first, then the closest fuzzy match."""
        candidates = self.lookup.accounts([MatchKey(KeyKind.COMPANY, key) for key in names])
        out: dict[str, str] = {}
        for key, name in names.items():
            records = sorted(candidates.get(MatchKey(KeyKind.COMPANY, key), ()), key=lambda r: r.id)
            exact = [r for r in records if normalize_company(r.company) == key]
            fuzzy = [r for r in records if same_company(r.company, name)]
            chosen = (exact or fuzzy)[:1]
            if chosen:
                out[key] = chosen[0].id
        return out


def created_or_duplicate(result: dict[str, Any]) -> str | None:
    if result.get("success") and result.get("id"):
        return str(result["id"])
    for error in parse_errors(result.get("errors")):
        if error.code == "DUPLICATES_DETECTED" and error.duplicate_ids:
            return error.duplicate_ids[0]  # the org's rule named the Account: use it
    return None

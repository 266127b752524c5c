"""New Contacts join an Account: found by company name, or created (``account`` option).

``match_or_create`` (default): a new caller who names a company is linked to the Account of
that name. The matcher's look-up may already have found it (``plan.company_id``); otherwise an
immediately consistent SOQL read by name (exact, then normalized, then fuzzy as the matcher
compares companies) runs before anything is created, so a caller from a company another caller
named a minute ago joins that Account, and a retried batch does not create it twice. Callers of
one batch naming the same company share one new Account. ``match_only`` links only what the
matcher found; ``none`` never links (a "private" Contact). Leads carry ``Company`` instead.

Cost: one SOQL request, plus one sObject Collections create when an Account is missing, per
batch with new callers whose company has no Account yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import structlog

from connectors.salesforce.errors import parse_errors
from connectors.salesforce.lookup import Lookup
from connectors.salesforce.options import SalesforceOptions
from syncd.connector import PlanProgress
from syncd.match.names import normalize_company, same_company
from syncd.models import Action, KeyKind, MatchKey

__all__ = ["Accounts"]

log = structlog.get_logger("syncd.connectors.salesforce")

_NAME_MAX = 255  # Account.Name
# Sends one Collections create: (records) -> results, or None when the request was refused.
Create = Callable[[list[dict[str, Any]]], list[dict[str, Any]] | None]


def _company(state: PlanProgress) -> str:
    return " ".join(state.plan.message.company.split())[:_NAME_MAX]


class Accounts:
    def __init__(self, options: SalesforceOptions, lookup: Lookup) -> None:
        self.options = options
        self.lookup = lookup

    def link(self, states: Sequence[PlanProgress], create: Create) -> None:
        """Set ``company_id`` on the new-caller plans as the ``account`` option says."""
        new = [s for s in states if s.plan.action is Action.CREATE and not s.failed]
        if self.options.record_type != "Contact":
            return
        if self.options.account == "none":
            for state in new:
                state.plan = replace(state.plan, company_id=None)
            return
        if self.options.account != "match_or_create":
            return
        wanted: dict[str, list[PlanProgress]] = {}
        for state in new:
            name = _company(state)
            key = normalize_company(name) or name.casefold()
            if not state.plan.company_id and key:
                wanted.setdefault(key, []).append(state)
        if not wanted:
            return
        names = {key: _company(group[0]) for key, group in wanted.items()}
        found = self.find(names)
        missing = [key for key in wanted if key not in found]
        if missing:
            records = [{"attributes": {"type": "Account"}, "Name": names[k]} for k in missing]
            results = create(records) or []
            for key, result in zip(missing, results, strict=False):
                account_id = _created_or_duplicate(result)
                if account_id:
                    found[key] = account_id
                else:  # the contact is still worth creating: unlinked, not lost
                    log.warning(
                        "salesforce.account_not_created",
                        errors="; ".join(map(str, parse_errors(result.get("errors")))),
                    )
        for key, group in wanted.items():
            for state in group:
                if key in found:
                    state.plan = replace(state.plan, company_id=found[key])

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


def _created_or_duplicate(result: dict[str, Any]) -> str | None:
    if result.get("success") and result.get("id"):
        return str(result["id"])
    for error in parse_errors(result.get("errors")):
        if error.code == "DUPLICATES_DETECTED" and error.duplicate_ids:
            return error.duplicate_ids[0]  # the org's rule named the Account: use it
    return None

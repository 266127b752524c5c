"""Owner resolution as a pure function of the settings, the CRM's users and one message's facts.

Rules are tried in the configured order; each one that cannot give an *active, existing* user
adds the reason it fell through, so ``syncd status`` can say why a message went to the default
owner (or to nobody). Names compare exactly after normalization (Unicode NFKC, case folded,
white space collapsed): a near miss is no match, because a wrong owner is worse than the
default one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from syncd.models import CrmUser

if TYPE_CHECKING:
    from syncd.owners.settings import OwnerSettings

__all__ = ["OwnerDirectory", "OwnerFacts", "Resolution", "normalize_name", "resolve_owner"]


def normalize_name(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass(frozen=True)
class OwnerDirectory:
    """The CRM's users, indexed by id, email and normalized name."""

    by_id: Mapping[str, CrmUser] = field(default_factory=dict)
    by_email: Mapping[str, CrmUser] = field(default_factory=dict)
    by_name: Mapping[str, tuple[CrmUser, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, users: Iterable[CrmUser]) -> OwnerDirectory:
        by_id: dict[str, CrmUser] = {}
        by_email: dict[str, CrmUser] = {}
        by_name: dict[str, list[CrmUser]] = {}
        for user in users:
            by_id[user.id] = user
            if user.email:
                email = user.email.strip().casefold()
                # An active user wins an email an archived one also had.
                if email not in by_email or (user.active and not by_email[email].active):
                    by_email[email] = user
            name = normalize_name(user.name)
            if name:
                by_name.setdefault(name, []).append(user)
        return cls(by_id, by_email, {k: tuple(v) for k, v in by_name.items()})

    def __len__(self) -> int:
        return len(self.by_id)

    def find(self, ref: str) -> CrmUser | None:
        """A user named by id or email (as config names them)."""
        ref = ref.strip()
        return self.by_id.get(ref) or self.by_email.get(ref.casefold())


@dataclass(frozen=True)
class OwnerFacts:
    """What one delivery tells the rules."""

    delivered_to: str = ""
    record_owner_id: str | None = None  # the matched record's owner, when known
    new_record: bool = False  # the plan creates the contact/lead


@dataclass(frozen=True)
class Resolution:
    """The owner chosen (None: leave it to the CRM), the rule that chose them, and why each
    earlier rule fell through. ``needs_turn``: the round-robin rule wants a turn from the
    store; resolve again with it."""

    owner_id: str | None
    rule: str
    reasons: tuple[str, ...] = ()
    needs_turn: bool = False


def _usable(user: CrmUser | None, what: str, ref: str) -> tuple[CrmUser | None, str]:
    if user is None:
        return None, f"{what} {ref} is not a user in the CRM"
    if not user.active:
        return None, f"{what} {user.email or user.id} is inactive"
    return user, ""


def resolve_owner(
    settings: OwnerSettings,
    directory: OwnerDirectory,
    facts: OwnerFacts,
    turn: int | None = None,
) -> Resolution:
    reasons: list[str] = []
    label = normalize_name(facts.delivered_to)
    for rule in settings.rules:
        user: CrmUser | None = None
        why = ""
        if rule == "record":
            if facts.new_record:
                why = "record: a new record has no owner yet"
            elif not facts.record_owner_id:
                why = "record: the record has no known owner"
            else:
                user, why = _usable(
                    directory.by_id.get(facts.record_owner_id),
                    "record owner",
                    facts.record_owner_id,
                )
                why = why and f"record: {why}"
        elif rule == "mapping":
            if not label:
                why = "mapping: no 'delivered to'"
            elif label not in settings.mapping:
                why = f"mapping: no entry for {facts.delivered_to.strip()!r}"
            else:
                ref = settings.mapping[label]
                user, why = _usable(directory.find(ref), "mapped user", ref)
                why = why and f"mapping: {why}"
        elif rule == "name":
            if not label:
                why = "name: no 'delivered to'"
            elif "@" in label:
                user, why = _usable(directory.by_email.get(label), "user", label)
                why = why and f"name: {why}"
            else:
                named = directory.by_name.get(label, ())
                active = [u for u in named if u.active]
                if len(active) == 1:
                    user = active[0]
                elif len(active) > 1:
                    why = (
                        f"name: {len(active)} active users are named {facts.delivered_to.strip()!r}"
                    )
                elif named:
                    why = f"name: the user named {facts.delivered_to.strip()!r} is inactive"
                else:
                    why = f"name: no user is named {facts.delivered_to.strip()!r}"
        elif rule == "round_robin":
            members = [directory.find(r) for r in settings.round_robin]
            active = [u for u in members if u is not None and u.active]
            if not facts.new_record:
                why = "round_robin: only for new records"
            elif not settings.round_robin:
                why = "round_robin: no list configured"
            elif not active:
                why = "round_robin: no active user in the list"
            elif turn is None:
                return Resolution(None, "round_robin", tuple(reasons), needs_turn=True)
            else:
                user = active[turn % len(active)]
        elif rule == "default":
            if settings.default is None:
                why = "default: none configured"
            else:
                user, why = _usable(
                    directory.find(settings.default), "default owner", settings.default
                )
                why = why and f"default: {why}"
        if user is not None:
            return Resolution(user.id, rule, tuple(reasons))
        reasons.append(why)
    return Resolution(None, "", tuple(reasons))

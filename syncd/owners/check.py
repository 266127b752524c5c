"""``syncd check`` for owners: the CRM lists its users and every user the config names is
active. A named user who is inactive or unknown is a warning, not a failure: messages for
them fall through to the next rule, as ``syncd status`` then shows."""

from __future__ import annotations

from syncd.connector import ListsOwners
from syncd.models import CheckResult
from syncd.owners.rules import OwnerDirectory
from syncd.owners.settings import OwnerSettings

__all__ = ["owner_checks"]


def owner_checks(connector: object, target: str, settings: OwnerSettings) -> list[CheckResult]:
    if not settings.enabled:
        return []
    if not isinstance(connector, ListsOwners):
        return [
            CheckResult("owners", False, "owner rules are set but the connector cannot list users")
        ]
    users = list(connector.owners())
    directory = OwnerDirectory.of(users)
    active = sum(u.active for u in users)
    results = [CheckResult("owners", True, f"{len(users)} users listed, {active} active")]
    named = [(f"owners.{label}", ref) for label, ref in settings.mapping.items()]
    named += [("owner_round_robin", ref) for ref in settings.round_robin]
    if settings.default:
        named.append(("default_owner", settings.default))
    for key, ref in named:
        user = directory.find(ref)
        if user is None or not user.active:
            state = "is not a user in the CRM" if user is None else "is inactive"
            results.append(
                CheckResult(
                    "config warning",
                    False,
                    f"targets.{target}.{key}: {ref} {state}; messages for it fall through",
                )
            )
    return results

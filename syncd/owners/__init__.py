"""Owners: which CRM user an activity, an emergency task and a new record go to.

The rules are a pure function (:func:`resolve_owner`, in :mod:`syncd.owners.rules`); the CRM's
users come through the optional :class:`syncd.connector.ListsOwners` capability and are cached
(:mod:`syncd.owners.directory`); round-robin turns come from the state store so replicas share
one rotation (:mod:`syncd.store.owners`); :mod:`syncd.owners.assign` is the delivery step that
puts the owner on each plan and records what it decided for ``syncd status`` and the demo.
"""

from syncd.owners.rules import OwnerDirectory, OwnerFacts, Resolution, normalize_name, resolve_owner
from syncd.owners.settings import OWNER_KEYS, RULES, OwnerSettings, parse_owner_settings

__all__ = [
    "OWNER_KEYS",
    "RULES",
    "OwnerDirectory",
    "OwnerFacts",
    "OwnerSettings",
    "Resolution",
    "normalize_name",
    "parse_owner_settings",
    "resolve_owner",
]

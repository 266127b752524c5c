"""``syncd setup --target NAME`` for HubSpot: the properties the connector relies on.

* the caller key on contacts, **unique** (HubSpot lets new contact properties be unique:
  developer changelog, "Unique Properties support for newly created Contact properties"),
  so a new caller sent twice is upserted into one contact;
* the marker on the activity object (notes or calls) and on tasks, **not unique**: HubSpot has
  no unique-value properties on activities; the marker is found through the record's
  associations instead (see :mod:`syncd_hubspot.markers`);
* a property group ``syncd`` on each of those objects, so the properties sit together.

Each step reads first and creates only what is missing, so running it again changes nothing.
Properties API guide: a property needs ``name``, ``label``, ``type``, ``fieldType`` and an
existing ``groupName``; groups need ``name`` and ``label``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncd.plugin import SetupState, SetupStep, SyncdError
from syncd_hubspot.options import HubSpotOptions
from syncd_hubspot.transport import ApiResult, Transport

__all__ = ["GROUP", "Setup", "wanted_properties"]

GROUP = "syncd"
_GROUP_LABEL = "syncd"
_LABELS = {
    True: ("syncd caller key", "Which caller this contact is to syncd (do not edit)."),
    False: ("syncd marker", "The answering-service message this was logged from."),
}


def wanted_properties(options: HubSpotOptions) -> list[tuple[str, str, bool]]:
    """(object type, property, unique) the options rely on."""
    wanted: list[tuple[str, str, bool]] = []
    if options.caller_key_property:
        wanted.append(("contacts", options.caller_key_property, True))
    if options.marker_property:
        wanted.append(
            ("calls" if options.activity == "call" else "notes", options.marker_property, False)
        )
        if options.emergency_task:
            wanted.append(("tasks", options.marker_property, False))
    return wanted


class Setup:
    def __init__(self, transport: Transport, options: HubSpotOptions) -> None:
        self._t, self._options = transport, options

    def run(self, *, dry_run: bool) -> list[SetupStep]:
        wanted = wanted_properties(self._options)
        steps: list[SetupStep] = []
        for object_type in dict.fromkeys(t for t, _, _ in wanted):
            steps.append(self._group(object_type, dry_run))
        for object_type, prop, unique in wanted:
            steps.append(self._property(object_type, prop, unique, dry_run))
        return steps

    def _group(self, object_type: str, dry_run: bool) -> SetupStep:
        name = f"property group {object_type}.{GROUP}"
        found = self._ask("groups.get", self._t.property_groups.get_by_name, object_type, GROUP)
        if isinstance(found, SetupStep):
            return SetupStep(name, found.state, found.detail)
        if found.ok:
            return SetupStep(name, SetupState.PRESENT)
        if found.status != 404:
            return SetupStep(name, SetupState.MANUAL, _refusal(found))
        if dry_run:
            return SetupStep(name, SetupState.WOULD_CREATE)
        body = {"name": GROUP, "label": _GROUP_LABEL, "displayOrder": -1}
        made = self._ask("groups.create", self._t.property_groups.create, object_type, body)
        return self._made(name, made, f"create a property group {GROUP!r} on {object_type}")

    def _property(self, object_type: str, prop: str, unique: bool, dry_run: bool) -> SetupStep:
        kind = "unique " if unique else ""
        name = f"property {object_type}.{prop} ({kind or 'not unique, '}single-line text)"
        found = self._ask("properties.get", self._t.properties.get_by_name, object_type, prop)
        if isinstance(found, SetupStep):
            return SetupStep(name, found.state, found.detail)
        if found.ok:
            body: Any = found.body if isinstance(found.body, dict) else {}
            if unique and not body.get("hasUniqueValue"):
                return SetupStep(
                    name,
                    SetupState.MANUAL,
                    f"{prop!r} exists without unique values and HubSpot cannot make an existing "
                    "property unique: set caller_key_property to a new name and run setup again",
                )
            return SetupStep(name, SetupState.PRESENT)
        if found.status != 404:
            return SetupStep(name, SetupState.MANUAL, _refusal(found))
        if dry_run:
            return SetupStep(name, SetupState.WOULD_CREATE)
        label, description = _LABELS[unique]
        body = {
            "name": prop,
            "label": label,
            "description": description,
            "type": "string",
            "fieldType": "text",
            "groupName": GROUP,
            "hasUniqueValue": unique,
            "formField": False,
        }
        made = self._ask("properties.create", self._t.properties.create, object_type, body)
        how = f"create a {kind}single-line text property {prop!r} on {object_type}"
        return self._made(name, made, how)

    def _ask(self, endpoint: str, method: Callable[..., Any], *args: Any) -> ApiResult | SetupStep:
        try:
            return self._t.call(endpoint, method, *args)
        except SyncdError as exc:
            return SetupStep(endpoint, SetupState.MANUAL, f"HubSpot could not be asked: {exc}")

    @staticmethod
    def _made(name: str, made: ApiResult | SetupStep, how: str) -> SetupStep:
        if isinstance(made, SetupStep):
            return SetupStep(name, SetupState.MANUAL, f"{made.detail}; by hand: {how}")
        if made.ok:
            return SetupStep(name, SetupState.CREATED)
        if made.status == 409:
            return SetupStep(name, SetupState.PRESENT, "created meanwhile by someone else")
        return SetupStep(name, SetupState.MANUAL, f"{_refusal(made)}; by hand: {how}")


def _refusal(result: ApiResult) -> str:
    return f"HubSpot answered {result.status}: {result.message}"

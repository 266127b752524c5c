"""The properties API: property definitions and groups, as ``syncd setup`` creates them.

Source: properties API guide ("Create a property": name, label, type, fieldType and groupName
required; a name taken is a 409; ``hasUniqueValue`` only where HubSpot has unique values, see
the developer changelog "Unique Properties support for newly created Contact properties";
property groups read and created).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from syncd.sandbox.http import Request, Response, json_response

from .records import UNIQUE_ALLOWED, PortalRecords, PropertyDef, Refused

__all__ = ["Properties"]


class Properties(PortalRecords):
    """``/crm/v3/properties/<type>``, and the same for tests, uncounted."""

    def _handle_property_create(self, object_type: str, request: Request, body: Any) -> Response:
        """Properties API guide, "Create a property": name, label, type, fieldType and
        groupName are required; ``hasUniqueValue`` only where HubSpot has unique values."""
        body = body if isinstance(body, Mapping) else {}
        missing = [
            k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)
        ]
        if missing:
            raise Refused(400, f"Missing required field(s): {', '.join(missing)}")
        name = str(body["name"])
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,99}", name):
            raise Refused(400, f"Property name {name!r} is not valid")
        if body.get("hasUniqueValue") and object_type not in UNIQUE_ALLOWED:
            raise Refused(
                400,
                f"Unique value properties are not supported for object type {object_type}",
                "VALIDATION_ERROR",
                {"hasUniqueValue": ["true"]},
            )
        if body["type"] != "string" or body["fieldType"] not in ("text", "textarea"):
            raise Refused(400, "this emulator creates string text properties only")
        group = str(body["groupName"])
        if group not in self._groups[object_type]:
            raise Refused(400, f"Property group {group!r} does not exist for {object_type}")
        if name in self._properties[object_type]:
            raise Refused(409, f"Property named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
        definition = PropertyDef(
            name, unique=bool(body.get("hasUniqueValue")), group=group, label=str(body["label"])
        )
        self._properties[object_type][name] = definition
        self._writes += 1
        return json_response(definition.as_json(object_type), status=201)

    def _handle_group(self, object_type: str, request: Request, body: Any) -> Response:
        name = request.params["name"]
        label = self._groups[object_type].get(name)
        if label is None:
            raise Refused(404, f"Unable to find group {name} for {object_type}", "OBJECT_NOT_FOUND")
        return json_response({"name": name, "label": label, "displayOrder": -1, "archived": False})

    def _handle_group_create(self, object_type: str, request: Request, body: Any) -> Response:
        body = body if isinstance(body, Mapping) else {}
        name, label = str(body.get("name") or ""), str(body.get("label") or "")
        if not name or not label:
            raise Refused(400, "A property group needs a name and a label")
        if name in self._groups[object_type]:
            raise Refused(409, f"Group named '{name}' already exists.", "OBJECT_ALREADY_EXISTS")
        self._groups[object_type][name] = label
        self._writes += 1
        payload = {"name": name, "label": label, "displayOrder": -1, "archived": False}
        return json_response(payload, status=201)

    def _handle_property(self, object_type: str, request: Request, body: Any) -> Response:
        name = request.params["name"]
        definition = self._properties[object_type].get(name)
        if definition is None:
            raise Refused(
                404,
                f"Unable to find property {name} for object type {object_type}",
                "OBJECT_NOT_FOUND",
            )
        return json_response(definition.as_json(object_type))

    def add_property(
        self, object_type: str, name: str, *, unique: bool = False, group: str = ""
    ) -> None:
        if unique and object_type not in UNIQUE_ALLOWED:
            raise ValueError(f"HubSpot has no unique-value properties on {object_type}")
        with self.lock:
            self._properties[object_type][name] = PropertyDef(name, unique=unique, group=group)
            self._unique.pop((object_type, name), None)
            if unique:
                for record in self._by_type[object_type].values():
                    self._reindex(record)

    def remove_property(self, object_type: str, name: str) -> None:
        with self.lock:
            self._properties[object_type].pop(name, None)
            self._unique.pop((object_type, name), None)

"""The objects API: batch read, create, update, upsert and archive; single-record calls.

Sources: CRM objects API guides (batches of at most 100 inputs, validated as a whole: an
unknown property or an association to a missing record refuses all of them; 207 multi-status
for ids that do not exist and, on batch upsert, for inputs that fail on their own; 409
"Contact already exists. Existing ID: N" only on *create*; "Archive": 204, twice is no error),
the developer changelog "Unique Properties support for newly created Contact properties"
(``idProperty`` only on objects that have unique values) and the knowledge base, "Property
field types in HubSpot" (text at most 65,536 characters).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from syncd.sandbox.http import Request, Response, json_response

from . import owners as hubspot_owners
from .records import (
    ASSOCIATIONS,
    MAX_TEXT,
    PRIMARY_COMPANY,
    SINGULAR,
    UNIQUE_ALLOWED,
    PortalRecords,
    Record,
    Refused,
    now_iso,
)
from .schema import DEFAULT_RETURNED, READ_ONLY

__all__ = ["Objects"]


class Objects(PortalRecords):
    """``/crm/v3/objects/<type>``: the batch endpoints and the single-record ones."""

    # Setting a contact's primary company id links the two, as HubSpot does; a test turns it
    # read-only to see the connector fall back to the associations API.
    company_id_writable: bool
    owner_book: hubspot_owners.OwnerBook  # GET /crm/v3/owners (owners.py)

    def _check_properties(self, object_type: str, props: Mapping[str, Any]) -> dict[str, str]:
        defs = self._properties[object_type]
        problems = []
        for name, value in props.items():
            definition = defs.get(name)
            if definition is None:
                problems.append(
                    {
                        "isValid": False,
                        "message": f'Property "{name}" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST",
                        "name": name,
                    }
                )
            elif definition.calculated or (
                name == "associatedcompanyid" and not self.company_id_writable
            ):
                problems.append(
                    {
                        "isValid": False,
                        "message": f'"{name}" is a read only property; its value cannot be set.',
                        "error": "READ_ONLY_VALUE",
                        "name": name,
                    }
                )
            elif value is not None and len(str(value)) > MAX_TEXT:
                problems.append(
                    {
                        "isValid": False,
                        "message": f"{name} is longer than {MAX_TEXT} characters",
                        "error": "INVALID_LENGTH",
                        "name": name,
                    }
                )
        problems += hubspot_owners.owner_problems(self.owner_book, props)
        if problems:
            raise Refused(400, f"Property values were not valid: {json.dumps(problems)}")
        return {name: "" if value is None else str(value) for name, value in props.items()}

    def _check_company_id(self, object_type: str, props: Mapping[str, str]) -> None:
        company = props.get("associatedcompanyid", "")
        if object_type == "contacts" and company and self._get("companies", company) is None:
            problem = {
                "isValid": False,
                "message": f"{company} is not a valid company id",
                "error": "INVALID_OBJECT_ID",
                "name": "associatedcompanyid",
            }
            raise Refused(400, f"Property values were not valid: {json.dumps([problem])}")

    def _link_company_id(self, record: Record, props: Mapping[str, str]) -> None:
        company = props.get("associatedcompanyid", "")
        if record.type == "contacts" and company:
            self._link(record.id, company, PRIMARY_COMPANY)

    def _check_unique(
        self,
        object_type: str,
        props: Mapping[str, str],
        own_id: str | None,
        seen: dict[tuple[str, str], str],
        token: str,
    ) -> None:
        """Refuse a unique property's value that another record, or another input of the same
        batch (``seen``: value -> input token), already holds."""
        for name, definition in self._properties[object_type].items():
            value = props.get(name, "")
            if not definition.unique or not value:
                continue
            holder = self._find_unique(object_type, name, value)
            if holder is not None and holder.id != own_id:
                if object_type == "contacts" and name == "email" and own_id is None:
                    # Documented for create only (contacts API guide).
                    raise Refused(
                        409, f"Contact already exists. Existing ID: {holder.id}", "CONFLICT"
                    )
                # Elsewhere HubSpot documents no text: ours names no holder (less forgiving).
                raise Refused(
                    409,
                    f"A {SINGULAR[object_type].lower()} with the unique value {value!r} for "
                    f"property {name!r} already exists.",
                    "CONFLICT",
                )
            key = (name, value.casefold())
            if seen.setdefault(key, token) != token:
                raise Refused(
                    400, f"Duplicate value {value!r} for unique property {name!r} in batch input"
                )

    def _handle_batch_read(self, object_type: str, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        id_property = body.get("idProperty") if isinstance(body, Mapping) else None
        if id_property:
            self._require_unique(object_type, id_property)
        names = self._returned(object_type, body)
        archived = (request.arg("archived", "false") or "").lower() == "true"
        results, missing = [], []
        for item in inputs:
            wanted = str(item.get("id", ""))
            if archived:
                record = self._archived.get(wanted)
                record = record if record is not None and record.type == object_type else None
            elif id_property:
                record = self._find_unique(object_type, id_property, wanted)
            else:
                record = self._get(object_type, wanted)
            if record is None:
                missing.append(wanted)
            else:
                results.append(record.as_json(names))
        errors = [self._not_found(object_type, missing)] if missing else []
        return self._batch(results, errors, 200)

    def _require_unique(self, object_type: str, prop: str) -> None:
        if object_type not in UNIQUE_ALLOWED and prop != "hs_object_id":
            raise Refused(
                400,
                f"idProperty is not supported for {object_type}: only unique-value properties "
                "of objects that have them can be used",
            )
        definition = self._properties[object_type].get(prop)
        if definition is None or not definition.unique:
            raise Refused(
                400,
                f"{prop} is not a unique property of {object_type}; idProperty must name a "
                "property with unique values",
            )

    def _handle_batch_create(self, object_type: str, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        prepared: list[tuple[dict[str, str], list[tuple[str, int]]]] = []
        seen: dict[tuple[str, str], str] = {}
        missing: list[str] = []
        for item in inputs:
            props = self._check_properties(object_type, item.get("properties") or {})
            self._check_company_id(object_type, props)
            links = self._parse_associations(object_type, item.get("associations") or [], missing)
            prepared.append((props, links))
        if missing:
            raise Refused(
                400,
                "One or more associations are invalid: "
                f"object(s) {', '.join(missing)} do not exist",
                context={"ids": missing},
            )
        for index, (props, _) in enumerate(prepared):
            self._check_unique(object_type, props, None, seen, f"input:{index}")
        results = []
        for props, links in prepared:
            record = self._create(object_type, props)
            self._link_company_id(record, props)
            for to_id, type_id in links:
                self._link(record.id, to_id, type_id)
            results.append(record.as_json(record.props))
        self._writes += 1
        return self._batch(results, [], 201)

    def _parse_associations(
        self, object_type: str, associations: Any, missing: list[str]
    ) -> list[tuple[str, int]]:
        links: list[tuple[str, int]] = []
        if not isinstance(associations, list):
            raise Refused(400, "Invalid input JSON: associations must be a list")
        for assoc in associations:
            to_id = str(((assoc or {}).get("to") or {}).get("id", ""))
            for spec in (assoc or {}).get("types") or []:
                type_id = spec.get("associationTypeId")
                known = ASSOCIATIONS.get(type_id) if isinstance(type_id, int) else None
                if (
                    spec.get("associationCategory", "HUBSPOT_DEFINED") != "HUBSPOT_DEFINED"
                    or known is None
                ):
                    raise Refused(400, f"Invalid association type {type_id!r}")
                if known[0] != object_type:
                    raise Refused(
                        400, f"Association type {type_id} is not valid from {object_type}"
                    )
                if self._get(known[1], to_id) is None:
                    missing.append(to_id)
                links.append((to_id, type_id))
        return links

    def _create(self, object_type: str, props: Mapping[str, str]) -> Record:
        stamp = now_iso()
        record = Record(self._new_id(), object_type, dict(props), stamp, stamp)
        self._store(record)
        return record

    def _update(self, record: Record, props: Mapping[str, str]) -> None:
        record.props.update(props)
        record.updated_at = now_iso()
        self._store(record)

    def _handle_batch_update(self, object_type: str, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        ids = [str(i.get("id", "")) for i in inputs]
        if len(set(ids)) != len(ids):
            raise Refused(400, "Duplicate IDs found in batch input")
        seen: dict[tuple[str, str], str] = {}
        prepared = []
        for record_id, item in zip(ids, inputs, strict=True):
            props = self._check_properties(object_type, item.get("properties") or {})
            self._check_company_id(object_type, props)
            record = self._get(object_type, record_id)
            if record is not None:
                self._check_unique(
                    object_type, {**record.props, **props}, record.id, seen, record.id
                )
            prepared.append((record_id, record, props))
        results, missing = [], []
        for record_id, record, props in prepared:
            if record is None:
                missing.append(record_id)
                continue
            self._update(record, props)
            self._link_company_id(record, props)
            results.append(record.as_json(record.props))
        if results:
            self._writes += 1
        errors = [self._not_found(object_type, missing)] if missing else []
        return self._batch(results, errors, 200)

    def _handle_batch_upsert(self, object_type: str, request: Request, body: Any) -> Response:
        inputs = self._inputs(body)
        seen: dict[tuple[str, str], str] = {}
        prepared = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            id_property = item.get("idProperty")
            value = str(item.get("id") or "")
            if not id_property or not value:
                raise Refused(400, "Each upsert input needs idProperty and id")
            self._require_unique(object_type, id_property)
            props = self._check_properties(object_type, item.get("properties") or {})
            self._check_company_id(object_type, props)
            props[id_property] = value
            record = self._find_unique(object_type, id_property, value)
            merged = {**(record.props if record else {}), **props}
            own = record.id if record else None
            try:
                self._check_unique(object_type, merged, own, seen, own or f"new:{value}")
            except Refused as refused:
                # One input failing on its own fails alone: a 207 names it, the rest land.
                # The wording is ours; HubSpot documents no text (and no "Existing ID").
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": f"Upsert of {id_property}={value!r} failed: a unique value "
                        "is already held by another record",
                        "context": {"ids": [value]},
                    }
                )
                del refused
                continue
            prepared.append((record, props))
        results = []
        for record, props in prepared:
            is_new = record is None
            if record is None:
                record = self._create(object_type, props)
            else:
                self._update(record, props)
            self._link_company_id(record, props)
            obj = record.as_json(record.props)
            obj["new"] = is_new
            results.append(obj)
        if results:
            self._writes += 1
        return self._batch(results, errors, 200)

    def _handle_list(self, object_type: str, request: Request, body: Any) -> Response:
        try:
            limit = min(int(request.arg("limit", "10") or 10), 100)
            after = int(request.arg("after", "0") or 0)
        except ValueError:
            raise Refused(400, "limit and after must be numbers") from None
        if (request.arg("archived", "false") or "").lower() == "true":
            pool = [r for r in self._archived.values() if r.type == object_type]
        else:
            pool = list(self._by_type[object_type].values())
        records = sorted(pool, key=lambda r: int(r.id))
        names = request.query.get("properties") or list(DEFAULT_RETURNED[object_type])
        page = records[after : after + limit]
        payload: dict[str, Any] = {"results": [r.as_json([*names, *READ_ONLY]) for r in page]}
        if after + limit < len(records):
            payload["paging"] = {"next": {"after": str(after + limit)}}
        return json_response(payload)

    def _handle_get(self, object_type: str, request: Request, body: Any) -> Response:
        record = self._get(object_type, request.params["id"])
        if record is None:
            raise Refused(
                404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND"
            )
        names = request.query.get("properties") or list(DEFAULT_RETURNED[object_type])
        return json_response(record.as_json([*names, *READ_ONLY]))

    def _handle_patch(self, object_type: str, request: Request, body: Any) -> Response:
        record = self._get(object_type, request.params["id"])
        if record is None:
            raise Refused(
                404, "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND"
            )
        props = self._check_properties(object_type, (body or {}).get("properties") or {})
        self._check_company_id(object_type, props)
        self._check_unique(object_type, {**record.props, **props}, record.id, {}, record.id)
        self._update(record, props)
        self._link_company_id(record, props)
        self._writes += 1
        return json_response(record.as_json(record.props))

    def _handle_archive(self, object_type: str, request: Request, body: Any) -> Response:
        # Objects API guide, "Archive": 204 with no body; archiving twice is not an error.
        if self._get(object_type, request.params["id"]) is not None:
            self._archive(request.params["id"])
            self._writes += 1
        return Response(status=204, body=b"", headers={})

    def _handle_batch_archive(self, object_type: str, request: Request, body: Any) -> Response:
        archived = [
            self._archive(str(item.get("id", "")))
            for item in self._inputs(body)
            if self._get(object_type, str(item.get("id", ""))) is not None
        ]
        if archived:
            self._writes += 1
        return Response(status=204, body=b"", headers={})

"""Saving a record: field checks, references, owners, duplicate rules; the sObject endpoints.

Sources: REST API Developer Guide ("Create a Record", "Update a Record", "Delete a Record" and
their error bodies), Object Reference (lengths, types, restricted picklists: ``schema.py``),
SOAP API Developer Guide (``DuplicateRuleHeader``, ``DuplicateError`` / ``DuplicateResult``)
and Salesforce Help, "Duplicate Management" (the standard rules run on create and on edit,
through the API as in the UI). The rules' matching is in ``duplicates.py``.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from syncd.sandbox.http import Request, Response

from . import users as salesforce_users
from .duplicates import account_rule_matches, person_rule_matches
from .records import OrgRecords, Record, phone_key, record_error
from .schema import API_VERSIONS, PICKLISTS, Field

__all__ = ["Writes"]

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# The objects each standard duplicate rule compares a saved record with.
_DUPLICATE_RULES: dict[str, tuple[str, ...]] = {
    "Contact": ("Contact",),
    "Lead": ("Lead", "Contact"),
    "Account": ("Account",),
}


class Writes(OrgRecords):
    """One record saved as the org would save it, and the single-record sObject endpoints."""

    # The standard Contact, Lead and Account duplicate rules (action "Allow" with an
    # alert: an API save is blocked unless the DuplicateRuleHeader says allowSave=true).
    duplicate_rule: bool
    # "block": the rule's action is Block, which allowSave cannot pass.
    duplicate_action: str
    # A custom Account rule on the normalized name alone (the standard one needs more).
    account_name_rule: bool
    # Real orgs include the matched records in a DUPLICATES_DETECTED error; some API
    # paths do not. False exercises a client's fallback.
    duplicate_details: bool
    write_counts: Counter[str]
    _local: threading.local  # per request: its DuplicateRuleHeader

    def _write(
        self, sobject: str, values: Mapping[str, Any], existing: Record | None = None
    ) -> tuple[Record | None, list[dict[str, Any]]]:
        """Validate and store one record (caller holds the lock): (record, errors)."""
        schema = self.schema.get(sobject)
        if schema is None:
            return None, [
                record_error("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
            ]
        clean: dict[str, Any] = {}
        not_writable = []
        for name, value in values.items():
            if name in ("attributes", "Id", "id"):
                continue
            spec = schema.get(name)
            if spec is None:
                return None, [
                    record_error(
                        "INVALID_FIELD",
                        f"No such column '{name}' on sobject of type {sobject}",
                        [name],
                    )
                ]
            if not (spec.updateable if existing else spec.createable):
                not_writable.append(name)
                continue
            if value is not None and not isinstance(value, str | int | float | bool):
                return None, [
                    record_error("JSON_PARSER_ERROR", f"Cannot deserialize value of {name}", [name])
                ]
            text = "" if value is None else str(value)
            if len(text) > spec.length:
                return None, [
                    record_error(
                        "STRING_TOO_LONG",
                        f"{name}: data value too large: {text[:40]}... (max length={spec.length})",
                        [name],
                    )
                ]
            if spec.type == "email" and text and not _EMAIL.fullmatch(text):
                return None, [
                    record_error(
                        "INVALID_EMAIL_ADDRESS", f"{name}: invalid email address: {text}", [name]
                    )
                ]
            if spec.type == "date" and text:
                try:
                    date.fromisoformat(text)
                except ValueError:
                    return None, [
                        record_error(
                            "INVALID_TYPE_ON_FIELD_IN_RECORD",
                            f"{name}: value not of required type: {text}",
                            [name],
                        )
                    ]
            values_allowed = PICKLISTS.get((sobject, name))
            if values_allowed is not None and text and text not in values_allowed:
                return None, [
                    record_error(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        f"{spec.name}: bad value for restricted picklist field: {text}",
                        [name],
                    )
                ]
            if spec.type == "reference" and text:
                problem = self._reference_problem(spec, text) or (
                    salesforce_users.owner_problem(name, self._find(text), sobject)
                )
                if problem is not None:
                    return None, [problem]
            clean[name] = text if value is not None else None
        if not_writable:
            return None, [
                record_error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {', '.join(not_writable)}. Please check the"
                    " security settings of this field and verify that it is read/write for your"
                    " profile or permission set.",
                    not_writable,
                )
            ]
        merged = {**(existing.fields if existing else {}), **clean}
        if existing is None:
            salesforce_users.default_owner(sobject, merged)
        missing = [f.name for f in schema.values() if f.required and not merged.get(f.name)]
        if missing:
            return None, [
                record_error(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
            ]
        if self.duplicate_rule and sobject in _DUPLICATE_RULES and not self._save_allowed():
            # Duplicate Management: active rules run on create and on edit, through the API
            # as in the UI (upserts too); the alert blocks an API save unless allowed.
            duplicates = self._duplicates_of(sobject, merged, existing)
            if duplicates:
                return None, [self._duplicate_error(sobject, duplicates)]
        if existing is not None:
            self._touch(existing)
        record = existing or Record(sobject, self._new_id(sobject), {})
        record.fields = merged
        record.versions.append((self._now(), dict(merged)))
        del record.versions[:-5]
        self._store(record)
        return record, []

    def _reference_problem(self, spec: Field, value: str) -> dict[str, Any] | None:
        target = self._find(value, include_deleted=True)
        if target is None or target.sobject not in spec.reference_to:
            return record_error(
                "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [spec.name]
            )
        if target.deleted:
            return record_error("ENTITY_IS_DELETED", "entity is deleted", [spec.name])
        return None

    def _save_allowed(self) -> bool:
        """SOAP/REST ``DuplicateRuleHeader``: ``allowSave=true`` saves past a rule whose
        action is Allow (with an alert); a Block rule holds whatever the header says."""
        header = str(getattr(self._local, "duplicate_header", "") or "")
        allow = re.search(r"allowSave\s*=\s*true", header, re.IGNORECASE) is not None
        return allow and self.duplicate_action == "allow"

    def _duplicates_of(
        self, sobject: str, values: Mapping[str, Any], existing: Record | None
    ) -> list[Record]:
        """Live records the standard matching rule pairs with ``values`` (the record being
        saved itself excepted), narrowed by phone and email indexes before the rule runs."""
        found: list[Record] = []
        for other in _DUPLICATE_RULES[sobject]:
            if sobject == "Account":
                ids: set[str] | None = None
            elif self._full_scan:
                ids = None
            else:
                ids = set()
                phones = self._index("contact-phones", other)
                for name in ("Phone", "MobilePhone"):
                    key = phone_key(str(values.get(name) or ""))
                    if len(key) >= 7:
                        ids |= phones.get(key)
                email = str(values.get("Email") or "")
                if email:
                    ids |= self._index("equal", other, "Email").get(email.casefold())
            for record in self._candidates(other, ids):
                if existing is not None and record.id == existing.id:
                    continue
                if sobject == "Account":
                    hit = account_rule_matches(
                        values, record.fields, name_only=self.account_name_rule
                    )
                else:
                    hit = person_rule_matches(values, record.fields)
                if hit:
                    found.append(record)
        return found

    def _duplicate_error(self, sobject: str, matches: Sequence[Record]) -> dict[str, Any]:
        """DUPLICATES_DETECTED as the REST API reports it (SOAP API Developer Guide,
        ``DuplicateError`` / ``DuplicateResult``): the rule, and per matched object the
        records found."""
        message = "Use one of these records?"
        error = record_error("DUPLICATES_DETECTED", message)
        if self.duplicate_details:
            ver = API_VERSIONS[-1]
            by_type: dict[str, list[Record]] = {}
            for match in matches:
                by_type.setdefault(match.sobject, []).append(match)
            error["duplicateResult"] = {
                "allowSave": self.duplicate_action == "allow",
                "duplicateRule": f"Standard_{sobject}_Duplicate_Rule",
                "duplicateRuleEntityType": sobject,
                "errorMessage": message,
                "matchResults": [
                    {
                        "entityType": entity,
                        "errors": [],
                        "matchEngine": "FuzzyMatchEngine",
                        "matchRecords": [
                            {
                                "additionalInformation": [],
                                "fieldDiffs": [],
                                "matchConfidence": 100.0,
                                "record": {
                                    "attributes": {
                                        "type": entity,
                                        "url": f"/services/data/v{ver}/sobjects/{entity}/{r.id}",
                                    },
                                    "Id": r.id,
                                },
                            }
                            for r in records
                        ],
                        "rule": f"Standard_{entity}_Match_Rule_v1_1",
                        "size": len(records),
                        "success": True,
                    }
                    for entity, records in by_type.items()
                ],
            }
        return error

    def _counted_write(self, endpoint: str) -> None:
        with self.lock:
            self.write_counts[endpoint] += 1

    def _sobject_create(self, request: Request) -> Response:
        self._counted_write("sobject.create")
        with self.lock:
            record, errors = self._write(request.params["type"], request.json() or {})
        if record is None:
            return self._answer(_rest_errors(errors), 400)
        return self._answer({"id": record.id, "success": True, "errors": []}, 201)

    def _sobject_get(self, request: Request) -> Response:
        with self.lock:
            record = self._find(request.params["id"])
            if record is None or record.sobject != request.params["type"]:
                return self._not_found()
            row = self._row(record, list(self.schema[record.sobject]))
        return self._answer(row)

    def _sobject_update(self, request: Request) -> Response:
        self._counted_write("sobject.update")
        with self.lock:
            found = self._find(request.params["id"], include_deleted=True)
            if found is None or found.sobject != request.params["type"]:
                return self._not_found()
            if found.deleted:
                return self._answer(
                    [
                        {
                            "message": "entity is deleted",
                            "errorCode": "ENTITY_IS_DELETED",
                            "fields": [],
                        }
                    ],
                    404,
                )
            record, errors = self._write(found.sobject, request.json() or {}, found)
        if record is None:
            return self._answer(_rest_errors(errors), 400)
        return Response(204, b"", self._limit_header())

    def _sobject_delete(self, request: Request) -> Response:
        self._counted_write("sobject.delete")
        with self.lock:
            record = self._find(request.params["id"])
            if record is None or record.sobject != request.params["type"]:
                return self._not_found()
            self._mark_deleted(record)
        return Response(204, b"", self._limit_header())


def _rest_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-record errors (``statusCode``) as a whole-request body (``errorCode``)."""
    out = []
    for e in errors:
        item = {"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}
        if "duplicateResult" in e:
            item["duplicateResult"] = e["duplicateResult"]
        out.append(item)
    return out

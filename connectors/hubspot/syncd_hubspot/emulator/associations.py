"""The v4 associations API: batch create and batch read between two object types.

Source: CRM associations v4 guide (HUBSPOT_DEFINED association type ids, as ``records``
lists them with their inverses; a batch answers 207 for inputs naming records that do not
exist). Archived records leave every association.
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.http import Request, Response

from .records import ASSOCIATIONS, OBJECT_TYPES, TYPE_IDS, PortalRecords, Refused

__all__ = ["Associations"]


class Associations(PortalRecords):
    """``/crm/v4/associations/<from>/<to>/batch/{create,read}``."""

    def _pair(self, request: Request) -> tuple[str, str]:
        from_type, to_type = request.params["from"], request.params["to"]
        if from_type not in OBJECT_TYPES or to_type not in OBJECT_TYPES:
            raise Refused(400, f"Unknown object type in {from_type}/{to_type}")
        return from_type, to_type

    def _handle_assoc_create(self, object_type: str, request: Request, body: Any) -> Response:
        from_type, to_type = self._pair(request)
        inputs = self._inputs(body)
        results, errors = [], []
        for item in inputs:
            from_id = str((item.get("from") or {}).get("id", ""))
            to_id = str((item.get("to") or {}).get("id", ""))
            types = item.get("types") or []
            for spec in types:
                known = ASSOCIATIONS.get(spec.get("associationTypeId"))
                if known is None or known[:2] != (from_type, to_type):
                    raise Refused(
                        400,
                        f"Invalid association type {spec.get('associationTypeId')!r} "
                        f"for {from_type} to {to_type}",
                    )
            absent = [
                i for i, t in ((from_id, from_type), (to_id, to_type)) if self._get(t, i) is None
            ]
            if absent:
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "subCategory": "crm.associations.INVALID_OBJECT_IDS",
                        "message": f"No {from_type} or {to_type} with id(s) {', '.join(absent)}",
                        "context": {"ids": absent},
                    }
                )
                continue
            for spec in types:
                self._link(from_id, to_id, int(spec["associationTypeId"]))
            results.append(
                {
                    "fromObjectTypeId": TYPE_IDS[from_type],
                    "fromObjectId": int(from_id),
                    "toObjectTypeId": TYPE_IDS[to_type],
                    "toObjectId": int(to_id),
                    "labels": [],
                }
            )
        if results:
            self._writes += 1
        return self._batch(results, errors, 201)

    def _handle_assoc_read(self, object_type: str, request: Request, body: Any) -> Response:
        from_type, to_type = self._pair(request)
        results, missing = [], []
        for item in self._inputs(body):
            from_id = str(item.get("id", ""))
            if self._get(from_type, from_id) is None:
                missing.append(from_id)
                continue
            targets: dict[str, list[int]] = {}
            for target, type_id in sorted(self._links.get(from_id, ())):
                if self._get(to_type, target) is not None:
                    targets.setdefault(target, []).append(type_id)
            if targets:
                results.append(
                    {
                        "from": {"id": from_id},
                        "to": [
                            {
                                "toObjectId": int(target),
                                "associationTypes": [
                                    {"category": "HUBSPOT_DEFINED", "typeId": t, "label": None}
                                    for t in type_ids
                                ],
                            }
                            for target, type_ids in targets.items()
                        ],
                    }
                )
        errors = [self._not_found(from_type, missing)] if missing else []
        return self._batch(results, errors, 200)

    def associated(self, record_id: str, to_type: str) -> list[str]:
        with self.lock:
            targets = {t for t, _ in self._links.get(str(record_id), ()) if self._get(to_type, t)}
            return sorted(targets, key=int)

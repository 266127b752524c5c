"""Many operations in one API call: composite requests and sObject Collections.

Sources: REST API Developer Guide, "Composite" (up to 25 subrequests, at most 5 of them queries
or sObject Collections; ``@{referenceId.path}`` reads an earlier answer; ``allOrNone`` rolls
back every subrequest and answers the rest ``PROCESSING_HALTED``) and "sObject Collections"
(create, update and external-id upsert of up to 200 records; ``allOrNone`` answers the valid
ones ``ALL_OR_NONE_OPERATION_ROLLED_BACK``; a repeated id or external id fails that record).
Each is one API call, whatever it holds; ``composite_counts`` counts what ran inside.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from syncd.sandbox.http import Request, Response

from .records import record_error
from .writes import Writes

__all__ = ["Composite"]

_MAX_COLLECTION = 200  # records in one sObject Collections request
_MAX_SUBREQUESTS = 25
_MAX_HEAVY_SUBREQUESTS = 5  # of them queries or sObject Collections
_HEAVY = re.compile(r"/(?:query|queryAll)/?(?:\?|$)|/composite/sobjects")
# ``@{referenceId.field[0].field}``: a reference to an earlier subrequest's answer.
_REF = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_REF_STEP = re.compile(r"\.([A-Za-z0-9_]+)|\[(\d+)\]")


class Composite(Writes):
    """``POST composite`` and ``composite/sobjects`` (create, update, upsert)."""

    # Operations carried out inside composite requests, by endpoint (``counts`` has the
    # HTTP requests, each composite once).
    composite_counts: Counter[str]
    # Data API routes, unguarded: what a composite request's subrequests dispatch to.
    _inner_routes: list[tuple[str, re.Pattern[str], str, Callable[[Request], Response]]]

    def _composite(self, request: Request) -> Response:
        """``POST composite``: up to 25 subrequests, at most 5 of them queries or sObject
        Collections, run in order; ``@{ref.path}`` in a url or body reads an earlier answer.
        One API call, whatever it contains."""
        body = request.json()
        subrequests = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subrequests, list) or not subrequests:
            return self._answer(
                [{"message": "compositeRequest is required", "errorCode": "INVALID_FIELD"}], 400
            )
        heavy = sum(1 for sub in subrequests if _HEAVY.search(str((sub or {}).get("url", ""))))
        if len(subrequests) > _MAX_SUBREQUESTS or heavy > _MAX_HEAVY_SUBREQUESTS:
            message = (
                f"A composite request may hold {_MAX_SUBREQUESTS} subrequests, of which"
                f" {_MAX_HEAVY_SUBREQUESTS} queries or sObject Collections"
            )
            return self._answer([{"message": message, "errorCode": "LIMIT_EXCEEDED"}], 400)
        all_or_none = bool(body.get("allOrNone"))
        answers: dict[str, Any] = {}
        out: list[dict[str, Any]] = []
        with self.lock, self._transaction() as savepoint:
            for sub in subrequests:
                reference = str(sub.get("referenceId") or "")
                try:
                    url = _resolve(str(sub.get("url") or ""), answers)
                    payload = _resolve(sub.get("body"), answers)
                except _Unresolved as exc:
                    out.append(
                        _subanswer(
                            reference,
                            400,
                            [{"message": str(exc), "errorCode": "PROCESSING_HALTED"}],
                        )
                    )
                    continue
                response = self._dispatch_inner(
                    str(sub.get("method") or "GET"), url, payload, request
                )
                answer = json.loads(response.body) if response.body else None
                if 200 <= response.status < 300:
                    answers[reference] = answer
                out.append(_subanswer(reference, response.status, answer))
            if all_or_none and any(a["httpStatusCode"] >= 300 for a in out):
                self._rollback(savepoint)
                halted = [
                    {
                        "message": "The transaction was rolled back since another operation"
                        " in the same transaction failed.",
                        "errorCode": "PROCESSING_HALTED",
                    }
                ]
                out = [
                    a if a["httpStatusCode"] >= 300 else _subanswer(a["referenceId"], 400, halted)
                    for a in out
                ]
        return self._answer({"compositeResponse": out})

    def _dispatch_inner(self, method: str, url: str, payload: Any, outer: Request) -> Response:
        parts = urlsplit(url)
        for route_method, pattern, endpoint, handler in self._inner_routes:
            match = pattern.fullmatch(parts.path)
            if route_method != method.upper() or match is None or endpoint == "composite":
                continue
            self.composite_counts[endpoint] += 1
            inner = Request(
                method=method.upper(),
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers=outer.headers,
                body=b"" if payload is None else json.dumps(payload).encode(),
                params={k: v for k, v in match.groupdict().items() if v is not None},
            )
            return self._run(handler, inner)
        return self._not_found()

    def _collection_body(self, request: Request) -> tuple[list[Any], bool] | Response:
        body = request.json()
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list):
            return self._answer(
                [{"message": "records is required", "errorCode": "INVALID_FIELD"}], 400
            )
        if len(records) > _MAX_COLLECTION:
            return self._answer(
                [
                    {
                        "message": "record limit reached. cannot submit more than 200 records"
                        " into this call",
                        "errorCode": "EXCEEDED_ID_LIMIT",
                    }
                ],
                400,
            )
        return records, bool(body.get("allOrNone"))

    def _collection(
        self,
        request: Request,
        endpoint: str,
        one: Callable[[Any, set[str]], dict[str, Any]],
    ) -> Response:
        parsed = self._collection_body(request)
        if isinstance(parsed, Response):
            return parsed
        records, all_or_none = parsed
        self._counted_write(endpoint)
        with self.lock, self._transaction() as savepoint:
            seen: set[str] = set()
            results = [one(item, seen) for item in records]
            if all_or_none and not all(r["success"] for r in results):
                self._rollback(savepoint)
                results = [
                    r
                    if not r["success"]
                    else {
                        "id": None,
                        "success": False,
                        "errors": [
                            record_error(
                                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                "Record rolled back because not all records were valid and the"
                                " request was using AllOrNone header",
                            )
                        ],
                    }
                    for r in results
                ]
        return self._answer(results)

    def _coll_create(self, request: Request) -> Response:
        def one(item: Any, seen: set[str]) -> dict[str, Any]:
            sobject = str(((item or {}).get("attributes") or {}).get("type") or "")
            if not sobject:
                return _failed([record_error("INVALID_TYPE", "Must send a concrete entity type.")])
            if item.get("id") or item.get("Id"):
                return _failed(
                    [record_error("INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])]
                )
            record, errors = self._write(sobject, item)
            return (
                _failed(errors)
                if record is None
                else {"id": record.id, "success": True, "errors": []}
            )

        return self._collection(request, "collections.create", one)

    def _coll_update(self, request: Request) -> Response:
        def one(item: Any, seen: set[str]) -> dict[str, Any]:
            record_id = str((item or {}).get("id") or (item or {}).get("Id") or "")
            if record_id in seen:
                return _failed(
                    [record_error("DUPLICATE_VALUE", f"Duplicate id in list: {record_id}", [])]
                )
            seen.add(record_id)
            target = self._find(record_id, include_deleted=True)
            if target is None:
                return _failed(
                    [record_error("MALFORMED_ID", f"invalid record id: {record_id}", ["Id"])]
                )
            if target.deleted:
                return _failed([record_error("ENTITY_IS_DELETED", "entity is deleted", [])])
            sobject = str((item.get("attributes") or {}).get("type") or target.sobject)
            if sobject != target.sobject:
                return _failed([record_error("INVALID_TYPE", f"id {record_id} is not a {sobject}")])
            record, errors = self._write(sobject, item, target)
            return (
                _failed(errors)
                if record is None
                else {"id": record.id, "success": True, "errors": []}
            )

        return self._collection(request, "collections.update", one)

    def _coll_upsert(self, request: Request) -> Response:
        sobject, key_field = request.params["type"], request.params["field"]
        spec = self.schema.get(sobject, {}).get(key_field)
        if spec is None or not spec.external_id:
            return self._answer(
                [
                    {
                        "message": "Provided external ID field does not exist or is not"
                        f" accessible: {key_field}",
                        "errorCode": "NOT_FOUND",
                    }
                ],
                404,
            )

        def one(item: Any, seen: set[str]) -> dict[str, Any]:
            declared = ((item or {}).get("attributes") or {}).get("type")
            if declared != sobject:
                return _failed([record_error("INVALID_TYPE", f"records must be of type {sobject}")])
            key = str(item.get(key_field) or "")
            if not key:
                return _failed(
                    [record_error("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])]
                )
            if key in seen:
                return _failed(
                    [
                        record_error(
                            "DUPLICATE_EXTERNAL_ID",
                            f"Duplicate external id specified: {key}",
                            [key_field],
                        )
                    ]
                )
            seen.add(key)
            ids = None if self._full_scan else self._index("stored", sobject, key_field).get(key)
            candidates = self._candidates(sobject, ids)
            matches = [r for r in candidates if r.fields.get(key_field) == key]
            if len(matches) > 1:
                return _failed(
                    [
                        record_error(
                            "DUPLICATE_EXTERNAL_ID",
                            f"{key_field}: more than one record found for external id field: {key}",
                            [key_field],
                        )
                    ]
                )
            existing = matches[0] if matches else None
            record, errors = self._write(sobject, item, existing)
            if record is None:
                return _failed(errors)
            return {"id": record.id, "success": True, "errors": [], "created": existing is None}

        return self._collection(request, "collections.upsert", one)


class _Unresolved(Exception):
    """A composite reference to an answer that failed or lacks the field."""


def _reference(match: re.Match[str], answers: Mapping[str, Any]) -> Any:
    name, path = match.group(1), match.group(2)
    if name not in answers:
        raise _Unresolved(
            f"Invalid reference specified. Provided referenceId ('{name}') was undefined or null"
        )
    value = answers[name]
    for field_name, index in _REF_STEP.findall(path):
        try:
            value = value[int(index)] if index else value[field_name]
        except (KeyError, IndexError, TypeError):
            value = None
        if value is None:
            raise _Unresolved(f"Invalid reference specified. No value for {name}{path} found.")
    return value


def _resolve(value: Any, answers: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _REF.fullmatch(value)
        if whole is not None:
            return _reference(whole, answers)
        return _REF.sub(lambda m: str(_reference(m, answers)), value)
    if isinstance(value, dict):
        return {k: _resolve(v, answers) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, answers) for v in value]
    return value


def _subanswer(reference: str, status: int, body: Any) -> dict[str, Any]:
    return {"body": body, "httpHeaders": {}, "httpStatusCode": status, "referenceId": reference}


def _failed(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": None, "success": False, "errors": errors}

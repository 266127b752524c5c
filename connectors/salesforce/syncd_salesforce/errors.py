"""Salesforce error bodies, read into one shape whatever endpoint produced them.

Whole-request errors come as ``[{"message", "errorCode", "fields"}]``; per-record errors in
sObject Collections results use ``statusCode`` instead of ``errorCode``, and a duplicate rule
adds ``duplicateResult`` naming the records it matched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GONE_CODES", "SfError", "parse_errors", "summary"]

# The record a write pointed at (WhoId, AccountId, an update's id) no longer exists.
GONE_CODES = frozenset({"ENTITY_IS_DELETED", "INVALID_CROSS_REFERENCE_KEY"})


@dataclass(frozen=True, slots=True)
class SfError:
    code: str
    message: str
    fields: tuple[str, ...] = ()
    duplicate_ids: tuple[str, ...] = ()  # from a DUPLICATES_DETECTED duplicateResult

    def __str__(self) -> str:
        where = f" [{', '.join(self.fields)}]" if self.fields else ""
        return f"{self.code}: {self.message}{where}"


def _duplicate_ids(result: Any) -> tuple[str, ...]:
    ids: list[str] = []
    if not isinstance(result, Mapping):
        return ()
    for match in result.get("matchResults") or ():
        for candidate in (match or {}).get("matchRecords") or ():
            record = (candidate or {}).get("record") or {}
            record_id = record.get("Id") if isinstance(record, Mapping) else None
            if isinstance(record_id, str) and record_id:
                ids.append(record_id)
    return tuple(dict.fromkeys(ids))


def _one(item: Any) -> SfError:
    if not isinstance(item, Mapping):
        return SfError("UNKNOWN_ERROR", str(item)[:500])
    code = item.get("errorCode") or item.get("statusCode") or "UNKNOWN_ERROR"
    fields = item.get("fields") or ()
    return SfError(
        code=str(code),
        message=str(item.get("message") or ""),
        fields=tuple(str(f) for f in fields) if isinstance(fields, list) else (),
        duplicate_ids=_duplicate_ids(item.get("duplicateResult")),
    )


def parse_errors(content: Any) -> list[SfError]:
    """Errors from a response body (parsed JSON, bytes or text) or a result's ``errors``."""
    if isinstance(content, bytes | bytearray):
        content = content.decode("utf-8", "replace")
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except ValueError:
            return [SfError("UNKNOWN_ERROR", content[:500])] if content else []
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, list):
        return []
    return [_one(item) for item in content]


def summary(content: Any) -> str:
    """One line for a log or an Outcome: ``CODE: message`` for each error."""
    errors = parse_errors(content)
    return "; ".join(str(e) for e in errors) or "unknown error"

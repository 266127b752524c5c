"""Finding what an earlier attempt wrote, without a unique activity property.

HubSpot has unique-value properties on contacts and companies (and deals, tickets, custom
objects), never on notes, calls or tasks, and its search lags writes by seconds. What *is*
immediately consistent: a record's associations (v4 associations API, batch read) and a batch
read of objects by id. So a delivery that may have reached HubSpot is checked like this:

1. the record's associated notes/calls/tasks, one batch read for up to 100 records (paged per
   record when a record has many);
2. one batch read of those activities' marker property (or body, without a marker property),
   100 ids a request;
3. an activity carrying the plan's marker is the one written before.

Two to four requests for a batch of in-doubt deliveries; nothing at all in the steady state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from syncd.plugin import RetriableError
from syncd_hubspot.lookup import Reader
from syncd_hubspot.options import HubSpotOptions
from syncd_hubspot.records import marker_in_body
from syncd_hubspot.transport import Transport

__all__ = ["BODY_PROPERTY", "MarkerProbe"]

# HubSpot accepts up to 1,000 ids per associations batch read (developer changelog, "Batch
# Read Limit for HubSpot Associations API", Feb 2025); 100 keeps answers as small as others.
ASSOCIATION_BATCH = 100
BODY_PROPERTY: Mapping[str, str] = {
    "notes": "hs_note_body",
    "calls": "hs_call_body",
    "tasks": "hs_task_body",
}


class MarkerProbe:
    def __init__(self, transport: Transport, reader: Reader, options: HubSpotOptions) -> None:
        self._t, self._reader, self._options = transport, reader, options

    def associated(self, from_type: str, to_type: str, ids: Iterable[str]) -> dict[str, list[str]]:
        """record id -> ids of its associated ``to_type`` objects (every page of them)."""
        found: dict[str, list[str]] = {i: [] for i in dict.fromkeys(ids) if i}
        pending: list[tuple[str, str | None]] = [(i, None) for i in found]
        while pending:
            chunk, pending = pending[:ASSOCIATION_BATCH], pending[ASSOCIATION_BATCH:]
            body = {"inputs": [{"id": i, **({"after": a} if a else {})} for i, a in chunk]}
            result = self._t.call(
                "associations.batch_read", self._t.associations.get_page, from_type, to_type, body
            )
            if result.status == 404:
                continue  # none of them exists (any more): nothing is associated
            if not result.ok:
                raise RetriableError(
                    f"HubSpot associations read refused ({result.status}): {result.message}"
                )
            for row in result.results():
                source = str((row.get("from") or {}).get("id") or "")
                if source not in found:
                    continue
                for target in row.get("to") or []:
                    if isinstance(target, Mapping) and target.get("toObjectId") is not None:
                        found[source].append(str(target["toObjectId"]))
                after = _next_after(row)
                if after:
                    pending.append((source, after))
        return found

    def find(
        self, from_type: str, to_type: str, wanted: Mapping[str, Iterable[str]]
    ) -> dict[tuple[str, str], str]:
        """(record id, marker) -> id of the ``to_type`` object on that record carrying it.

        ``wanted`` maps a record id to the markers looked for on it."""
        wanted = {r: set(m) for r, m in wanted.items() if r and m}
        if not wanted:
            return {}
        linked = self.associated(from_type, to_type, wanted)
        activity_ids = list(dict.fromkeys(a for ids in linked.values() for a in ids))
        if not activity_ids:
            return {}
        prop = self._options.marker_property or BODY_PROPERTY[to_type]
        objects = self._reader.read_raw(to_type, activity_ids, [prop])
        found: dict[tuple[str, str], str] = {}
        for record_id, ids in linked.items():
            for activity_id in ids:
                value = _property(objects.get(activity_id), prop)
                for marker in wanted[record_id]:
                    if (record_id, marker) in found:
                        continue
                    if (self._options.marker_property and value == marker) or (
                        not self._options.marker_property and marker_in_body(marker, value)
                    ):
                        found[(record_id, marker)] = activity_id
        return found


def _property(obj: Mapping[str, Any] | None, name: str) -> str:
    props = (obj or {}).get("properties")
    value = props.get(name) if isinstance(props, Mapping) else None
    return "" if value is None else str(value)


def _next_after(row: Mapping[str, Any]) -> str | None:
    paging = row.get("paging")
    nxt = paging.get("next") if isinstance(paging, Mapping) else None
    after = nxt.get("after") if isinstance(nxt, Mapping) else None
    return str(after) if after not in (None, "") else None

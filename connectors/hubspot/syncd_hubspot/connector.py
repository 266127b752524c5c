"""The HubSpot connector: syncd's :class:`~syncd.plugin.Connector` over hubspot-api-client."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from syncd.plugin import (
    ActivityRef,
    AuthError,
    CheckResult,
    CrmRecord,
    CrmUser,
    MatchKey,
    Outcome,
    Plan,
    SetupStep,
    SyncdError,
    TargetContext,
    chunks,
)
from syncd_hubspot.lookup import Reader
from syncd_hubspot.options import HubSpotOptions, parse_options
from syncd_hubspot.owners import list_owners
from syncd_hubspot.records import marker_in_body
from syncd_hubspot.search import Group, in_groups
from syncd_hubspot.setup import Setup, wanted_properties
from syncd_hubspot.transport import ApiResult, Transport
from syncd_hubspot.writes import Writer

__all__ = ["HubSpotConnector"]

_BODY_PROPERTY = {"notes": "hs_note_body", "calls": "hs_call_body"}


class HubSpotConnector:
    """Batch-first HubSpot target. Safe to share between threads: the rate limiters are
    shared (HubSpot counts the account), every call keeps its own progress."""

    # syncd delivers several batches at once through this one instance: its memos (company
    # directory, colleagues) and limiters are locked and shared, not copied per batch.
    thread_safe = True
    # ...and looks up one batch at a time: searches are paced at ~4/s whatever we do, and a
    # lookup in turn reuses the company words the one before searched (ColleagueMemo).
    lookups_in_turn = True

    def __init__(
        self,
        context: TargetContext,
        options: HubSpotOptions | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = context.name
        self.options = options or parse_options(context)
        self._transport = Transport(
            self.options,
            target=context.name,
            observe=context.observe,
            sleep=sleep,
            clock=clock,
            rng=rng,
        )
        self._reader = Reader(self._transport, self.options, context.default_region, clock=clock)
        self._writer = Writer(self._transport, self._reader, self.options)
        self._activity_type = "calls" if self.options.activity == "call" else "notes"

    def __repr__(self) -> str:
        return f"HubSpotConnector(name={self.name!r}, host={self.options.host!r})"

    # -- Connector -------------------------------------------------------------------------
    def lookup(self, keys: Sequence[MatchKey]) -> Mapping[MatchKey, Sequence[CrmRecord]]:
        return self._reader.lookup(keys)

    def read(self, kind: str, ids: Sequence[str]) -> Mapping[str, CrmRecord]:
        return self._reader.read(kind, ids)

    def apply(self, plans: Sequence[Plan]) -> Sequence[Outcome]:
        return self._writer.apply(plans)

    def owners(self) -> Sequence[CrmUser]:  # syncd.plugin.ListsOwners
        return list_owners(self._transport)

    def find_activities(self, markers: Sequence[str]) -> Mapping[str, ActivityRef]:
        """Activities already in HubSpot for these markers, by *search*: for old history (a
        lost state store, a backfill over synced days), where search has long caught up.

        HubSpot offers no immediately consistent read by an activity property (no unique
        values on activities, so no ``idProperty``); a delivery that may have been written
        moments ago is checked by :meth:`apply` with ``Plan.in_doubt`` instead, through the
        record's associations."""
        wanted = list(dict.fromkeys(m for m in markers if m))
        if not wanted:
            return {}
        object_type = self._activity_type
        marker_prop = self.options.marker_property
        found: dict[str, str] = {}
        if marker_prop:
            groups = in_groups(marker_prop, wanted, self.options.in_values_cap)
            for obj in self._reader.search(object_type, groups, [marker_prop]):
                value = str((obj.get("properties") or {}).get(marker_prop) or "")
                if value in wanted and value not in found:
                    found[value] = str(obj.get("id"))
        else:
            found = self._search_markers(object_type, wanted)
        owners = self._associated_records(object_type, list(found.values()))
        return {
            marker: ActivityRef(marker=marker, activity_id=aid, record_id=owners.get(aid))
            for marker, aid in found.items()
        }

    def _search_markers(self, object_type: str, markers: list[str]) -> dict[str, str]:
        """Fallback without a marker property: search the body text. Lags writes."""
        body_prop = _BODY_PROPERTY[object_type]
        groups = [
            Group(({"propertyName": body_prop, "operator": "CONTAINS_TOKEN", "value": marker},))
            for marker in markers
        ]
        found: dict[str, str] = {}
        for obj in self._reader.search(object_type, groups, [body_prop]):
            body = str((obj.get("properties") or {}).get(body_prop) or "")
            for marker in markers:
                if marker not in found and marker_in_body(marker, body):
                    found[marker] = str(obj.get("id"))
        return found

    def _associated_records(self, object_type: str, activity_ids: list[str]) -> dict[str, str]:
        """activity id -> the contact it is logged on (v4 associations batch read)."""
        owners: dict[str, str] = {}
        for chunk in chunks(activity_ids, 100):
            body = {"inputs": [{"id": aid} for aid in chunk]}
            result = self._transport.call(
                "associations.batch_read",
                self._transport.associations.get_page,
                object_type,
                "contacts",
                body,
            )
            if not result.ok:
                continue  # the record id is a nicety here; the marker match is what counts
            for row in result.results():
                source = str((row.get("from") or {}).get("id") or "")
                targets = row.get("to") or []
                if source and targets and isinstance(targets[0], dict):
                    owners[source] = str(targets[0].get("toObjectId"))
        return owners

    def check(self) -> Sequence[CheckResult]:
        lines: list[CheckResult] = []
        try:
            result = self._transport.call(
                "contacts.list", self._transport.objects_basic.get_page, "contacts", limit=1
            )
        except AuthError as exc:
            detail = f"refused by {self.options.host}: {exc}"
            return [CheckResult("access token", False, detail, auth_failed=True)]
        except SyncdError as exc:
            return [CheckResult("access token", False, f"{self.options.host} unreachable: {exc}")]
        lines.append(_line("access token", result, f"accepted by {self.options.host}"))
        if not result.ok:
            return lines
        fix = f"syncd setup --target {self.name}"
        for object_type, prop, unique in wanted_properties(self.options):
            lines.append(self._check_property(object_type, prop, unique, fix))
        lines += [
            self._check_property("contacts", prop, False, "")
            for prop in self.options.contact_fields.values()
        ]
        return lines

    def _check_property(self, object_type: str, prop: str, unique: bool, fix: str) -> CheckResult:
        name = f"property {object_type}.{prop}"
        try:
            result = self._transport.call(
                "properties.get", self._transport.properties.get_by_name, object_type, prop
            )
        except SyncdError as exc:
            return CheckResult(name, False, str(exc))
        if result.status == 404:
            kind = "a unique single-line text property" if unique else "a single-line text property"
            how = f"run `{fix}`" if fix else f"create {kind} named {prop!r} on {object_type}"
            return CheckResult(name, False, f"missing ({kind}): {how}")
        if not result.ok:
            return _line(name, result, "")
        body: Any = result.body if isinstance(result.body, Mapping) else {}
        if unique and not body.get("hasUniqueValue"):
            # HubSpot makes only new properties unique: a new name is the way out.
            return CheckResult(
                name,
                False,
                "exists but does not require unique values; HubSpot cannot change that: set "
                f"caller_key_property to a new name and run `{fix}`",
            )
        return CheckResult(name, True, "exists" + (" (unique values)" if unique else ""))

    # -- SetsUp ----------------------------------------------------------------------------
    def setup(self, *, dry_run: bool) -> Sequence[SetupStep]:
        return Setup(self._transport, self.options).run(dry_run=dry_run)

    def close(self) -> None:
        self._transport.close()


def _line(name: str, result: ApiResult, good: str) -> CheckResult:
    if result.ok:
        return CheckResult(name, True, good)
    return CheckResult(name, False, f"HTTP {result.status}: {result.message}")

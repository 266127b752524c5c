"""Packing many match keys into few CRM search requests (pure functions, no I/O).

HubSpot's search takes at most 5 filter groups (OR-ed), 10 filters per group (AND-ed) and 25
filters in all; a request over any limit is refused with a 400. ``IN`` takes a list of values,
so one group ``property IN [v1..v100]`` asks about a hundred keys at once. The packer below
chunks every value list at ``in_values_cap`` and fills requests up to those limits, so 250
phone keys over four phone properties cost 12 groups = 3 requests instead of 250.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from syncd.plugin import chunks

__all__ = [
    "MAX_FILTERS",
    "MAX_FILTERS_PER_GROUP",
    "MAX_GROUPS",
    "PAGE_SIZE",
    "RESULT_WINDOW",
    "Group",
    "in_groups",
    "pack",
    "search_body",
]

MAX_GROUPS = 5
MAX_FILTERS_PER_GROUP = 10
MAX_FILTERS = 25
PAGE_SIZE = 200  # the most a search page returns
RESULT_WINDOW = 10_000  # HubSpot refuses to page a query past this

Filter = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Group:
    """One filter group: its filters are AND-ed; groups in one request are OR-ed."""

    filters: tuple[Filter, ...]

    def as_json(self) -> dict[str, Any]:
        return {"filters": [dict(f) for f in self.filters]}


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def in_groups(prop: str, values: Iterable[str], cap: int) -> list[Group]:
    """``prop IN values`` as one group per ``cap`` values (no group when there is no value)."""
    distinct = _unique(values)
    return [
        Group(({"propertyName": prop, "operator": "IN", "values": chunk},))
        for chunk in chunks(distinct, cap)
    ]


def pack(
    groups: Sequence[Group],
    *,
    max_groups: int = MAX_GROUPS,
    max_filters: int = MAX_FILTERS,
) -> list[list[Group]]:
    """Split ``groups`` into requests within HubSpot's limits, keeping their order."""
    requests: list[list[Group]] = []
    current: list[Group] = []
    used = 0
    for group in groups:
        size = len(group.filters)
        if size > MAX_FILTERS_PER_GROUP:
            raise ValueError(f"a filter group holds at most {MAX_FILTERS_PER_GROUP} filters")
        if current and (len(current) >= max_groups or used + size > max_filters):
            requests.append(current)
            current, used = [], 0
        current.append(group)
        used += size
    if current:
        requests.append(current)
    return requests


def search_body(
    groups: Sequence[Group], properties: Sequence[str], after: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filterGroups": [g.as_json() for g in groups],
        "properties": list(properties),
        "limit": PAGE_SIZE,
        # A stable order makes ``after`` paging safe while records are being written.
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
    }
    if after:
        body["after"] = after
    return body

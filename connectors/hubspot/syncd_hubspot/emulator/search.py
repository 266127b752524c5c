"""CRM search: filter groups, their limits, and answers from the lagging index.

Sources: developer changelog, "Expanded Filtering Capabilities" (Aug 2024: at most 5 filter
groups, 10 filters a group, 25 filters in all) and the CRM search guide ("Limitations": 200
results a page, 10,000 a query; the operators; search lags writes), each refused with a 400
``VALIDATION_ERROR``. ``IN`` lists: HubSpot documents no cap; ``in_values_cap`` (100) is our
own, the less forgiving choice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

from syncd.sandbox.http import Request, Response, json_response

from .records import PortalRecords, Record, Refused, fold_token, value_tokens

__all__ = [
    "MAX_FILTERS",
    "MAX_FILTERS_PER_GROUP",
    "MAX_GROUPS",
    "MAX_PAGE",
    "MAX_RESULTS",
    "Search",
]

MAX_GROUPS = 5

MAX_FILTERS_PER_GROUP = 10

MAX_FILTERS = 25

MAX_PAGE = 200

MAX_RESULTS = 10_000

_OPERATORS = frozenset(
    {
        "EQ",
        "NEQ",
        "LT",
        "LTE",
        "GT",
        "GTE",
        "BETWEEN",
        "IN",
        "NOT_IN",
        "HAS_PROPERTY",
        "NOT_HAS_PROPERTY",
        "CONTAINS_TOKEN",
        "NOT_CONTAINS_TOKEN",
    }
)


class Search(PortalRecords):
    """``POST /crm/v3/objects/<type>/search``."""

    in_values_cap: int

    def _handle_search(self, object_type: str, request: Request, body: Any) -> Response:
        body = body if isinstance(body, Mapping) else {}
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list):
            raise Refused(400, "Invalid input JSON: filterGroups must be a list")
        if len(groups) > MAX_GROUPS:
            raise Refused(
                400,
                f"Too many filter groups ({len(groups)}). "
                f"The maximum number of filter groups is {MAX_GROUPS}.",
            )
        total_filters = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, Mapping) else None
            if not isinstance(filters, list):
                raise Refused(400, "Invalid input JSON: each filter group needs 'filters'")
            if len(filters) > MAX_FILTERS_PER_GROUP:
                raise Refused(
                    400,
                    f"Too many filters in a filter group ({len(filters)}). "
                    f"The maximum number of filters per group is {MAX_FILTERS_PER_GROUP}.",
                )
            total_filters += len(filters)
            for flt in filters:
                self._check_filter(flt)
        if total_filters > MAX_FILTERS:
            raise Refused(
                400,
                f"Too many filters ({total_filters}). "
                f"The maximum number of filters across all groups is {MAX_FILTERS}.",
            )
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= MAX_PAGE:
            raise Refused(400, f"limit must be between 1 and {MAX_PAGE}")
        try:
            after = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise Refused(400, "after must be a numeric paging cursor") from None
        if after + limit > MAX_RESULTS:
            raise Refused(
                400,
                f"Search results are limited to {MAX_RESULTS} records per query; "
                "narrow the filters",
            )
        compiled = [[_compile(f) for f in g["filters"]] for g in groups]
        now = self._now()
        matches: list[tuple[Record, dict[str, str]]] = []
        of_type = self._by_type[object_type]
        candidates = self._candidates(object_type, groups)
        pool = of_type.values() if candidates is None else [of_type[i] for i in candidates]
        for record in pool:
            snapshot = record.searchable(now)
            if snapshot is None:
                continue
            if not compiled or any(all(test(snapshot) for test in g) for g in compiled):
                matches.append((record, snapshot))
        matches.sort(key=lambda pair: int(pair[0].id))
        names = self._returned(object_type, body)
        page = matches[after : after + limit]
        results = []
        for record, snapshot in page:
            obj = record.as_json(names)
            obj["properties"] = {name: snapshot.get(name) for name in names}
            results.append(obj)
        payload: dict[str, Any] = {"total": len(matches), "results": results}
        if after + limit < len(matches):
            payload["paging"] = {"next": {"after": str(after + limit)}}
        return json_response(payload)

    def _check_filter(self, flt: Any) -> None:
        if not isinstance(flt, Mapping) or not flt.get("propertyName"):
            raise Refused(400, "Invalid input JSON: a filter needs propertyName and operator")
        operator = flt.get("operator", "EQ")
        if operator not in _OPERATORS:
            raise Refused(400, f"Unknown operator {operator!r}")
        if operator in ("IN", "NOT_IN"):
            values = flt.get("values")
            if not isinstance(values, list) or not values:
                raise Refused(400, f"{operator} needs a non-empty 'values' list")
            if len(values) > self.in_values_cap:
                raise Refused(
                    400,
                    f"Too many values ({len(values)}) in an {operator} filter on "
                    f"{flt['propertyName']}. The maximum is {self.in_values_cap}.",
                )

    def _candidates(self, object_type: str, groups: Sequence[Mapping[str, Any]]) -> set[str] | None:
        """Ids of the records that may pass some filter group; None when any record may.

        A group is narrowed by its most selective EQ, IN or CONTAINS_TOKEN filter; a group
        with none of them (NEQ, GT, NOT_HAS_PROPERTY...) leaves the whole type to test."""
        if self._full_scan or not groups:
            return None
        found: set[str] = set()
        for group in groups:
            narrowest: set[str] | None = None
            for flt in group["filters"]:
                ids = self._narrow(object_type, flt)
                if ids is not None and (narrowest is None or len(ids) < len(narrowest)):
                    narrowest = ids
            if narrowest is None:
                return None
            found |= narrowest
        return found

    def _narrow(self, object_type: str, flt: Mapping[str, Any]) -> set[str] | None:
        """A superset of the ids whose snapshots pass ``flt``, folded as ``_compile`` folds."""
        operator = flt.get("operator", "EQ")
        prop = str(flt["propertyName"])
        if operator == "CONTAINS_TOKEN":
            pattern = fold_token(str(flt.get("value", "")).casefold())
            postings = self._postings_for("token", object_type, prop)
            if any(ch in pattern for ch in "*?["):  # a wildcard: match the vocabulary
                wanted = {t for t in postings if fnmatchcase(t, pattern)}
            else:
                wanted = {pattern}
        elif operator == "EQ":
            wanted = {str(flt.get("value", "")).casefold()}
            postings = self._postings_for("value", object_type, prop)
        elif operator == "IN":
            wanted = {str(v).casefold() for v in flt.get("values") or []}
            postings = self._postings_for("value", object_type, prop)
        else:
            return None
        return set().union(*(postings.get(term, ()) for term in wanted))


Predicate = Callable[[Mapping[str, str]], bool]


def _compile(flt: Mapping[str, Any]) -> Predicate:
    """One search filter as a test of a record's searchable snapshot (strings compare folded)."""
    operator = flt.get("operator", "EQ")
    prop = str(flt["propertyName"])

    def value(props: Mapping[str, str]) -> str:
        return (props.get(prop) or "").casefold()

    if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        want = operator == "HAS_PROPERTY"
        return lambda props: bool(value(props)) is want
    if operator in ("IN", "NOT_IN"):
        wanted = {str(v).casefold() for v in flt.get("values") or []}
        want = operator == "IN"
        return lambda props: (bool(value(props)) and value(props) in wanted) is want
    target = str(flt.get("value", "")).casefold()
    if operator in ("EQ", "NEQ"):
        want = operator == "EQ"
        return lambda props: (bool(value(props)) and value(props) == target) is want
    if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        want = operator == "CONTAINS_TOKEN"
        pattern = fold_token(target)

        def has_token(props: Mapping[str, str]) -> bool:
            return any(fnmatchcase(t, pattern) for t in value_tokens(value(props))) is want

        return has_token
    high = str(flt.get("highValue", "")).casefold()
    return lambda props: bool(value(props)) and _compare(operator, value(props), target, high)


def _compare(operator: str, have: str, low: str, high: str) -> bool:
    def key(text: str) -> tuple[int, float, str]:
        try:
            return (0, float(text), "")
        except ValueError:
            return (1, 0.0, text)

    h, lo, hi = key(have), key(low), key(high)
    return {
        "LT": h < lo,
        "LTE": h <= lo,
        "GT": h > lo,
        "GTE": h >= lo,
        "BETWEEN": lo <= h <= hi,
    }.get(operator, False)

"""SOQL as the org runs it: check the fields named, narrow by index, match, page the rows.

Sources: SOQL and SOSL Reference ("SOQL SELECT Syntax", "Comparison Operators": ``=`` is
case-insensitive, ids compare on their first 15 characters, LIKE takes ``%`` and ``_``;
"Query Results": batches of at most 2,000 rows behind ``nextRecordsUrl``). The language itself
is parsed in ``query.py``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from syncd.sandbox.http import Request, Response

from .query import SyntaxProblem, _Bool, _Cmp, _Str, parse_soql
from .records import AFFIXES, Narrowed, OrgRecords, Record
from .schema import Field

__all__ = ["QUERY_PAGE_SIZE", "Soql", "combine", "may_match"]

# SOQL and SOSL Reference: query results come in batches of 2,000 rows at most.
QUERY_PAGE_SIZE = 2000


class Soql(OrgRecords):
    """``GET query`` and ``GET query/<locator>``."""

    query_page_size: int
    _cursors: dict[str, tuple[list[dict[str, Any]], int]]

    def _check_type(self, sobject: str) -> dict[str, Field]:
        fields = self.schema.get(sobject)
        if fields is None:
            raise SyntaxProblem(f"sObject type '{sobject}' is not supported.", "INVALID_TYPE")
        return fields

    def _check_path(self, sobject: str, path: str) -> None:
        fields = self._check_type(sobject)
        head, _, rest = path.partition(".")
        if not rest:
            if head not in fields:
                raise SyntaxProblem(
                    f"No such column '{head}' on entity '{sobject}'.", "INVALID_FIELD"
                )
            return
        reference = fields.get(head + "Id")
        if reference is None or reference.type != "reference":
            raise SyntaxProblem(f"Didn't understand relationship '{head}'", "INVALID_FIELD")
        if not any(rest in self.schema[target] for target in reference.reference_to):
            raise SyntaxProblem(
                f"No such column '{rest}' on the {head} relationship", "INVALID_FIELD"
            )

    def _check_condition(self, sobject: str, node: Any) -> None:
        if isinstance(node, _Cmp):
            self._check_path(sobject, node.field)
        elif isinstance(node, _Bool):
            for part in node.parts:
                self._check_condition(sobject, part)

    def _narrow(self, sobject: str, node: Any, seen: Narrowed) -> set[str] | None:
        """Ids that may match a SOQL condition (a superset), or None when the indexes cannot
        tell (NOT, !=, ranges, numbers, null, LIKE without enough literal text). ``seen``
        gets the same for every AND and OR part, for ``_matches_within``."""
        if node is None or self._full_scan:
            return None
        found = self._narrow_node(sobject, node, seen)
        seen[id(node)] = found
        return found

    def _narrow_node(self, sobject: str, node: Any, seen: Narrowed) -> set[str] | None:
        if isinstance(node, _Bool):
            if node.op == "NOT":
                return None
            return combine(node.op, [self._narrow(sobject, part, seen) for part in node.parts])
        return self._narrow_comparison(sobject, node)

    def _narrow_comparison(self, sobject: str, node: _Cmp) -> set[str] | None:
        values = [node.value] if node.op in ("=", "LIKE") else node.value
        if node.op not in ("=", "IN", "LIKE") or not all(isinstance(v, _Str) for v in values):
            return None
        head, _, rest = node.field.partition(".")
        out: set[str] = set()
        if rest:
            # Account.Name = 'x': the records whose AccountId points at a record with Name 'x'
            # (of any sObject: a reference is read by its id alone).
            targets: set[str] = set()
            for target in self.schema:
                found = self._narrow_comparison(target, _Cmp(rest, node.op, node.value))
                if found is None:
                    return None
                targets |= found
            references = self._index("id15", sobject, head + "Id")
            for target_id in targets:
                out |= references.get(target_id[:15])
            return out
        if node.op == "LIKE":
            return self._narrow_like(sobject, node.field, node.value)
        id_like = node.field == "Id" or node.field.endswith("Id")
        equal = self._index("equal", sobject, node.field)
        ids = self._index("id15", sobject, node.field) if id_like else None
        for value in values:
            out |= equal.get(value.text.casefold())
            if ids is not None and len(value.text) in (15, 18):
                out |= ids.get(value.text[:15])
        return out

    def _narrow_like(self, sobject: str, name: str, value: _Str) -> set[str] | None:
        lead, trail = _like_ends(value.like)
        for size in AFFIXES:
            if len(lead) >= size and lead[:size].isascii():
                return set(self._index(f"prefix{size}", sobject, name).get(lead[:size].lower()))
            if len(trail) >= size and trail[-size:].isascii():
                return set(self._index(f"suffix{size}", sobject, name).get(trail[-size:].lower()))
        return None

    def _matches(self, record: Record, node: Any, fields: Mapping[str, Any] | None = None) -> bool:
        if node is None:
            return True
        if isinstance(node, _Bool):
            results = (self._matches(record, part, fields) for part in node.parts)
            if node.op == "AND":
                return all(results)
            if node.op == "OR":
                return any(results)
            return not next(results)
        value = self._value(record, node.field, fields)
        id_like = node.field == "Id" or node.field.endswith("Id")
        if node.op in ("IN", "NOTIN"):
            hit = any(_equal(value, v, id_like) for v in node.value)
            return hit if node.op == "IN" else not hit
        if node.op == "LIKE":
            pattern = re.compile(node.value.like, re.IGNORECASE | re.DOTALL)
            return value is not None and pattern.fullmatch(str(value)) is not None
        if node.op == "=":
            return _equal(value, node.value, id_like)
        if node.op == "!=":
            return not _equal(value, node.value, id_like)
        return _ordered(value, node.op, node.value)

    def _matches_within(self, record: Record, node: Any, seen: Narrowed) -> bool:
        """``_matches``, skipping the AND and OR parts whose candidates (``_narrow``) leave the
        record out: those cannot match it, so the answer is the same, without evaluating a
        hundred-part OR on every candidate."""
        if not seen:
            return self._matches(record, node)
        if isinstance(node, _Bool) and node.op != "NOT":
            results = (
                may_match(seen, p, record.id) and self._matches_within(record, p, seen)
                for p in node.parts
            )
            return any(results) if node.op == "OR" else all(results)
        return self._matches(record, node)

    def _query(self, request: Request) -> Response:
        query = parse_soql(request.arg("q") or "")
        for path in query.fields:
            self._check_path(query.sobject, path)
        self._check_condition(query.sobject, query.where)
        with self.lock:
            seen: Narrowed = {}
            ids = self._narrow(query.sobject, query.where, seen)
            candidates = self._candidates(query.sobject, ids)
            records = [r for r in candidates if self._matches_within(r, query.where, seen)]
            if query.order_by is not None:
                key_field, descending = query.order_by
                records.sort(key=lambda r: str(self._value(r, key_field) or ""), reverse=descending)
            if query.limit is not None:
                records = records[: query.limit]
            rows = [self._row(r, query.fields) for r in records]
        return self._page(request.params["ver"], rows, len(rows))

    def _page(self, version: str, rows: list[dict[str, Any]], total: int) -> Response:
        """One batch of a query's rows (SOQL and SOSL Reference, "Query Results": at most
        2,000 a batch, the rest behind ``nextRecordsUrl``)."""
        size = max(1, self.query_page_size)
        body: dict[str, Any] = {"totalSize": total, "done": len(rows) <= size}
        if len(rows) > size:
            locator = f"01g{secrets.token_hex(6).upper()}"
            with self.lock:
                self._cursors[locator] = (rows[size:], total)
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{size}"
        body["records"] = rows[:size]
        return self._answer(body)

    def _query_more(self, request: Request) -> Response:
        with self.lock:
            cursor = self._cursors.pop(request.params["locator"], None)
        if cursor is None:
            return self._answer(
                [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}], 400
            )
        return self._page(request.params["ver"], *cursor)


def _like_ends(like: str) -> tuple[str, str]:
    """The literal text before the first and after the last wildcard of a LIKE regex (as
    ``_decode`` builds it: ``.*`` for %, ``.`` for _, every other character ``re.escape``d)."""
    tokens: list[str | None] = []  # None: a wildcard
    i = 0
    while i < len(like):
        if like.startswith(".*", i):
            tokens.append(None)
            i += 2
        elif like[i] == ".":
            tokens.append(None)
            i += 1
        elif like[i] == "\\" and i + 1 < len(like):
            tokens.append(like[i + 1])
            i += 2
        else:
            tokens.append(like[i])
            i += 1
    if None not in tokens:
        whole = "".join(t for t in tokens if t is not None)
        return whole, whole
    first = tokens.index(None)
    last = len(tokens) - 1 - tokens[::-1].index(None)
    lead = "".join(t for t in tokens[:first] if t is not None)
    trail = "".join(t for t in tokens[last + 1 :] if t is not None)
    return lead, trail


def _equal(value: Any, literal: Any, id_like: bool) -> bool:
    if literal is None:
        return value is None or value == ""
    if isinstance(literal, bool):
        return value is literal
    if isinstance(literal, float):
        try:
            return value is not None and float(value) == literal
        except (TypeError, ValueError):
            return False
    if value is None:
        return False
    text = literal.text if isinstance(literal, _Str) else str(literal)
    if id_like and len(text) in (15, 18) and len(str(value)) in (15, 18):
        return str(value)[:15] == text[:15]
    return str(value).casefold() == text.casefold()


def _ordered(value: Any, op: str, literal: Any) -> bool:
    if value is None or literal is None:
        return False
    left: Any
    right: Any
    if isinstance(literal, float):
        try:
            left, right = float(value), literal
        except (TypeError, ValueError):
            return False
    else:
        left = str(value).casefold()
        right = (literal.text if isinstance(literal, _Str) else str(literal)).casefold()
    return bool(
        {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]
    )


def may_match(seen: Narrowed, node: Any, record_id: str) -> bool:
    """False when the indexes rule the record out for this part of a query."""
    ids = seen.get(id(node))
    return ids is None or record_id in ids


def combine(op: str, parts: list[set[str] | None]) -> set[str] | None:
    """Candidates of an OR (the union; None, "cannot narrow", if any part is) or of an AND
    (the intersection of the parts that narrow)."""
    if op == "OR":
        out: set[str] = set()
        for part in parts:
            if part is None:
                return None
            out |= part
        return out
    known = sorted((p for p in parts if p is not None), key=len)
    return set.intersection(*known) if known else None

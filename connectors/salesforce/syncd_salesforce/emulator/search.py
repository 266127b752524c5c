"""SOSL as the org runs it: a search index that lags the writes, phone and word matching.

Sources: SOQL and SOSL Reference ("FIND": a term holds at least two characters, ``*`` ends a
wildcard term, AND/OR/AND NOT; "IN SearchGroup": NAME, EMAIL, PHONE and ALL FIELDS; phone
search matches the number's digits whatever the punctuation; "RETURNING" with its own WHERE
and LIMIT) and the search index's lag after a write (Salesforce Help, "Search Index": new and
changed records become searchable within minutes; ``search_lag`` here).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from syncd.sandbox.http import Request, Response

from .query import SyntaxProblem, Term, _Returning, _Search, parse_sosl
from .records import GROUP_FIELDS, WORD_PREFIX, Narrowed, Record, fold_words, phone_key
from .soql import Soql, combine, may_match

__all__ = ["Sosl"]


class Sosl(Soql):
    """``GET search``: what the index had seen ``search_lag`` seconds ago."""

    search_lag: float

    def _search(self, request: Request) -> Response:
        query = parse_sosl(request.arg("q") or "")
        for term in query.terms():
            # SOSL Reference, FIND: a term must hold at least two characters.
            if len(term.text.strip()) < 2:
                raise SyntaxProblem(
                    "search term must be longer than one character", "INVALID_SEARCH"
                )
        specs = query.returning or tuple(_Returning(s) for s in ("Account", "Contact", "Lead"))
        for spec in specs:
            for path in spec.fields:
                self._check_path(spec.sobject, path)
            self._check_condition(spec.sobject, spec.where)
        horizon = self._now() - self.search_lag
        rows: list[dict[str, Any]] = []
        with self.lock:
            for spec in specs:
                found = []
                seen: Narrowed = {}
                ids = self._narrow_search(spec.sobject, query.search, query.group, seen)
                for record in self._candidates(spec.sobject, ids):
                    indexed = _indexed_version(record, horizon)
                    if indexed is None:
                        continue
                    if _search_hit_within(
                        query.search, record, indexed, query.group, seen
                    ) and self._matches(record, spec.where, indexed):
                        found.append(self._row(record, spec.fields, indexed))
                rows += found[: spec.limit] if spec.limit is not None else found
        limit = min(query.limit or 2000, 2000)
        return self._answer({"searchRecords": rows[:limit]})

    def _narrow_search(
        self, sobject: str, node: Any, group: str, seen: Narrowed
    ) -> set[str] | None:
        """Ids that may match a SOSL search (a superset): every version of a record is
        filed, since the lagging index may answer with an older one. ``seen`` gets the same
        for every part, for ``_search_hit_within``."""
        if self._full_scan:
            return None
        found = self._narrow_search_node(sobject, node, group, seen)
        seen[id(node)] = found
        return found

    def _narrow_search_node(
        self, sobject: str, node: Any, group: str, seen: Narrowed
    ) -> set[str] | None:
        if isinstance(node, _Search):
            if node.op == "ANDNOT":
                self._narrow_search(sobject, node.parts[1], group, seen)
                return self._narrow_search(sobject, node.parts[0], group, seen)
            parts = [self._narrow_search(sobject, part, group, seen) for part in node.parts]
            return combine(node.op, parts)
        term: Term = node
        found: set[str] = set()
        if group in ("PHONE", "ALL"):
            digits = phone_key(term.text)
            if len(digits) >= 7:
                found |= self._index("search-phones", sobject).get(digits)
            if group == "PHONE":
                return found
        wanted = fold_words(term.text)
        if not wanted:
            return found
        words = self._index("words", sobject)
        sets = [words.get(w) for w in wanted[:-1]]
        if term.wildcard:
            sets.append(self._index("word-starts", sobject).get(wanted[-1][:WORD_PREFIX]))
        else:
            sets.append(words.get(wanted[-1]))
        sets.sort(key=len)
        return found | set(sets[0]).intersection(*sets[1:])


def _indexed_version(record: Record, horizon: float) -> dict[str, Any] | None:
    """The record as the search index knows it: its newest version written before horizon."""
    for written, values in record.versions[::-1]:
        if written <= horizon:
            return values
    return None


def _search_hit_within(
    node: Any, record: Record, values: Mapping[str, Any], group: str, seen: Narrowed
) -> bool:
    """``_search_hit``, skipping the parts whose candidates (``_narrow_search``) leave the
    record out: those cannot match it, so the answer is the same."""
    if not seen:
        return _search_hit(node, record.sobject, values, group)
    if isinstance(node, _Search):

        def hit(part: Any) -> bool:
            return may_match(seen, part, record.id) and _search_hit_within(
                part, record, values, group, seen
            )

        if node.op == "OR":
            return any(hit(p) for p in node.parts)
        if node.op == "AND":
            return all(hit(p) for p in node.parts)
        first, second = node.parts
        return hit(first) and not hit(second)
    return _search_hit(node, record.sobject, values, group)


def _search_hit(node: Any, sobject: str, values: Mapping[str, Any], group: str) -> bool:
    if isinstance(node, _Search):
        if node.op == "OR":
            return any(_search_hit(p, sobject, values, group) for p in node.parts)
        if node.op == "AND":
            return all(_search_hit(p, sobject, values, group) for p in node.parts)
        first, second = node.parts
        return _search_hit(first, sobject, values, group) and not _search_hit(
            second, sobject, values, group
        )
    term: Term = node
    phone_fields = GROUP_FIELDS["PHONE"].get(sobject, ())
    if group in ("PHONE", "ALL"):
        digits = phone_key(term.text)
        if len(digits) >= 7 and not re.search(r"[^\d\s().+\-]", term.text):
            for name in phone_fields:
                theirs = phone_key(str(values.get(name) or ""))
                if theirs and (
                    theirs == digits or (len(digits) < len(theirs) and theirs.endswith(digits))
                ):
                    return True
        if group == "PHONE":
            return False
    if group in ("NAME", "EMAIL"):
        names = GROUP_FIELDS[group].get(sobject, ())
    else:
        names = tuple(k for k, v in values.items() if isinstance(v, str))
    wanted = fold_words(term.text)
    if not wanted:
        return False
    for name in names:
        have = fold_words(str(values.get(name) or ""))
        for start in range(len(have) - len(wanted) + 1):
            window = have[start : start + len(wanted)]
            if window[:-1] == wanted[:-1] and (
                window[-1] == wanted[-1] or (term.wildcard and window[-1].startswith(wanted[-1]))
            ):
                return True
    return False

"""Building SOQL and SOSL from caller-supplied text without letting it become syntax.

SOQL values go through simple-salesforce's :func:`format_soql`, which quotes and escapes
(``'``, ``\\``, newlines...) and, with the ``:like`` spec, LIKE wildcards. SOSL has no such
helper, so :func:`sosl_escape` implements Salesforce's rule for the FIND clause: every reserved
character (``? & | ! { } [ ] ( ) ^ ~ * : \\ " ' + -``) is preceded by a backslash. Each term is
also wrapped in double quotes, so words such as ``OR``/``AND NOT`` stay words.

Requests are *packed*: many keys per query, split so that a statement stays under the URL and
SOSL length limits (see :func:`pack`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar
from urllib.parse import quote_plus

from simple_salesforce.format import format_soql

__all__ = [
    "MAX_SOSL_SEARCH_CHARS",
    "MAX_URL_QUERY_CHARS",
    "SOSL_RESERVED",
    "encoded_length",
    "format_soql",
    "pack",
    "soql_in",
    "sosl_escape",
    "sosl_or",
    "sosl_phrase",
]

T = TypeVar("T")

SOSL_RESERVED = frozenset("?&|!{}[]()^~*:\\\"'+-")
# SOSL has no escape for control characters; inside a phrase they are only whitespace anyway.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

# Salesforce answers 414 past roughly 16 kB of URL; keep the encoded ``q=`` well below that.
MAX_URL_QUERY_CHARS = 14_000
# Past 4,000 characters Salesforce silently drops the logical operators of a SearchQuery.
MAX_SOSL_SEARCH_CHARS = 3_800


def sosl_escape(text: str) -> str:
    """``text`` as literal SOSL search text: reserved characters backslash-escaped."""
    text = _CONTROL.sub(" ", text)
    return "".join("\\" + ch if ch in SOSL_RESERVED else ch for ch in text)


def sosl_phrase(text: str) -> str:
    """One quoted SOSL phrase matching ``text`` literally (operators inside are words)."""
    return f'"{sosl_escape(text)}"'


def sosl_or(terms: Sequence[str]) -> str:
    """The inside of ``FIND {...}``: the quoted ``terms`` joined with ``OR``."""
    if not terms:
        raise ValueError("a SOSL search needs at least one term")
    return " OR ".join(sosl_phrase(term) for term in terms)


def soql_in(field: str, values: Sequence[str]) -> str:
    """``field IN ('a','b')`` with every value quoted and escaped. ``field`` is ours, not data."""
    return format_soql(f"{field} IN {{}}", list(values))


def encoded_length(text: str) -> int:
    """Length of ``text`` once percent-encoded into a query string, as requests sends it."""
    return len(quote_plus(text))


def pack(
    items: Sequence[T],
    build: Callable[[Sequence[T]], str],
    *,
    limit: int = MAX_URL_QUERY_CHARS,
    measure: Callable[[str], int] = encoded_length,
    max_items: int = 200,
) -> Iterator[tuple[list[T], str]]:
    """Split ``items`` into chunks whose ``build(chunk)`` measures at most ``limit``.

    Each chunk is as long as fits (a binary search on its length, since a statement only grows
    with its items), so the request count is minimal for the order given. An item that does not
    fit even alone is dropped: nothing could match it anyway (the fields we query hold at most
    255 characters).
    """
    fitting = [item for item in items if measure(build([item])) <= limit]
    start = 0
    while start < len(fitting):
        longest = min(max_items, len(fitting) - start)

        def fits(n: int, start: int = start) -> bool:
            return measure(build(fitting[start : start + n])) <= limit

        if fits(longest):
            size = longest
        else:  # 1 fits, `longest` does not: find the boundary
            low, high = 1, longest
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if fits(middle) else (low, middle)
            size = low
        chunk = list(fitting[start : start + size])
        yield chunk, build(chunk)
        start += size

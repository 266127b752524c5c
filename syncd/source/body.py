"""Reading a Berkshire answer body item by item, so one bad item never costs the window.

``json.loads`` fails a whole body for one flaw in one item: a byte that is not UTF-8, an item
nested deeper than the interpreter's recursion limit (about 1,000 levels, 7 KB of brackets),
a truncated or garbled piece. Here the body is decoded leniently (undecodable bytes become
U+FFFD), and when the whole does not parse, its top-level list is cut into item slices by a
scanner that follows strings and brackets without recursion; each slice is parsed on its own
and the ones that fail come back as :class:`BadItem` with the reason, for quarantine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from syncd.errors import SourceError
from syncd.source.parse import (
    clean_text,
    find_message_id,
    json_safe,
    normalize_key,
    parse_bool,
    unwrap_envelope,
)

__all__ = ["BadItem", "read_items"]

_LIST_KEYS = ("data", "messages", "items", "results")
# A JSON string (escapes included) or one structural character. Strings are skipped whole by
# the regex engine, so a 50 MB value costs one C-level match, not a Python loop per character.
_LEXEME = re.compile(r'"(?:[^"\\]+|\\.)*"|[\[\]{},:]', re.S)
_ID_IN_TEXT = re.compile(r'"message[ _-]?id"\s*:\s*"?([^",}\]]{1,256})', re.I)
_SHOWN = 2000  # characters of an unreadable slice kept for the operator
REPLACED = "\ufffd"


@dataclass(frozen=True, slots=True)
class BadItem:
    """An item of the answer we could not read; ``raw`` is JSON-safe."""

    raw: object
    reason: str
    message_id: str | None = None


def read_items(body: bytes) -> tuple[list[object], list[BadItem]]:
    """The items of a list or detail answer, and the ones that could not be read.

    Raises :class:`SourceError` when the answer as a whole is unusable (not JSON at all, an
    unknown envelope, ``{"success": false}``).
    """
    text, lossy = _decode(body)
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        return _read_by_slices(text, lossy, len(body))
    items = unwrap_envelope(payload)
    if not lossy:
        return items, []
    good: list[object] = []
    bad: list[BadItem] = []
    for item in items:
        if REPLACED in json.dumps(item, ensure_ascii=False, default=str):
            bad.append(_undecodable(item))
        else:
            good.append(item)
    return good, bad


def _decode(body: bytes) -> tuple[str, bool]:
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return body.decode("utf-8", "replace"), True


def _undecodable(item: object) -> BadItem:
    return BadItem(
        json_safe(item),
        "the answer was not valid UTF-8: this item held undecodable bytes (shown as U+FFFD)",
        find_message_id(item),
    )


def _read_by_slices(text: str, lossy: bool, size: int) -> tuple[list[object], list[BadItem]]:
    slices = _item_slices(text)
    if slices is None:
        raise SourceError(f"the answer is not JSON ({size} bytes)")
    good: list[object] = []
    bad: list[BadItem] = []
    for piece in slices:
        try:
            item = json.loads(piece)
        except RecursionError:
            bad.append(_unreadable(piece, "nested too deeply to read (over 1000 levels)"))
            continue
        except json.JSONDecodeError as exc:
            bad.append(_unreadable(piece, f"not valid JSON ({exc.msg})"))
            continue
        if lossy and REPLACED in piece:
            bad.append(_undecodable(item))
        else:
            good.append(item)
    return good, bad


def _unreadable(piece: str, reason: str) -> BadItem:
    found = _ID_IN_TEXT.search(piece[:100_000])
    message_id = clean_text(found.group(1), limit=256) if found else None
    return BadItem({"unparsed": clean_text(piece[:_SHOWN])}, reason, message_id or None)


def _item_slices(text: str) -> list[str] | None:
    """Texts of the items of the top-level list (bare, or under ``data``/``messages``/...,
    one object level down at most), or None when no such list is found."""
    start = _skip_space(text, 0)
    if start >= len(text):
        return None
    if text[start] == "[":
        return [text[s:e] for _, s, e in _children(text, start)]
    if text[start] != "{":
        return None
    return _slices_in_object(text, start, depth=0)


def _slices_in_object(text: str, start: int, depth: int) -> list[str] | None:
    members = _children(text, start)
    by_key: dict[str, tuple[int, int]] = {}
    for key, s, e in members:
        try:
            name = json.loads(key) if key is not None else ""
        except ValueError:
            continue
        if isinstance(name, str):
            by_key.setdefault(normalize_key(name), (s, e))
    if "success" in by_key:
        s, e = by_key["success"]
        try:
            ok = parse_bool(json.loads(text[s:e]))
        except (ValueError, RecursionError):
            ok = True
        if not ok:
            raise SourceError("the source reported a failure")
    for name in _LIST_KEYS:
        if name not in by_key:
            continue
        s, e = by_key[name]
        if s >= e:
            return []
        if text[s] == "[":
            return [text[a:b] for _, a, b in _children(text, s)]
        if text[s] == "{" and depth < 2:
            inner = _slices_in_object(text, s, depth + 1)
            # ``data`` holding one message (a detail answer) is that message.
            return inner if inner is not None else [text[s:e]]
        return None
    return [text[start : _end_of(text, start)]] if depth == 0 else None


def _children(text: str, start: int) -> list[tuple[str | None, int, int]]:
    """(key text or None, value start, value end) of each member of the array or object that
    opens at ``start``; values are stripped of surrounding space. A container that never
    closes is a body cut short: whatever followed is lost, so the answer is unusable."""
    out: list[tuple[str | None, int, int]] = []
    depth = 0
    child = start + 1
    key: str | None = None
    for match in _LEXEME.finditer(text, start + 1):
        mark = match.group()
        if mark in ("[", "{"):
            depth += 1
        elif mark in ("]", "}"):
            if depth == 0:
                _add(out, text, key, child, match.start())
                return out
            depth -= 1
        elif depth == 0 and mark == ",":
            _add(out, text, key, child, match.start())
            child, key = match.end(), None
        elif depth == 0 and mark == ":":
            key = text[child : match.start()].strip()
            child = match.end()
    raise SourceError("the answer is not JSON (cut short: a list or object never closes)")


def _add(
    out: list[tuple[str | None, int, int]], text: str, key: str | None, s: int, e: int
) -> None:
    s = _skip_space(text, s)
    while e > s and text[e - 1].isspace():
        e -= 1
    if e > s:
        out.append((key, s, e))


def _end_of(text: str, start: int) -> int:
    depth = 0
    for match in _LEXEME.finditer(text, start):
        mark = match.group()
        if mark in ("[", "{"):
            depth += 1
        elif mark in ("]", "}"):
            depth -= 1
            if depth == 0:
                return match.end()
    return len(text)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos

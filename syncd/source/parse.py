"""Turn whatever the Berkshire API answers into :class:`~syncd.models.Message` values.

The only document we have writes field names with spaces (``message id``) and says nothing
about the envelope, so this module is tolerant by design: keys are compared after
lowercasing and dropping spaces, ``_`` and ``-``; values of the wrong type are coerced to text
or dropped; text is made safe to store (no NUL, no lone surrogates, bounded length). The one
thing we cannot do without is a message id: lacking one, an item is :class:`MalformedMessage`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any

import structlog

from syncd.errors import MalformedMessage, SourceError
from syncd.models import Message

__all__ = [
    "MAX_TEXT",
    "clean_text",
    "find_message_id",
    "fingerprint",
    "json_safe",
    "normalize_key",
    "parse_bool",
    "parse_datetime",
    "parse_message",
    "unwrap_envelope",
]

log = structlog.get_logger(__name__)

MAX_TEXT = 64 * 1024  # characters kept of any one text value
MAX_ID = 256  # a longer "id" is junk, and would bloat every index it lands in
MAX_CUSTOM_FIELDS = 200
_MAX_DEPTH = 32  # of nested containers copied into Message.raw
# One text value longer than this is no message a receptionist typed: the item is set aside
# (quarantined) rather than cut, so an operator sees it. Shorter ones are cut to MAX_TEXT.
MAX_FIELD = 1_000_000
_DETAIL = "contentwithadditionaldetails"  # its presence (or the table's) makes an item whole


# -- keys -------------------------------------------------------------------------------------

_SEPARATORS = frozenset(" _-\t\r\n")


def normalize_key(key: object) -> str:
    """``Message ID``, ``message_id``, ``messageId``, ``message-id`` all become ``messageid``."""
    return "".join(ch for ch in _key_text(key).lower() if ch not in _SEPARATORS)


_ID_KEYS = ("messageid", "id")
# (key, a naive value is UTC): the service's own UTC field first, then the local ones.
_DATE_KEYS = (("utccreatedat", True), ("createdat", False), ("rawcreatedat", False))
_TEXT_KEYS = {
    "firstname": "first_name",
    "lastname": "last_name",
    "companyname": "company",
    "company": "company",
    "phone": "phone",
    "phonenumber": "phone",
    "callerid": "caller_id",
    "from": "sender",
    "resource": "resource",
    "accountnumber": "account_number",
    "status": "status",
    "deliveredat": "delivered_at",
    "deliveredto": "delivered_to",
    "content": "content",
    "email": "email",
    "emailaddress": "email",
}
_CUSTOM = "contentwithadditionaldetailstable"
_KNOWN = frozenset(
    {*_ID_KEYS, *(k for k, _ in _DATE_KEYS), *_TEXT_KEYS, _CUSTOM}
    | {"isemergency", "contentwithadditionaldetails"}
)

_seen_unknown: set[str] = set()
_seen_lock = threading.Lock()
_MAX_SEEN = 1024  # junk payloads must not grow this set (or the log) without bound


def _note_unknown(key: str, normalized: str) -> None:
    with _seen_lock:
        if normalized in _seen_unknown or len(_seen_unknown) >= _MAX_SEEN:
            return
        _seen_unknown.add(normalized)
    log.info("source.unknown_key", key=clean_text(key, limit=100))


# -- text -------------------------------------------------------------------------------------


def clean_text(value: str, *, limit: int = MAX_TEXT) -> str:
    """Strip, drop NUL and lone surrogates (neither survives PostgreSQL or UTF-8), cap length."""
    if len(value) > 2 * limit:
        value = value[: 2 * limit]
    value = value.replace("\x00", "")
    if not value.isascii():
        value = value.encode("utf-8", "ignore").decode("utf-8")
    return value.strip()[:limit].rstrip()


def _scalar_text(value: object) -> str | None:
    """Text of a JSON scalar, or None when ``value`` is a container or something stranger."""
    if value is None:
        return ""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # more digits than int->str allows: junk, not a number
            return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e18 else repr(value)
    if isinstance(value, bytes | bytearray):
        return clean_text(bytes(value[: 4 * MAX_TEXT]).decode("utf-8", "replace"))
    return None


def _text(value: object) -> str:
    """Best text for a field that should hold one string: a list of scalars is joined, a
    mapping (no single obvious text) is dropped."""
    text = _scalar_text(value)
    if text is not None:
        return text
    if isinstance(value, list | tuple):
        parts = (_scalar_text(item) for item in value[:100])
        return clean_text(", ".join(p for p in parts if p))
    return ""


def json_safe(value: object, depth: int = 0) -> Any:
    """A copy of ``value`` that json.dumps and PostgreSQL JSONB both accept: strings cleaned
    as :func:`clean_text` does, non-finite floats and over-deep nesting become None."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | int):
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
            return str(value) if value.bit_length() < 10_000 else None
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {
            clean_text(_key_text(k), limit=1024): json_safe(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    return _text(value)


def _key_text(key: object) -> str:
    """Mapping keys are strings in JSON; from Python they may be anything hashable."""
    return key if isinstance(key, str) else _text(key)


# -- scalars ----------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "y", "t", "1", "on"})


def parse_bool(value: object) -> bool:
    """``true``/``"yes"``/``"Y"``/``"1"``/``1`` are true; anything else, None included, is false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return False


_FORMATS = (
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m-%d-%Y %H:%M:%S",
    "%m-%d-%Y %H:%M",
    "%m-%d-%Y %I:%M %p",
    "%m-%d-%Y %I:%M:%S %p",
    "%Y-%m-%d %I:%M %p",
    "%Y/%m/%d %H:%M:%S",
    "%m/%d/%Y",
    "%m-%d-%Y",
)
_EPOCH_MS = 100_000_000_000  # above this an epoch is in milliseconds (year 5138 in seconds)
_MIN_YEAR, _MAX_YEAR = 1900, 2200
_EPOCH_LIMIT = (
    datetime(_MAX_YEAR, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
).total_seconds()


def parse_datetime(
    value: object, tz: tzinfo | None = None, *, naive_is_utc: bool = False
) -> datetime | None:
    """An aware UTC datetime from ISO 8601, US ``MM/DD/YYYY hh:mm AM``, ``MM-DD-YYYY HH:MM:SS``,
    RFC 2822, or epoch seconds/milliseconds. A naive value is local time in ``tz`` (UTC when
    ``naive_is_utc`` or no ``tz``). Anything unparseable is None: a missing timestamp must not
    cost us the message."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return _from_epoch(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text.isascii() and text.isdigit() and len(text) >= 9:
        return _from_epoch(int(text))
    parsed = _from_text(text)
    if parsed is None:
        return None
    try:
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC if naive_is_utc or tz is None else tz)
        parsed = parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return parsed if _MIN_YEAR <= parsed.year < _MAX_YEAR else None


def _from_epoch(value: float) -> datetime | None:
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float is no timestamp
        return None
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    if seconds >= _EPOCH_MS:
        seconds /= 1000
    if seconds >= _EPOCH_LIMIT:
        return None
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)


def _from_text(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in _FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    if any(ch.isalpha() for ch in text):
        try:
            return parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return None


# -- custom fields ----------------------------------------------------------------------------

_LABEL_KEYS = ("label", "labelname", "name", "key", "field", "title")
_VALUE_KEYS = ("value", "val", "text", "content")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _label_from_key(key: str) -> str:
    """The ``{labelName}`` part of a prefixed key, in whatever spelling the key used."""
    consumed, rest = 0, ""
    for index, ch in enumerate(key):
        if ch in _SEPARATORS:
            continue
        consumed += len(ch.lower())
        if consumed >= len(_CUSTOM):
            rest = key[index + 1 :]
            break
    label = rest.strip(" _-\t\r\n{}[]:")
    if not label:
        return ""
    if " " not in label and ("_" in label or "-" in label):
        label = re.sub(r"[_-]+", " ", label)  # snake/kebab key: best_time_to_call
    elif " " not in label:
        label = _CAMEL_BOUNDARY.sub(" ", label)  # camel key: BestTimeToCall
    return clean_text(label, limit=256)


class _TableParser(HTMLParser):
    """Collects ``<tr>`` rows of ``<td>``/``<th>`` cell texts; entities are unescaped by
    HTMLParser itself (``convert_charrefs``)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[tuple[bool, str]]] = []  # (is <th>, text)
        self._row: list[tuple[bool, str]] | None = None
        self._cell: list[str] | None = None
        self._header = False
        self._skip = 0  # inside <script>/<style>: not cell text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._end_row()
            self._row = []
        elif tag in ("td", "th"):
            self._end_cell()
            self._cell, self._header = [], tag == "th"
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")
        elif tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._end_cell()
        elif tag in ("tr", "table"):
            self._end_row()
        elif tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._skip:
            self._cell.append(data)

    def close(self) -> None:
        super().close()
        self._end_row()

    def _end_cell(self) -> None:
        if self._cell is None:
            return
        if self._row is None:
            self._row = []
        self._row.append((self._header, " ".join("".join(self._cell).split())))
        self._cell = None

    def _end_row(self) -> None:
        self._end_cell()
        if self._row:
            self.rows.append(self._row)
        self._row = None


def _fields_from_html(markup: str) -> list[tuple[str, str]]:
    parser = _TableParser()
    # HTMLParser raises on some malformed declarations: keep the rows found until then.
    with contextlib.suppress(Exception):
        parser.feed(markup)
        parser.close()
    pairs: list[tuple[str, str]] = []
    for row in parser.rows:
        if len(row) < 2 or all(header for header, _ in row):
            continue  # a lone cell, or a header row such as <th>Label</th><th>Value</th>
        pairs.append((row[0][1], " ".join(text for _, text in row[1:] if text)))
    return pairs


def _fields_from_value(value: object, *, depth: int = 0) -> list[tuple[str, str]]:
    """Pairs from the ``content with additional details table`` value in any of its forms."""
    if isinstance(value, Mapping):
        return [(_text(k), _text(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        pairs = []
        for item in value:
            if isinstance(item, Mapping):
                by_key = {normalize_key(k): v for k, v in item.items()}
                label = next((by_key[k] for k in _LABEL_KEYS if k in by_key), None)
                val = next((by_key[k] for k in _VALUE_KEYS if k in by_key), None)
                pairs.append((_text(label), _text(val)))
            elif isinstance(item, list | tuple) and len(item) == 2:
                pairs.append((_text(item[0]), _text(item[1])))
        return pairs
    if isinstance(value, str):
        text = clean_text(value)
        if depth == 0 and text[:1] in ("{", "["):
            try:
                return _fields_from_value(json.loads(text), depth=1)
            except (ValueError, RecursionError):
                pass
        if "<" in text:
            return _fields_from_html(text)
    return []


# -- messages ---------------------------------------------------------------------------------


def find_message_id(raw: object) -> str | None:
    """The message id of ``raw`` if it has a usable one, else None. Never raises."""
    try:
        return _message_id(raw) if isinstance(raw, Mapping) else None
    except MalformedMessage:
        return None


def _message_id(raw: Mapping[Any, object]) -> str:
    by_key: dict[str, object] = {}
    for key, value in raw.items():
        normalized = normalize_key(key)
        if normalized in _ID_KEYS and normalized not in by_key and value not in (None, ""):
            by_key[normalized] = value
    for name in _ID_KEYS:
        if name not in by_key:
            continue
        value = by_key[name]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise MalformedMessage(f"message id is a {type(value).__name__}, not a string", raw=raw)
        if isinstance(value, float) and not value.is_integer():
            raise MalformedMessage("message id is a fractional number", raw=raw)
        text = _scalar_text(int(value) if isinstance(value, float) else value) or ""
        if not text:
            raise MalformedMessage("message id is empty", raw=raw)
        if len(text) > MAX_ID:
            raise MalformedMessage(f"message id is longer than {MAX_ID} characters", raw=raw)
        return text
    raise MalformedMessage("missing message id", raw=raw)


def parse_message(raw: Mapping[str, object], *, account: str, tz: tzinfo | None = None) -> Message:
    """Build a :class:`Message` from one item of the source's answer.

    ``account`` is our configured account name; ``tz`` the account's time zone, used for
    local timestamps without an offset. Raises :class:`MalformedMessage` (and nothing else)
    when the item is not an object or has no usable message id.
    """
    if not isinstance(raw, Mapping):
        raise MalformedMessage(f"item is a {type(raw).__name__}, not an object", raw=raw)
    message_id = _message_id(raw)
    _check_shape(raw)

    fields: dict[str, object] = {}  # normalized key -> first non-empty value
    custom: list[tuple[str, str]] = []
    detailed = False  # the item carries a detail field: it is the whole message
    for key, value in raw.items():
        key_text = _key_text(key)
        normalized = normalize_key(key_text)
        if normalized.startswith(_DETAIL):
            detailed = True
        if normalized == _CUSTOM:
            custom[:0] = _fields_from_value(value)
        elif normalized.startswith(_CUSTOM):
            custom.append((_label_from_key(key_text), _text(value)))
        elif normalized not in _KNOWN:
            _note_unknown(key_text, normalized)
        if value not in (None, "") and normalized not in fields:
            fields[normalized] = value

    text: dict[str, str] = {}
    for key, attribute in _TEXT_KEYS.items():
        if attribute not in text or not text[attribute]:
            text[attribute] = _text(fields.get(key))

    created_at = None
    for key, naive_is_utc in _DATE_KEYS:
        created_at = parse_datetime(fields.get(key), tz, naive_is_utc=naive_is_utc)
        if created_at is not None:
            break

    custom_fields: dict[str, str] = {}
    for label, value in custom:
        if label and value and len(custom_fields) < MAX_CUSTOM_FIELDS:
            custom_fields.setdefault(clean_text(label, limit=256), value)

    return Message(
        account=account,
        message_id=message_id,
        created_at=created_at,
        is_emergency=parse_bool(fields.get("isemergency")),
        custom_fields=custom_fields,
        raw=json_safe(raw),
        # The document says the list endpoints return "a summary" and /v2/messages/<id> the
        # message: an item without the detail fields is a summary, however full it looks.
        summary=not detailed,
        **text,
    )


def _check_shape(raw: Mapping[Any, object]) -> None:
    """Raise :class:`MalformedMessage` for an item no receptionist produced: a text value over
    :data:`MAX_FIELD` characters, or containers nested deeper than ``_MAX_DEPTH``. Iterative,
    so a pathological item cannot exhaust the stack."""
    stack: list[tuple[object, int]] = [(raw, 0)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > 100_000:
            raise MalformedMessage("item holds more than 100000 values", raw=raw)
        if isinstance(value, str | bytes | bytearray):
            if len(value) > MAX_FIELD:
                raise MalformedMessage(
                    f"a value of {len(value)} characters (the limit is {MAX_FIELD})", raw=raw
                )
        elif isinstance(value, Mapping | list | tuple):
            if depth >= _MAX_DEPTH:
                raise MalformedMessage(f"nested deeper than {_MAX_DEPTH} levels", raw=raw)
            children = value.values() if isinstance(value, Mapping) else value
            if isinstance(value, Mapping):
                stack.extend((k, depth + 1) for k in value if isinstance(k, str))
            stack.extend((child, depth + 1) for child in children)


def fingerprint(raw: object) -> str:
    """A stable hash of one list item as received: a summary that hashes the same as last time
    is unchanged, and its detail is not fetched again."""
    blob = json.dumps(json_safe(raw), sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


# -- envelopes --------------------------------------------------------------------------------

_LIST_KEYS = ("data", "messages", "items", "results")


def unwrap_envelope(payload: object) -> list[object]:
    """The items of a list (or single-message) answer, whatever envelope wraps them.

    Accepts a bare list, ``{"data": [...]}``, ``{"success": true, "data": ...}``, a single
    message under ``data``, and ``messages`` lists at the top or under ``data``. Raises
    :class:`SourceError` (and nothing else) for ``{"success": false}`` and unknown shapes.
    """
    return _unwrap(payload, depth=0)


def _unwrap(payload: object, *, depth: int) -> list[object]:
    if isinstance(payload, list):
        return list(payload)
    if not isinstance(payload, Mapping):
        raise SourceError(f"unexpected answer: a {type(payload).__name__}, not a list or object")
    by_key = {normalize_key(k): v for k, v in payload.items()}
    if "success" in by_key and not parse_bool(by_key["success"]):
        info = _text(by_key.get("info") or by_key.get("message") or by_key.get("error"))
        info = clean_text(info, limit=200)
        raise SourceError(f"the source reported a failure: {info or 'no reason given'}", info=info)
    for key in _LIST_KEYS:
        if key not in by_key:
            continue
        inner = by_key[key]
        if inner is None:
            return []
        if isinstance(inner, list):
            return list(inner)
        if isinstance(inner, Mapping) and depth < 2:
            if any(normalize_key(k) in _LIST_KEYS for k in inner):
                return _unwrap(inner, depth=depth + 1)
            # What ``data`` holds is the payload: one message, even one without a usable id
            # (the detail endpoint may omit it; a bad item is parse_message's to report).
            return [inner] if inner else []
        raise SourceError(f"unexpected {key!r}: a {type(inner).__name__}")
    if any(key in _ID_KEYS for key in by_key):
        return [payload]  # one message; a bad id is parse_message's to report, per item
    if not by_key or set(by_key) <= {"success", "info"}:
        return []
    keys = ", ".join(sorted(clean_text(k, limit=40) for k in list(by_key)[:10]))
    raise SourceError(f"unrecognized answer envelope (keys: {keys})")

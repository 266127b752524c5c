"""How the simulator reads the messages it holds: key spellings, ids and timestamps.

Written from the Berkshire API document, not borrowed from syncd's parser
(``syncd.source.parse``): the simulator is the oracle that parser is tested against, and an
oracle sharing the code under test would agree with its bugs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, tzinfo
from email.utils import parsedate_to_datetime

__all__ = ["field_key", "local_date", "message_id_of"]

# (key, a naive value is UTC): the document's UTC field first, then the local ones.
_DATE_KEYS = (("utccreatedat", True), ("createdat", False), ("rawcreatedat", False))
# The document's spellings of a local time, and the ISO forms tests write.
_FORMATS = ("%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M", "%m-%d-%Y %H:%M:%S")


def field_key(key: object) -> str:
    """``Message ID``, ``message_id`` and ``messageId`` are one field: ``messageid``."""
    return "".join(ch for ch in str(key).lower() if ch.isalnum())


def message_id_of(item: Mapping[str, object]) -> str | None:
    """The item's ``message id`` (or ``id``) as text; None when it has none usable."""
    by_key = {field_key(k): v for k, v in item.items()}
    for name in ("messageid", "id"):
        value = by_key.get(name)
        if isinstance(value, bool) or not isinstance(value, str | int):
            continue
        text = str(value).strip()
        if text:
            return text
    return None


def local_date(item: Mapping[str, object], tz: tzinfo) -> date | None:
    """The day in ``tz`` the item was taken, from its first readable timestamp."""
    by_key = {field_key(k): v for k, v in item.items()}
    for key, naive_is_utc in _DATE_KEYS:
        moment = _moment(by_key.get(key))
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC if naive_is_utc else tz)
            return moment.astimezone(tz).date()
    return None


def _moment(value: object) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 10**11 else value  # epoch milliseconds or seconds
        return datetime.fromtimestamp(seconds, UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return _moment(int(text))
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for pattern in _FORMATS:
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    try:
        return parsedate_to_datetime(text)  # RFC 2822
    except (TypeError, ValueError, IndexError):
        return None

"""A loopback simulator of the Berkshire Receptionists API v2, faithful to its one document.

It answers ``GET /v2/messages`` (optionally by ``from_date``/``to_date`` whole days in the
account's time zone) and ``GET /v2/messages/<id>``, checks ``X-API-EMAIL``/``X-API-TOKEN`` on
every request and refuses a bad pair with the documented **404** ``Invalid token``. What the
document leaves open -- key spelling, envelope, how much a list item holds -- is a knob, so
the client can be tested against every plausible reading.

List items default to the literal reading of the document ("Returns a summary of all the
messages"; "Get a single message" returns the message): ``list_shape="summary"`` leaves the
detail fields (``content with additional details`` and its table) out of the list, and only
``GET /v2/messages/<id>`` has them. ``"minimal"`` lists ids, names and times only; ``"full"``
lists whole messages. Requests are counted per endpoint (``counts["list"]``,
``counts["detail"]``), so tests and benchmarks read the source's cost from the server side.
"""

from __future__ import annotations

import copy
import hmac
from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Literal
from urllib.parse import unquote
from zoneinfo import ZoneInfo

from syncd.sandbox.generate import Caller, make_callers, make_messages
from syncd.sandbox.http import Emulator, Request, Response, json_response
from syncd.source.parse import find_message_id, normalize_key, parse_datetime

__all__ = ["BerkshireSimulator", "Envelope", "KeyStyle", "ListShape"]

Envelope = Literal["data", "success", "list"]
KeyStyle = Literal["spaces", "snake", "camel"]
ListShape = Literal["summary", "minimal", "full"]

# What a "minimal" list item carries: enough to show a row, not to match a caller.
_MINIMAL_KEYS = frozenset({"messageid", "firstname", "lastname", "createdat", "utccreatedat"})
# What a "summary" item lacks: the detail fields (the document's last two, and the table's
# prefixed "content with additional details table {labelName}" keys).
_DETAIL_PREFIX = "contentwithadditionaldetails"
_DATE_KEYS = (("utccreatedat", True), ("createdat", False), ("rawcreatedat", False))


class BerkshireSimulator(Emulator):
    """In-memory account of messages behind the documented endpoints.

    ``extra_items`` are appended verbatim to every list answer: junk items and duplicates
    with which to prove the client's tolerance.
    """

    name = "berkshire"

    def __init__(
        self,
        *,
        email: str = "demo@example.com",
        token: str = "sandbox-token",  # noqa: S107 - a sandbox credential, not a secret
        tz: str = "America/New_York",
        messages: Sequence[Mapping[str, object]] = (),
        envelope: Envelope = "success",
        key_style: KeyStyle = "spaces",
        list_shape: ListShape = "summary",
        summary_only: bool | None = None,
        extra_items: Sequence[object] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host=host, port=port)
        self.email = email
        self.token = token
        self.tz = ZoneInfo(tz)
        self.envelope: Envelope = envelope
        self.key_style: KeyStyle = key_style
        self.list_shape: ListShape = list_shape
        if summary_only is not None:
            self.summary_only = summary_only
        self.extra_items: list[object] = list(extra_items)
        self.callers: list[Caller] = []  # set by generated(), for tests' ground truth
        self._messages: dict[str, dict[str, object]] = {}
        self._local_dates: dict[str, date | None] = {}
        # A date range is answered from these, not by testing every message: ids by local day,
        # the days holding any (sorted), and each id's place in ``_messages`` (answers keep it).
        self._by_day: dict[date, set[str]] = {}
        self._days: list[date] = []
        self._position: dict[str, int] = {}
        self._full_scan = False  # tests: answer by testing every message, as a reference
        self.add_messages(messages)
        self.route("GET", r"/v2/messages/?", "list", self._list)
        self.route("GET", r"/v2/messages/(?P<id>[^/]+)", "detail", self._detail)

    @property
    def summary_only(self) -> bool:
        """Older knob: True lists "minimal" items, False whole ones."""
        return self.list_shape != "full"

    @summary_only.setter
    def summary_only(self, value: bool) -> None:
        self.list_shape = "minimal" if value else "full"

    @property
    def detail_requests(self) -> int:
        with self.lock:
            return self.counts["detail"]

    @property
    def list_requests(self) -> int:
        with self.lock:
            return self.counts["list"]

    @classmethod
    def generated(
        cls,
        n: int,
        callers: int,
        *,
        days: int = 7,
        seed: int = 0,
        end: datetime | None = None,
        **kw: Any,
    ) -> BerkshireSimulator:
        """A simulator holding ``n`` generated messages from ``callers`` callers, spread over
        the ``days`` before ``end`` (default: now)."""
        end = end or datetime.now(UTC)
        people = make_callers(callers, seed=seed)
        items = make_messages(
            people,
            n,
            start=end - timedelta(days=days),
            end=end,
            seed=seed,
            tz=kw.get("tz", "America/New_York"),
        )
        simulator = cls(messages=items, **kw)
        simulator.callers = people
        return simulator

    # -- the account, from Python ------------------------------------------------------------
    def add_messages(self, items: Sequence[Mapping[str, object]]) -> None:
        """Store ``items`` (replacing any with the same id). Each needs a message id."""
        with self.lock:
            for item in items:
                message_id = find_message_id(item)
                if message_id is None:
                    raise ValueError("a stored message needs a message id; use extra_items")
                self._messages[message_id] = copy.deepcopy(dict(item))
                self._position.setdefault(message_id, len(self._position))
                self._place(message_id, _local_date(item, self.tz))

    def update_message(self, message_id: str, **changes: object) -> None:
        """Change fields of a stored message, as agents do after the call.
        ``first_name="Ann"`` updates whichever spelling of ``first name`` the message uses."""
        with self.lock:
            message = self._messages[message_id]
            by_key = {normalize_key(k): k for k in message}
            for name, value in changes.items():
                message[by_key.get(normalize_key(name), name.replace("_", " "))] = value
            self._place(message_id, _local_date(message, self.tz))

    def reset(self) -> None:
        """Forget messages and extra items, clear faults and counts; the knobs stay.
        Lets one running simulator serve many tests."""
        with self.lock:
            self._messages.clear()
            self._local_dates.clear()
            self._by_day.clear()
            self._days.clear()
            self._position.clear()
            self.extra_items = []
            self.faults.clear()
            self.faults.injected.clear()
            self.reset_counts()

    @property
    def messages(self) -> list[dict[str, object]]:
        """A copy of the stored messages, in the document's spelling."""
        with self.lock:
            return copy.deepcopy(list(self._messages.values()))

    def count_between(self, start: date, end: date) -> int:
        """How many messages fall on local days ``start``..``end`` (inclusive)."""
        with self.lock:
            if self._full_scan:
                return sum(1 for day in self._local_dates.values() if day and start <= day <= end)
            return sum(len(self._by_day[day]) for day in self._days_between(start, end))

    def _place(self, message_id: str, day: date | None) -> None:
        """Record ``message_id``'s local day, moving it between the by-day sets."""
        old = self._local_dates.get(message_id)
        if old is not None and old != day:
            held = self._by_day[old]
            held.discard(message_id)
            if not held:
                del self._by_day[old]
                del self._days[bisect_left(self._days, old)]
        self._local_dates[message_id] = day
        if day is not None:
            if day not in self._by_day:
                self._by_day[day] = set()
                insort(self._days, day)
            self._by_day[day].add(message_id)

    def _days_between(self, start: date | None, end: date | None) -> list[date]:
        """The days holding messages within ``start``..``end`` (inclusive; None: open)."""
        low = 0 if start is None else bisect_left(self._days, start)
        high = len(self._days) if end is None else bisect_right(self._days, end)
        return self._days[low:high]

    def _ids_between(self, start: date | None, end: date | None) -> list[str]:
        """Ids of the messages a list for ``start``..``end`` answers, in ``_messages`` order."""
        if self._full_scan:
            return [i for i, day in self._local_dates.items() if _within(day, start, end)]
        if start is None and end is None:
            return list(self._messages)  # undated messages too
        ids = [i for day in self._days_between(start, end) for i in self._by_day[day]]
        return sorted(ids, key=self._position.__getitem__)

    # -- HTTP ---------------------------------------------------------------------------------
    def _list(self, request: Request) -> Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        try:
            start = _parse_day(request.arg("from_date"))
            end = _parse_day(request.arg("to_date"))
        except ValueError:
            return _failure("Invalid date format, expected MM-DD-YYYY", 400)
        with self.lock:
            items: list[object] = [
                self._render(self._messages[message_id], shape=self.list_shape)
                for message_id in self._ids_between(start, end)
            ]
            items.extend(copy.deepcopy(self.extra_items))
        return json_response(self._wrap(items))

    def _detail(self, request: Request) -> Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        with self.lock:
            message = self._messages.get(unquote(request.params["id"]))
            rendered = None if message is None else self._render(message, shape="full")
        if rendered is None:
            return _failure("Message not found", 404)
        return json_response(self._wrap(rendered))

    def _refuse(self, request: Request) -> Response | None:
        email = request.header("X-API-EMAIL") or ""
        token = request.header("X-API-TOKEN") or ""
        # Both compared in constant time, and both always compared.
        ok = hmac.compare_digest(email.encode(), self.email.encode())
        ok &= hmac.compare_digest(token.encode(), self.token.encode())
        return None if ok else _failure("Invalid token", 404)

    def fault_response(self, fault: str, request: Request) -> Response:
        status, info = {
            "429": (429, "Too many requests"),
            "500": (500, "Internal server error"),
            "outage": (503, "Service unavailable"),
        }[fault]
        headers = {"Retry-After": f"{self.faults.retry_after:g}"} if status == 429 else None
        return json_response({"success": False, "info": info, "data": {}}, status, headers)

    def _render(self, message: Mapping[str, object], *, shape: ListShape) -> dict[str, object]:
        return {
            _respell(key, self.key_style): copy.deepcopy(value)
            for key, value in message.items()
            if _shown(normalize_key(key), shape)
        }

    def _wrap(self, payload: object) -> object:
        if self.envelope == "list":
            return payload
        if self.envelope == "data":
            return {"data": payload}
        return {"success": True, "data": payload}


def _shown(key: str, shape: ListShape) -> bool:
    if shape == "full":
        return True
    if shape == "minimal":
        return key in _MINIMAL_KEYS
    return not key.startswith(_DETAIL_PREFIX)


def _failure(info: str, status: int) -> Response:
    return json_response({"success": False, "info": info, "data": {}}, status)


def _parse_day(value: str | None) -> date | None:
    if value is None or value == "":
        return None
    return datetime.strptime(value, "%m-%d-%Y").date()


def _within(day: date | None, start: date | None, end: date | None) -> bool:
    if start is None and end is None:
        return True
    if day is None:
        return False
    return (start is None or start <= day) and (end is None or day <= end)


def _local_date(item: Mapping[str, object], tz: tzinfo) -> date | None:
    by_key = {normalize_key(k): v for k, v in item.items()}
    for key, naive_is_utc in _DATE_KEYS:
        moment = parse_datetime(by_key.get(key), tz, naive_is_utc=naive_is_utc)
        if moment is not None:
            return moment.astimezone(tz).date()
    return None


def _respell(key: str, style: KeyStyle) -> str:
    """``"caller id"`` as ``caller_id`` or ``callerId``."""
    words = key.split()
    if style == "snake":
        return "_".join(word.lower() for word in words)
    if style == "camel":
        return (
            words[0].lower() + "".join(w[:1].upper() + w[1:] for w in words[1:]) if words else key
        )
    return key

"""HTTP client for the Berkshire Receptionists API v2 (read-only).

Failures leave here as syncd's own errors, grouped by what the caller must do:

* :class:`~syncd.errors.AuthError` -- the token was refused. The service says so with a
  **404** ``{"success": false, "info": "Invalid token"}``; 401/403 mean the same.
* :class:`~syncd.errors.RetriableError` -- 429, 5xx, timeouts and network errors that
  outlasted ``max_attempts`` (:class:`~syncd.errors.RateLimited` when the last one was a 429),
  and :class:`~syncd.source.parse.SourceError` for answers we cannot read.
* A malformed *item* is never an exception: :meth:`BerkshireClient.fetch_window` returns it
  as :class:`Quarantined`, and the rest of the window flows on.

The token travels only in the ``X-API-TOKEN`` header; headers are never logged and no
message built here contains it.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, tzinfo
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal
from urllib.parse import quote

import httpx
import structlog

from syncd._version import __version__
from syncd.backoff import RetryPolicy
from syncd.errors import (
    AuthError,
    MalformedMessage,
    RateLimited,
    RetriableError,
    SourceError,
    TryAgain,
)
from syncd.models import Message
from syncd.source.body import BadItem, read_items
from syncd.source.deadline import DeadlineTransport, deadline
from syncd.source.parse import (
    clean_text,
    find_message_id,
    fingerprint,
    json_safe,
    parse_message,
)

__all__ = ["BerkshireClient", "Quarantined", "Unchanged", "WindowResult", "parse_retry_after"]

log = structlog.get_logger(__name__)

FetchDetails = Literal["auto", "always", "never"]
_WHERE = "berkshire"


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An item we could not turn into a message, kept with the reason for an operator.
    ``raw`` is the item made JSON-safe (see :func:`~syncd.source.parse.json_safe`)."""

    raw: object
    reason: str
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class WindowResult:
    messages: list[Message] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    # Message id -> fingerprint of its list item, for the store (see fetch_window).
    fingerprints: dict[str, str] = field(default_factory=dict)
    unchanged: int = 0  # summaries left out: stored already with the same fingerprint
    details: int = 0  # detail requests made


# Given {message id: list-item fingerprint}, the ids stored already with that fingerprint.
Unchanged = Callable[[Mapping[str, str]], set[str]]


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class BerkshireClient:
    """Reads messages from one Berkshire account.

    ``timeout`` bounds each connect, read and write; ``deadline_seconds`` the whole of one
    exchange (a server trickling bytes is cut off then, and retried like any timeout).
    ``fetch_details`` decides when to ``GET /v2/messages/<id>`` after a list: ``"auto"``
    for items that look like summaries, ``"always"`` or ``"never"``; ``detail_concurrency``
    bounds how many of those run at once (1: one after another). ``transport`` and
    ``sleep`` exist for tests; ``rng`` makes the backoff jitter repeatable.
    """

    def __init__(
        self,
        base_url: str,
        email: str,
        token: str,
        *,
        timeout: float = 30.0,
        deadline_seconds: float = 120.0,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 60.0,
        fetch_details: FetchDetails = "auto",
        detail_concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        verify: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if fetch_details not in ("auto", "always", "never"):
            raise ValueError(f"fetch_details must be auto, always or never, not {fetch_details!r}")
        if detail_concurrency < 1:
            raise ValueError("detail_concurrency must be at least 1")
        self._deadline = deadline_seconds
        self._policy = RetryPolicy(
            attempts=max_attempts,
            base=backoff_base,
            cap=backoff_cap,
            sleep=sleep,
            rng=rng or random.Random(),
        )
        self._fetch_details = fetch_details
        self._detail_concurrency = detail_concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=base_url,
            headers={
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": f"syncd/{__version__}",
                "X-API-EMAIL": email,
                "X-API-TOKEN": token,
            },
            timeout=httpx.Timeout(timeout),
            transport=transport or DeadlineTransport(verify=verify),
            verify=verify,
            # A redirect would carry our token to wherever it points.
            follow_redirects=False,
        )

    # -- raw endpoints ------------------------------------------------------------------------
    def list_raw(self, start: date, end: date) -> list[object]:
        """Items of ``GET /v2/messages`` for whole days ``start``..``end`` (inclusive)."""
        return self._list_items(start, end)[0]

    def get_raw(self, message_id: str) -> Mapping[str, object] | None:
        """The full message ``message_id``, or None when the service does not know it.
        An answer we cannot read raises :class:`~syncd.errors.MalformedMessage`."""
        if not message_id:
            raise ValueError("message_id is empty")
        response = self._get(f"/v2/messages/{quote(message_id, safe='')}", None)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._unexpected(response)
        found, bad = self._read(response)
        if bad and not found:
            raise MalformedMessage(bad[0].reason, raw=bad[0].raw)
        items = [item for item in found if isinstance(item, Mapping)]
        for item in items:
            if find_message_id(item) == message_id:
                return item
        return items[0] if items else None

    # -- messages -----------------------------------------------------------------------------
    def fetch_window(
        self,
        account: str,
        start: date,
        end: date,
        tz: tzinfo,
        *,
        unchanged: Unchanged | None = None,
        refetch: bool = False,
        heartbeat: Callable[[], object] | None = None,
    ) -> WindowResult:
        """Every message of days ``start``..``end`` in the account's time zone ``tz``.

        Malformed items are quarantined, never raised; of duplicate ids the last one wins.
        An item that needs its detail (a summary under ``"auto"``, any item under
        ``"always"``) gets ``GET /v2/messages/<id>`` only when it is new or its list item
        changed: ``unchanged`` is given ``{id: fingerprint}`` of those items and answers the
        ids already stored with that fingerprint, which are left out of the result (counted in
        ``WindowResult.unchanged``). ``refetch`` fetches every such detail regardless.
        ``heartbeat`` is called after each detail fetch, from the fetching thread (a long
        window renews its lease through it).
        """
        by_id: dict[str, Message] = {}
        prints: dict[str, str] = {}
        quarantined: list[Quarantined] = []
        items, bad = self._list_items(start, end)
        quarantined += [Quarantined(b.raw, b.reason, b.message_id) for b in bad]
        for item in items:
            if not isinstance(item, Mapping):
                reason = f"item is a {type(item).__name__}, not an object"
                quarantined.append(Quarantined(json_safe(item), reason))
                continue
            try:
                message = parse_message(item, account=account, tz=tz)
            except MalformedMessage as exc:
                quarantined.append(Quarantined(json_safe(item), exc.reason, find_message_id(item)))
                continue
            by_id.pop(message.message_id, None)  # keep the last copy, in its position
            by_id[message.message_id] = message
            prints[message.message_id] = fingerprint(item)

        mode = self._fetch_details
        wanted = [m for m in by_id.values() if mode == "always" or (mode == "auto" and m.summary)]
        skip: set[str] = set()
        if wanted and unchanged is not None and not refetch:
            skip = unchanged({m.message_id: prints[m.message_id] for m in wanted})
            wanted = [m for m in wanted if m.message_id not in skip]
        fetched = self._details(account, wanted, tz, heartbeat)
        details = dict(zip((m.message_id for m in wanted), fetched, strict=True))
        messages: list[Message] = []
        for message in by_id.values():
            if message.message_id in skip:
                continue
            if message.message_id in details:
                detailed, bad_detail = details[message.message_id]
                if bad_detail is not None:
                    quarantined.append(bad_detail)
                if detailed is None:
                    continue
                message = detailed
            messages.append(message)
        if quarantined:
            log.warning("source.quarantined", account=account, count=len(quarantined))
        return WindowResult(
            messages,
            quarantined,
            fingerprints={m.message_id: prints[m.message_id] for m in messages},
            unchanged=len(skip),
            details=len(wanted),
        )

    def _list_items(self, start: date, end: date) -> tuple[list[object], list[BadItem]]:
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        params = {"from_date": start.strftime("%m-%d-%Y"), "to_date": end.strftime("%m-%d-%Y")}
        response = self._get("/v2/messages", params)
        if response.status_code != 200:
            raise self._unexpected(response)
        return self._read(response)

    def _details(
        self,
        account: str,
        summaries: Sequence[Message],
        tz: tzinfo,
        heartbeat: Callable[[], object] | None = None,
    ) -> list[tuple[Message | None, Quarantined | None]]:
        """:meth:`_detail` of each of ``summaries``, in their order, at most
        ``detail_concurrency`` at a time. The first failure (in list order) is raised, and
        fetches not yet started are dropped."""

        def one(summary: Message) -> tuple[Message | None, Quarantined | None]:
            found = self._detail(account, summary, tz)
            if heartbeat is not None:
                heartbeat()
            return found

        if self._detail_concurrency <= 1 or len(summaries) <= 1:
            return [one(summary) for summary in summaries]
        with self._detail_threads() as pool:
            # Each fetch runs in a copy of the caller's context: its log lines keep the run id.
            futures = [
                pool.submit(contextvars.copy_context().run, one, summary) for summary in summaries
            ]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            finally:
                # After a failure (or an interrupt) start nothing more, and wait for the
                # fetches already running: none goes on after this call.
                for future in futures:
                    future.cancel()
                for future in futures:
                    if not future.cancelled():
                        future.exception()  # wakes on cancel() too, unlike wait()
        for future in futures:
            if not future.cancelled() and (error := future.exception()) is not None:
                raise error
        return [future.result() for future in futures]

    @contextlib.contextmanager
    def sharing_detail_threads(self) -> Iterator[None]:
        """Inside, every detail fetch -- of every window fetched at once (see
        :func:`syncd.ingest.ingest_days`) -- runs on one set of ``detail_concurrency``
        threads, so the bound holds for the client, not per window. The threads end with the
        block (a client lives as long as the daemon: idle threads per account would add up).
        """
        with ThreadPoolExecutor(
            self._detail_concurrency, thread_name_prefix="berkshire-detail"
        ) as pool:
            with self._pool_lock:
                self._pool = pool
            try:
                yield
            finally:
                with self._pool_lock:
                    self._pool = None

    @contextlib.contextmanager
    def _detail_threads(self) -> Iterator[ThreadPoolExecutor]:
        """The shared threads inside :meth:`sharing_detail_threads`, else a pool of this
        call's own, ended (and waited for) with the call. httpx.Client is thread-safe: the
        threads share its connection pool."""
        with self._pool_lock:
            shared = self._pool
        if shared is not None:
            yield shared
            return
        with ThreadPoolExecutor(
            self._detail_concurrency, thread_name_prefix="berkshire-detail"
        ) as pool:
            yield pool

    def _detail(
        self, account: str, summary: Message, tz: tzinfo
    ) -> tuple[Message | None, Quarantined | None]:
        """The full message for ``summary``, or (None, why) when the detail is malformed."""
        try:
            raw = self.get_raw(summary.message_id)
        except MalformedMessage as exc:
            return self._bad_detail(summary, exc)
        if raw is None:
            # Listed a moment ago, gone now: the summary is all there is; deliver that.
            log.warning("source.detail_missing", account=account, message_id=summary.message_id)
            return summary, None
        if find_message_id(raw) is None:
            raw = {"message id": summary.message_id, **raw}
        try:
            message = parse_message(raw, account=account, tz=tz)
        except MalformedMessage as exc:
            return self._bad_detail(summary, exc)
        detailed = replace(
            message,
            summary=False,
            created_at=message.created_at or summary.created_at,
        )
        return detailed, None

    def _bad_detail(
        self, summary: Message, exc: MalformedMessage
    ) -> tuple[Message | None, Quarantined | None]:
        if not summary.summary:  # the list already gave us the whole message
            log.warning("source.detail_malformed", message_id=summary.message_id)
            return summary, None
        raw = json_safe(exc.raw) if exc.raw is not None else None
        return None, Quarantined(raw, f"detail: {exc.reason}", summary.message_id)

    # -- plumbing -----------------------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, str] | None) -> httpx.Response:
        """GET with retries; returns any answer that is not transient (auth is raised)."""

        def attempt() -> httpx.Response:
            try:
                with deadline(self._deadline):
                    response = self._http.get(path, params=params)
            except httpx.TimeoutException as exc:
                raise self._again(path, f"timed out ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise self._again(path, f"network error ({type(exc).__name__})") from None
            status = response.status_code
            if status not in (408, 429) and not 500 <= status <= 599:
                self._raise_for_auth(response)
                return response
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise self._again(path, f"HTTP {status}", retry_after, limited=status == 429)

        def logged(attempt: int, signal: TryAgain, wait: float) -> None:
            log.warning(
                "source.retry",
                path=path,
                attempt=attempt,
                problem=str(signal.error),
                wait=round(wait, 3),
            )

        return self._policy.call(attempt, on_retry=logged)

    def _again(
        self, path: str, problem: str, retry_after: float | None = None, *, limited: bool = False
    ) -> TryAgain:
        """A transient failure: retried, and once tries run out raised as its ``error``."""
        error = RateLimited if limited else RetriableError
        message = f"GET {path} failed after {self._policy.attempts} attempts: {problem}"
        return TryAgain(error(message, retry_after=retry_after), retry_after=retry_after)

    def _raise_for_auth(self, response: httpx.Response) -> None:
        status = response.status_code
        if status in (401, 403):
            raise AuthError(f"the API refused our credentials (HTTP {status})", where=_WHERE)
        if status == 404 and _says_invalid_token(_info(response)):
            raise AuthError(
                "the API token was refused (HTTP 404 'Invalid token'): "
                "check the account's API email and token",
                where=_WHERE,
            )

    def _read(self, response: httpx.Response) -> tuple[list[object], list[BadItem]]:
        try:
            return read_items(response.content)
        except SourceError as exc:
            if not exc.info and "not JSON" in str(exc):
                raise SourceError(
                    f"GET {response.request.url.path} answered HTTP {response.status_code} "
                    f"with a body that is not JSON ({len(response.content)} bytes)"
                ) from None
            if _says_invalid_token(exc.info):
                raise AuthError(
                    f"the API token was refused ({exc.info!r}): check the account's API "
                    "email and token",
                    where=_WHERE,
                ) from None
            raise

    def _unexpected(self, response: httpx.Response) -> SourceError:
        info = _info(response)
        detail = f": {info}" if info else ""
        return SourceError(
            f"GET {response.request.url.path} answered HTTP {response.status_code}{detail}",
            info=info,
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BerkshireClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _info(response: httpx.Response) -> str:
    """The service's ``info`` text of an error answer, if the body is JSON and has one."""
    try:
        payload = response.json()
    except ValueError:
        return ""
    if not isinstance(payload, Mapping):
        return ""
    value = payload.get("info") or payload.get("message") or payload.get("error")
    return clean_text(value, limit=200) if isinstance(value, str) else ""


def _says_invalid_token(info: str) -> bool:
    return "token" in info.lower()

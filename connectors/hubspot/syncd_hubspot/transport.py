"""One door to HubSpot: rate limiting, retries, metrics and error translation.

Every request goes through :meth:`Transport.call`, which

* waits on the client-side limiters (the general one, plus the search one for searches),
* calls the hubspot-api-client method with ``_preload_content=False`` and parses the JSON
  itself: a 207's ``errors`` and a 4xx's ``category``/``context`` are what the connector
  decides on, and reading them raw keeps that independent of the generated models,
* retries 429, 5xx and network failures with capped exponential backoff and jitter, honouring
  ``Retry-After`` for *every* caller through :meth:`RateLimiter.penalize` (urllib3's
  ``Retry`` does not retry a POST on a status, and searches and batches are POSTs) -- but a
  write that is not idempotent (creating notes, calls, tasks) is never sent twice: after a
  5xx, a network failure or a malformed answer it may have landed, so the caller gets a
  :class:`InDoubt` (a RetriableError) and finds out by reading, never by resending,
* holds every exchange to an overall ``deadline`` besides the per-read ``timeout`` (see
  :mod:`syncd_hubspot.deadline`): a trickling server is cut off like a timeout,
* treats a 2xx whose body is not a JSON object as a failure (retriable), never a traceback,
* reports each attempt to ``context.observe``, and
* turns what is left into syncd's errors: 401/403 -> AuthError, a DAILY 429 -> RateLimited at
  once, exhausted retries -> RateLimited / RetriableError. Any other 4xx is *returned* as an
  :class:`ApiResult`: whether it is one bad record or a bad request only the caller knows.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from hubspot import HubSpot
from hubspot.crm.associations.v4.exceptions import ApiException as AssociationsApiException
from hubspot.crm.objects.exceptions import ApiException as ObjectsApiException
from hubspot.crm.owners.exceptions import ApiException as OwnersApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

from syncd.plugin import (
    AuthError,
    RateLimited,
    RateLimiter,
    RequestObserver,
    RetriableError,
    RetryPolicy,
    TryAgain,
)
from syncd_hubspot.deadline import install, under_deadline
from syncd_hubspot.options import HubSpotOptions

__all__ = ["ApiResult", "InDoubt", "Transport"]

# Each generated subpackage has its own exception class; they share nothing but ``.status``.
_API_EXCEPTIONS: tuple[type[Exception], ...] = (
    ObjectsApiException,
    AssociationsApiException,
    PropertiesApiException,
    OwnersApiException,
)
_SEARCH_POLICIES = frozenset({"SECONDLY", "SEARCH"})
_MALFORMED = -1  # a 2xx whose body is not JSON: whatever HubSpot did, we cannot read it
_UNSENT = -2  # no connection was made: the request never left, so even a create may repeat


class InDoubt(RetriableError):
    """A write that may or may not have landed (5xx, network failure, malformed answer after
    the request went out). Retry only after reading what is there."""


@dataclass(frozen=True, slots=True)
class ApiResult:
    """A parsed HubSpot answer: 2xx (207 included) or a 4xx the caller must judge."""

    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        if isinstance(self.body, Mapping):
            return str(self.body.get("message") or f"HTTP {self.status}")
        return f"HTTP {self.status}"

    @property
    def category(self) -> str:
        if isinstance(self.body, Mapping):
            return str(self.body.get("category") or "")
        return ""

    def results(self) -> list[dict[str, Any]]:
        if isinstance(self.body, Mapping) and isinstance(self.body.get("results"), list):
            return [r for r in self.body["results"] if isinstance(r, dict)]
        return []

    @property
    def policy(self) -> str | None:
        """A 429's ``policyName`` (``TEN_SECONDLY_ROLLING``, ``SECONDLY``, ``DAILY``...)."""
        if isinstance(self.body, Mapping) and self.body.get("policyName"):
            return str(self.body["policyName"]).upper()
        return None

    def errors(self) -> list[dict[str, Any]]:
        if isinstance(self.body, Mapping) and isinstance(self.body.get("errors"), list):
            return [e for e in self.body["errors"] if isinstance(e, dict)]
        return []

    def next_after(self) -> str | None:
        """The cursor of the next page (``paging.next.after``), None on the last one."""
        paging = self.body.get("paging") if isinstance(self.body, Mapping) else None
        nxt = paging.get("next") if isinstance(paging, Mapping) else None
        if not isinstance(nxt, Mapping) or nxt.get("after") in (None, ""):
            return None
        return str(nxt["after"])


def _parse_body(raw: bytes | str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {"message": (raw if isinstance(raw, str) else raw.decode("utf-8", "replace"))[:500]}


def _well_formed(status: int, raw: bytes | None) -> bool:
    """A 2xx answer we can read: a JSON object, or nothing at all from a 204."""
    if not raw:
        return status == 204
    try:
        return isinstance(json.loads(raw), dict)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False


def _never_sent(exc: BaseException) -> bool:
    """True when the request cannot have left: the connection was refused or timed out
    (urllib3's NewConnectionError is a ConnectTimeoutError), wrapped in a MaxRetryError."""
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: HubSpot does not send those; fall back to backoff
    return max(seconds, 0.0)


class Transport:
    """Owns the hubspot-api-client API objects (each holds its own connection pool)."""

    def __init__(
        self,
        options: HubSpotOptions,
        *,
        target: str,
        observe: RequestObserver,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._options = options
        self._target = target
        self._observe = observe
        # One try more than ``max_retries``; the first wait near half a second.
        self._policy = RetryPolicy(
            attempts=options.max_retries + 1,
            base=0.5,
            cap=options.backoff_cap,
            sleep=sleep,
            rng=rng or random.Random(),
        )
        self.limiter = RateLimiter(
            options.rate_limit.calls, options.rate_limit.period, clock=clock, sleep=sleep
        )
        self.search_limiter = RateLimiter(
            options.search_rate_limit.calls,
            options.search_rate_limit.period,
            clock=clock,
            sleep=sleep,
        )
        # urllib3 retries nothing: our loop does (nested retries multiply attempts), and it
        # repeats a failed connect even for a create, since nothing was sent (_never_sent).
        retry = urllib3.Retry(total=0)
        client = HubSpot(access_token=options.access_token, host=options.host, retry=retry)
        # The discovery properties build a new ApiClient (and pool) per access: keep one each.
        self.objects_basic = client.crm.objects.basic_api
        self.objects_batch = client.crm.objects.batch_api
        self.objects_search = client.crm.objects.search_api
        self.associations = client.crm.associations.v4.batch_api
        self.properties = client.crm.properties.core_api
        self.property_groups = client.crm.properties.groups_api
        self.owners = client.crm.owners.owners_api  # syncd_hubspot.owners
        self._apis = [
            self.objects_basic,
            self.objects_batch,
            self.objects_search,
            self.associations,
            self.properties,
            self.property_groups,
            self.owners,
        ]
        for api in self._apis:
            install(api.api_client.rest_client.pool_manager)

    def call(
        self,
        endpoint: str,
        method: Callable[..., Any],
        *args: Any,
        search: bool = False,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> ApiResult:
        """Send one request (retrying as described above) and return the parsed answer.

        ``idempotent=False``: the request creates something each time it lands; after an
        answer that leaves it unknown whether it landed, raise :class:`InDoubt` instead of
        sending it again."""
        return self._policy.call(
            lambda: self._attempt(endpoint, method, args, kwargs, search, idempotent)
        )

    def _attempt(
        self,
        endpoint: str,
        method: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        search: bool,
        idempotent: bool,
    ) -> ApiResult:
        """One try: the answer, an error to stop on, or :class:`TryAgain` to go round."""
        waited = self.limiter.acquire()
        if search:
            waited += self.search_limiter.acquire()
        answer = self._send(method, args, kwargs)
        self._observe(self._target, endpoint, max(answer.status, 0), waited)
        status = answer.status
        if status == _UNSENT:
            status = 0  # the connection was never made: nothing landed, any request may repeat
        elif not idempotent and (status in (0, _MALFORMED) or status >= 500):
            what = {0: "no answer", _MALFORMED: "a malformed answer"}.get(status, f"HTTP {status}")
            raise InDoubt(f"HubSpot {endpoint}: {what}; the write may have landed")
        if status in (401, 403):
            # HubSpot's message names the problem (expired, missing scope), not the token.
            raise AuthError(
                f"HubSpot refused the access token ({status}): {answer.message}".strip(),
                where=self._target,
            )
        if status != 429 and 0 < status < 500:
            return answer
        if status == _MALFORMED:
            status = 0  # retried like a network failure: reads and upserts are safe to repeat
        retry_after = _retry_after(answer.headers)
        policy = answer.policy
        if policy == "DAILY":
            raise RateLimited(
                f"HubSpot daily API limit reached ({endpoint})",
                retry_after=retry_after,
                policy="DAILY",
            )
        if status == 429:
            # Hold back every thread, not just this one: HubSpot counts the account.
            limiter = (
                self.search_limiter
                if search and (policy or "") in _SEARCH_POLICIES
                else self.limiter
            )
            limited = RateLimited(
                f"HubSpot rate limit ({policy or 'unknown policy'}) on {endpoint}",
                retry_after=retry_after,
                policy=policy,
            )
            raise TryAgain(limited, retry_after=retry_after, pause=limiter.penalize)
        what = f"HTTP {status}" if status else "network error"
        error = RetriableError(f"HubSpot {endpoint}: {what}", retry_after=retry_after)
        raise TryAgain(error, retry_after=retry_after)

    def _send(
        self, method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ApiResult:
        """One attempt. Status 0 stands for a network failure or the deadline (no answer),
        -1 for a 2xx answer whose body is not a JSON object."""
        with under_deadline(self._options.deadline) as exchange:
            try:
                response = method(
                    *args, _preload_content=False, _request_timeout=self._options.timeout, **kwargs
                )
            except _API_EXCEPTIONS as exc:
                if exchange.expired:
                    return ApiResult(0)
                headers = getattr(exc, "headers", None) or {}
                return ApiResult(
                    int(getattr(exc, "status", 0) or 0),
                    _parse_body(getattr(exc, "body", None)),
                    {str(k): str(v) for k, v in headers.items()},
                )
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                return ApiResult(_UNSENT if _never_sent(exc) else 0)
            try:
                raw = response.data
            except (urllib3.exceptions.HTTPError, OSError):
                return ApiResult(0)  # cut off mid-body (a deadline, a dropped connection)
            finally:
                response.release_conn()
            if exchange.expired:
                return ApiResult(0)
        headers = {str(k): str(v) for k, v in response.headers.items()}
        if not _well_formed(response.status, raw):
            return ApiResult(_MALFORMED, _parse_body(raw), headers)
        return ApiResult(response.status, _parse_body(raw), headers)

    def close(self) -> None:
        for api in self._apis:
            pool = getattr(getattr(api.api_client, "rest_client", None), "pool_manager", None)
            if pool is not None:
                pool.clear()

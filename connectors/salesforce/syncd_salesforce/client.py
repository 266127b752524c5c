"""simple-salesforce behind syncd's error policy: one re-login, bounded retries, typed errors.

Retry rules. A request the org cannot have processed (429, 503, a connection never made) is
always safe to repeat. Other 5xx and broken connections are ambiguous: repeated here only for
idempotent calls (reads, PATCH updates and external-id upserts); for a plain create the caller
gets a :class:`RetriableError` and reconciles first (see ``writes.py``).

An answer of the wrong shape (a 200 whose body is not the documented JSON) is a
:class:`MalformedAnswer`, a :class:`RetriableError`: a write it answered may have landed, so
the caller treats it like any ambiguous failure, never as a traceback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote_plus

import requests
import urllib3.exceptions
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from syncd.plugin import (
    AuthError,
    ConfigError,
    RateLimited,
    RateLimiter,
    RequestObserver,
    RetriableError,
    RetryPolicy,
    TryAgain,
    chunks,
    connector_logger,
    register_secret,
)
from syncd_salesforce.auth import login
from syncd_salesforce.errors import parse_errors, summary
from syncd_salesforce.options import SalesforceOptions
from syncd_salesforce.transport import SalesforceSession

__all__ = ["COMPOSITE_QUERIES", "MalformedAnswer", "SalesforceClient"]

T = TypeVar("T")
log = connector_logger("salesforce")

_BACKOFF_CAP = 20.0
COMPOSITE_QUERIES = 5  # queries and sObject Collections a composite request may hold
_SAFE_STATUSES = frozenset({429, 503})


class MalformedAnswer(RetriableError):
    """A 2xx answer whose body is not what the endpoint documents."""


def _expect(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise MalformedAnswer(f"{what}: malformed answer (expected a JSON {kind.__name__})")
    return value


def _retry_after(response: requests.Response | None) -> float | None:
    if response is None:
        return None
    try:
        value = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return value if value >= 0 else None


def _query_more(next_url: str, sf: Salesforce) -> Any:
    return sf.query_more(next_url, identifier_is_url=True)


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the org (refused, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _rows_of(items: list[Any], what: str) -> list[dict[str, Any]]:
    for item in items:
        _expect(item, Mapping, what)
    return items


class SalesforceClient:
    """One org, one session. Thread-safe: the session is swapped under a lock."""

    def __init__(
        self,
        options: SalesforceOptions,
        *,
        target: str,
        observe: RequestObserver,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options
        self.target = target
        self.api_usage: tuple[int, int] | None = None
        self._sleep = sleep
        # ``retries`` tries after the first; waits from ``backoff`` seconds, doubling to 20.
        self._policy = RetryPolicy(
            attempts=options.retries + 1, base=options.backoff, cap=_BACKOFF_CAP, sleep=sleep
        )
        self._lock = threading.Lock()
        self._sf: Salesforce | None = None
        self._usage_alerted = False
        limiter = RateLimiter(max(1, round(options.requests_per_second)), 1.0)
        self.session = SalesforceSession(
            timeout=options.timeout,
            deadline=options.deadline,
            limiter=limiter,
            observe=lambda endpoint, status, waited: observe(target, endpoint, status, waited),
            on_usage=self._usage,
        )
        if options.allow_save:
            # DuplicateRuleHeader: save past duplicate rules whose action is "Allow".
            self.session.headers["Sforce-Duplicate-Rule-Header"] = "allowSave=true"
        for secret in options.secrets():
            register_secret(secret)

    # -- session ---------------------------------------------------------------------------
    def _connect(self) -> Salesforce:
        session_id, instance = login(self.options, self.session, where=self.target)
        register_secret(session_id)
        log.info("salesforce.login", target=self.target, auth=self.options.auth, instance=instance)
        return Salesforce(
            session_id=session_id,
            instance=instance,
            version=self.options.api_version,
            session=self.session,
        )

    @property
    def logged_in_instance(self) -> str | None:
        """The org's host as the last login named it; None before any login (asks nothing)."""
        with self._lock:
            return None if self._sf is None else str(self._sf.sf_instance)

    def connect(self) -> str:
        """Log in now if not yet logged in; the instance host. For ``check``."""
        return str(self._current().sf_instance)

    def _current(self) -> Salesforce:
        with self._lock:
            if self._sf is None:
                self._sf = self._connect()
            return self._sf

    def _relogin(self, stale: Salesforce) -> None:
        with self._lock:
            if self._sf is stale or self._sf is None:  # another thread may have done it
                self._sf = None
                self._sf = self._connect()

    def _usage(self, used: int, limit: int) -> None:
        self.api_usage = (used, limit)
        log.debug("salesforce.api_usage", target=self.target, used=used, limit=limit)
        high = limit > 0 and used >= self.options.daily_limit_alert_ratio * limit
        if high and not self._usage_alerted:
            log.warning(
                "salesforce.api_usage_high",
                target=self.target,
                used=used,
                limit=limit,
                ratio=round(used / limit, 3),
            )
        self._usage_alerted = high

    # -- the policy --------------------------------------------------------------------------
    def call(
        self,
        what: str,
        fn: Callable[[Salesforce], T],
        *,
        idempotent: bool = True,
        once: bool = False,
    ) -> T:
        """Run ``fn`` against the org under the retry and re-login policy. ``once``: a single
        try whose :class:`TryAgain` reaches the caller, which runs the loop itself
        (:meth:`retry`) because it must do something between tries."""
        relogged = [False]  # one re-login per call, whichever try needs it

        def attempt() -> T:
            while True:
                sf: Salesforce | None = None
                try:
                    sf = self._current()
                    return fn(sf)
                except SalesforceExpiredSession as exc:
                    if relogged[0] or self.options.auth == "session" or sf is None:
                        when = (
                            "after re-login"
                            if relogged[0]
                            else "(a given session cannot be renewed)"
                        )
                        raise AuthError(
                            f"session refused {when}: {summary(exc.content)}", where=self.target
                        ) from exc
                    relogged[0] = True
                    log.info("salesforce.session_expired", target=self.target, what=what)
                    self._relogin(sf)
                    continue
                except SalesforceRefusedRequest as exc:
                    refused = self._refused(exc, what)
                    if not (isinstance(refused, RateLimited) and refused.policy == "CONCURRENT"):
                        raise refused from exc
                    # Refused before it ran: safe to repeat, after a pause.
                    self._again(refused, refused.retry_after, safe=True)
                except SalesforceError as exc:
                    if exc.status != 429 and exc.status < 500:
                        raise  # 400/404/300: the caller decides what a malformed request means
                    response = self.session.last_response
                    retry_after = _retry_after(response)
                    if exc.status == 429 and self.session.limiter is not None:
                        self.session.limiter.penalize(retry_after or self.options.backoff)
                    problem = f"HTTP {exc.status}: {summary(exc.content)}"
                    error = (
                        RateLimited(f"{what}: {problem}", retry_after=retry_after)
                        if exc.status == 429
                        else RetriableError(f"{what}: {problem}", retry_after=retry_after)
                    )
                    safe = idempotent or exc.status in _SAFE_STATUSES
                    self._again(error, retry_after, safe=safe, cause=exc)
                except requests.RequestException as exc:
                    error = RetriableError(f"{what}: {type(exc).__name__}")
                    self._again(error, None, safe=idempotent or _never_sent(exc), cause=exc)
                except MalformedAnswer as exc:  # answered, but not readable: maybe done
                    self._again(exc, None, safe=idempotent)
                except RetriableError as exc:  # from login: logins are safe to repeat
                    self._again(exc, None, safe=True)

        return attempt() if once else self.retry(what, attempt)

    @staticmethod
    def waits_too_long(retry_after: float | None) -> bool:
        """Whether the org asked for a pause longer than we wait in-process (the daemon's
        queue waits it out instead)."""
        return retry_after is not None and retry_after > _BACKOFF_CAP

    def retry(self, what: str, attempt: Callable[[], T]) -> T:
        """``attempt`` under the retry policy: the one loop every request of this client runs
        in, logged as ``salesforce.retry``."""

        def logged(number: int, signal: TryAgain, wait: float) -> None:
            log.info(
                "salesforce.retry",
                target=self.target,
                what=what,
                attempt=number,
                delay=round(wait, 3),
                problem=str(signal.error).removeprefix(f"{what}: "),
            )

        return self._policy.call(attempt, on_retry=logged)

    def _again(
        self,
        error: RetriableError,
        retry_after: float | None,
        *,
        safe: bool,
        cause: BaseException | None = None,
    ) -> NoReturn:
        """Raise ``error`` now when repeating is unsafe (a write that may have landed) or the
        org asked for a pause longer than we wait in-process; else go round again, waiting what
        the org asked (or the policy's backoff)."""
        if not safe or self.waits_too_long(retry_after):
            raise error from cause
        raise TryAgain(error, retry_after=retry_after) from cause

    def _refused(self, exc: SalesforceRefusedRequest, what: str) -> Exception:
        errors = parse_errors(exc.content)
        for error in errors:
            if error.code != "REQUEST_LIMIT_EXCEEDED":
                continue
            if "concurrent" in error.message.lower():
                # Too many long-running requests at once: seconds, not hours. ("API Request
                # Limits and Allocations": both limits answer 403 REQUEST_LIMIT_EXCEEDED; the
                # daily one says "TotalRequests Limit exceeded.")
                return RateLimited(f"{what}: {error}", retry_after=1.0, policy="CONCURRENT")
            log.error(
                "salesforce.daily_limit_exceeded",
                target=self.target,
                api_usage=self.api_usage,
                message=error.message,
            )
            return RateLimited(f"{what}: {error}", policy="DAILY")
        detail = "; ".join(str(e) for e in errors) or "HTTP 403"
        return AuthError(f"{what} refused: {detail}", where=self.target)

    # -- conveniences ----------------------------------------------------------------------
    def query_all(self, soql: str) -> list[dict[str, Any]]:
        result = _expect(self._read("query", lambda sf: sf.query_all(soql)), Mapping, "query")
        return _rows_of(_expect(result.get("records"), list, "query"), "query")

    def search(self, sosl: str) -> list[dict[str, Any]]:
        result = self._read("search", lambda sf: sf.search(sosl))
        if isinstance(result, Mapping):
            result = result.get("searchRecords")
        return _rows_of(_expect(result, list, "search"), "search")

    def data_path(self, rest: str) -> str:
        """A subrequest URL: ``/services/data/v59.0/<rest>``."""
        return f"/services/data/v{self.options.api_version}/{rest}"

    def composite(
        self, subrequests: Sequence[Mapping[str, Any]], *, idempotent: bool
    ) -> dict[str, dict[str, Any]]:
        """One ``POST composite`` (one API call): the answers by ``referenceId``."""
        body = {"allOrNone": False, "compositeRequest": list(subrequests)}
        result = self.call(
            "composite",
            lambda sf: sf.restful("composite", method="POST", json=body),
            idempotent=idempotent,
        )
        answers = _expect(
            _expect(result, Mapping, "composite").get("compositeResponse"), list, "composite"
        )
        return {str(a.get("referenceId")): a for a in _rows_of(answers, "composite")}

    def query_many(self, statements: Sequence[str]) -> list[list[dict[str, Any]]]:
        """The rows of each SOQL statement, in order: up to five per composite request."""
        if len(statements) <= 1:
            return [self.query_all(q) for q in statements]
        out: list[list[dict[str, Any]]] = []
        for group in chunks(statements, COMPOSITE_QUERIES):
            subrequests = [
                {
                    "method": "GET",
                    "url": self.data_path("query/?q=" + quote_plus(soql)),
                    "referenceId": f"q{n}",
                }
                for n, soql in enumerate(group)
            ]
            try:
                answers = self.composite(subrequests, idempotent=True)
            except (SalesforceMalformedRequest, SalesforceResourceNotFound) as exc:
                raise self._refused_query("query", exc.content) from exc
            out += [self._rows(answers.get(f"q{n}") or {}) for n in range(len(group))]
        return out

    def _rows(self, answer: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The records a query subrequest answered, following ``nextRecordsUrl``."""
        status = answer.get("httpStatusCode")
        status = status if isinstance(status, int) else 0
        body: Any = answer.get("body") or {}
        if status >= 500 or status == 0:
            raise RetriableError(f"query in a composite request: HTTP {status}: {summary(body)}")
        if status >= 300:
            raise self._refused_query("query", body)
        body = _expect(body, Mapping, "query")
        rows = _rows_of(_expect(body.get("records"), list, "query"), "query")
        while not body.get("done", True) and body.get("nextRecordsUrl"):
            more = self.call("query", partial(_query_more, str(body["nextRecordsUrl"])))
            body = _expect(more, Mapping, "query")
            rows += _rows_of(_expect(body.get("records"), list, "query"), "query")
        return rows

    def _refused_query(self, what: str, content: Any) -> ConfigError:
        """Caller text is escaped, so a refused query means a name in our configuration (a
        ``contact_fields`` field, ``marker_field``...) that the org does not have."""
        return ConfigError(
            f"{self.target}: Salesforce refused a {what} ({summary(content)});"
            " check the field names in this target's options"
        )

    def _read(self, what: str, fn: Callable[[Salesforce], Any]) -> Any:
        try:
            return self.call(what, fn)
        except (SalesforceMalformedRequest, SalesforceResourceNotFound) as exc:
            raise self._refused_query(what, exc.content) from exc

    def collections(
        self,
        method: str,
        path: str,
        records: Sequence[Mapping[str, Any]],
        *,
        idempotent: bool,
        once: bool = False,
    ) -> list[dict[str, Any]]:
        """An sObject Collections request (allOrNone false): one result per record, in order."""
        body = {"allOrNone": False, "records": list(records)}
        result = self.call(
            f"{method} {path}",
            lambda sf: sf.restful(path, method=method, json=body),
            idempotent=idempotent,
            once=once,
        )
        results = _rows_of(_expect(result, list, f"{method} {path}"), f"{method} {path}")
        if len(results) != len(records):
            raise MalformedAnswer(
                f"{method} {path}: {len(results)} results for {len(records)} records"
            )
        return results

    def restful(self, path: str) -> Any:
        return self.call(path or "resources", lambda sf: sf.restful(path))

    def limits(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("limits", lambda sf: sf.limits())
        return result

    def close(self) -> None:
        self.session.close()

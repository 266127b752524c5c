"""Rate limits and refusals: HubSpot's 429s and the faults a test injects.

Sources: API usage guidelines, "Rate limits" (private apps: a burst limit per rolling 10 s by
account tier, search five requests a second per token, a daily limit; 429 bodies carry
``policyName`` and, as documented, *no* ``Retry-After``) and the developer changelog
"Increasing our API limits" (Professional and Enterprise 190, the API Limit Increase pack 250).
"""

from __future__ import annotations

import uuid
from collections import deque

from syncd.sandbox.http import Request, Response, json_response

from .records import PortalRecords, error_body

__all__ = ["BURST_LIMITS", "SEARCH_LIMIT", "RateLimits", "Window"]

# Private apps' burst limit (requests per rolling 10 s) by account tier: API usage guidelines,
# "Rate limits", and the developer changelog "Increasing our API limits" (Professional and
# Enterprise 190, the API Limit Increase capacity pack 250, which does not stack).
BURST_LIMITS: dict[str, tuple[int, float]] = {
    "free": (100, 10.0),
    "starter": (100, 10.0),
    "professional": (190, 10.0),
    "enterprise": (190, 10.0),
    "api_limit_increase": (250, 10.0),
}

# CRM search: five requests a second per authentication token (API usage guidelines, "Rate
# limits"). The guidelines exempt no endpoint from the burst limit, so searches count there too.
SEARCH_LIMIT = (5, 1.0)


class Window:
    """Server-side sliding window: at most ``calls`` admitted requests per ``period``."""

    def __init__(self, calls: int, period: float) -> None:
        self.calls, self.period = calls, period
        self._sent: deque[float] = deque()

    def admit(self, now: float) -> float:
        """0.0 when admitted (and counted), else seconds until a slot frees up."""
        while self._sent and self._sent[0] <= now - self.period:
            self._sent.popleft()
        if len(self._sent) >= self.calls:
            return self._sent[0] + self.period - now
        self._sent.append(now)
        return 0.0

    def remaining(self) -> int:
        return max(self.calls - len(self._sent), 0)


class RateLimits(PortalRecords):
    """The burst, search and daily limits, checked before any handler runs."""

    portal_id: int
    daily_limit_reached: bool  # set True to answer every request with a DAILY 429
    # HubSpot documents its 429 without Retry-After; a test may switch one on.
    retry_after_header: bool
    _burst: Window | None  # every request
    _searches: Window | None  # search requests

    def _over_limit(self, *, search: bool) -> Response | None:
        """The 429 for a request over a limit (counted in ``refused``), or None to go on."""
        if self.daily_limit_reached:
            self.refuse("DAILY")
            return self._rate_limited("DAILY", "daily", retry_after=None)
        now = self._now()
        if self._burst is not None:
            wait = self._burst.admit(now)
            if wait:
                self.refuse("TEN_SECONDLY_ROLLING")
                return self._rate_limited("TEN_SECONDLY_ROLLING", "ten_secondly_rolling", wait)
        if search and self._searches is not None:
            wait = self._searches.admit(now)
            if wait:
                self.refuse("SECONDLY")
                return self._rate_limited("SECONDLY", "secondly", wait)
        return None

    def _limit_headers(self) -> dict[str, str]:
        """The burst limit's headers, which HubSpot sends on every answer but search's."""
        if self._burst is None:
            return {}
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self._burst.period * 1000)),
            "X-HubSpot-RateLimit-Max": str(self._burst.calls),
            "X-HubSpot-RateLimit-Remaining": str(self._burst.remaining()),
        }

    def _rate_limited(self, policy: str, label: str, retry_after: float | None) -> Response:
        body = {
            "status": "error",
            "message": f"You have reached your {label} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "groupName": f"publicapi:private-app-api-calls-{label}:{self.portal_id}",
        }
        send = retry_after is not None and self.retry_after_header
        headers = {"Retry-After": f"{retry_after:.3f}"} if send else {}
        return json_response(body, status=429, headers=headers)

    def daily_limit_answer(self) -> Response:
        """HubSpot's DAILY 429, for a test's ``after_write`` to send."""
        return self._rate_limited("DAILY", "daily", retry_after=None)

    def fault_response(self, fault: str, request: Request) -> Response:
        if fault == "429":
            return self._rate_limited(
                "TEN_SECONDLY_ROLLING", "ten_secondly_rolling", self.faults.retry_after
            )
        if fault == "500":
            return json_response(error_body("internal error", "INTERNAL_ERROR"), status=500)
        return json_response(error_body("Service Unavailable", "SERVICE_UNAVAILABLE"), status=503)

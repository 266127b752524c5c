"""Errors, grouped by what the runtime must *do* about them.

::

    SyncdError
    ├── FatalError              stop this job; retrying will not help
    │   ├── ConfigError         bad configuration or usage                      (exit 2)
    │   │   └── StateFileError  the state file or its directory cannot be used  (exit 2)
    │   ├── AuthError           the source or a CRM refused our credentials     (exit 3)
    │   └── CheckFailed         a ``syncd check`` step found something wrong (reported)
    ├── RetriableError          try again later (429, 5xx, network, locked database)
    │   ├── RateLimited         the remote asked us to slow down; may carry a policy name
    │   └── SourceError         the source answered with nothing usable
    ├── TargetPaused            hold this target's work until ``until`` (daily quota, outage)
    └── SkippableError          this one record is bad; set it aside, the rest flow on
        └── MalformedMessage    a source payload we cannot turn into a message

    TryAgain                    not an error: an attempt asks its retry loop to go round
                                (syncd.backoff.RetryPolicy); it never leaves the loop

    BaseException
    └── ClaimLost               not an error: stop a connector mid-batch, its claim is gone
                                (a BaseException so no ``except Exception`` retries past it)

Connectors translate their client library's exceptions into these at the boundary, so the
daemon never needs to know what simple-salesforce or hubspot-api-client raise. A connector
may subclass them for its own cases (``syncd_hubspot``'s ``InDoubt`` is a RetriableError).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum

__all__ = [
    "AuthError",
    "CheckFailed",
    "ClaimLost",
    "ConfigError",
    "FatalError",
    "MalformedMessage",
    "PauseKind",
    "RateLimited",
    "RetriableError",
    "SkippableError",
    "SourceError",
    "StateFileError",
    "SyncdError",
    "TargetPaused",
    "TryAgain",
]


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class FatalError(SyncdError):
    """Retrying will not help: stop the job (or pause the target) and tell an operator."""


class ConfigError(FatalError):
    """The configuration or the command line is wrong. ``key`` names the offending setting."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class StateFileError(ConfigError):
    """The state file, a side file or their directory cannot be used (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, key="syncd.database_url")


class AuthError(FatalError):
    """The source or a CRM refused our credentials. ``where`` names which one."""

    def __init__(self, message: str, *, where: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


class CheckFailed(FatalError):
    """A check step found something wrong; the message is the CheckResult detail."""


class RetriableError(SyncdError):
    """A transient failure. ``retry_after`` (seconds) is the remote's hint, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class RateLimited(RetriableError):
    """HTTP 429 or an equivalent. ``policy`` is e.g. HubSpot's ``policyName`` (``DAILY``...)."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, policy: str | None = None
    ) -> None:
        self.policy = policy
        super().__init__(message, retry_after=retry_after)

    @property
    def daily(self) -> bool:
        """True when a daily quota is spent: pause the target for hours, not seconds."""
        return (self.policy or "").upper() == "DAILY"


class SourceError(RetriableError):
    """The source answered, but not with something usable: ``{"success": false}``, an
    unknown envelope, invalid JSON. Retrying later is the only sensible reaction.
    ``info`` is the service's own explanation, when it gave one."""

    def __init__(self, message: str, *, info: str = "", retry_after: float | None = None) -> None:
        self.info = info
        super().__init__(message, retry_after=retry_after)


class PauseKind(StrEnum):
    """Why a target is paused."""

    DAILY = "daily"  # the daily API quota is spent
    OUTAGE = "outage"  # its circuit breaker is open


class TargetPaused(SyncdError):
    """The target cannot take work now; ``until`` says when to try, ``kind`` why."""

    def __init__(
        self, target: str, until: datetime, reason: str, kind: PauseKind = PauseKind.DAILY
    ) -> None:
        self.target, self.until, self.reason, self.kind = target, until, reason, kind
        super().__init__(f"{target} paused until {until.isoformat()}: {reason}")


class SkippableError(SyncdError):
    """One record is bad. The caller quarantines it with this reason and carries on."""


class MalformedMessage(SkippableError):
    """A source payload that cannot become a :class:`syncd.models.Message`."""

    def __init__(self, reason: str, *, raw: object = None) -> None:
        self.reason = reason
        self.raw = raw
        super().__init__(reason)


class ClaimLost(BaseException):
    """Raised into a connector, through its request observer
    (:func:`syncd.deliver.check_claim`), when the batch it is applying has been taken over by
    another worker: it must not send one more write. A BaseException, like
    KeyboardInterrupt, so that no connector's ``except Exception`` turns it into a retry of
    the request."""


class TryAgain(Exception):
    """Raised by an attempt that may be repeated. ``error`` is raised in its place when no
    tries are left; ``retry_after`` is the server's ``Retry-After`` for this answer.
    ``pause``, when given, takes the wait instead of sleeping (a client-side rate limiter
    that holds back every thread, not just this one)."""

    def __init__(
        self,
        error: BaseException,
        *,
        retry_after: float | None = None,
        pause: Callable[[float], object] | None = None,
    ) -> None:
        self.error = error
        self.retry_after = retry_after
        self.pause = pause
        super().__init__(str(error))

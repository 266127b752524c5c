"""Errors, grouped by what the runtime must *do* about them.

::

    SyncdError
    ├── FatalError              stop this job; retrying will not help
    │   ├── ConfigError         bad configuration or usage            (exit 2)
    │   └── AuthError           the source or a CRM refused our credentials (exit 3)
    ├── RetriableError          try again later (429, 5xx, network, locked database)
    │   └── RateLimited         the remote asked us to slow down; may carry a policy name
    └── SkippableError          this one record is bad; set it aside, the rest flow on
        └── MalformedMessage    a source payload we cannot turn into a message

Connectors translate their client library's exceptions into these at the boundary, so the
daemon never needs to know what simple-salesforce or hubspot-api-client raise.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "FatalError",
    "MalformedMessage",
    "RateLimited",
    "RetriableError",
    "SkippableError",
    "SyncdError",
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


class AuthError(FatalError):
    """The source or a CRM refused our credentials. ``where`` names which one."""

    def __init__(self, message: str, *, where: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


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


class SkippableError(SyncdError):
    """One record is bad. The caller quarantines it with this reason and carries on."""


class MalformedMessage(SkippableError):
    """A source payload that cannot become a :class:`syncd.models.Message`."""

    def __init__(self, reason: str, *, raw: object = None) -> None:
        self.reason = reason
        self.raw = raw
        super().__init__(reason)

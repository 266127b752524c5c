"""The public connector API: the one module of syncd a connector imports.

Everything a connector needs is here: the Protocol it implements (``Connector``), the context
it is built with, the models it exchanges with the core, the errors it raises, and the helpers
that keep every connector consistent (phone and name keys, the rate limiter, secret
registration). The rest of ``syncd`` is private to the daemon and may change at any time.

A connector is a factory registered under the versioned entry-point group
``syncd.connectors.v1``::

    [project.entry-points."syncd.connectors.v1"]
    mycrm = "syncd_mycrm:create"

See ``connectors/README.md`` for the guide to writing one.
"""

from __future__ import annotations

from syncd.backoff import RetryPolicy, TryAgain
from syncd.batches import chunks
from syncd.connector import Connector, PlanProgress, RequestObserver, TargetContext
from syncd.errors import (
    AuthError,
    CheckFailed,
    ConfigError,
    RateLimited,
    RetriableError,
    SyncdError,
)
from syncd.logging import register_secret
from syncd.match.names import normalize_company, normalize_person, same_company
from syncd.match.phones import format_variants, national_digits, normalize_phone, same_number
from syncd.models import (
    Action,
    ActivityRef,
    ActivitySpec,
    CheckResult,
    CrmRecord,
    CrmUser,
    KeyKind,
    MatchKey,
    Outcome,
    Plan,
    SetupStep,
)
from syncd.ratelimit import RateLimiter

__all__ = [
    "Action",
    "ActivityRef",
    "ActivitySpec",
    "AuthError",
    "CheckFailed",
    "CheckResult",
    "ConfigError",
    "Connector",
    "CrmRecord",
    "CrmUser",
    "KeyKind",
    "MatchKey",
    "Outcome",
    "Plan",
    "PlanProgress",
    "RateLimited",
    "RateLimiter",
    "RequestObserver",
    "RetriableError",
    "RetryPolicy",
    "SetupStep",
    "SyncdError",
    "TargetContext",
    "TryAgain",
    "chunks",
    "format_variants",
    "national_digits",
    "normalize_company",
    "normalize_person",
    "normalize_phone",
    "register_secret",
    "same_company",
    "same_number",
]

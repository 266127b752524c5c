"""The public connector API: the one module of syncd a connector imports.

A connector is a package that registers a factory under the *versioned* entry-point group
``syncd.connectors.v1``; the factory gets a :class:`TargetContext` (the target's name, its
config table, a request observer) and returns a :class:`Connector`::

    [project.entry-points."syncd.connectors.v1"]
    mycrm = "syncd_mycrm:create"

Everything else in ``syncd`` is private to the daemon and may change in any release; what is
here changes only with a new group (``syncd.connectors.v2``), so an old connector fails
loudly at load instead of subtly at run time. ``connectors/README.md`` is the guide.

The protocol and its optional capabilities
    :class:`Connector` is required. The capabilities are optional, and the daemon asks for
    each with ``isinstance`` (they are runtime-checkable Protocols; nothing is looked up by
    name): :class:`SetsUp` (``syncd setup`` creates fields), :class:`ListsOwners` (owner
    rules), :class:`LinksRecords` (the console's links into the CRM),
    :class:`ReportsQuota` (the API-usage gauge), :class:`RecordsPlans` (the dry-run
    wrapper's plans), :class:`ThreadSafe` (one instance serves several batches in flight)
    and :class:`LooksUpInTurn` (those batches still look up one at a time).

The models
    The core asks with :class:`MatchKey` (a :class:`KeyKind` and a normalised value) and
    :class:`Plan` (what to write: an :class:`Action`, the fields, an :class:`ActivitySpec`);
    a connector answers with :class:`CrmRecord`, :class:`Outcome`, :class:`ActivityRef`,
    :class:`CheckResult`, :class:`SetupStep` and :class:`CrmUser`. :class:`PlanProgress` is
    the mutable :class:`Outcome` a connector fills in while it works through a batch.

The errors
    A rejection of one record is an :class:`Outcome` (``ok=False``), never an exception.
    An exception concerns the whole call and says what the daemon must *do*::

        SyncdError
        ├── FatalError             stop: nothing works until a person acts
        │   ├── ConfigError        the target's options are wrong (exit 2)
        │   ├── AuthError          the credentials were refused: pause the target (exit 3)
        │   └── CheckFailed        a ``syncd check`` step found something wrong
        └── RetriableError         try again later (``retry_after`` seconds when known)
            └── RateLimited        the CRM said "too many" (``daily`` for a spent quota)

The helpers
    Shared so every connector agrees with the matcher: phone keys
    (:func:`normalize_phone`, :func:`national_digits`, :func:`same_number`,
    :func:`format_variants` for exact-match queries), names (:func:`normalize_company`,
    :func:`normalize_person`, :func:`same_company`), a :class:`RateLimiter`, secrets
    (:func:`read_secret`, :meth:`TargetContext.secret`; :func:`register_secret` keeps a
    value out of every log line), :func:`connector_logger`, :func:`chunks` (batches of a
    CRM's request cap) and the one retry policy every loop uses (:class:`RetryPolicy`; an
    attempt raises :class:`TryAgain` to go round).

Testing
    The contract suite every connector passes is a pytest plugin shipped with
    ``syncd[sandbox]``: see :mod:`syncd.contract`.
"""

from __future__ import annotations

from syncd.backoff import RetryPolicy
from syncd.batches import chunks
from syncd.connector import (
    Connector,
    ConnectorFactory,
    LinksRecords,
    ListsOwners,
    LooksUpInTurn,
    PlanProgress,
    RecordsPlans,
    ReportsQuota,
    RequestObserver,
    SetsUp,
    TargetContext,
    ThreadSafe,
    read_secret,
)
from syncd.errors import (
    AuthError,
    CheckFailed,
    ConfigError,
    FatalError,
    RateLimited,
    RetriableError,
    SyncdError,
    TryAgain,
)
from syncd.logging import connector_logger, register_secret
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
    SetupState,
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
    "ConnectorFactory",
    "CrmRecord",
    "CrmUser",
    "FatalError",
    "KeyKind",
    "LinksRecords",
    "ListsOwners",
    "LooksUpInTurn",
    "MatchKey",
    "Outcome",
    "Plan",
    "PlanProgress",
    "RateLimited",
    "RateLimiter",
    "RecordsPlans",
    "ReportsQuota",
    "RequestObserver",
    "RetriableError",
    "RetryPolicy",
    "SetsUp",
    "SetupState",
    "SetupStep",
    "SyncdError",
    "TargetContext",
    "ThreadSafe",
    "TryAgain",
    "chunks",
    "connector_logger",
    "format_variants",
    "national_digits",
    "normalize_company",
    "normalize_person",
    "normalize_phone",
    "read_secret",
    "register_secret",
    "same_company",
    "same_number",
]

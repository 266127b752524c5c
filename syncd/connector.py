"""The connector extension point: a Protocol plus an entry-point registry.

syncd never imports a connector by name. A connector package registers a factory under the
*versioned* entry-point group ``syncd.connectors.v1``; the factory receives a
:class:`TargetContext` and returns an object satisfying :class:`Connector`. A breaking change
to this Protocol gets a new group (``v2``) so old plugins fail loudly instead of subtly.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from syncd.errors import ConfigError
from syncd.models import (
    ActivityRef,
    CheckResult,
    CrmRecord,
    CrmUser,
    MatchKey,
    Outcome,
    Plan,
    SetupStep,
)
from syncd.ratelimit import RateLimiter

__all__ = [
    "ENTRY_POINT_GROUP",
    "Connector",
    "ConnectorFactory",
    "LinksRecords",
    "ListsOwners",
    "PlanProgress",
    "RecordsPlans",
    "ReportsQuota",
    "RequestObserver",
    "SetsUp",
    "TargetContext",
    "available",
    "load_factory",
    "read_secret",
]

ENTRY_POINT_GROUP = "syncd.connectors.v1"

# Called by connectors for every HTTP request they make: (target, endpoint, status, waited_s).
RequestObserver = Callable[[str, str, int, float], None]


def read_secret(options: Mapping[str, Any], name: str) -> str | None:
    """Read secret ``name`` from ``<name>_env`` (a variable name) or ``<name>_file`` (a path).

    Inline secrets are accepted too, but never required; ``syncd check`` warns about them.
    """
    env_name = options.get(f"{name}_env")
    if isinstance(env_name, str) and env_name:
        value = os.environ.get(env_name)
        if value:
            return value.strip()
    file_name = options.get(f"{name}_file")
    if isinstance(file_name, str) and file_name:
        try:
            # "$CREDENTIALS_DIRECTORY/token": one config for every systemd unit's credentials.
            path = Path(os.path.expandvars(file_name)).expanduser()
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            reason = f"cannot read secret file: {exc.strerror}"
            raise ConfigError(reason, key=f"{name}_file") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError("secret file is not UTF-8 text", key=f"{name}_file") from exc
    inline = options.get(name)
    if isinstance(inline, str) and inline:
        return inline
    return None


_LIMITERS_LOCK = threading.Lock()


def _ignore_request(target: str, endpoint: str, status: int, waited: float) -> None:
    return None


@dataclass(frozen=True)
class TargetContext:
    """Everything a connector factory gets. ``options`` is the target's config table."""

    name: str
    options: Mapping[str, Any]
    default_region: str = "US"
    observe: RequestObserver = field(default=_ignore_request)
    # The target's rate limiters by name, one dict for every instance of the target's
    # connector (syncd makes one per batch in flight when a connector is not thread_safe).
    limiters: dict[str, RateLimiter] = field(default_factory=dict, compare=False, repr=False)

    def secret(self, name: str) -> str | None:
        return read_secret(self.options, name)

    def rate_limiter(self, name: str, max_calls: int, period: float) -> RateLimiter:
        """The target's limiter called ``name``, made on first use: every instance of the
        connector built for this target gets the same one, so together they stay inside
        the CRM's limit (the CRM counts the account, not the instance)."""
        with _LIMITERS_LOCK:
            limiter = self.limiters.get(name)
            if limiter is None:
                limiter = self.limiters[name] = RateLimiter(max_calls, period)
            return limiter


@runtime_checkable
class Connector(Protocol):
    """A CRM target. Every method is batch-first; rejections of one record are Outcomes.

    Errors that concern the whole call cross the boundary as :mod:`syncd.errors` types:
    ``AuthError`` (pause the target), ``RetriableError``/``RateLimited`` (retry later).
    """

    name: str

    def lookup(self, keys: Sequence[MatchKey]) -> Mapping[MatchKey, Sequence[CrmRecord]]:
        """Candidates for each key. Phone candidates are post-filtered by E.164 equality."""
        ...

    def read(self, kind: str, ids: Sequence[str]) -> Mapping[str, CrmRecord]:
        """Current state of records by id; an id missing from the answer is gone (deleted)."""
        ...

    def apply(self, plans: Sequence[Plan]) -> Sequence[Outcome]:
        """Carry out plans: contact writes first (batched), then activities (batched)."""
        ...

    def find_activities(self, markers: Sequence[str]) -> Mapping[str, ActivityRef]:
        """Activities already in the CRM for these markers (immediately consistent read)."""
        ...

    def check(self) -> Sequence[CheckResult]:
        """Reach the CRM with the configured credentials and report what works."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class SetsUp(Protocol):
    """Optional capability: the connector can create the fields/properties it needs."""

    def setup(self, *, dry_run: bool) -> Sequence[SetupStep]:
        """Create what is missing (idempotently) or, with ``dry_run``, only say what would be
        created. Steps it lacks the permission for come back as ``manual`` with instructions."""
        ...


@runtime_checkable
class ListsOwners(Protocol):
    """Optional capability: the connector can list the CRM users who may own work.

    Connectors that have it also read each record's owner into ``CrmRecord.owner_id`` and
    write ``Plan.owner_id`` on the activity and emergency task (and, with
    ``Plan.owner_on_record``, on a record the plan creates). The core caches the list for
    ``owners_refresh_seconds``, so implement it as one plain read of every user, inactive
    and archived ones included (marked ``active=False``).
    """

    def owners(self) -> Sequence[CrmUser]: ...


@runtime_checkable
class ReportsQuota(Protocol):
    """Optional capability: the connector knows how much of the CRM's API quota is spent
    (Salesforce's ``Sforce-Limit-Info``); the daemon exports it as a gauge."""

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """``(used, limit)`` as of the last answer; None before the first one."""
        ...


@runtime_checkable
class LinksRecords(Protocol):
    """Optional capability: the connector knows where a record is shown in the CRM's own web
    pages; the console links review candidates there (a target's ``console_record_url``
    takes precedence). Build the address from what the connector already knows: no request."""

    def record_url(self, kind: str, record_id: str) -> str | None: ...


@runtime_checkable
class RecordsPlans(Protocol):
    """Optional capability: the connector keeps the plans it was asked to apply instead of
    writing them (the ``dry-run`` wrapper); ``syncd run --dry-run`` prints them."""

    @property
    def plans(self) -> Sequence[Plan]: ...


@runtime_checkable
class ThreadSafe(Protocol):
    """Optional capability: one instance may serve several batches of its target at once (its
    caches, sessions and limiters are locked). Without it the daemon builds one instance per
    batch in flight, or delivers one batch at a time."""

    thread_safe: bool


@runtime_checkable
class LooksUpInTurn(Protocol):
    """Optional capability: batches in flight together still look up one at a time (a CRM
    whose searches are paced anyway, and whose next lookup reuses what the last one found)."""

    lookups_in_turn: bool


def shares_instance(connector: object) -> bool:
    """Whether ``connector`` says it may serve several batches at once."""
    return isinstance(connector, ThreadSafe) and connector.thread_safe is True


def looks_up_in_turn(connector: object) -> bool:
    return isinstance(connector, LooksUpInTurn) and connector.lookups_in_turn is True


class ConnectorFactory(Protocol):
    def __call__(self, context: TargetContext) -> Connector: ...


def available() -> dict[str, str]:
    """Registered connector types -> the entry point's value, for ``check`` and errors."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_factory(type_name: str) -> ConnectorFactory:
    """The factory registered as ``type_name``; a ConfigError lists the known types."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=type_name):
        factory: ConnectorFactory = ep.load()
        return factory
    known = ", ".join(sorted(available())) or "none"
    raise ConfigError(f"unknown connector type {type_name!r} (installed: {known})", key="type")


@dataclass(init=False)
class PlanProgress(Outcome):
    """The :class:`Outcome` of one plan while a connector works through a batch.

    Connectors fill it in step by step (contact written, activity logged, or the first
    failure, which wins) and hand the daemon :meth:`outcome`, a snapshot. Subclasses add
    their own bookkeeping as ``@dataclass(init=False)`` fields with defaults.
    """

    plan: Plan = field(kw_only=True)  # set by __init__; kw_only: it follows defaulted fields

    def __init__(
        self, plan: Plan, record_id: str | None = None, record_kind: str = "contact"
    ) -> None:
        Outcome.__init__(
            self, plan.delivery_id, ok=True, record_id=record_id, record_kind=record_kind
        )
        self.plan = plan

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def marker(self) -> str:
        return self.plan.activity.marker

    def fail(
        self,
        error: str,
        *,
        retriable: bool = False,
        retry_after: float | None = None,
        gone: Iterable[str] = (),
    ) -> None:
        """Record a failure; the first one is the cause, later ones only add gone ids."""
        if self.error is None:
            self.ok, self.error = False, error
            self.retriable, self.retry_after = retriable, retry_after
        self.add_gone(gone)

    def add_gone(self, ids: Iterable[str]) -> None:
        fresh = [i for i in dict.fromkeys(ids) if i and i not in self.gone]
        self.gone = (*self.gone, *fresh)

    def outcome(self) -> Outcome:
        """What the daemon records: the Outcome's fields as they stand now."""
        return Outcome(**{f.name: getattr(self, f.name) for f in fields(Outcome)})

"""The CRM's users, read through :class:`~syncd.connector.ListsOwners` and reused for
``owners_refresh_seconds`` (one read an hour by default keeps the request budget)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable

import structlog

from syncd.connector import ListsOwners
from syncd.errors import RetriableError
from syncd.owners.rules import OwnerDirectory

__all__ = ["directory_for", "forget"]

log = structlog.get_logger(__name__)

_lock = threading.Lock()
# Keyed by the connector object's id (connectors need not be hashable): a daemon keeps one
# per target for its life. The entry holds a weak reference to tell a new object that got a
# dead one's id apart.
_cache: dict[int, tuple[Callable[[], object], float, OwnerDirectory]] = {}


def _get(connector: object) -> tuple[float, OwnerDirectory] | None:
    entry = _cache.get(id(connector))
    if entry is None or entry[0]() is not connector:
        return None
    return entry[1], entry[2]


def _put(connector: object, at: float, directory: OwnerDirectory) -> None:
    key = id(connector)
    try:
        ref: Callable[[], object] = weakref.ref(connector, lambda _: _cache.pop(key, None))
    except TypeError:  # no weak references to this type: keep it alive with its entry
        ref = lambda: connector  # noqa: E731
    _cache[key] = (ref, at, directory)


def directory_for(
    connector: object,
    refresh_seconds: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> OwnerDirectory | None:
    """The connector's users, from the cache while fresh; None when it cannot list them.

    A failed refresh keeps using the users read before (an hour-old list beats holding every
    message); with nothing read before, the error goes up and the batch is retried.
    """
    if not isinstance(connector, ListsOwners):
        return None
    now = clock()
    with _lock:
        cached = _get(connector)
    if cached is not None and now - cached[0] < refresh_seconds:
        return cached[1]
    try:
        directory = OwnerDirectory.of(connector.owners())
    except RetriableError as exc:
        if cached is None:
            raise
        log.warning("owner list refresh failed; using the previous one", error=str(exc))
        return cached[1]
    with _lock:
        _put(connector, now, directory)
    return directory


def forget(connector: object) -> None:
    """Drop the cached users of ``connector`` (tests; an operator changed users)."""
    with _lock:
        _cache.pop(id(connector), None)

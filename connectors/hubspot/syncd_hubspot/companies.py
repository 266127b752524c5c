"""HubSpot's companies, held in memory and indexed by normalized name.

Finding "the company record for Initech, LLC" by search costs one request per five names
(one ``CONTAINS_TOKEN`` group each) against the search limit of ~5 requests a second, and
every new caller who names a company needs it. Companies are few beside contacts and
syncd never creates them, so the directory lists them all once (100 per request, under the
general limit, not the search limit), answers every later company key locally, and lists
them again every ``refresh`` seconds: a company added or renamed in the portal is seen
within that time, a deleted one is dropped then (a link to it in between is reported as
gone by the writer, as before).

A portal with more companies than ``max_companies`` is not listed: the directory says so
(:meth:`CompanyDirectory.available` is False) and company keys go back to search.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from syncd.plugin import RetriableError, connector_logger, normalize_company
from syncd_hubspot.records import COMPANY_PROPERTIES
from syncd_hubspot.transport import Transport

__all__ = ["CompanyDirectory"]

log = connector_logger("hubspot")

PAGE = 100  # the most a list page returns


class CompanyDirectory:
    """Normalized company name -> the raw company objects carrying it. Thread-safe."""

    def __init__(
        self,
        transport: Transport,
        *,
        max_companies: int,
        refresh: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._t = transport
        self._max = max_companies
        self._refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._by_name: dict[str, list[dict[str, Any]]] = {}
        self._loaded_at: float | None = None
        self._too_many = max_companies <= 0

    def available(self) -> bool:
        """True when company keys can be answered here (loading the list if it is due)."""
        with self._lock:
            if self._too_many:
                return False
            if self._loaded_at is None or self._clock() - self._loaded_at >= self._refresh:
                self._load()
            return not self._too_many

    def find(self, names: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """The companies whose normalized name is each of ``names`` (call :meth:`available`
        first)."""
        with self._lock:
            found: dict[str, list[dict[str, Any]]] = {}
            for name in names:
                wanted = normalize_company(name)
                found[name] = list(self._by_name.get(wanted, ())) if wanted else []
            return found

    def _load(self) -> None:
        started = self._clock()
        by_name: dict[str, list[dict[str, Any]]] = {}
        count = 0
        after: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "limit": PAGE,
                "properties": list(COMPANY_PROPERTIES),
                "archived": False,
            }
            if after:
                kwargs["after"] = after
            result = self._t.call(
                "companies.list", self._t.objects_basic.get_page, "companies", **kwargs
            )
            if not result.ok:
                raise RetriableError(
                    f"HubSpot companies list refused ({result.status} {result.category}): "
                    f"{result.message}"
                )
            for obj in result.results():
                count += 1
                props = _props(obj)
                name = normalize_company(str(props.get("name") or ""))
                if name:
                    # id and the listed properties only: thousands are held for minutes.
                    kept = {k: v for k, v in props.items() if k in COMPANY_PROPERTIES and v}
                    by_name.setdefault(name, []).append({"id": obj.get("id"), "properties": kept})
            if count > self._max:
                # Company keys are searched from now on, not listed.
                log.info("hubspot.companies_too_many_to_list", over=self._max)
                self._too_many = True
                self._by_name = {}
                return
            after = result.next_after()
            if not after:
                break
        self._by_name = by_name
        self._loaded_at = started
        log.debug("hubspot.companies_listed", companies=count)


def _props(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = obj.get("properties")
    return raw if isinstance(raw, Mapping) else {}

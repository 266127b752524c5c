"""The CRM side of a review item: each candidate record read through its connector's
``read()``, the fields it shares with the message, and a link to it in the CRM.

Reads are cached for a minute: a page view refreshed every few seconds must not become a
stream of CRM requests. A connector that fails leaves the page readable (the error is shown).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import structlog

from syncd.config import Settings, TargetSettings
from syncd.connector import Connector, LinksRecords, TargetContext, load_factory
from syncd.match.keys import extract_keys
from syncd.match.names import same_company, same_person
from syncd.models import CrmRecord
from syncd.store.codec import message_from_row

__all__ = ["Candidate", "CandidateReader", "record_url"]

_log = structlog.get_logger(__name__)
_TTL = 60.0
# Kinds a review candidate can be: contacts first, then leads (Salesforce) for the rest.
_KINDS = ("contact", "lead")


@dataclass(frozen=True)
class Candidate:
    id: str
    kind: str
    record: CrmRecord | None  # None: not found in the CRM (deleted or merged since)
    matched: frozenset[str] = field(default_factory=frozenset)  # phone, email, name, company
    url: str | None = None


def record_url(target: TargetSettings, connector: object, record_id: str, kind: str) -> str | None:
    """The CRM page of a record: ``console_record_url`` when configured ("{id}", "{kind}"),
    else the connector's own link (:class:`~syncd.connector.LinksRecords`); None when
    neither knows."""
    if target.console_record_url:
        template = target.console_record_url
        return template.replace("{id}", quote(record_id, safe="")).replace("{kind}", kind)
    if isinstance(connector, LinksRecords):
        return connector.record_url(kind, record_id)
    return None


class CandidateReader:
    """Reads candidate records per target through the target's own connector."""

    def __init__(
        self,
        settings: Settings,
        factory: Callable[[TargetSettings], Connector] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._factory = factory or _connector
        self._clock = clock
        self._lock = threading.Lock()
        self._connectors: dict[str, Connector] = {}
        self._cache: dict[tuple[str, str], tuple[float, CrmRecord | None, str]] = {}

    def candidates(
        self, target: str, ids: Sequence[str], message: Mapping[str, Any], account: str
    ) -> tuple[list[Candidate], str | None]:
        """The candidates in the order given, and an error text when the CRM could not be
        read."""
        settings = self.settings.targets.get(target)
        if settings is None:
            return [Candidate(i, "contact", None) for i in ids], f"unknown target {target!r}"
        found, error = self._read(settings, list(ids))
        region = (
            self.settings.accounts[account].region if account in self.settings.accounts else "US"
        )
        try:
            connector: Connector | None = self._connector_for(settings)
        except Exception:  # no connector, no link; the read above said what is wrong
            connector = None
        out = []
        for record_id in ids:
            record, kind = found.get(record_id, (None, "contact"))
            matched = _matched(message, record, region, settings) if record else frozenset()
            url = record_url(settings, connector, record_id, kind)
            out.append(Candidate(record_id, kind, record, matched, url))
        return out, error

    def close(self) -> None:
        with self._lock:
            connectors, self._connectors = self._connectors, {}
        for connector in connectors.values():
            connector.close()

    def _read(
        self, target: TargetSettings, ids: list[str]
    ) -> tuple[dict[str, tuple[CrmRecord | None, str]], str | None]:
        now = self._clock()
        found: dict[str, tuple[CrmRecord | None, str]] = {}
        with self._lock:
            for record_id in ids:
                hit = self._cache.get((target.name, record_id))
                if hit and now - hit[0] < _TTL:
                    found[record_id] = (hit[1], hit[2])
        missing = [i for i in ids if i not in found]
        error = None
        if missing:
            try:
                connector = self._connector_for(target)
                for kind in _KINDS:
                    if not missing:
                        break
                    try:
                        answer = connector.read(kind, missing)
                    except Exception as exc:
                        if kind == _KINDS[0]:
                            raise
                        _log.debug(
                            "console read failed", target=target.name, kind=kind, exc_info=exc
                        )
                        continue
                    for record_id, record in answer.items():
                        found[record_id] = (record, record.kind or kind)
                    missing = [i for i in missing if i not in found]
            except Exception as exc:
                _log.warning(
                    "console could not read candidates", target=target.name, error=str(exc)
                )
                error = f"could not read the candidates from {target.name}: {type(exc).__name__}"
            else:
                for record_id in missing:
                    found[record_id] = (None, "contact")
            if error is None:  # a failed read is asked again next time
                with self._lock:
                    for record_id, (held, kind) in found.items():
                        self._cache[(target.name, record_id)] = (now, held, kind)
        return found, error

    def _connector_for(self, target: TargetSettings) -> Connector:
        with self._lock:
            if target.name not in self._connectors:
                self._connectors[target.name] = self._factory(target)
            return self._connectors[target.name]


def _connector(target: TargetSettings) -> Connector:
    return load_factory(target.type)(TargetContext(name=target.name, options=target.options))


def _matched(
    message: Mapping[str, Any], record: CrmRecord, region: str, target: TargetSettings
) -> frozenset[str]:
    """The fields of ``record`` the message's caller shares, judged as the matcher judges."""
    keys = extract_keys(message_from_row("", "", dict(message), {}), region)
    out = set()
    if record.email and record.email.lower() in keys.emails:
        out.add("email")
    if set(record.phones) & {p.e164 for p in keys.phones}:
        out.add("phone")
    if keys.person and same_person(record.full_name, keys.person, target.match.name_threshold):
        out.add("name")
    if keys.company and same_company(record.company, keys.company, target.match.company_threshold):
        out.add("company")
    return frozenset(out)

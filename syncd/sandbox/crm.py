"""What every CRM emulator offers, so the demo, the benchmark and the connector contract suite
can drive any of them without naming one.

Emulators register under the entry-point group ``syncd.emulators.v1`` with the same name as
their connector type in ``syncd.connectors.v1``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, TypedDict, Unpack, runtime_checkable

from syncd.sandbox.http import Faults

__all__ = [
    "EMULATOR_GROUP",
    "ContactSeed",
    "ContractWorld",
    "CrmEmulator",
    "StoredActivity",
    "StoredContact",
    "emulator_types",
    "load_emulator",
]

EMULATOR_GROUP = "syncd.emulators.v1"


class ContactSeed(TypedDict, total=False):
    """What :meth:`CrmEmulator.seed_contact` takes (each key optional, text empty by default);
    an emulator may take more keys of its own."""

    first_name: str
    last_name: str
    email: str
    phone: str
    company: str
    company_id: str | None


@dataclass(frozen=True)
class StoredContact:
    """A contact or lead as the emulator holds it (phone exactly as stored, e.g. reformatted)."""

    id: str
    kind: str  # "contact" | "lead"
    first_name: str
    last_name: str
    email: str
    phone: str
    company: str
    company_id: str | None


@dataclass(frozen=True)
class StoredActivity:
    """A note / call / task as the emulator holds it; ``marker`` is the syncd marker found in it."""

    id: str
    record_id: str | None
    marker: str | None
    subject: str
    body: str
    high_priority: bool


@runtime_checkable
class ContractWorld(Protocol):
    """The CRM side of the connector contract (``syncd.contract``): what the connector under
    test talks to, seeded and inspected directly (never through the connector). Every
    emulator is one; an in-memory CRM for a connector to one can be too.

    ``search_lag`` (seconds) is how long a write stays out of the CRM's *search* results;
    the suite sets it to a minute, so what a connector wrote is only findable through its
    immediately consistent reads. Requests are counted: ``total_requests`` all of them,
    :meth:`write_requests` those that changed state (creates, updates, associations).
    """

    search_lag: float

    @property
    def total_requests(self) -> int: ...

    def start(self) -> object: ...

    def stop(self) -> None: ...

    def reset_counts(self) -> None: ...

    def connector_options(self) -> dict[str, Any]:
        """A target options table (as in the TOML file, without ``type``) that points the
        connector at this world with valid sandbox credentials given inline."""
        ...

    def seed_company(self, name: str) -> str: ...

    def seed_contact(self, **fields: Unpack[ContactSeed]) -> str:
        """Create a record directly (no request counted, visible to search at once)."""
        ...

    def delete_record(self, record_id: str) -> None: ...

    def contacts(self) -> Sequence[StoredContact]: ...

    def activities(self) -> Sequence[StoredActivity]: ...

    def write_requests(self) -> int: ...


@runtime_checkable
class CrmEmulator(ContractWorld, Protocol):
    """A CRM emulator on loopback: a contract world with an HTTP address, counts per
    endpoint and injectable faults."""

    name: str
    counts: Counter[str]
    faults: Faults
    latency: float  # seconds added to every answer (syncd.sandbox.http.Emulator)

    @property
    def base_url(self) -> str: ...

    def start(self) -> CrmEmulator: ...


def emulator_types() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=EMULATOR_GROUP))


def load_emulator(type_name: str, **kwargs: Any) -> CrmEmulator:
    for ep in entry_points(group=EMULATOR_GROUP, name=type_name):
        cls = ep.load()
        emulator: CrmEmulator = cls(**kwargs)
        return emulator
    raise KeyError(f"no emulator registered for {type_name!r}")

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
class CrmEmulator(Protocol):
    name: str
    counts: Counter[str]
    faults: Faults
    latency: float  # seconds added to every answer (syncd.sandbox.http.Emulator)
    search_lag: float  # seconds before a write shows in search results

    @property
    def base_url(self) -> str: ...

    @property
    def total_requests(self) -> int: ...

    def start(self) -> CrmEmulator: ...

    def stop(self) -> None: ...

    def reset_counts(self) -> None: ...

    def connector_options(self) -> dict[str, Any]:
        """A target options table (as in the TOML file, without ``type``) that points the
        connector at this emulator with valid sandbox credentials given inline."""
        ...

    def seed_company(self, name: str) -> str: ...

    def seed_contact(self, **fields: Unpack[ContactSeed]) -> str:
        """Create a record directly (no request counted, visible to search at once)."""
        ...

    def delete_record(self, record_id: str) -> None: ...

    def contacts(self) -> Sequence[StoredContact]: ...

    def activities(self) -> Sequence[StoredActivity]: ...

    def write_requests(self) -> int:
        """Requests that changed CRM state (creates, updates, associations)."""
        ...


def emulator_types() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=EMULATOR_GROUP))


def load_emulator(type_name: str, **kwargs: Any) -> CrmEmulator:
    for ep in entry_points(group=EMULATOR_GROUP, name=type_name):
        cls = ep.load()
        emulator: CrmEmulator = cls(**kwargs)
        return emulator
    raise KeyError(f"no emulator registered for {type_name!r}")

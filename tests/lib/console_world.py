"""A sandbox with work for a person: review items and dead letters, made the way they happen.

One caller is known twice to every CRM (two records, same name and phone), so each of their
messages is held for review; Salesforce is down for the first cycle and ``max_attempts`` is 1,
so every Salesforce delivery dies. Used by the console tests, in and out of the browser.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.config import Settings, parse_settings
from syncd.daemon import Daemon
from syncd.sandbox.generate import Caller, callers_of
from syncd.sandbox.world import SandboxWorld
from syncd.store.store import Store

__all__ = ["TOKEN", "ConsoleWorld", "console_world", "known_twice"]

TOKEN = "operator-token-for-tests-7f3a"


@dataclass
class ConsoleWorld:
    world: SandboxWorld
    settings: Settings
    daemon: Daemon
    caller: Caller
    twins: dict[str, list[str]]  # target -> the two records of the caller known twice
    held: list[str]  # message ids of the caller known twice
    doc: dict[str, Any]  # the config document the settings came from

    @property
    def store(self) -> Store:
        return self.daemon.store

    def settings_with(self, **daemon: Any) -> Settings:
        """These settings with other ``[syncd]`` keys (None removes a key)."""
        doc = copy.deepcopy(self.doc)
        doc["syncd"].update(daemon)
        doc["syncd"] = {k: v for k, v in doc["syncd"].items() if v is not None}
        return parse_settings(doc, environ={})


def known_twice(
    world: SandboxWorld, by_caller: dict[str, int]
) -> tuple[Caller, dict[str, list[str]]]:
    """A caller with a phone and messages, seeded twice into every CRM (two records, same
    name and phone): their messages are ambiguous. Returns the caller and, per target, the
    two record ids."""
    caller = next(c for c in world.callers if c.e164 and c.index in set(by_caller.values()))
    assert caller.e164 is not None
    twins = {
        name: [
            emulator.seed_contact(
                first_name=caller.first_name, last_name=caller.last_name, phone=caller.e164
            )
            for _ in range(2)
        ]
        for name, emulator in world.emulators.items()
    }
    return caller, twins


@contextmanager
def console_world(
    tmp_path: Path, *, token: str | None = TOKEN, database_url: str | None = None
) -> Iterator[ConsoleWorld]:
    with SandboxWorld(
        messages=16, callers=6, days=2, seed=11, known_share=0.0, company_share=0.0
    ) as world:
        assert world.berkshire is not None
        by_caller = callers_of(world.berkshire.messages, world.callers)
        caller, twins = known_twice(world, by_caller)
        url = database_url or f"sqlite:///{tmp_path / 'state.db'}"
        doc = world.settings_doc(url, max_attempts=1)
        if token:
            doc["syncd"]["console_token"] = token
        # A CRM link pattern for HubSpot (Salesforce links are built from its instance URL).
        doc["targets"]["hubspot"]["console_record_url"] = (
            world.emulators["hubspot"].base_url + "/contacts/{id}"
        )
        settings = parse_settings(doc, environ={})
        daemon = Daemon(settings)
        daemon.store.migrate()
        world.emulators["salesforce"].faults.outage(3600)
        try:
            daemon.run_cycle()
        finally:
            world.emulators["salesforce"].faults.clear()
        held = sorted(m for m, index in by_caller.items() if index == caller.index)
        try:
            yield ConsoleWorld(world, settings, daemon, caller, twins, held, doc)
        finally:
            daemon.close()

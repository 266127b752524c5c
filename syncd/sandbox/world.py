"""A whole sandbox world: the Berkshire simulator, every registered CRM emulator seeded with
some of the callers already known, and the Settings that point syncd at them.

Used by ``syncd demo``, ``syncd sandbox``, the benchmark and the end-to-end tests.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.config import Settings, parse_settings
from syncd.match.phones import format_variants
from syncd.sandbox.berkshire import BerkshireSimulator
from syncd.sandbox.crm import CrmEmulator, emulator_types, load_emulator
from syncd.sandbox.generate import Caller
from syncd.sandbox.team import SeedsOwners, owner_config, record_owner

__all__ = ["SandboxWorld"]

SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - the simulator's own made-up credential
SANDBOX_EMAIL = "demo@example.com"


class SandboxWorld:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager).

    ``known_share`` of the callers already exist in every CRM (phones stored in assorted
    formats), and for ``company_share`` of the rest their company exists without them, so
    the demo shows updates, creates and company links side by side.
    """

    def __init__(
        self,
        *,
        messages: int = 200,
        callers: int | None = None,
        days: int = 3,
        seed: int = 7,
        targets: Sequence[str] | None = None,
        known_share: float = 0.25,
        company_share: float = 0.2,
        end: datetime | None = None,
        emulator_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.n_messages = messages
        self.n_callers = callers or max(1, messages // 4)
        self.days = days
        self.seed = seed
        self.target_types = list(targets) if targets is not None else emulator_types()
        self.known_share = known_share
        self.company_share = company_share
        self.end = end or datetime.now(UTC)
        self.emulator_options = emulator_options or {}
        self.berkshire: BerkshireSimulator | None = None
        self.emulators: dict[str, CrmEmulator] = {}

    def start(self) -> SandboxWorld:
        self.berkshire = BerkshireSimulator.generated(
            self.n_messages,
            self.n_callers,
            days=self.days,
            seed=self.seed,
            end=self.end,
            token=SANDBOX_TOKEN,
            email=SANDBOX_EMAIL,
        ).start()
        for type_name in self.target_types:
            emulator = load_emulator(type_name, **dict(self.emulator_options.get(type_name, {})))
            emulator.start()
            self.emulators[type_name] = emulator
            self._seed(emulator, self.callers)
        return self

    @property
    def callers(self) -> list[Caller]:
        return self.berkshire.callers if self.berkshire else []

    def _seed(self, emulator: CrmEmulator, callers: Sequence[Caller]) -> None:
        rng = random.Random(self.seed)
        owners = emulator.owner_ids() if isinstance(emulator, SeedsOwners) else {}
        for caller in callers:
            roll = rng.random()
            if roll < self.known_share:
                phone = rng.choice(format_variants(caller.e164)) if caller.e164 else ""
                # Some known records lack an email the caller gives: fill_blanks fills it.
                email = caller.email or ""
                if phone and rng.random() < 0.4:
                    email = ""
                record_id = emulator.seed_contact(
                    first_name=caller.first_name,
                    last_name=caller.last_name,
                    email=email,
                    phone=phone,
                    company=caller.company,
                )
                if isinstance(emulator, SeedsOwners):  # known callers have owners (some left)
                    emulator.seed_owner(record_id, owners[record_owner(caller.index).email])
            elif roll < self.known_share + self.company_share and caller.company:
                emulator.seed_company(caller.company)

    def settings(self, database_url: str, **daemon: Any) -> Settings:
        # The sandbox must not pick up an operator's SYNCD_* variables (their database!).
        return parse_settings(self.settings_doc(database_url, **daemon), environ={})

    def settings_doc(self, database_url: str, **daemon: Any) -> dict[str, Any]:
        """The config document (as TOML would parse) pointing syncd at this sandbox."""
        if self.berkshire is None:
            raise RuntimeError("start the sandbox first")
        targets = {
            name: {"type": name, **emu.connector_options(), **owner_config()}
            for name, emu in self.emulators.items()
        }
        doc: dict[str, Any] = {
            "syncd": {
                "database_url": database_url,
                "lookback_days": self.days + 1,
                "health_address": "",
                "retry_base_seconds": 1.0,
                **daemon,
            },
            "accounts": {
                "demo": {
                    "base_url": self.berkshire.base_url,
                    "email": SANDBOX_EMAIL,
                    "token": SANDBOX_TOKEN,
                    "timezone": "America/New_York",
                    "region": "US",
                    "targets": list(targets),
                }
            },
            "targets": targets,
        }
        return doc

    def write_config(self, path: str, database_url: str, **daemon: Any) -> None:
        """Write a TOML config for ``syncd run --config`` against this sandbox."""
        from syncd.sandbox.toml import dumps

        Path(path).write_text(dumps(self.settings_doc(database_url, **daemon)), encoding="utf-8")
        os.chmod(path, 0o600)

    def crm_requests(self) -> dict[str, int]:
        return {name: emu.total_requests for name, emu in self.emulators.items()}

    def crm_writes(self) -> dict[str, int]:
        return {name: emu.write_requests() for name, emu in self.emulators.items()}

    def urls(self) -> dict[str, str]:
        out = {"berkshire": self.berkshire.base_url} if self.berkshire else {}
        out.update({name: emu.base_url for name, emu in self.emulators.items()})
        return out

    def stop(self) -> None:
        for emulator in self.emulators.values():
            emulator.stop()
        if self.berkshire is not None:
            self.berkshire.stop()

    def __enter__(self) -> SandboxWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

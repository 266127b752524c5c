"""``syncd setup --target NAME``: create the fields and properties a target needs.

The connector does the work through its optional :class:`syncd.connector.SetsUp` capability;
this module prints one line per step. Exit 0 when nothing is left to do (everything present,
or created now), 1 when a step needs an admin's hand (or, with ``--dry-run``, would be created).
"""

from __future__ import annotations

import sys
from typing import TextIO

from syncd.config import Settings
from syncd.connector import SetsUp, TargetContext, load_factory
from syncd.errors import ConfigError

__all__ = ["run_setup"]


def run_setup(settings: Settings, target: str, *, dry_run: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if target not in settings.targets:
        known = ", ".join(sorted(settings.targets)) or "none"
        raise ConfigError(f"unknown target {target!r} (configured: {known})", key="--target")
    settings_target = settings.targets[target]
    connector = load_factory(settings_target.type)(
        TargetContext(name=target, options=settings_target.options)
    )
    try:
        if not isinstance(connector, SetsUp):
            out.write(f"target {target} ({settings_target.type}): nothing to set up\n")
            return 0
        steps = list(connector.setup(dry_run=dry_run))
    finally:
        connector.close()
    for step in steps:
        out.write(f"[{step.state}] {step.name}{': ' + step.detail if step.detail else ''}\n")
    left = [s for s in steps if not s.state.done]
    if not left:
        out.write(f"target {target}: nothing left to do\n")
        return 0
    return 1

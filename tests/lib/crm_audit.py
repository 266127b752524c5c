"""Nothing lost, nothing twice, counted in the CRM emulators: the audit the sandbox
integration tests (faults, nothing twice, replicas) run after the daemon is done."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import crash_soak  # tests/perf is on pytest's pythonpath (pyproject)

from syncd.config import Settings
from syncd.connector import TargetContext, load_factory
from syncd.sandbox.generate import callers_of
from syncd.sandbox.world import SandboxWorld

__all__ = ["assert_exactly_once"]

Find = Callable[[Sequence[str]], Mapping[str, object]]


def assert_exactly_once(
    world: SandboxWorld,
    settings: Settings,
    pre: Mapping[str, set[str]],
    counts: Mapping[str, Mapping[str, int]],
    targets: Sequence[str],
    *,
    patience: float = 0.0,
) -> dict[str, crash_soak.TargetAudit]:
    """Every message on every target once; contacts only for callers who needed one.
    ``pre``: the contact ids each emulator held before the run; ``counts``: the store's
    delivery counts by target. ``patience`` seconds to wait for a CRM whose only read by
    marker is its search index (it shows writes seconds late)."""
    berkshire = world.berkshire
    assert berkshire is not None
    message_callers = callers_of(berkshire.messages, world.callers)
    audits = {}
    for name in targets:
        target = settings.targets[name]
        connector = load_factory(target.type)(TargetContext(name, target.options))
        try:
            audit = crash_soak.audit_target(
                world.emulators[name],
                pre[name],
                world.callers,
                message_callers,
                _patient(connector.find_activities, patience),
                counts.get(name, {}),
            )
        finally:
            connector.close()
        assert audit.clean, f"{name}: {audit}"
        audits[name] = audit
    return audits


def _patient(find: Find, within: float) -> Find:
    """``find`` asked again for what it has not found yet, for up to ``within`` seconds (a
    bounded wait, never a pass by timing)."""

    def patient(markers: Sequence[str]) -> Mapping[str, object]:
        found = dict(find(markers))
        deadline = time.monotonic() + within
        while len(found) < len(set(markers)) and time.monotonic() < deadline:
            time.sleep(0.5)
            found.update(find([m for m in markers if m not in found]))
        return found

    return patient

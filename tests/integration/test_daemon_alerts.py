"""Emergency alerts through the whole daemon: sent as each day window lands, never hoarded."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from syncd.alerts import Alerter
from syncd.daemon import Daemon
from syncd.demo import sandbox_settings
from syncd.ingest import IngestStats
from syncd.sandbox.world import SandboxWorld


class Recording(Alerter):
    def __init__(self) -> None:
        super().__init__(None)
        self.emergencies: list[tuple[str, str]] = []

    def emergency(self, account: str, message_id: str, caller: str, summary: str) -> bool:
        self.emergencies.append((account, message_id))
        return True


def test_a_backfill_alerts_each_new_emergency_once_as_its_window_lands(tmp_path: Path) -> None:
    with SandboxWorld(messages=200, days=5, targets=["hubspot"]) as world:
        assert world.berkshire is not None
        flagged = {str(m["message id"]) for m in world.berkshire.messages if m["is emergency"]}
        settings = sandbox_settings(
            world, f"sqlite:///{tmp_path / 'state.db'}", alert_emergencies=True
        )
        alerts = Recording()
        daemon = Daemon(settings, alerter=alerts)
        windows: list[tuple[int, int]] = []  # (emergencies in the window, alerts so far)

        def landed(_: Any, stats: IngestStats) -> None:
            windows.append((len(stats.emergencies), len(alerts.emergencies)))

        try:
            daemon.migrate()
            today = world.end.date()
            span = (today - timedelta(days=world.days + 1), today + timedelta(days=1))
            report = daemon.backfill(*span, on_window=landed)
            again = daemon.backfill(*span)
        finally:
            daemon.close()

    assert report.ok
    assert again.ok
    assert flagged, "the generated traffic should hold emergencies"
    assert sorted(m for _, m in alerts.emergencies) == sorted(flagged)  # each once, re-run none
    # Each window's alerts went out before its callback: none waited for the whole backfill.
    assert all(sent >= sum(n for n, _ in windows[: i + 1]) for i, (_, sent) in enumerate(windows))
    total = report.accounts["demo"]
    assert total.emergencies == []  # the run's total holds counts, not messages

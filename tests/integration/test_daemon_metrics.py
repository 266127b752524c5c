"""The daemon exports what its connectors report: request counts and Salesforce's API quota."""

from __future__ import annotations

from pathlib import Path

from syncd.daemon import Daemon
from syncd.demo import sandbox_settings
from syncd.sandbox.world import SandboxWorld


def test_cycle_exports_crm_requests_and_salesforce_api_usage(tmp_path: Path) -> None:
    with SandboxWorld(messages=30, targets=["salesforce"]) as world:
        daemon = Daemon(sandbox_settings(world, f"sqlite:///{tmp_path / 'state.db'}"))
        try:
            daemon.migrate()
            report = daemon.run_cycle()
            text = daemon.metrics.render().decode()
        finally:
            daemon.close()
    assert report.ok, report.errors
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    used = [line for line in lines if line.startswith('syncd_crm_api_usage{kind="used"')]
    assert used
    assert float(used[0].rsplit(" ", 1)[1]) > 0
    assert any(line.startswith('syncd_crm_api_usage{kind="max"') for line in lines)
    requests = [line for line in lines if line.startswith("syncd_crm_requests_total{")]
    assert requests, "connectors must report every request to the daemon's metrics"
    assert sum(float(line.rsplit(" ", 1)[1]) for line in requests) >= 3

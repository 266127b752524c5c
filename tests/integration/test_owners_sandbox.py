"""Owners end to end on the sandbox: the demo's ``owners_assigned`` (a DESIGN.md contract),
every emergency task owned in both emulators, and ``syncd status`` saying who fell back why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from syncd_cli import Result
from syncd_hubspot.emulator.api import HubSpotEmulator
from syncd_salesforce.emulator import SalesforceEmulator
from syncd_salesforce.emulator.schema import USER_ID

from syncd.sandbox.team import TEAM
from syncd.sandbox.toml import dumps
from syncd.sandbox.world import SandboxWorld

TARGETS = ("hubspot", "salesforce")


def test_demo_json_counts_owners_per_target_and_in_total(
    in_process: Callable[..., Result],
) -> None:
    result = in_process("demo", "--json", "--messages", "120")
    assert result.code == 0, result.err
    summary = result.last_json()
    per_target = {name: summary["targets"][name]["owners_assigned"] for name in TARGETS}
    assert all(n > 0 for n in per_target.values()), per_target
    # Every delivered message got an owner: the sandbox config ends in a default owner.
    assert per_target == {n: summary["targets"][n]["activities_logged"] for n in TARGETS}
    assert summary["owners_assigned"] == sum(per_target.values())
    assert summary["repoll"]["owners_assigned"] == 0


def test_every_emergency_task_has_an_owner_and_status_says_who_fell_back(
    tmp_path: Path, in_process: Callable[..., Result]
) -> None:
    with SandboxWorld(messages=300, seed=5) as world:
        config = tmp_path / "syncd.toml"
        world.write_config(str(config), f"sqlite:///{tmp_path / 'state.db'}", log_format="json")
        run = in_process("run", "--once", "--config", str(config))
        assert run.code == 0, run.err

        hubspot = world.emulators["hubspot"]
        salesforce = world.emulators["salesforce"]
        assert isinstance(hubspot, HubSpotEmulator)
        assert isinstance(salesforce, SalesforceEmulator)
        team = {hubspot.owner_ids()[m.email] for m in TEAM if m.active}
        urgent = [t for t in hubspot.records("tasks") if t.get("hs_task_priority") == "HIGH"]
        assert urgent, "the sandbox should have emergencies"
        assert all(t.get("hubspot_owner_id") in team for t in urgent), urgent
        sf_team = {salesforce.owner_ids()[m.email] for m in TEAM if m.active}
        sf_urgent = [t for t in salesforce.records("Task") if t.get("Priority") == "High"]
        assert len(sf_urgent) == len(urgent)
        assert all(t.get("OwnerId") in sf_team for t in sf_urgent), sf_urgent
        assert all(t.get("OwnerId") != USER_ID for t in salesforce.records("Task"))

        status = in_process("status", "--json", "--config", str(config))
        assert status.code == 0, status.err
        owners = status.last_json()["owners"]
        for name in TARGETS:
            rules = owners[name]["by_rule"]
            # The sandbox's routing exercises every rule.
            assert set(rules) == {"record", "mapping", "name", "round_robin", "default"}, rules
            assert owners[name]["owners_assigned"] == sum(rules.values())
            fell = owners[name]["fell_back"]
            assert fell
            assert all(f["rule"] == "default" and f["why"] for f in fell)
        table = in_process("status", "--config", str(config))
        assert "owners assigned" in table.out
        assert "fell back to the default" in table.out


def test_check_lists_the_users_and_warns_of_named_users_who_left(
    tmp_path: Path, in_process: Callable[..., Result]
) -> None:
    with SandboxWorld(messages=10, seed=5) as world:
        doc = world.settings_doc(f"sqlite:///{tmp_path / 'state.db'}")
        config = tmp_path / "syncd.toml"
        config.write_text(dumps(doc), encoding="utf-8")
        config.chmod(0o600)
        clean = in_process("check", "--config", str(config))
        shown = in_process("check", "--show-config", "--config", str(config))
        for target in doc["targets"].values():
            target["owners"]["Sales line"] = "carl.former@example.com"  # has left
            target["owner_round_robin"].append("nobody@example.com")  # never was
        config.write_text(dumps(doc), encoding="utf-8")
        warned = in_process("check", "--config", str(config))
    assert clean.code == 0, clean.out
    assert "[ok  ] target hubspot (hubspot): owners: 6 users listed, 5 active" in clean.out
    assert "[ok  ] target salesforce (salesforce): owners: 7 users listed, 6 active" in clean.out
    assert "[FAIL]" not in clean.out
    assert shown.code == 0, shown.err
    lines = {line.split(" = ")[0]: line for line in shown.out.splitlines() if " = " in line}
    assert lines["targets.hubspot.default_owner"].endswith("# file")
    assert '"office@example.com"' in lines["targets.hubspot.default_owner"]
    assert lines["targets.salesforce.owners_refresh_seconds"].endswith("# default")
    assert warned.code == 0, warned.out  # a warning, not a failure: messages fall through
    for name in TARGETS:
        for line in (
            f"targets.{name}.owners.sales line: carl.former@example.com is inactive",
            f"targets.{name}.owner_round_robin: nobody@example.com is not a user in the CRM",
        ):
            assert f"[FAIL] config warning: {line}" in warned.out, warned.out

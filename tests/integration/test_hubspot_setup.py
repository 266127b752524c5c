"""``syncd setup --target hubspot`` against a fresh portal (an emulator without syncd's
properties), then ``syncd check`` green; ``--dry-run`` writes nothing; a second run finds
everything present."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
from syncd_hubspot import HubSpotConnector, create
from syncd_hubspot.emulator.api import HubSpotEmulator

from syncd.cli import main
from syncd.connector import SetsUp, TargetContext
from syncd.sandbox.world import SandboxWorld


@pytest.fixture
def fresh() -> Iterator[HubSpotEmulator]:
    with HubSpotEmulator(provisioned=False) as emu:
        yield emu


def connect(emu: HubSpotEmulator, **options: object) -> HubSpotConnector:
    connector = create(TargetContext(name="crm", options={**emu.connector_options(), **options}))
    assert isinstance(connector, HubSpotConnector)
    return connector


def test_check_names_each_missing_piece_and_the_command_that_fixes_it(
    fresh: HubSpotEmulator,
) -> None:
    lines = {line.name: line for line in connect(fresh).check()}
    for name in (
        "property contacts.syncd_key",
        "property notes.syncd_marker",
        "property tasks.syncd_marker",
    ):
        assert not lines[name].ok, name
        assert "syncd setup --target crm" in lines[name].detail, lines[name].detail
    assert "unique" in lines["property contacts.syncd_key"].detail


def test_setup_creates_what_is_missing_once(fresh: HubSpotEmulator) -> None:
    connector = connect(fresh)
    assert isinstance(connector, SetsUp)

    planned = connector.setup(dry_run=True)
    assert fresh.write_requests() == 0
    assert [s.state for s in planned] == ["would_create"] * 6  # 3 groups, 3 properties

    made = connector.setup(dry_run=False)
    assert [s.state for s in made] == ["created"] * 6
    again = connector.setup(dry_run=False)
    assert [s.state for s in again] == ["present"] * 6
    assert fresh.write_requests() == 6

    client_view = {line.name: line for line in connector.check()}
    assert all(line.ok for line in client_view.values()), client_view
    assert "unique" in client_view["property contacts.syncd_key"].detail


def test_setup_for_calls_without_tasks_creates_only_those(fresh: HubSpotEmulator) -> None:
    steps = connect(fresh, activity="call", emergency_task=False).setup(dry_run=False)
    assert [s.name.split(" (")[0] for s in steps] == [
        "property group contacts.syncd",
        "property group calls.syncd",
        "property contacts.syncd_key",
        "property calls.syncd_marker",
    ]
    assert all(s.state == "created" for s in steps)


def test_a_caller_key_that_exists_without_unique_values_needs_an_admin(
    fresh: HubSpotEmulator,
) -> None:
    fresh.add_property("contacts", "syncd_key", unique=False)
    steps = {s.name.split(" (")[0]: s for s in connect(fresh).setup(dry_run=False)}
    step = steps["property contacts.syncd_key"]
    assert step.state == "manual"
    assert "caller_key_property" in step.detail


def test_syncd_setup_then_check_green_through_the_cli(tmp_path: Path) -> None:
    world = SandboxWorld(
        messages=5, targets=["hubspot"], emulator_options={"hubspot": {"provisioned": False}}
    )
    with world:
        config = tmp_path / "syncd.toml"
        world.write_config(str(config), f"sqlite:///{tmp_path / 'state.db'}")

        def run(*args: str) -> tuple[int, str]:
            out = io.StringIO()
            with redirect_stdout(out):
                code = main([*args, "--config", str(config)])
            return code, out.getvalue()

        before, text = run("check")
        assert before != 0
        assert "syncd setup --target hubspot" in text
        dry, text = run("setup", "--target", "hubspot", "--dry-run")
        assert dry == 1
        assert text.count("[would_create]") == 6
        done, text = run("setup", "--target", "hubspot")
        assert done == 0, text
        assert text.count("[created]") == 6
        assert run("setup", "--target", "hubspot")[0] == 0
        after, text = run("check")
        assert after == 0, text

"""The pytest plugin behind the contract suite: its fixtures and its one option.

Registered as ``syncd-contract`` under ``pytest11`` by the sandbox distribution, so it is
active wherever ``syncd[sandbox]`` is installed. Every test of the suite takes the ``crm``
fixture and runs once per connector type that has a contract world (``syncd.contract.v1``);
``--syncd-connector NAME`` (repeatable) narrows that to the named types.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from syncd.connector import TargetContext, load_factory
from syncd.contract.harness import SEARCH_LAG, ContractWorld, Crm, contract_types, load_world

__all__ = ["crm", "crm_type", "emulator"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("syncd-contract").addoption(
        "--syncd-connector",
        action="append",
        default=[],
        metavar="NAME",
        help="run syncd's connector contract suite for this connector type only (repeatable)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "crm_type" not in metafunc.fixturenames:
        return
    chosen: list[str] = metafunc.config.getoption("syncd_connector")
    types = contract_types()
    if chosen:
        unknown = sorted(set(chosen) - set(types))
        if unknown:
            raise pytest.UsageError(
                f"--syncd-connector: no contract world registered for {unknown} "
                f"(entry-point group syncd.contract.v1; found: {types or 'none'})"
            )
        types = [t for t in types if t in chosen]
    metafunc.parametrize("crm_type", types)


@pytest.fixture
def crm_type(request: pytest.FixtureRequest) -> str:
    """The connector type under test (parametrized by ``pytest_generate_tests``)."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def _syncd_contract_stopper() -> Iterator[ThreadPoolExecutor]:
    """Stops worlds off the tests' path: an emulator's shutdown waits out its 0.5 s poll."""
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="contract-stop") as pool:
        yield pool


@pytest.fixture
def emulator(crm_type: str, _syncd_contract_stopper: ThreadPoolExecutor) -> Iterator[ContractWorld]:
    """A fresh, started world from the connector's contract fixture; its search lags a minute."""
    world = load_world(crm_type)
    world.start()
    world.search_lag = SEARCH_LAG
    try:
        yield world
    finally:
        _syncd_contract_stopper.submit(world.stop)


@pytest.fixture
def crm(crm_type: str, emulator: ContractWorld, tmp_path: Path) -> Iterator[Crm]:
    """The connector, built through its ``syncd.connectors.v1`` entry point, and its world."""
    context = TargetContext(name=crm_type, options=emulator.connector_options())
    connector = load_factory(crm_type)(context)
    harness = Crm(crm_type, emulator, connector, tmp_path / "state.db")
    try:
        yield harness
    finally:
        connector.close()
        harness.close()

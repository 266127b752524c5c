"""A third connector, written outside syncd, passes syncd's contract suite as published.

``toy_crm`` is an in-memory CRM with a connector that imports only ``syncd.plugin``. It is
installed the way any distribution is -- a ``*.dist-info`` with ``entry_points.txt`` on
``sys.path`` registering its factory (``syncd.connectors.v1``) and its contract world
(``syncd.contract.v1``) -- and the suite is run as an outside project would run it:
``pytest --pyargs syncd.contract --syncd-connector toy``, in a fresh process.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TOY = HERE / "toy_crm"

ENTRY_POINTS = """\
[syncd.connectors.v1]
toy = toy_crm.connector:create

[syncd.contract.v1]
toy = toy_crm.world:world
"""


def _install(site: Path) -> None:
    info = site / "toy_crm-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-crm\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)


def test_the_toy_connector_imports_only_the_plugin_module() -> None:
    tree = ast.parse((TOY / "connector.py").read_text(encoding="utf-8"))
    imported = {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert {m for m in imported if m.split(".")[0] == "syncd"} == {"syncd.plugin"}


@pytest.mark.slow
def test_a_third_connector_passes_the_published_contract_suite(tmp_path: Path) -> None:
    _install(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(HERE)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "--pyargs", "syncd.contract", "--syncd-connector", "toy"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    output = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, output
    summary = result.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))  # type: ignore[union-attr]
    assert passed >= 40, summary  # the whole suite ran for it, not a sliver
    assert "failed" not in summary, summary
    assert "error" not in summary, summary
    # Only the owner tests may skip: owner rules are an optional capability (ListsOwners).
    skipped = re.findall(r"SKIPPED \[\d+\] .*?: (.*)", result.stdout)
    assert all("ListsOwners is optional" in reason for reason in skipped), skipped

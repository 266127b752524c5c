"""Issue 16's corpus: bad configurations, environments and arguments, each run through the
real command line in a subprocess. Every one must end in exactly one line on stderr that names
the key (or argument), exit status 2, and no traceback."""

from __future__ import annotations

import socket
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from syncd_cli import Result, run_syncd

from syncd.sandbox.toml import dumps

TOKENS = {"CORPUS_BERKSHIRE_TOKEN": "berkshire-secret-1234", "CORPUS_HUBSPOT": "pat-secret-9876"}

BASE = """
[syncd]
database_url = "sqlite:///state.db"
interval_seconds = 300
jitter_seconds = 0
health_address = "127.0.0.1:0"
log_format = "json"

[accounts.main]
base_url = "http://127.0.0.1:1"
email = "ops@example.com"
token_env = "CORPUS_BERKSHIRE_TOKEN"
timezone = "America/New_York"
region = "US"
targets = ["hubspot"]

[targets.hubspot]
type = "hubspot"
access_token_env = "CORPUS_HUBSPOT"

[targets.hubspot.match]
keys = ["email", "phone"]
"""

_DELETE = object()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value

    return edit


NAN, INF = float("nan"), float("inf")

# (case id, edit of the file, key named in the error)
FILE_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("log_level verbose", _set("syncd.log_level", "verbose"), "syncd.log_level"),
    ("log_level number", _set("syncd.log_level", 10), "syncd.log_level"),
    ("interval half second", _set("syncd.interval_seconds", 0.5), "syncd.interval_seconds"),
    ("interval nan", _set("syncd.interval_seconds", NAN), "syncd.interval_seconds"),
    ("interval inf", _set("syncd.interval_seconds", INF), "syncd.interval_seconds"),
    ("interval zero", _set("syncd.interval_seconds", 0), "syncd.interval_seconds"),
    ("interval text", _set("syncd.interval_seconds", "300"), "syncd.interval_seconds"),
    ("jitter negative", _set("syncd.jitter_seconds", -1), "syncd.jitter_seconds"),
    ("jitter nan", _set("syncd.jitter_seconds", NAN), "syncd.jitter_seconds"),
    ("lookback negative", _set("syncd.lookback_days", -1), "syncd.lookback_days"),
    ("batch zero", _set("syncd.batch_size", 0), "syncd.batch_size"),
    ("batch float", _set("syncd.batch_size", 1.5), "syncd.batch_size"),
    ("attempts zero", _set("syncd.max_attempts", 0), "syncd.max_attempts"),
    ("retry base nan", _set("syncd.retry_base_seconds", NAN), "syncd.retry_base_seconds"),
    ("lease zero", _set("syncd.lease_seconds", 0), "syncd.lease_seconds"),
    ("mask_phones text", _set("syncd.mask_phones", "yes"), "syncd.mask_phones"),
    ("log_format xml", _set("syncd.log_format", "xml"), "syncd.log_format"),
    ("health no port", _set("syncd.health_address", "9464"), "syncd.health_address"),
    ("health port range", _set("syncd.health_address", "127.0.0.1:99999"), "syncd.health_address"),
    ("health bad host", _set("syncd.health_address", "no host:80"), "syncd.health_address"),
    ("health bare v6", _set("syncd.health_address", "::1:9464"), "syncd.health_address"),
    ("health bad v6", _set("syncd.health_address", "[zz]:9464"), "syncd.health_address"),
    ("health number", _set("syncd.health_address", 9464), "syncd.health_address"),
    ("database junk", _set("syncd.database_url", "not a url"), "syncd.database_url"),
    ("database mysql", _set("syncd.database_url", "mysql://u@h/db"), "syncd.database_url"),
    ("database driver", _set("syncd.database_url", "postgresql+nope://h/db"), "syncd.database_url"),
    ("worker id empty", _set("syncd.worker_id", " "), "syncd.worker_id"),
    ("unknown syncd key", _set("syncd.colour", "blue"), "syncd.colour"),
    ("unknown table", _set("database.url", "x"), "database"),
    ("webhook file missing", _set("syncd.alert_webhook_url_file", "/nonexistent/hook"),
     "alert_webhook_url_file"),
    ("timezone", _set("accounts.main.timezone", "Mars/Olympus_Mons"), "accounts.main.timezone"),
    ("region", _set("accounts.main.region", "XX"), "accounts.main.region"),
    ("email", _set("accounts.main.email", "nobody"), "accounts.main.email"),
    ("plain http", _set("accounts.main.base_url", "http://api.example.com"),
     "accounts.main.base_url"),
    ("base_url missing", _set("accounts.main.base_url", _DELETE), "accounts.main.base_url"),
    ("token unset", _set("accounts.main.token_env", "CORPUS_UNSET"), "accounts.main.token"),
    ("unknown target", _set("accounts.main.targets", ["pipedrive"]), "accounts.main.targets"),
    ("fetch_details", _set("accounts.main.fetch_details", "sometimes"),
     "accounts.main.fetch_details"),
    ("detail concurrency", _set("accounts.main.detail_concurrency", 0),
     "accounts.main.detail_concurrency"),
    ("account timeout nan", _set("accounts.main.timeout_seconds", NAN),
     "accounts.main.timeout_seconds"),
    ("account misspelt", _set("accounts.main.tokn", "x"), "accounts.main.tokn"),
    ("no accounts", _set("accounts", {}), "accounts"),
    ("target type missing", _set("targets.hubspot.type", _DELETE), "targets.hubspot.type"),
    ("target not installed", _set("targets.hubspot.type", "pipedrive"), "targets.hubspot.type"),
    ("sync_mode", _set("targets.hubspot.sync_mode", "merge"), "targets.hubspot.sync_mode"),
    ("field_policy", _set("targets.hubspot.field_policy", "append"),
     "targets.hubspot.field_policy"),
    ("match keys", _set("targets.hubspot.match.keys", ["fax"]), "targets.hubspot.match.keys"),
    ("on_ambiguity", _set("targets.hubspot.match.on_ambiguity", "coin"),
     "targets.hubspot.match.on_ambiguity"),
    ("threshold nan", _set("targets.hubspot.match.name_threshold", NAN),
     "targets.hubspot.match.name_threshold"),
]  # fmt: skip

# (case id, environment, key named in the error)
ENV_CASES: list[tuple[str, dict[str, str], str]] = [
    ("env interval nan", {"SYNCD_INTERVAL_SECONDS": "nan"}, "SYNCD_INTERVAL_SECONDS"),
    ("env log level", {"SYNCD_LOG_LEVEL": "verbose"}, "SYNCD_LOG_LEVEL"),
    ("env health", {"SYNCD_HEALTH_ADDRESS": "nowhere"}, "SYNCD_HEALTH_ADDRESS"),
    ("env database", {"SYNCD_DATABASE_URL": "junk"}, "SYNCD_DATABASE_URL"),
    ("env batch", {"SYNCD_BATCH_SIZE": "lots"}, "SYNCD_BATCH_SIZE"),
    ("env nested timezone", {"SYNCD__ACCOUNTS__MAIN__TIMEZONE": "Mars/Base"},
     "SYNCD__ACCOUNTS__MAIN__TIMEZONE"),
    ("env config missing", {"SYNCD_CONFIG": "/nonexistent/syncd.toml"}, "SYNCD_CONFIG"),
]  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path


def _write(home: Path, doc: dict[str, Any]) -> Path:
    path = home / "syncd.toml"
    path.write_text(dumps(doc), encoding="utf-8")
    path.chmod(0o600)
    return path


def _assert_one_line(result: Result, key: str) -> None:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == 2, result.output
    assert "Traceback" not in result.output, result.output
    assert len(lines) == 1, result.err
    assert key in lines[0], lines[0]
    for secret in TOKENS.values():
        assert secret not in result.output


def test_the_base_config_is_valid(home: Path) -> None:
    config = _write(home, tomllib.loads(BASE))
    result = run_syncd("check", "--show-config", "--config", str(config), cwd=home, env=TOKENS)
    assert result.code == 0, result.output


@pytest.mark.parametrize(("edit", "key"), [pytest.param(e, k, id=i) for i, e, k in FILE_CASES])
def test_bad_file(home: Path, edit: Callable[[dict[str, Any]], None], key: str) -> None:
    doc = tomllib.loads(BASE)
    edit(doc)
    config = _write(home, doc)
    result = run_syncd("check", "--show-config", "--config", str(config), cwd=home, env=TOKENS)
    _assert_one_line(result, key)


@pytest.mark.parametrize(("environ", "key"), [pytest.param(e, k, id=i) for i, e, k in ENV_CASES])
def test_bad_environment(home: Path, environ: dict[str, str], key: str) -> None:
    config = _write(home, tomllib.loads(BASE))
    args = ["check", "--show-config"]
    if "SYNCD_CONFIG" not in environ:
        args += ["--config", str(config)]
    result = run_syncd(*args, cwd=home, env={**TOKENS, **environ})
    _assert_one_line(result, key)


# -- files that are no config ---------------------------------------------------------------


def _binary(home: Path) -> Path:
    path = home / "syncd.toml"
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _nul(home: Path) -> Path:
    path = home / "syncd.toml"
    path.write_bytes(b"[syncd]\x00\n")
    return path


def _not_toml(home: Path) -> Path:
    path = home / "syncd.toml"
    path.write_text("[syncd\ninterval = \n", encoding="utf-8")
    return path


def _directory(home: Path) -> Path:
    path = home / "syncd.d"
    path.mkdir()
    return path


@pytest.mark.parametrize("make", [_binary, _nul, _not_toml, _directory, lambda h: h / "missing"])
def test_a_file_that_is_no_config(home: Path, make: Callable[[Path], Path]) -> None:
    result = run_syncd("check", "--config", str(make(home)), cwd=home, env=TOKENS)
    _assert_one_line(result, "--config")


# -- the state store and the health port at start-up ----------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://syncd:hunter2-secret@127.0.0.1:{port}/syncd",
        "sqlite:////proc/no-such-dir/state.db",
    ],
    ids=["postgres refused", "sqlite unwritable"],
)
@pytest.mark.parametrize("command", ["status", "migrate", "run --once"])
def test_a_state_store_that_cannot_be_opened(home: Path, url: str, command: str) -> None:
    doc = tomllib.loads(BASE)
    doc["syncd"]["database_url"] = url.format(port=_free_port())
    config = _write(home, doc)
    result = run_syncd(*command.split(), "--config", str(config), cwd=home, env=TOKENS)
    _assert_one_line(result, "syncd.database_url")
    assert "hunter2-secret" not in result.output


@pytest.mark.parametrize(
    ("option", "key"),
    [("acess_token_env", "acess_token_env"), ("rate_limit", "rate_limit")],
    ids=["misspelt connector option", "bad connector option"],
)
def test_a_bad_connector_option_stops_the_run(home: Path, option: str, key: str) -> None:
    doc = tomllib.loads(BASE)
    doc["targets"]["hubspot"][option] = "CORPUS_HUBSPOT" if option.endswith("_env") else "lots"
    config = _write(home, doc)
    result = run_syncd("run", "--once", "--config", str(config), cwd=home, env=TOKENS)
    _assert_one_line(result, key)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_health_port_in_use(home: Path, taken_port: int) -> None:
    doc = tomllib.loads(BASE)
    doc["syncd"]["health_address"] = f"127.0.0.1:{taken_port}"
    config = _write(home, doc)
    result = run_syncd("run", "--config", str(config), cwd=home, env=TOKENS)
    _assert_one_line(result, "syncd.health_address")


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["review", "99999999999999999999999", "--new"], "DELIVERY_ID"),
        (["review", "-5", "--new"], "DELIVERY_ID"),
        (["review", "abc", "--new"], "DELIVERY_ID"),
        (["retry", "--target", "nope"], "--target"),
        (["replay", "m-1", "--target", "nope"], "--target"),
        (["setup", "--target", "nope"], "--target"),
        (["run", "--from", "2026-13-01"], "--from"),
        (["run", "--backfill", "--from", "2026-02-01"], "--backfill"),
        (["run", "--json"], "--json"),
        (["run", "--metrics-textfile", "m.prom"], "--metrics-textfile"),
        (["frobnicate"], "frobnicate"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_arguments(home: Path, args: list[str], key: str) -> None:
    config = _write(home, tomllib.loads(BASE))
    result = run_syncd(*args, "--config", str(config), cwd=home, env=TOKENS)
    _assert_one_line(result, key)


def test_demo_rejects_a_bad_count(home: Path) -> None:
    result = run_syncd("demo", "--messages", "0", cwd=home)
    _assert_one_line(result, "--messages")


def test_the_corpus_is_at_least_forty() -> None:
    assert len(FILE_CASES) + len(ENV_CASES) >= 40

"""Settings: TOML in, environment overrides on top, every mistake named by its key."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from syncd.config import (
    DEFAULT_DATABASE_URL,
    MatchPolicy,
    Settings,
    load_settings,
    parse_settings,
)
from syncd.errors import ConfigError

EXAMPLE = """
[syncd]
database_url = "sqlite:///var/lib/syncd/syncd.db"
interval_seconds = 300
jitter_seconds = 0
lookback_days = 2
batch_size = 200
max_attempts = 5
log_format = "json"
mask_phones = true
alert_webhook_url_env = "TEST_SYNCD_WEBHOOK"

[accounts.main]
base_url = "https://api.example-answering-service.com/"
email = "ops@example.com"
token_env = "TEST_SYNCD_TOKEN"
timezone = "America/Chicago"
region = "gb"
targets = ["hubspot", "sf"]
fetch_details = "always"
detail_concurrency = 8

[targets.hubspot]
type = "hubspot"
field_policy = "overwrite"
access_token_env = "HUBSPOT_TOKEN"
rate_limit = { calls = 100, period = 10.0 }

[targets.hubspot.match]
keys = ["phone", "email"]
on_ambiguity = "best"
company_threshold = 85

[targets.hubspot.contact_fields]
"Account #" = "account_number"

[targets.hubspot.activity_fields]
"Reason" = "hs_call_disposition"

[targets.sf]
type = "salesforce"
sync_mode = "update_only"
"""

REPO_EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "syncd.example.toml"


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # read_secret looks at the process environment for *_env secrets.
    monkeypatch.setenv("TEST_SYNCD_TOKEN", "tok-123")
    monkeypatch.setenv("TEST_SYNCD_WEBHOOK", "https://hooks.example/abc")


def parse(text: str = EXAMPLE, environ: dict[str, str] | None = None) -> Settings:
    return parse_settings(tomllib.loads(text), environ=environ or {})


def minimal(**account: Any) -> dict[str, Any]:
    table = {"base_url": "https://api.example", "email": "a@b.c", "token": "t"} | account
    return {"accounts": {"main": table}}


def test_example_parses() -> None:
    settings = parse()

    daemon = settings.daemon
    assert (daemon.interval_seconds, daemon.jitter_seconds, daemon.batch_size) == (300.0, 0, 200)
    assert (daemon.max_attempts, daemon.log_format, daemon.lookback_days) == (5, "json", 2)
    assert daemon.alert_webhook_url == "https://hooks.example/abc"
    main = settings.accounts["main"]
    assert main.base_url == "https://api.example-answering-service.com"  # trailing / dropped
    assert (main.token, main.timezone, main.region) == (
        "tok-123",
        ZoneInfo("America/Chicago"),
        "GB",
    )
    assert (main.targets, main.fetch_details) == (("hubspot", "sf"), "always")
    assert main.detail_concurrency == 8
    assert "tok-123" not in repr(main)  # never printed by accident
    hub = settings.targets["hubspot"]
    assert (hub.type, hub.sync_mode, hub.field_policy) == ("hubspot", "upsert", "overwrite")
    assert hub.match == MatchPolicy(
        keys=("phone", "email"), on_ambiguity="best", company_threshold=85
    )
    assert dict(hub.contact_fields) == {"Account #": "account_number"}
    assert dict(hub.activity_fields) == {"Reason": "hs_call_disposition"}
    # The connector gets its own keys, not syncd's policy tables.
    assert hub.options["access_token_env"] == "HUBSPOT_TOKEN"
    assert hub.options["rate_limit"] == {"calls": 100, "period": 10.0}
    assert "match" not in hub.options
    assert "sync_mode" not in hub.options
    assert settings.targets["sf"].sync_mode == "update_only"
    assert settings.account_targets() == {"main": ("hubspot", "sf")}
    assert settings.warnings == ()


@pytest.mark.skipif(not REPO_EXAMPLE.exists(), reason="config/syncd.example.toml not written yet")
def test_repository_example_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BERKSHIRE_TOKEN", "tok")
    settings = load_settings(REPO_EXAMPLE, environ={})
    assert settings.accounts
    assert settings.targets
    assert all(t in settings.targets for a in settings.accounts.values() for t in a.targets)


def test_defaults() -> None:
    settings = parse_settings(minimal(), environ={})

    assert settings.daemon.database_url == DEFAULT_DATABASE_URL
    assert settings.daemon.worker_id  # hostname:pid
    assert settings.daemon.alert_webhook_url is None
    main = settings.accounts["main"]
    assert (main.timezone, main.region, main.targets) == (ZoneInfo("America/New_York"), "US", ())
    assert main.detail_concurrency == 4
    assert settings.targets == {}


def test_environment_overrides() -> None:
    settings = parse(
        environ={
            "SYNCD_INTERVAL_SECONDS": "60",
            "SYNCD_MASK_PHONES": "false",
            "SYNCD_DATABASE_URL": "postgresql+psycopg://syncd@db/syncd",
            "SYNCD__ACCOUNTS__MAIN__TIMEZONE": "Europe/Berlin",
            "SYNCD__TARGETS__HUBSPOT__MATCH__ON_AMBIGUITY": "review",
            "SYNCD_TEST_POSTGRES_URL": "postgresql://ignored",  # the test suite's, not a setting
            "OTHER_SYNCD_THING": "x",
        }
    )

    assert settings.daemon.interval_seconds == 60.0
    assert settings.daemon.mask_phones is False
    assert settings.daemon.database_url == "postgresql+psycopg://syncd@db/syncd"
    assert settings.accounts["main"].timezone == ZoneInfo("Europe/Berlin")
    assert settings.targets["hubspot"].match.on_ambiguity == "review"
    assert settings.accounts["main"].email == "ops@example.com"  # the rest from the file


def test_environment_can_supply_a_whole_account() -> None:
    environ = {
        "SYNCD__ACCOUNTS__SECOND__BASE_URL": "http://127.0.0.1:8080",
        "SYNCD__ACCOUNTS__SECOND__EMAIL": "b@example.com",
        "SYNCD__ACCOUNTS__SECOND__TOKEN_ENV": "TEST_SYNCD_TOKEN",
    }
    settings = parse(environ=environ)
    assert settings.accounts["second"].base_url == "http://127.0.0.1:8080"
    assert settings.accounts["second"].token == "tok-123"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return edit


_DELETE = object()


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (_set("syncd.colour", "blue"), "syncd.colour"),
        (_set("accounts.main.tokn", "x"), "accounts.main.tokn"),
        (_set("target.x", {}), "target"),
        (_set("targets.hubspot.match.strict", True), "targets.hubspot.match.strict"),
        (_set("syncd.batch_size", "500"), "syncd.batch_size"),
        (_set("syncd.interval_seconds", True), "syncd.interval_seconds"),
        (_set("syncd.interval_seconds", 0), "syncd.interval_seconds"),
        (_set("syncd.lookback_days", -1), "syncd.lookback_days"),
        (_set("syncd.mask_phones", "yes"), "syncd.mask_phones"),
        (_set("syncd.log_format", "xml"), "syncd.log_format"),
        (_set("accounts.main.timezone", "Mars/Olympus_Mons"), "accounts.main.timezone"),
        (_set("accounts.main.timezone", "../../etc/passwd"), "accounts.main.timezone"),
        (_set("accounts.main.targets", ["hubspot", "pipedrive"]), "accounts.main.targets"),
        (_set("accounts.main.targets", "hubspot"), "accounts.main.targets"),
        (_set("accounts.main.token_env", "TEST_SYNCD_UNSET"), "accounts.main.token"),
        (_set("accounts.main.email", _DELETE), "accounts.main.email"),
        (_set("accounts.main.fetch_details", "sometimes"), "accounts.main.fetch_details"),
        (_set("accounts.main.detail_concurrency", 0), "accounts.main.detail_concurrency"),
        (_set("accounts.main.detail_concurrency", -1), "accounts.main.detail_concurrency"),
        (_set("accounts.main.detail_concurrency", "x"), "accounts.main.detail_concurrency"),
        (_set("accounts.main.detail_concurrency", True), "accounts.main.detail_concurrency"),
        (_set("accounts.main.detail_concurrency", 2.5), "accounts.main.detail_concurrency"),
        (_set("accounts.main.base_url", "http://api.example.com"), "accounts.main.base_url"),
        (_set("accounts.main.base_url", "http://localhost.evil.example"), "accounts.main.base_url"),
        (_set("accounts.main.base_url", "http://localhost@evil.example"), "accounts.main.base_url"),
        (_set("accounts.main.base_url", "http://127.0.0.1.nip.io"), "accounts.main.base_url"),
        (_set("accounts.main.base_url", "ftp://127.0.0.1"), "accounts.main.base_url"),
        (_set("accounts.main.base_url", "https://"), "accounts.main.base_url"),
        (_set("targets.sf.type", _DELETE), "targets.sf.type"),
        (_set("targets.sf.sync_mode", "merge"), "targets.sf.sync_mode"),
        (_set("targets.sf.field_policy", "append"), "targets.sf.field_policy"),
        (_set("targets.hubspot.match.keys", ["fax"]), "targets.hubspot.match.keys"),
        (_set("targets.hubspot.match.keys", []), "targets.hubspot.match.keys"),
        (_set("targets.hubspot.match.name_threshold", -5), "targets.hubspot.match.name_threshold"),
        (_set("accounts", {}), "accounts"),
    ],
)
def test_bad_value_names_the_key(edit: Callable[[dict[str, Any]], None], key: str) -> None:
    doc = tomllib.loads(EXAMPLE)
    edit(doc)

    with pytest.raises(ConfigError) as caught:
        parse_settings(doc, environ={})

    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080", "http://127.5.5.5", "http://localhost:9000/", "http://[::1]:80"],
)
def test_plain_http_is_fine_on_loopback(url: str) -> None:
    assert parse_settings(minimal(base_url=url), environ={}).accounts["main"].base_url


def test_bad_environment_override_names_the_variable() -> None:
    # A variable that names no key is ignored with a warning naming it, never fatal.
    settings = parse(environ={"SYNCD__SYNCD__BATCH_SIZE__X": "1"})
    assert any("SYNCD__SYNCD__BATCH_SIZE__X" in w for w in settings.warnings)
    assert settings.daemon.batch_size == 200
    with pytest.raises(ConfigError) as bad_type:
        parse(environ={"SYNCD_BATCH_SIZE": "lots"})
    assert bad_type.value.key == "syncd.batch_size"
    assert "SYNCD_BATCH_SIZE" in str(bad_type.value)


def test_secret_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("file-token\n", encoding="utf-8")
    doc = minimal(token_file=str(secret))
    del doc["accounts"]["main"]["token"]

    assert parse_settings(doc, environ={}).accounts["main"].token == "file-token"

    # *_env wins over *_file when its variable is set, and falls through when it is empty.
    doc["accounts"]["main"]["token_env"] = "TEST_SYNCD_TOKEN"
    assert parse_settings(doc, environ={}).accounts["main"].token == "tok-123"
    monkeypatch.setenv("TEST_SYNCD_TOKEN", "")
    assert parse_settings(doc, environ={}).accounts["main"].token == "file-token"


def test_unreadable_secret_file_is_a_config_error(tmp_path: Path) -> None:
    doc = minimal(token_file=str(tmp_path / "missing"))
    del doc["accounts"]["main"]["token"]

    with pytest.raises(ConfigError) as caught:
        parse_settings(doc, environ={})
    assert caught.value.key == "token_file"


def test_world_readable_config_with_inline_secret_warns(tmp_path: Path) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(
        '[accounts.main]\nbase_url = "https://api.example"\nemail = "a@b.c"\n'
        'token = "inline-secret"\n'
        '[targets.h]\ntype = "hubspot"\naccess_token = "pat-123"\n',
        encoding="utf-8",
    )

    path.chmod(0o644)
    [warning] = load_settings(path, environ={}).warnings
    assert str(path) in warning
    assert "accounts.main.token" in warning
    assert "targets.h.access_token" in warning
    assert "inline-secret" not in warning
    assert "pat-123" not in warning

    path.chmod(0o600)
    assert load_settings(path, environ={}).warnings == ()


def test_world_readable_config_without_secrets_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "syncd.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    path.chmod(0o644)
    assert load_settings(path, environ={}).warnings == ()


def test_load_settings_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_settings(tmp_path / "nope.toml", environ={})
    assert missing.value.key == "--config"

    broken = tmp_path / "broken.toml"
    broken.write_text("[syncd\nbatch_size = ", encoding="utf-8")
    with pytest.raises(ConfigError) as invalid:
        load_settings(broken, environ={})
    assert invalid.value.key == "--config"
    assert "not valid TOML" in str(invalid.value)

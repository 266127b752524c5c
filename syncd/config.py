"""Configuration: one TOML file, environment overrides, secrets from the environment or files.

Precedence, lowest first: built-in defaults, the TOML file, environment variables.
``SYNCD_<KEY>`` overrides a key of the ``[syncd]`` table (``SYNCD_DATABASE_URL``);
``SYNCD__<TABLE>__<NAME>__<KEY>`` overrides any nested key
(``SYNCD__ACCOUNTS__MAIN__BASE_URL``). Every problem is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.connector import read_secret
from syncd.errors import ConfigError

__all__ = [
    "AccountSettings",
    "DaemonSettings",
    "MatchPolicy",
    "Settings",
    "TargetSettings",
    "load_settings",
    "parse_settings",
]

DEFAULT_DATABASE_URL = "sqlite:///syncd.db"
SECRET_WORDS = ("token", "password", "secret", "session_id", "private_key", "privatekey")
MatchKeyName = Literal["email", "phone", "company_name"]
SyncMode = Literal["upsert", "update_only", "create_only"]
FieldPolicy = Literal["fill_blanks", "overwrite"]
OnAmbiguity = Literal["review", "best"]


@dataclass(frozen=True)
class DaemonSettings:
    database_url: str = DEFAULT_DATABASE_URL
    interval_seconds: float = 300.0
    jitter_seconds: float = 30.0
    lookback_days: int = 2
    batch_size: int = 500
    max_attempts: int = 8
    retry_base_seconds: float = 30.0
    retry_cap_seconds: float = 3600.0
    lease_seconds: float = 300.0
    log_level: str = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    mask_phones: bool = True
    health_address: str = "127.0.0.1:9464"
    alert_webhook_url: str | None = None
    alert_emergencies: bool = False
    # Circuit breaker: after this many whole-batch failures in a row a target pauses for
    # breaker_pause_seconds (doubling per further failure, up to breaker_max_pause_seconds).
    breaker_failures: int = 3
    breaker_pause_seconds: float = 60.0
    breaker_max_pause_seconds: float = 3600.0
    # Messages created before the state store was born are reconciled (found by marker in
    # the CRM) before their first write: the store may be a rebuilt one.
    reconcile_before_birth: bool = True
    # A CRM's daily API quota spent: its target pauses this long before trying again.
    daily_limit_pause_seconds: float = 3600.0
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")


@dataclass(frozen=True)
class AccountSettings:
    name: str
    base_url: str
    email: str
    token: str = field(repr=False)
    timezone: ZoneInfo
    region: str
    targets: tuple[str, ...]
    fetch_details: Literal["auto", "always", "never"] = "auto"
    detail_concurrency: int = 4
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class MatchPolicy:
    keys: tuple[MatchKeyName, ...] = ("email", "phone", "company_name")
    on_ambiguity: OnAmbiguity = "review"
    company_threshold: float = 90.0
    name_threshold: float = 88.0


@dataclass(frozen=True)
class TargetSettings:
    name: str
    type: str
    sync_mode: SyncMode = "upsert"
    field_policy: FieldPolicy = "fill_blanks"
    match: MatchPolicy = field(default_factory=MatchPolicy)
    contact_fields: Mapping[str, str] = field(
        default_factory=dict
    )  # custom-field label -> CRM field
    activity_fields: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # given to the connector


@dataclass(frozen=True)
class Settings:
    daemon: DaemonSettings
    accounts: Mapping[str, AccountSettings]
    targets: Mapping[str, TargetSettings]
    path: Path | None = None
    warnings: tuple[str, ...] = ()

    def account_targets(self) -> dict[str, tuple[str, ...]]:
        return {name: acct.targets for name, acct in self.accounts.items()}


# -- parsing helpers ------------------------------------------------------------------------


def _expect(value: Any, kind: type | tuple[type, ...], key: str) -> Any:
    # bool is an int in Python; a number where a flag is expected is a mistake worth naming.
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"expected a number, got {value!r}", key=key)
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"expected {names}, got {type(value).__name__} {value!r}", key=key)
    return value


def _choice(value: Any, choices: tuple[str, ...], key: str) -> str:
    if value not in choices:
        raise ConfigError(f"must be one of {', '.join(choices)}; got {value!r}", key=key)
    return str(value)


def _positive(value: Any, key: str, *, allow_zero: bool = False) -> float:
    number = float(_expect(value, (int, float), key))
    if number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}; got {value!r}", key=key)
    return number


def _env_value(text: str) -> Any:
    """An environment value parsed as a TOML scalar when it is one (``60``, ``true``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_env_overrides(doc: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    for name, raw in environ.items():
        if name.startswith("SYNCD__"):
            path = [p.lower() for p in name[len("SYNCD__") :].split("__") if p]
        elif name.startswith("SYNCD_") and not name.startswith("SYNCD_TEST_"):
            path = ["syncd", name[len("SYNCD_") :].lower()]
        else:
            continue
        if not path:
            continue
        node = doc
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError("environment override points inside a non-table", key=name)
            node = child
        # A secret stays text even when it looks like a number ("12345").
        secret = any(word in path[-1] for word in SECRET_WORDS)
        node[path[-1]] = raw if secret else _env_value(raw)
    return doc


def _daemon(table: Mapping[str, Any]) -> DaemonSettings:
    known = set(DaemonSettings.__dataclass_fields__)
    known.update({"alert_webhook_url_env", "alert_webhook_url_file"})
    for key in table:
        if key not in known:
            raise ConfigError("unknown key", key=f"syncd.{key}")
    kw: dict[str, Any] = {}
    for key in ("database_url", "log_level", "health_address", "worker_id"):
        if key in table:
            kw[key] = _expect(table[key], str, f"syncd.{key}")
    for key in (
        "interval_seconds",
        "lease_seconds",
        "retry_base_seconds",
        "retry_cap_seconds",
        "breaker_pause_seconds",
        "breaker_max_pause_seconds",
        "daily_limit_pause_seconds",
    ):
        if key in table:
            kw[key] = _positive(table[key], f"syncd.{key}")
    if "jitter_seconds" in table:
        kw["jitter_seconds"] = _positive(
            table["jitter_seconds"], "syncd.jitter_seconds", allow_zero=True
        )
    for key in ("lookback_days", "batch_size", "max_attempts", "breaker_failures"):
        if key in table:
            value = _expect(table[key], int, f"syncd.{key}")
            if value < (0 if key == "lookback_days" else 1):
                raise ConfigError(f"out of range: {value}", key=f"syncd.{key}")
            kw[key] = value
    for key in ("mask_phones", "alert_emergencies", "reconcile_before_birth"):
        if key in table:
            kw[key] = _expect(table[key], bool, f"syncd.{key}")
    if "log_format" in table:
        kw["log_format"] = _choice(
            table["log_format"], ("auto", "json", "console"), "syncd.log_format"
        )
    kw["alert_webhook_url"] = read_secret(table, "alert_webhook_url")
    webhook = kw["alert_webhook_url"]
    if webhook is not None and not _secure_or_loopback(webhook):
        # Not echoing the value: the URL embeds the webhook's token.
        reason = "must be an https URL (plain http only to loopback)"
        raise ConfigError(reason, key="syncd.alert_webhook_url")
    return DaemonSettings(**kw)


def _secure_or_loopback(url: str) -> bool:
    """https anywhere; plain http only when the *host* is loopback (a prefix test would pass
    ``http://localhost.evil.example`` or ``http://localhost@evil.example``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _account(name: str, table: Any, targets: Mapping[str, TargetSettings]) -> AccountSettings:
    prefix = f"accounts.{name}"
    table = _expect(table, dict, prefix)
    allowed = {
        "base_url", "email", "token", "token_env", "token_file", "timezone", "region",
        "targets", "fetch_details", "detail_concurrency", "timeout_seconds",
    }  # fmt: skip
    for key in table:
        if key not in allowed:
            raise ConfigError("unknown key", key=f"{prefix}.{key}")
    for key in ("base_url", "email"):
        if key not in table:
            raise ConfigError("is required", key=f"{prefix}.{key}")
    base_url = _expect(table["base_url"], str, f"{prefix}.base_url")
    if not _secure_or_loopback(base_url):
        # Plain HTTP is only for the loopback sandbox: a real endpoint must use TLS.
        raise ConfigError(
            "must be an https:// URL (plain http is allowed on loopback only)",
            key=f"{prefix}.base_url",
        )
    token = read_secret(table, "token")
    if not token:
        hint = table.get("token_env") or table.get("token_file") or "token_env / token_file"
        raise ConfigError(f"no API token found (looked at {hint})", key=f"{prefix}.token")
    tz_name = _expect(table.get("timezone", "America/New_York"), str, f"{prefix}.timezone")
    try:
        tz = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {tz_name!r}", key=f"{prefix}.timezone") from exc
    region = _expect(table.get("region", "US"), str, f"{prefix}.region").upper()
    target_names = tuple(_expect(table.get("targets", []), list, f"{prefix}.targets"))
    for target in target_names:
        if target not in targets:
            known = ", ".join(sorted(targets)) or "none defined"
            raise ConfigError(
                f"unknown target {target!r} (targets: {known})", key=f"{prefix}.targets"
            )
    fetch = _choice(
        table.get("fetch_details", "auto"), ("auto", "always", "never"), f"{prefix}.fetch_details"
    )
    detail_concurrency = _expect(
        table.get("detail_concurrency", 4), int, f"{prefix}.detail_concurrency"
    )
    if detail_concurrency < 1:
        raise ConfigError(
            f"must be >= 1; got {detail_concurrency!r}", key=f"{prefix}.detail_concurrency"
        )
    timeout = _positive(table.get("timeout_seconds", 30.0), f"{prefix}.timeout_seconds")
    return AccountSettings(
        name=name,
        base_url=base_url.rstrip("/"),
        email=_expect(table["email"], str, f"{prefix}.email"),
        token=token,
        timezone=tz,
        region=region,
        targets=target_names,
        fetch_details=fetch,  # type: ignore[arg-type]
        detail_concurrency=detail_concurrency,
        timeout_seconds=timeout,
    )


_POLICY_KEYS = ("sync_mode", "field_policy", "match", "contact_fields", "activity_fields", "type")


def _target(name: str, table: Any) -> TargetSettings:
    prefix = f"targets.{name}"
    table = _expect(table, dict, prefix)
    if "type" not in table:
        raise ConfigError("is required (e.g. hubspot, salesforce, dry-run)", key=f"{prefix}.type")
    type_name = _expect(table["type"], str, f"{prefix}.type")
    sync_mode = _choice(
        table.get("sync_mode", "upsert"),
        ("upsert", "update_only", "create_only"),
        f"{prefix}.sync_mode",
    )
    field_policy = _choice(
        table.get("field_policy", "fill_blanks"),
        ("fill_blanks", "overwrite"),
        f"{prefix}.field_policy",
    )
    match_table = _expect(table.get("match", {}), dict, f"{prefix}.match")
    for key in match_table:
        if key not in ("keys", "on_ambiguity", "company_threshold", "name_threshold"):
            raise ConfigError("unknown key", key=f"{prefix}.match.{key}")
    keys = tuple(
        _expect(
            match_table.get("keys", ["email", "phone", "company_name"]),
            list,
            f"{prefix}.match.keys",
        )
    )
    for key in keys:
        _choice(key, ("email", "phone", "company_name"), f"{prefix}.match.keys")
    if not keys:
        raise ConfigError("needs at least one key", key=f"{prefix}.match.keys")
    policy = MatchPolicy(
        keys=keys,
        on_ambiguity=_choice(
            match_table.get("on_ambiguity", "review"),
            ("review", "best"),
            f"{prefix}.match.on_ambiguity",
        ),  # type: ignore[arg-type]
        company_threshold=_positive(
            match_table.get("company_threshold", 90.0), f"{prefix}.match.company_threshold"
        ),
        name_threshold=_positive(
            match_table.get("name_threshold", 88.0), f"{prefix}.match.name_threshold"
        ),
    )
    contact_fields = _expect(table.get("contact_fields", {}), dict, f"{prefix}.contact_fields")
    activity_fields = _expect(table.get("activity_fields", {}), dict, f"{prefix}.activity_fields")
    options = {k: v for k, v in table.items() if k not in _POLICY_KEYS}
    # The connector reads the extra fields it must fetch from the same map.
    options["contact_fields"] = dict(contact_fields)
    return TargetSettings(
        name=name,
        type=type_name,
        sync_mode=sync_mode,  # type: ignore[arg-type]
        field_policy=field_policy,  # type: ignore[arg-type]
        match=policy,
        contact_fields={str(k): str(v) for k, v in contact_fields.items()},
        activity_fields={str(k): str(v) for k, v in activity_fields.items()},
        options=options,
    )


def _inline_secrets(doc: Mapping[str, Any], prefix: str = "") -> list[str]:
    found: list[str] = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            found.extend(_inline_secrets(value, f"{path}."))
        elif (
            isinstance(value, str)
            and value
            and any(word in key for word in SECRET_WORDS)
            and not key.endswith(("_env", "_file"))
        ):
            found.append(path)
    return found


def parse_settings(
    doc: Mapping[str, Any], *, environ: Mapping[str, str] | None = None, path: Path | None = None
) -> Settings:
    """Build Settings from a parsed TOML document plus environment overrides."""
    data = apply_env_overrides(_deep_copy(doc), os.environ if environ is None else environ)
    for key in data:
        if key not in ("syncd", "accounts", "targets"):
            raise ConfigError("unknown table (expected syncd, accounts, targets)", key=key)
    daemon = _daemon(_expect(data.get("syncd", {}), dict, "syncd"))
    targets = {
        name: _target(name, table)
        for name, table in _expect(data.get("targets", {}), dict, "targets").items()
    }
    accounts_table = _expect(data.get("accounts", {}), dict, "accounts")
    if not accounts_table:
        raise ConfigError("at least one [accounts.NAME] table is required", key="accounts")
    accounts = {name: _account(name, table, targets) for name, table in accounts_table.items()}
    warnings: list[str] = []
    if path is not None:
        inline = _inline_secrets(doc)
        mode = path.stat().st_mode
        if inline and mode & (stat.S_IRGRP | stat.S_IROTH):
            warnings.append(
                f"{path} holds secrets ({', '.join(inline)}) and is readable by others: "
                f"chmod 600 it, or use *_env / *_file keys"
            )
    return Settings(
        daemon=daemon, accounts=accounts, targets=targets, path=path, warnings=tuple(warnings)
    )


def _deep_copy(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in doc.items()}


def load_settings(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Settings:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {file}", key="--config") from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {file}: {exc.strerror}", key="--config"
        ) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}", key="--config") from exc
    return parse_settings(doc, environ=environ, path=file)

"""Configuration: one TOML file, environment overrides, secrets from the environment or files.

Precedence, lowest first: built-in defaults, the TOML file, environment variables.
``SYNCD_<KEY>`` overrides a key of the ``[syncd]`` table (``SYNCD_DATABASE_URL``);
``SYNCD__<TABLE>__<NAME>__<KEY>`` overrides any nested key
(``SYNCD__ACCOUNTS__MAIN__BASE_URL``). Every problem is a :class:`ConfigError` naming the key.

Only documented keys are read from the environment: ``SYNCD_CONFIG`` (the file's path),
``SYNCD_TEST_*`` (the test suite's) and any variable a ``*_env`` key names (a secret such as
``SYNCD_ALERT_WEBHOOK``) are never keys; any other ``SYNCD_*`` variable that names no key is
ignored with a warning, never fatal. An environment value that replaces one the file sets
draws a warning too. ``Settings.sources`` says where every key given came from.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from syncd.connector import read_secret
from syncd.errors import ConfigError
from syncd.owners.settings import OWNER_KEYS, OwnerSettings, parse_owner_settings

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
# syncd's own variables that are not config keys: never read as one.
NON_KEY_VARIABLES = frozenset({"SYNCD_CONFIG"})
NON_KEY_PREFIXES = ("SYNCD_TEST_",)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
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
    # Source: a poll holds its account's lease this long, renewed between day windows (a
    # killed poller blocks the next one for at most this long); a backfill waits up to
    # backfill_wait_seconds for a running poll of its account before it gives up (exit 1).
    poll_lease_seconds: float = 60.0
    backfill_wait_seconds: float = 300.0
    # Reconcile: every reconcile_interval_seconds, re-read the reconcile_days days before
    # today (late and changed messages); 0 days turns it off.
    reconcile_days: int = 14
    reconcile_interval_seconds: float = 86400.0
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
    # The web console (on health_address): actions need this token; without it, read-only.
    console_token: str | None = field(default=None, repr=False)
    # Show phones and emails unmasked in the console (they are masked by default).
    console_show_pii: bool = False


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
    # Overall deadline of one HTTP exchange with the source (timeout_seconds bounds each read).
    deadline_seconds: float = 120.0


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
    # The console's link to a CRM record: "{id}" and "{kind}" are filled in.
    console_record_url: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # given to the connector
    # Owner rules (syncd.owners), kept out of the connector's options.
    owners: OwnerSettings = field(default_factory=OwnerSettings)
    # Batches delivered at once to this target (each claim split so they share no caller;
    # every request still under the connector's one rate limiter). 1: one at a time.
    concurrency: int = 3


@dataclass(frozen=True)
class Settings:
    daemon: DaemonSettings
    accounts: Mapping[str, AccountSettings]
    targets: Mapping[str, TargetSettings]
    path: Path | None = None
    warnings: tuple[str, ...] = ()
    # Dotted key -> where its value came from: "file" or "env NAME" (absent: the default).
    sources: Mapping[str, str] = field(default_factory=dict)

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
    if not math.isfinite(number):
        raise ConfigError(f"must be a finite number; got {value!r}", key=key)
    if number < 0 or (number == 0 and not allow_zero):
        raise ConfigError(f"must be {'>= 0' if allow_zero else '> 0'}; got {value!r}", key=key)
    return number


def _env_value(text: str) -> Any:
    """An environment value parsed as a TOML scalar when it is one (``60``, ``true``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def daemon_keys() -> set[str]:
    """Keys of the ``[syncd]`` table (the fields of DaemonSettings and their secret sources)."""
    return set(DaemonSettings.__dataclass_fields__) | {
        "alert_webhook_url_env",
        "alert_webhook_url_file",
        # A PostgreSQL URL holds a password: it may come from a file (a systemd credential,
        # a Docker secret) or a variable, like any other secret.
        "database_url_env",
        "database_url_file",
        "console_token_env",
        "console_token_file",
    }


def _account_keys() -> set[str]:
    return (set(AccountSettings.__dataclass_fields__) - {"name"}) | {"token_env", "token_file"}


def _referenced_variables(doc: Mapping[str, Any]) -> set[str]:
    """Variable names given by ``*_env`` keys anywhere in the file: secrets, not keys."""
    found: set[str] = set()
    for key, value in doc.items():
        if isinstance(value, Mapping):
            found |= _referenced_variables(value)
        elif key.endswith("_env") and isinstance(value, str):
            found.add(value)
    return found


def _env_path(name: str) -> list[str] | None:
    """The key path an environment variable names, or None when it names no key."""
    if name in NON_KEY_VARIABLES or name.startswith(NON_KEY_PREFIXES):
        return None
    if name.startswith("SYNCD__"):
        path = [p.lower() for p in name[len("SYNCD__") :].split("__")]
        if any(not p for p in path):
            return None
        head = path[0]
        if head == "syncd":
            return path if len(path) == 2 and path[1] in daemon_keys() else None
        if head == "accounts":
            return path if len(path) == 3 and path[2] in _account_keys() else None
        if head == "targets":
            # Target options belong to the connector, which validates them (naming the key).
            return path if len(path) >= 3 else None
        return None
    if name.startswith("SYNCD_"):
        key = name[len("SYNCD_") :].lower()
        return ["syncd", key] if key in daemon_keys() else None
    return None


def apply_env_overrides(
    doc: dict[str, Any],
    environ: Mapping[str, str],
    *,
    warnings: list[str] | None = None,
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    referenced = _referenced_variables(doc)
    for name, raw in sorted(environ.items()):
        if not name.startswith("SYNCD_") or name in referenced:
            continue
        path = _env_path(name)
        if path is None:
            known_elsewhere = name in NON_KEY_VARIABLES or name.startswith(NON_KEY_PREFIXES)
            if not known_elsewhere and warnings is not None:
                warnings.append(
                    f"environment variable {name} names no config key: ignored "
                    "(SYNCD_<KEY> for [syncd], SYNCD__<TABLE>__<NAME>__<KEY> for the rest)"
                )
            continue
        node = doc
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError("environment override points inside a non-table", key=name)
            node = child
        # A secret stays text even when it looks like a number ("12345").
        secret = any(word in path[-1] for word in SECRET_WORDS)
        value = raw if secret else _env_value(raw)
        dotted = ".".join(path)
        if path[-1] in node and node[path[-1]] != value and warnings is not None:
            warnings.append(
                f"{dotted} set in the file is overridden by {name} from the environment"
            )
        node[path[-1]] = value
        if sources is not None:
            sources[dotted] = f"env {name}"
    return doc


def _file_sources(doc: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in doc.items():
        found[f"{prefix}{key}"] = "file"  # a table too: an inline one is a value
        if isinstance(value, Mapping) and key not in ("contact_fields", "activity_fields"):
            found.update(_file_sources(value, f"{prefix}{key}."))
    return found


def _database_url(value: Any) -> str:
    key = "syncd.database_url"
    text: str = _expect(value, str, key)
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(
            "not a database URL (e.g. sqlite:////var/lib/syncd/syncd.db or "
            "postgresql+psycopg://user@host/db)",
            key=key,
        ) from exc
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError as exc:
        raise ConfigError(f"unknown database kind {url.drivername!r}", key=key) from exc
    except ImportError as exc:
        extra = " (pip install 'syncd[postgres]')" if url.get_backend_name() == "postgresql" else ""
        raise ConfigError(
            f"the driver for {url.drivername!r} is not installed{extra}", key=key
        ) from exc
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported database {url.get_backend_name()!r} (sqlite or postgresql)", key=key
        )
    return text


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")  # fmt: skip


def parse_address(address: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``; an empty host is 127.0.0.1) or None for "" (off).
    Raises ValueError with the reason."""
    if not address:
        return None
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError('expected HOST:PORT, e.g. 127.0.0.1:9464 or [::]:9464 ("" for off)')
    port = int(port_text)
    if not 0 <= port <= 65535:  # 0: any free port (tests, the sandbox)
        raise ValueError(f"port {port} is out of range 0-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise ValueError(f"not an IPv6 address: {host!r}") from exc
        return host, port
    host = host or "127.0.0.1"
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if ":" in host:
            raise ValueError("write an IPv6 host in brackets: [::1]:9464") from None
        if not _HOSTNAME.match(host):
            raise ValueError(f"not a host name or address: {host!r}") from None
    return host, port


def _daemon(table: Mapping[str, Any]) -> DaemonSettings:
    known = daemon_keys()
    for key in table:
        if key not in known:
            raise ConfigError("unknown key", key=f"syncd.{key}")
    kw: dict[str, Any] = {}
    if "database_url_env" in table or "database_url_file" in table:
        # The variable, else the file, else an inline database_url: read_secret's order.
        secret_url = read_secret(table, "database_url")
        if not secret_url:
            hint = table.get("database_url_env") or table.get("database_url_file")
            raise ConfigError(f"no database URL found (looked at {hint})", key="syncd.database_url")
        kw["database_url"] = secret_url
    for key in ("database_url", "log_level", "health_address", "worker_id"):
        if key in table and key not in kw:
            kw[key] = _expect(table[key], str, f"syncd.{key}")
    for key in (
        "interval_seconds", "lease_seconds", "retry_base_seconds", "retry_cap_seconds",
        "poll_lease_seconds", "backfill_wait_seconds", "reconcile_interval_seconds",
        "breaker_pause_seconds", "breaker_max_pause_seconds", "daily_limit_pause_seconds",
    ):  # fmt: skip
        if key in table:
            kw[key] = _positive(table[key], f"syncd.{key}")
    # The scheduler counts whole seconds (misfire grace): under 1 s is a typo, not a cadence.
    if kw.get("interval_seconds", 300.0) < 1:
        raise ConfigError(
            f"must be at least 1; got {kw['interval_seconds']!r}", key="syncd.interval_seconds"
        )
    if "log_level" in kw:
        kw["log_level"] = _choice(kw["log_level"].lower(), LOG_LEVELS, "syncd.log_level")
    if "database_url" in kw:
        kw["database_url"] = _database_url(kw["database_url"])
    if "health_address" in kw:
        try:
            parse_address(kw["health_address"])
        except ValueError as exc:
            raise ConfigError(str(exc), key="syncd.health_address") from exc
    if "worker_id" in kw and not kw["worker_id"].strip():
        raise ConfigError("must not be empty", key="syncd.worker_id")
    if "jitter_seconds" in table:
        kw["jitter_seconds"] = _positive(
            table["jitter_seconds"], "syncd.jitter_seconds", allow_zero=True
        )
    for key in (
        "lookback_days",
        "batch_size",
        "max_attempts",
        "reconcile_days",
        "breaker_failures",
    ):
        if key in table:
            value = _expect(table[key], int, f"syncd.{key}")
            if value < (0 if key in ("lookback_days", "reconcile_days") else 1):
                raise ConfigError(f"out of range: {value}", key=f"syncd.{key}")
            kw[key] = value
    for key in ("mask_phones", "alert_emergencies", "console_show_pii", "reconcile_before_birth"):
        if key in table:
            kw[key] = _expect(table[key], bool, f"syncd.{key}")
    if "log_format" in table:
        kw["log_format"] = _choice(
            table["log_format"], ("auto", "json", "console"), "syncd.log_format"
        )
    kw["alert_webhook_url"] = read_secret(table, "alert_webhook_url")
    kw["console_token"] = read_secret(table, "console_token")
    if "poll_lease_seconds" not in kw:  # short, and never longer than a delivery claim's
        kw["poll_lease_seconds"] = min(
            DaemonSettings.poll_lease_seconds, kw.get("lease_seconds", 300.0)
        )
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
        "targets", "fetch_details", "detail_concurrency", "timeout_seconds", "deadline_seconds",
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
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"not a phone region (ISO 3166 code such as US, GB): {region!r}", key=f"{prefix}.region"
        )
    if "@" not in _expect(table["email"], str, f"{prefix}.email"):
        raise ConfigError("not an email address (the X-API-EMAIL header)", key=f"{prefix}.email")
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
    deadline = _positive(table.get("deadline_seconds", 120.0), f"{prefix}.deadline_seconds")
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
        deadline_seconds=deadline,
    )


_POLICY_KEYS = (
    "sync_mode",
    "field_policy",
    "match",
    "contact_fields",
    "activity_fields",
    "type",
    "concurrency",
)


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
    options = {
        k: v
        for k, v in table.items()
        if k not in (*_POLICY_KEYS, *OWNER_KEYS, "console_record_url")
    }
    # The connector reads the extra fields it must fetch from the same map.
    options["contact_fields"] = dict(contact_fields)
    concurrency = _expect(table.get("concurrency", 3), int, f"{prefix}.concurrency")
    if not 1 <= concurrency <= 32:
        raise ConfigError(f"must be 1..32; got {concurrency!r}", key=f"{prefix}.concurrency")
    return TargetSettings(
        name=name,
        type=type_name,
        sync_mode=sync_mode,  # type: ignore[arg-type]
        field_policy=field_policy,  # type: ignore[arg-type]
        match=policy,
        contact_fields={str(k): str(v) for k, v in contact_fields.items()},
        activity_fields={str(k): str(v) for k, v in activity_fields.items()},
        console_record_url=_expect(
            table.get("console_record_url", ""), str, f"{prefix}.console_record_url"
        )
        or None,
        options=options,
        owners=parse_owner_settings(table, prefix),
        concurrency=concurrency,
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
    warnings: list[str] = []
    sources = _file_sources(doc)
    data = apply_env_overrides(
        _deep_copy(doc),
        os.environ if environ is None else environ,
        warnings=warnings,
        sources=sources,
    )
    try:
        settings = _parse(data, doc, path)
    except ConfigError as exc:
        origin = sources.get(exc.key or "", "")
        if not origin.startswith("env "):
            raise
        reason = str(exc).removeprefix(f"{exc.key}: ")
        raise ConfigError(f"{reason} (set by {origin[4:]})", key=exc.key) from exc
    return replace(
        settings, warnings=(*warnings, *settings.warnings), sources=dict(sorted(sources.items()))
    )


def _parse(data: dict[str, Any], doc: Mapping[str, Any], path: Path | None) -> Settings:
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
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{file} is not a text file (UTF-8 TOML expected)", key="--config"
        ) from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}", key="--config") from exc
    return parse_settings(doc, environ=environ, path=file)

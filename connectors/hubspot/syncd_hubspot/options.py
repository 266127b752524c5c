"""The HubSpot target's options table, validated once at start-up.

Every mistake names its key (``targets.<name>.<key>``) so ``syncd check`` can point at the line
to fix. Unknown keys are refused: a misspelt ``marker_propery`` would otherwise silently turn
crash recovery off.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from syncd.plugin import ConfigError, TargetContext

__all__ = ["DEFAULT_HOST", "HubSpotOptions", "Limit", "parse_options"]

DEFAULT_HOST = "https://api.hubapi.com"

# HubSpot property names: lowercase letters, digits and underscores, starting with a letter.
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")

KeyFn = Callable[[str], str]

_KNOWN_KEYS = frozenset(
    {
        "access_token",
        "access_token_env",
        "access_token_file",
        "host",
        "activity",
        "emergency_task",
        "task_owner_id",
        "caller_key_property",
        "marker_property",
        "contact_fields",
        "rate_limit",
        "search_rate_limit",
        "timeout",
        "deadline",
        "in_values_cap",
        "company_directory_max",
        "company_directory_refresh",
        "colleague_memo_ttl",
        "colleague_memo_max",
        "max_retries",
        "backoff_cap",
    }
)


@dataclass(frozen=True, slots=True)
class Limit:
    """``calls`` requests per ``period`` seconds (a rolling window)."""

    calls: int
    period: float


@dataclass(frozen=True, slots=True)
class HubSpotOptions:
    access_token: str = field(repr=False)
    host: str = DEFAULT_HOST
    activity: Literal["note", "call"] = "note"
    emergency_task: bool = True
    task_owner_id: str | None = None
    caller_key_property: str = "syncd_key"
    marker_property: str = "syncd_marker"
    # label (as the planner names a custom field) -> HubSpot contact property
    contact_fields: Mapping[str, str] = field(default_factory=dict)
    rate_limit: Limit = Limit(100, 10.0)
    search_rate_limit: Limit = Limit(4, 1.0)
    timeout: float = 30.0
    # Seconds one HTTP exchange may take in all, however the server trickles its answer.
    deadline: float = 60.0
    # Values per IN filter. HubSpot documents no cap (searched: the CRM search guide and the
    # 2024 filtering changelog name none); 100 keeps request bodies modest.
    in_values_cap: int = 100
    # Companies are listed and matched in memory up to this many (0: always search them), and
    # listed again after this many seconds. See syncd_hubspot.companies.
    company_directory_max: int = 5000
    company_directory_refresh: float = 900.0
    # A company word's contacts are searched again after this many seconds (0: every
    # lookup). See syncd_hubspot.colleagues.
    colleague_memo_ttl: float = 120.0
    colleague_memo_max: int = 40_000
    # Attempts after the first for a 429/5xx/network failure, and the longest single wait.
    max_retries: int = 5
    backoff_cap: float = 30.0


def _secure_or_loopback(url: str) -> bool:
    """https anywhere; http only when the *host* is loopback (not a prefix match, which
    ``http://localhost.evil.example`` would pass)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.scheme not in ("https", "http"):
        return False
    if parts.scheme == "https" or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_options(context: TargetContext) -> HubSpotOptions:
    """Validate ``context.options``; raise :class:`ConfigError` naming the offending key."""
    opts = context.options
    prefix = f"targets.{context.name}"

    def key(name: str) -> str:
        return f"{prefix}.{name}"

    unknown = sorted(set(opts) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown HubSpot option (known: {', '.join(sorted(_KNOWN_KEYS))})", key=key(unknown[0])
        )

    try:
        token = context.secret("access_token")
    except ConfigError as exc:  # re-raise with the full key path
        raise ConfigError(str(exc).split(": ", 1)[-1], key=key(exc.key or "access_token")) from exc
    if not token:
        raise ConfigError(
            "is required: set access_token_env (a variable name), access_token_file"
            " or access_token",
            key=key("access_token_env"),
        )

    host = _string(opts, "host", DEFAULT_HOST, key)
    if not _secure_or_loopback(host):
        # The access token travels in every request: plain http only to a loopback emulator.
        raise ConfigError("must be an https:// URL (plain http on loopback only)", key=key("host"))
    activity = _string(opts, "activity", "note", key)
    if activity not in ("note", "call"):
        raise ConfigError(f"must be 'note' or 'call', not {activity!r}", key=key("activity"))

    task_owner = opts.get("task_owner_id")
    if task_owner is not None and (
        isinstance(task_owner, bool) or not isinstance(task_owner, (str, int))
    ):
        raise ConfigError("must be a HubSpot owner id", key=key("task_owner_id"))

    return HubSpotOptions(
        access_token=token,
        host=host.rstrip("/"),
        activity="call" if activity == "call" else "note",
        emergency_task=_flag(opts, "emergency_task", True, key),
        task_owner_id=str(task_owner) if task_owner not in (None, "") else None,
        caller_key_property=_property(opts, "caller_key_property", "syncd_key", key),
        marker_property=_property(opts, "marker_property", "syncd_marker", key),
        contact_fields=_contact_fields(opts.get("contact_fields", {}), key("contact_fields")),
        rate_limit=_limit(opts, "rate_limit", Limit(100, 10.0), key),
        search_rate_limit=_limit(opts, "search_rate_limit", Limit(4, 1.0), key),
        timeout=_number(opts, "timeout", 30.0, key),
        deadline=_number(opts, "deadline", 60.0, key),
        in_values_cap=int(_number(opts, "in_values_cap", 100, key, integer=True)),
        company_directory_max=int(
            _number(opts, "company_directory_max", 5000, key, integer=True, allow_zero=True)
        ),
        company_directory_refresh=_number(opts, "company_directory_refresh", 900.0, key),
        colleague_memo_ttl=_number(opts, "colleague_memo_ttl", 120.0, key, allow_zero=True),
        colleague_memo_max=int(
            _number(opts, "colleague_memo_max", 40_000, key, integer=True, allow_zero=True)
        ),
        max_retries=int(_number(opts, "max_retries", 5, key, integer=True, allow_zero=True)),
        backoff_cap=_number(opts, "backoff_cap", 30.0, key),
    )


def _string(opts: Mapping[str, Any], name: str, default: str, key: KeyFn) -> str:
    value = opts.get(name, default)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"expected a non-empty string, got {value!r}", key=key(name))
    return value.strip()


def _flag(opts: Mapping[str, Any], name: str, default: bool, key: KeyFn) -> bool:
    value = opts.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", key=key(name))
    return value


def _property(opts: Mapping[str, Any], name: str, default: str, key: KeyFn) -> str:
    """A HubSpot property name, or "" to switch the feature off."""
    value = opts.get(name, default)
    if not isinstance(value, str):
        raise ConfigError(f'expected a property name or "", got {value!r}', key=key(name))
    if value and not _PROPERTY_NAME.match(value):
        raise ConfigError(f"{value!r} is not a HubSpot property name", key=key(name))
    return value


def _number(
    opts: Mapping[str, Any],
    name: str,
    default: float,
    key: KeyFn,
    *,
    integer: bool = False,
    allow_zero: bool = False,
) -> float:
    raw = opts.get(name, default)
    wrong_kind = isinstance(raw, bool) or not isinstance(raw, int if integer else (int, float))
    value = math.nan if wrong_kind else float(raw)
    if not math.isfinite(value):
        raise ConfigError(
            f"expected a {'whole ' if integer else ''}number, got {raw!r}", key=key(name)
        )
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"must be {'zero or more' if allow_zero else 'positive'}", key=key(name))
    return value


def _limit(opts: Mapping[str, Any], name: str, default: Limit, key: KeyFn) -> Limit:
    table = opts.get(name)
    if table is None:
        return default
    if not isinstance(table, Mapping):
        raise ConfigError("expected a table {calls = N, period = seconds}", key=key(name))
    extra = set(table) - {"calls", "period"}
    if extra:
        raise ConfigError("unknown key", key=key(f"{name}.{sorted(extra)[0]}"))

    def sub(part: str) -> str:
        return key(f"{name}.{part}")

    calls = _number(table, "calls", default.calls, lambda _: sub("calls"), integer=True)
    period = _number(table, "period", default.period, lambda _: sub("period"))
    return Limit(int(calls), period)


def _contact_fields(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError('expected a table of label = "hubspot_property"', key=key)
    fields: dict[str, str] = {}
    for label, prop in value.items():
        if not isinstance(prop, str) or not _PROPERTY_NAME.match(prop):
            raise ConfigError(f"{prop!r} is not a HubSpot property name", key=f"{key}.{label}")
        fields[str(label)] = prop
    return fields

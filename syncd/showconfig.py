"""``syncd check --show-config``: every key's effective value and where it came from.

One line per key, ``key = value  # source``, the source being ``file``, ``env NAME`` or
``default``. Secrets never print: a secret shows only whether it is set and from where, and a
database URL loses its password.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from syncd.config import (
    SECRET_WORDS,
    AccountSettings,
    DaemonSettings,
    MatchPolicy,
    Settings,
    TargetSettings,
)
from syncd.connector import read_secret
from syncd.errors import ConfigError
from syncd.owners.settings import OwnerSettings
from syncd.startup import masked_url

__all__ = ["config_lines", "print_config"]

_MASK = "********"
_SECRET_VALUES = {"alert_webhook_url", "token"}  # a webhook URL is a bearer credential


def _is_secret(key: str) -> bool:
    if key.endswith(("_env", "_file")):
        return False  # a variable's name or a path, not the secret
    return key in _SECRET_VALUES or any(word in key for word in SECRET_WORDS)


def _render(value: Any) -> str:
    if isinstance(value, ZoneInfo):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, Mapping):
        value = dict(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _source(sources: Mapping[str, str], key: str) -> str:
    if key in sources:
        return sources[key]
    # Where a secret was read from: its *_env / *_file key, itself from file or env.
    for suffix in ("_env", "_file"):
        if f"{key}{suffix}" in sources:
            return f"{sources[key + suffix]} via {key.rsplit('.', 1)[-1]}{suffix}"
    return "default"


def _line(sources: Mapping[str, str], key: str, value: Any) -> tuple[str, str, str]:
    name = key.rsplit(".", 1)[-1]
    secret = _is_secret(name)
    if secret:
        shown = _MASK if value else "(not set)"
    elif name == "database_url" and isinstance(value, str):
        shown = _render(masked_url(value))
    else:
        shown = _render(value)
    return key, shown, _source(sources, key)


def config_lines(settings: Settings) -> Iterator[tuple[str, str, str]]:
    """(key, shown value, source) for every key, in file order: [syncd], accounts, targets."""
    src = settings.sources
    for f in fields(DaemonSettings):
        yield _line(src, f"syncd.{f.name}", getattr(settings.daemon, f.name))
    for account in settings.accounts.values():
        for f in fields(AccountSettings):
            if f.name != "name":
                yield _line(src, f"accounts.{account.name}.{f.name}", getattr(account, f.name))
    for target in settings.targets.values():
        yield from _target_lines(src, target)


def _target_lines(src: Mapping[str, str], target: TargetSettings) -> Iterator[tuple[str, str, str]]:
    prefix = f"targets.{target.name}"
    for f in fields(TargetSettings):
        if f.name in ("name", "options"):
            continue
        value = getattr(target, f.name)
        if isinstance(value, MatchPolicy):
            for m in fields(MatchPolicy):
                yield _line(src, f"{prefix}.match.{m.name}", getattr(value, m.name))
        elif isinstance(value, OwnerSettings):
            for key, owned in value.as_config().items():
                yield _line(src, f"{prefix}.{key}", owned)
        else:
            yield _line(src, f"{prefix}.{f.name}", value)
    for key, value in target.options.items():
        if key != "contact_fields":  # the same map as above, handed to the connector
            yield _line(src, f"{prefix}.{key}", value)
    # Secrets the connector reads from *_env / *_file: show that they resolve, never the value.
    suffixed = [k for k in target.options if k.endswith(("_env", "_file"))]
    for base in dict.fromkeys(k.rsplit("_", 1)[0] for k in suffixed):
        if base in target.options:
            continue
        try:
            found = read_secret(target.options, base)
        except ConfigError:
            found = None
        yield _line(src, f"{prefix}.{base}", found)


def print_config(settings: Settings, out: TextIO) -> None:
    lines = list(config_lines(settings))
    width = max((len(k) + len(v) for k, v, _ in lines), default=0) + 3
    out.write(f"# effective configuration ({settings.path or 'in memory'})\n")
    for key, shown, source in lines:
        out.write(f"{f'{key} = {shown}':<{width}}  # {source}\n")

"""The owner settings of one target (keys of its ``[targets.NAME]`` table).

```toml
owner_rules = ["record", "mapping", "name", "round_robin", "default"]   # the order tried
owners = { "Front desk" = "frontdesk@example.com", "Sales" = "0051x000001AbCd" }
owner_round_robin = ["ana@example.com", "ben@example.com"]  # new records only
default_owner = "office@example.com"
owner_on_new_records = true     # a contact/lead syncd creates gets the owner too
owners_refresh_seconds = 3600   # how long the CRM's user list is reused
```

Users are named by email or by CRM user id. Without any of ``owners``, ``owner_rules``,
``owner_round_robin`` or ``default_owner`` a target assigns no owner (the CRM's default),
exactly as before owners existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from syncd.errors import ConfigError
from syncd.owners.rules import normalize_name

__all__ = ["OWNER_KEYS", "RULES", "OwnerSettings", "parse_owner_settings"]

RULES = ("record", "mapping", "name", "round_robin", "default")
OWNER_KEYS = (
    "owner_rules",
    "owners",
    "owner_round_robin",
    "default_owner",
    "owner_on_new_records",
    "owners_refresh_seconds",
)
_ENABLING = ("owner_rules", "owners", "owner_round_robin", "default_owner")


@dataclass(frozen=True)
class OwnerSettings:
    enabled: bool = False
    rules: tuple[str, ...] = RULES
    # normalized "delivered to" label -> a user's email or id
    mapping: Mapping[str, str] = field(default_factory=dict)
    round_robin: tuple[str, ...] = ()
    default: str | None = None
    on_new_records: bool = False
    refresh_seconds: float = 3600.0

    def as_config(self) -> dict[str, Any]:
        """The settings under their config keys (``syncd check --show-config``); mapped
        names appear normalized, as they are compared."""
        return {
            "owner_rules": list(self.rules),
            "owners": dict(self.mapping),
            "owner_round_robin": list(self.round_robin),
            "default_owner": self.default,
            "owner_on_new_records": self.on_new_records,
            "owners_refresh_seconds": self.refresh_seconds,
        }


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("expected a user's email or id (a non-empty string)", key=key)
    return value.strip()


def parse_owner_settings(table: Mapping[str, Any], prefix: str) -> OwnerSettings:
    """The owner keys of a target table; every problem is a ConfigError naming its key."""
    rules_value = table.get("owner_rules", list(RULES))
    if not isinstance(rules_value, list) or not rules_value:
        raise ConfigError(
            f"expected a list drawn from {', '.join(RULES)}", key=f"{prefix}.owner_rules"
        )
    rules: list[str] = []
    for rule in rules_value:
        if rule not in RULES or rule in rules:
            raise ConfigError(
                f"each of {', '.join(RULES)} at most once; got {rule!r}",
                key=f"{prefix}.owner_rules",
            )
        rules.append(rule)
    raw_map = table.get("owners", {})
    if not isinstance(raw_map, dict):
        raise ConfigError(
            'expected a table: { "Front desk" = "user@example.com" }', key=f"{prefix}.owners"
        )
    mapping: dict[str, str] = {}
    for label, ref in raw_map.items():
        norm = normalize_name(str(label))
        if not norm:
            raise ConfigError("an empty name cannot be mapped", key=f"{prefix}.owners")
        if norm in mapping:
            raise ConfigError(
                f"{label!r} is mapped twice (names compare normalized)", key=f"{prefix}.owners"
            )
        mapping[norm] = _text(ref, f"{prefix}.owners.{label}")
    rr = table.get("owner_round_robin", [])
    if not isinstance(rr, list):
        raise ConfigError(
            "expected a list of users' emails or ids", key=f"{prefix}.owner_round_robin"
        )
    round_robin = tuple(_text(r, f"{prefix}.owner_round_robin") for r in rr)
    default = table.get("default_owner")
    on_new = table.get("owner_on_new_records", False)
    if not isinstance(on_new, bool):
        raise ConfigError("expected true or false", key=f"{prefix}.owner_on_new_records")
    refresh = table.get("owners_refresh_seconds", 3600)
    if isinstance(refresh, bool) or not isinstance(refresh, int | float) or refresh <= 0:
        raise ConfigError(
            "expected a number of seconds > 0", key=f"{prefix}.owners_refresh_seconds"
        )
    return OwnerSettings(
        enabled=any(k in table for k in _ENABLING),
        rules=tuple(rules),
        mapping=mapping,
        round_robin=round_robin,
        default=None if default is None else _text(default, f"{prefix}.default_owner"),
        on_new_records=on_new,
        refresh_seconds=float(refresh),
    )

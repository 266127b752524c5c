"""Just enough TOML writing for sandbox configs (the stdlib reads TOML but cannot write it)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps"]


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{ " + ", ".join(f"{json.dumps(str(k))} = {_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dumps(doc: Mapping[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            tables.append((f"{prefix}{json.dumps(str(key))}", value))
        else:
            lines.append(f"{json.dumps(str(key))} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        nested = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        out += f"\n[{name}]\n" + "".join(
            f"{json.dumps(str(k))} = {_value(v)}\n" for k, v in scalars.items()
        )
        if nested:
            out += dumps(nested, prefix=f"{name}.")
    return out

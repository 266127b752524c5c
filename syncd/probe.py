"""``syncd health``: the container HEALTHCHECK, following the configured health address.

Reads only ``[syncd] health_address`` (file, then the documented environment override) so a
probe every 30 seconds stays cheap, then asks the running daemon's ``/readyz`` (or ``/healthz``
with ``--live``). Exit 0 when it answers 200; 1 otherwise, with the reason on one line.
A wildcard bind address (``0.0.0.0``, ``[::]``) is probed on loopback.
"""

from __future__ import annotations

import os
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from syncd.config import DaemonSettings, apply_env_overrides, parse_address
from syncd.errors import ConfigError

__all__ = ["health_url", "probe"]


def health_url(config_path: str, environ: dict[str, str] | None = None) -> str | None:
    """The base URL of the daemon's health endpoint, or None when it is turned off."""
    try:
        doc: dict[str, Any] = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {config_path}: {exc}", key="--config") from exc
    doc = apply_env_overrides(doc, os.environ if environ is None else environ)
    table = doc.get("syncd", {})
    address = table.get("health_address", DaemonSettings.health_address)
    if not isinstance(address, str):
        raise ConfigError("expected a string", key="syncd.health_address")
    try:
        parsed = parse_address(address)
    except ValueError as exc:
        raise ConfigError(str(exc), key="syncd.health_address") from exc
    if parsed is None:
        return None
    host, port = parsed
    if host in ("0.0.0.0", ""):  # noqa: S104 - a wildcard bind is reached on loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def probe(config_path: str, *, live: bool = False, timeout: float = 4.0) -> int:
    base = health_url(config_path)
    if base is None:
        print('syncd health: health_address is off (""): nothing to probe', file=sys.stderr)
        return 1
    url = base + ("/healthz" if live else "/readyz")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - http only
            body = answer.read(500).decode("utf-8", "replace").strip()
            print(f"{url}: {answer.status} {body}")
            return 0
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", "replace").strip()
        print(f"syncd health: {url}: {exc.code} {body}", file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"syncd health: {url}: not answering ({reason})", file=sys.stderr)
    return 1

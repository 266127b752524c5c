"""``syncd check``: the config parses, the source and every CRM answer with our credentials.

Prints one line per check; never prints a credential. Exit 0 when all pass, 3 when a
credential is refused, 1 for anything else that failed.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TextIO

from syncd.config import Settings
from syncd.connector import TargetContext, available, load_factory
from syncd.console.security import exposure_warnings
from syncd.errors import AuthError, SyncdError
from syncd.models import CheckResult
from syncd.owners.check import owner_checks
from syncd.source.client import BerkshireClient

__all__ = ["run_check"]


def _line(out: TextIO, result: CheckResult) -> None:
    mark = "ok  " if result.ok else "FAIL"
    out.write(f"[{mark}] {result.name}{': ' + result.detail if result.detail else ''}\n")


def run_check(settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # looked up now: a default bound at import outlives a redirect
    results: list[CheckResult] = [CheckResult("config", True, str(settings.path or "in memory"))]
    results += [CheckResult("config warning", False, w) for w in settings.warnings]
    exposed = exposure_warnings(settings.daemon.health_address, settings.daemon.console_token)
    results += [CheckResult("config warning", False, w) for w in exposed]
    results.append(_check_database(settings.daemon.database_url))
    health = _check_health_port(settings.daemon.health_address)
    if health is not None:
        results.append(health)
    auth_failed = False
    for account in settings.accounts.values():
        name = f"source account {account.name} ({account.base_url})"
        today = datetime.now(UTC).astimezone(account.timezone).date()
        try:
            with BerkshireClient(
                account.base_url,
                account.email,
                account.token,
                timeout=account.timeout_seconds,
                max_attempts=2,
            ) as client:
                items = client.list_raw(today, today)
            results.append(
                CheckResult(name, True, f"token accepted; {len(items)} message(s) today")
            )
        except AuthError as exc:
            auth_failed = True
            results.append(CheckResult(name, False, str(exc)))
        except SyncdError as exc:
            results.append(CheckResult(name, False, f"unreachable: {exc}"))
    registered = available()
    for target in settings.targets.values():
        name = f"target {target.name} ({target.type})"
        if target.type not in registered:
            results.append(CheckResult(name, False, f"no connector {target.type!r} installed"))
            continue
        try:
            connector = load_factory(target.type)(
                TargetContext(name=target.name, options=target.options)
            )
            try:
                for result in connector.check():
                    auth_failed |= result.auth_failed
                    results.append(
                        CheckResult(
                            f"{name}: {result.name}", result.ok, result.detail, result.auth_failed
                        )
                    )
                for result in owner_checks(connector, target.name, target.owners):
                    named = result.name if result.name == "config warning" else f"{name}: owners"
                    results.append(CheckResult(named, result.ok, result.detail))
            finally:
                connector.close()
        except AuthError as exc:
            auth_failed = True
            results.append(CheckResult(name, False, str(exc)))
        except SyncdError as exc:
            results.append(CheckResult(name, False, str(exc)))
    for result in results:
        _line(out, result)
    if auth_failed:
        return 3
    return 0 if all(r.ok for r in results if r.name != "config warning") else 1


def _check_database(url: str) -> CheckResult:
    """The state store opens and answers; its schema revision against this version's head."""
    from syncd.startup import database_startup, masked_url
    from syncd.store import migrate
    from syncd.store.store import Store

    name = f"database {masked_url(url)}"
    try:
        with database_startup(url):
            store = Store(url)
            try:
                store.ping()
                current = store.schema_revision()
            finally:
                store.close()
    except SyncdError as exc:
        return CheckResult(name, False, str(exc).removeprefix("syncd.database_url: "))
    head = migrate.head_revision()
    if current == head:
        return CheckResult(name, True, f"reachable; schema at {current}")
    return CheckResult(
        name, True, f"reachable; schema at {current}, `syncd migrate` takes it to {head}"
    )


def _check_health_port(address: str) -> CheckResult | None:
    """The health address can be bound, or a syncd already answers there."""
    import socket
    import urllib.error
    import urllib.request

    from syncd.config import parse_address

    parsed = parse_address(address)
    if parsed is None:
        return None
    host, port = parsed
    name = f"health address {address}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, port))
        return CheckResult(name, True, "free to listen on")
    except OSError as exc:
        bind_error = exc.strerror or str(exc)
    probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    url = (
        f"http://[{probe_host}]:{port}/healthz"
        if ":" in probe_host
        else f"http://{probe_host}:{port}/healthz"
    )
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:  # noqa: S310 - http on our address
            server = answer.headers.get("Server", "")
    except urllib.error.HTTPError as exc:  # a syncd that is not alive answers 503
        server = exc.headers.get("Server", "")
    except OSError:
        server = ""
    if server.startswith("syncd-health"):
        return CheckResult(name, True, "in use by a running syncd (it answers /healthz)")
    return CheckResult(name, False, f"cannot listen: {bind_error}")

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

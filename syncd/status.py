"""``syncd status``: what the store knows, as a table on a terminal or JSON for machines.

Built from the store alone (no CRM or source is contacted) and never shows a secret: the
database URL is printed with its password hidden.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy.engine import make_url

from syncd.config import Settings
from syncd.store.alertbox import alerts_unsent
from syncd.store.breaker import breaker_states
from syncd.store.store import Store

__all__ = ["collect_status", "print_status"]


def collect_status(settings: Settings, store: Store) -> dict[str, Any]:
    now = datetime.now(UTC)
    cursors = store.cursor_positions()
    oldest = store.oldest_pending()
    counts = store.counts()
    breakers = breaker_states(store)
    return {
        "database": make_url(settings.daemon.database_url).render_as_string(hide_password=True),
        "schema_revision": store.schema_revision(),
        "messages": store.message_count(),
        "accounts": {
            name: {
                "timezone": str(acct.timezone),
                "targets": list(acct.targets),
                "cursor": cursors[name].isoformat() if name in cursors else None,
            }
            for name, acct in settings.accounts.items()
        },
        "targets": {
            name: {
                "type": target.type,
                "deliveries": counts.get(name, {}),
                "oldest_pending": oldest[name].isoformat() if name in oldest else None,
                "oldest_pending_age_seconds": int((now - oldest[name]).total_seconds())
                if name in oldest
                else None,
                # Circuit breaker: whole-batch failures in a row, paused until open_until.
                "breaker": breakers[name].as_dict() if name in breakers else None,
            }
            for name, target in settings.targets.items()
        },
        "last_runs": store.last_runs(5),
        "dead": store.problems(["dead"]),
        "review": store.problems(["review"]),
        "passed_over": store.passed_over(),
        "quarantined": store.quarantined(),
        "alerts_unsent": alerts_unsent(store),
    }


def print_status(status: dict[str, Any], out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(status, sort_keys=True, default=str) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, width=110)
    console.print(
        f"[bold]syncd status[/bold]  database {status['database']}  "
        f"schema {status['schema_revision']}  messages {status['messages']}"
    )
    accounts = Table(title="accounts")
    for col in ("account", "time zone", "targets", "cursor"):
        accounts.add_column(col)
    for name, a in status["accounts"].items():
        accounts.add_row(
            name, a["timezone"], ", ".join(a["targets"]), a["cursor"] or "never polled"
        )
    console.print(accounts)
    targets = Table(title="deliveries by state")
    states = ("pending", "in_flight", "retry", "done", "skipped", "review", "dead")
    targets.add_column("target")
    for state in states:
        targets.add_column(state, justify="right")
    targets.add_column("oldest pending")
    for name, t in status["targets"].items():
        age = t["oldest_pending_age_seconds"]
        targets.add_row(
            name,
            *(str(t["deliveries"].get(s, 0)) for s in states),
            "-" if age is None else f"{age}s",
        )
    console.print(targets)
    for name, t in status["targets"].items():
        breaker = t.get("breaker") or {}
        if breaker.get("open_until"):
            console.print(
                f"[red]{name}: paused until {breaker['open_until'][:19]} after "
                f"{breaker['failures']} failed batches[/red] ({(breaker['reason'] or '')[:80]})"
            )
    if status.get("alerts_unsent"):
        console.print(f"[yellow]{status['alerts_unsent']} alert(s) not yet sent[/yellow]")
    runs = Table(title="last runs")
    for col in ("id", "kind", "started", "status", "error"):
        runs.add_column(col)
    for r in status["last_runs"]:
        runs.add_row(
            str(r["id"]), r["kind"], r["started_at"][:19], r["status"], (r["error"] or "")[:60]
        )
    console.print(runs)
    for title, rows in (("dead letters", status["dead"]), ("held for review", status["review"])):
        if rows:
            table = Table(title=title)
            for col in ("delivery", "target", "account", "message", "attempts", "reason"):
                table.add_column(col)
            for r in rows:
                table.add_row(
                    str(r["delivery_id"]),
                    r["target"],
                    r["account"],
                    r["message_id"],
                    str(r["attempts"]),
                    (r["reason"] or "")[:60],
                )
            console.print(table)
    if status["passed_over"]:
        table = Table(title="attached to the best of equal matches")
        for col in ("delivery", "target", "message", "record", "passed over"):
            table.add_column(col)
        for r in status["passed_over"]:
            table.add_row(
                str(r["delivery_id"]),
                r["target"],
                r["message_id"],
                r["record_id"] or "",
                ", ".join(r["passed_over"])[:60],
            )
        console.print(table)
    if status["quarantined"]:
        console.print(
            f"[yellow]{len(status['quarantined'])} source payload(s) quarantined[/yellow] "
            "(see status --json for reasons)"
        )

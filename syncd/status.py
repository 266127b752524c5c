"""``syncd status``: what the store knows, as a table on a terminal or JSON for machines.

Built from the store alone (no CRM or source is contacted) and never shows a secret: the
database URL is printed with its password hidden.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy.engine import make_url

from syncd.config import Settings
from syncd.history import Masker, message_history
from syncd.logging import redact_text
from syncd.match.emails import mask_emails_in
from syncd.match.phones import mask_phones_in
from syncd.store.alertbox import alerts_unsent
from syncd.store.breaker import breaker_states
from syncd.store.owners import owner_summary
from syncd.store.source_state import open_gaps
from syncd.store.store import State, Store

__all__ = ["collect_status", "print_message_log", "print_status"]


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
        "dead": store.problems([State.DEAD]),
        "review": store.problems([State.REVIEW]),
        "passed_over": store.passed_over(),
        "quarantined": [_masked(q) for q in store.quarantined()],
        # Days the catch-up cap skipped, with the command that fills them.
        "source_gaps": [
            {
                "account": gap.account,
                "first_day": gap.first_day.isoformat(),
                "last_day": gap.last_day.isoformat(),
                "days_missing": gap.missing,
                "found_at": gap.found_at.isoformat(),
                "command": gap.command(),
            }
            for gap in open_gaps(store)
        ],
        # Per target: owners assigned (by rule) and the messages that fell back, with why.
        "owners": owner_summary(store),
        "alerts_unsent": alerts_unsent(store),
    }


def _masked(item: dict[str, Any]) -> dict[str, Any]:
    """A quarantined payload as status shows it: caller data is personal, so phones and emails
    are masked as in logs (and secrets cut out) wherever they sit in the payload or reason."""

    def mask(text: str | None) -> str | None:
        return None if text is None else mask_emails_in(mask_phones_in(redact_text(text)))

    return {**item, "raw": mask(item["raw"]), "reason": mask(item["reason"])}


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
    states = (
        State.PENDING,
        State.IN_FLIGHT,
        State.RETRY,
        State.DONE,
        State.SKIPPED,
        State.REVIEW,
        State.DEAD,
    )
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
        _print_table(
            console,
            title,
            ("delivery", "target", "account", "message", "attempts", "reason"),
            [
                (
                    str(r["delivery_id"]),
                    r["target"],
                    r["account"],
                    r["message_id"],
                    str(r["attempts"]),
                    (r["reason"] or "")[:60],
                )
                for r in rows
            ],
        )
    _print_table(
        console,
        "attached to the best of equal matches",
        ("delivery", "target", "message", "record", "passed over"),
        [
            (
                str(r["delivery_id"]),
                r["target"],
                r["message_id"],
                r["record_id"] or "",
                ", ".join(r["passed_over"])[:60],
            )
            for r in status["passed_over"]
        ],
    )
    _print_owners(status.get("owners", {}), console)
    _print_table(
        console,
        "days never polled (catch-up cap): run these to fill them",
        ("account", "days", "missing", "command"),
        [
            (
                g["account"],
                f"{g['first_day']} .. {g['last_day']}",
                str(g["days_missing"]),
                g["command"],
            )
            for g in status["source_gaps"]
        ],
    )
    _print_table(
        console,
        "quarantined source payloads (phones and emails masked)",
        ("id", "account", "message", "reason", "payload"),
        [
            (
                str(q["id"]),
                q["account"],
                (q["message_id"] or "-")[:40],
                (q["reason"] or "")[:60],
                (q["raw"] or "")[:80],
            )
            for q in status["quarantined"]
        ],
    )


def _print_owners(owners: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    if not owners:
        return
    table = Table(title="owners assigned")
    for col in ("target", "assigned", "by rule"):
        table.add_column(col)
    for name, o in owners.items():
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(o["by_rule"].items()))
        table.add_row(name, str(o["owners_assigned"]), rules)
    console.print(table)
    fell = [(name, f) for name, o in owners.items() for f in o["fell_back"]]
    if fell:
        table = Table(title="messages whose owner fell back to the default (or to none)")
        for col in ("target", "message", "owner", "why"):
            table.add_column(col, overflow="fold")
        for name, f in fell:
            table.add_row(name, f["message_id"], f["owner_id"] or "CRM default", f["why"])
        console.print(table)


def print_message_log(
    settings: Settings, store: Store, message_id: str, out: TextIO, as_json: bool
) -> int:
    """``syncd status --message ID``: the message's sync log (each attempt per target, the
    match decision and its key, record ids, errors). Phones and emails masked as in logs.
    Exit 1 when no message has that id."""
    mask = Masker(show_pii=not settings.daemon.mask_phones)
    logs = mask.view(message_history(store, message_id))
    if as_json:
        out.write(json.dumps({"message_id": message_id, "messages": logs}, sort_keys=True) + "\n")
    else:
        _print_logs(logs, out)
    if not logs:
        if not as_json:
            out.write(f"no message {message_id!r} in the store\n")
        return 1
    return 0


def _print_logs(logs: list[dict[str, Any]], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, width=120)
    for log in logs:
        msg = log["message"]
        console.print(
            f"[bold]message {log['message_id']}[/bold]  account {log['account']}  "
            f"version {log['version']}  first seen {log['first_seen_at']}"
        )
        console.print(
            f"  caller {msg['caller']}  phone {msg['phone'] or msg['caller_id'] or '-'}  "
            f"company {msg['company'] or '-'}  at {msg['created_at'] or '-'}"
        )
        for d in log["deliveries"]:
            record = f"{d['record_kind'] or 'record'} {d['record_id']}" if d["record_id"] else "-"
            console.print(
                f"  [bold]{d['target']}[/bold]: {d['state']} after {d['attempts']} attempt(s); "
                f"record {record}; activity {d['activity_id'] or '-'}"
            )
            table = Table(show_edge=False, pad_edge=False)
            for col in ("at", "attempt", "event", "decision", "record", "error"):
                table.add_column(col, overflow="fold")
            for e in d["events"]:
                table.add_row(
                    (e["at"] or "")[:19],
                    "" if e["attempt"] is None else str(e["attempt"]),
                    e["kind"] + (f" ({e['action']})" if e["action"] else ""),
                    e["decision"] or "",
                    e["record_id"] or "",
                    (e["error"] or "")[:200],
                )
            console.print(table)


def _print_table(
    console: Any, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """One titled table, printed only when it has rows."""
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)

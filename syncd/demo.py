"""``syncd demo``: the whole job on the bundled sandbox, no credentials, no network.

Two cycles run over the same window and state: the first syncs, the second (``repoll``)
must write nothing, which is dedupe made visible.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from syncd.config import Settings, parse_settings
from syncd.daemon import CycleReport, Daemon
from syncd.sandbox.world import SandboxWorld
from syncd.store.owners import owners_assigned

__all__ = ["run_demo", "sandbox_settings"]

COUNT_KEYS = (
    "messages_fetched",
    "messages_new",
    "contacts_created",
    "contacts_updated",
    "activities_logged",
    "review",
    "failed",
)


def _counts(report: CycleReport, requests: dict[str, int]) -> dict[str, Any]:
    ingest = report.ingest
    targets: dict[str, Any] = {}
    for name in requests:
        stats = report.targets.get(name)
        targets[name] = {
            "messages_fetched": ingest.fetched,
            "messages_new": ingest.new,
            "contacts_created": stats.contacts_created if stats else 0,
            "contacts_updated": stats.contacts_updated if stats else 0,
            "activities_logged": stats.activities_logged if stats else 0,
            "review": stats.review if stats else 0,
            "failed": stats.failed if stats else 0,
            "crm_requests": requests[name],
        }
    out: dict[str, Any] = {key: 0 for key in COUNT_KEYS}
    out["messages_fetched"] = ingest.fetched
    out["messages_new"] = ingest.new
    for t in targets.values():
        for key in (
            "contacts_created",
            "contacts_updated",
            "activities_logged",
            "review",
            "failed",
        ):
            out[key] += t[key]
    out["crm_requests"] = sum(requests.values())
    out["seconds"] = round(report.seconds, 3)
    out["targets"] = targets
    return out


def _add_owners(summary: dict[str, Any], after: dict[str, int], before: dict[str, int]) -> None:
    """``owners_assigned`` (contract): activities and tasks given an owner resolved from the
    CRM, per target and in total."""
    for name, t in summary["targets"].items():
        t["owners_assigned"] = after.get(name, 0) - before.get(name, 0)
    summary["owners_assigned"] = sum(t["owners_assigned"] for t in summary["targets"].values())


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after}


def _source_requests(world: SandboxWorld) -> dict[str, int]:
    berkshire = world.berkshire
    if berkshire is None:
        return {"list": 0, "detail": 0}
    return {"list": berkshire.list_requests, "detail": berkshire.detail_requests}


def sandbox_settings(world: SandboxWorld, database_url: str, **daemon: Any) -> Settings:
    """The settings pointing syncd at ``world``; ``daemon`` overrides ``[syncd]`` keys."""
    # The sandbox must not pick up an operator's SYNCD_* variables (their database!).
    return parse_settings(world.settings_doc(database_url, **daemon), environ={})


def run_demo(
    *,
    messages: int = 200,
    callers: int | None = None,
    as_json: bool = False,
    seed: int = 7,
    out: TextIO | None = None,
) -> int:
    # sys.stdout as it is now, not as it was at import (a caller may have redirected it).
    out = out or sys.stdout
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="syncd-demo-") as tmp,
        SandboxWorld(messages=messages, callers=callers, seed=seed) as world,
    ):
        settings = sandbox_settings(world, f"sqlite:///{Path(tmp) / 'state.db'}")
        daemon = Daemon(settings)
        try:
            daemon.migrate()
            before = world.crm_requests()
            source_before = _source_requests(world)
            first = daemon.run_cycle()
            owned_mid = owners_assigned(daemon.store)
            mid = world.crm_requests()
            source_mid = _source_requests(world)
            # Server-side counts by endpoint for the first cycle (the repoll makes none).
            by_endpoint = {
                name: dict(sorted(e.counts.items())) for name, e in world.emulators.items()
            }
            writes_mid = world.crm_writes()
            second = daemon.run_cycle()
            owned_after = owners_assigned(daemon.store)
            after = world.crm_requests()
            source_after = _source_requests(world)
            repoll_writes = sum(_delta(world.crm_writes(), writes_mid).values())
        finally:
            daemon.close()
        summary = _counts(first, _delta(mid, before))
        for name, counts in by_endpoint.items():
            summary["targets"][name]["requests_by_endpoint"] = counts
        _add_owners(summary, owned_mid, {})
        summary["repoll"] = _counts(second, _delta(after, mid))
        _add_owners(summary["repoll"], owned_after, owned_mid)
        summary["repoll"]["crm_writes"] = repoll_writes
        # Counted by the Berkshire simulator: a detail per new message, none on the re-poll.
        summary["source_requests"] = _delta(source_mid, source_before)
        summary["repoll"]["source_requests"] = _delta(source_after, source_mid)
        summary["seconds"] = round(time.monotonic() - started, 3)
        summary["exit_code"] = max(first.exit_code, second.exit_code)
        summary["errors"] = (
            first.errors + first.auth_failures + second.errors + second.auth_failures
        )
    if not as_json:
        _print_table(summary, out)
    else:
        out.write(json.dumps(summary, sort_keys=True) + "\n")
    return int(summary["exit_code"])


def _print_table(summary: dict[str, Any], out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, force_terminal=out.isatty(), width=100)
    table = Table(title="syncd demo: one sync cycle, then a re-poll of the same window")
    table.add_column("target")
    for heading in (
        "new msgs",
        "created",
        "updated",
        "activities",
        "review",
        "failed",
        "CRM requests",
        "owners",
    ):
        table.add_column(heading, justify="right")
    for name, t in summary["targets"].items():
        table.add_row(
            name,
            str(t["messages_new"]),
            str(t["contacts_created"]),
            str(t["contacts_updated"]),
            str(t["activities_logged"]),
            str(t["review"]),
            str(t["failed"]),
            str(t["crm_requests"]),
            str(t["owners_assigned"]),
        )
    console.print(table)
    repoll = summary["repoll"]
    quiet = repoll["crm_writes"] == 0 and repoll["activities_logged"] == 0
    console.print(
        f"fetched {summary['messages_fetched']} messages, {summary['messages_new']} new, "
        f"in {summary['seconds']}s.\n"
        f"re-poll: fetched {repoll['messages_fetched']}, new {repoll['messages_new']}, "
        f"activities {repoll['activities_logged']}, CRM writes {repoll['crm_writes']} "
        f"({'nothing written twice' if quiet else 'WROTE AGAIN'})."
    )
    for error in summary["errors"]:
        console.print(f"[red]error:[/red] {error}")

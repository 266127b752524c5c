"""Backfill progress: a rich progress bar on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from datetime import date
from typing import Any

import structlog

from syncd.daemon import CycleReport, Daemon
from syncd.deliver import DeliveryStats
from syncd.ingest import IngestStats, backfill_days
from syncd.store.records import State

__all__ = ["run_backfill"]

log = structlog.get_logger(__name__)
LOG_EVERY_SECONDS = 10.0


def run_backfill(
    daemon: Daemon,
    start: date,
    end: date,
    *,
    interactive: bool | None = None,
    refetch: bool = False,
) -> CycleReport:
    todo = sum(
        len(
            backfill_days(
                start, end, set() if refetch else daemon.store.done_days(name, start, end)
            )
        )
        for name in daemon.settings.accounts
    )
    total_days = ((end - start).days + 1) * len(daemon.settings.accounts)
    skipped = total_days - todo
    if skipped:
        log.info("backfill resumes", windows_done=skipped, windows_left=todo)
    interactive = sys.stderr.isatty() if interactive is None else interactive
    if not interactive:
        return _with_log_lines(daemon, start, end, todo, refetch)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description:>22}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[kind]}"),
        TextColumn("{task.fields[messages]} msgs {task.fields[rate]:.0f}/s", style="dim"),
        # Time spent held back by the CRM's rate limits: waiting, not working.
        TextColumn("CRM wait {task.fields[waited]:.1f}s", style="yellow"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task(
            f"{start}..{end}", total=todo, messages=0, rate=0.0, waited=0.0, kind="windows"
        )
        began = time.monotonic()
        seen = {"messages": 0}

        def on_window(day: date, stats: IngestStats) -> None:
            seen["messages"] += stats.fetched
            rate = seen["messages"] / max(time.monotonic() - began, 1e-6)
            progress.update(
                task, advance=1, messages=seen["messages"], rate=rate, description=f"{day}"
            )

        deliveries: dict[str, Any] = {}

        counted: dict[str, tuple[float, int]] = {}  # target -> (when, deliveries still due)

        def on_batch(target: str, stats: DeliveryStats) -> None:
            # The total grows while the backfill still fetches (it delivers alongside): count
            # what is due again, but not on every batch (it reads the whole outbox).
            when, left = counted.get(target, (0.0, 0))
            if time.monotonic() - when >= 2.0:
                due = daemon.store.counts().get(target, {})
                left = due.get(State.PENDING, 0) + due.get(State.RETRY, 0)
                counted[target] = (time.monotonic(), left)
            total = max(stats.claimed + left, stats.claimed)
            if target not in deliveries:
                deliveries[target] = progress.add_task(
                    target, total=total, messages=0, rate=0.0, waited=0.0, kind="deliveries"
                )
            progress.update(
                deliveries[target],
                total=total,
                completed=stats.claimed,
                waited=daemon.crm_waited.get(target, 0.0),
            )

        daemon.on_batch = on_batch
        report = daemon.backfill(start, end, on_window=on_window, refetch=refetch)
        progress.update(task, description="fetched")
    return report


def _with_log_lines(
    daemon: Daemon, start: date, end: date, todo: int, refetch: bool
) -> CycleReport:
    began = time.monotonic()
    state = {"windows": 0, "messages": 0, "last": began}

    def on_window(day: date, stats: IngestStats) -> None:
        state["windows"] += 1
        state["messages"] += stats.fetched
        now = time.monotonic()
        if now - state["last"] >= LOG_EVERY_SECONDS or state["windows"] == todo:
            state["last"] = now
            rate = state["messages"] / max(now - began, 1e-6)
            left = (todo - state["windows"]) * (now - began) / max(state["windows"], 1)
            log.info(
                "backfill progress",
                day=day.isoformat(),
                windows=f"{int(state['windows'])}/{todo}",
                messages=int(state["messages"]),
                rate_per_second=round(rate, 1),
                eta_seconds=int(left),
            )

    last_batch_log = {"at": began}

    def on_batch(target: str, stats: DeliveryStats) -> None:
        now = time.monotonic()
        if now - last_batch_log["at"] >= LOG_EVERY_SECONDS:
            last_batch_log["at"] = now
            log.info(
                "delivery progress",
                target=target,
                delivered=stats.claimed,
                crm_wait_seconds=round(daemon.crm_waited.get(target, 0.0), 1),
            )

    daemon.on_batch = on_batch
    return daemon.backfill(start, end, on_window=on_window, refetch=refetch)

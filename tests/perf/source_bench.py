"""The source side alone: a backfill from the Berkshire simulator, with details, no CRM.

    python tests/perf/source_bench.py --messages 10000 --latency-ms 100 --json

The simulator lists summaries (its default, the literal reading of the API document), so
every new message costs one ``GET /v2/messages/<id>``: the backfill must make exactly one list
request a day window plus one detail request a message, counted by the simulator. The last
line printed is one JSON object: ``messages``, ``days``, ``latency_ms``, ``seconds``,
``messages_per_second``, ``source_requests`` (and ``..._by_endpoint``), ``windows``,
``details``, ``detail_concurrency``, ``peak_rss_mb`` (simulator included: it runs here),
``checks``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from benchlib import (
    MESSAGES_PER_DAY,
    SEED,
    crm_counts,
    emit,
    fresh_database,
    peak_rss_mb,
    quiet_logging,
)

from syncd.config import parse_settings
from syncd.daemon import Daemon
from syncd.memory import cap_malloc_arenas
from syncd.sandbox.world import SandboxWorld


def run_source_bench(
    messages: int,
    *,
    days: int | None = None,
    latency_ms: float = 0.0,
    detail_concurrency: int | None = None,
    seed: int = SEED,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Backfill ``messages`` (``MESSAGES_PER_DAY`` a day by default) into an empty store."""
    days = days or max(1, math.ceil(messages / MESSAGES_PER_DAY))
    end = datetime.now(UTC)
    world = SandboxWorld(
        messages=messages, callers=max(1, messages // 5), days=days, seed=seed, end=end, targets=[]
    ).start()
    try:
        assert world.berkshire is not None
        world.berkshire.latency = latency_ms / 1000
        with fresh_database(database_url) as url:
            doc = world.settings_doc(url)
            account = doc["accounts"]["demo"]
            if detail_concurrency is not None:
                account["detail_concurrency"] = detail_concurrency
            settings = parse_settings(doc, environ={})
            tz = settings.accounts["demo"].timezone
            first = (end - timedelta(days=days)).astimezone(tz).date()
            daemon = Daemon(settings)
            daemon.migrate()
            before = crm_counts(world.berkshire.base_url)
            try:
                t0 = time.perf_counter()
                report = daemon.backfill(first, end.astimezone(tz).date())
                seconds = time.perf_counter() - t0
            finally:
                daemon.close()
            counted = crm_counts(world.berkshire.base_url) - before
            concurrency = settings.accounts["demo"].detail_concurrency
    finally:
        world.stop()
    ingest = report.ingest
    by_endpoint = {k: v for k, v in sorted(counted.items()) if ":" not in k}
    requests = sum(by_endpoint.values())
    return {
        "messages": messages,
        "days": days,
        "seed": seed,
        "latency_ms": latency_ms,
        "detail_concurrency": concurrency,
        "seconds": round(seconds, 3),
        "messages_per_second": round(messages / seconds, 1),
        "source_requests": requests,
        "source_requests_by_endpoint": by_endpoint,
        "windows": ingest.windows,
        "details": ingest.details,
        "new": ingest.new,
        "peak_rss_mb": peak_rss_mb(),
        "errors": report.errors + report.auth_failures,
        "checks": {
            "every_message_new": ingest.new == messages,
            "a_detail_a_message": ingest.details == messages == by_endpoint.get("detail"),
            "source_requests": requests == ingest.windows + messages,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="source_bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=10_000, metavar="N")
    parser.add_argument("--days", type=int, metavar="D", help="default: N/100 (at least 1)")
    parser.add_argument("--latency-ms", type=float, default=100.0, metavar="L")
    parser.add_argument(
        "--detail-concurrency", type=int, metavar="C", help="default: the account's default"
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--db", metavar="URL", help="a PostgreSQL URL (a fresh schema)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    quiet_logging()
    cap_malloc_arenas()  # as `syncd` does at start
    result = run_source_bench(
        args.messages,
        days=args.days,
        latency_ms=args.latency_ms,
        detail_concurrency=args.detail_concurrency,
        seed=args.seed,
        database_url=args.db,
    )
    summary = (
        f"{result['messages']} messages over {result['days']} days at {result['latency_ms']} ms: "
        f"{result['seconds']} s, {result['messages_per_second']} messages/s, "
        f"{result['source_requests']} source requests ({result['windows']} windows + "
        f"{result['details']} details), checks {result['checks']}"
    )
    return emit(result, None if args.json else summary)


if __name__ == "__main__":
    sys.exit(main())

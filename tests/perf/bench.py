"""Throughput, CRM request budget and memory of a backfill, against one CRM emulator.

    python tests/perf/bench.py --target hubspot --messages 10000 --json

The last line printed is one JSON object (see README.md beside this file for every field).
The simulators run in a child process, so ``peak_rss_mb`` is this process's: syncd's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from benchlib import NAIVE_SAMPLE, SEED, BenchSpec, emit, quiet_logging, run_bench

from syncd.memory import cap_malloc_arenas
from syncd.sandbox.crm import emulator_types


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help=f"one of {', '.join(emulator_types())}")
    parser.add_argument("--messages", type=int, required=True, metavar="N")
    parser.add_argument("--callers", type=int, metavar="K", help="default: N/5")
    parser.add_argument("--days", type=int, metavar="D", help="default: N/100 (at least 1)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=NAIVE_SAMPLE,
        metavar="S",
        help=f"messages the naive baseline runs (at most N; 0 skips it; default {NAIVE_SAMPLE})",
    )
    parser.add_argument(
        "--db", metavar="URL", help="a PostgreSQL URL (a fresh schema is made and dropped)"
    )
    parser.add_argument(
        "--in-process", action="store_true", help="run the simulators here (RSS then counts them)"
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="L",
        help="milliseconds added to every CRM and source answer (CRM searches and composite "
        "requests take twice that; see README.md)",
    )
    parser.add_argument(
        "--source-latency-ms",
        type=float,
        metavar="S",
        help="the source's answers wait S ms instead (default: L), to time the CRM side apart",
    )
    parser.add_argument(
        "--detail-concurrency",
        type=int,
        metavar="C",
        help="source detail requests in flight (the account's detail_concurrency; default: "
        "syncd's default)",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    return parser


def _summary(result: dict[str, Any]) -> str:
    steady = result["steady_state"]
    rows = [
        f"{result['target']}: {result['messages']} messages from {result['callers']} callers "
        f"over {result['days']} days ({result['db']})",
        f"  {result['seconds']} s, {result['messages_per_second']} messages/s, "
        f"peak RSS {result['peak_rss_mb']} MB",
        f"  {result['crm_requests']} CRM requests = {result['requests_per_message']} a message "
        f"(naive: {result.get('naive_requests_per_message')})",
        f"  latency {result['latency_ms']} ms (source {result['source_latency_ms']} ms, "
        f"{result['detail_concurrency']} details at a time): "
        "the CRM's limits allow "
        f"{result['limit_bound_messages_per_second']} messages/s, "
        f"utilization {result['limit_utilization']}, refused {result['limit_refusals']}",
        f"  {result['source_requests']} source requests {result['source_requests_by_endpoint']}",
        f"  rerun: {result['rerun']['crm_requests']} requests in {result['rerun']['seconds']} s",
        f"  steady state: known caller {steady['known_caller_requests']}, "
        f"new caller {steady['new_caller_requests']} requests",
        "  checks: "
        + ", ".join(f"{k}={'ok' if v else 'MISSED'}" for k, v in result["checks"].items()),
    ]
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.target not in emulator_types():
        print(f"bench.py: no emulator registered for {args.target!r}", file=sys.stderr)
        return 2
    quiet_logging()
    cap_malloc_arenas()  # as `syncd` does at start
    spec = BenchSpec.for_messages(
        args.target,
        args.messages,
        callers=args.callers,
        days=args.days,
        seed=args.seed,
        naive_sample=min(args.naive_sample, args.messages),
        database_url=args.db,
        latency_ms=args.latency_ms,
        source_latency_ms=args.source_latency_ms,
        detail_concurrency=args.detail_concurrency,
    )
    result = run_bench(spec, in_process=args.in_process)
    return emit(result, None if args.json else _summary(result))


if __name__ == "__main__":
    sys.exit(main())

"""The ``syncd`` command line. Exit codes: 0 done; 1 finished with failed or dead deliveries;
2 usage or configuration error; 3 authentication failure at the source or a CRM."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import structlog

from syncd import __version__
from syncd.config import Settings, load_settings
from syncd.errors import AuthError, ConfigError
from syncd.logging import configure_logging, redact_text

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
DEFAULT_CONFIG_PATHS = ("syncd.toml", "/etc/syncd/syncd.toml")

log = structlog.get_logger("syncd")


def _default_config() -> str | None:
    env = os.environ.get("SYNCD_CONFIG")
    if env:
        return env
    return next((p for p in DEFAULT_CONFIG_PATHS if Path(p).is_file()), None)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep a CRM in step with a Berkshire Receptionists answering-service account.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            metavar="PATH",
            help="TOML config (default: $SYNCD_CONFIG, ./syncd.toml, /etc/syncd/syncd.toml)",
        )

    run = sub.add_parser("run", help="run the daemon (or one cycle, or a backfill)")
    with_config(run)
    run.add_argument("--once", action="store_true", help="run one cycle and exit")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="read the CRMs, print the plan, write nothing to any CRM",
    )
    run.add_argument(
        "--backfill", action="store_true", help="one-shot, resumable fetch of a date range"
    )
    run.add_argument("--from", dest="start", type=_date, metavar="YYYY-MM-DD")
    run.add_argument("--to", dest="end", type=_date, metavar="YYYY-MM-DD")

    demo = sub.add_parser(
        "demo", help="sync the bundled sandbox end to end (no credentials, no network)"
    )
    demo.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    demo.add_argument("--messages", type=int, default=200, metavar="N")
    demo.add_argument("--callers", type=int, default=None, metavar="K")
    demo.add_argument("--seed", type=int, default=7)

    sandbox = sub.add_parser(
        "sandbox", help="run the simulators in the foreground and print their URLs"
    )
    sandbox.add_argument("--messages", type=int, default=200, metavar="N")
    sandbox.add_argument("--callers", type=int, default=None, metavar="K")
    sandbox.add_argument("--seed", type=int, default=7)
    sandbox.add_argument(
        "--days", type=int, default=3, help="spread the messages over this many days"
    )
    sandbox.add_argument(
        "--config-out",
        metavar="PATH",
        help="write a syncd config pointing at the simulators (then: syncd run --config PATH)",
    )
    sandbox.add_argument(
        "--database-url", default="sqlite:///syncd-sandbox.db", help="for --config-out"
    )

    for name, text in (
        ("migrate", "upgrade the state store's schema"),
        ("check", "validate the config and reach the source and every CRM"),
    ):
        with_config(sub.add_parser(name, help=text))
    setup = sub.add_parser("setup", help="create the fields and properties a target needs")
    with_config(setup)
    setup.add_argument("--target", required=True, help="the target to set up")
    setup.add_argument("--dry-run", action="store_true", help="only list what would be created")
    status = sub.add_parser(
        "status", help="accounts, cursors, deliveries by state, dead letters, review items"
    )
    with_config(status)
    status.add_argument("--json", action="store_true")
    replay = sub.add_parser(
        "replay", help="deliver a message again (its activity is updated, not duplicated)"
    )
    with_config(replay)
    replay.add_argument("message_id", metavar="MESSAGE_ID")
    replay.add_argument("--target", help="only this target")
    review = sub.add_parser("review", help="settle a delivery held for review (see `syncd status`)")
    with_config(review)
    review.add_argument("delivery_id", type=int, metavar="DELIVERY_ID")
    choice = review.add_mutually_exclusive_group(required=True)
    choice.add_argument("--record", metavar="CRM_ID", help="attach the message to this CRM record")
    choice.add_argument(
        "--new", action="store_true", help="the caller is someone new: create a record"
    )
    review.add_argument("--kind", default="contact", help="kind of --record (contact or lead)")
    export = sub.add_parser(
        "export-state", help="write the state store as JSON lines (to move it elsewhere)"
    )
    with_config(export)
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--database-url", help="the store to read (default: the config's)")
    load = sub.add_parser(
        "import-state", help="load an export-state file into an empty state store"
    )
    with_config(load)
    load.add_argument("--input", "-i", help="file to read (default: standard input)")
    load.add_argument("--database-url", help="the store to fill (default: the config's)")
    retry = sub.add_parser("retry", help="requeue dead deliveries")
    with_config(retry)
    retry.add_argument("--target", help="only this target")
    retry.add_argument(
        "--review", action="store_true", help="also requeue deliveries held for review"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    path = args.config or _default_config()
    if not path:
        raise ConfigError("no config file: pass --config PATH or set SYNCD_CONFIG", key="--config")
    settings = load_settings(path)
    d = settings.daemon
    configure_logging(level=d.log_level, fmt=d.log_format, mask_phones=d.mask_phones)
    for warning in settings.warnings:
        log.warning(warning)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    try:
        return _dispatch(args, parser)
    except ConfigError as exc:
        print(f"syncd: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AuthError as exc:
        print(f"syncd: authentication failed: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    command = args.command
    if command == "demo":
        from syncd.demo import run_demo

        if args.messages < 1:
            parser.error("--messages must be at least 1")
        # The summary is the demo's output; routine log lines would drown it.
        configure_logging(level="warning")
        return run_demo(
            messages=args.messages, callers=args.callers, as_json=args.json, seed=args.seed
        )
    if command == "sandbox":
        return _sandbox(args)
    settings = _settings(args)
    if command == "run":
        return _run(args, parser, settings)
    if command == "check":
        from syncd.check import run_check

        return run_check(settings)
    if command == "setup":
        from syncd.setup import run_setup

        return run_setup(settings, args.target, dry_run=args.dry_run)

    from syncd.store.store import Store

    if command in ("export-state", "import-state"):
        from syncd.store.portable import run_portable

        return run_portable(command, args, settings)
    store = Store(settings.daemon.database_url)
    try:
        if command == "migrate":
            store.migrate()
            print(f"schema at revision {store.schema_revision()}")
            return EXIT_OK
        store.migrate()
        if command == "status":
            from syncd.status import collect_status, print_status

            print_status(collect_status(settings, store), sys.stdout, args.json)
            return EXIT_OK
        if command == "replay":
            if args.target and args.target not in settings.targets:
                raise ConfigError(f"unknown target {args.target!r}", key="--target")
            count = store.replay(args.message_id, target=args.target)
            if not count:
                print(f"syncd: no delivery found for message {args.message_id!r}", file=sys.stderr)
                return EXIT_FAILED
            print(
                f"queued {count} deliver{'y' if count == 1 else 'ies'} of message "
                f"{args.message_id}; the next cycle (or `syncd run --once`) delivers it"
            )
            return EXIT_OK
        if command == "review":
            if not store.resolve_review(
                args.delivery_id, record_id=args.record, record_kind=args.kind
            ):
                print(f"syncd: delivery {args.delivery_id} is not held for review", file=sys.stderr)
                return EXIT_FAILED
            print(f"delivery {args.delivery_id} queued: the next cycle delivers it")
            return EXIT_OK
        if command == "retry":
            count = store.retry_dead(args.target, include_review=args.review)
            print(f"requeued {count} deliver{'y' if count == 1 else 'ies'}")
            return EXIT_OK
    finally:
        store.close()
    parser.error(f"unknown command {command}")
    raise AssertionError("unreachable")  # pragma: no cover


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, settings: Settings) -> int:
    from syncd.daemon import Daemon

    if args.backfill:
        if not (args.start and args.end):
            parser.error("--backfill needs --from YYYY-MM-DD and --to YYYY-MM-DD")
        if args.end < args.start:
            parser.error("--to is before --from")
    elif args.start or args.end:
        parser.error("--from/--to are only for --backfill")
    daemon = Daemon(settings, dry_run=args.dry_run)
    try:
        daemon.migrate()
        if args.backfill:
            from syncd.progress import run_backfill

            report = run_backfill(daemon, args.start, args.end)
        elif args.once or args.dry_run:
            report = daemon.run_cycle()
        else:
            from syncd.scheduler import run_forever

            return run_forever(daemon)
        log.info("run finished", **report.as_dict())
        # The same plain line as a fatal AuthError gets, whatever the log format.
        for failure in report.auth_failures:
            print(f"syncd: authentication failed: {redact_text(failure)}", file=sys.stderr)
        if args.dry_run:
            _print_plans(daemon)
        return report.exit_code
    finally:
        daemon.close()


def _print_plans(daemon: object) -> None:
    from syncd.daemon import Daemon

    assert isinstance(daemon, Daemon)
    for name, connector in daemon._connectors.items():
        plans = getattr(connector, "plans", [])
        print(f"[dry-run] target {name}: {len(plans)} planned deliveries (nothing written)")
        for plan in plans[:200]:
            who = plan.record_id or f"new {plan.record_kind} ({plan.caller_key})"
            fields = ", ".join(sorted(plan.fields)) or "-"
            print(
                f"  {plan.message.message_id}: {plan.action.value:6} {who}  fields: {fields}  "
                f"activity: {plan.activity.subject}"
            )


def _sandbox(args: argparse.Namespace) -> int:
    from syncd.sandbox.world import SANDBOX_EMAIL, SANDBOX_TOKEN, SandboxWorld

    world = SandboxWorld(
        messages=args.messages, callers=args.callers, seed=args.seed, days=args.days
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with world:
        if args.config_out:
            world.write_config(
                args.config_out, args.database_url, interval_seconds=5, jitter_seconds=0
            )
        print("syncd sandbox running (Ctrl-C to stop)")
        for name, url in world.urls().items():
            print(f"  {name:11} {url}")
        print(f"  berkshire credentials: X-API-EMAIL={SANDBOX_EMAIL} X-API-TOKEN={SANDBOX_TOKEN}")
        for name, emulator in world.emulators.items():
            options = {
                k: v for k, v in emulator.connector_options().items() if not isinstance(v, dict)
            }
            print(f"  {name} target options: {options}")
        if args.config_out:
            print(f"  config written to {args.config_out}: syncd run --config {args.config_out}")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        print("stopped")
    return EXIT_OK

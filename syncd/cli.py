"""The ``syncd`` command line. Exit codes: 0 done; 1 finished with failed or dead deliveries;
2 usage or configuration error; 3 authentication failure at the source or a CRM."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import NoReturn

import structlog

from syncd import __version__
from syncd.config import Settings, load_settings
from syncd.errors import AuthError, ConfigError
from syncd.logging import configure_logging, redact_text
from syncd.memory import cap_malloc_arenas

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
DEFAULT_CONFIG_PATHS = ("syncd.toml", "/etc/syncd/syncd.toml")

log = structlog.get_logger("syncd")


def _default_config() -> str | None:
    env = os.environ.get("SYNCD_CONFIG")
    if env:
        return env
    return next((p for p in DEFAULT_CONFIG_PATHS if Path(p).is_file()), None)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (``syncd review: argument ...``), exit 2, never a traceback."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_DB_ID_MAX = 2**63 - 1  # the largest id a BIGINT column holds (SQLite and PostgreSQL)


def _row_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a delivery id: {text!r}") from exc
    if not 1 <= value <= _DB_ID_MAX:
        raise argparse.ArgumentTypeError(f"no such delivery id: {text!r} (out of range)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc
    if not 1 <= value <= 10_000_000:
        raise argparse.ArgumentTypeError(f"must be between 1 and 10000000: {text!r}")
    return value


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="syncd",
        description="Keep a CRM in step with a Berkshire Receptionists answering-service account.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

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
    run.add_argument(
        "--refetch",
        action="store_true",
        help="with --backfill: read windows already done again, and every message's detail",
    )
    run.add_argument(
        "--json",
        action="store_true",
        help="with --dry-run: print the whole plan as one JSON object (last line)",
    )
    run.add_argument(
        "--metrics-textfile",
        metavar="PATH",
        help="after --once or --backfill, write the metrics there (node_exporter textfile)",
    )

    demo = sub.add_parser(
        "demo", help="sync the bundled sandbox end to end (no credentials, no network)"
    )
    demo.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    demo.add_argument("--messages", type=_count, default=200, metavar="N")
    demo.add_argument("--callers", type=_count, default=None, metavar="K")
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

    with_config(sub.add_parser("migrate", help="upgrade the state store's schema"))
    check = sub.add_parser(
        "check", help="validate the config; reach the database, the source and every CRM"
    )
    with_config(check)
    check.add_argument(
        "--show-config",
        action="store_true",
        help="print every key's effective value and its source (file, env, default); "
        "secrets masked; contacts nothing",
    )
    health = sub.add_parser(
        "health", help="probe the running daemon's /readyz (exit 0 ready, 1 not); for HEALTHCHECK"
    )
    with_config(health)
    health.add_argument(
        "--live", action="store_true", help="probe /healthz (alive) instead of /readyz"
    )
    health.add_argument("--timeout", type=float, default=4.0, metavar="SECONDS")
    setup = sub.add_parser("setup", help="create the fields and properties a target needs")
    with_config(setup)
    setup.add_argument("--target", required=True, help="the target to set up")
    setup.add_argument("--dry-run", action="store_true", help="only list what would be created")
    status = sub.add_parser(
        "status", help="accounts, cursors, deliveries by state, dead letters, review items"
    )
    with_config(status)
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--message", metavar="ID", help="one message's sync log: each attempt per target"
    )
    replay = sub.add_parser(
        "replay", help="deliver a message again (its activity is updated, not duplicated)"
    )
    with_config(replay)
    replay.add_argument("message_id", metavar="MESSAGE_ID")
    replay.add_argument("--target", help="only this target")
    review = sub.add_parser("review", help="settle a delivery held for review (see `syncd status`)")
    with_config(review)
    review.add_argument("delivery_id", type=_row_id, metavar="DELIVERY_ID")
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


def _config_path(args: argparse.Namespace) -> str:
    path = args.config or _default_config()
    if not path:
        raise ConfigError("no config file: pass --config PATH or set SYNCD_CONFIG", key="--config")
    return str(path)


def _settings(args: argparse.Namespace) -> Settings:
    path = _config_path(args)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        if exc.key == "--config" and not args.config and os.environ.get("SYNCD_CONFIG"):
            reason = str(exc).removeprefix("--config: ")
            raise ConfigError(reason, key="SYNCD_CONFIG") from exc
        raise
    d = settings.daemon
    configure_logging(level=d.log_level, fmt=d.log_format, mask_phones=d.mask_phones)
    for warning in settings.warnings:
        log.warning(warning)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    cap_malloc_arenas()
    try:
        return _dispatch(args, parser)
    except ConfigError as exc:
        # One line, whatever the cause: a TOML error or a driver's message may span several.
        line = " ".join(redact_text(str(exc)).split())
        print(f"syncd: configuration error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except AuthError as exc:
        print(f"syncd: authentication failed: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    command = args.command
    if command in ("demo", "sandbox") and not _sandbox_installed():
        print(
            f"syncd {command} needs the bundled sandbox (the extra syncd[sandbox], the "
            "syncd-sandbox distribution): in a syncd checkout, pip install ./sandbox",
            file=sys.stderr,
        )
        return EXIT_USAGE
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
    if command == "health":
        from syncd.probe import probe

        return probe(_config_path(args), live=args.live, timeout=args.timeout)
    settings = _settings(args)
    installed = _installed_connectors()
    for target in settings.targets.values():
        if target.type not in installed:
            raise ConfigError(
                f"no connector {target.type!r} installed "
                f"(installed: {', '.join(sorted(installed))})",
                key=f"targets.{target.name}.type",
            )
    if command == "run":
        return _run(args, parser, settings)
    if command == "check":
        from syncd.check import run_check

        if args.show_config:
            from syncd.showconfig import print_config

            print_config(settings, sys.stdout)
            return EXIT_OK
        return run_check(settings)
    if command == "setup":
        from syncd.setup import run_setup

        return run_setup(settings, args.target, dry_run=args.dry_run)

    from syncd.startup import database_startup
    from syncd.store.store import Store

    if command in ("export-state", "import-state"):
        from syncd.store.portable import run_portable

        return run_portable(command, args, settings)
    if getattr(args, "target", None) and args.target not in settings.targets:
        known = ", ".join(sorted(settings.targets)) or "none"
        raise ConfigError(f"unknown target {args.target!r} (configured: {known})", key="--target")
    with database_startup(settings.daemon.database_url):
        store = Store(settings.daemon.database_url)
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    try:
        if command == "migrate":
            print(f"schema at revision {store.schema_revision()}")
            return EXIT_OK
        if command == "status" and args.message:
            from syncd.status import print_message_log

            return print_message_log(settings, store, args.message, sys.stdout, args.json)
        if command == "status":
            from syncd.status import collect_status, print_status

            print_status(collect_status(settings, store), sys.stdout, args.json)
            return EXIT_OK
        if command == "replay":
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
    elif args.start or args.end or args.refetch:
        parser.error("--from/--to/--refetch are only for --backfill")
    if args.json and not args.dry_run:
        parser.error("--json is for --dry-run")
    if args.metrics_textfile and not (args.once or args.backfill or args.dry_run):
        parser.error("--metrics-textfile is for --once and --backfill runs")
    from syncd.startup import database_startup

    with database_startup(settings.daemon.database_url):
        daemon = Daemon(settings, dry_run=args.dry_run)
    try:
        with database_startup(settings.daemon.database_url):
            daemon.migrate()
        # Connectors validate their options when built (no request is made): a bad one is a
        # one-line start-up error here, not a failure in every cycle.
        for name in dict.fromkeys(t for a in settings.accounts.values() for t in a.targets):
            daemon.connector(name)
        if args.backfill:
            from syncd.progress import run_backfill

            report = run_backfill(daemon, args.start, args.end, refetch=args.refetch)
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
            from syncd.dryrun_report import print_plans

            print_plans(
                daemon._connectors,
                sys.stdout,
                as_json=args.json,
                mask=settings.daemon.mask_phones,
            )
        if args.metrics_textfile:
            daemon.metrics.write_textfile(args.metrics_textfile)
        return report.exit_code
    finally:
        daemon.close()


def _installed_connectors() -> set[str]:
    from syncd.connector import available

    return set(available())


def _sandbox_installed() -> bool:
    """The simulators ship in a separate distribution (the ``sandbox`` extra), never in a
    production install."""
    if importlib.util.find_spec("syncd.sandbox") is None:
        return False
    # A checkout installed without the extra has the simulator's code but no emulator.
    return bool(importlib.metadata.entry_points(group="syncd.emulators.v1"))


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

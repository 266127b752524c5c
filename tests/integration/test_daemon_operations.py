"""Issue 16 as the daemon lives it: the watchdog heartbeat, a non-root run from a 0640
config, honest dry runs, log lines joined to run history, and metrics a dashboard can use."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from syncd_cli import run_syncd

from syncd import scheduler, systemd
from syncd.daemon import Daemon
from syncd.demo import sandbox_settings
from syncd.health import HealthServer
from syncd.logging import configure_logging, register_secret
from syncd.sandbox.toml import dumps
from syncd.sandbox.world import SandboxWorld
from syncd.store.store import Store

MESSAGES = 24


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld(messages=MESSAGES, callers=8, days=2, seed=7) as started:
        yield started


def _config(
    world: SandboxWorld, home: Path, database_url: str | None = None, **daemon: Any
) -> tuple[Path, str]:
    database_url = database_url or f"sqlite:///{home / 'state.db'}"
    path = home / "syncd.toml"
    world.write_config(str(path), database_url, log_format="json", **daemon)
    return path, database_url


def _counts(database_url: str) -> dict[str, dict[str, int]]:
    store = Store(database_url)
    try:
        store.migrate()
        return store.counts()
    finally:
        store.close()


# -- the systemd watchdog ------------------------------------------------------------------------


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    with tempfile.TemporaryDirectory(prefix="sd") as directory:
        path = str(Path(directory) / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(0.2)
            monkeypatch.setenv("NOTIFY_SOCKET", path)
            yield sock


def _pings(sock: socket.socket, seconds: float) -> list[float]:
    """Arrival times of WATCHDOG=1 datagrams during ``seconds``."""
    found: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            continue
        if "WATCHDOG=1" in data:
            found.append(time.monotonic())
    return found


def test_the_heartbeat_pings_every_half_watchdog_and_stops_for_a_hung_cycle(
    world: SandboxWorld,
    tmp_path: Path,
    notify_socket: socket.socket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # WatchdogSec=2 s: pings must come at least every 1 s (WATCHDOG_USEC / 2); the heartbeat
    # is scheduled every 0.5 s, so a loaded machine has half a second of slack.
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    settings = sandbox_settings(
        world, f"sqlite:///{tmp_path / 'state.db'}", lease_seconds=5, interval_seconds=3600
    )
    daemon = Daemon(settings)
    daemon.migrate()
    hang = threading.Event()
    real_cycle = daemon.run_cycle
    calls = []

    def cycle() -> Any:
        calls.append(1)
        report = real_cycle()
        hang.wait(30)  # the cycle hangs: no source or CRM answers from here on
        return report

    monkeypatch.setattr(daemon, "run_cycle", cycle)
    monkeypatch.setattr(scheduler.signal, "signal", lambda *a: None)  # not the main thread
    code: list[int] = []
    runner = threading.Thread(target=lambda: code.append(scheduler.run_forever(daemon)))
    runner.start()
    try:
        alive = _pings(notify_socket, 2.5)
        assert len(alive) >= 3, alive
        gaps = [b - a for a, b in itertools.pairwise(alive)]
        assert max(gaps) <= 1.0, gaps  # at least every WatchdogSec/2
        # The cycle has now been silent for longer than lease_seconds: pings stop, so
        # systemd would restart the daemon after WatchdogSec instead of 20 minutes.
        deadline = time.monotonic() + 20
        while time.monotonic() - daemon.last_progress < 5.1 and time.monotonic() < deadline:
            time.sleep(0.05)
        _pings(notify_socket, 0.6)  # drain what was in flight
        assert _pings(notify_socket, 1.5) == []
    finally:
        daemon.stop.set()
        hang.set()
        runner.join(30)
        daemon.close()
    assert calls
    assert code == [0]
    assert systemd.watchdog_interval() == 1.0


# -- a non-root run from the documented 0640 config -----------------------------------------------


def test_the_daemon_runs_as_a_non_root_user_from_a_0640_config(world: SandboxWorld) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another uid (setpriv)")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    uid, config_gid = 61871, 61872  # a dynamic user's uid, the syncd-config group's gid
    root = Path(tempfile.mkdtemp(prefix="syncd-nonroot-"))
    try:
        root.chmod(0o755)
        etc, state = root / "etc", root / "state"
        etc.mkdir(mode=0o750)
        os.chown(etc, 0, config_gid)
        state.mkdir(mode=0o700)
        os.chown(state, uid, uid)  # StateDirectory=syncd
        config = etc / "syncd.toml"
        world.write_config(str(config), f"sqlite:///{state / 'syncd.db'}", log_format="json")
        # As the README installs it: install -m 0640 -g syncd-config syncd.toml ...
        os.chown(config, 0, config_gid)
        config.chmod(0o640)
        assert stat.S_IMODE(config.stat().st_mode) == 0o640

        def as_user(*groups: int) -> subprocess_result:
            return _run_as(setpriv, uid, groups, config, root)

        probe = _run_as(setpriv, uid, (config_gid,), config, root, argv=("-c", "import syncd"))
        if probe.returncode != 0:  # e.g. the venv or checkout under a 0700 mktemp directory
            pytest.skip(f"uid {uid} cannot import syncd here: {probe.stderr.strip()[-200:]}")

        without_group = as_user()
        assert without_group.returncode == 2, without_group.stderr
        lines = [x for x in without_group.stderr.splitlines() if x.strip()]
        assert len(lines) == 1
        assert "--config" in lines[0]
        assert "Permission denied" in lines[0]
        run = as_user(config_gid)  # SupplementaryGroups=syncd-config
        assert run.returncode == 0, run.stderr[-3000:]
        assert (state / "syncd.db").stat().st_uid == uid
        assert _counts(f"sqlite:///{state / 'syncd.db'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


subprocess_result = Any


def _run_as(
    setpriv: str,
    uid: int,
    groups: tuple[int, ...],
    config: Path,
    cwd: Path,
    argv: tuple[str, ...] = (),
) -> Any:
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD")}
    env["HOME"] = str(cwd)
    command = [
        setpriv, f"--reuid={uid}", f"--regid={uid}",
        f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
        "--inh-caps=-all", "--", sys.executable,
        *(argv or ("-m", "syncd", "run", "--once", "--config", str(config))),
    ]  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


# -- dry runs ------------------------------------------------------------------------------------


def test_a_dry_run_changes_no_state_and_prints_an_honest_plan(
    world: SandboxWorld, tmp_path: Path, store_url: str
) -> None:
    # On SQLite and on PostgreSQL: the rolled-back transaction is the whole mechanism.
    config, database_url = _config(world, tmp_path, database_url=store_url)
    dry = run_syncd("run", "--once", "--dry-run", "--json", "--config", str(config), cwd=tmp_path)
    assert dry.code == 0, dry.err
    plan = dry.last_json()
    assert plan["dry_run"] is True
    assert _counts(database_url) == {}  # no message, no delivery
    for target in plan["targets"]:
        assert target["planned_deliveries"] == MESSAGES
        records = [p["record"] or p["caller"] for p in target["plans"]]
        assert len(records) == len(set(records)) == target["callers"] < MESSAGES  # per caller
        assert sum(len(p["messages"]) for p in target["plans"]) == MESSAGES
        updates = [p for p in target["plans"] if p["action"] == "update"]
        assert updates, "the sandbox seeds known callers whose blanks get filled"
        for entry in updates:
            for change in entry["fields"].values():
                assert set(change) == {"old", "new"}
                assert change["old"] != change["new"]
    # PII masked: no caller's phone digits or email appear anywhere in the plan.
    for caller in world.callers:
        if caller.e164:
            assert caller.e164 not in dry.out
            assert caller.e164[-7:] not in dry.out
        if caller.email:
            assert caller.email not in dry.out
    # A dry backfill marks no window done and keeps only its run record.
    back = run_syncd(
        "run", "--backfill", "--from", "2020-01-01", "--to", "2020-01-03", "--dry-run",
        "--config", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert back.code == 0, back.err
    store = Store(database_url)
    try:
        assert store.done_days("demo", *_days("2020-01-01", "2020-01-03")) == set()
        assert store.cursor_positions() == {}
        kinds = [run["kind"] for run in store.last_runs(5)]
    finally:
        store.close()
    assert sorted(kinds) == ["dry-backfill", "dry-poll"]


def _days(start: str, end: str) -> tuple[Any, Any]:
    from datetime import date

    return date.fromisoformat(start), date.fromisoformat(end)


def test_the_text_plan_says_what_it_left_out(world: SandboxWorld) -> None:
    import io

    from syncd.dryrun_connector import DryRunConnector
    from syncd.dryrun_report import print_plans
    from syncd.models import Action, ActivitySpec, Message, Plan

    plans = [
        Plan(
            delivery_id=i,
            message=Message(account="a", message_id=f"m{i}", raw={}),
            action=Action.CREATE,
            activity=ActivitySpec(marker=f"k{i}", subject=f"Call from +1 415 555 01{i:02d}",
                                  body="", occurred_at=None),  # type: ignore[arg-type]
            caller_key=f"phone:+14155550{i:03d}",
            fields={"phone": f"+14155550{i:03d}", "email": f"c{i}@example.com"},
        )
        for i in range(5)
    ]  # fmt: skip
    connector = DryRunConnector("t")
    connector.plans.extend(plans)
    out = io.StringIO()
    print_plans({"t": connector}, out, limit=2)
    text = out.getvalue()
    assert "[dry-run] target t: 5 planned deliveries to 5 callers" in text
    assert "... 3 more callers not shown (limit 2;" in text
    assert "+14155550" not in text
    assert "c0@example.com" not in text
    assert "c***@example.com" in text


# -- logs ------------------------------------------------------------------------------------------


def test_library_log_records_are_json_redacted_and_masked(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging(fmt="json")
    register_secret("lib-secret-5555")
    try:
        logging.getLogger("urllib3.connectionpool").warning(
            "Retrying after %s for caller +1 (415) 555-0142 token lib-secret-5555", "reset"
        )
        logging.getLogger("apscheduler.scheduler").error("Job %s raised", "cycle")
        logging.getLogger("alembic.runtime.migration").warning("Running upgrade")
    finally:
        configure_logging()
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.strip()]
    by_logger = {line["logger"]: line for line in lines}
    assert set(by_logger) >= {
        "urllib3.connectionpool",
        "apscheduler.scheduler",
        "alembic.runtime.migration",
    }
    urllib3 = by_logger["urllib3.connectionpool"]
    assert "lib-secret-5555" not in urllib3["event"]
    assert "555-0142" not in urllib3["event"]
    assert urllib3["level"] == "warning"
    assert "timestamp" in urllib3


def test_every_line_of_a_cycle_carries_the_run_id_in_run_history(
    world: SandboxWorld, tmp_path: Path
) -> None:
    config, database_url = _config(world, tmp_path)
    run = run_syncd("run", "--once", "--config", str(config), cwd=tmp_path)
    assert run.code == 0, run.err
    store = Store(database_url)
    try:
        (last,) = store.last_runs(1)
    finally:
        store.close()
    cycle_lines = run.events("account polled") + run.events("target delivered")
    assert len(cycle_lines) == 1 + len(world.emulators)
    assert {line.get("run_id") for line in cycle_lines} == {last["id"]}
    (finished,) = run.events("run finished")
    assert finished["run_id"] == last["id"]


def test_detail_fetch_threads_log_with_the_run_id(capfd: pytest.CaptureFixture[str]) -> None:
    from datetime import date
    from zoneinfo import ZoneInfo

    import structlog

    from syncd.sandbox.berkshire import BerkshireSimulator
    from syncd.source import BerkshireClient

    with BerkshireSimulator(email="a@example.com", token="tok-123456") as sim:
        sim.summary_only = True
        sim.add_messages(
            [
                {"message id": f"M{n}", "utc created at": f"2024-03-10T1{n}:00:00Z",
                 "first name": "Ann", "content": "Call back"}
                for n in range(8)
            ]
        )  # fmt: skip
        sim.faults.seed = 3
        sim.faults.error_ratio = 0.4  # some detail fetches are retried: they log
        configure_logging(fmt="json")
        structlog.contextvars.bind_contextvars(run_id=4242)
        try:
            with BerkshireClient(
                sim.base_url, "a@example.com", "tok-123456", detail_concurrency=4,
                max_attempts=10, sleep=lambda _: None,
            ) as client:  # fmt: skip
                client.fetch_window(
                    "acme", date(2024, 3, 9), date(2024, 3, 11), ZoneInfo("America/New_York")
                )
        finally:
            structlog.contextvars.unbind_contextvars("run_id")
            configure_logging()
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    detail_retries = [
        x
        for x in lines
        if x.get("event") == "source.retry" and "/v2/messages/" in x.get("path", "")
    ]
    assert detail_retries, lines
    assert {x.get("run_id") for x in detail_retries} == {4242}


# -- metrics ---------------------------------------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_a_scrape_after_cycles_with_failures_has_what_a_dashboard_needs(
    world: SandboxWorld, tmp_path: Path
) -> None:
    doc = world.settings_doc(f"sqlite:///{tmp_path / 'state.db'}")
    # A second account whose API is down, and a HubSpot outage.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        down_port = closed.getsockname()[1]
    doc["accounts"]["down"] = {
        **doc["accounts"]["demo"], "base_url": f"http://127.0.0.1:{down_port}", "targets": [],
    }  # fmt: skip
    world.emulators["hubspot"].faults.outage(600)
    from syncd.config import parse_settings

    daemon = Daemon(parse_settings(doc, environ={}))
    daemon.migrate()
    server = HealthServer(
        "127.0.0.1", 0, metrics=daemon.metrics, alive=lambda: True, ready=daemon.readiness
    ).start()
    try:
        daemon.run_cycle()
        daemon.run_cycle()
        scrape = httpx.get(server.url + "/metrics", timeout=10).text
    finally:
        server.stop()
        daemon.close()
    (tmp_path / "scrape.txt").write_text(scrape, encoding="utf-8")
    s = _samples(scrape)
    assert _value(s, "syncd_cycles_total", kind="poll", result="error") == 2
    assert _value(s, "syncd_source_requests_total", account="down", status="0")
    assert _value(s, "syncd_source_requests_total", account="demo", status="200")
    assert (
        _value(s, "syncd_delivery_outcomes_total", target="salesforce", outcome="done") == MESSAGES
    )
    # HubSpot's batches failed as a whole (503): every attempt of every delivery counts.
    assert _value(s, "syncd_delivery_outcomes_total", target="hubspot", outcome="done") == 0
    retries = _value(s, "syncd_delivery_outcomes_total", target="hubspot", outcome="retry")
    assert retries is not None
    assert retries in (MESSAGES, 2 * MESSAGES)  # the second cycle retries them if due
    assert _value(s, "syncd_target_last_success_timestamp_seconds", target="salesforce")
    assert _value(s, "syncd_target_last_success_timestamp_seconds", target="hubspot") is None
    hub_age = _value(s, "syncd_oldest_pending_age_seconds", target="hubspot", scope="database")
    sf_age = _value(s, "syncd_oldest_pending_age_seconds", target="salesforce", scope="database")
    assert hub_age is not None
    assert hub_age >= 0
    assert sf_age == 0
    assert _value(s, "syncd_deliveries", target="hubspot", state="retry", scope="database")
    assert _value(s, "syncd_database_gauges_exporter") == 1


def test_only_one_replica_exports_the_database_gauges(world: SandboxWorld, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    replicas = [Daemon(sandbox_settings(world, url, worker_id=f"replica-{i}")) for i in (1, 2)]
    try:
        replicas[0].migrate()
        for daemon in replicas:
            daemon.run_cycle()
        scrapes = [_samples(d.metrics.render().decode()) for d in replicas]
    finally:
        for daemon in replicas:
            daemon.close()
    exporters = [_value(s, "syncd_database_gauges_exporter") for s in scrapes]
    assert sorted(exporters) == [0, 1]
    done = [
        sum(
            v
            for (name, labels), v in s.items()
            if name == "syncd_deliveries" and ("state", "done") in labels
        )
        for s in scrapes
    ]
    assert sum(done) == MESSAGES * len(world.emulators)  # a sum over replicas counts once


def test_once_and_backfill_runs_write_a_textfile(world: SandboxWorld, tmp_path: Path) -> None:
    config, _ = _config(world, tmp_path)
    textfile = tmp_path / "syncd.prom"
    run = run_syncd(
        "run", "--once", "--metrics-textfile", str(textfile), "--config", str(config), cwd=tmp_path
    )
    assert run.code == 0, run.err
    s = _samples(textfile.read_text(encoding="utf-8"))
    assert _value(s, "syncd_cycles_total", kind="poll", result="ok") == 1
    assert not list(tmp_path.glob("syncd.prom.*"))  # written atomically, no temp file left
    back = run_syncd(
        "run", "--backfill", "--from", "2020-01-01", "--to", "2020-01-02",
        "--metrics-textfile", str(textfile), "--config", str(config), cwd=tmp_path,
    )  # fmt: skip
    assert back.code == 0, back.err
    s = _samples(textfile.read_text(encoding="utf-8"))
    assert _value(s, "syncd_cycles_total", kind="backfill", result="ok") == 1
    assert dumps  # the sandbox's TOML writer is what wrote the config above

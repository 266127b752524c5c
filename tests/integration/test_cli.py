"""The ``syncd`` command line, end to end: a real subprocess against an in-process sandbox.

Each test starts a :class:`SandboxWorld` (Berkshire simulator and CRM emulators on loopback)
and writes a config for it; ``python -m syncd ... --config PATH`` reaches the world over
loopback, and the test reads the emulators' own server-side counts and the SQLite store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from console_world import known_twice  # tests/lib
from sqlalchemy import select, update
from syncd_cli import Result, run_syncd

from syncd.models import activity_marker
from syncd.sandbox.generate import callers_of
from syncd.sandbox.toml import dumps
from syncd.sandbox.world import SandboxWorld
from syncd.store.schema import deliveries, messages
from syncd.store.store import Store

MESSAGES, CALLERS = 16, 6
TARGETS = ("hubspot", "salesforce")
SECRET_KEYS = ("token", "password", "secret")
COUNT_KEYS = (
    "messages_fetched",
    "messages_new",
    "contacts_created",
    "contacts_updated",
    "activities_logged",
    "review",
    "failed",
    "crm_requests",
)


InProcess = Callable[..., Result]


@dataclass
class Sandbox:
    """A started world, its config on disk and the store that config names. ``cli`` runs
    ``python -m syncd``, ``main`` runs the same command line in this process."""

    world: SandboxWorld
    home: Path
    database_url: str
    config: Path
    in_process: InProcess

    def cli(self, *args: str, config: Path | None = None, **env: str) -> Result:
        return run_syncd(*args, "--config", str(config or self.config), cwd=self.home, env=env)

    def main(self, *args: str, config: Path | None = None) -> Result:
        return self.in_process(*args, "--config", str(config or self.config))

    def doc(self) -> dict[str, Any]:
        return self.world.settings_doc(self.database_url)

    def variant(self, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
        """Another config file: this one's document after ``change``."""
        doc = self.doc()
        change(doc)
        path = self.home / name
        path.write_text(dumps(doc), encoding="utf-8")
        path.chmod(0o600)
        return path

    def secrets(self) -> list[str]:
        found: list[str] = []

        def walk(node: Mapping[str, Any]) -> None:
            for key, value in node.items():
                if isinstance(value, Mapping):
                    walk(value)
                elif isinstance(value, str) and any(w in key for w in SECRET_KEYS):
                    found.append(value)

        walk(self.doc())
        assert len(found) >= 3  # the account token and both CRMs' credentials
        return found

    def status(self) -> dict[str, Any]:
        result = self.main("status", "--json")
        assert result.code == 0, result.err
        status: dict[str, Any] = result.last_json()
        return status

    def counts(self) -> dict[str, dict[str, int]]:
        store = Store(self.database_url)
        try:
            return store.counts()
        finally:
            store.close()

    @property
    def message_ids(self) -> list[str]:
        assert self.world.berkshire is not None
        return sorted(str(m["message id"]) for m in self.world.berkshire.messages)

    def markers(self, target: str) -> list[str | None]:
        return [a.marker for a in self.world.emulators[target].activities()]


def make_sandbox(tmp_path: Path, world: SandboxWorld, in_process: InProcess) -> Sandbox:
    database_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = tmp_path / "syncd.toml"
    world.write_config(str(config), database_url, log_format="json")
    return Sandbox(world, tmp_path, database_url, config, in_process)


@pytest.fixture
def sandbox(tmp_path: Path, in_process: InProcess) -> Iterator[Sandbox]:
    with SandboxWorld(messages=MESSAGES, callers=CALLERS, days=2, seed=11) as world:
        yield make_sandbox(tmp_path, world, in_process)


def assert_no_secret(sandbox: Sandbox, *results: Result) -> None:
    for result in results:
        for secret in sandbox.secrets():
            assert secret not in result.output


# -- demo ------------------------------------------------------------------------------------


def test_demo_json_reports_a_sync_and_a_repoll_that_writes_nothing(tmp_path: Path) -> None:
    result = run_syncd("demo", "--json", "--messages", "60", cwd=tmp_path)

    assert result.code == 0, result.err
    summary = result.last_json()
    for key in (*COUNT_KEYS, "seconds", "targets", "repoll"):
        assert key in summary, key
    for key in (*COUNT_KEYS, "seconds", "targets", "crm_writes"):
        assert key in summary["repoll"], key
    assert set(summary["targets"]) == set(TARGETS) == set(summary["repoll"]["targets"])
    assert summary["messages_fetched"] == summary["messages_new"] == 60
    assert summary["failed"] == 0

    callers = SandboxWorld(messages=60).n_callers  # the demo's default for 60 messages
    for name, counts in summary["targets"].items():
        assert set(COUNT_KEYS) <= set(counts), name
        assert counts["activities_logged"] == counts["messages_new"] == 60, name
        assert counts["contacts_created"] <= callers, name
        assert counts["crm_requests"] > 0, name
    assert summary["activities_logged"] == 60 * len(TARGETS)

    repoll = summary["repoll"]
    assert repoll["messages_fetched"] == 60  # the same window, fetched again ...
    assert repoll["messages_new"] == 0  # ... and deduped
    assert repoll["activities_logged"] == repoll["contacts_created"] == 0
    assert repoll["crm_writes"] == 0
    for name, counts in repoll["targets"].items():
        assert counts["activities_logged"] == counts["contacts_created"] == 0, name
    # Counted by the simulator: each message's detail once, and the re-poll lists only.
    assert summary["source_requests"]["detail"] == 60
    assert repoll["source_requests"] == {"list": summary["source_requests"]["list"], "detail": 0}


def test_demo_prints_a_readable_table(tmp_path: Path) -> None:
    result = run_syncd("demo", "--messages", "12", cwd=tmp_path)

    assert result.code == 0, result.err
    assert "syncd demo" in result.out
    for heading in ("target", "activities", "CRM requests", *TARGETS):
        assert heading in result.out
    assert "re-poll" in result.out
    assert "nothing written twice" in result.out
    with pytest.raises(ValueError):
        json.loads(result.out.strip().splitlines()[-1])


# -- run, status -----------------------------------------------------------------------------


def test_run_once_delivers_and_status_shows_it(sandbox: Sandbox) -> None:
    run = sandbox.cli("run", "--once")
    assert run.code == 0, run.err

    as_json = sandbox.cli("status", "--json")
    assert as_json.code == 0, as_json.err
    status = as_json.last_json()
    assert status["messages"] == MESSAGES
    assert status["accounts"]["demo"]["cursor"] is not None
    assert status["accounts"]["demo"]["targets"] == list(TARGETS)
    for name in TARGETS:
        by_state = status["targets"][name]["deliveries"]
        assert by_state["done"] == MESSAGES, (name, by_state)
        assert sum(by_state.values()) == MESSAGES, (name, by_state)
        assert status["targets"][name]["oldest_pending"] is None
        # One activity per message (an emergency may add a task carrying the same marker).
        assert set(sandbox.markers(name)) == {
            activity_marker("demo", m) for m in sandbox.message_ids
        }
    assert status["last_runs"][0]["kind"] == "poll"
    assert status["last_runs"][0]["status"] == "ok"
    assert status["dead"] == status["review"] == status["passed_over"] == []

    table = sandbox.main("status")
    assert table.code == 0, table.err
    for text in ("deliveries by state", "last runs", "demo", *TARGETS, str(MESSAGES)):
        assert text in table.out
    assert_no_secret(sandbox, run, as_json, table)


# -- check -----------------------------------------------------------------------------------


def test_check_passes_with_the_sandbox_credentials(sandbox: Sandbox) -> None:
    result = sandbox.cli("check")

    assert result.code == 0, result.output
    lines = result.out.splitlines()
    assert lines
    assert all(line.startswith("[ok  ]") for line in lines), result.out
    assert any("source account demo" in line for line in lines)
    for name in TARGETS:
        assert any(f"target {name}" in line for line in lines), name
    assert_no_secret(sandbox, result)


def test_check_names_a_refused_berkshire_token(sandbox: Sandbox) -> None:
    def bad_token(doc: dict[str, Any]) -> None:
        doc["accounts"]["demo"]["token"] = "not-the-sandbox-token"

    result = sandbox.main("check", config=sandbox.variant("bad.toml", bad_token))

    assert result.code == 3, result.output
    failed = [line for line in result.out.splitlines() if line.startswith("[FAIL]")]
    assert len(failed) == 1, result.out
    assert "source account demo" in failed[0]
    assert "token was refused" in failed[0]
    assert "not-the-sandbox-token" not in result.output


@pytest.mark.parametrize(
    ("target", "key"), [("hubspot", "access_token"), ("salesforce", "consumer_secret")]
)
def test_check_names_the_target_whose_credential_is_refused(
    sandbox: Sandbox, target: str, key: str
) -> None:
    def bad_credential(doc: dict[str, Any]) -> None:
        doc["targets"][target][key] = "not-the-sandbox-credential"

    result = sandbox.main("check", config=sandbox.variant("bad.toml", bad_credential))

    assert result.code == 3, result.output
    failed = [line for line in result.out.splitlines() if line.startswith("[FAIL]")]
    assert failed, result.out
    assert all(f"target {target} " in line for line in failed), failed
    other = next(t for t in TARGETS if t != target)
    assert any(line.startswith(f"[ok  ] target {other} ") for line in result.out.splitlines())
    assert "not-the-sandbox-credential" not in result.output


# -- exit codes ------------------------------------------------------------------------------


def test_run_with_a_refused_berkshire_token_exits_3(sandbox: Sandbox) -> None:
    def bad_token(doc: dict[str, Any]) -> None:
        doc["accounts"]["demo"]["token"] = "not-the-sandbox-token"

    writes = sandbox.world.crm_writes()
    result = sandbox.cli("run", "--once", config=sandbox.variant("bad.toml", bad_token))

    assert result.code == 3, result.output
    assert "syncd: authentication failed: berkshire" in result.err
    assert "Invalid token" in result.err
    assert "Traceback" not in result.output
    assert "not-the-sandbox-token" not in result.output
    assert sandbox.world.crm_writes() == writes
    assert sandbox.status()["accounts"]["demo"]["cursor"] is None


@pytest.mark.parametrize(
    ("change", "key"),
    [
        pytest.param(
            lambda d: d["syncd"].update(pollinterval=5), "syncd.pollinterval", id="unknown"
        ),
        pytest.param(
            lambda d: d["syncd"].update(lookback_days="three"), "syncd.lookback_days", id="type"
        ),
        pytest.param(
            lambda d: d["accounts"]["demo"].update(timezone="Mars/Olympus"),
            "accounts.demo.timezone",
            id="value",
        ),
        pytest.param(
            lambda d: d["targets"]["hubspot"].update(match={"keys": "phone"}),
            "targets.hubspot.match.keys",
            id="nested-type",
        ),
    ],
)
def test_a_malformed_config_exits_2_naming_the_key(
    sandbox: Sandbox, change: Callable[[dict[str, Any]], None], key: str
) -> None:
    result = sandbox.main("run", "--once", config=sandbox.variant("bad.toml", change))

    assert result.code == 2, result.output
    assert "configuration error" in result.err
    assert key in result.err
    assert not (sandbox.home / "state.db").exists()  # refused before touching anything
    assert sandbox.world.crm_requests() == dict.fromkeys(TARGETS, 0)


def test_a_missing_config_exits_2(tmp_path: Path) -> None:
    missing = run_syncd("run", "--once", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert missing.code == 2, missing.output
    assert "config file not found" in missing.err

    if Path("/etc/syncd/syncd.toml").exists():
        pytest.skip("/etc/syncd/syncd.toml exists here: `syncd run` without --config uses it")
    none = run_syncd("run", "--once", cwd=tmp_path)
    assert none.code == 2, none.output
    assert "no config file" in none.err
    assert "Traceback" not in missing.output + none.output


# -- dry run ---------------------------------------------------------------------------------


def test_dry_run_reads_the_crms_writes_nothing_and_prints_the_plan(sandbox: Sandbox) -> None:
    world = sandbox.world
    requests = world.crm_requests()

    dry = sandbox.cli("run", "--once", "--dry-run")

    assert dry.code == 0, dry.err
    assert world.crm_writes() == dict.fromkeys(TARGETS, 0)
    assert all(world.crm_requests()[n] > requests[n] for n in TARGETS)  # it did look
    for name in TARGETS:
        assert f"[dry-run] target {name}: {MESSAGES} planned deliveries" in dry.out
        assert sandbox.markers(name) == []
    for message_id in sandbox.message_ids:
        assert f"    {message_id}: " in dry.out
    # No state written: no message, delivery, cursor or window; only a run record marked dry.
    assert sandbox.counts() == {}
    status = sandbox.status()
    assert [run["kind"] for run in status["last_runs"]] == ["dry-poll"], status["last_runs"]

    assert world.berkshire is not None
    lists = world.berkshire.counts["list"]
    real = sandbox.cli("run", "--once")

    assert real.code == 0, real.err
    # A fresh process polls again: the dry run handed its poll lease back when it exited.
    assert real.events("account polled")
    assert world.berkshire.counts["list"] > lists
    assert all(world.crm_writes()[n] > 0 for n in TARGETS)
    assert all(sandbox.counts()[n]["done"] == MESSAGES for n in TARGETS)
    for name in TARGETS:
        assert len(set(sandbox.markers(name))) == MESSAGES


# -- replay, retry, review -------------------------------------------------------------------


def test_replay_updates_the_activity_in_place(sandbox: Sandbox) -> None:
    assert sandbox.cli("run", "--once").code == 0
    world = sandbox.world
    before = {n: sorted(a.id for a in world.emulators[n].activities()) for n in TARGETS}
    writes = world.crm_writes()
    message_id = sandbox.message_ids[3]

    replay = sandbox.main("replay", message_id)
    assert replay.code == 0, replay.err
    assert f"queued {len(TARGETS)} deliveries" in replay.out
    again = sandbox.cli("run", "--once")

    assert again.code == 0, again.err
    (finished,) = again.events("run finished")
    for name in TARGETS:
        stats = finished["targets"][name]
        assert (stats["activities_updated"], stats["activities_logged"]) == (1, 0), stats
        assert sorted(a.id for a in world.emulators[name].activities()) == before[name]
        assert len(set(sandbox.markers(name))) == MESSAGES
        assert world.crm_writes()[name] > writes[name]  # it was written again, in place

    unknown = sandbox.main("replay", "no-such-message")
    assert unknown.code == 1, unknown.output
    assert "no delivery found" in unknown.err


def ingest_only(sandbox: Sandbox) -> None:
    """Poll every account into the store, delivering nothing."""
    from datetime import UTC, datetime

    from syncd.config import load_settings
    from syncd.daemon import Daemon
    from syncd.ingest import ingest_days, poll_days

    settings = load_settings(sandbox.config, environ={})
    daemon = Daemon(settings)
    try:
        daemon.migrate()
        for account in settings.accounts.values():
            days = poll_days(datetime.now(UTC), account.timezone, 3, None)
            ingest_days(daemon.store, daemon.client(account), account, days)
    finally:
        daemon.close()


def test_retry_requeues_a_dead_delivery(sandbox: Sandbox) -> None:
    # Ingest only (a dry run no longer stores anything), then let one HubSpot delivery die
    # before it reaches the CRM.
    ingest_only(sandbox)
    message_id = sandbox.message_ids[0]
    store = Store(sandbox.database_url)
    try:
        with store.engine.begin() as conn:
            pk = conn.execute(
                select(messages.c.id).where(messages.c.message_id == message_id)
            ).scalar_one()
            conn.execute(
                update(deliveries)
                .where(deliveries.c.message_pk == pk, deliveries.c.target == "hubspot")
                .values(state="dead", attempts=1, last_error="rejected: test says no")
            )
    finally:
        store.close()
    assert sandbox.cli("run", "--once").code == 0
    marker = activity_marker("demo", message_id)
    assert marker not in sandbox.markers("hubspot")
    assert marker in sandbox.markers("salesforce")

    status = sandbox.status()
    assert status["targets"]["hubspot"]["deliveries"]["dead"] == 1
    (dead,) = status["dead"]
    assert (dead["target"], dead["message_id"]) == ("hubspot", message_id)
    assert dead["reason"] == "rejected: test says no"

    retry = sandbox.main("retry")
    assert retry.code == 0, retry.err
    assert "requeued 1 delivery" in retry.out
    run = sandbox.cli("run", "--once")

    assert run.code == 0, run.err
    assert sandbox.markers("hubspot").count(marker) == 1
    status = sandbox.status()
    assert status["dead"] == []
    assert status["targets"]["hubspot"]["deliveries"]["done"] == MESSAGES


def test_review_attaches_an_ambiguous_message_to_the_chosen_record(
    tmp_path: Path, in_process: InProcess
) -> None:
    # Nobody is known to the CRMs except one caller, twice: two records, same name and phone.
    with SandboxWorld(
        messages=MESSAGES, callers=CALLERS, days=2, seed=11, known_share=0.0, company_share=0.0
    ) as world:
        sandbox = make_sandbox(tmp_path, world, in_process)
        assert world.berkshire is not None
        by_caller = callers_of(world.berkshire.messages, world.callers)
        caller, twins = known_twice(world, by_caller)

        first = sandbox.cli("run", "--once")
        assert first.code == 0, first.output  # held for review is not a failure
        held = sandbox.status()["review"]
        assert {item["target"] for item in held} == set(TARGETS), held
        for item in held:
            assert sorted(item["candidates"]) == sorted(twins[item["target"]]), item
            assert by_caller[item["message_id"]] == caller.index
        item = next(i for i in held if i["target"] == "hubspot")
        chosen = twins["hubspot"][1]

        review = sandbox.main("review", str(item["delivery_id"]), "--record", chosen)
        assert review.code == 0, review.err
        run = sandbox.cli("run", "--once")

        assert run.code == 0, run.output
        marker = activity_marker("demo", item["message_id"])
        (activity,) = [a for a in world.emulators["hubspot"].activities() if a.marker == marker]
        assert activity.record_id == chosen
        remaining = sandbox.status()["review"]
        assert item["delivery_id"] not in {i["delivery_id"] for i in remaining}
        assert len(remaining) == len(held) - 1

        twice = sandbox.main("review", str(item["delivery_id"]), "--record", chosen)
        assert twice.code == 1
        assert "not held for review" in twice.err

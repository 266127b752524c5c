"""Every message whole, late and changed messages caught, nothing skipped silently (#13).

The Berkshire simulator runs in its documented shape (summaries in the list, the detail
fields only from ``GET /v2/messages/<id>``) and counts requests server-side; what reached the
CRM is counted at the HubSpot emulator, never in our store.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from syncd_cli import run_syncd, syncd_env

from syncd.alerts import Alerter
from syncd.daemon import Daemon
from syncd.demo import sandbox_settings
from syncd.ingest import ingest_days
from syncd.sandbox.berkshire import BerkshireSimulator
from syncd.sandbox.crm import CrmEmulator, StoredActivity
from syncd.sandbox.http import Request, Response
from syncd.sandbox.world import SandboxWorld
from syncd.status import collect_status, print_status
from syncd.store.schema import leases
from syncd.store.source_state import open_gaps
from syncd.store.store import Store

TZ = ZoneInfo("America/New_York")
NOW = datetime.now(UTC)
TODAY = NOW.astimezone(TZ).date()


class Recorder(Alerter):
    """An alerter that keeps what it would have sent."""

    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[tuple[str, dict[str, str]]] = []

    def send(self, title: str, *, fields: Any = None, severity: Any = "warning") -> bool:
        self.sent.append((title, dict(fields or {})))
        return True


@pytest.fixture
def world() -> Iterator[SandboxWorld]:
    with SandboxWorld(
        messages=30, days=2, seed=13, targets=["hubspot"], known_share=0.0, company_share=0.0
    ) as w:
        yield w


def sim(world: SandboxWorld) -> BerkshireSimulator:
    assert world.berkshire is not None
    return world.berkshire


def hubspot(world: SandboxWorld) -> CrmEmulator:
    return world.emulators["hubspot"]


def daemon(world: SandboxWorld, tmp_path: Path, **settings: Any) -> Daemon:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    d = Daemon(sandbox_settings(world, url, **settings), alerter=Recorder())
    d.migrate()
    return d


def message(
    message_id: str, when: datetime, first: str, phone: str, **extra: object
) -> dict[str, object]:
    local = when.astimezone(TZ)
    return {
        "message id": message_id,
        "utc created at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "created at": local.strftime("%m/%d/%Y %I:%M %p"),
        "first name": first,
        "last name": "Tester",
        "phone": phone,
        "caller id": "",
        "company name": "",
        "content": f"{first} called.",
        "status": "New",
        "delivered at": "",
        "delivered to": "",
        "is emergency": False,
        "content with additional details": "",
        **extra,
    }


def by_marker(world: SandboxWorld, message_id: str) -> list[StoredActivity]:
    """The message's activity (an emergency's high-priority task aside)."""
    marker = f"syncd:demo:{message_id}"
    return [a for a in hubspot(world).activities() if a.marker == marker and not a.high_priority]


def logged(world: SandboxWorld) -> Counter[str | None]:
    """Activities at the emulator by marker, emergency tasks aside."""
    return Counter(a.marker for a in hubspot(world).activities() if not a.high_priority)


# -- 1. details, once -------------------------------------------------------------------------


def test_an_email_only_in_the_detail_reaches_the_crm_with_one_detail_request_each(
    world: SandboxWorld, tmp_path: Path
) -> None:
    berkshire = sim(world)
    assert berkshire.list_shape == "summary"  # the documented shape is the default
    berkshire.add_messages(
        [
            message(
                "Q-1",
                NOW - timedelta(hours=1),
                "Quinn",
                "(212) 555-0142",
                **{
                    "content with additional details table": [
                        {"label": "Email", "value": "quinn.zed@example.org"}
                    ]
                },
            )
        ]
    )
    total = len(berkshire.messages)
    berkshire.reset_counts()
    d = daemon(world, tmp_path)
    try:
        reports = [d.run_cycle() for _ in range(3)]
    finally:
        d.close()

    assert all(r.ok for r in reports), [r.errors for r in reports]
    windows = [r.accounts["demo"].windows for r in reports]
    # Exactly one detail request per message across three polls of the same window.
    assert berkshire.counts["detail"] == total
    assert berkshire.counts["list"] == sum(windows)
    assert [r.accounts["demo"].details for r in reports] == [total, 0, 0]
    metric = d.metrics.registry.get_sample_value
    assert metric("syncd_source_reads_total", {"account": "demo", "kind": "detail"}) == total
    assert metric("syncd_source_reads_total", {"account": "demo", "kind": "list"}) == sum(windows)
    # The list holds no email: it came from the detail's custom-field table.
    headers = {"X-API-EMAIL": berkshire.email, "X-API-TOKEN": berkshire.token}
    listed = httpx.get(f"{berkshire.base_url}/v2/messages", headers=headers).text
    assert "Q-1" in listed
    assert "quinn.zed@example.org" not in listed
    (quinn,) = [c for c in hubspot(world).contacts() if c.first_name == "Quinn"]
    assert quinn.email == "quinn.zed@example.org"
    assert len(logged(world)) == total
    assert set(logged(world).values()) == {1}
    print(
        f"source requests per poll (documented shape, {total} messages, "
        f"{windows[0]} day windows): first "
        f"{windows[0] + total}, steady state {windows[1]} and {windows[2]}"
    )


@pytest.mark.parametrize("shape", ["summary", "minimal", "full"])
def test_every_list_shape_delivers_whole_messages(
    world: SandboxWorld, tmp_path: Path, shape: str
) -> None:
    berkshire = sim(world)
    berkshire.list_shape = shape  # type: ignore[assignment]
    total = len(berkshire.messages)
    d = daemon(world, tmp_path)
    try:
        first, again = d.run_cycle(), d.run_cycle()
    finally:
        d.close()
    assert first.ok
    assert again.ok
    # Whole list items need no detail; summaries get one each, and never a second.
    assert berkshire.counts["detail"] == (0 if shape == "full" else total)
    assert again.accounts["demo"].details == 0
    assert again.accounts["demo"].new == 0
    emails = {c.email for c in hubspot(world).contacts() if c.email}
    assert emails, "custom-field emails reached the CRM"
    assert len(logged(world)) == total
    assert set(logged(world).values()) == {1}


# -- 2 & 3. reconcile: late and changed messages --------------------------------------------


def test_a_late_and_a_changed_message_reach_the_crm_through_reconcile(
    world: SandboxWorld, tmp_path: Path
) -> None:
    berkshire = sim(world)
    old = NOW - timedelta(days=6)
    berkshire.add_messages(
        [
            message("R-1", old - timedelta(days=1), "Rita", "(212) 555-0177"),
            message("S-1", old, "Sam", "(212) 555-0188"),
        ]
    )
    d = daemon(world, tmp_path, reconcile_days=14)
    try:
        backfill = d.backfill(TODAY - timedelta(days=8), TODAY)
        assert backfill.ok, backfill.errors
        (rita_first,) = by_marker(world, "R-1")
        (sam,) = by_marker(world, "S-1")
        assert "Status: New" in sam.body

        # Days already polled and past the look-back: a late message, and a changed one.
        berkshire.add_messages([message("R-2", old, "Rita", "(212) 555-0177")])
        berkshire.update_message(
            "S-1", status="Delivered", delivered_to="ops@example.com", delivered_at="now"
        )
        poll = d.run_cycle()
        assert poll.ok
        assert poll.accounts["demo"].new == 0
        assert by_marker(world, "R-2") == []  # the poll's look-back does not reach them

        activities_before = sum(logged(world).values())
        reconcile = d.reconcile()
        runs = d.store.last_runs(1)
    finally:
        d.close()

    assert reconcile.ok, reconcile.errors
    stats = reconcile.accounts["demo"]
    # The 14 days back, from the earliest day syncd read (the backfill's first, 8 days back).
    assert (stats.windows, stats.new, stats.changed) == (9, 1, 1)
    assert stats.details == 2  # only the new and the changed summary were fetched whole
    (late,) = by_marker(world, "R-2")
    assert late.record_id == rita_first.record_id  # on the right contact
    (changed,) = by_marker(world, "S-1")  # still one activity, updated in place
    assert changed.id == sam.id
    assert "Status: Delivered" in changed.body
    assert "Delivered to: ops@example.com" in changed.body
    assert sum(logged(world).values()) == activities_before + 1
    assert runs[0]["kind"] == "reconcile"
    assert runs[0]["status"] == "ok"


def test_reconcile_rereads_what_polls_saw_not_older_history(
    world: SandboxWorld, tmp_path: Path
) -> None:
    """A fresh install polls today plus the look-back; its reconcile must not pull the
    account's older history into the CRM (that is what a backfill is for)."""
    berkshire = sim(world)
    berkshire.add_messages([message("H-1", NOW - timedelta(days=10), "Hal", "(212) 555-0166")])
    d = daemon(world, tmp_path, reconcile_days=14)
    try:
        assert d.run_cycle().ok
        reconcile = d.reconcile()
    finally:
        d.close()
    assert reconcile.ok
    lookback = d.settings.daemon.lookback_days
    assert reconcile.accounts["demo"].windows <= lookback + 3
    assert reconcile.accounts["demo"].new == 0
    assert by_marker(world, "H-1") == []


def test_reconcile_is_due_once_per_interval(world: SandboxWorld, tmp_path: Path) -> None:
    d = daemon(world, tmp_path, reconcile_days=3, reconcile_interval_seconds=3600)
    try:
        assert d.reconcile_due()
        assert d.reconcile().ok
        assert not d.reconcile_due()
        later = d.clock() + timedelta(hours=2)
        d.clock = lambda: later
        assert d.reconcile_due()
    finally:
        d.close()
    off = daemon(world, tmp_path / "off", reconcile_days=0)
    try:
        assert not off.reconcile_due()
    finally:
        off.close()


# -- --refetch, and backfills beside a poll lease --------------------------------------------


def test_refetch_reads_done_windows_again(world: SandboxWorld, tmp_path: Path) -> None:
    berkshire = sim(world)
    start, end = TODAY - timedelta(days=4), TODAY - timedelta(days=1)
    d = daemon(world, tmp_path)
    try:
        first = d.backfill(start, end)
        listed = berkshire.counts["list"]
        again = d.backfill(start, end)
        assert berkshire.counts["list"] == listed  # done windows: nothing fetched
        details = berkshire.counts["detail"]
        refetch = d.backfill(start, end, refetch=True)
    finally:
        d.close()
    assert first.ok
    assert again.ok
    assert refetch.ok
    assert again.accounts["demo"].windows == 0
    assert refetch.accounts["demo"].windows == 4
    assert berkshire.counts["list"] == listed + 4
    assert berkshire.counts["detail"] - details == first.accounts["demo"].details > 0
    assert refetch.accounts["demo"].new == 0  # re-read, not re-sent


def test_a_backfill_beside_a_held_poll_lease_fails_loudly(
    world: SandboxWorld, tmp_path: Path
) -> None:
    berkshire = sim(world)
    d = daemon(world, tmp_path, backfill_wait_seconds=1.0)
    try:
        assert d.store.acquire_lease("poll:demo", "the-daemon", 600)
        berkshire.reset_counts()
        report = d.backfill(TODAY - timedelta(days=2), TODAY)
    finally:
        d.close()
    assert berkshire.counts["list"] == 0
    assert report.exit_code == 1  # never 0 having fetched nothing
    assert "the-daemon is fetching this account" in report.errors[0]


def test_a_backfill_waits_for_a_lease_left_by_a_dead_process(
    world: SandboxWorld, tmp_path: Path
) -> None:
    d = daemon(world, tmp_path, backfill_wait_seconds=30.0)
    try:
        assert d.store.acquire_lease("poll:demo", "killed-pid", 1.5)  # never released
        report = d.backfill(TODAY - timedelta(days=2), TODAY - timedelta(days=1))
    finally:
        d.close()
    assert report.ok
    assert report.accounts["demo"].windows == 2


def test_a_run_that_loses_its_lease_stops_between_windows(
    world: SandboxWorld, tmp_path: Path
) -> None:
    d = daemon(world, tmp_path)
    me = d.settings.daemon.worker_id

    def stolen(day: object, stats: object) -> None:
        # Another process takes the lease (ours ran out while a window was slow).
        d.store.release_lease("poll:demo", me)
        assert d.store.acquire_lease("poll:demo", "other-replica", 600)

    try:
        report = d.backfill(TODAY - timedelta(days=5), TODAY - timedelta(days=1), stolen)
    finally:
        d.close()
    assert report.accounts["demo"].windows == 1  # the renewal between windows failed
    assert report.exit_code == 1
    assert "lost the poll lease after 1 of 5 windows" in report.errors[0]


def test_a_slow_window_renews_its_lease_while_fetching_details(
    world: SandboxWorld, tmp_path: Path
) -> None:
    berkshire = sim(world)
    berkshire.faults.delay = 0.02  # each detail takes a while
    d = daemon(world, tmp_path)
    account = d.settings.accounts["demo"]
    renewals: list[float] = []

    def renew() -> bool:
        renewals.append(time.monotonic())
        return True

    try:
        stats = ingest_days(
            d.store,
            d.client(account),
            account,
            [TODAY - timedelta(days=1), TODAY],
            keep_going=renew,
            renew_every=0.05,
        )
    finally:
        d.close()
    assert stats.details > 10
    # Once before each window, and more while their details were being fetched.
    assert len(renewals) > 2 + 1
    assert renewals[-1] - renewals[0] >= 0.05


def test_a_window_stored_concurrently_by_another_process_is_ingested_again(
    world: SandboxWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = daemon(world, tmp_path)
    other = Store(d.store.url)
    real = Store.ingest
    raced: list[int] = []

    def racing(self: Store, account: str, batch: Any, targets: Any, *a: Any, **kw: Any) -> Any:
        if not raced and batch:
            # The other process inserts the same messages between our read and our insert;
            # the unique (account, message id) index then refuses our insert, as here.
            raced.append(real(other, account, batch, targets, *a, **kw).new)
            raise IntegrityError("INSERT INTO messages", {}, Exception("UNIQUE constraint"))
        return real(self, account, batch, targets, *a, **kw)

    monkeypatch.setattr(Store, "ingest", racing)
    try:
        report = d.run_cycle()
        counts = d.store.counts()["hubspot"]
    finally:
        d.close()
        other.close()
    assert report.ok, report.errors
    assert len(raced) == 1  # the race happened once
    assert raced[0] > 0
    assert counts["done"] == len(sim(world).messages)  # none lost
    assert len(logged(world)) == len(sim(world).messages)
    assert set(logged(world).values()) == {1}  # none twice


def test_replicas_share_accounts_and_a_poll_releases_its_lease(
    world: SandboxWorld, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a = Daemon(sandbox_settings(world, url, worker_id="a"), alerter=Recorder())
    b = Daemon(sandbox_settings(world, url, worker_id="b"), alerter=Recorder())
    a.migrate()
    try:
        assert a.run_cycle().accounts  # a polls
        assert not b.run_cycle().accounts  # a's turn: b leaves the account alone
        assert a.run_cycle().accounts  # and a keeps it
        # Between polls the fetch lease is free: a backfill need not wait for the daemon.
        assert b.store.acquire_lease("poll:demo", "backfill", 5)
        b.store.release_lease("poll:demo", "backfill")
    finally:
        a.close()
    try:
        assert b.run_cycle().accounts  # a shut down cleanly: its turn is handed back
    finally:
        b.close()


# -- 4. no silent gaps ------------------------------------------------------------------------


def test_days_past_the_catch_up_cap_alert_and_show_the_backfill_that_fills_them(
    world: SandboxWorld, tmp_path: Path
) -> None:
    d = daemon(world, tmp_path)
    try:
        d.store.set_cursor("demo", NOW - timedelta(days=40))
        assert d.run_cycle().ok
        first = TODAY - timedelta(days=40)
        last = TODAY - timedelta(days=32)
        command = f"syncd run --backfill --from {first} --to {last}"
        alerter = d.alerter
        assert isinstance(alerter, Recorder)
        ((title, fields),) = alerter.sent
        assert "9 day(s) of account demo were not polled" in title
        assert fields["Fill them with"] == command
        shown = collect_status(d.settings, d.store)["source_gaps"]
        assert [(g["command"], g["days_missing"]) for g in shown] == [(command, 9)]

        d.run_cycle()  # the same gap is not alerted twice
        assert len(alerter.sent) == 1

        assert d.backfill(first, last).ok
        assert open_gaps(d.store) == []
        assert collect_status(d.settings, d.store)["source_gaps"] == []
    finally:
        d.close()


# -- 6. poison payloads -----------------------------------------------------------------------


class Poisoned(BerkshireSimulator):
    """Splices raw poison into the list answer of one day, as bytes no JSON encoder makes."""

    poison: list[bytes] = []

    def _list(self, request: Request) -> Response:
        response = super()._list(request)
        if response.status != 200 or request.arg("from_date") != TODAY.strftime("%m-%d-%Y"):
            return response
        body = response.body
        cut = body.index(b"[") + 1  # the first item of {"success": true, "data": [...]}
        spliced = b",".join(self.poison)
        rest = body[cut:]
        joiner = b"," if rest.lstrip()[:1] != b"]" else b""
        response.body = body[:cut] + spliced + joiner + rest
        return response


def test_poison_items_are_quarantined_and_the_rest_of_the_window_is_delivered(
    tmp_path: Path,
) -> None:
    long_id = "L" * 256
    good = [
        message("G-1", NOW - timedelta(hours=2), "Gina", "(212) 555-0101"),
        message("G-2", NOW - timedelta(hours=3), "Gus", "(212) 555-0102"),
        message(long_id, NOW - timedelta(hours=4), "Lena", "(212) 555-0103"),
        # Wrong types for fields that are not the id: coerced, and delivered.
        message(
            "G-3",
            NOW - timedelta(hours=5),
            "Gail",
            "(212) 555-0104",
            **{"is emergency": {"x": 1}, "status": ["New", 2], "company name": 17},
        ),
    ]
    deep = b'{"message id": "P-deep", "x": ' + b"[" * 1100 + b"]" * 1100 + b"}"
    poison = [
        deep,
        b'{"message id": "P-utf8", "first name": "Jos\xe9", "phone": "212-555-0199"}',
        b'{"message id": "P-huge", "content": "' + b"x" * 50_000_000 + b'"}',
        b'{"message id": {"not": "a string"}, "phone": "212-555-0198"}',
        b'{"message id": "' + b"T" * 257 + b'"}',
        b"42",
    ]
    with SandboxWorld(messages=5, days=1, seed=3, targets=["hubspot"]) as world:
        assert world.berkshire is not None
        world.berkshire.stop()
        world.berkshire = Poisoned(
            email=world.berkshire.email, token=world.berkshire.token, messages=good
        ).start()  # type: ignore[assignment]
        assert isinstance(world.berkshire, Poisoned)
        world.berkshire.poison = poison
        d = daemon(world, tmp_path)
        try:
            report = d.run_cycle()
            again = d.run_cycle()
            quarantined = d.store.quarantined()
            stored = d.store.message_count()
            status = collect_status(d.settings, d.store)
        finally:
            d.close()
        activities = {a.marker for a in world.emulators["hubspot"].activities()}

    assert report.ok, report.errors  # no cycle fails
    assert again.ok, again.errors
    for item in good:
        assert f"syncd:demo:{item['message id']}" in activities  # the good ones flow
    assert stored == len(good)  # the 256-character id is stored
    reasons = {q["message_id"]: q["reason"] for q in quarantined if q["message_id"]}
    assert "nested too deeply" in reasons["P-deep"]
    assert "not valid UTF-8" in reasons["P-utf8"]
    assert "50000000 characters" in reasons["P-huge"]
    anonymous = sorted(q["reason"] for q in quarantined if not q["message_id"])
    assert anonymous == [
        "item is a int, not an object",
        "message id is a dict, not a string",
        "message id is longer than 256 characters",
    ]
    assert len(quarantined) == len(poison)  # each once, though listed on every poll
    shown = json.dumps(status["quarantined"])
    assert "555-0199" not in shown
    assert "2125550198" not in shown


# -- 7. status masks quarantined payloads -----------------------------------------------------


def test_status_masks_phones_and_emails_in_quarantined_payloads(
    world: SandboxWorld, tmp_path: Path
) -> None:
    d = daemon(world, tmp_path)
    try:
        raw = {"message id": ["x"], "phone": "(415) 555-1212", "email": "jane.doe@example.com"}
        d.store.quarantine("demo", [(None, "bad id; caller jane.doe@example.com", raw)])
        status = collect_status(d.settings, d.store)
    finally:
        d.close()
    out = io.StringIO()
    print_status(status, out, as_json=False)
    for text in (json.dumps(status["quarantined"]), out.getvalue()):
        assert "555-1212" not in text
        assert "4155551212" not in text
        assert "jane.doe" not in text
        assert "example.com" not in text
    assert "***@***.com" in json.dumps(status["quarantined"])
    assert "quarantined source payloads" in out.getvalue()


def test_cli_refuses_refetch_without_backfill(
    world: SandboxWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syncd.cli import main

    config = tmp_path / "syncd.toml"
    world.write_config(str(config), f"sqlite:///{tmp_path / 'state.db'}")
    with pytest.raises(SystemExit) as exited:
        main(["run", "--once", "--refetch", "--config", str(config)])
    assert exited.value.code == 2
    assert "--refetch are only for --backfill" in capsys.readouterr().err


def test_a_backfill_rerun_right_after_sigkill_completes(
    world: SandboxWorld, tmp_path: Path
) -> None:
    """The killed run's lease is not handed back; the rerun must not be blocked by it (the
    holder is provably gone, or its short lease runs out) and must finish every window."""
    berkshire = sim(world)
    url = f"sqlite:///{tmp_path / 'state.db'}"
    config = tmp_path / "syncd.toml"
    world.write_config(str(config), url)
    start, end = TODAY - timedelta(days=6), TODAY - timedelta(days=1)
    args = ["run", "--backfill", "--from", str(start), "--to", str(end), "--config", str(config)]
    berkshire.faults.delay = 0.1  # every answer takes a while: the kill lands mid-backfill
    store = Store(url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", *args],
        cwd=tmp_path,
        env=syncd_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if store.done_days("demo", start, end):
                    break
            except OperationalError:  # not migrated yet
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "the backfill ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(store.done_days("demo", start, end)) < 6  # killed mid-way
        assert _lease_holder(store) is not None  # and its lease left behind

        berkshire.faults.delay = 0.0
        rerun = run_syncd(*args, cwd=tmp_path)
        done = store.done_days("demo", start, end)
    finally:
        if proc.poll() is None:
            proc.kill()
        store.close()
    assert rerun.code == 0, rerun.output[-2000:]
    assert len(done) == 6
    in_range = [
        m
        for m in berkshire.messages
        if start
        <= datetime.fromisoformat(str(m["utc created at"]).replace("Z", "+00:00"))
        .astimezone(TZ)
        .date()
        <= end
    ]
    assert in_range
    assert len(logged(world)) == len(in_range)
    assert set(logged(world).values()) == {1}


def _lease_holder(store: Store) -> str | None:
    with store.engine.connect() as conn:
        holder: str | None = conn.execute(
            select(leases.c.holder).where(leases.c.name == "poll:demo")
        ).scalar()
    return holder

"""``syncd run --backfill``, end to end: resumable day windows, progress lines, usage errors,
and a poll whose source fails leaving the cursor alone.

The Berkshire simulator runs in this process and counts list requests server-side; the CLI
runs as ``python -m syncd`` (or ``syncd.cli.main`` where a subprocess adds nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from syncd_cli import Result
from syncd_cli import run_syncd as run_cli

from syncd import progress
from syncd.sandbox.berkshire import BerkshireSimulator
from syncd.sandbox.http import Request, Response
from syncd.sandbox.toml import dumps
from syncd.sandbox.world import SandboxWorld
from syncd.store.store import Store

TZ = ZoneInfo("America/New_York")  # the sandbox account's time zone
DAYS = 30
TARGETS = ("hubspot", "salesforce")


def run_syncd(config: Path, *args: str) -> Result:
    return run_cli(*args, "--config", str(config), cwd=config.parent)


class ListRecorder:
    """Stands in for the simulator's ``dispatch``: notes the day of every list request and
    whether it was answered, and once ``fail_after`` windows were served turns on a 429
    storm. ``Retry-After: 0`` lets the client spend its retries without sleeping."""

    def __init__(self, simulator: BerkshireSimulator, fail_after: int | None = None) -> None:
        self.simulator = simulator
        self.inner = simulator.dispatch
        self.fail_after = fail_after
        self.served: list[date] = []
        self.refused = 0
        simulator.faults.retry_after = 0.0

    def __call__(self, request: Request) -> Response:
        listing = request.method == "GET" and request.path.rstrip("/") == "/v2/messages"
        if listing and self.fail_after is not None and len(self.served) >= self.fail_after:
            self.simulator.faults.rate_limit_ratio = 1.0
        response = self.inner(request)
        if listing:
            if response.status == 200:
                day = request.arg("from_date")
                assert day is not None
                assert day == request.arg("to_date")
                self.served.append(datetime.strptime(day, "%m-%d-%Y").date())
            else:
                self.refused += 1
        return response

    def heal(self) -> None:
        self.fail_after = None
        self.simulator.faults.clear()


def write_config(world: SandboxWorld, home: Path) -> Path:
    config = home / "syncd.toml"
    world.write_config(str(config), f"sqlite:///{home / 'state.db'}", log_format="json")
    return config


def days(start: date, count: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(count)]


@pytest.fixture
def month(tmp_path: Path) -> Iterator[tuple[SandboxWorld, date, date]]:
    """A world whose messages spread over the 30 local days ``start..end``, all in the past
    (today is never marked finished: it may still grow)."""
    end = datetime.now(TZ).date() - timedelta(days=3)
    start = end - timedelta(days=DAYS - 1)
    last = datetime.combine(end, time(20, 0), tzinfo=TZ)
    with SandboxWorld(messages=60, callers=15, days=DAYS, seed=5, end=last) as world:
        yield world, start, end


def test_an_interrupted_backfill_resumes_without_fetching_finished_windows(
    month: tuple[SandboxWorld, date, date], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, start, end = month
    simulator = world.berkshire
    assert simulator is not None
    recorder = ListRecorder(simulator, fail_after=DAYS // 2)
    monkeypatch.setattr(simulator, "dispatch", recorder)
    config = write_config(world, tmp_path)
    span = ("run", "--backfill", "--from", start.isoformat(), "--to", end.isoformat())

    first = run_syncd(config, *span)

    assert first.code == 1, first.err  # the source failed: finished with errors
    assert first.events("source unavailable; cursor left where it was")
    listed = list(recorder.served)
    assert listed == days(start, len(listed))  # in order
    assert recorder.refused > 0
    assert simulator.counts["list"] == len(listed) + recorder.refused
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        finished = sorted(store.done_days("demo", start, end))
    finally:
        store.close()
    # Every window stored is marked, from the first on; the one fetched ahead of the first
    # failure (the next window is fetched while one ends) may have been listed, never stored.
    assert finished == days(start, len(finished))
    assert DAYS // 2 - 1 <= len(finished) <= len(listed) <= len(finished) + 2
    done = len(finished)

    recorder.heal()
    recorder.served.clear()
    second = run_syncd(config, *span)

    assert second.code == 0, second.err
    assert recorder.served == days(start + timedelta(days=done), DAYS - done)
    assert not set(recorder.served) & set(finished)  # no finished window is fetched again
    assert simulator.counts["list"] == len(listed) + DAYS - done + recorder.refused
    (resumed,) = second.events("backfill resumes")
    assert (resumed["windows_done"], resumed["windows_left"]) == (done, DAYS - done)
    lines = second.events("backfill progress")  # stderr is a pipe: log lines, not a bar
    assert lines
    assert lines[-1]["windows"] == f"{DAYS - done}/{DAYS - done}"

    expected = simulator.count_between(start, end)
    assert expected > DAYS
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert store.message_count() == expected
        counts = store.counts()
        assert all(counts[name]["done"] == expected for name in TARGETS), counts
    finally:
        store.close()


def test_backfill_logs_progress_periodically_off_a_terminal(
    month: tuple[SandboxWorld, date, date],
    tmp_path: Path,
    in_process: Callable[..., Result],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world, _, end = month
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)  # every window is a period
    config = write_config(world, tmp_path)
    start = end - timedelta(days=4)

    result = in_process(
        "run", "--backfill", "--from", start.isoformat(), "--to", end.isoformat(),
        "--config", str(config),
    )  # fmt: skip

    assert result.code == 0, result.err
    lines = result.events("backfill progress")
    assert [line["windows"] for line in lines] == [f"{i}/5" for i in range(1, 6)]
    assert [line["day"] for line in lines] == [d.isoformat() for d in days(start, 5)]
    assert all({"messages", "rate_per_second", "eta_seconds"} <= set(line) for line in lines)


def test_a_poll_whose_source_fails_leaves_the_cursor_where_it_was(tmp_path: Path) -> None:
    with SandboxWorld(messages=12, callers=4, days=2, seed=3) as world:
        assert world.berkshire is not None
        config = write_config(world, tmp_path)
        assert run_syncd(config, "run", "--once").code == 0
        before = json.loads(run_syncd(config, "status", "--json").out)
        assert before["accounts"]["demo"]["cursor"] is not None

        world.berkshire.faults.retry_after = 0.0
        world.berkshire.faults.rate_limit_ratio = 1.0
        failed = run_syncd(config, "run", "--once")

        assert failed.code == 1, failed.err
        assert failed.events("source unavailable; cursor left where it was")
        after = json.loads(run_syncd(config, "status", "--json").out)
        assert after["accounts"]["demo"]["cursor"] == before["accounts"]["demo"]["cursor"]
        assert after["last_runs"][0]["status"] == "error"
        assert after["last_runs"][1]["status"] == "ok"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--backfill"], "--backfill needs --from"),
        (["--backfill", "--to", "2024-03-01"], "--backfill needs --from"),
        (["--backfill", "--from", "2024-03-01"], "--backfill needs --from"),
        (["--backfill", "--from", "2024-03-10", "--to", "2024-03-01"], "--to is before --from"),
        (["--backfill", "--from", "2024-02-30", "--to", "2024-03-01"], "not a date"),
        (["--from", "2024-03-01", "--to", "2024-03-02"], "only for --backfill"),
    ],
)
def test_backfill_usage_errors_exit_2(
    args: list[str], says: str, tmp_path: Path, in_process: Callable[..., Result]
) -> None:
    # A valid config, so that only the command line can be what is wrong.
    config = tmp_path / "syncd.toml"
    account = {"base_url": "http://127.0.0.1:9", "email": "a@example.com", "token": "t0ken"}
    doc = {"syncd": {"database_url": f"sqlite:///{tmp_path / 'state.db'}"}}
    config.write_text(dumps({**doc, "accounts": {"demo": account}}), encoding="utf-8")
    config.chmod(0o600)

    result = in_process("run", *args, "--config", str(config))

    assert result.code == 2, result.err
    assert says in result.err
    assert not (tmp_path / "state.db").exists()  # stopped before touching anything

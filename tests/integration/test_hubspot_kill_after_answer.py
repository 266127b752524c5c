"""SIGKILL placed exactly between HubSpot's answer and our commit, again and again.

``syncd run`` runs as a subprocess against the sandbox; the HubSpot emulator kills it the
moment a write has been carried out, before the answer goes out (its ``after_write`` hook):
the CRM holds the note, task or contact, the daemon never learns of it. Two of three lives
end on an activity write, one on the contact upsert. The emulator refuses unique activity
properties and its search lags writes (3 s, its default), so only an immediately consistent
read can find what a killed life wrote. At the end, every message must be in HubSpot exactly
once, counted at the emulator (``crash_soak.audit_target``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import crash_soak  # tests/perf is on pytest's pythonpath (pyproject)
import pytest
from syncd_hubspot.emulator.api import HubSpotEmulator

from syncd.connector import TargetContext, load_factory
from syncd.demo import sandbox_settings
from syncd.sandbox.generate import callers_of
from syncd.sandbox.http import Response
from syncd.sandbox.world import SandboxWorld

pytestmark = pytest.mark.slow

KILLS_AFTER_ACTIVITY = 20
ACTIVITY_WRITES = ("notes.batch_create", "calls.batch_create", "tasks.batch_create")
CONTACT_WRITES = ("contacts.batch_upsert",)


def test_sigkill_between_hubspots_answer_and_our_commit_doubles_nothing() -> None:
    with (
        tempfile.TemporaryDirectory(prefix="syncd-kill-") as tmp,
        SandboxWorld(messages=400, callers=80, days=2, seed=3, targets=["hubspot"]) as world,
    ):
        emulator = world.emulators["hubspot"]
        assert isinstance(emulator, HubSpotEmulator)
        assert emulator.search_lag >= 3.0, "the test is about search lag: keep the default"
        pre = {c.id for c in emulator.contacts()}
        database_url = f"sqlite:///{Path(tmp) / 'state.db'}"
        config = Path(tmp) / "syncd.toml"
        world.write_config(str(config), database_url)
        env = crash_soak.syncd_env(
            interval_seconds=1,
            jitter_seconds=0,
            lease_seconds=2.0,
            batch_size=10,
            log_format="json",
        )
        armed: dict[str, object] = {}
        kills: list[str] = []

        def kill_on_answer(endpoint: str, response: Response) -> None:
            pid, wanted = armed.get("pid"), armed.get("on", ())
            if isinstance(pid, int) and endpoint in wanted:  # type: ignore[operator]
                armed.clear()
                os.kill(pid, signal.SIGKILL)  # the write landed; its answer never arrives
                kills.append(endpoint)

        emulator.after_write = kill_on_answer
        log_path = Path(tmp) / "daemon.log"
        lives = 0
        with log_path.open("ab") as log:
            while sum(k in ACTIVITY_WRITES for k in kills) < KILLS_AFTER_ACTIVITY and lives < 60:
                lives += 1
                proc = subprocess.Popen(
                    crash_soak._syncd("run", "--config", str(config)),
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
                on_contact = lives % 3 == 0
                armed.update(pid=proc.pid, on=CONTACT_WRITES if on_contact else ACTIVITY_WRITES)
                try:
                    proc.wait(timeout=10 if on_contact else 30)
                except subprocess.TimeoutExpired:  # no such write came: the work is done
                    armed.clear()
                    proc.kill()
                    proc.wait()
                    if not on_contact:
                        break
        emulator.after_write = None
        after_activity = sum(k in ACTIVITY_WRITES for k in kills)
        assert after_activity >= KILLS_AFTER_ACTIVITY, (kills, lives)

        # Finish the rest without kills.
        status = crash_soak._status(config, env)
        runs = 0
        while any(crash_soak._unfinished(status).values()) and runs < 20:
            time.sleep(2.0)  # killed workers' leases
            runs += 1
            subprocess.run(
                crash_soak._syncd("run", "--once", "--config", str(config)),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=600,
                check=False,
            )
            status = crash_soak._status(config, env)

        settings = sandbox_settings(world, database_url)
        assert world.berkshire is not None
        message_callers = callers_of(world.berkshire.messages, world.callers)
        target = settings.targets["hubspot"]
        connector = load_factory(target.type)(TargetContext("hubspot", target.options))
        try:
            audit = crash_soak.audit_target(
                emulator,
                pre,
                world.callers,
                message_callers,
                connector.find_activities,
                status["targets"]["hubspot"]["deliveries"],
            )
        finally:
            connector.close()
    figures = {"kills": len(kills), "kills_after_activity_write": after_activity, **audit.__dict__}
    print(json.dumps(figures, sort_keys=True))
    assert audit.duplicate_activities == 0, figures
    assert audit.duplicate_contacts == 0, figures
    assert audit.missing_messages == 0, figures
    assert audit.clean, figures

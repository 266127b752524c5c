"""The console over HTTP without a browser: what each page shows, who may act, and that
the per-message sync log (`syncd status --message`) tells each attempt as it happened."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from console_world import TOKEN, ConsoleWorld, console_world
from syncd_cli import Result, syncd_env

from syncd.console import create_console
from syncd.console.security import exposure_warnings
from syncd.health import HealthServer
from syncd.metrics import Metrics
from syncd.models import activity_marker
from syncd.sandbox.toml import dumps


@pytest.fixture(scope="module")
def cw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleWorld]:
    with console_world(tmp_path_factory.mktemp("console")) as made:
        yield made


Client = Callable[..., httpx.Client]
InProcess = Callable[..., Result]


@pytest.fixture
def serve(cw: ConsoleWorld) -> Iterator[Client]:
    """A console on a real loopback port (settings changed by ``daemon`` keys) and an HTTP
    client for it that keeps cookies, as a browser would."""
    with ExitStack() as stack:

        def make(**daemon: object) -> httpx.Client:
            settings = cw.settings_with(**daemon) if daemon else cw.settings
            app = create_console(settings, cw.store)
            server = HealthServer(
                "127.0.0.1", 0, metrics=Metrics(), alive=lambda: True,
                ready=lambda: (True, "ok"), console=app,
            )  # fmt: skip
            stack.enter_context(server)
            client = httpx.Client(base_url=server.url, timeout=20, follow_redirects=True)
            return stack.enter_context(client)

        yield make


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


def _sign_in(client: httpx.Client) -> str:
    answer = client.post("/console/login", data={"token": TOKEN})
    assert answer.status_code == 200, answer.text  # 303 followed to the overview
    assert "Signed in" in answer.text
    return _csrf(client.get("/console/review").text)


# -- reading -----------------------------------------------------------------------------------


def test_root_redirects_to_the_console_and_health_endpoints_stay(
    cw: ConsoleWorld, serve: Client
) -> None:
    client = serve()
    assert client.get("/", follow_redirects=False).headers["location"] == "/console/"
    assert client.get("/").url.path == "/console/"
    assert client.get("/healthz").text == "ok\n"
    assert client.get("/readyz").json() == {"ready": True, "reason": "ok"}


def test_overview_shows_queues_accounts_and_runs(cw: ConsoleWorld, serve: Client) -> None:
    page = serve().get("/console/")
    assert page.status_code == 200
    html = page.text
    assert 'id="auto-refresh"' in html  # console.js refreshes it while the box is ticked
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/console/static/console.js">']
    row = re.search(r"<th scope=\"row\">salesforce</th>(.*?)</tr>", html, re.S)
    assert row
    assert ">16</a>" in row.group(1)
    row = re.search(r"<th scope=\"row\">hubspot</th>(.*?)</tr>", html, re.S)
    assert row
    assert f">{len(cw.held)}</a>" in row.group(1)
    assert "demo" in html
    assert "never polled" not in html
    assert "fetched 16" in html
    headers = page.headers
    assert "script-src 'self';" in headers["content-security-policy"]  # no inline script
    assert headers["x-content-type-options"] == "nosniff"


def test_overview_says_which_targets_are_paused_and_why(cw: ConsoleWorld) -> None:
    until = datetime.now(UTC) + timedelta(hours=1)
    app = create_console(
        cw.settings, cw.store, paused=lambda: {"salesforce": (until, "daily API limit reached")}
    )
    with HealthServer(
        "127.0.0.1", 0, metrics=Metrics(), alive=lambda: True, ready=lambda: (True, "ok"),
        console=app,
    ) as server:  # fmt: skip
        html = httpx.get(f"{server.url}/console/", timeout=10).text
    row = re.search(r"<th scope=\"row\">salesforce</th>(.*?)</tr>", html, re.S)
    assert row
    assert "Paused" in row.group(1)
    assert "daily API limit reached" in row.group(1)
    row = re.search(r"<th scope=\"row\">hubspot</th>(.*?)</tr>", html, re.S)
    assert row
    assert "Running" in row.group(1)


def test_review_queue_shows_message_and_candidates_side_by_side(
    cw: ConsoleWorld, serve: Client
) -> None:
    html = serve().get("/console/review").text
    for message_id in cw.held:
        assert f"Message {message_id}" in html
    for record_id in cw.twins["hubspot"]:
        assert f"Contact {record_id}" in html
        assert f'href="{cw.world.emulators["hubspot"].base_url}/contacts/{record_id}"' in html
    assert "<mark>" in html
    assert "matches" in html
    # The caller's phone is masked everywhere on the page.
    assert cw.caller.e164 is not None
    assert cw.caller.e164 not in html
    assert cw.caller.e164[-4:] not in html


def test_pii_shown_only_when_configured(cw: ConsoleWorld, serve: Client) -> None:
    assert cw.caller.e164 is not None
    shown = serve(console_show_pii=True).get("/console/review").text
    assert cw.caller.e164 in shown


def test_dead_letters_grouped_by_target_and_reason(cw: ConsoleWorld, serve: Client) -> None:
    html = serve().get("/console/dead").text
    assert "salesforce: 16 dead" in html
    assert "login answered HTTP 503" in html


def test_message_search_by_id_and_by_phone(cw: ConsoleWorld, serve: Client) -> None:
    client = serve()
    message_id = cw.held[0]
    by_id = client.get("/console/messages", params={"q": message_id}).text
    assert f">{message_id}</a>" in by_id
    assert cw.caller.e164 is not None
    national = cw.caller.e164[2:]
    spelt = f"({national[:3]}) {national[3:6]}-{national[6:]}"
    by_phone = client.get("/console/messages", params={"q": spelt}).text
    for held in cw.held:
        assert f">{held}</a>" in by_phone
    history = client.get("/console/message", params={"id": message_id})
    assert history.status_code == 200
    assert "review by phone: 2 candidates" in history.text
    assert "login answered HTTP 503" in history.text
    assert client.get("/console/message", params={"id": "nope"}).status_code == 404


def test_no_secret_is_ever_rendered(cw: ConsoleWorld, serve: Client) -> None:
    client = serve()
    pages = [client.get(p).text for p in ("/console/", "/console/review", "/console/dead")]
    pages.append(client.get("/console/login").text)
    secrets = [TOKEN, "sandbox-token"]
    secrets += [v for v in json.dumps(cw.doc["targets"]).split('"') if "secret" in v.lower()]
    for page in pages:
        for secret in secrets:
            assert secret not in page


# -- acting ------------------------------------------------------------------------------------


def test_read_only_without_a_token(cw: ConsoleWorld, serve: Client) -> None:
    client = serve(console_token=None)
    html = client.get("/console/review").text
    assert "Read-only" in html
    assert "Attach to this one" not in html
    item = cw.store.problems(["review"])[0]
    refused = client.post(f"/console/review/{item['delivery_id']}", data={"choice": "new"})
    assert refused.status_code == 403
    assert client.post("/console/login", data={"token": TOKEN}).status_code == 403
    bearer = client.post(
        "/console/dead/retry",
        data={"delivery_id": "1"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert bearer.status_code == 403
    assert cw.store.problems(["review"])[0]["state"] == "review"


def test_actions_need_the_token_and_the_forms_csrf(cw: ConsoleWorld, serve: Client) -> None:
    client = serve()
    item = cw.store.problems(["review"])[0]
    path = f"/console/review/{item['delivery_id']}"
    # Not signed in: refused, and no buttons shown.
    assert "Attach to this one" not in client.get("/console/review").text
    assert client.post(path, data={"choice": "new"}).status_code == 403
    # A wrong token does not sign in.
    wrong = client.post("/console/login", data={"token": "guess"})
    assert wrong.status_code == 403
    assert client.post(path, data={"choice": "new"}).status_code == 403
    csrf = _sign_in(client)
    # Signed in, but the form lacks or forges the CSRF token, or comes from another site.
    assert client.post(path, data={"choice": "new"}).status_code == 403
    assert client.post(path, data={"choice": "new", "csrf": "forged"}).status_code == 403
    cross = client.post(
        path, data={"choice": "new", "csrf": csrf}, headers={"Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    # A record that is not a candidate is refused.
    odd = client.post(path, data={"choice": "record:999999", "csrf": csrf})
    assert odd.status_code == 403
    assert cw.store.problems(["review"])[0]["delivery_id"] == item["delivery_id"]
    # Another client with no cookie, a wrong bearer token: refused.
    stranger = serve()
    assert (
        stranger.post(
            "/console/dead/retry",
            data={"delivery_id": "1"},
            headers={"Authorization": "Bearer wrong"},
        ).status_code
        == 403
    )
    assert cw.store.counts()["salesforce"]["dead"] == 16


def test_exposure_warning_for_check() -> None:
    assert exposure_warnings("127.0.0.1:9464", None) == []
    assert exposure_warnings("[::1]:9464", None) == []
    assert exposure_warnings("localhost:9464", None) == []
    assert exposure_warnings("", None) == []
    assert exposure_warnings("0.0.0.0:9464", "token") == []
    (warning,) = exposure_warnings("0.0.0.0:9464", None)
    assert "console_token_env" in warning
    assert exposure_warnings("[::]:9464", None)


def test_check_warns_about_a_console_bound_beyond_loopback(
    cw: ConsoleWorld, tmp_path: Path, in_process: InProcess
) -> None:
    doc = json.loads(json.dumps(cw.doc))
    doc["syncd"]["health_address"] = "0.0.0.0:9464"
    doc["syncd"].pop("console_token", None)
    config = tmp_path / "syncd.toml"
    config.write_text(dumps(doc), encoding="utf-8")
    config.chmod(0o600)
    result = in_process("check", "--config", str(config))
    assert "serves the console beyond loopback" in result.out, result.output


# -- the sync log ------------------------------------------------------------------------------


def test_status_message_tells_each_attempt(tmp_path: Path, in_process: InProcess) -> None:
    with console_world(tmp_path) as made:
        message_id = made.held[0]
        config = tmp_path / "syncd.toml"
        config.write_text(dumps(made.doc), encoding="utf-8")
        config.chmod(0o600)
        # Settle the review on the second twin, retry the dead, and deliver again.
        item = next(
            i
            for i in made.store.problems(["review"])
            if i["message_id"] == message_id and i["target"] == "hubspot"
        )
        chosen = made.twins["hubspot"][1]
        assert made.store.resolve_review(item["delivery_id"], record_id=chosen)
        assert made.store.retry_dead("salesforce") == 16
        made.daemon.run_cycle()

        run = in_process
        result = run("status", "--message", message_id, "--json", "--config", str(config))
        assert result.code == 0, result.output
        log = json.loads(result.out.strip().splitlines()[-1])
        (entry,) = log["messages"]
        by_target = {d["target"]: d for d in entry["deliveries"]}
        hub = [(e["kind"], e["attempt"]) for e in by_target["hubspot"]["events"]]
        assert hub == [
            ("claimed", 1), ("review", 1), ("settled", None), ("claimed", 1), ("done", 1),
        ]  # fmt: skip
        done = by_target["hubspot"]["events"][-1]
        assert done["record_id"] == chosen
        assert done["decision"] == "existing (operator's choice)"
        settled = by_target["hubspot"]["events"][2]
        assert settled["record_id"] == chosen
        assert settled["action"] == "resolved_record"
        sf = [e["kind"] for e in by_target["salesforce"]["events"]]
        assert sf[:2] == ["claimed", "dead"]
        assert sf[2] == "retried"
        assert sf[-1] == "review"
        assert "503" in by_target["salesforce"]["events"][1]["error"]
        assert made.caller.e164 not in result.out  # masked, as in logs
        marker = activity_marker("demo", message_id)
        (activity,) = [
            a for a in made.world.emulators["hubspot"].activities() if a.marker == marker
        ]
        assert activity.record_id == chosen

        table = run("status", "--message", message_id, "--config", str(config))
        assert table.code == 0
        assert "hubspot" in table.out
        assert "settled" in table.out
        missing = run("status", "--message", "nope", "--config", str(config))
        assert missing.code == 1
        assert "no message" in missing.out


def test_the_health_server_serves_the_console_over_real_http(
    cw: ConsoleWorld, serve: Client
) -> None:
    app = create_console(cw.settings, cw.store)
    with HealthServer(
        "127.0.0.1", 0, metrics=Metrics(), alive=lambda: True, ready=lambda: (True, "ok"),
        console=app,
    ) as server:  # fmt: skip
        answer = httpx.get(f"{server.url}/console/dead", timeout=10)
        assert answer.status_code == 200
        assert "salesforce: 16 dead" in answer.text
        css = httpx.get(f"{server.url}/console/static/console.css", timeout=10)
        assert css.status_code == 200
        assert "text/css" in css.headers["content-type"]


def test_retry_one_then_the_group_and_a_script_with_the_bearer_token(tmp_path: Path) -> None:
    with console_world(tmp_path) as made:
        app = create_console(made.settings, made.store)
        with (
            HealthServer(
                "127.0.0.1", 0, metrics=Metrics(), alive=lambda: True,
                ready=lambda: (True, "ok"), console=app,
            ) as server,
            httpx.Client(base_url=server.url, timeout=20, follow_redirects=True) as client,
        ):  # fmt: skip
            csrf = _sign_in(client)
            dead = made.store.problems(["dead"])
            one = client.post(
                "/console/dead/retry",
                data={"delivery_id": str(dead[0]["delivery_id"]), "csrf": csrf},
            )
            assert "Requeued 1 delivery" in one.text
            assert made.store.counts()["salesforce"]["dead"] == 15
            # Retrying it again does nothing: it is no longer dead.
            again = client.post(
                "/console/dead/retry",
                data={"delivery_id": str(dead[0]["delivery_id"]), "csrf": csrf},
            )
            assert "Requeued 0 deliveries" in again.text
            # A script acts with the token itself (no cookie, no CSRF token needed).
            page = client.get("/console/dead").text
            reason = re.search(r'name="reason" value="([^"]+)"', page)
            assert reason
            script = httpx.post(
                f"{server.url}/console/dead/retry",
                data={"target": "salesforce", "reason": reason.group(1)},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=20,
            )
            assert script.status_code == 303
            counts = made.store.counts()["salesforce"]
            assert (counts["dead"], counts["pending"]) == (0, 16)
        app.state.console.close()


def test_the_daemon_serves_the_console_on_its_health_address(tmp_path: Path) -> None:
    with console_world(tmp_path) as made:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        doc = json.loads(json.dumps(made.doc))
        doc["syncd"].update(health_address=f"127.0.0.1:{port}", interval_seconds=3600)
        config = tmp_path / "daemon.toml"
        config.write_text(dumps(doc), encoding="utf-8")
        config.chmod(0o600)
        made.daemon.close()  # the subprocess takes over the poll lease
        daemon = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "--config", str(config)],
            env=syncd_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            page = None
            for _ in range(300):  # bounded: up to 30 s for the daemon to come up
                try:
                    page = httpx.get(f"http://127.0.0.1:{port}/console/dead", timeout=5)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert page is not None, "the daemon's health address never answered"
            assert page.status_code == 200
            assert "Dead letters" in page.text
            assert "Running" in httpx.get(f"http://127.0.0.1:{port}/console/", timeout=5).text
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "ok\n"
        finally:
            daemon.send_signal(signal.SIGTERM)
            _, err = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, err.decode()[-2000:]

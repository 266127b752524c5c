"""Security, end to end: no secret escapes, phones stay masked, files stay private, TLS stays
on, and caller text cannot rewrite a CRM query.

The pipeline runs as an operator would run it -- ``syncd run --once`` in a subprocess at
``log_level = "debug"`` -- with credentials made up for this run, so that finding one of them
anywhere (a log line, an error, ``syncd status``, the state file) is a leak and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select
from syncd_salesforce.emulator import SalesforceEmulator
from syncd_salesforce.transport import SalesforceSession

from syncd.config import load_settings, parse_settings
from syncd.connector import TargetContext, load_factory
from syncd.errors import ConfigError, RetriableError
from syncd.match.phones import national_digits, normalize_phone
from syncd.models import KeyKind, MatchKey, activity_marker
from syncd.sandbox.toml import dumps
from syncd.sandbox.world import SandboxWorld
from syncd.source.client import BerkshireClient
from syncd.store.schema import deliveries, messages, runs
from syncd.store.store import Store

MESSAGES, CALLERS = 60, 15
EVIL_COMPANY = "Acme' OR Name != '"
EVIL_CONTENT = "x} OR {*"
EVIL_ID = "EVIL-1"


def _secret(label: str) -> str:
    return f"{label}-{secrets.token_hex(12)}"


@dataclass(frozen=True)
class Secrets:
    berkshire_token: str
    hubspot_token: str
    salesforce_password: str
    salesforce_security_token: str
    salesforce_consumer_secret: str

    @classmethod
    def make(cls) -> Secrets:
        return cls(
            berkshire_token=_secret("berkshire"),
            hubspot_token=_secret("hubspot"),
            salesforce_password=_secret("sfpassword"),
            salesforce_security_token=_secret("sftoken"),
            salesforce_consumer_secret=_secret("sfconsumer"),
        )

    def values(self) -> list[str]:
        return list(vars(self).values())


def clean_env() -> dict[str, str]:
    """No SYNCD_* variable of the caller's reaches the subprocess (CI sets some)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def syncd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


class Run:
    """A sandbox with this run's secrets, and a config file for it."""

    def __init__(self, world: SandboxWorld, keys: Secrets, tmp: Path) -> None:
        self.world, self.keys, self.tmp = world, keys, tmp
        self.db_path = tmp / "state" / "syncd.db"  # the directory does not exist yet either
        self.config = tmp / "syncd.toml"

    def document(self, changes: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The config; ``changes`` keys are ``<target>__<key>`` or ``demo__<key>`` (account)."""
        doc = self.world.settings_doc(
            f"sqlite:///{self.db_path}", log_level="debug", log_format="json"
        )
        doc["accounts"]["demo"]["token"] = self.keys.berkshire_token
        for name, value in (changes or {}).items():
            table, _, key = name.partition("__")
            doc["targets" if table != "demo" else "accounts"][table][key] = value
        return doc

    def write_config(self, changes: Mapping[str, Any] | None = None, *, mode: int = 0o600) -> Path:
        self.config.write_text(dumps(self.document(changes)), encoding="utf-8")
        self.config.chmod(mode)
        return self.config


def _evil_message(world: SandboxWorld) -> dict[str, object]:
    """A new caller whose company and message are SOQL/SOSL injection attempts."""
    berkshire = world.berkshire
    assert berkshire is not None
    template = dict(berkshire.messages[-1])
    template.update(
        {
            "message id": EVIL_ID,
            "first name": "Mallory",
            "last name": "Quote",
            "company name": EVIL_COMPANY,
            "content": EVIL_CONTENT,
            "phone": "(303) 555-0142",
            "caller id": "",
            "content with additional details": "",
            "is emergency": False,
        }
    )
    for key in [k for k in template if k.startswith("content with additional details table")]:
        del template[key]
    return template


@pytest.fixture(scope="module")
def keys() -> Secrets:
    return Secrets.make()


@pytest.fixture(scope="module")
def synced(keys: Secrets, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One debug-level ``syncd run --once`` over the sandbox, and what it left behind."""
    tmp = tmp_path_factory.mktemp("security")
    options = {
        "hubspot": {"token": keys.hubspot_token},
        "salesforce": {
            "password": keys.salesforce_password,
            "security_token": keys.salesforce_security_token,
            "consumer_secret": keys.salesforce_consumer_secret,
        },
    }
    with SandboxWorld(
        messages=MESSAGES, callers=CALLERS, days=2, emulator_options=options
    ) as world:
        assert world.berkshire is not None
        world.berkshire.token = keys.berkshire_token
        world.berkshire.add_messages([_evil_message(world)])
        pre = {name: {c.id for c in e.contacts()} for name, e in world.emulators.items()}
        run = Run(world, keys, tmp)
        run.write_config()
        once = syncd("run", "--once", "--config", str(run.config))
        salesforce = world.emulators["salesforce"]
        assert isinstance(salesforce, SalesforceEmulator)
        with salesforce.lock:
            sessions = list(salesforce._sessions)  # issued to the connector: secrets too
        yield {
            "world": world,
            "run": run,
            "once": once,
            "pre": pre,
            "sessions": sessions,
            "status": syncd("status", "--config", str(run.config)),
            "status_json": syncd("status", "--json", "--config", str(run.config)),
        }


def leaks(text: str, values: Sequence[str]) -> list[str]:
    return [v for v in values if v and v in text]


def test_the_run_succeeds(synced: Mapping[str, Any]) -> None:
    once = synced["once"]
    assert once.returncode == 0, once.stderr[-3000:]
    lines = [json.loads(line) for line in once.stderr.splitlines() if line.startswith("{")]
    assert any(line.get("level") == "debug" for line in lines)  # debug did reach the log


def test_no_secret_in_logs_status_or_state(synced: Mapping[str, Any], keys: Secrets) -> None:
    run: Run = synced["run"]
    values = [*keys.values(), *synced["sessions"]]
    assert synced["sessions"], "the connector logged in: its session id is checked too"
    for name in ("once", "status", "status_json"):
        done = synced[name]
        assert done.returncode == 0, done.stderr[-2000:]
        assert not leaks(done.stdout + done.stderr, values), name
    store = Store(f"sqlite:///{run.db_path}")
    try:
        with store.engine.connect() as conn:
            records = [dict(r._mapping) for r in conn.execute(select(runs))]
    finally:
        store.close()
    assert records
    assert not leaks(json.dumps(records, default=str), values)
    # And anywhere in the state files, byte for byte (the WAL included).
    for path in run.db_path.parent.iterdir():
        blob = path.read_bytes()
        assert not [v for v in values if v.encode() in blob], path.name


def test_errors_do_not_carry_secrets(synced: Mapping[str, Any], keys: Secrets) -> None:
    """Refused credentials: the errors name the problem, never the credential tried."""
    run: Run = synced["run"]
    wrong = {
        "demo__token": _secret("wrong-berkshire"),
        "hubspot__access_token": _secret("wrong-hubspot"),
        "salesforce__password": _secret("wrong-sfpassword"),
    }
    run.write_config(wrong)
    try:
        failed = syncd("run", "--once", "--config", str(run.config))
        status = syncd("status", "--json", "--config", str(run.config))
    finally:
        run.write_config()
    assert failed.returncode == 3, failed.stderr[-2000:]
    assert "Invalid token" in failed.stderr or "refused" in failed.stderr
    values = [*keys.values(), *wrong.values()]
    assert not leaks(failed.stdout + failed.stderr + status.stdout + status.stderr, values)


def test_phones_are_masked_in_logs(synced: Mapping[str, Any]) -> None:
    world: SandboxWorld = synced["world"]
    log = synced["once"].stderr
    digit_runs = {re.sub(r"\D", "", run) for run in re.findall(r"\+?\d[\d\s().-]{5,}\d", log)}
    exposed = []
    for caller in world.callers:
        if caller.e164 is None:
            continue
        national = national_digits(caller.e164)
        if caller.e164 in log or any(national in run for run in digit_runs):
            exposed.append(caller.e164[:4])
    assert not exposed, f"{len(exposed)} callers' numbers in the log"


def test_state_file_is_private(synced: Mapping[str, Any]) -> None:
    run: Run = synced["run"]
    for path in run.db_path.parent.iterdir():
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"
    assert stat.S_IMODE(run.db_path.stat().st_mode) == 0o600


def test_a_config_others_can_read_draws_a_warning(synced: Mapping[str, Any], keys: Secrets) -> None:
    run: Run = synced["run"]
    config = run.write_config(mode=0o644)
    try:
        done = syncd("status", "--config", str(config))
        settings = load_settings(config, environ={})
    finally:
        run.write_config()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "readable by others" in done.stderr
    assert any("readable by others" in w for w in settings.warnings)
    assert not leaks(done.stderr, keys.values())
    quiet = syncd("status", "--config", str(run.config))  # 0600: no warning
    assert "readable by others" not in quiet.stderr


# -- caller text is data ----------------------------------------------------------------------


def test_injection_attempt_is_delivered_as_data(synced: Mapping[str, Any]) -> None:
    """A company of ``Acme' OR Name != '`` and a message of ``x} OR {*``: a new caller,
    created once in each CRM and matched to nobody else."""
    world: SandboxWorld = synced["world"]
    run: Run = synced["run"]
    marker = activity_marker("demo", EVIL_ID)
    store = Store(f"sqlite:///{run.db_path}")
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(deliveries.c.target, deliveries.c.state, deliveries.c.action)
                .join(messages, messages.c.id == deliveries.c.message_pk)
                .where(messages.c.message_id == EVIL_ID)
            ).all()
    finally:
        store.close()
    assert sorted((r.target, r.state, r.action) for r in rows) == [
        ("hubspot", "done", "create"),
        ("salesforce", "done", "create"),
    ]
    for name, emulator in world.emulators.items():
        created = [c for c in emulator.contacts() if c.id not in synced["pre"][name]]
        mallory = [c for c in created if c.first_name == "Mallory"]
        assert len(mallory) == 1, name
        logged = [a for a in emulator.activities() if a.marker == marker]
        assert len(logged) == 1, name
        assert logged[0].record_id == mallory[0].id, name
        assert any(EVIL_CONTENT in a.body for a in logged), name
        key = normalize_phone("(303) 555-0142")
        assert key is not None
        # Nobody else got this caller's message, and nobody else has this caller's phone.
        others = [c for c in emulator.contacts() if c.id != mallory[0].id]
        assert all(normalize_phone(c.phone) != key for c in others), name


def test_injection_attempt_in_lookups_matches_nobody(synced: Mapping[str, Any]) -> None:
    """The same text through each connector's lookup: a literal that matches no one."""
    world: SandboxWorld = synced["world"]
    run: Run = synced["run"]
    settings = parse_settings(run.document(), environ={})
    keys = [
        MatchKey(KeyKind.COMPANY, EVIL_COMPANY),
        MatchKey(KeyKind.NAME, f"{EVIL_COMPANY}|x"),
        MatchKey(KeyKind.EMAIL, "x} OR {*@example.com"),
        MatchKey(KeyKind.COMPANY, "*"),
    ]
    for name in world.emulators:
        target = settings.targets[name]
        connector = load_factory(target.type)(TargetContext(name, target.options))
        try:
            found = connector.lookup(keys)
        finally:
            connector.close()
        matched = {str(k): [r.id for r in v] for k, v in found.items() if v}
        # Only the company the evil caller brought along may match its own name: its one
        # company record, and the contacts syncd linked to it (Salesforce: on its Account).
        assert set(matched) <= {str(keys[0])}, (name, matched)
        companies = [r for r in found.get(keys[0], ()) if r.kind in ("company", "account")]
        assert len(companies) <= 1, (name, matched)
        assert all(r.company == EVIL_COMPANY for r in found.get(keys[0], ())), (name, matched)


# -- TLS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://api.berkshire.example/v2",
        "http://localhost.attacker.example",
        "http://127.0.0.1.attacker.example",
        "ftp://127.0.0.1",
    ],
)
def test_plain_http_is_refused_for_real_endpoints(url: str, synced: Mapping[str, Any]) -> None:
    run: Run = synced["run"]
    with pytest.raises(ConfigError, match="base_url"):
        parse_settings(run.document({"demo__base_url": url}), environ={})


@pytest.mark.parametrize(
    ("target", "option", "url"),
    [
        ("hubspot", "host", "http://api.hubapi.com"),
        ("hubspot", "host", "http://localhost.attacker.example"),
        ("salesforce", "instance_url", "http://example.my.salesforce.com"),
        ("salesforce", "instance_url", "http://localhost.attacker.example"),
    ],
)
def test_connectors_refuse_plain_http_for_real_endpoints(
    target: str, option: str, url: str, synced: Mapping[str, Any]
) -> None:
    run: Run = synced["run"]
    settings = parse_settings(run.document({f"{target}__{option}": url}), environ={})
    options = settings.targets[target].options
    with pytest.raises(ConfigError, match=option):
        load_factory(target)(TargetContext(target, options)).close()


@dataclass(frozen=True)
class TlsServer:
    url: str
    cert: Path  # self-signed: its own CA


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """An HTTPS server on loopback with a self-signed certificate nobody trusts."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,IP:127.0.0.2",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"success": true, "data": []}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return None

    # 127.0.0.2: loopback still, but not a host the Salesforce session rewrites to plain http.
    server = HTTPServer(("127.0.0.2", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TlsServer(f"https://127.0.0.2:{server.server_address[1]}", cert)
    finally:
        server.shutdown()
        server.server_close()


def test_source_client_verifies_tls(tls_server: TlsServer) -> None:
    day = date(2024, 1, 1)
    client = BerkshireClient(tls_server.url, "a@example.com", "t", max_attempts=1)
    try:
        with pytest.raises(RetriableError, match="ConnectError"):
            client.list_raw(day, day)
    finally:
        client.close()
    # The certificate is the only reason: trusted, the same server answers.
    trusted = ssl.create_default_context(cafile=str(tls_server.cert))
    # httpx takes an SSLContext for ``verify``; the client passes it through untouched.
    client = BerkshireClient(tls_server.url, "a@example.com", "t", verify=trusted)  # type: ignore[arg-type]
    try:
        assert client.list_raw(day, day) == []
    finally:
        client.close()


def test_salesforce_session_ignores_verify_false(tls_server: TlsServer) -> None:
    session = SalesforceSession(timeout=5.0)
    try:
        assert session.verify is True
        with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            session.request("GET", tls_server.url + "/services/data", verify=False)
    finally:
        session.close()


def test_hubspot_connector_verifies_tls(tls_server: TlsServer) -> None:
    options = {"access_token": "t", "host": tls_server.url, "max_retries": 0}
    connector = load_factory("hubspot")(TargetContext("hubspot", options))
    try:
        with pytest.raises(RetriableError, match="network error"):
            connector.read("contact", ["1"])
    finally:
        connector.close()

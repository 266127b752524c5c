"""Operator alerts to a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...).

An alert is written to the state store's alert outbox first (a dead letter in the same
transaction as its outcome) and posted by a sender that retries with back-off: a webhook that
is down, slow or misconfigured costs a warning in the log, never an exception in the daemon,
and never the alert. Each alert has a key, so a restart or a second replica does not send it
twice, and a target that fails every cycle does not page someone every cycle.

What goes into an alert is data from elsewhere (CRM error text, caller names, message bodies):
it is escaped for Slack's mrkdwn (no ``<!channel>`` pings or disguised links from a caller),
cut to a sane length, has registered secrets cut out and phone numbers and emails masked. The
webhook URL itself is a credential (it embeds a token): it is never logged, and it must be
https unless it points at this host.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import structlog

from syncd._version import __version__
from syncd.backoff import backoff_delay
from syncd.errors import ConfigError
from syncd.logging import redact_text
from syncd.match.phones import mask_phone, mask_phones_in
from syncd.models import Message
from syncd.store.alertbox import AlertRow, claim_alerts, enqueue, mark_alert

__all__ = ["Alerter", "alert_payload", "dead_letter_alert", "mask_emails_in", "mask_personal"]

_log = structlog.get_logger(__name__)

Severity = Literal["info", "warning", "critical"]
_COLORS: dict[Severity, str] = {"info": "#439fe0", "warning": "#daa038", "critical": "#d00000"}
_MAX_VALUE = 500


class Alerter:
    """Posts alerts to ``url``; with ``url=None`` every method is a no-op returning False.

    With a ``store`` attached (the daemon attaches its own) an alert is first written to the
    store's alert outbox under a key that names it once, then posted by :meth:`flush`, which
    retries with back-off on every later call: a webhook that is down delays an alert, a
    restart neither loses nor repeats it. Without one (``syncd check``, tests) it is posted
    at once and identical alerts within ``min_interval`` are sent once.

    Each method returns True when the alert was delivered now, False when it was suppressed
    as a duplicate, alerting is off, or the webhook failed (it is then retried, with a store).
    """

    def __init__(
        self,
        url: str | None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        min_interval: float = 300.0,
        instance: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        store: Any = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if url is not None and not _secure_or_loopback(url):
            # Not echoing the value: it is a secret.
            raise ConfigError(
                "must be an https URL (plain http only to loopback)", key="alert_webhook_url"
            )
        self._url = url
        self.min_interval = min_interval
        self.instance = instance or socket.gethostname()
        self._clock = clock
        self._wall = wall
        self.store = store
        self._sent: dict[str, float] = {}
        self._lock = threading.Lock()
        # verify=True is httpx's default, stated because a webhook URL is a bearer credential.
        self._client = (
            httpx.Client(timeout=timeout, transport=transport, verify=True, follow_redirects=False)
            if url is not None
            else None
        )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    def attach(self, store: Any) -> None:
        """Write alerts to ``store``'s outbox first (see the class docstring)."""
        self.store = store

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> Alerter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the alerts the daemon raises ---------------------------------------------------------
    def auth_failure(self, where: str, detail: str) -> bool:
        """The source or a CRM refused our credentials; work for it is paused."""
        return self.send(
            f"Authentication failed at {where}; syncing to or from it is paused",
            fields={"Where": where, "Detail": mask_personal(detail)},
            severity="critical",
            kind="auth",
        )

    def dead_letter(self, target: str, message_id: str, reason: str) -> bool:
        """A delivery gave up after its last attempt and needs a person. (The daemon writes
        these with the delivery's outcome, see :func:`dead_letter_alert`.)"""
        return self.send(
            f"Message {message_id} could not be delivered to {target}",
            fields={"Target": target, "Message": message_id, "Reason": mask_personal(reason)},
            severity="warning",
            kind="dead_letter",
        )

    def daily_limit(self, target: str) -> bool:
        """A CRM's daily API quota is spent; deliveries to it wait for the quota to reset."""
        return self.send(
            f"Daily API limit reached at {target}; deliveries resume when the quota resets",
            fields={"Target": target},
            severity="warning",
            kind="daily_limit",
        )

    def outage(self, target: str, until: datetime, reason: str) -> bool:
        """A target's circuit breaker opened: whole batches keep failing, deliveries wait."""
        return self.send(
            f"{target} keeps failing; deliveries to it are paused until {until:%H:%M} UTC",
            fields={"Target": target, "Reason": mask_personal(reason)},
            severity="critical",
            kind="outage",
            key=f"outage:{target}:{until.isoformat()}",
        )

    def emergency(self, account: str, message_id: str, caller: str, summary: str) -> bool:
        """A message the receptionist flagged as an emergency. Phones and emails are masked.
        Keyed by the message: sent once, whatever restarts or replicas see it again (the
        store also writes it with the message itself, see :func:`emergency_alerts`)."""
        row = emergency_alert(account, message_id, caller, summary)
        return self.send(
            row.payload["title"],
            fields=row.payload["fields"],
            severity="critical",
            kind=row.kind,
            key=row.key,
        )

    # -- the mechanism ----------------------------------------------------------------------------
    def send(
        self,
        title: str,
        *,
        fields: Mapping[str, str] | None = None,
        severity: Severity = "warning",
        kind: str = "alert",
        key: str | None = None,
    ) -> bool:
        """Send one alert: ``title`` as the message text, ``fields`` as a table under it."""
        if self._client is None or self._url is None:
            return False
        stored = alert_payload(title, fields or {}, severity)
        if self.store is not None:
            if key is None:  # the same alert again within min_interval is the same alert
                bucket = int(self._wall().timestamp() // max(self.min_interval, 1.0))
                digest = hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()
                key = f"{kind}:{digest[:32]}:{bucket}"
            enqueue(self.store, [AlertRow(key, kind, stored)], self._wall())
            return key in self.flush()
        payload = _payload(stored["title"], stored["fields"], severity, self.instance)
        dedupe = json.dumps(payload, sort_keys=True)
        if not self._reserve(dedupe):
            _log.debug("alert suppressed as a duplicate", title=payload["text"])
            return False
        if self._post(payload) is None:
            return True
        self._release(dedupe)
        return False

    def flush(self, limit: int = 50) -> set[str]:
        """Post the store's due alerts; returns the keys sent. Failures back off and stay."""
        if self.store is None or self._client is None:
            return set()
        sent: set[str] = set()
        now = self._wall()
        with self.store.engine.begin() as conn:
            due = claim_alerts(conn, now, limit, hold_seconds=60.0)
        for alert in due:
            payload = _payload(
                str(alert.payload.get("title", "")),
                dict(alert.payload.get("fields") or {}),
                _severity(alert.payload.get("severity")),
                self.instance,
            )
            error = self._post(payload)
            # The daemon's one backoff (syncd.backoff): 15-30 s, doubling to an hour.
            wait = backoff_delay(alert.attempts + 1, base=30.0, cap=3600.0)
            later = now + timedelta(seconds=wait)
            with self.store.engine.begin() as conn:
                mark_alert(
                    conn, alert.id, self._wall(), sent=error is None, retry_at=later, error=error
                )
            if error is None:
                sent.add(alert.key)
        return sent

    def _post(self, payload: Mapping[str, Any]) -> str | None:
        """Post; None when the webhook took it, else why not (never raises)."""
        assert self._client is not None
        assert self._url is not None
        try:
            response = self._client.post(self._url, json=payload)
        except Exception as exc:  # best effort: no failure here may reach the daemon
            _log.warning("alert webhook unreachable", error=type(exc).__name__)
            return type(exc).__name__
        if response.is_success:
            return None
        _log.warning("alert webhook refused the alert", status=response.status_code)
        return f"HTTP {response.status_code}"

    def _reserve(self, key: str) -> bool:
        """Claim ``key`` for sending unless it was sent within ``min_interval``."""
        now = self._clock()
        with self._lock:
            horizon = now - self.min_interval
            for old in [k for k, at in self._sent.items() if at <= horizon]:
                del self._sent[old]
            if key in self._sent:
                return False
            self._sent[key] = now
            return True

    def _release(self, key: str) -> None:
        with self._lock:
            self._sent.pop(key, None)


def _severity(value: object) -> Severity:
    if value == "info" or value == "critical":
        return value
    return "warning"


def _secure_or_loopback(url: str) -> bool:
    """https anywhere; plain http only to a loopback host (the URL is a bearer credential)."""
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    if parts.scheme == "https" and parts.host:
        return True
    if parts.scheme != "http" or not parts.host:
        return False
    if parts.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.host).is_loopback
    except ValueError:
        return False


def _payload(
    title: str, fields: Mapping[str, str], severity: Severity, instance: str
) -> dict[str, Any]:
    """Slack's ``text`` (all some webhooks show) plus a legacy attachment with the fields;
    attachments, unlike blocks, are understood by Mattermost and Rocket.Chat too."""
    text = f"[syncd] {_clean(title)}"
    return {
        "text": text,
        "attachments": [
            {
                "fallback": text,
                "color": _COLORS[severity],
                "fields": [
                    {"title": name, "value": _clean(value), "short": len(value) < 40}
                    for name, value in fields.items()
                ],
                "footer": f"syncd {__version__} on {_clean(instance)}",
            }
        ],
    }


def _clean(value: str) -> str:
    """Alert-safe text: secrets cut out, bounded, escaped as Slack asks (only &, <, >)."""
    value = redact_text(value)
    if len(value) > _MAX_VALUE:
        value = value[: _MAX_VALUE - 1] + "…"
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def dead_letter_alert(
    target: str, account: str, message_id: str, reason: str, when: datetime
) -> AlertRow:
    """The outbox row for a delivery that gave up: written with its outcome, never lost."""
    return AlertRow(
        key=f"dead:{target}:{account}:{message_id}:{when.isoformat()}",
        kind="dead_letter",
        payload=alert_payload(
            f"Message {message_id} could not be delivered to {target}",
            {"Target": target, "Message": message_id, "Reason": mask_personal(reason)},
            "warning",
        ),
    )


def emergency_alert(account: str, message_id: str, caller: str, summary: str) -> AlertRow:
    return AlertRow(
        key=f"emergency:{account}:{message_id}",
        kind="emergency",
        payload=alert_payload(
            f"Emergency message for {account}",
            {
                "Account": account,
                "Message": message_id,
                "Caller": mask_phone(caller),
                "Summary": mask_personal(summary[:200]),
            },
            "critical",
        ),
    )


def emergency_alerts(fresh: Sequence[Message]) -> list[AlertRow]:
    """The outbox rows for the emergencies among newly stored messages: the store writes
    them in the same transaction as the messages, so a crash between the two loses none."""
    return [
        emergency_alert(m.account, m.message_id, m.phone or m.caller_id, m.content)
        for m in fresh
        if m.is_emergency
    ]


def alert_payload(title: str, fields: Mapping[str, str], severity: Severity) -> dict[str, Any]:
    """What an outbox row keeps. Caller text is masked by the alert that carries it (ids in
    the title are not phone numbers); emails are masked everywhere, before it is stored."""
    return {
        "title": mask_emails_in(title),
        "fields": {name: mask_emails_in(value) for name, value in fields.items()},
        "severity": severity,
    }


def mask_personal(text: str) -> str:
    """Phones and emails masked, as in logs."""
    return mask_emails_in(mask_phones_in(text))


_EMAIL = re.compile(r"([\w.!#$%&'*+/=?^`{|}~-]+)@([\w-]+(?:\.[\w-]+)*)\.([A-Za-z]{2,})")


def _mask_email(match: re.Match[str]) -> str:
    local, host, tld = match.group(1), match.group(2), match.group(3)
    return f"{local[0]}***@{host[0]}***.{tld}"


def mask_emails_in(text: str) -> str:
    """Every email address in ``text`` masked: "jane@example.com" -> "j***@e***.com"."""
    return _EMAIL.sub(_mask_email, text)

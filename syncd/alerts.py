"""Operator alerts to a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...).

Alerting is best effort: a webhook that is down, slow or misconfigured costs one warning in
the log and never an exception in the daemon. Identical alerts within ``min_interval`` are sent
once, so a target that fails every cycle does not page someone every cycle; an alert whose
post failed is not remembered, so it goes out on the next attempt.

What goes into an alert is data from elsewhere (CRM error text, caller names, message bodies):
it is escaped for Slack's mrkdwn (no ``<!channel>`` pings or disguised links from a caller),
cut to a sane length, has registered secrets cut out and phone numbers masked. The webhook
URL itself is a credential (it embeds a token), so it is never logged.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import httpx
import structlog

from syncd._version import __version__
from syncd.errors import ConfigError
from syncd.logging import redact_text
from syncd.match.phones import mask_phone, mask_phones_in
from syncd.store.alertbox import AlertRow

__all__ = ["Alerter"]

_log = structlog.get_logger(__name__)

Severity = Literal["info", "warning", "critical"]
_COLORS: dict[Severity, str] = {"info": "#439fe0", "warning": "#daa038", "critical": "#d00000"}
_MAX_VALUE = 500


class Alerter:
    """Posts alerts to ``url``; with ``url=None`` every method is a no-op returning False.

    Each method returns True when the alert was delivered, False when it was suppressed as
    a duplicate, alerting is off, or the webhook failed. ``clock`` is injectable for tests.
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
    ) -> None:
        if url is not None and httpx.URL(url).scheme not in ("http", "https"):
            # Not echoing the value: it is a secret.
            raise ConfigError("must be an http(s) URL", key="alert_webhook_url")
        self._url = url
        self.min_interval = min_interval
        self.instance = instance or socket.gethostname()
        self._clock = clock
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
            fields={"Where": where, "Detail": mask_phones_in(detail)},
            severity="critical",
        )

    def dead_letter(self, target: str, message_id: str, reason: str) -> bool:
        """A delivery gave up after its last attempt and needs a person."""
        return self.send(
            f"Message {message_id} could not be delivered to {target}",
            fields={"Target": target, "Message": message_id, "Reason": mask_phones_in(reason)},
            severity="warning",
        )

    def daily_limit(self, target: str) -> bool:
        """A CRM's daily API quota is spent; deliveries to it wait for the quota to reset."""
        return self.send(
            f"Daily API limit reached at {target}; deliveries resume when the quota resets",
            fields={"Target": target},
            severity="warning",
        )

    def emergency(self, account: str, message_id: str, caller: str, summary: str) -> bool:
        """A message the receptionist flagged as an emergency. Phone numbers are masked."""
        return self.send(
            f"Emergency message for {account}",
            fields={
                "Account": account,
                "Message": message_id,
                "Caller": mask_phone(caller),
                "Summary": mask_phones_in(summary),
            },
            severity="critical",
        )

    # -- the mechanism ----------------------------------------------------------------------------
    def send(
        self,
        title: str,
        *,
        fields: Mapping[str, str] | None = None,
        severity: Severity = "warning",
    ) -> bool:
        """Post one alert: ``title`` as the message text, ``fields`` as a table under it."""
        if self._client is None or self._url is None:
            return False
        payload = _payload(title, fields or {}, severity, self.instance)
        key = json.dumps(payload, sort_keys=True)
        if not self._reserve(key):
            _log.debug("alert suppressed as a duplicate", title=payload["text"])
            return False
        try:
            response = self._client.post(self._url, json=payload)
        except Exception as exc:  # best effort: no failure here may reach the daemon
            _log.warning("alert webhook unreachable", error=type(exc).__name__)
            self._release(key)
            return False
        if response.is_success:
            return True
        _log.warning("alert webhook refused the alert", status=response.status_code)
        self._release(key)
        return False

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
            {"Target": target, "Message": message_id, "Reason": reason},
            "warning",
        ),
    )


def alert_payload(title: str, fields: Mapping[str, str], severity: Severity) -> dict[str, Any]:
    """What an outbox row keeps: phones and emails masked before it is ever stored."""
    return {
        "title": mask_personal(title),
        "fields": {name: mask_personal(value) for name, value in fields.items()},
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

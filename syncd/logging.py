"""structlog set-up: JSON off a terminal, readable on one; secrets redacted, phones masked.

Redaction runs as a processor on every event, so no call site has to remember it: any key that
names a secret is replaced, any registered secret *value* is cut out of every string, and
phone-looking numbers in values are masked unless the operator turned masking off.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "connector_logger", "redact_text", "register_secret"]

_SECRET_KEYS = (
    "token",
    "password",
    "secret",
    "authorization",
    "session_id",
    "api_key",
    "private_key",
)
_PHONE_KEYS = ("phone", "caller_id", "from", "mobile")
_secrets: set[str] = set()
_lock = threading.Lock()
_mask_phones = True


def connector_logger(connector: str, **context: Any) -> Any:
    """The logger for connector ``connector``, with ``context`` bound to every event; its
    events pass the same redaction as syncd's own."""
    # Lazy (initial values, no .bind()): called at import time, before configure_logging,
    # the logger must take the configuration in force when it first logs.
    return structlog.get_logger(f"syncd.connector.{connector}", **context)


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is cut out of every log line, wherever it appears."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact_text(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "[REDACTED]")
    return text


def _mask(text: str) -> str:
    from syncd.match.phones import mask_phones_in  # deferred: logging loads before matching

    return mask_phones_in(text)


def _scrub(key: str, value: Any) -> Any:
    lowered = key.lower()
    if any(word in lowered for word in _SECRET_KEYS) and not lowered.endswith(("_env", "_file")):
        return "[REDACTED]"
    if isinstance(value, str):
        value = redact_text(value)
        if _mask_phones and (
            any(word in lowered for word in _PHONE_KEYS) or key in ("event", "error", "detail")
        ):
            value = _mask(value)
        return value
    if isinstance(value, dict):
        return {k: _scrub(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(key, v) for v in value]
    if isinstance(value, BaseException):
        return _scrub(key, f"{type(value).__name__}: {value}")
    return value


def redact_processor(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        event[key] = _scrub(key, event[key])
    return event


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is *now*, so a rich progress bar that redirects
    stderr prints log lines above itself instead of through it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(
    *,
    level: str = "info",
    fmt: str = "auto",
    mask_phones: bool = True,
    secrets: Iterable[str | None] = (),
) -> None:
    global _mask_phones
    _mask_phones = mask_phones
    for secret in secrets:
        register_secret(secret)
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries (urllib3, httpx, alembic, apscheduler) log through stdlib logging: their
    # records go through the same chain (JSON, run id, redaction, masking) as ours, named by
    # their logger, instead of printing plain text into the JSON stream.
    handler = logging.StreamHandler(_CurrentStderr())
    handler.set_name("syncd")
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_processor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "syncd"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    for name in ("httpx", "httpcore", "urllib3", "alembic", "apscheduler"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))

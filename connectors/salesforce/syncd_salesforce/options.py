"""The target's options table, validated once, with the offending key named on error."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from syncd.plugin import ConfigError, TargetContext

__all__ = [
    "AUTH_FLOWS",
    "KNOWN_KEYS",
    "LOOPBACK_HOSTS",
    "SOAP_LOGIN_LAST_VERSION",
    "SalesforceOptions",
    "parse_options",
]

AUTH_FLOWS = ("password", "client_credentials", "jwt", "session")
# SOAP login() is unavailable from API 65.0 on (Salesforce help article 005132110).
SOAP_LOGIN_LAST_VERSION = 64
_SECRETS = (
    "username",
    "password",
    "security_token",
    "consumer_key",
    "consumer_secret",
    "privatekey",
    "session_id",
)
KNOWN_KEYS = frozenset(
    {
        *(f"{name}{suffix}" for name in _SECRETS for suffix in ("", "_env", "_file")),
        "auth",
        "domain",
        "instance_url",
        "api_version",
        "record_type",
        "new_record",
        "account",
        "allow_save",
        "search_objects",
        "caller_key_field",
        "marker_field",
        "contact_fields",
        "timeout",
        "deadline",
        "daily_limit_alert_ratio",
        "retries",
        "backoff",
        "requests_per_second",
    }
)
_ACCOUNT_MODES = ("match_or_create", "match_only", "none")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VERSION = re.compile(r"\d{2,3}\.0")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*")
_RECORD_TYPES = ("Contact", "Lead")


@dataclass(frozen=True)
class SalesforceOptions:
    auth: str
    username: str | None = None
    password: str | None = None
    security_token: str | None = None
    consumer_key: str | None = None
    consumer_secret: str | None = None
    privatekey: str | None = None
    session_id: str | None = None
    domain: str = "login"
    instance_url: str | None = None  # e.g. the emulator; also the login endpoint when set
    api_version: str = "59.0"
    record_type: str = "Contact"
    search_objects: tuple[str, ...] = ("Contact", "Lead")
    caller_key_field: str = "Syncd_Key__c"
    marker_field: str = "Syncd_Marker__c"
    contact_fields: Mapping[str, str] = field(default_factory=dict)
    # New Contacts join an Account by company name: match_or_create, match_only or none.
    account: str = "match_or_create"
    # Send ``Sforce-Duplicate-Rule-Header: allowSave=true`` (save past an alerting rule).
    allow_save: bool = False
    timeout: float = 30.0
    # The whole exchange (connect, send, every read) ends within this many seconds.
    deadline: float = 120.0
    daily_limit_alert_ratio: float = 0.9
    retries: int = 3
    backoff: float = 0.5
    requests_per_second: float = 20.0

    @property
    def login_base(self) -> str:
        """Where logins go: ``instance_url`` when given, else ``https://<domain>.salesforce.com``."""
        if self.instance_url:
            return self.instance_url.rstrip("/")
        return f"https://{self.domain}.salesforce.com"

    def secrets(self) -> list[str]:
        return [
            s
            for s in (self.password, self.security_token, self.consumer_secret, self.session_id)
            if s
        ]


def _str(options: Mapping[str, Any], key: str, default: str = "") -> str:
    value = options.get(key, default)
    if not isinstance(value, str):
        raise ConfigError("must be a string", key=key)
    return value.strip()


def _api_name(options: Mapping[str, Any], key: str, default: str) -> str:
    value = _str(options, key, default)
    if value and not _API_NAME.fullmatch(value):
        raise ConfigError(f"{value!r} is not a Salesforce field API name", key=key)
    return value


def _number(options: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError("must be a number", key=key)
    if not low <= float(value) <= high:
        raise ConfigError(f"must be between {low:g} and {high:g}", key=key)
    return float(value)


def _domain(options: Mapping[str, Any]) -> str:
    """``login``, ``test``, or a My Domain host given with or without ``.salesforce.com``."""
    value = _str(options, "domain", "login").lower()
    value = value.removeprefix("https://").rstrip("/").removesuffix(".salesforce.com")
    if not value or not _HOST.fullmatch(value):
        raise ConfigError(f"{value!r} is not 'login', 'test' or a My Domain host", key="domain")
    return value


def _instance_url(options: Mapping[str, Any]) -> str | None:
    value = _str(options, "instance_url")
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("must be an https:// URL", key="instance_url")
    # Plain HTTP only reaches loopback (the sandbox); a real org is always TLS, verified.
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError("must be https:// (plain http only for loopback)", key="instance_url")
    return f"{parts.scheme}://{parts.netloc}"


def _contact_fields(options: Mapping[str, Any]) -> dict[str, str]:
    value = options.get("contact_fields", {})
    if not isinstance(value, Mapping):
        raise ConfigError("must be a table of label = field API name", key="contact_fields")
    mapping: dict[str, str] = {}
    for label, api_name in value.items():
        if not isinstance(label, str) or not isinstance(api_name, str):
            raise ConfigError("labels and field names must be strings", key="contact_fields")
        if not _API_NAME.fullmatch(api_name):
            raise ConfigError(f"{api_name!r} is not a field API name", key="contact_fields")
        mapping[label] = api_name
    return mapping


def _search_objects(options: Mapping[str, Any]) -> tuple[str, ...]:
    value = options.get("search_objects", list(_RECORD_TYPES))
    if (
        not isinstance(value, list | tuple)
        or not value
        or any(item not in _RECORD_TYPES for item in value)
    ):
        raise ConfigError(
            "must be a non-empty list of 'Contact' and/or 'Lead'", key="search_objects"
        )
    return tuple(dict.fromkeys(value))


def _require(value: str | None, key: str, auth: str) -> str:
    if not value:
        raise ConfigError(f"auth = {auth!r} needs it (inline, {key}_env or {key}_file)", key=key)
    return value


def parse_options(context: TargetContext) -> SalesforceOptions:
    """Validate ``context.options``; secrets come from ``context.secret`` (env, file, inline)."""
    options = context.options
    unknown = sorted(set(options) - KNOWN_KEYS - {"type"})
    if unknown:
        raise ConfigError(
            f"unknown Salesforce option (known: {', '.join(sorted(KNOWN_KEYS))})",
            key=f"targets.{context.name}.{unknown[0]}",
        )
    auth = _str(options, "auth", "password")
    if auth not in AUTH_FLOWS:
        raise ConfigError(f"must be one of {', '.join(AUTH_FLOWS)}", key="auth")
    domain = _domain(options)
    instance_url = _instance_url(options)
    username = context.secret("username")
    password = context.secret("password")
    security_token = context.secret("security_token")
    consumer_key = context.secret("consumer_key")
    consumer_secret = context.secret("consumer_secret")
    privatekey = context.secret("privatekey")
    session_id = context.secret("session_id")

    if auth == "password":
        _require(username, "username", auth)
        _require(password, "password", auth)
        # An org that trusts our IP range needs no token: an empty one is allowed.
        security_token = security_token or ""
    elif auth == "client_credentials":
        _require(consumer_key, "consumer_key", auth)
        _require(consumer_secret, "consumer_secret", auth)
        if domain in ("login", "test") and instance_url is None:
            raise ConfigError(
                "client_credentials needs the org's My Domain host (e.g. acme.my)", key="domain"
            )
    elif auth == "jwt":
        _require(username, "username", auth)
        _require(consumer_key, "consumer_key", auth)
        _require(privatekey, "privatekey", auth)
    else:
        _require(session_id, "session_id", auth)
        if instance_url is None:
            raise ConfigError("auth = 'session' needs the org's instance_url", key="instance_url")

    # ``new_record = contact | lead`` names what a new caller becomes; ``record_type`` is its
    # older spelling (Contact | Lead). Both may be given only if they agree.
    record_type = _str(options, "record_type", "Contact")
    if record_type not in _RECORD_TYPES:
        raise ConfigError("must be 'Contact' or 'Lead'", key="record_type")
    if "new_record" in options:
        new_record = _str(options, "new_record").lower()
        if new_record not in ("contact", "lead"):
            raise ConfigError("must be 'contact' or 'lead'", key="new_record")
        if "record_type" in options and record_type.lower() != new_record:
            raise ConfigError("disagrees with record_type", key="new_record")
        record_type = new_record.capitalize()
    account = _str(options, "account", "match_or_create")
    if account not in _ACCOUNT_MODES:
        raise ConfigError(f"must be one of {', '.join(_ACCOUNT_MODES)}", key="account")
    allow_save = options.get("allow_save", False)
    if not isinstance(allow_save, bool):
        raise ConfigError("must be true or false", key="allow_save")
    api_version = _str(options, "api_version", "59.0").removeprefix("v")
    if not _VERSION.fullmatch(api_version):
        raise ConfigError(f"{api_version!r} is not an API version like '59.0'", key="api_version")
    if auth == "password" and int(api_version.split(".")[0]) > SOAP_LOGIN_LAST_VERSION:
        raise ConfigError(
            f"SOAP password login does not exist in API {api_version} (removed from 65.0):"
            " use auth = 'client_credentials' or 'jwt'",
            key="auth",
        )
    timeout = _number(options, "timeout", 30.0, 0.1, 600.0)
    deadline = _number(options, "deadline", max(120.0, timeout), 0.1, 3600.0)
    if deadline < timeout:
        raise ConfigError("must be at least timeout", key="deadline")
    retries = _number(options, "retries", 3, 0, 10)
    return SalesforceOptions(
        auth=auth,
        username=username,
        password=password,
        security_token=security_token,
        consumer_key=consumer_key,
        consumer_secret=consumer_secret,
        privatekey=privatekey,
        session_id=session_id,
        domain=domain,
        instance_url=instance_url,
        api_version=api_version,
        record_type=record_type,
        search_objects=_search_objects(options),
        caller_key_field=_api_name(options, "caller_key_field", "Syncd_Key__c"),
        marker_field=_api_name(options, "marker_field", "Syncd_Marker__c"),
        contact_fields=_contact_fields(options),
        account=account,
        allow_save=allow_save,
        timeout=timeout,
        deadline=deadline,
        daily_limit_alert_ratio=_number(options, "daily_limit_alert_ratio", 0.9, 0.01, 1.0),
        retries=int(retries),
        backoff=_number(options, "backoff", 0.5, 0.0, 60.0),
        requests_per_second=_number(options, "requests_per_second", 20.0, 0.1, 1000.0),
    )

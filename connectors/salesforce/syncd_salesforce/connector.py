"""The Salesforce connector: :class:`syncd.plugin.Connector` over simple-salesforce."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from urllib.parse import quote

from simple_salesforce.exceptions import SalesforceError

from syncd.plugin import (
    ActivityRef,
    AuthError,
    CheckFailed,
    CheckResult,
    CrmRecord,
    CrmUser,
    MatchKey,
    Outcome,
    Plan,
    SetupStep,
    SyncdError,
    TargetContext,
)
from syncd_salesforce.admin import Needs
from syncd_salesforce.client import SalesforceClient
from syncd_salesforce.lookup import Lookup
from syncd_salesforce.options import SalesforceOptions, parse_options
from syncd_salesforce.owners import list_users
from syncd_salesforce.writes import Writer

__all__ = ["SalesforceConnector", "create"]

# The sObject behind each record kind, for a record's page.
_SOBJECTS = {"contact": "Contact", "lead": "Lead", "account": "Account", "company": "Account"}


class SalesforceConnector:
    """One Salesforce org as a syncd target. Logs in lazily, on the first request."""

    # syncd delivers several batches at once through this one instance: one session (swapped
    # under a lock), one rate limiter, per-thread request deadlines (transport.py).
    thread_safe = True

    def __init__(
        self,
        context: TargetContext,
        options: SalesforceOptions,
        *,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.name = context.name
        self.options = options
        extra = {} if sleep is None else {"sleep": sleep}
        self.client = SalesforceClient(
            options, target=context.name, observe=context.observe, **extra
        )
        self._lookup = Lookup(self.client, options, context.default_region)
        self._writer = Writer(self.client, options, self._lookup)

    @property
    def api_usage(self) -> tuple[int, int] | None:
        """The latest ``Sforce-Limit-Info`` reading: (requests used today, daily maximum)."""
        return self.client.api_usage

    def lookup(self, keys: Sequence[MatchKey]) -> Mapping[MatchKey, Sequence[CrmRecord]]:
        return self._lookup.lookup(keys)

    def read(self, kind: str, ids: Sequence[str]) -> Mapping[str, CrmRecord]:
        return self._lookup.read(kind, ids)

    def apply(self, plans: Sequence[Plan]) -> Sequence[Outcome]:
        return self._writer.apply(plans)

    def owners(self) -> Sequence[CrmUser]:  # syncd.plugin.ListsOwners
        return list_users(self.client)

    def find_activities(self, markers: Sequence[str]) -> Mapping[str, ActivityRef]:
        return self._lookup.find_activities(markers)

    def record_url(self, kind: str, record_id: str) -> str | None:  # syncd.plugin.LinksRecords
        """The record's Lightning page: on ``instance_url`` when configured, else on the
        instance the login named; None before either is known (this asks the org nothing)."""
        host = self.options.instance_url or (
            f"https://{instance}" if (instance := self.client.logged_in_instance) else None
        )
        if host is None:
            return None
        sobject = _SOBJECTS.get(kind, "Contact")
        return f"{host.rstrip('/')}/lightning/r/{sobject}/{quote(record_id, safe='')}/view"

    def close(self) -> None:
        self.client.close()

    # -- setup -----------------------------------------------------------------------------
    def setup(self, *, dry_run: bool) -> Sequence[SetupStep]:
        """:class:`syncd.plugin.SetsUp`: the External ID fields, through the Tooling API."""
        return Needs(self.client, self.options).setup(dry_run=dry_run)

    # -- check -----------------------------------------------------------------------------
    def check(self) -> Sequence[CheckResult]:
        """Login, API version, objects, fields and picklist values we rely on (each problem
        with its fix), today's API usage. Never raises."""
        login = self._step("login", self._login)
        if not login.ok:
            return [login]
        results = [login]
        version = self.options.api_version
        results.append(self._step(f"API v{version}", lambda: self._version(version)))
        needs = Needs(self.client, self.options)
        wanted: dict[str, set[str]] = {}
        for sobject, name in needs.fields_wanted():
            wanted.setdefault(sobject, set()).add(name)
        record_type = self.options.record_type
        wanted.setdefault(record_type, set()).update(self.options.contact_fields.values())
        wanted.setdefault("Task", set())
        if record_type == "Contact" and self.options.account == "match_or_create":
            wanted.setdefault("Account", set())
        for sobject, names in wanted.items():
            results.append(
                self._step(f"{sobject} fields", partial(self._fields, needs, sobject, names))
            )
        results.append(self._step("API limits", self._limits))
        return results

    def _login(self) -> str:
        done = f"{self.options.auth} login to {self.client.connect()}"
        if self.options.auth != "password":
            return done
        return (
            f"{done}; WARNING: SOAP login() is absent from API 65.0 on and retired for every"
            ' version in Summer \'27: move to auth = "client_credentials" (README, Salesforce)'
        )

    def _step(self, name: str, run: Callable[[], str]) -> CheckResult:
        try:
            return CheckResult(name, True, run())
        except AuthError as exc:
            return CheckResult(name, False, str(exc), auth_failed=True)
        except (SyncdError, SalesforceError, CheckFailed) as exc:
            return CheckResult(name, False, str(exc))

    def _version(self, version: str) -> str:
        try:
            self.client.restful("")
        except SalesforceError as exc:
            raise CheckFailed(
                f"API version {version} is not available (HTTP {exc.status})"
            ) from exc
        return f"API version {version} available"

    def _fields(self, needs: Needs, sobject: str, names: set[str]) -> str:
        problems = needs.problems(sobject, sorted(names), target=self.name)
        if problems:
            raise CheckFailed("; ".join(problems))
        return f"{sobject}: {', '.join(sorted(names)) or 'standard fields'} present"

    def _limits(self) -> str:
        daily = (self.client.limits() or {}).get("DailyApiRequests") or {}
        limit, remaining = int(daily.get("Max", 0)), int(daily.get("Remaining", 0))
        used = limit - remaining
        if limit and remaining <= 0:
            raise CheckFailed(f"daily API requests exhausted ({used}/{limit})")
        high = limit and used >= self.options.daily_limit_alert_ratio * limit
        return f"{used}/{limit} daily API requests used" + (
            " (above the alert ratio)" if high else ""
        )


def create(context: TargetContext) -> SalesforceConnector:
    """The ``syncd.connectors.v1`` factory. Validates options; makes no request."""
    return SalesforceConnector(context, parse_options(context))

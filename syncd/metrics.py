"""Prometheus metrics for one daemon.

Every :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry` instead of
the library's global one, so two daemons (or two tests) in one process never collide on a
metric name. Counters carry the ``_total`` suffix in the exposition, as Prometheus expects.

Two kinds of series, so that a ``sum`` over replicas is right:

- per-replica counters and gauges (requests, outcomes, cycles, last success): what *this*
  process did; sum or max them across replicas.
- database-wide gauges (deliveries by state, oldest pending age) carry ``scope="database"``
  and are exported by one replica only, the holder of the ``metrics`` lease
  (``syncd_database_gauges_exporter`` is 1 there, 0 elsewhere), so a sum counts each once.

Label values are bounded sets on purpose: ``endpoint`` is a route *name* such as
``composite/sobjects`` (never a URL with record ids in it), ``status`` is the HTTP status or
``0`` when no response arrived.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    write_to_textfile,
)

from syncd._version import __version__

__all__ = ["CONTENT_TYPE", "Metrics", "ObservingTransport"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Poll cycles take seconds; a backfill cycle over months of history can take an hour.
_CYCLE_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0)


class Metrics:
    """The daemon's metrics, registered in ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.messages_fetched = Counter(
            "syncd_messages_fetched",
            "Messages returned by the source API, duplicates included.",
            ["account"],
            registry=reg,
        )
        self.messages_new = Counter(
            "syncd_messages_new",
            "Messages stored for the first time.",
            ["account"],
            registry=reg,
        )
        self.messages_quarantined = Counter(
            "syncd_messages_quarantined",
            "Source payloads set aside as malformed.",
            ["account"],
            registry=reg,
        )
        self.deliveries = Gauge(
            "syncd_deliveries",
            "Deliveries in the state store by target and state, as of the last cycle "
            "(database-wide: exported by one replica).",
            ["target", "state", "scope"],
            registry=reg,
        )
        self.oldest_pending_age = Gauge(
            "syncd_oldest_pending_age_seconds",
            "Age of the oldest delivery not yet done (pending, retry, in flight) per target "
            "(database-wide: exported by one replica; 0 when none is waiting).",
            ["target", "scope"],
            registry=reg,
        )
        self.database_gauges_exporter = Gauge(
            "syncd_database_gauges_exporter",
            "1 when this replica exports the database-wide gauges (holds the metrics lease).",
            registry=reg,
        )
        self.source_requests = Counter(
            "syncd_source_requests",
            "HTTP requests made to the answering-service API, by status (0: no response).",
            ["account", "status"],
            registry=reg,
        )
        self.delivery_outcomes = Counter(
            "syncd_delivery_outcomes",
            "Deliveries this replica settled, by target and outcome (done, review, skipped, "
            "retry, dead).",
            ["target", "outcome"],
            registry=reg,
        )
        self.cycles = Counter(
            "syncd_cycles",
            "Cycles this replica ran, by kind (poll, backfill, dry-poll, ...) and result "
            "(ok, error, auth_failed).",
            ["kind", "result"],
            registry=reg,
        )
        self.target_last_success_timestamp = Gauge(
            "syncd_target_last_success_timestamp_seconds",
            "Unix time of the last cycle in which this replica delivered to the target "
            "without an error.",
            ["target"],
            registry=reg,
        )
        self.crm_requests = Counter(
            "syncd_crm_requests",
            "HTTP requests made to a CRM, by endpoint and response status (0: no response).",
            ["target", "endpoint", "status"],
            registry=reg,
        )
        self.rate_limit_wait_seconds = Counter(
            "syncd_rate_limit_wait_seconds",
            "Seconds spent waiting on client-side rate limits before CRM requests.",
            ["target"],
            registry=reg,
        )
        self.cycle_duration_seconds = Histogram(
            "syncd_cycle_duration_seconds",
            "Wall time of one sync cycle.",
            ["kind"],
            buckets=_CYCLE_BUCKETS,
            registry=reg,
        )
        self.last_success_timestamp = Gauge(
            "syncd_last_success_timestamp_seconds",
            "Unix time of the last cycle that completed without errors, per account.",
            ["account"],
            registry=reg,
        )
        self.crm_api_usage = Gauge(
            "syncd_crm_api_usage",
            "API calls used and allowed in the CRM's current quota window, as it reports them.",
            ["target", "kind"],
            registry=reg,
        )
        self.source_reads = Counter(
            "syncd_source_reads",
            "Source reads by account and kind: day windows listed, message details fetched.",
            ["account", "kind"],
            registry=reg,
        )
        self.reconcile_found = Counter(
            "syncd_reconcile_found",
            "Messages a reconcile pass found that polls had missed (new) or not seen change.",
            ["account", "found"],
            registry=reg,
        )
        self.source_gap_days = Gauge(
            "syncd_source_gap_days",
            "Days the catch-up cap left unpolled that no backfill has filled yet.",
            ["account"],
            registry=reg,
        )
        self.build_info = Info("syncd_build", "Version of the running syncd.", registry=reg)
        self.build_info.info({"version": __version__})
        self._delivery_labels: set[tuple[str, str]] = set()
        self._pending_targets: set[str] = set()

    def observe_request(self, target: str, endpoint: str, status: int, waited: float) -> None:
        """Count one CRM request; shaped to be a :data:`syncd.connector.RequestObserver`."""
        self.crm_requests.labels(target=target, endpoint=endpoint, status=str(status)).inc()
        if waited > 0:
            self.rate_limit_wait_seconds.labels(target=target).inc(waited)

    def set_deliveries(self, counts: Mapping[tuple[str, str], int]) -> None:
        """Replace the delivery gauges with ``{(target, state): count}`` from the store.

        A (target, state) seen before but absent now drops to 0 rather than keeping its
        last value, so an emptied ``dead`` queue reads as 0 on the dashboard.
        """
        for target, state in self._delivery_labels - counts.keys():
            self.deliveries.labels(target=target, state=state, scope="database").set(0)
        for (target, state), count in counts.items():
            self.deliveries.labels(target=target, state=state, scope="database").set(count)
        self._delivery_labels |= counts.keys()

    def set_oldest_pending(
        self, oldest: Mapping[str, datetime], targets: set[str], now: datetime
    ) -> None:
        """Age of the oldest waiting delivery per target; 0 for a target with none waiting."""
        for target in targets | self._pending_targets | set(oldest):
            since = oldest.get(target)
            age = max(0.0, (now - since).total_seconds()) if since else 0.0
            self.oldest_pending_age.labels(target=target, scope="database").set(age)
        self._pending_targets |= targets | set(oldest)

    def drop_database_gauges(self) -> None:
        """Another replica exports them now: stop exporting ours (no stale double counts)."""
        self.deliveries.clear()
        self.oldest_pending_age.clear()
        self._delivery_labels.clear()
        self._pending_targets.clear()
        self.database_gauges_exporter.set(0)

    def write_textfile(self, path: str | Path) -> None:
        """The registry in node_exporter's textfile format, written atomically (temp + rename)
        so the collector never reads half a file."""
        write_to_textfile(str(path), self.registry)

    def set_api_usage(self, target: str, used: int, limit: int) -> None:
        """Record a CRM's own quota report (e.g. Salesforce ``Sforce-Limit-Info``)."""
        self.crm_api_usage.labels(target=target, kind="used").set(used)
        self.crm_api_usage.labels(target=target, kind="max").set(limit)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format (see :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


@functools.cache
def verified_tls() -> ssl.SSLContext:
    """The one TLS context (certificates and host names verified, httpx's defaults) that every
    source account's transport shares: each context loads the whole CA bundle, about 80 ms of
    CPU and 0.8 MB, which a deployment with hundreds of accounts paid once per account."""
    return httpx.create_ssl_context()


class ObservingTransport(httpx.BaseTransport):
    """``inner`` (default: httpx's own transport, TLS verification on), reporting each
    answer's status (0 when none came) to ``observe``: how the daemon counts source requests
    without the client's help."""

    def __init__(
        self, observe: Callable[[int], None], inner: httpx.BaseTransport | None = None
    ) -> None:
        self._inner = inner or httpx.HTTPTransport(verify=verified_tls())
        self._observe = observe

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError:
            self._observe(0)
            raise
        self._observe(response.status_code)
        return response

    def close(self) -> None:
        self._inner.close()

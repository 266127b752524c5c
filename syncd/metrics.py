"""Prometheus metrics for one daemon.

Every :class:`Metrics` owns its own :class:`~prometheus_client.CollectorRegistry` instead of
the library's global one, so two daemons (or two tests) in one process never collide on a
metric name. Counters carry the ``_total`` suffix in the exposition, as Prometheus expects.

Label values are bounded sets on purpose: ``endpoint`` is a route *name* such as
``composite/sobjects`` (never a URL with record ids in it), ``status`` is the HTTP status or
``0`` when no response arrived.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from syncd._version import __version__

__all__ = ["CONTENT_TYPE", "Metrics"]

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
            "Deliveries in the state store by target and state, as of the last cycle.",
            ["target", "state"],
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
        self.source_requests = Counter(
            "syncd_source_requests",
            "Requests to the source API by account and kind (list windows, message details).",
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
            self.deliveries.labels(target=target, state=state).set(0)
        for (target, state), count in counts.items():
            self.deliveries.labels(target=target, state=state).set(count)
        self._delivery_labels |= counts.keys()

    def set_api_usage(self, target: str, used: int, limit: int) -> None:
        """Record a CRM's own quota report (e.g. Salesforce ``Sforce-Limit-Info``)."""
        self.crm_api_usage.labels(target=target, kind="used").set(used)
        self.crm_api_usage.labels(target=target, kind="max").set(limit)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format (see :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

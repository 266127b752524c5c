"""Metrics bookkeeping, and the health server over real loopback HTTP."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.health import HealthServer
from syncd.metrics import CONTENT_TYPE, Metrics, ObservingTransport, verified_tls


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# -- Metrics ------------------------------------------------------------------------------------


def test_each_instance_has_its_own_registry() -> None:
    # With the global registry the second construction would raise "Duplicated timeseries".
    first, second = Metrics(), Metrics()
    first.messages_new.labels(account="main").inc(3)
    assert _value(first, "syncd_messages_new_total", account="main") == 3
    assert _value(second, "syncd_messages_new_total", account="main") is None


def test_observe_request_counts_requests_and_waiting() -> None:
    metrics = Metrics()
    metrics.observe_request("hubspot", "contacts/search", 200, 0.0)
    metrics.observe_request("hubspot", "contacts/search", 200, 1.5)
    metrics.observe_request("hubspot", "contacts/search", 429, 0.25)
    requests = {"target": "hubspot", "endpoint": "contacts/search"}
    assert _value(metrics, "syncd_crm_requests_total", **requests, status="200") == 2
    assert _value(metrics, "syncd_crm_requests_total", **requests, status="429") == 1
    assert _value(metrics, "syncd_rate_limit_wait_seconds_total", target="hubspot") == 1.75


def test_set_deliveries_zeroes_states_that_emptied() -> None:
    metrics = Metrics()
    metrics.set_deliveries({("sf", "pending"): 4, ("sf", "dead"): 1})
    metrics.set_deliveries({("sf", "pending"): 2})
    db = {"scope": "database"}
    assert _value(metrics, "syncd_deliveries", target="sf", state="pending", **db) == 2
    assert _value(metrics, "syncd_deliveries", target="sf", state="dead", **db) == 0


def test_api_usage_and_cycle_histogram() -> None:
    metrics = Metrics()
    metrics.set_api_usage("sf", used=1200, limit=15000)
    metrics.cycle_duration_seconds.labels(kind="poll").observe(3.0)
    metrics.last_success_timestamp.labels(account="main").set(1_700_000_000)
    assert _value(metrics, "syncd_crm_api_usage", target="sf", kind="used") == 1200
    assert _value(metrics, "syncd_crm_api_usage", target="sf", kind="max") == 15000
    assert _value(metrics, "syncd_cycle_duration_seconds_count", kind="poll") == 1
    assert _value(metrics, "syncd_cycle_duration_seconds_bucket", kind="poll", le="5.0") == 1
    assert _value(metrics, "syncd_cycle_duration_seconds_bucket", kind="poll", le="2.5") == 0


def test_render_is_parseable_exposition_with_help_texts() -> None:
    metrics = Metrics()
    metrics.messages_fetched.labels(account="main").inc()
    metrics.observe_request("sf", "query", 200, 0.0)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    expected = {
        "syncd_messages_fetched",
        "syncd_messages_new",
        "syncd_messages_quarantined",
        "syncd_deliveries",
        "syncd_crm_requests",
        "syncd_rate_limit_wait_seconds",
        "syncd_cycle_duration_seconds",
        "syncd_last_success_timestamp_seconds",
        "syncd_crm_api_usage",
        "syncd_build_info",
    }
    assert expected <= families.keys()
    assert all(name.startswith("syncd_") for name in families)
    assert all(family.documentation for family in families.values())


# -- HealthServer -------------------------------------------------------------------------------


class Probe:
    """Mutable answers for the server's callbacks."""

    def __init__(self) -> None:
        self.alive = True
        self.ready: tuple[bool, str] = (True, "polling")
        self.raise_on_ready = False

    def is_alive(self) -> bool:
        return self.alive

    def is_ready(self) -> tuple[bool, str]:
        if self.raise_on_ready:
            raise RuntimeError("db password=hunter2 rejected")
        return self.ready


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(probe: Probe, metrics: Metrics) -> Iterator[HealthServer]:
    with HealthServer(
        "127.0.0.1", 0, metrics=metrics, alive=probe.is_alive, ready=probe.is_ready
    ) as running:
        yield running


@pytest.fixture
def client(server: HealthServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as http:
        yield http


def test_port_zero_gives_a_real_port(server: HealthServer) -> None:
    assert server.url.startswith("http://127.0.0.1:")
    assert not server.url.endswith(":0")


def test_healthz_follows_alive(client: httpx.Client, probe: Probe) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok\n")
    probe.alive = False
    assert client.get("/healthz").status_code == 503


def test_readyz_reports_reason(client: httpx.Client, probe: Probe) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "reason": "polling"}
    probe.ready = (False, "database migrations pending")
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "reason": "database migrations pending"}


def test_a_raising_check_is_a_failed_check_without_details(
    client: httpx.Client, probe: Probe
) -> None:
    probe.raise_on_ready = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "reason": "check failed: RuntimeError"}
    assert "hunter2" not in response.text


def test_metrics_endpoint_serves_the_registry(client: httpx.Client, metrics: Metrics) -> None:
    metrics.messages_new.labels(account="main").inc(7)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert 'syncd_messages_new_total{account="main"} 7.0' in response.text


def test_query_strings_are_ignored_and_unknown_paths_404(client: httpx.Client) -> None:
    assert client.get("/healthz?verbose=1").status_code == 200
    assert client.get("/").status_code == 404
    assert client.get("/metrics/extra").status_code == 404


def test_head_answers_without_a_body(client: httpx.Client) -> None:
    response = client.head("/healthz")
    assert response.status_code == 200
    assert response.content == b""


def test_no_access_log_on_stderr(client: httpx.Client, capfd: pytest.CaptureFixture[str]) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/missing"):
        client.get(path)
    assert capfd.readouterr().err == ""


def test_stop_releases_the_port(probe: Probe, metrics: Metrics) -> None:
    server = HealthServer(
        "127.0.0.1", 0, metrics=metrics, alive=probe.is_alive, ready=probe.is_ready
    ).start()
    url = server.url
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
    with pytest.raises(RuntimeError):
        _ = server.url


def test_source_transports_load_the_ca_bundle_once_and_verify(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A transport per account, one CA bundle load for them all (it costs ~80 ms and ~0.8 MB
    each time); the shared context still verifies certificates and host names."""
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(args or kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    verified_tls.cache_clear()
    transports = [ObservingTransport(lambda status: None) for _ in range(20)]
    try:
        assert len(loads) == 1
        context = verified_tls()
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
    finally:
        for transport in transports:
            transport.close()

"""Where the agent's metrics and health endpoints listen: as Felix does.

Felix: PrometheusMetricsHost default "" (Go listens on "[]:9091" - every address, IPv6
and IPv4), HealthHost default "localhost" (one address of the name, IPv4 first).
FELIX_PROMETHEUSMETRICSHOST / FELIX_HEALTHHOST choose another.
"""
from __future__ import annotations

import socket

import pytest
import requests

from calico_net.agent import health, httpserve, metrics
from calico_net.agent.config import Config


def get(url: str) -> requests.Response:
    return requests.get(url, timeout=5)


def test_felix_defaults():
    cfg = Config("listen-test", env={}, config_file="/nonexistent/felix.cfg")
    assert cfg.values["PrometheusMetricsHost"] == ""
    assert cfg.values["PrometheusMetricsPort"] == 9091
    assert cfg.values["HealthHost"] == "localhost"


def test_environment_chooses_the_hosts():
    cfg = Config("listen-test", env={"FELIX_PROMETHEUSMETRICSHOST": "127.0.0.1", "FELIX_HEALTHHOST": "::1"},
                 config_file="/nonexistent/felix.cfg")
    assert cfg.values["PrometheusMetricsHost"] == "127.0.0.1"
    assert cfg.values["HealthHost"] == "::1"


def test_empty_host_listens_on_every_address_ipv6_and_ipv4():
    family, address, dual = httpserve.listen_address("", 9091)
    assert (family, address[:2], dual) == (socket.AF_INET6, ("::", 9091), True)
    srv = metrics.serve(metrics.Metrics(), "", 0)
    try:
        port = srv.server_address[1]
        assert srv.socket.family == socket.AF_INET6
        assert srv.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        assert get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        assert get(f"http://[::1]:{port}/metrics").status_code == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_address_listens_there_only():
    srv = metrics.serve(metrics.Metrics(), "127.0.0.1", 0)
    try:
        port = srv.server_address[1]
        assert srv.server_address[0] == "127.0.0.1"
        assert get(f"http://127.0.0.1:{port}/metrics").status_code == 200
        with pytest.raises(requests.ConnectionError):
            get(f"http://[::1]:{port}/metrics")
        with pytest.raises(requests.ConnectionError):
            get(f"http://127.0.0.2:{port}/metrics")
    finally:
        srv.shutdown()
        srv.server_close()


def test_ipv6_literal_with_or_without_brackets():
    for host in ("::1", "[::1]"):
        family, address, dual = httpserve.listen_address(host, 9091)
        assert (family, address[:2], dual) == (socket.AF_INET6, ("::1", 9091), False)
    srv = metrics.serve(metrics.Metrics(), "::1", 0)
    try:
        port = srv.server_address[1]
        assert srv.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        assert get(f"http://[::1]:{port}/metrics").status_code == 200
        with pytest.raises(requests.ConnectionError):
            get(f"http://127.0.0.1:{port}/metrics")
    finally:
        srv.shutdown()
        srv.server_close()


def test_health_on_localhost_is_the_ipv4_loopback():
    family, address, _ = httpserve.listen_address("localhost", 9099)
    assert (family, address) == (socket.AF_INET, ("127.0.0.1", 9099))
    srv = health.serve(health.HealthState(), "localhost", 0)
    try:
        port = srv.server_address[1]
        assert srv.server_address[0] == "127.0.0.1"
        assert get(f"http://127.0.0.1:{port}/liveness").status_code == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_name_that_does_not_resolve_is_an_oserror():
    with pytest.raises(OSError):
        httpserve.listen_address("no-such-host.invalid", 9091)

"""Felix config precedence and parsing (calico_net.agent.config)."""
from __future__ import annotations

import logging

import pytest

from calico_net.agent.config import Config, Port, parse_ports, parse_seconds


def test_defaults(tmp_path):
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none.cfg"))
    assert cfg.HealthPort == 9099
    assert cfg.PrometheusMetricsPort == 9091
    assert cfg.RouteRefreshInterval == 90
    assert cfg.DefaultEndpointToHostAction == "Drop"
    assert Port("tcp", 22) in cfg.FailsafeInboundHostPorts
    assert Port("udp", 53) in cfg.FailsafeOutboundHostPorts
    assert cfg.sources["HealthPort"] == "default"


def test_precedence_env_file_node_default(tmp_path):
    f = tmp_path / "felix.cfg"
    f.write_text("[global]\nHealthPort = 9200\nRouteRefreshInterval = 30\nLogSeverityScreen = Warning\n")
    cfg = Config("n1", env={"FELIX_HEALTHPORT": "9300", "felix_logseverityscreen": "debug"}, config_file=str(f))
    cfg.set_felix_configuration("default", {"healthPort": 9400, "routeRefreshInterval": "10s",
                                            "iptablesRefreshInterval": "1m30s", "prometheusMetricsPort": 9500,
                                            "defaultEndpointToHostAction": "Accept"})
    cfg.set_felix_configuration("node.n1", {"prometheusMetricsPort": 9600})
    cfg.set_felix_configuration("node.other", {"defaultEndpointToHostAction": "Return"})
    assert cfg.HealthPort == 9300 and cfg.sources["HealthPort"] == "environment"
    assert cfg.LogSeverityScreen == "Debug" and cfg.log_level == logging.DEBUG
    assert cfg.RouteRefreshInterval == 30 and cfg.sources["RouteRefreshInterval"] == "config file"
    assert cfg.IptablesRefreshInterval == 90
    assert cfg.PrometheusMetricsPort == 9600
    assert cfg.DefaultEndpointToHostAction == "Accept"


def test_bad_value_falls_back_and_logs_once(tmp_path, caplog):
    env = {"FELIX_HEALTHPORT": "ninety", "FELIX_ROUTEREFRESHINTERVAL": "-3"}
    with caplog.at_level(logging.ERROR):
        cfg = Config("n1", env=env, config_file=str(tmp_path / "x"))
        cfg.resolve()
        cfg.set_felix_configuration("default", {"routeRefreshInterval": "7s"})
    assert cfg.HealthPort == 9099
    assert cfg.RouteRefreshInterval == 7
    msgs = [r.getMessage() for r in caplog.records if "HealthPort" in r.getMessage()]
    assert len(msgs) == 1 and "environment" in msgs[0]


def test_changes_reported(tmp_path):
    cfg = Config("n1", env={}, config_file=str(tmp_path / "x"))
    assert cfg.set_felix_configuration("default", {"logSeverityScreen": "Error"}) == ["LogSeverityScreen"]
    assert cfg.set_felix_configuration("default", {"logSeverityScreen": "Error"}) == []
    assert cfg.set_felix_configuration("default", None) == ["LogSeverityScreen"]
    assert cfg.LogSeverityScreen == "Info"


def test_ports():
    assert parse_ports("tcp:22, udp:68,tcp:198.18.0.0/24:2379") == (
        Port("tcp", 22), Port("udp", 68), Port("tcp", 2379, "198.18.0.0/24"))
    assert parse_ports("none") == ()
    assert parse_ports([{"protocol": "TCP", "port": 22}, {"protocol": "UDP", "port": 68}]) == (
        Port("tcp", 22), Port("udp", 68))
    for bad in ("tcp:99999", "icmp:1", "tcp:x", [{"protocol": "TCP"}]):
        with pytest.raises(ValueError):
            parse_ports(bad)


def test_seconds():
    assert parse_seconds("90") == 90
    assert parse_seconds("0.5") == 0.5
    assert parse_seconds("1m30s") == 90
    assert parse_seconds("250ms") == 0.25
    assert parse_seconds(2) == 2
    for bad in ("", "5x", "-1", "1m30", True):
        with pytest.raises(ValueError):
            parse_seconds(bad)

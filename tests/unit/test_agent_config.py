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
    assert parse_ports("tcp:22, udp:68,tcp:2379") == (Port("tcp", 22), Port("udp", 68), Port("tcp", 2379))
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


# --- values that reach nft text: Felix's grammar, never applied when bad -------------

INJECTION = '*" accept; iifname "cali'


def test_interface_prefix_grammar(tmp_path):
    cfg = Config("n1", env={"FELIX_INTERFACEPREFIX": "cali,tap"}, config_file=str(tmp_path / "x"))
    assert cfg.InterfacePrefix == ("cali", "tap") and cfg.sources["InterfacePrefix"] == "environment"
    cfg = Config("n1", env={}, config_file=str(tmp_path / "x"))
    assert cfg.InterfacePrefix == ("cali",) and cfg.bad_total == 0


@pytest.mark.parametrize("bad", [INJECTION, "cali\n", "cali,", "cali, tap", "cali*", "cali;x", "", "a" * 16,
                                 "cali\x00", 'cali"', "cali{"])
def test_bad_interface_prefix_from_every_source_is_never_applied(tmp_path, caplog, bad):
    f = tmp_path / "felix.cfg"
    f.write_text("[global]\nInterfacePrefix = %s\n" % bad.replace("\n", "").replace("\x00", "\\0")
                 if bad not in ("", "cali\n") else "[global]\nInterfacePrefix = cali*\n")
    with caplog.at_level(logging.ERROR):
        cfg = Config("n1", env={"FELIX_INTERFACEPREFIX": bad}, config_file=str(f))
        cfg.set_felix_configuration("node.n1", {"interfacePrefix": bad})
        cfg.set_felix_configuration("default", {"interfacePrefix": bad})
    # every source had a bad value: the default, never the bad one
    assert cfg.InterfacePrefix == ("cali",) and cfg.sources["InterfacePrefix"] == "default"
    msgs = [r.getMessage() for r in caplog.records if "InterfacePrefix" in r.getMessage()]
    sources = {s for s in ("environment", "config file", "node.n1", "FelixConfiguration default")
               if any(s in m for m in msgs)}
    if bad == "":
        assert sources == {"config file"}      # an empty value is "not set" (Calico's rule)
    else:
        assert sources == {"environment", "config file", "node.n1", "FelixConfiguration default"}
    assert all("\n" not in m.split(": ", 1)[0] for m in msgs)
    assert cfg.bad_total == len(sources)
    # logged once per source and value, however often it is resolved again
    n = len(msgs)
    cfg.resolve()
    cfg.set_felix_configuration("default", {"interfacePrefix": bad})
    assert len([r for r in caplog.records if "InterfacePrefix" in r.getMessage()]) == n


def test_bad_interface_prefix_falls_back_to_the_next_good_source(tmp_path):
    cfg = Config("n1", env={"FELIX_INTERFACEPREFIX": INJECTION}, config_file=str(tmp_path / "x"))
    cfg.set_felix_configuration("default", {"interfacePrefix": "tap"})
    assert cfg.InterfacePrefix == ("tap",) and cfg.sources["InterfacePrefix"] == "FelixConfiguration default"
    assert cfg.bad_total == 1


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-inf", float("nan"), float("inf")])
def test_durations_must_be_finite(value):
    with pytest.raises(ValueError):
        parse_seconds(value)


def test_failsafe_net_is_parsed_and_bad_ones_refused():
    """A failsafe entry may be limited to a network (env/file `proto:net:port`, or
    `net` in a FelixConfiguration entry); a value that is not a CIDR is refused and
    the next source is used."""
    for bad in ["tcp:198.18.0.5/24:22", "tcp:x; y:22", "tcp:198.18.0.0/24\n:22", "tcp: 198.18.0.0/24:22"]:
        with pytest.raises(ValueError):
            parse_ports(bad)
    with pytest.raises(ValueError):
        parse_ports([{"protocol": "TCP", "port": 22, "net": "198.18.0.5/24"}])
    assert parse_ports([{"protocol": "TCP", "port": 22, "net": "198.18.0.0/24"}]) == (
        Port("tcp", 22, "198.18.0.0/24"),)
    cfg = Config("n1", env={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:198.18.0.0/24:22,udp:68"},
                 config_file="/nonexistent")
    assert cfg.bad_total == 0
    assert cfg.FailsafeInboundHostPorts == (Port("tcp", 22, "198.18.0.0/24"), Port("udp", 68))
    cfg = Config("n1", env={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:198.18.0.5/24:22"}, config_file="/nonexistent")
    assert cfg.bad_total == 1
    assert Port("tcp", 22) in cfg.FailsafeInboundHostPorts  # the default list, not a widened entry


def test_listener_hosts(tmp_path):
    cfg = Config("n1", env={"FELIX_HEALTHHOST": "198.18.0.1", "FELIX_PROMETHEUSMETRICSHOST": "a b"},
                 config_file=str(tmp_path / "x"))
    assert cfg.HealthHost == "198.18.0.1" and cfg.PrometheusMetricsHost == ""
    assert cfg.bad_total == 1


# --- the overlay's parameters (agent/encap) -------------------------------------------


def test_overlay_defaults_are_calicos(tmp_path):
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none.cfg"))
    assert (cfg.VXLANVNI, cfg.VXLANPort, cfg.VXLANMTU, cfg.VXLANMTUV6, cfg.IPIPMTU) == (4096, 4789, 0, 0, 0)
    assert cfg.MTUIfacePattern == r"^((en|wl|ww|sl|ib)[opsx].*|(eth|wlan|wwan).*)"
    assert cfg.MTUFilePath == "/var/lib/calico/mtu"
    assert cfg.AllowIPIPPacketsFromWorkloads is False and cfg.AllowVXLANPacketsFromWorkloads is False


def test_overlay_params_from_each_source_and_live(tmp_path):
    f = tmp_path / "felix.cfg"
    f.write_text("[global]\nVXLANPort = 8472\nMTUFilePath = /run/calico-mtu\n")
    cfg = Config("n1", env={"FELIX_IPINIPMTU": "1400", "FELIX_ALLOWVXLANPACKETSFROMWORKLOADS": "true"},
                 config_file=str(f))
    assert cfg.IPIPMTU == 1400 and cfg.sources["IPIPMTU"] == "environment"   # Felix's env spelling
    assert cfg.VXLANPort == 8472 and cfg.MTUFilePath == "/run/calico-mtu"
    assert cfg.AllowVXLANPacketsFromWorkloads is True
    changed = cfg.set_felix_configuration("default", {
        "vxlanVNI": 5000, "vxlanMTU": 1410, "vxlanMTUV6": 1390, "mtuIfacePattern": "^ens",
        "allowIPIPPacketsFromWorkloads": True, "ipipMTU": 1300})
    assert sorted(changed) == ["AllowIPIPPacketsFromWorkloads", "MTUIfacePattern", "VXLANMTU",
                               "VXLANMTUV6", "VXLANVNI"]   # ipipMTU: the environment wins
    assert (cfg.VXLANVNI, cfg.VXLANMTU, cfg.VXLANMTUV6, cfg.MTUIfacePattern) == (5000, 1410, 1390, "^ens")
    cfg2 = Config("n1", env={}, config_file=str(tmp_path / "none.cfg"))
    cfg2.set_felix_configuration("default", {"ipipMTU": 1300})
    assert cfg2.IPIPMTU == 1300


def test_overlay_bad_values_fall_back(tmp_path, caplog):
    env = {"FELIX_VXLANVNI": "0", "FELIX_VXLANPORT": "70000", "FELIX_VXLANMTU": "50",
           "FELIX_VXLANMTUV6": "1000", "FELIX_IPIPMTU": "big", "FELIX_MTUIFACEPATTERN": "(unclosed",
           "FELIX_MTUFILEPATH": "relative/mtu", "FELIX_ALLOWIPIPPACKETSFROMWORKLOADS": "maybe"}
    with caplog.at_level(logging.ERROR):
        cfg = Config("n1", env=env, config_file=str(tmp_path / "none.cfg"))
    assert (cfg.VXLANVNI, cfg.VXLANPort, cfg.VXLANMTU, cfg.VXLANMTUV6, cfg.IPIPMTU) == (4096, 4789, 0, 0, 0)
    assert cfg.MTUIfacePattern.startswith("^((en") and cfg.MTUFilePath == "/var/lib/calico/mtu"
    assert cfg.AllowIPIPPacketsFromWorkloads is False
    assert cfg.bad_total == len(env)
    cfg.set_felix_configuration("default", {"vxlanVNI": 16777216, "vxlanPort": True})
    assert cfg.VXLANVNI == 4096 and cfg.VXLANPort == 4789 and cfg.bad_total == len(env) + 2


def test_mtu_file_path_is_never_taken_from_the_datastore(tmp_path):
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none.cfg"))
    assert cfg.set_felix_configuration("default", {"mtuFilePath": "/etc/passwd"}) == []
    assert cfg.MTUFilePath == "/var/lib/calico/mtu"

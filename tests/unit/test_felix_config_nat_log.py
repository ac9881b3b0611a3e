"""FelixConfiguration natOutgoingAddress / natPortRange / logFilePath / logSeverityFile:
parsed with Felix's grammar, refused with the value named, and rendered as Felix's
NATOutgoingChain (felix/rules/nat.go) in cali-nat-postrouting."""
from __future__ import annotations

import logging

import pytest

from calico_net.agent.__main__ import LogSetup
from calico_net.agent.daemon import felix_settings
from calico_net.agent.config import Config
from calico_net.agent.felix.base_chains import nat_outgoing_rules
from calico_net.agent.felix.settings import FelixSettings

M4 = "ip saddr @cali-masq4 ip daddr != @cali-pools4"
M6 = "ip6 saddr @cali-masq6 ip6 daddr != @cali-pools6"


def cfg(env=None, spec=None) -> Config:
    c = Config("n1", env=env or {}, config_file="")
    if spec is not None:
        c.set_felix_configuration("default", spec)
    return c


def test_defaults_masquerade_without_ports_and_no_file_log() -> None:
    c = cfg()
    assert c.values["NATOutgoingAddress"] is None and c.values["NATPortRange"] is None
    assert c.values["LogFilePath"] is None and c.values["LogSeverityFile"] == "Info"
    assert nat_outgoing_rules(FelixSettings()) == [f"{M4} masquerade", f"{M6} masquerade"]


@pytest.mark.parametrize("raw,want", [("32768:65000", (32768, 65000)), (1024, (1024, 1024)),
                                      ("0:0", None), ("", None)])
def test_port_range_grammar(raw, want) -> None:
    assert cfg(spec={"natPortRange": raw}).values["NATPortRange"] == want


@pytest.mark.parametrize("raw", ["2000:1000", "1-2", "70000", "http", "1:2:3"])
def test_bad_port_range_is_ignored_and_logged(raw, caplog) -> None:
    c = cfg(spec={"natPortRange": raw})
    assert c.values["NATPortRange"] is None and c.bad_total == 1
    assert "NATPortRange" in caplog.text and repr(raw) in caplog.text


@pytest.mark.parametrize("raw", ["198.18.0.300", "2001:db8::1", "host.example", "198.18.0.0/24"])
def test_nat_address_must_be_ipv4(raw, caplog) -> None:
    c = cfg(spec={"natOutgoingAddress": raw})
    assert c.values["NATOutgoingAddress"] is None and c.bad_total == 1
    assert "NATOutgoingAddress" in caplog.text


def test_environment_wins_and_factory_carries_nat_settings() -> None:
    c = cfg(env={"FELIX_NATOUTGOINGADDRESS": "198.18.9.9", "FELIX_NATPORTRANGE": "2000:3000"},
            spec={"natOutgoingAddress": "198.18.1.1"})
    s = felix_settings(c, FelixSettings, ("cali",))
    assert (s.nat_outgoing_address, s.nat_port_range) == ("198.18.9.9", (2000, 3000))
    assert nat_outgoing_rules(s) == [
        f"{M4} meta l4proto tcp snat ip to 198.18.9.9:2000-3000",
        f"{M4} meta l4proto udp snat ip to 198.18.9.9:2000-3000",
        f"{M4} snat ip to 198.18.9.9",
        f"{M6} meta l4proto tcp masquerade to :2000-3000",
        f"{M6} meta l4proto udp masquerade to :2000-3000",
        f"{M6} masquerade",
    ]


def test_settings_refuse_what_nft_must_not_see() -> None:
    with pytest.raises(ValueError, match="natOutgoingAddress"):
        FelixSettings(nat_outgoing_address="2001:db8::1")
    with pytest.raises(ValueError):
        FelixSettings(nat_outgoing_address="1.2.3.4; flush ruleset")
    with pytest.raises(ValueError, match="natPortRange"):
        FelixSettings(nat_port_range=(5, 2))


@pytest.mark.parametrize("raw", ["relative/felix.log", "/var/log/../etc/passwd", "/var/log/calico/",
                                 "/var/log//x.log", 7])
def test_bad_log_file_path_is_refused(raw) -> None:
    assert cfg(env={"FELIX_LOGFILEPATH": raw} if isinstance(raw, str) else {},
               spec={"logFilePath": raw}).values["LogFilePath"] is None


def test_datastore_log_file_only_under_var_log(caplog) -> None:
    c = cfg(spec={"logFilePath": "/etc/cron.d/felix"})
    assert c.values["LogFilePath"] is None and "/var/log/" in caplog.text
    assert cfg(spec={"logFilePath": "/var/log/calico/felix.log"}).values["LogFilePath"] == \
        "/var/log/calico/felix.log"
    # the host's own configuration may name any absolute path
    assert cfg(env={"FELIX_LOGFILEPATH": "/srv/felix.log"}).values["LogFilePath"] == "/srv/felix.log"
    assert cfg(env={"FELIX_LOGFILEPATH": "None"},
               spec={"logFilePath": "/var/log/x.log"}).values["LogFilePath"] is None


def test_log_setup_follows_the_config(tmp_path) -> None:
    path = tmp_path / "sub" / "felix.log"
    c = cfg(env={"FELIX_LOGFILEPATH": str(path), "FELIX_LOGSEVERITYSCREEN": "Error"})
    screen = logging.StreamHandler()
    root = logging.getLogger()
    old_level, old_handlers = root.level, list(root.handlers)
    setup = LogSetup(c, screen)
    try:
        setup.apply()
        c.listeners.append(setup.apply)
        assert screen.level == logging.ERROR and setup.file is not None
        assert root.level == logging.INFO
        logging.getLogger("calico_net.test").debug("debug-line-1")
        logging.getLogger("calico_net.test").info("info-line-1")
        c.set_felix_configuration("default", {"logSeverityFile": "Debug"})
        logging.getLogger("calico_net.test").debug("debug-line-2")
        text = path.read_text()
        assert "info-line-1" in text and "debug-line-2" in text and "debug-line-1" not in text
        c.env["logfilepath"] = "none"
        c.resolve()
        assert setup.file is None
        logging.getLogger("calico_net.test").info("info-line-3")
        assert "info-line-3" not in path.read_text()
    finally:
        if setup.file is not None:
            root.removeHandler(setup.file)
            setup.file.close()
        root.setLevel(old_level)
        assert root.handlers == old_handlers


def test_debug_lines_only_from_matching_files(tmp_path) -> None:
    path = tmp_path / "felix.log"
    c = cfg(env={"FELIX_LOGFILEPATH": str(path), "FELIX_LOGSEVERITYFILE": "Debug",
                 "FELIX_LOGSEVERITYSCREEN": "Fatal"},
            spec={"logDebugFilenameRegex": "^nomatch_"})
    root = logging.getLogger()
    old_level, old_handlers = root.level, list(root.handlers)
    setup = LogSetup(c, logging.StreamHandler())
    try:
        setup.apply()
        c.listeners.append(setup.apply)
        log = logging.getLogger("calico_net.test")
        log.debug("debug-dropped")
        log.info("info-kept")
        c.set_felix_configuration("default", {"logDebugFilenameRegex": r"test_felix_config_nat_log\.py$"})
        log.debug("debug-kept")
        text = path.read_text()
        assert "info-kept" in text and "debug-kept" in text and "debug-dropped" not in text
    finally:
        if setup.file is not None:
            root.removeHandler(setup.file)
            setup.file.close()
        root.setLevel(old_level)
        assert root.handlers == old_handlers


def test_syslog_at_log_severity_sys(tmp_path, capsys) -> None:
    import socket

    addr = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(addr)
    server.settimeout(5)
    c = cfg(env={"FELIX_LOGSEVERITYSCREEN": "Fatal"})
    assert c.values["LogSeveritySys"] == "None"
    root = logging.getLogger()
    old_level, old_handlers = root.level, list(root.handlers)
    setup = LogSetup(c, logging.StreamHandler())
    setup.syslog_address = addr
    try:
        setup.apply()
        c.listeners.append(setup.apply)
        assert setup.syslog is None
        c.set_felix_configuration("default", {"logSeveritySys": "Warning"})
        assert setup.syslog is not None and root.level == logging.WARNING
        log = logging.getLogger("calico_net.test")
        log.info("info-not-sent")
        log.warning("warning-sent")
        got = server.recv(4096).decode()
        assert "calico-felix[" in got and "warning-sent" in got and "[WARNING]" in got
        c.set_felix_configuration("default", {})
        assert setup.syslog is None
        # a socket that is not there (yet): as C's openlog, the handler connects when it
        # sends; a line that cannot go is reported once on stderr, never raised
        setup.syslog_address = str(tmp_path / "absent.sock")
        c.set_felix_configuration("default", {"logSeveritySys": "Info"})
        assert setup.syslog is not None
        log.warning("lost-line")
        log.warning("lost-line-2")
        assert "cannot send to syslog" in capsys.readouterr().err
    finally:
        if setup.syslog is not None:
            root.removeHandler(setup.syslog)
            setup.syslog.close()
        root.setLevel(old_level)
        server.close()
        assert root.handlers == old_handlers


def test_trace_is_taken_as_debug() -> None:
    c = cfg(spec={"logSeverityScreen": "Trace", "logSeverityFile": "trace"})
    assert c.bad_total == 0 and c.screen_level == logging.DEBUG and c.file_level == logging.DEBUG

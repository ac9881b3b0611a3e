"""Plaintext etcd and ignored TLS files are said out loud (datastore/transport.py):
one line naming the http:// endpoints, one more naming TLS files they ignore, each
once per process; EtcdClient says it when it takes its configuration; the Ansible
modules' sink gets the lines instead of the log. The same through real processes
(calicoctl, the CNI plugins, the agent): tests/integration/test_etcd_transport_warnings.py.
"""
from __future__ import annotations

import logging

import pytest

from calico_net.datastore import transport
from calico_net.datastore.etcd import EtcdClient, EtcdConfig

LOGGER = "calico_net.datastore.transport"


@pytest.fixture(autouse=True)
def fresh():
    transport.reset()
    yield
    transport.reset()


def said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_https_only_says_nothing(caplog, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        lines = transport.check_transport(["https://198.18.0.11:2379", "HTTPS://198.18.0.12:2379"],
                                          str(ca), str(ca), str(ca))
    assert lines == [] and said(caplog) == []


def test_plaintext_endpoint_is_one_warning_line_naming_it(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        lines = transport.check_transport(["https://198.18.0.11:2379", "http://198.18.0.12:2379"])
    assert len(lines) == 1 and said(caplog) == lines
    line = lines[0]
    assert "\n" not in line
    assert line.startswith("INSECURE: etcd endpoint http://198.18.0.12:2379 is plaintext")
    assert "198.18.0.11" not in line  # the TLS endpoint is not named
    assert caplog.records[0].levelno == logging.WARNING


def test_scheme_is_case_insensitive():
    assert transport.transport_warnings(["HTTP://198.18.0.12:2379"])


def test_several_plaintext_endpoints_are_named_in_one_line():
    lines = transport.transport_warnings(["http://198.18.0.11:2379", "http://198.18.0.12:2379"])
    assert len(lines) == 1
    assert "endpoints http://198.18.0.11:2379, http://198.18.0.12:2379 are plaintext" in lines[0]


def test_tls_files_with_a_plaintext_endpoint_are_said_to_be_ignored(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        lines = transport.check_transport(["http://198.18.0.11:2379"], "/etc/calico/pki/ca.pem",
                                          "/etc/calico/pki/client.pem", "/etc/calico/pki/client-key.pem")
    assert said(caplog) == lines and len(lines) == 2
    assert lines[1] == (
        "INSECURE: etcd TLS files (CA /etc/calico/pki/ca.pem, certificate /etc/calico/pki/client.pem, "
        "key /etc/calico/pki/client-key.pem) are IGNORED for the http:// endpoint http://198.18.0.11:2379: "
        "TLS is used only with https:// endpoints.")


def test_only_the_files_given_are_named():
    lines = transport.transport_warnings(["http://198.18.0.11:2379"], ca_cert_file="/ca.pem")
    assert len(lines) == 2 and "(CA /ca.pem)" in lines[1] and "certificate" not in lines[1]


def test_once_per_process_per_endpoint_set(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            transport.check_transport(["http://198.18.0.11:2379"], "/ca.pem")
        assert len(said(caplog)) == 2
        # another endpoint set is said again, once
        for _ in range(2):
            transport.check_transport(["http://198.18.0.12:2379"])
    assert len(said(caplog)) == 3
    assert "198.18.0.12" in said(caplog)[2]


def test_control_characters_and_long_names_are_escaped_and_cut():
    lines = transport.transport_warnings(["http://198.18.0.11:2379"],
                                         ca_cert_file="/x\n\x1b[31mfake line" + "a" * 500)
    assert "\n" not in lines[1] and "\x1b" not in lines[1]
    assert "\\n\\x1b[31mfake line" in lines[1]
    assert "a" * transport.MAX_SHOWN not in lines[1] and "..." in lines[1]


def test_etcd_client_says_it_when_it_takes_its_configuration(caplog, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not used")
    cfg = EtcdConfig(endpoints=["http://127.0.0.1:1"], ca_cert_file=str(ca))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        clients = [EtcdClient(cfg), EtcdClient(cfg)]
    for c in clients:
        c.close()
    lines = said(caplog)
    assert len(lines) == 2
    assert "http://127.0.0.1:1 is plaintext" in lines[0]
    assert f"(CA {ca}) are IGNORED" in lines[1]


def test_etcd_client_over_tls_says_nothing(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        EtcdClient(EtcdConfig(endpoints=["https://127.0.0.1:1"])).close()
    assert said(caplog) == []


def test_capture_sends_lines_to_the_sink_instead_of_the_log(caplog):
    got: list[str] = []
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with transport.capture(got.append):
            EtcdClient(EtcdConfig(endpoints=["http://127.0.0.1:1"])).close()
        assert len(got) == 1 and "http://127.0.0.1:1" in got[0]
        assert said(caplog) == []
        # outside the capture the log is used again
        transport.check_transport(["http://127.0.0.2:1"])
    assert len(got) == 1 and len(said(caplog)) == 1

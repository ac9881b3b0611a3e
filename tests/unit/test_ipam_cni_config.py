"""CNI plugin input handling (no kernel, no etcd): network config, CNI_* environment,
CNI_ARGS, derived names, error JSON, result formatting, conflist rendering."""
from __future__ import annotations

import hashlib
import ipaddress
import json

import pytest

from calico_net.cni import config, install
from calico_net.cni.errors import CNIError
from calico_net.cni.ipam_plugin import format_ips, result_ips, to_cni_error

ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc-123", "CNI_NETNS": "/var/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni:/opt/cni/bin",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-1;LABEL_tier=front"}


def conf(**over):
    doc = {"cniVersion": "1.0.0", "name": "calico", "type": "calico", "ipam": {"type": "calico-ipam"}}
    doc.update(over)
    return json.dumps(doc)


def test_defaults_match_calico():
    c = config.NetConf.parse(conf())
    assert c.ipam.assign_ipv4 and not c.ipam.assign_ipv6
    assert c.mtu == 0 and c.profiles is None and c.log_file_path == "/var/log/calico/cni/cni.log"
    c = config.NetConf.parse(conf(ipam={"type": "calico-ipam", "assign_ipv6": "true",
                                        "ipv4_pools": ["198.19.0.0/24", "p2"]}, mtu=1400, nodename="n1"))
    assert c.ipam.assign_ipv6 and c.ipam.ipv4_pools == ["198.19.0.0/24", "p2"]
    assert c.mtu == 1400 and c.effective_mtu() == 1400 and c.node_name() == "n1"


def test_nodename_file_then_hostname(tmp_path):
    f = tmp_path / "nodename"
    f.write_text("from-file\n")
    c = config.NetConf.parse(conf(nodename_file=str(f)))
    assert c.node_name() == "from-file"
    c = config.NetConf.parse(conf(nodename_file=str(tmp_path / "missing")))
    assert c.node_name()  # the host name


@pytest.mark.parametrize("text,code", [
    ("{", 6), ("[]", 6), (conf(cniVersion="0.2.0"), 1), (conf(name=""), 7),
    (conf(ipam={"type": "calico-ipam", "assign_ipv4": "maybe"}), 7), (conf(labels={"a": 1}), 7),
    (conf(mtu=10), 7), (conf(profiles="a,b"), None),
])
def test_config_errors(text, code):
    if code is None:
        assert config.NetConf.parse(text).profiles == ["a", "b"]
        return
    with pytest.raises(CNIError) as e:
        config.NetConf.parse(text)
    assert e.value.code == code


def test_environment_and_args():
    env = config.CNIEnv.from_environ(ENV)
    assert env.command == "ADD" and env.path == ["/usr/lib/cni", "/opt/cni/bin"]
    assert env.namespace == "team-a" and env.workload == "web-1"
    assert env.arg_labels() == {"tier": "front"}
    for missing in ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"):
        with pytest.raises(CNIError) as e:
            config.CNIEnv.from_environ({k: v for k, v in ENV.items() if k != missing})
        assert e.value.code == 4 and missing in e.value.msg
    # DEL may come without a namespace (the container is gone)
    config.CNIEnv.from_environ(dict(ENV, CNI_COMMAND="DEL", CNI_NETNS=""))
    with pytest.raises(CNIError):
        config.CNIEnv.from_environ(dict(ENV, CNI_ARGS="novalue"))
    assert config.CNIEnv.from_environ({"CNI_COMMAND": "VERSION"}).command == "VERSION"


def test_derived_names():
    c = config.NetConf.parse(conf())
    env = config.CNIEnv.from_environ(ENV)
    assert config.handle_id(c, env) == "calico.abc-123"
    assert config.wep_name("node-1", env) == "node--1-cni-abc--123-eth0"
    want = "cali" + hashlib.sha1(b"team-a.abc-123").hexdigest()[:11]
    assert config.host_veth_name(env) == want and len(want) == 15
    env2 = config.CNIEnv.from_environ(dict(ENV, CNI_IFNAME="eth1"))
    assert config.host_veth_name(env2) != want


def test_error_json_and_mapping():
    from calico_net.datastore.errors import DatastoreUnavailable
    from calico_net.ipam.errors import NoPoolsError, PoolExhaustedError

    e = CNIError(7, "bad", "why")
    assert json.loads(e.dumps("0.4.0")) == {"cniVersion": "0.4.0", "code": 7, "msg": "bad", "details": "why"}
    assert to_cni_error(NoPoolsError("x")).code == 101
    assert to_cni_error(PoolExhaustedError("x")).code == 102
    assert to_cni_error(DatastoreUnavailable("x")).code == 11
    assert to_cni_error(RuntimeError("boom")).code == 100


def test_result_ips_by_version():
    ips = [ipaddress.ip_address("198.19.0.1"), ipaddress.ip_address("2001:2::1")]
    assert format_ips(ips, "1.0.0", interface=1) == [
        {"address": "198.19.0.1/32", "interface": 1}, {"address": "2001:2::1/128", "interface": 1}]
    assert format_ips(ips, "0.3.1")[1]["version"] == "6"
    assert result_ips({"ips": format_ips(ips, "1.0.0")}) == ips


def test_conflist_rendering():
    doc = install.render_conflist("http://198.18.0.11:2379", nodename="n1", ipv6=True, pools_v4=["p"])
    assert doc["cniVersion"] == "1.0.0" and doc["name"] == "calico"
    [plugin] = doc["plugins"]
    assert plugin["type"] == "calico" and plugin["etcd_endpoints"] == "http://198.18.0.11:2379"
    assert plugin["ipam"] == {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true",
                              "ipv4_pools": ["p"]}
    # what the plugin parses back
    c = config.NetConf.parse(json.dumps(dict(plugin, cniVersion="1.0.0", name="calico")))
    assert c.ipam.assign_ipv6 and c.nodename == "n1"


def test_installer_is_idempotent(tmp_path):
    entry = tmp_path / "venv-bin"
    entry.mkdir()
    for name in ("calico", "calico-ipam"):
        (entry / name).write_text("#!/bin/sh\n")
    assert len(install.install_plugins(tmp_path / "bin", entry)) == 2
    assert install.install_plugins(tmp_path / "bin", entry) == []
    assert f"exec {entry / 'calico'}" in (tmp_path / "bin" / "calico").read_text()
    path, changed = install.install_conflist(tmp_path / "net.d", install.render_conflist("http://a:2379"))
    assert changed and path.name == "calico.conflist"
    assert install.install_conflist(tmp_path / "net.d", install.render_conflist("http://a:2379"))[1] is False

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


# --- names that become file names, netlink names and etcd keys (issue 14) --------------


@pytest.mark.parametrize("cid,ok", [
    ("abc-123", True), ("a.b_c-d", True), ("x" * 256, True), ("x" * 257, False),
    ("../etc", False), ("a/b", False), (".hidden", False), ("-x", False), ("a\n", False),
    ("a\x00b", False), ("a b", False), ("ünï", False),
])
def test_container_id_is_libcni_shaped(cid, ok):
    env = dict(ENV, CNI_CONTAINERID=cid)
    if ok:
        assert config.CNIEnv.from_environ(env).container_id == cid
        return
    with pytest.raises(CNIError) as e:
        config.CNIEnv.from_environ(env)
    assert e.value.code == 4 and "CNI_CONTAINERID" in e.value.msg
    # DEL checks it too: the id names the IPAM handle and the endpoint it removes.
    with pytest.raises(CNIError):
        config.CNIEnv.from_environ(dict(env, CNI_COMMAND="DEL"))


@pytest.mark.parametrize("ifname,ok", [
    ("eth0", True), ("net1", True), ("a" * 15, True), ("a" * 16, False), ("", False),
    (".", False), ("..", False), ("a/b", False), ("a:b", False), ("a b", False),
    ("a\tb", False), ("a\nb", False), ("a\x00b", False), ("ééééééééé", False),
])
def test_interface_name_follows_linux(ifname, ok):
    env = dict(ENV, CNI_IFNAME=ifname)
    if ok:
        assert config.CNIEnv.from_environ(env).ifname == ifname
        return
    with pytest.raises(CNIError) as e:
        config.CNIEnv.from_environ(env)
    assert e.value.code == 4 and "CNI_IFNAME" in e.value.msg


@pytest.mark.parametrize("netns,ok", [
    ("/var/run/netns/x", True), ("/proc/1234/ns/net", True), ("x", False),
    ("netns/x", False), ("/var/run/netns/../../etc/passwd", False), ("/var/run/netns/x\n", False),
    ("/var/run/netns/x\x00", False), ("/var/run/netns/é", False),
])
def test_netns_is_an_absolute_path(netns, ok):
    env = dict(ENV, CNI_NETNS=netns)
    if ok:
        assert config.CNIEnv.from_environ(env).netns == netns
        return
    with pytest.raises(CNIError) as e:
        config.CNIEnv.from_environ(env)
    assert e.value.code == 4 and "CNI_NETNS" in e.value.msg
    # DEL does not need the namespace: a bad one is dropped, not used.
    assert config.CNIEnv.from_environ(dict(env, CNI_COMMAND="DEL")).netns == ""


def test_dataplane_never_opens_a_relative_or_missing_netns(tmp_path, monkeypatch):
    from calico_net.cni import dataplane

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").write_text("")  # a relative "x" exists here; it must not count
    assert not dataplane._netns_exists("x")
    with pytest.raises(CNIError) as e:
        dataplane._open_netns("x")
    assert e.value.code == 3


@pytest.mark.parametrize("ns,ok", [
    ("team-a", True), ("default", True), ("a" * 63, True), ("a" * 64, False), ("Team", False),
    ("a/b", False), ("a\nb", False), ("-a", False), ("a.b", False),
])
def test_pod_namespace_is_a_namespace_name(ns, ok):
    env = dict(ENV, CNI_ARGS=f"K8S_POD_NAMESPACE={ns}")
    if ok:
        assert config.CNIEnv.from_environ(env).namespace == ns
        return
    with pytest.raises(CNIError) as e:
        config.CNIEnv.from_environ(env)
    assert e.value.code == 4 and "K8S_POD_NAMESPACE" in e.value.msg


@pytest.mark.parametrize("field,value", [
    ("name", "../evil"), ("name", "a/b"), ("name", "cal\nico"), ("name", "a b"),
    ("ipam", {"type": "../../bin/sh"}), ("ipam", {"type": "host-local\n"}), ("ipam", {"type": ".."}),
])
def test_network_and_plugin_names_are_single_components(field, value):
    with pytest.raises(CNIError) as e:
        config.NetConf.parse(conf(**{field: value}))
    assert e.value.code == 7


@pytest.mark.parametrize("name", ["a/b", "..", ".", "n1\n", "n\x00", ""])
def test_node_name_from_config_or_file_is_checked(tmp_path, name):
    if name:
        with pytest.raises(CNIError) as e:
            config.NetConf.parse(conf(nodename=name)).node_name()
        assert e.value.code == 7 and "node name" in e.value.msg
    f = tmp_path / "nodename"
    f.write_text((name or "ok") + "x/y\n")
    with pytest.raises(CNIError):
        config.NetConf.parse(conf(nodename_file=str(f))).node_name()


def test_delegate_refuses_a_path_as_plugin_type(tmp_path):
    from calico_net.cni.ipam_plugin import delegate

    env = config.CNIEnv.from_environ(dict(ENV, CNI_PATH=str(tmp_path)))
    for bad in ("../x", "/bin/sh", "..", "a\n"):
        with pytest.raises(CNIError) as e:
            delegate(bad, "ADD", b"{}", env)
        assert e.value.code == 7


def test_installer_refuses_a_path_as_network_name(tmp_path):
    with pytest.raises(CNIError):
        install.install_conflist(tmp_path, install.render_conflist("http://a:2379", name="../x"))
    assert not list(tmp_path.iterdir()) and not (tmp_path.parent / "x.conflist").exists()
    lines = install.containers_conf_lines('/opt/we"ird')
    assert 'cni_plugin_dirs = ["/opt/we\\"ird", ' in lines


@pytest.mark.parametrize("node", ["a/b", "..", ".", "n\n", "n\x00", "", "../../etc/x"])
def test_ipam_node_names_and_host_lock_refuse_paths(tmp_path, node):
    from calico_net.ipam import keys
    from calico_net.ipam.hostlock import HostLock

    with pytest.raises(ValueError):
        keys.check_node_name(node)
    with pytest.raises(ValueError):
        HostLock(str(tmp_path), node)
    assert HostLock(str(tmp_path), "node-1").path == str(tmp_path / "ipam-node-1.lock")


@pytest.mark.parametrize("hid,ok", [("calico.abc", True), ("a/b", False), ("a\n", False),
                                    ("a\x00", False), ("", False), ("x" * 513, False)])
def test_ipam_handle_ids(hid, ok):
    from calico_net.ipam import keys

    if ok:
        assert keys.check_handle_id(hid) == hid
    else:
        with pytest.raises(ValueError):
            keys.check_handle_id(hid)


def test_ipam_key_parsers_are_anchored():
    from calico_net.ipam import keys

    assert keys.parse_affinity_key("/calico/ipam/v2/host/n1/ipv4/block/198.19.0.0-26") is not None
    assert keys.parse_affinity_key("/calico/ipam/v2/host/n1/ipv4/block/198.19.0.0-26\n") is None
    assert keys.parse_block_key("/calico/ipam/v2/assignment/ipv4/block/198.19.0.0-26\n") is None
    assert keys.parse_handle_key("x/calico/ipam/v2/handle/h") is None

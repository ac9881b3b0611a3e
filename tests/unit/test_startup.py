"""Tests for calico/node start-up (calico_net.agent.startup): address autodetection
with injected interface lists, Node registration against the real etcd, and
pyroute2's interface listing inside a network namespace."""

from __future__ import annotations

import ast
import ipaddress
import json
import subprocess
import sys
from typing import Any

import pytest

from calico_net.agent.startup import (
    Interface,
    StartupError,
    autodetect,
    desired_bgp,
    networking_backend,
    node_name,
    register_node,
    resolve_address,
)


def iface(name: str, *addrs: str, index: int = 0, up: bool = True) -> Interface:
    return Interface(name, index, tuple(ipaddress.ip_interface(a) for a in addrs), up)


HOST = [
    iface("lo", "127.0.0.1/8", "::1/128", index=1),
    iface("docker0", "198.18.99.1/24", index=2),
    iface("cali0123456789a", index=3),
    iface("veth1", "198.18.98.1/24", index=4),
    iface("eth0", "fe80::1/64", index=5, up=False),
    iface("eth1", "fe80::2/64", "198.18.0.11/24", "2001:db8:18::11/64", index=6),
    iface("ens5", "198.18.1.11/24", "2001:db8:1::11/64", index=7),
]


def no_route(dest: str, version: int) -> Any:
    raise AssertionError("route_source must not be called")


# ------------------------------------------------------------------ autodetect


def test_first_found_skips_excluded_down_and_link_local() -> None:
    assert str(autodetect("first-found", 4, HOST, route_source=no_route)) == "198.18.0.11/24"
    assert str(autodetect("", 4, HOST, route_source=no_route)) == "198.18.0.11/24"
    assert str(autodetect("first-found", 6, HOST, route_source=no_route)) == "2001:db8:18::11/64"


def test_interface_and_skip_interface_regexes() -> None:
    assert str(autodetect("interface=ens.*", 4, HOST)) == "198.18.1.11/24"
    assert str(autodetect("interface=nomatch,ens5", 6, HOST)) == "2001:db8:1::11/64"
    # interface= is an explicit choice: even an otherwise excluded name counts.
    assert str(autodetect("interface=docker0", 4, HOST)) == "198.18.99.1/24"
    assert str(autodetect("skip-interface=eth.*,docker.*,veth.*", 4, HOST)) == "198.18.1.11/24"
    with pytest.raises(StartupError, match="no IPv4 address"):
        autodetect("interface=cali.*", 4, HOST)
    with pytest.raises(StartupError, match="regular expression"):
        autodetect("interface=(", 4, HOST)


def test_cidr_method() -> None:
    assert str(autodetect("cidr=198.18.1.0/24", 4, HOST)) == "198.18.1.11/24"
    assert str(autodetect("cidr=198.19.0.0/16,198.18.0.0/24", 4, HOST)) == "198.18.0.11/24"
    with pytest.raises(StartupError):
        autodetect("cidr=not-a-cidr", 4, HOST)


def test_can_reach_uses_the_route_lookup() -> None:
    asked = []

    def src(dest: str, version: int) -> Any:
        asked.append((dest, version))
        return ipaddress.ip_address("198.18.1.11")

    assert str(autodetect("can-reach=198.18.1.254", 4, HOST, route_source=src)) == "198.18.1.11/24"
    assert asked == [("198.18.1.254", 4)]
    # A source address on no listed interface: kept as a host address.
    assert str(autodetect("can-reach=x", 4, HOST,
                          route_source=lambda d, v: ipaddress.ip_address("198.18.7.7"))) == "198.18.7.7/32"
    with pytest.raises(StartupError, match="no IPv4 route"):
        autodetect("can-reach=198.18.5.5", 4, HOST, route_source=lambda d, v: None)


def test_unknown_method() -> None:
    with pytest.raises(StartupError, match="IP_AUTODETECTION_METHOD"):
        autodetect("kubernetes-internal-ip", 4, HOST)
    with pytest.raises(StartupError, match="IP6_AUTODETECTION_METHOD"):
        autodetect("bogus", 6, HOST)


# ------------------------------------------------------------------ env → spec.bgp


def test_resolve_address_semantics() -> None:
    ifs = lambda: HOST  # noqa: E731
    # IP unset and no address yet: autodetect; unset with an address: keep it.
    assert resolve_address(None, None, 4, None, ifs) == "198.18.0.11/24"
    assert resolve_address("", None, 4, "198.18.5.5/24", ifs) == "198.18.5.5/24"
    # autodetect always detects; none removes.
    assert resolve_address("autodetect", "interface=ens5", 4, "198.18.5.5/24", ifs) == "198.18.1.11/24"
    assert resolve_address("none", None, 4, "198.18.5.5/24", ifs) is None
    # Explicit: as given, or a bare address takes the prefix of the interface holding it.
    assert resolve_address("198.18.0.11", None, 4, None, ifs) == "198.18.0.11/24"
    assert resolve_address("198.18.9.9", None, 4, None, ifs) == "198.18.9.9/32"
    assert resolve_address("198.18.9.9/20", None, 4, None, ifs) == "198.18.9.9/20"
    with pytest.raises(StartupError, match="not an IPv4 address"):
        resolve_address("2001:db8::1", None, 4, None, ifs)
    # IP6 unset: nothing for a new node (no autodetection by default).
    assert resolve_address(None, None, 6, None, ifs) is None
    assert resolve_address("autodetect", None, 6, None, ifs) == "2001:db8:18::11/64"


def test_desired_bgp_keeps_other_fields_and_sets_as() -> None:
    old = {"ipv4Address": "198.18.5.5/24", "routeReflectorClusterID": "198.18.255.1",
           "asNumber": 64512}
    new = desired_bgp(old, {"AS": "65010", "IP": "198.18.0.11/24"}, lambda: HOST)
    assert new == {"ipv4Address": "198.18.0.11/24", "routeReflectorClusterID": "198.18.255.1",
                   "asNumber": 65010}
    assert desired_bgp(old, {}, lambda: HOST) == old
    assert desired_bgp(old, {"AS": "1.10"}, lambda: HOST)["asNumber"] == 65546
    with pytest.raises(StartupError, match="AS="):
        desired_bgp(old, {"AS": "abc"}, lambda: HOST)


def test_node_name_sources(tmp_path) -> None:
    f = tmp_path / "nodename"
    assert node_name({"NODENAME": "n1", "HOSTNAME": "h"}, str(f)) == "n1"
    assert node_name({"HOSTNAME": "Host-A"}, str(f)) == "host-a"
    f.write_text("from-file\n")
    assert node_name({}, str(f)) == "from-file"


# ------------------------------------------------------------------ registration


def test_register_creates_then_updates_keeping_fields(datastore) -> None:
    ifs = lambda: HOST  # noqa: E731
    doc = register_node(datastore, "n1", {"IP": "autodetect", "AS": "64600"}, interfaces=ifs)
    assert doc["spec"]["bgp"] == {"ipv4Address": "198.18.0.11/24", "asNumber": 64600}
    # Someone labels the node and makes it a reflector; a restart keeps that.
    stored = datastore.get("Node", "n1")
    stored["metadata"]["labels"] = {"rack": "r1"}
    stored["spec"]["bgp"]["routeReflectorClusterID"] = "198.18.255.1"
    datastore.replace(stored)
    doc = register_node(datastore, "n1", {"IP": "198.18.1.11", "IP6": "autodetect"}, interfaces=ifs)
    assert doc["metadata"]["labels"] == {"rack": "r1"}
    assert doc["spec"]["bgp"] == {
        "ipv4Address": "198.18.1.11/24", "ipv6Address": "2001:db8:18::11/64",
        "asNumber": 64600, "routeReflectorClusterID": "198.18.255.1"}
    # Unchanged inputs: no write at all.
    rev = datastore.get("Node", "n1")["metadata"]["resourceVersion"]
    register_node(datastore, "n1", {}, interfaces=ifs)
    assert datastore.get("Node", "n1")["metadata"]["resourceVersion"] == rev


def test_register_refuses_an_address_another_node_uses(datastore) -> None:
    register_node(datastore, "n1", {"IP": "198.18.0.11/24"}, interfaces=lambda: HOST)
    with pytest.raises(StartupError, match='Node "n1" already uses 198.18.0.11'):
        register_node(datastore, "n2", {"IP": "198.18.0.11/24"}, interfaces=lambda: HOST)


def test_register_without_any_address(datastore) -> None:
    with pytest.raises(StartupError, match="no IPv4 or IPv6 address"):
        register_node(datastore, "n1", {"IP": "none"}, interfaces=lambda: HOST)
    doc = register_node(datastore, "n1", {"IP": "none", "CALICO_NETWORKING_BACKEND": "none"},
                        interfaces=lambda: HOST)
    assert "bgp" not in doc["spec"]


def test_networking_backend_values() -> None:
    assert networking_backend({}) == "bird"
    assert networking_backend({"CALICO_NETWORKING_BACKEND": " "}) == "bird"
    assert networking_backend({"CALICO_NETWORKING_BACKEND": "VXLAN"}) == "vxlan"
    assert networking_backend({"CALICO_NETWORKING_BACKEND": "none"}) == "none"
    for bad in ("bgp", "vxlan,bird", "ipip"):
        with pytest.raises(StartupError, match=f"CALICO_NETWORKING_BACKEND='{bad}' is not one of bird, vxlan, none"):
            networking_backend({"CALICO_NETWORKING_BACKEND": bad})


def test_register_with_the_vxlan_backend(datastore) -> None:
    # vxlan needs the node address as bird does (the tunnels end at it) ...
    with pytest.raises(StartupError, match="VXLAN needs one"):
        register_node(datastore, "n1", {"IP": "none", "CALICO_NETWORKING_BACKEND": "vxlan"},
                      interfaces=lambda: HOST)
    doc = register_node(datastore, "n1", {"IP": "autodetect", "CALICO_NETWORKING_BACKEND": "vxlan"},
                        interfaces=lambda: HOST)
    # ... and implies no BGP settings of its own
    assert doc["spec"]["bgp"] == {"ipv4Address": "198.18.0.11/24"}
    with pytest.raises(StartupError, match="is not one of"):
        register_node(datastore, "n2", {"CALICO_NETWORKING_BACKEND": "flannel"}, interfaces=lambda: HOST)
    from calico_net.datastore.errors import ResourceNotFound

    with pytest.raises(ResourceNotFound):
        datastore.get("Node", "n2")


def pool_doc(name: str, cidr: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec}}


def test_main_assigns_tunnel_addresses(etcd, etcd_client, datastore, tmp_path) -> None:
    datastore.create(pool_doc("vx", "198.19.104.0/24", vxlanMode="Always"))
    env = etcd.env()
    env.update({"NODENAME": "tun-node", "IP": "198.18.0.22/24", "CALICO_NETWORKING_BACKEND": "vxlan",
                "CALICO_NODENAME_FILE": str(tmp_path / "nodename")})
    p = subprocess.run([sys.executable, "-m", "calico_net.agent.startup"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    spec = datastore.get("Node", "tun-node")["spec"]
    assert ipaddress.ip_address(spec["ipv4VXLANTunnelAddr"]) in ipaddress.ip_network("198.19.104.0/24")
    assert spec["vxlanTunnelMACAddr"] and "ipv4IPIPTunnelAddr" not in spec["bgp"]
    assert f"ipv4VXLANTunnelAddr {spec['ipv4VXLANTunnelAddr']}" in p.stderr


def test_main_does_not_fail_on_an_ipam_problem(etcd, etcd_client, datastore, tmp_path) -> None:
    from calico_net.ipam import IPAM

    # a 4-address pool a workload has used up: no tunnel address to be had
    datastore.create(pool_doc("tiny", "198.19.105.0/30", ipipMode="Always", blockSize=30))
    IPAM(etcd_client, datastore).auto_assign("wl", "other", num_v4=4)
    env = etcd.env()
    env.update({"NODENAME": "tun-node", "IP": "198.18.0.23/24",
                "CALICO_NODENAME_FILE": str(tmp_path / "nodename")})
    p = subprocess.run([sys.executable, "-m", "calico_net.agent.startup"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "tunnel addresses of node tun-node not reconciled yet" in p.stderr
    assert (tmp_path / "nodename").read_text() == "tun-node"
    spec = datastore.get("Node", "tun-node")["spec"]
    assert spec["bgp"] == {"ipv4Address": "198.18.0.23/24"}


def test_main_registers_and_writes_nodename(etcd, etcd_client, tmp_path) -> None:
    env = etcd.env()
    env.update({"NODENAME": "main-node", "IP": "198.18.0.21/24",
                "CALICO_NODENAME_FILE": str(tmp_path / "nodename")})
    p = subprocess.run([sys.executable, "-m", "calico_net.agent.startup"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "nodename").read_text() == "main-node"
    kv = etcd_client.get("/calico/resources/v3/projectcalico.org/nodes/main-node")
    assert json.loads(kv.value)["spec"]["bgp"]["ipv4Address"] == "198.18.0.21/24"
    env["IP"] = "not-an-ip"
    p = subprocess.run([sys.executable, "-m", "calico_net.agent.startup"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "not an IPv4 address" in p.stderr


# ------------------------------------------------------------------ real interfaces


@pytest.mark.root
def test_list_interfaces_and_autodetect_in_a_netns() -> None:
    ns = "cnfv-bgp-startup"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def ip(*args: str) -> None:
            subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True)

        ip("link", "set", "lo", "up")
        ip("link", "add", "docker0", "type", "veth", "peer", "name", "vethd0")
        ip("link", "set", "vethd0", "up")
        ip("addr", "add", "198.18.99.1/24", "dev", "docker0")
        ip("link", "set", "docker0", "up")
        ip("link", "add", "eth9", "type", "veth", "peer", "name", "veth9")
        ip("link", "set", "veth9", "up")
        ip("addr", "add", "198.18.0.31/24", "dev", "eth9")
        ip("link", "set", "eth9", "up")
        ip("link", "add", "ens3", "type", "veth", "peer", "name", "veth3")
        ip("link", "set", "veth3", "up")
        ip("addr", "add", "198.18.3.31/24", "dev", "ens3")
        ip("link", "set", "ens3", "up")
        ip("route", "add", "198.18.200.0/24", "via", "198.18.3.1", "dev", "ens3", "onlink")
        code = (
            "from calico_net.agent.startup import autodetect, list_interfaces\n"
            "ifs = list_interfaces()\n"
            "print([i.name for i in ifs])\n"
            "print(autodetect('first-found', 4, ifs))\n"
            "print(autodetect('can-reach=198.18.200.7', 4, ifs))\n"
            "print(autodetect('interface=ens.*', 4, ifs))\n"
        )
        out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        names, first, reach, by_name = out.splitlines()
        # (no dummy driver here: veth pairs, whose veth* ends first-found skips)
        assert [n for n in ast.literal_eval(names) if not n.startswith("veth")] == ["lo", "docker0", "eth9", "ens3"]
        assert first == "198.18.0.31/24"
        assert reach == "198.18.3.31/24"  # the route lookup picks ens3's address
        assert by_name == "198.18.3.31/24"
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.parametrize("name", ["a/b", "..", "x/../../etc"])
def test_main_refuses_a_node_name_that_is_not_one_key_component(name, monkeypatch, caplog):
    from calico_net.agent import startup

    monkeypatch.setenv("NODENAME", name)
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://198.18.255.254:2379")
    assert startup.main([]) == 1
    assert "cannot register node" in caplog.text

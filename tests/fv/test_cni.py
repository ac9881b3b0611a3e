"""The `calico` CNI plugin run as a runtime runs it: the installed executable, env
CNI_*, network config on stdin, real network namespaces (`cnfv-cni-*`), real etcd.

Covers ADD/CHECK/DEL, DEL twice, DEL after a failed ADD, ADD twice with one
container id, re-ADD after the interfaces vanished, dual stack, labels and namespace
from CNI_ARGS, older cniVersion results, host-local pass-through, and bad input
(invalid config, no pool, exhausted pool, etcd down, missing netns) — each failure
must print CNI error JSON and leave no address, endpoint or veth behind.

The plugin runs in the root namespace (as on a real host); every interface it makes
is named from the fixed container ids below, so leftovers of a killed run are
removed by the next one.
"""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from calico_net.ipam import IPAM

pytestmark = pytest.mark.root

VENV_BIN = Path(sys.executable).parent
NS_PREFIX = "cnfv-cni-"
NODE = "cnfv-cni-node"
CONTAINER_IDS = [f"cnfvcni{n:02d}" for n in range(8)]


def veth_for(container_id: str, namespace: str = "default", ifname: str = "eth0") -> str:
    stable = f"{namespace}.{container_id}" + ("" if ifname == "eth0" else f".{ifname}")
    return "cali" + hashlib.sha1(stable.encode()).hexdigest()[:11]


def sh(*cmd: str, check: bool = True) -> str:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {p.stderr.strip()}")
    return p.stdout


def link_exists(name: str, ns: str | None = None) -> bool:
    argv = ["ip"] + (["-n", ns] if ns else []) + ["link", "show", name]
    return subprocess.run(argv, capture_output=True).returncode == 0


def _clean_leftovers() -> None:
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(NS_PREFIX):
            sh("ip", "netns", "del", name, check=False)
    for cid in CONTAINER_IDS:
        for ns in ("default", "team-a"):
            if link_exists(veth_for(cid, ns)):
                sh("ip", "link", "del", veth_for(cid, ns), check=False)


@pytest.fixture
def netns(request) -> Iterator[Any]:
    """Make namespaces named cnfv-cni-<n>; all removed (with their veths) afterwards."""
    _clean_leftovers()
    made: list[str] = []

    def make() -> str:
        name = f"{NS_PREFIX}{len(made)}"
        sh("ip", "netns", "add", name)
        made.append(name)
        return name

    yield make
    _clean_leftovers()


class Runner:
    def __init__(self, etcd, tmp: Path) -> None:
        self.etcd = etcd
        self.tmp = tmp

    def conf(self, **over: Any) -> dict[str, Any]:
        conf = {
            "cniVersion": "1.0.0", "name": "calico", "type": "calico",
            "etcd_endpoints": self.etcd.endpoints, "nodename": NODE,
            "log_level": "debug", "log_file_path": str(self.tmp / "cni.log"),
            "ipam": {"type": "calico-ipam"},
        }
        conf.update(over)
        return conf

    def run(self, command: str, conf: dict[str, Any] | str, container_id: str = CONTAINER_IDS[0],
            ns: str | None = None, ifname: str = "eth0", args: str = "", plugin: str = "calico",
            extra_env: dict[str, str] | None = None) -> tuple[int, Any, str]:
        env = self.etcd.env()
        env.pop("ETCD_ENDPOINTS", None)  # the network config says where etcd is
        env.update({"CNI_COMMAND": command, "CNI_CONTAINERID": container_id,
                    "CNI_NETNS": f"/var/run/netns/{ns}" if ns else "", "CNI_IFNAME": ifname,
                    "CNI_ARGS": args, "CNI_PATH": "/usr/lib/cni"})
        env.update(extra_env or {})
        stdin = conf if isinstance(conf, str) else json.dumps(conf)
        p = subprocess.run([str(VENV_BIN / plugin)], input=stdin, env=env, capture_output=True,
                           text=True, timeout=120)
        out = p.stdout.strip()
        try:
            doc = json.loads(out) if out else None
        except ValueError:
            doc = out
        return p.returncode, doc, p.stderr


@pytest.fixture
def cni(etcd, tmp_path) -> Runner:
    return Runner(etcd, tmp_path)


@pytest.fixture
def pool(datastore):
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "cni-pool"}, "spec": {"cidr": "198.19.64.0/24"}})
    return datastore


def in_use(datastore) -> int:
    return sum(b.in_use for b in IPAM(datastore.client, datastore).blocks())


def weps(datastore) -> list[dict[str, Any]]:
    return datastore.list("WorkloadEndpoint")[0]


def assert_nothing_left(datastore, container_id: str = CONTAINER_IDS[0], ns: str | None = None) -> None:
    assert in_use(datastore) == 0, "an address is still allocated"
    assert weps(datastore) == [], "a WorkloadEndpoint is still there"
    assert IPAM(datastore.client, datastore).handles() == {}, "an IPAM handle is still there"
    assert not link_exists(veth_for(container_id)), "the host veth is still there"
    if ns:
        assert not link_exists("eth0", ns), "the container interface is still there"


# --- the normal life of an attachment ---------------------------------------------------


def test_add_check_del(cni, pool, netns):
    ns = netns()
    rc, res, err = cni.run("ADD", cni.conf(), ns=ns)
    assert rc == 0, (res, err)
    assert res["cniVersion"] == "1.0.0"
    [ip] = res["ips"]
    assert ip["address"].startswith("198.19.64.") and ip["address"].endswith("/32") and ip["interface"] == 1
    host, cont = res["interfaces"]
    assert host == {"name": veth_for(CONTAINER_IDS[0]), "mac": "ee:ee:ee:ee:ee:ee"}
    assert cont["name"] == "eth0" and cont["sandbox"] == f"/var/run/netns/{ns}"
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
    addr = ip["address"].split("/")[0]

    # the kernel state
    assert f"inet {addr}/32" in sh("ip", "-n", ns, "addr", "show", "eth0")
    routes = sh("ip", "-n", ns, "route")
    assert "default via 169.254.1.1 dev eth0" in routes and "169.254.1.1 dev eth0" in routes
    neigh = sh("ip", "-n", ns, "neigh", "show", "169.254.1.1")
    assert "lladdr ee:ee:ee:ee:ee:ee PERMANENT" in neigh, neigh
    host_link = json.loads(sh("ip", "-j", "link", "show", host["name"]))[0]
    assert host_link["address"] == "ee:ee:ee:ee:ee:ee" and "UP" in host_link["flags"]
    assert f"{addr} dev {host['name']}" in sh("ip", "route", "show", "proto", "80")

    # the endpoint, the profile and IPAM
    [wep] = weps(pool)
    assert wep["metadata"]["name"] == f"cnfv--cni--node-cni-{CONTAINER_IDS[0]}-eth0"
    assert wep["metadata"]["namespace"] == "default"
    assert wep["metadata"]["labels"]["projectcalico.org/orchestrator"] == "cni"
    spec = wep["spec"]
    assert spec["node"] == NODE and spec["orchestrator"] == "cni" and spec["endpoint"] == "eth0"
    assert spec["containerID"] == CONTAINER_IDS[0] and spec["interfaceName"] == host["name"]
    assert spec["ipNetworks"] == [f"{addr}/32"] and spec["profiles"] == ["calico"]
    assert spec["mac"] == cont["mac"]
    profile = pool.get("Profile", "calico")
    assert profile["spec"]["ingress"] == [{"action": "Allow", "source": {"selector": "has(calico)"}}]
    assert profile["spec"]["labelsToApply"] == {"calico": ""}
    a = IPAM(pool.client, pool).get_assignment(addr)
    assert a.handle_id == f"calico.{CONTAINER_IDS[0]}" and a.attributes["node"] == NODE

    rc, out, err = cni.run("CHECK", cni.conf(prevResult=res), ns=ns)
    assert rc == 0, (out, err)

    rc, out, err = cni.run("DEL", cni.conf(), ns=ns)
    assert rc == 0 and out is None, (out, err)
    assert_nothing_left(pool, ns=ns)
    # DEL twice: still success
    rc, out, err = cni.run("DEL", cni.conf(), ns=ns)
    assert rc == 0, (out, err)
    # DEL after the namespace is gone (runtime cleaned the container first)
    rc, out, err = cni.run("DEL", cni.conf(), ns=None)
    assert rc == 0, (out, err)


def test_add_twice_with_one_container_id_leaks_nothing(cni, pool, netns):
    ns = netns()
    rc1, first, err = cni.run("ADD", cni.conf(), ns=ns)
    assert rc1 == 0, err
    rc2, second, err = cni.run("ADD", cni.conf(), ns=ns)
    assert rc2 == 0, (second, err)
    assert second["ips"] == first["ips"]
    assert in_use(pool) == 1 and len(weps(pool)) == 1
    assert len([ln for ln in sh("ip", "-o", "link").splitlines() if veth_for(CONTAINER_IDS[0]) in ln]) == 1
    rc, _, err = cni.run("DEL", cni.conf(), ns=ns)
    assert rc == 0, err
    assert_nothing_left(pool, ns=ns)


def test_add_again_after_interfaces_vanished_keeps_the_address(cni, pool, netns):
    ns = netns()
    rc, first, err = cni.run("ADD", cni.conf(), ns=ns)
    assert rc == 0, err
    sh("ip", "link", "del", veth_for(CONTAINER_IDS[0]))  # e.g. a restarted container
    rc, out, _ = cni.run("CHECK", cni.conf(prevResult=first), ns=ns)
    assert rc == 1 and out["code"] == 104 and "missing" in out["msg"]
    rc, again, err = cni.run("ADD", cni.conf(), ns=ns)
    assert rc == 0, (again, err)
    assert again["ips"] == first["ips"]
    assert in_use(pool) == 1 and len(weps(pool)) == 1
    rc, out, err = cni.run("CHECK", cni.conf(prevResult=again), ns=ns)
    assert rc == 0, (out, err)
    cni.run("DEL", cni.conf(), ns=ns)
    assert_nothing_left(pool, ns=ns)


def test_check_notices_a_missing_route(cni, pool, netns):
    ns = netns()
    rc, res, err = cni.run("ADD", cni.conf(), ns=ns)
    assert rc == 0, err
    sh("ip", "-n", ns, "route", "del", "default")
    rc, out, _ = cni.run("CHECK", cni.conf(prevResult=res), ns=ns)
    assert rc == 1 and out["code"] == 104 and "default route" in out["msg"]
    cni.run("DEL", cni.conf(), ns=ns)


def test_del_after_failed_add(cni, pool, netns):
    ns = netns()
    # the name ADD needs is taken by an interface that is not ours
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer")
    rc, out, _ = cni.run("ADD", cni.conf(), ns=ns)
    assert rc == 1
    assert out["code"] == 103 and "eth0" in out["msg"] and out["cniVersion"] == "1.0.0"
    assert in_use(pool) == 0 and weps(pool) == [] and not link_exists(veth_for(CONTAINER_IDS[0]))
    rc, out, err = cni.run("DEL", cni.conf(), ns=ns)
    assert rc == 0, (out, err)
    assert link_exists("eth0", ns), "DEL must not remove an interface it did not make"
    assert in_use(pool) == 0


def test_two_containers_get_distinct_addresses_and_veths(cni, pool, netns):
    ns1, ns2 = netns(), netns()
    rc, r1, _ = cni.run("ADD", cni.conf(), container_id=CONTAINER_IDS[1], ns=ns1)
    assert rc == 0
    rc, r2, _ = cni.run("ADD", cni.conf(), container_id=CONTAINER_IDS[2], ns=ns2)
    assert rc == 0
    assert r1["ips"][0]["address"] != r2["ips"][0]["address"]
    assert r1["interfaces"][0]["name"] != r2["interfaces"][0]["name"]
    for cid, ns in ((CONTAINER_IDS[1], ns1), (CONTAINER_IDS[2], ns2)):
        assert cni.run("DEL", cni.conf(), container_id=cid, ns=ns)[0] == 0
    assert in_use(pool) == 0 and weps(pool) == []


def test_dual_stack(cni, pool, netns):
    pool.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                 "metadata": {"name": "cni-pool6"}, "spec": {"cidr": "2001:2:0:64::/120"}})
    ns = netns()
    conf = cni.conf(ipam={"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "true"})
    rc, res, err = cni.run("ADD", conf, ns=ns)
    assert rc == 0, (res, err)
    addrs = [i["address"] for i in res["ips"]]
    assert addrs[0].startswith("198.19.64.") and addrs[1].startswith("2001:2:0:64::") and addrs[1].endswith("/128")
    assert {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"} in res["routes"]
    assert addrs[1] in sh("ip", "-n", ns, "-6", "addr", "show", "eth0")
    assert "default via fe80::ecee:eeff:feee:eeee dev eth0" in sh("ip", "-n", ns, "-6", "route")
    [wep] = weps(pool)
    assert wep["spec"]["ipNetworks"] == addrs
    assert cni.run("CHECK", dict(conf, prevResult=res), ns=ns)[0] == 0
    assert cni.run("DEL", conf, ns=ns)[0] == 0
    assert_nothing_left(pool, ns=ns)


def test_labels_namespace_and_profiles(cni, pool, netns):
    ns = netns()
    conf = cni.conf(labels={"app": "web"}, profiles=["custom"])
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=team-a;K8S_POD_NAME=web-1;LABEL_tier=front"
    rc, res, err = cni.run("ADD", conf, ns=ns, args=args)
    assert rc == 0, (res, err)
    [wep] = weps(pool)
    assert wep["metadata"]["namespace"] == "team-a"
    assert wep["spec"]["workload"] == "web-1" and wep["spec"]["profiles"] == ["custom"]
    labels = wep["metadata"]["labels"]
    assert labels["app"] == "web" and labels["tier"] == "front"
    assert labels["projectcalico.org/namespace"] == "team-a"
    assert pool.list("Profile")[0] == []  # explicit profiles: none created
    assert res["interfaces"][0]["name"] == veth_for(CONTAINER_IDS[0], "team-a")
    assert cni.run("DEL", conf, ns=ns, args=args)[0] == 0
    assert weps(pool) == [] and in_use(pool) == 0


def test_older_cni_version_result(cni, pool, netns):
    ns = netns()
    rc, res, err = cni.run("ADD", cni.conf(cniVersion="0.4.0"), ns=ns)
    assert rc == 0, err
    assert res["cniVersion"] == "0.4.0" and res["ips"][0]["version"] == "4"
    assert cni.run("DEL", cni.conf(cniVersion="0.4.0"), ns=ns)[0] == 0


def test_fixed_address_from_cni_args(cni, pool, netns):
    ns = netns()
    rc, res, err = cni.run("ADD", cni.conf(), ns=ns, args="IP=198.19.64.200")
    assert rc == 0, (res, err)
    assert res["ips"][0]["address"] == "198.19.64.200/32"
    assert cni.run("DEL", cni.conf(), ns=ns, args="IP=198.19.64.200")[0] == 0
    assert in_use(pool) == 0


def test_host_local_ipam_is_passed_through(cni, datastore, netns, tmp_path):
    ns = netns()
    conf = cni.conf(ipam={"type": "host-local", "ranges": [[{"subnet": "198.19.65.0/24"}]],
                          "dataDir": str(tmp_path / "host-local")})
    rc, res, err = cni.run("ADD", conf, ns=ns)
    assert rc == 0, (res, err)
    assert res["ips"][0]["address"].startswith("198.19.65.")
    [wep] = weps(datastore)
    assert wep["spec"]["ipNetworks"] == [res["ips"][0]["address"].split("/")[0] + "/32"]
    assert cni.run("DEL", conf, ns=ns)[0] == 0
    assert weps(datastore) == [] and not link_exists(veth_for(CONTAINER_IDS[0]))
    assert not any(p.name[0].isdigit() for p in (tmp_path / "host-local" / "calico").iterdir())


def test_version_command(cni):
    rc, res, _ = cni.run("VERSION", '{"cniVersion": "1.0.0"}')
    assert rc == 0 and "1.0.0" in res["supportedVersions"] and "0.4.0" in res["supportedVersions"]
    rc, res, _ = cni.run("VERSION", "{}", plugin="calico-ipam")
    assert rc == 0 and res["cniVersion"] == "1.0.0"


def test_calico_ipam_plugin_alone(cni, pool):
    conf = cni.conf()
    rc, res, err = cni.run("ADD", conf, plugin="calico-ipam", ns=None, extra_env={"CNI_NETNS": "/dev/null"})
    assert rc == 0, (res, err)
    [ip] = res["ips"]
    assert ip["address"].startswith("198.19.64.") and "interface" not in ip
    rc, again, _ = cni.run("ADD", conf, plugin="calico-ipam", extra_env={"CNI_NETNS": "/dev/null"})
    assert again["ips"] == res["ips"] and in_use(pool) == 1
    assert cni.run("CHECK", dict(conf, prevResult=res), plugin="calico-ipam",
                   extra_env={"CNI_NETNS": "/dev/null"})[0] == 0
    assert cni.run("DEL", conf, plugin="calico-ipam")[0] == 0
    assert cni.run("DEL", conf, plugin="calico-ipam")[0] == 0
    assert in_use(pool) == 0


# --- bad input: error JSON, nothing half-made ------------------------------------------


@pytest.mark.parametrize("override,code,words", [
    ("this is not json", 6, "not valid JSON"),
    ({"name": None}, 7, 'no "name"'),
    ({"cniVersion": "2.0.0"}, 1, "2.0.0 is not supported"),
    ({"mtu": "big"}, 7, '"mtu"'),
    ({"etcd_endpoints": "nowhere"}, 7, "etcd"),
    ({"ipam": {"type": "calico-ipam", "assign_ipv4": "false"}}, 7, "both false"),
    ({"ipam": {"type": "no-such-ipam"}}, 7, "not found in CNI_PATH"),
])
def test_invalid_network_config(cni, pool, netns, override, code, words):
    ns = netns()
    conf = override if isinstance(override, str) else cni.conf(**override)
    rc, out, _ = cni.run("ADD", conf, ns=ns)
    assert rc == 1, out
    assert out["code"] == code and words in out["msg"], out
    assert_nothing_left(pool, ns=ns)


def test_invalid_environment(cni, pool, netns):
    rc, out, _ = cni.run("ADD", cni.conf(), ns=None)
    assert rc == 1 and out["code"] == 4 and "CNI_NETNS" in out["msg"]
    rc, out, _ = cni.run("ADD", cni.conf(), extra_env={"CNI_COMMAND": "JUMP"})
    assert rc == 1 and out["code"] == 4
    rc, out, _ = cni.run("ADD", cni.conf(), extra_env={"CNI_NETNS": "/var/run/netns/cnfv-cni-missing"})
    assert rc == 1 and out["code"] == 3 and "does not exist" in out["msg"]
    assert_nothing_left(pool)


def test_no_pool(cni, datastore, netns):
    ns = netns()
    rc, out, _ = cni.run("ADD", cni.conf(), ns=ns)
    assert rc == 1 and out["code"] == 101 and "no IPv4 IPPool is configured" in out["msg"]
    assert_nothing_left(datastore, ns=ns)
    rc, out, _ = cni.run("ADD", cni.conf(ipam={"type": "calico-ipam", "ipv4_pools": ["nope"]}), ns=ns)
    assert rc == 1 and out["code"] == 101 and '"nope" does not exist' in out["msg"]


def test_exhausted_pool(cni, datastore, netns):
    datastore.create({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                      "metadata": {"name": "tiny"}, "spec": {"cidr": "198.19.66.0/30", "blockSize": 30}})
    ipam = IPAM(datastore.client, datastore)
    for i in range(4):
        ipam.auto_assign(f"filler{i}", NODE)
    ns = netns()
    rc, out, _ = cni.run("ADD", cni.conf(), ns=ns)
    assert rc == 1 and out["code"] == 102 and "exhausted" in out["msg"]
    assert in_use(datastore) == 4 and weps(datastore) == []
    assert not link_exists(veth_for(CONTAINER_IDS[0])) and not link_exists("eth0", ns)
    assert set(ipam.handles()) == {f"filler{i}" for i in range(4)}


def test_etcd_down(cni, pool, netns, etcd):
    ns = netns()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    rc, out, _ = cni.run("ADD", cni.conf(etcd_endpoints=dead), ns=ns)
    assert rc == 1 and out["code"] == 11 and "cannot reach etcd" in out["msg"] and dead in out["details"]
    assert not link_exists(veth_for(CONTAINER_IDS[0])) and not link_exists("eth0", ns)
    # attached while etcd was up; DEL while it is down removes the veth and asks for a retry
    rc, res, err = cni.run("ADD", cni.conf(), ns=ns)
    assert rc == 0, err
    rc, out, _ = cni.run("DEL", cni.conf(etcd_endpoints=dead), ns=ns)
    assert rc == 1 and out["code"] == 11
    assert not link_exists(veth_for(CONTAINER_IDS[0]))
    rc, out, err = cni.run("DEL", cni.conf(), ns=ns)  # the runtime's retry
    assert rc == 0, (out, err)
    assert_nothing_left(pool, ns=ns)

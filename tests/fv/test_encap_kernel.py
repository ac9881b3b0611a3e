"""The overlay's kernel layer (`encap.kernel.EncapKernel`) and the workload route
reader (`felix.rtnetlink.Netlink.routes`) against the real kernel.

Two "hosts", network namespaces joined by a veth (eth0 in each, 198.18.147.1/24
and .2/24). Each host's "pod" is an address on its loopback, in its own block:
198.19.147.1 in 198.19.147.0/26 (host a), 198.19.147.65 in 198.19.147.64/26
(host b); the tunnel addresses are .2 and .66. No route to the other host's block
exists unless the overlay writes it, so a ping between the pods (from the pod
address) works only through the tunnel. `EncapKernel` runs inside a namespace in a
small python process (`APPLY`) that builds each Desired from JSON.

This kernel may lack IP-in-IP (CONFIG_NET_IPIP): then the IP-in-IP ping is
skipped, and the other tests use a tun device named tunl0 as a stand-in for the
fallback device (the layer configures an existing tunl0 of any kind, as Felix
does); everything but the encapsulation itself is still checked on it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

pytestmark = pytest.mark.root

RUN = os.getpid() % 100000
PREFIX = f"cnfv-enk-{RUN}-"
UNDERLAY = {"a": "198.18.147.1", "b": "198.18.147.2"}
POD = {"a": "198.19.147.1", "b": "198.19.147.65"}
BLOCK = {"a": "198.19.147.0/26", "b": "198.19.147.64/26"}
TUNNEL = {"a": "198.19.147.2", "b": "198.19.147.66"}
MAC = {"a": "66:cb:00:00:00:01", "b": "66:cb:00:00:00:02"}
OTHER = {"a": "b", "b": "a"}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

# Applies each Desired of a JSON list in one EncapKernel, in order; prints the
# counts of each apply and how many route dumps it made.
APPLY = r"""
import json, sys
from calico_net.agent.encap import kernel, kernel_codec, types as t
dumps = [0]
real = kernel_codec.dump_routes
def counting(nls):
    dumps[0] += 1
    return real(nls)
kernel_codec.dump_routes = counting
k = kernel.EncapKernel()
out = []
for d in json.loads(sys.stdin.read()):
    desired = t.Desired(
        devices={x["name"]: t.TunnelDevice(**x) for x in d.get("devices", [])},
        routes={t.TunnelRoute(**x) for x in d.get("routes", [])},
        neighbours={t.Neighbour(**x) for x in d.get("neighbours", [])},
        fdb={t.FdbEntry(**x) for x in d.get("fdb", [])},
        blackholes=set(d.get("blackholes", [])))
    before = dumps[0]
    counts = k.apply(desired)
    out.append({"counts": counts, "dumps": dumps[0] - before})
k.close()
print(json.dumps(out))
"""

PROBE_ROUTES = r"""
import json
from calico_net.agent.felix.routes import RouteManager
from calico_net.agent.felix.rtnetlink import Netlink
nl = Netlink()
seen = sorted(f"{dst}/{plen}" for (_fam, dst, plen) in nl.routes())
rm = RouteManager(nl)
rm.set_links(nl.links())
rm.set_endpoint("ep", "cali1", ["198.19.148.131/32"])
st = rm.resync()
print(json.dumps({"seen": seen, "added": st.added, "removed": st.removed}))
"""


def sh(*cmd: str, ns: str | None = None, check: bool = True, input: str | None = None) -> str:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    r = subprocess.run(full, capture_output=True, text=True, input=input, env=ENV, timeout=60)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(full)}: rc={r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def ns_name(host: str) -> str:
    return PREFIX + host


def apply(host: str, *desired: dict[str, Any]) -> list[dict[str, Any]]:
    out = sh(sys.executable, "-c", APPLY, ns=ns_name(host), input=json.dumps(list(desired)))
    return json.loads(out)


def changes(result: dict[str, Any]) -> int:
    return sum(v for k, v in result["counts"].items() if k != "errors")


def ipj(host: str, *args: str) -> Any:
    out = sh("ip", "-j", *args, ns=ns_name(host))
    return json.loads(out) if out.strip() else []


def ping(host: str, timeout: float = 5.0) -> bool:
    """Ping the other host's pod from this host's pod address, until it answers or
    `timeout` passes (the first packets may wait for ARP on the underlay)."""
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(["ip", "netns", "exec", ns_name(host), "ping", "-c", "1", "-W", "1",
                            "-I", POD[host], POD[OTHER[host]]], capture_output=True, timeout=10)
        if r.returncode == 0:
            return True
        if time.monotonic() > deadline:
            return False


def kernel_has_ipip() -> bool:
    ns = PREFIX + "probe"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        return subprocess.run(["ip", "-n", ns, "link", "add", "cnfvprobe", "type", "ipip"],
                              capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


HAS_IPIP = kernel_has_ipip()


def _cleanup() -> None:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for name in names:
        if name.startswith(PREFIX):
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def hosts():
    """Two hosts joined by a veth; each with its pod address on lo."""
    _cleanup()
    try:
        for h in "ab":
            subprocess.run(["ip", "netns", "add", ns_name(h)], check=True)
            sh("ip", "link", "set", "lo", "up", ns=ns_name(h))
        sh("ip", "link", "add", "eth0", "netns", ns_name("a"), "type", "veth",
           "peer", "name", "eth0", "netns", ns_name("b"))
        for h in "ab":
            sh("ip", "addr", "add", f"{UNDERLAY[h]}/24", "dev", "eth0", ns=ns_name(h))
            sh("ip", "link", "set", "eth0", "up", ns=ns_name(h))
            sh("ip", "addr", "add", f"{POD[h]}/32", "dev", "lo", ns=ns_name(h))
            if not HAS_IPIP:
                # the stand-in for the ipip module's fallback device (see the docstring)
                sh("ip", "tuntap", "add", "dev", "tunl0", "mode", "tun", ns=ns_name(h))
        yield
    finally:
        _cleanup()


def ipip(h: str) -> dict[str, Any]:
    return {
        "devices": [{"name": "tunl0", "kind": "ipip", "address": TUNNEL[h], "mtu": 1480}],
        "routes": [{"dst": BLOCK[OTHER[h]], "gateway": UNDERLAY[OTHER[h]], "dev": "tunl0", "onlink": True}],
    }


def vxlan(h: str, parent: str = "eth0") -> dict[str, Any]:
    o = OTHER[h]
    return {
        "devices": [{"name": "vxlan.calico", "kind": "vxlan", "address": TUNNEL[h], "mtu": 1450,
                     "vni": 4096, "port": 4789, "local": UNDERLAY[h], "parent": parent, "mac": MAC[h]}],
        "routes": [{"dst": BLOCK[o], "gateway": TUNNEL[o], "dev": "vxlan.calico", "onlink": True}],
        "neighbours": [{"dev": "vxlan.calico", "ip": TUNNEL[o], "mac": MAC[o]}],
        "fdb": [{"dev": "vxlan.calico", "mac": MAC[o], "dst": UNDERLAY[o]}],
    }


def routes(h: str, **match: Any) -> list[dict[str, Any]]:
    return [r for r in ipj(h, "route", "show", "table", "main")
            if all(r.get(k) == v for k, v in match.items())]


# ---------------------------------------------------------------- workload routes

def test_workload_route_reader_leaves_gateway_routes_alone(hosts):
    """Netlink.routes (what RouteManager reads as its own) skips protocol-80 routes
    with a gateway or next hops; RouteManager.resync therefore deletes the stale
    workload route beside them but never them."""
    ns = ns_name("a")
    sh("ip", "tuntap", "add", "dev", "cali1", "mode", "tun", ns=ns)
    sh("ip", "link", "set", "cali1", "up", ns=ns)
    sh("ip", "route", "add", "198.19.148.0/26", "via", UNDERLAY["b"], "dev", "eth0", "proto", "80", ns=ns)
    sh("ip", "route", "add", "198.19.148.64/26", "proto", "80", "nexthop", "via", UNDERLAY["b"], "dev", "eth0",
       "nexthop", "via", "198.18.147.3", "dev", "eth0", ns=ns)
    sh("ip", "route", "add", "198.19.148.130/32", "dev", "cali1", "proto", "80", "scope", "link", ns=ns)
    got = json.loads(sh(sys.executable, "-c", PROBE_ROUTES, ns=ns))
    assert got["seen"] == ["198.19.148.130/32"]
    assert (got["added"], got["removed"]) == (1, 1)
    dsts = {r["dst"] for r in routes("a", protocol="80")}
    assert dsts == {"198.19.148.0/26", "198.19.148.64/26", "198.19.148.131"}


# ---------------------------------------------------------------- overlay

@pytest.mark.skipif(not HAS_IPIP, reason="this kernel has no IP-in-IP (CONFIG_NET_IPIP)")
def test_ipip_carries_pod_traffic(hosts):
    assert not ping("a", timeout=1)     # no route to the other block: nothing flows
    for h in "ab":
        (res,) = apply(h, ipip(h))
        assert res["counts"]["errors"] == 0 and res["counts"]["routes_added"] == 1
    for h in "ab":
        (link,) = ipj(h, "-d", "link", "show", "tunl0")
        assert "UP" in link["flags"] and link["mtu"] == 1480
        addrs = [a["local"] for a in ipj(h, "addr", "show", "dev", "tunl0")[0]["addr_info"]]
        assert addrs == [TUNNEL[h]]
        (r,) = routes(h, dst=BLOCK[OTHER[h]])
        assert (r["gateway"], r["dev"], r["protocol"]) == (UNDERLAY[OTHER[h]], "tunl0", "80")
        assert "onlink" in r["flags"]
    assert ping("a") and ping("b")


def test_vxlan_carries_pod_traffic_and_reapply_changes_nothing(hosts):
    assert not ping("a", timeout=1)
    for h in "ab":
        (res,) = apply(h, vxlan(h))
        c = res["counts"]
        assert c["errors"] == 0, c
        assert (c["devices_added"], c["routes_added"], c["neighbours_added"], c["fdb_added"]) == (1, 1, 1, 1)
    for h in "ab":
        o = OTHER[h]
        (link,) = ipj(h, "-d", "link", "show", "vxlan.calico")
        data = link["linkinfo"]["info_data"]
        assert link["linkinfo"]["info_kind"] == "vxlan"
        assert (data["id"], data["port"], data["local"], data["learning"]) == (4096, 4789, UNDERLAY[h], False)
        assert data["link"] == "eth0"
        assert (link["address"], link["mtu"]) == (MAC[h], 1450) and "UP" in link["flags"]
        v4 = [a["local"] for a in ipj(h, "addr", "show", "dev", "vxlan.calico")[0]["addr_info"]
              if a["family"] == "inet"]
        assert v4 == [TUNNEL[h]]
        (r,) = routes(h, dst=BLOCK[o])
        assert (r["gateway"], r["dev"], r["protocol"]) == (TUNNEL[o], "vxlan.calico", "80")
        assert "onlink" in r["flags"]
        neigh = ipj(h, "neigh", "show", "dev", "vxlan.calico")
        assert [(n["dst"], n["lladdr"], n["state"]) for n in neigh] == [(TUNNEL[o], MAC[o], ["PERMANENT"])]
        fdb = [f for f in json.loads(sh("bridge", "-j", "fdb", "show", "dev", "vxlan.calico", ns=ns_name(h)))
               if f.get("dst")]
        assert [(f["mac"], f["dst"], f.get("state")) for f in fdb] == [(MAC[o], UNDERLAY[o], "permanent")]
    assert ping("a") and ping("b")
    # the same Desired again: in the same process nothing is read or written; in a
    # new one (a restart) the kernel is read and found right
    first, again = apply("a", vxlan("a"), vxlan("a"))
    assert first["dumps"] == 1 and changes(first) == 0 and first["counts"]["errors"] == 0
    assert again["dumps"] == 0 and changes(again) == 0 and again["counts"]["errors"] == 0


def test_switching_from_ipip_to_vxlan_leaves_no_ipip_behind(hosts):
    for h in "ab":
        (res,) = apply(h, ipip(h))
        assert res["counts"]["routes_added"] == 1
        assert routes(h, dev="tunl0")
    for h in "ab":
        (res,) = apply(h, vxlan(h))
        c = res["counts"]
        assert c["errors"] == 0 and c["devices_removed"] == 1 and c["routes_changed"] == 1, c
        assert routes(h, dev="tunl0") == []
        (link,) = ipj(h, "link", "show", "tunl0")
        assert "UP" not in link["flags"]
        assert ipj(h, "addr", "show", "dev", "tunl0")[0]["addr_info"] == []
        (r,) = routes(h, dst=BLOCK[OTHER[h]])
        assert r["dev"] == "vxlan.calico"
    assert ping("a") and ping("b")


def test_empty_desired_removes_only_what_the_overlay_made(hosts):
    ns = ns_name("a")
    # not the overlay's: an unrelated device, a workload route (protocol 80, no
    # gateway), a static route with a gateway
    sh("ip", "tuntap", "add", "dev", "cnfvkeep0", "mode", "tun", ns=ns)
    sh("ip", "link", "set", "cnfvkeep0", "up", ns=ns)
    sh("ip", "route", "add", "198.19.148.5/32", "dev", "cnfvkeep0", "proto", "80", "scope", "link", ns=ns)
    sh("ip", "route", "add", "198.19.148.128/26", "via", UNDERLAY["b"], "dev", "eth0", "proto", "static", ns=ns)
    # a stale overlay route of an earlier run (protocol 80, gateway): ours
    sh("ip", "route", "add", "198.19.149.0/26", "via", UNDERLAY["b"], "dev", "eth0", "proto", "80", ns=ns)
    both = {k: ipip("a").get(k, []) + vxlan("a").get(k, []) for k in ("devices", "routes", "neighbours", "fdb")}
    both["routes"] = vxlan("a")["routes"] + [
        {"dst": "198.19.150.0/26", "gateway": UNDERLAY["b"], "dev": "tunl0", "onlink": True},
        {"dst": "198.19.151.0/26", "gateway": UNDERLAY["b"], "dev": "eth0", "onlink": False}]
    (made,) = apply("a", both)
    assert made["counts"]["errors"] == 0 and made["counts"]["routes_removed"] == 1, made
    assert {r["dst"] for r in routes("a", protocol="80") if r.get("gateway")} == {
        BLOCK["b"], "198.19.150.0/26", "198.19.151.0/26"}
    (emptied,) = apply("a", {})
    c = emptied["counts"]
    assert c["errors"] == 0 and c["devices_removed"] == 2 and c["routes_removed"] == 3, c
    assert [r for r in routes("a", protocol="80") if r.get("gateway")] == []
    names = {link["ifname"] for link in ipj("a", "link", "show")}
    assert "vxlan.calico" not in names and "cnfvkeep0" in names
    assert "UP" not in ipj("a", "link", "show", "tunl0")[0]["flags"]
    assert routes("a", dst="198.19.148.5", protocol="80", dev="cnfvkeep0")
    assert routes("a", dst="198.19.148.128/26", protocol="static", gateway=UNDERLAY["b"])


def test_own_block_blackholes_are_ours_and_the_workload_reader_leaves_them(hosts):
    """With no BIRD (backend vxlan), this node's own blocks are blackholed by the
    overlay: an address of the block with no workload is dropped here. The
    blackhole is protocol 80 without a gateway, like a workload route, yet the
    workload route reader does not take it (and so never deletes it), and the
    overlay removes it when it is no longer desired."""
    ns = ns_name("a")
    want = dict(vxlan("a"), blackholes=[BLOCK["a"]])
    (made,) = apply("a", want)
    assert made["counts"]["errors"] == 0 and made["counts"]["routes_added"] == 2, made
    holes = [r for r in ipj("a", "route", "show", "proto", "80") if r.get("type") == "blackhole"]
    assert [r["dst"] for r in holes] == [BLOCK["a"]]
    probe = json.loads(sh(sys.executable, "-c", PROBE_ROUTES, ns=ns))
    assert BLOCK["a"] not in probe["seen"] and probe["removed"] == 0, probe
    assert [r for r in ipj("a", "route", "show", "proto", "80") if r.get("type") == "blackhole"]
    (again,) = apply("a", want)
    assert changes(again) == 0, again
    (gone,) = apply("a", vxlan("a"))
    assert gone["counts"]["routes_removed"] == 1, gone
    assert not [r for r in ipj("a", "route", "show", "proto", "80") if r.get("type") == "blackhole"]


def test_a_missing_parent_does_not_stop_the_rest(hosts):
    broken = {k: ipip("a").get(k, []) + vxlan("a", parent="cnfvnosuch0").get(k, [])
              for k in ("devices", "routes", "neighbours", "fdb")}
    broken["routes"].append({"dst": "198.19.151.0/26", "gateway": UNDERLAY["b"], "dev": "eth0", "onlink": False})
    res, again = apply("a", broken, broken)
    c = res["counts"]
    assert c["errors"] >= 1 and c["devices_added"] + c["devices_changed"] == 1, c
    assert c["routes_added"] == 2, c
    (r,) = routes("a", dev="tunl0")
    assert (r["dst"], r["gateway"]) == (BLOCK["b"], UNDERLAY["b"])
    assert routes("a", dst="198.19.151.0/26", dev="eth0", protocol="80")
    assert "vxlan.calico" not in {link["ifname"] for link in ipj("a", "link", "show")}
    # after an error the next apply reads the kernel again, and finds the rest right
    assert again["dumps"] == 1 and changes(again) == 0 and again["counts"]["errors"] >= 1


def test_changed_vxlan_parameters_and_remotes_converge(hosts):
    apply("a", vxlan("a"))
    moved = vxlan("a")
    moved["devices"][0]["vni"] = 4097
    # the remote node got a new MAC and a new underlay address
    moved["neighbours"][0]["mac"] = "66:cb:00:00:00:09"
    moved["fdb"][0] = {"dev": "vxlan.calico", "mac": "66:cb:00:00:00:09", "dst": "198.18.147.9"}
    (res,) = apply("a", moved)
    c = res["counts"]
    # a new device: the old one's neighbours and FDB entries went with it
    assert c["errors"] == 0 and c["devices_changed"] == 1 and c["devices_added"] == 0, c
    (link,) = ipj("a", "-d", "link", "show", "vxlan.calico")
    assert link["linkinfo"]["info_data"]["id"] == 4097
    # same device, remote changed: the neighbour and FDB entry are rewritten in place
    moved["neighbours"][0]["mac"] = MAC["b"]
    moved["fdb"][0] = {"dev": "vxlan.calico", "mac": MAC["b"], "dst": UNDERLAY["b"]}
    (res,) = apply("a", moved)
    c = res["counts"]
    assert (c["errors"], c["devices_changed"], c["neighbours_changed"], c["fdb_added"], c["fdb_removed"]) == (
        0, 0, 1, 1, 1), c
    neigh = ipj("a", "neigh", "show", "dev", "vxlan.calico")
    assert [(n["dst"], n["lladdr"]) for n in neigh] == [(TUNNEL["b"], MAC["b"])]
    fdb = [(f["mac"], f["dst"]) for f in json.loads(sh("bridge", "-j", "fdb", "show", "dev", "vxlan.calico",
                                                      ns=ns_name("a"))) if f.get("dst")]
    assert fdb == [(MAC["b"], UNDERLAY["b"])]
    # the remote's underlay address changes, its MAC stays: one FDB entry changed
    moved["fdb"][0]["dst"] = "198.18.147.9"
    (res,) = apply("a", moved)
    assert (res["counts"]["fdb_changed"], res["counts"]["fdb_added"], res["counts"]["fdb_removed"]) == (1, 0, 0)


def test_bad_entries_are_skipped_and_the_rest_applied(hosts):
    d = vxlan("a")
    d["routes"] += [{"dst": "198.19.152.0/26", "gateway": "not-an-ip", "dev": "vxlan.calico", "onlink": True},
                    {"dst": "198.19.152.1/26", "gateway": TUNNEL["b"], "dev": "vxlan.calico", "onlink": True},
                    {"dst": "198.19.153.0/26", "gateway": TUNNEL["b"], "dev": "eth0; reboot", "onlink": True}]
    d["neighbours"].append({"dev": "vxlan.calico", "ip": "198.19.147.70", "mac": "not-a-mac"})
    d["fdb"].append({"dev": "eth0", "mac": "66:cb:00:00:00:07", "dst": UNDERLAY["b"]})
    d["devices"].append({"name": "cnfvevil0", "kind": "vxlan", "address": None, "mtu": 1450,
                         "vni": 7, "port": 4789, "parent": "eth0"})
    (res,) = apply("a", d)
    c = res["counts"]
    assert c["errors"] == 6, c
    assert (c["devices_added"], c["routes_added"], c["neighbours_added"], c["fdb_added"]) == (1, 1, 1, 1), c
    assert {r["dst"] for r in routes("a", protocol="80")} == {BLOCK["b"]}
    assert "cnfvevil0" not in {link["ifname"] for link in ipj("a", "link", "show")}
    assert ping("a", timeout=1) is False      # host b has no overlay yet
    apply("b", vxlan("b"))
    assert ping("a")

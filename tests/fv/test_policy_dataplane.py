"""FV: PolicyDataplane against the real kernel, with real traffic between network namespaces.

A host namespace with four workload namespaces wired as Calico's CNI plugin wires
them, plus an "external" namespace behind a host interface (see netns_util).  The
dataplane writes ``table inet calico`` inside the host namespace (``ip netns exec
cnfv-pol-host nft -f -``); TCP connections and pings show what it enforces.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Iterator

import pytest

from calico_net.agent.felix.nft import NftRunner
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane
from netns_util import EXT_NET, EXT_NS, HOST_EXT_IF, HOST_NS, PolicyTopology, sh

pytestmark = pytest.mark.root

NODE = "fv-pol-node"
# Per-target probe timeout, seconds: long enough that a starved machine cannot make
# an allowed connection look denied. Targets of a round are probed in parallel.
PROBE_TIMEOUT = 2.0
ALL_PAIRS = {(a, b) for a in ("w1", "w2", "w3", "w4") for b in ("w1", "w2", "w3", "w4") if a != b}
HOST_IP = f"{EXT_NET}.1"
EXT_IP = f"{EXT_NET}.2"


@pytest.fixture(scope="module")
def topo() -> Iterator[PolicyTopology]:
    t = PolicyTopology()
    try:
        t.build()
        yield t
    finally:
        t.teardown()


@pytest.fixture
def dp(topo: PolicyTopology) -> Iterator[PolicyDataplane]:
    d = PolicyDataplane(NODE, nft=NftRunner(netns=HOST_NS))
    yield d
    sh("nft", "delete", "table", "inet", "calico", ns=HOST_NS, check=False)
    sh("conntrack", "-F", ns=HOST_NS)


def wep_doc(w, labels: dict[str, str] | None = None, profiles: list[str] | None = None,
            ports: list[dict[str, Any]] | None = None, namespace: str = "fv") -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": w.name, "namespace": namespace, "labels": {"name": w.name, **(labels or {})}},
        "spec": {"node": NODE, "orchestrator": "cni", "workload": w.name, "endpoint": "eth0",
                 "interfaceName": w.iface, "ipNetworks": [f"{w.ip}/32"],
                 "profiles": list(profiles or []), "ports": list(ports or [])},
    }


def put_wep(dp: PolicyDataplane, w, namespace: str = "fv", **kw: Any) -> None:
    dp.update("WorkloadEndpoint", w.name, namespace, wep_doc(w, namespace=namespace, **kw))


def profile_doc(name: str, ingress=(), egress=()) -> dict[str, Any]:
    return {"kind": "Profile", "metadata": {"name": name},
            "spec": {"ingress": list(ingress), "egress": list(egress)}}


def gnp_doc(name: str, selector: str, ingress=(), egress=(), types=None, order=None) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "ingress": list(ingress), "egress": list(egress)}
    if types:
        spec["types"] = types
    if order is not None:
        spec["order"] = order
    return {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": spec}


ALLOW = [{"action": "Allow"}]


def probe_round(topo: PolicyTopology, rounds: list[tuple[str, list[tuple[str, str, int]]]]) -> list[dict[str, Any]]:
    """One probe per (netns, [(label, ip, port)]), all at once; port 0 = ping. TCP
    results are the source address the server saw, or False."""
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(topo.tool), "probe",
                               str(PROBE_TIMEOUT), json.dumps([list(t) for t in targets])],
                              stdout=subprocess.PIPE, text=True)
             for ns, targets in rounds]
    out = []
    for (ns, _), p in zip(rounds, procs):
        text, _ = p.communicate(timeout=60)
        assert p.returncode == 0, f"probe from {ns} failed"
        out.append(json.loads(text))
    return out


def reach(topo: PolicyTopology, *ports: int) -> dict[int, set[tuple[str, str]]]:
    """For each port (0 = ping): every (src, dst) workload pair that connects, all
    pairs probed at once. In the same round the host probes every workload on the
    same ports (host -> workload is always allowed, as in Calico, and passes the
    placeholder as an established reply): if any of those fails the round proves
    nothing and the test fails, so a missing pair is a deny by the dataplane, never
    a server that is down or a dataplane that drops everything."""
    rounds = [(src.ns, [(f"{dst.name}/{port}", dst.ip, port) for dst in topo.workloads if dst is not src
                        for port in ports]) for src in topo.workloads]
    rounds.append((HOST_NS, [(f"{dst.name}/{port}", dst.ip, port) for dst in topo.workloads for port in ports]))
    *results, control = probe_round(topo, rounds)
    assert all(control.values()), f"host -> workloads failed, a deny would prove nothing: {control}"
    got: dict[int, set[tuple[str, str]]] = {port: set() for port in ports}
    for src, res in zip(topo.workloads, results):
        for label, ok in res.items():
            if ok:
                dst, port = label.split("/")
                got[int(port)].add((src.name, dst))
    return got


def tcp_matrix(topo: PolicyTopology, port: int = 8080) -> set[tuple[str, str]]:
    return reach(topo, port)[port]


def tcp_and_ping(topo: PolicyTopology) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    r = reach(topo, 8080, 0)
    return r[8080], r[0]


def test_no_policy_no_profile_denies(topo, dp):
    for w in topo.workloads:
        put_wep(dp, w)
    st = dp.apply()
    assert st.full and dp.endpoint_count() == 4
    assert tcp_and_ping(topo) == (set(), set())


def test_profile_allowing_all_connects_everyone(topo, dp):
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    for w in topo.workloads:
        put_wep(dp, w, profiles=["allow-all"])
    dp.apply()
    assert tcp_and_ping(topo) == (ALL_PAIRS, ALL_PAIRS)


@pytest.mark.parametrize("split", [False, True], ids=["one-transaction", "maps-over-netlink"])
def test_placeholder_table_drops_workload_traffic_until_the_full_load(topo, dp, monkeypatch, split):
    # split: the verdict maps' elements (and the fingerprint, and the selector
    # sets' addresses) follow the table in a netlink batch (as at 10,000
    # endpoints; here forced for 4): between the two, the real chains are loaded
    # but no interface is in a map yet, and still nothing may connect. The policy
    # allows ingress only from the addresses of a selector set: if that set were
    # left empty, nothing would connect after either.
    between = []
    if split:
        monkeypatch.setattr(type(dp.writer), "SPLIT_MAP_MIN", 1)
        real_fill = dp.writer._fill_split

        def fill(maps, batch):
            between.append((sorted(maps), *tcp_and_ping(topo)))
            return real_fill(maps, batch)

        monkeypatch.setattr(dp.writer, "_fill_split", fill)
    sh("nft", "delete", "table", "inet", "calico", ns=HOST_NS, check=False)
    assert not dp.table_exists()
    dp.load_placeholder()
    assert dp.table_exists()
    assert tcp_and_ping(topo) == (set(), set())
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    dp.update("GlobalNetworkPolicy", "from-peers", None, gnp_doc(
        "from-peers", "all()", ingress=[{"action": "Allow", "source": {"selector": "has(peer)"}}]))
    for w in topo.workloads:
        put_wep(dp, w, profiles=["allow-all"], labels={"peer": "yes"})
    st = dp.apply()
    assert st.full and not st.adopted           # the placeholder is replaced, not adopted
    assert tcp_matrix(topo) == ALL_PAIRS
    assert dp.writer.check(dp.runner.read_counts()) == []   # nothing of the placeholder left
    if split:
        [(names, tcp, ping)] = between
        assert tcp == ping == set()
        assert names[:3] == ["cali-meta", "cali-wl-from", "cali-wl-to"]
        assert len(names) == 4 and names[3].startswith("s4_")
    else:
        assert between == []
    # the next apply is an ordinary one: a new label is one element change
    put_wep(dp, topo.workloads[0], profiles=["allow-all"], labels={"peer": "yes", "x": "y"})
    st = dp.apply()
    assert not st.full and tcp_matrix(topo) == ALL_PAIRS


def test_unknown_workload_interface_is_dropped(topo, dp):
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    for w in topo.workloads[:3]:
        put_wep(dp, w, profiles=["allow-all"])
    dp.apply()
    got = tcp_matrix(topo)
    assert got == {p for p in ALL_PAIRS if "w4" not in p}


def _frontend_backend(topo, dp, w2_role="frontend"):
    dp.update("Profile", "egress-only", None, profile_doc("egress-only", (), ALLOW))
    roles = {"w1": "frontend", "w2": w2_role, "w3": "backend", "w4": "backend"}
    for w in topo.workloads:
        put_wep(dp, w, labels={"role": roles[w.name]}, profiles=["egress-only"])


def test_gnp_allows_only_tcp_8080_from_frontends_and_follows_labels(topo, dp):
    _frontend_backend(topo, dp)
    dp.update("GlobalNetworkPolicy", "backend-in", None, gnp_doc(
        "backend-in", "role == 'backend'",
        ingress=[{"action": "Allow", "protocol": "TCP",
                  "source": {"selector": "role == 'frontend'"}, "destination": {"ports": [8080]}}]))
    dp.apply()
    want = {("w1", "w3"), ("w1", "w4"), ("w2", "w3"), ("w2", "w4")}
    r = reach(topo, 8080, 9090, 0)
    assert (r[8080], r[9090], r[0]) == (want, set(), set())

    # w2 becomes a backend: it leaves the source selector and gains the policy
    _frontend_backend(topo, dp, w2_role="backend")
    st = dp.apply()
    assert not st.full
    assert tcp_matrix(topo) == {("w1", "w2"), ("w1", "w3"), ("w1", "w4")}

    # and back
    _frontend_backend(topo, dp, w2_role="frontend")
    dp.apply()
    assert tcp_matrix(topo) == want

    # deleting the policy reverts to the profile alone (no ingress at all)
    lib_calls = dp.runner.lib_calls
    dp.update("GlobalNetworkPolicy", "backend-in", None, None)
    st = dp.apply()
    assert not st.full and not st.netlink
    assert tcp_matrix(topo) == set()
    assert dp.policy_count() == 0
    # that incremental transaction went through libnftables, inside the host namespace
    assert dp.runner.lib_calls == lib_calls + 1


def test_same_host_traffic_is_checked_both_ways(topo, dp):
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    for w in topo.workloads:
        put_wep(dp, w, profiles=["allow-all"])
    # w1's egress denies w2, although w2's ingress (profile) allows everything
    dp.update("GlobalNetworkPolicy", "w1-out", None, gnp_doc(
        "w1-out", "name == 'w1'", types=["Egress"],
        egress=[{"action": "Deny", "destination": {"selector": "name == 'w2'"}},
                {"action": "Allow"}]))
    # w4's ingress denies w3, although w3's egress allows everything
    dp.update("GlobalNetworkPolicy", "w4-in", None, gnp_doc(
        "w4-in", "name == 'w4'",
        ingress=[{"action": "Deny", "source": {"selector": "name == 'w3'"}}, {"action": "Allow"}]))
    dp.apply()
    assert tcp_matrix(topo) == ALL_PAIRS - {("w1", "w2"), ("w3", "w4")}


def test_namespaced_not_selector_stays_in_the_policy_namespace(topo, dp):
    # A NetworkPolicy in "fv" allowing ingress to w4 from `notSelector: name == 'w3'`:
    # as in Calico that is "endpoints of fv except w3", so w2 connects (the paired
    # allow to the same server), w3 does not, and w1 - in another namespace - does not
    # either (the notSelector must not let in everything outside fv).
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    w1, w2, w3, w4 = topo.workloads
    put_wep(dp, w1, namespace="other", profiles=["allow-all"])
    for w in (w2, w3, w4):
        put_wep(dp, w, profiles=["allow-all"])
    dp.update("NetworkPolicy", "not-w3", "fv", {
        "kind": "NetworkPolicy", "metadata": {"name": "not-w3", "namespace": "fv"},
        "spec": {"selector": "name == 'w4'", "types": ["Ingress"],
                 "ingress": [{"action": "Allow", "source": {"notSelector": "name == 'w3'"}}]}})
    dp.apply()
    assert tcp_matrix(topo) == ALL_PAIRS - {("w1", "w4"), ("w3", "w4")}


def test_pass_skips_to_profiles_and_order(topo, dp):
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    dp.update("Profile", "deny-all", None, profile_doc("deny-all", [{"action": "Deny"}], ALLOW))
    for w in topo.workloads:
        put_wep(dp, w, profiles=["allow-all"] if w.name != "w4" else ["deny-all"])
    # order 1: Pass traffic from w1 (→ profiles decide); order 2: deny everything else
    dp.update("GlobalNetworkPolicy", "a-pass", None, gnp_doc(
        "a-pass", "name in {'w3', 'w4'}", order=1,
        ingress=[{"action": "Pass", "source": {"selector": "name == 'w1'"}}]))
    dp.update("GlobalNetworkPolicy", "b-deny", None, gnp_doc(
        "b-deny", "name in {'w3', 'w4'}", order=2, ingress=[{"action": "Deny"}]))
    dp.apply()
    got = tcp_matrix(topo)
    # into w3: only w1 (passed to allow-all profile); into w4: nobody (deny-all profile)
    assert {p for p in got if p[1] in ("w3", "w4")} == {("w1", "w3")}
    assert {p for p in got if p[1] in ("w1", "w2")} == {
        ("w2", "w1"), ("w3", "w1"), ("w4", "w1"), ("w1", "w2"), ("w3", "w2"), ("w4", "w2")}


def test_named_port_and_network_set(topo, dp):
    dp.update("Profile", "egress-only", None, profile_doc("egress-only", (), ALLOW))
    http = [{"name": "http", "protocol": "TCP", "port": 8080}]
    for w in topo.workloads:
        put_wep(dp, w, profiles=["egress-only"], ports=http if w.name == "w3" else None)
    # w3 allows its named port "http" from a GlobalNetworkSet holding w1's address only
    dp.update("GlobalNetworkSet", "trusted", None, {
        "kind": "GlobalNetworkSet", "metadata": {"name": "trusted", "labels": {"trust": "yes"}},
        "spec": {"nets": ["198.19.0.1/32", "198.18.250.0/24"]}})
    dp.update("GlobalNetworkPolicy", "w3-http", None, gnp_doc(
        "w3-http", "name == 'w3'",
        ingress=[{"action": "Allow", "protocol": "TCP", "source": {"selector": "trust == 'yes'"},
                  "destination": {"ports": ["http"]}}]))
    dp.apply()
    r = reach(topo, 8080, 9090)
    assert (r[8080], r[9090]) == ({("w1", "w3")}, set())


def test_workload_to_host_default_action(topo, dp):
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    w1 = topo.by_name("w1")
    put_wep(dp, w1, profiles=["allow-all"])
    dp.apply()
    # default (Drop): workload → host is dropped even though egress allows it; in the
    # same round the external namespace reaches the same host server (it is up), and
    # host → workload is always allowed
    got, control, back = probe_round(topo, [(w1.ns, [("h", HOST_IP, 8080)]), (EXT_NS, [("h", HOST_IP, 8080)]),
                                            (HOST_NS, [("w", w1.ip, 8080)])])
    assert (got, control) == ({"h": False}, {"h": EXT_IP})
    assert back["w"]
    dp.set_settings(FelixSettings(default_endpoint_to_host_action="Accept"))
    dp.apply()
    assert topo.probe(w1.ns, [("h", HOST_IP, 8080)], timeout=PROBE_TIMEOUT)["h"]


def test_host_endpoint_deny_all_keeps_failsafe_ssh(topo, dp):
    assert topo.probe(EXT_NS, [("ssh", HOST_IP, 22), ("web", HOST_IP, 8080)], timeout=PROBE_TIMEOUT) == {
        "ssh": EXT_IP, "web": EXT_IP}
    dp.update("HostEndpoint", "host-ext", None, {
        "kind": "HostEndpoint", "metadata": {"name": "host-ext", "labels": {"hep": "ext"}},
        "spec": {"node": NODE, "interfaceName": HOST_EXT_IF, "expectedIPs": [HOST_IP]}})
    dp.update("GlobalNetworkPolicy", "deny-host", None, gnp_doc(
        "deny-host", "hep == 'ext'", types=["Ingress", "Egress"],
        ingress=[{"action": "Deny"}], egress=[{"action": "Deny"}]))
    dp.apply()
    # "web" and "ping" denied while "ssh" (the same server process, same address) answers
    # the same probe; and the host's own outbound traffic through the interface is
    # denied too, while in the same round the external server answers locally (it is
    # up: nothing but the host endpoint policy stands between them).
    got, out, local = probe_round(topo, [
        (EXT_NS, [("ssh", HOST_IP, 22), ("web", HOST_IP, 8080), ("ping", HOST_IP, 0)]),
        (HOST_NS, [("out", EXT_IP, 8080)]), (EXT_NS, [("local", EXT_IP, 8080)])])
    assert got == {"ssh": EXT_IP, "web": False, "ping": False}
    assert (out, local) == ({"out": False}, {"local": EXT_IP})


def test_nat_outgoing_masquerades_pool_traffic(topo, dp):
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    w1 = topo.by_name("w1")
    put_wep(dp, w1, profiles=["allow-all"])
    dp.update("IPPool", "pool", None, {"kind": "IPPool", "metadata": {"name": "pool"},
                                       "spec": {"cidr": "198.19.0.0/16", "natOutgoing": False}})
    dp.apply()
    # the external namespace has no route back to the pool: without NAT, no reply;
    # in the same round the host reaches the same external server
    got, control = probe_round(topo, [(w1.ns, [("ext", EXT_IP, 8080)]), (HOST_NS, [("ext", EXT_IP, 8080)])])
    assert (got, control) == ({"ext": False}, {"ext": HOST_IP})
    dp.update("IPPool", "pool", None, {"kind": "IPPool", "metadata": {"name": "pool"},
                                       "spec": {"cidr": "198.19.0.0/16", "natOutgoing": True}})
    dp.apply()
    table = sh("nft", "list", "table", "inet", "calico", ns=HOST_NS)
    assert "ip saddr @cali-masq4 ip daddr != @cali-pools4 masquerade" in table
    assert "198.19.0.0/16" in table
    # the external side sees the host's address
    assert topo.probe(w1.ns, [("ext", EXT_IP, 8080)], timeout=PROBE_TIMEOUT) == {"ext": HOST_IP}
    # traffic inside the pool is not masqueraded
    w2 = topo.by_name("w2")
    put_wep(dp, w2, profiles=["allow-all"])
    dp.apply()
    assert topo.probe(w1.ns, [("w2", w2.ip, 8080)], timeout=PROBE_TIMEOUT) == {"w2": w1.ip}


def test_flushed_table_is_repaired_by_refresh(topo, dp):
    dp.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
    for w in topo.workloads[:2]:
        put_wep(dp, w, profiles=["allow-all"])
    dp.update("GlobalNetworkPolicy", "p", None, gnp_doc(
        "p", "name == 'w2'", ingress=[{"action": "Deny", "source": {"selector": "name == 'w1'"}}]))
    dp.apply()
    assert dp.refresh() is False
    assert tcp_matrix(topo) == {("w2", "w1")}
    sh("nft", "flush", "table", "inet", "calico", ns=HOST_NS)
    assert dp.refresh() is True
    assert dp.refresh() is False
    assert tcp_matrix(topo) == {("w2", "w1")}
    # a deleted element is drift too
    sh("nft", "flush", "map", "inet", "calico", "cali-wl-to", ns=HOST_NS)
    assert dp.refresh() is True


def test_restarted_dataplane_adopts_identical_table(topo, dp):
    def load(d: PolicyDataplane) -> None:
        d.update("Profile", "allow-all", None, profile_doc("allow-all", ALLOW, ALLOW))
        for w in topo.workloads:
            put_wep(d, w, profiles=["allow-all"], labels={"role": "x"})
        d.update("GlobalNetworkPolicy", "p", None, gnp_doc(
            "p", "role == 'x'", ingress=[{"action": "Allow", "source": {"selector": "role == 'x'"}}]))
    load(dp)
    assert dp.apply().full
    before = sh("nft", "-a", "list", "table", "inet", "calico", ns=HOST_NS)
    again = PolicyDataplane(NODE, nft=NftRunner(netns=HOST_NS))
    load(again)
    st = again.apply()
    assert st.adopted and not st.full
    # rule handles unchanged: nothing was rewritten
    assert sh("nft", "-a", "list", "table", "inet", "calico", ns=HOST_NS) == before
    # a restart with different content does rewrite
    third = PolicyDataplane(NODE, nft=NftRunner(netns=HOST_NS))
    load(third)
    third.update("GlobalNetworkPolicy", "p", None, None)
    assert third.apply().full

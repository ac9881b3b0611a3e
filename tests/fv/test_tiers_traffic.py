"""FV: tiers enforced by PolicyDataplane in the real kernel, and explained the same way.

A host namespace and three workload namespaces (names ``cnt1-*``, host-side
interfaces ``cnt1`` + 11 hex, the dataplane's interface prefix set to ``cnt1``),
wired as Calico's CNI plugin wires them (see netns_util). Three tiers:

* ``relaxed`` (order 50, defaultAction Pass): web denies db, anything else passes;
* ``security`` (order 100): db denies TCP 9090 and passes TCP 8080; web allows 8080
  from clients (9090 falls off the end of the tier: dropped);
* ``default`` (built in, no Tier document): db allows 8080 and 9090 from clients.

Every flow's fate is measured with a real TCP connect and compared with what
`explain` says for it; every round also has the host reach every server on every
port (host to workload is always allowed), so a refused connect is the policy's.
nftables' trace of two denied connects ends at the rule and chain line explain names.
Then ``security`` is moved after ``default`` (order 2000000) and the default tier's
Allow wins where the security tier's Deny did.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from calico_net.agent.felix.explain import Cluster, Packet, explain
from calico_net.agent.felix.explain_live import compare, trace_flow
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane
from netns_util import (TOOL_SOURCE, host_dataplane, iface_for, plumb_host, plumb_workload, serve_in, sh,
                        stop_servers)

pytestmark = pytest.mark.root

PREFIX = "cnt1-"
HOST_NS = PREFIX + "host"
NODE = "cnt1-node"
NS = "fv"
PORTS = (8080, 9090)
PROBE_TIMEOUT = 2.0
SETTINGS = FelixSettings(interface_prefixes=("cnt1",))
# name -> (address, role)
WORKLOADS = {"w1": ("198.19.71.1", "client"), "w2": ("198.19.71.2", "db"), "w3": ("198.19.71.3", "web")}


def _iface(ns: str) -> str:
    return "cnt1" + iface_for(ns)[4:]


def _cleanup() -> None:
    for line in sh("ip", "netns", "list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name == HOST_NS or (name.startswith(PREFIX + "w") and name[len(PREFIX) + 1:].isdigit()):
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture(scope="module")
def topo(tmp_path_factory) -> Iterator[Path]:
    tool = tmp_path_factory.mktemp("cnt1") / "tool.py"
    tool.write_text(TOOL_SOURCE)
    procs: list[subprocess.Popen[str]] = []
    _cleanup()
    try:
        # the host's own address: the control probes come from it
        plumb_host(HOST_NS, "cnt1-ext", "198.18.71.1/24")
        for name, (ip, _role) in WORKLOADS.items():
            ns, iface = PREFIX + name, _iface(PREFIX + name)
            plumb_workload(HOST_NS, ns, iface, ip)
            procs.append(serve_in(ns, tool, PORTS))
        yield tool
    finally:
        stop_servers(procs)
        _cleanup()


@pytest.fixture
def dp(topo: Path) -> Iterator[PolicyDataplane]:
    with host_dataplane(NODE, SETTINGS, HOST_NS) as d:
        yield d


def _wep(name: str) -> dict[str, Any]:
    ip, role = WORKLOADS[name]
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": NS, "labels": {"role": role}},
            "spec": {"node": NODE, "orchestrator": "cni", "workload": name, "endpoint": "eth0",
                     "interfaceName": _iface(PREFIX + name), "ipNetworks": [f"{ip}/32"],
                     "profiles": ["open"]}}


def _tier(name: str, order: float, action: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"order": order}
    if action:
        spec["defaultAction"] = action
    return {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": name}, "spec": spec}


def _gnp(name: str, tier: str | None, selector: str, ingress: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": selector, "types": ["Ingress"], "ingress": ingress}
    if tier:
        spec["tier"] = tier
    return {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
            "metadata": {"name": name}, "spec": spec}


def _tcp(action: str, port: int | None = None, source: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": action, "protocol": "TCP"}
    if port is not None:
        rule["destination"] = {"ports": [port]}
    if source is not None:
        rule["source"] = {"selector": source}
    return rule


CLIENT = "role == 'client'"
DOCS = [
    {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "open"},
     "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}},
    _tier("relaxed", 50, "Pass"),
    _tier("security", 100),
    _gnp("relaxed-web", "relaxed", "role == 'web'", [_tcp("Deny", source="role == 'db'")]),
    _gnp("security-db", "security", "role == 'db'", [_tcp("Deny", 9090), _tcp("Pass", 8080)]),
    _gnp("security-web", "security", "role == 'web'", [_tcp("Allow", 8080, CLIENT)]),
    _gnp("default-db", None, "role == 'db'", [_tcp("Allow", 8080, CLIENT), _tcp("Allow", 9090, CLIENT)]),
]
FLOWS = [(s, d, p) for s in WORKLOADS for d in WORKLOADS if s != d for p in PORTS]


def _feed(dp: PolicyDataplane, docs: list[dict[str, Any]]) -> None:
    for d in docs:
        dp.update(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"), d)
    dp.apply()


def _measure(tool: Path) -> dict[tuple[str, str, int], bool]:
    """Every flow's TCP connect, all at once, with the host reaching every server on
    every port in the same round (else the round proves nothing: the test fails)."""
    rounds = [(PREFIX + s, [[f"{d}/{p}", WORKLOADS[d][0], p] for src, d, p in FLOWS if src == s])
              for s in WORKLOADS]
    rounds.append((HOST_NS, [[f"{d}/{p}", ip, p] for d, (ip, _) in WORKLOADS.items() for p in PORTS]))
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(tool), "probe",
                               str(PROBE_TIMEOUT), json.dumps(t)], stdout=subprocess.PIPE, text=True)
             for ns, t in rounds]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        results.append(json.loads(out))
    *per_src, control = results
    assert all(control.values()), f"host -> servers failed, a refused connect proves nothing: {control}"
    got = {}
    for s, res in zip(WORKLOADS, per_src):
        for label, ok in res.items():
            d, p = label.split("/")
            got[(s, d, int(p))] = bool(ok)
    return got


def _probe(tool: Path, ns: str, ip: str, port: int) -> bool:
    out = sh(sys.executable, str(tool), "probe", str(PROBE_TIMEOUT), json.dumps([["x", ip, port]]), ns=ns)
    return bool(json.loads(out)["x"])


def _explained(docs: list[dict[str, Any]]) -> dict[tuple[str, str, int], tuple[bool, str]]:
    cl = Cluster([*docs, *(_wep(w) for w in WORKLOADS)], settings=SETTINGS)
    members = cl.members()
    out = {}
    for s, d, p in FLOWS:
        r = explain(cl, members[("WorkloadEndpoint", NS, s)], members[("WorkloadEndpoint", NS, d)],
                    Packet(WORKLOADS[s][0], WORKLOADS[d][0], 6, p))
        out[(s, d, p)] = (r["verdict"] == "Allow", r["decidedBy"])
    return out


EXPECTED = {
    ("w1", "w2", 9090): False,   # security's Deny beats default's Allow
    ("w1", "w2", 8080): True,    # security passes, default allows
    ("w3", "w2", 8080): False,   # security passes, default's policy does not match: end of tier
    ("w3", "w2", 9090): False,
    ("w1", "w3", 8080): True,    # relaxed ends in Pass, security allows
    ("w1", "w3", 9090): False,   # relaxed passes, security's policy does not match: end of tier
    ("w2", "w3", 8080): False,   # relaxed's Deny
    ("w2", "w3", 9090): False,
    ("w2", "w1", 8080): True,    # no tier applies to w1: its profile
    ("w2", "w1", 9090): True,
    ("w3", "w1", 8080): True,
    ("w3", "w1", 9090): True,
}


def test_tiers_decide_in_order_and_explain_agrees(topo, dp):
    _feed(dp, [*DOCS, *(_wep(w) for w in WORKLOADS)])
    predicted = _explained(DOCS)
    assert {k: v for k, (v, _) in predicted.items()} == EXPECTED
    why = {k: by for k, (_, by) in predicted.items()}
    assert "security-db rule 0 (tier security)" in why[("w1", "w2", 9090)]
    assert "default-db rule 0" in why[("w1", "w2", 8080)]
    assert "end of tier default" in why[("w3", "w2", 8080)]
    assert "end of tier security" in why[("w1", "w3", 9090)]
    assert "security-web rule 0 (tier security)" in why[("w1", "w3", 8080)]
    assert "relaxed-web rule 0 (tier relaxed)" in why[("w2", "w3", 8080)]
    assert _measure(topo) == EXPECTED

    # nftables' trace of a real connect ends where explain says: a tier's Deny rule,
    # and the end-of-tier drop in the endpoint chain
    cl = Cluster([*DOCS, *(_wep(w) for w in WORKLOADS)], settings=SETTINGS)
    m = cl.members()
    for s, d, p in (("w1", "w2", 9090), ("w1", "w3", 9090)):
        pkt = Packet(WORKLOADS[s][0], WORKLOADS[d][0], 6, p)
        r = explain(cl, m[("WorkloadEndpoint", NS, s)], m[("WorkloadEndpoint", NS, d)], pkt)
        hits = trace_flow(pkt, trigger=lambda: _probe(topo, PREFIX + s, WORKLOADS[d][0], p),
                          wait=10, prefix=["ip", "netns", "exec", HOST_NS])
        got = compare(r, hits, ["ip", "netns", "exec", HOST_NS])
        assert got["traced"] and got["agrees"], (s, d, p, r["decidedBy"], got)

    # the security tier after the default one: the default tier's Allow decides first
    moved = _tier("security", 2_000_000)
    _feed(dp, [moved])
    docs2 = [moved if d["metadata"]["name"] == "security" else d for d in DOCS]
    predicted2 = {k: v for k, (v, _) in _explained(docs2).items()}
    assert predicted2 == {**EXPECTED, ("w1", "w2", 9090): True}
    assert _measure(topo) == predicted2


def test_end_of_tier_pass_and_deny(topo, dp):
    """A tier whose policy selects the endpoint but matches nothing: Deny drops, Pass
    lets the profile decide; the same flow to the other server is the allowed twin."""
    tier = _tier("edge", 10, "Pass")
    docs = [DOCS[0], tier, _gnp("edge-db", "edge", "role == 'db'", [_tcp("Allow", 7070)])]
    _feed(dp, [*docs, *(_wep(w) for w in WORKLOADS)])
    want = {k: True for k in FLOWS}
    assert {k: v for k, (v, _) in _explained(docs).items()} == want
    assert _measure(topo) == want
    tier = _tier("edge", 10, "Deny")
    docs[1] = tier
    _feed(dp, [tier])
    want = {k: d != "w2" for k in FLOWS for (_, d, _p) in [k]}
    got = _explained(docs)
    assert {k: v for k, (v, _) in got.items()} == want
    assert "end of tier edge" in got[("w1", "w2", 8080)][1]
    assert _measure(topo) == want


def test_the_agent_follows_tiers_from_etcd(clean, fvlib):
    """The real agent (tests/fv/conftest.py harness: etcd, calico-node in a netns):
    a Tier and its policies from etcd decide before the default tier, and moving the
    Tier after it changes the verdict. The host reaches the server on both ports in
    every round (a refused connect is the policy's)."""
    L, env = fvlib, clean
    w1, w2 = env.workloads[0], env.workloads[1]
    tier_doc = _tier("security", 100)
    env.ds.apply_all([DOCS[0], tier_doc,
                      _gnp("sec", "security", "role == 'db'", [_tcp("Deny", 9090), _tcp("Pass")]),
                      _gnp("dflt", None, "role == 'db'", [{"action": "Allow"}])])
    env.ds.apply_all([L.wep(w1, {"role": "client"}, ["open"]), L.wep(w2, {"role": "db"}, ["open"])])

    def fates():
        got = {}
        for ns in (w1.ns, L.HOST_NS):
            out = sh(sys.executable, str(L.FVTOOL), "probe", str(PROBE_TIMEOUT),
                     json.dumps([[str(p), w2.ip, p] for p in PORTS]), ns=ns)
            got[ns] = {int(k): bool(v) for k, v in json.loads(out).items()}
        return got

    host = {8080: True, 9090: True}
    L.wait_for(lambda: fates() == {w1.ns: {8080: True, 9090: False}, L.HOST_NS: host}, 60,
               "the security tier's Deny before the default tier's Allow", env.agent)
    env.ds.apply_all([_tier("security", 2_000_000)])
    L.wait_for(lambda: fates() == {w1.ns: host, L.HOST_NS: host}, 60,
               "the default tier's Allow first once security is ordered after it", env.agent)

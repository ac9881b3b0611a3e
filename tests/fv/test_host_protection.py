"""Whole-agent FV for host protection: preDNAT, doNotTrack, applyOnForward, the
all-interfaces host endpoint and failsafe entries limited to a network.

The agent FV topology (tests/fv/conftest.py) plus two outside networks, each a
namespace behind its own host interface:

    cnfv-ag-<pid>-hpa  eth0 198.19.A.2/24 ══ veth ══ ens-a 198.19.A.1/24 ─┐
    cnfv-ag-<pid>-hpb  eth0 198.19.B.2/24 ══ veth ══ ens-b 198.19.B.1/24 ─┤ host netns
                                                                         (calico-node)

Every denied probe is paired with an allowed probe to the same server in the same
round, so a server that is down can never look like a deny.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator

import pytest

import test_agent_policy as ap
from test_agent_policy import _bind_helpers  # noqa: F401  (autouse: binds ap's helpers)

pytestmark = pytest.mark.root


@dataclass
class Outside:
    name: str
    ns: str
    iface: str        # the host's interface towards it
    host_ip: str      # the host's address on that interface
    ip: str           # the namespace's address
    net: str


def _outside(L, name: str, third: int) -> Outside:
    o = Outside(name, L.PREFIX + f"hp{name}", f"ens-{name}", f"198.19.{third}.1", f"198.19.{third}.2",
                f"198.19.{third}.0/24")
    L.sh("ip", "netns", "add", o.ns)
    L.sh("ip", "link", "set", "lo", "up", ns=o.ns)
    L.sh("ip", "link", "add", o.iface, "type", "veth", "peer", "name", "eth0", "netns", o.ns, ns=L.HOST_NS)
    L.sh("ip", "addr", "add", f"{o.host_ip}/24", "dev", o.iface, ns=L.HOST_NS)
    L.sh("ip", "link", "set", o.iface, "up", ns=L.HOST_NS)
    L.sh("ip", "addr", "add", f"{o.ip}/24", "dev", "eth0", ns=o.ns)
    L.sh("ip", "link", "set", "eth0", "up", ns=o.ns)
    L.sh("ip", "route", "add", "default", "via", o.host_ip, ns=o.ns)
    return o


@pytest.fixture(scope="module")
def outside(fv, fvlib) -> Iterator[tuple[Outside, Outside]]:
    L = fvlib
    made: list[Outside] = []
    servers: list[subprocess.Popen] = []
    try:
        base = 100 + L.RUN % 50
        a = _outside(L, "a", base)
        made.append(a)
        b = _outside(L, "b", base + 50)
        made.append(b)
        L.sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=L.HOST_NS)
        for o in (a, b):
            servers.append(serve(L, o.ns, 8080, 9090))
        yield a, b
    finally:
        for p in servers:
            p.kill()
            p.wait()
        for o in made:
            L.sh("ip", "netns", "del", o.ns, check=False)


def serve(L, ns: str, *ports: int) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(L.FVTOOL), "serve",
                             *map(str, ports)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def gnp(name: str, selector: str, **spec) -> dict:
    """test_agent_policy's gnp plus the host protection fields (preDNAT, ...)."""
    rules = {k: spec.pop(k) for k in ("ingress", "egress", "types", "order") if k in spec}
    d = ap.gnp(name, selector, **rules)
    d["spec"].update(spec)
    return d


def hep(L, name: str, iface: str, labels: dict[str, str]) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
            "metadata": {"name": f"{L.NODE}-{name}", "labels": labels},
            "spec": {"node": L.NODE, "interfaceName": iface}}


def probes(rounds: list[tuple[str | None, list[tuple[str, str, int]]]]) -> list[dict[str, bool]]:
    """ap.probe_round, where a namespace of None is the root namespace (the other
    end of the host's eth0)."""
    procs = []
    for ns, targets in rounds:
        argv = [sys.executable, str(ap.L.FVTOOL), "probe", str(ap.PROBE_TIMEOUT),
                json.dumps([list(t) for t in targets])]
        procs.append(subprocess.Popen((["ip", "netns", "exec", ns] if ns else []) + argv,
                                      stdout=subprocess.PIPE, text=True))
    return [json.loads(p.communicate(timeout=60)[0]) for p in procs]


def until(cond, what: str) -> None:
    ap.wait_for(cond, ap.CONVERGE, what, interval=0.2)


def test_apply_on_forward_filters_traffic_forwarded_through_the_host(clean, fvlib, outside):
    L = fvlib
    a, b = outside
    both = [("web", b.ip, 8080), ("other", b.ip, 9090)]
    until(lambda: probes([(a.ns, both)]) == [{"web": True, "other": True}], "a -> b forwarded, no policy")
    clean.ds.apply_all([
        hep(L, "ens-a", a.iface, {"hp": "a"}),
        # to the host and, with applyOnForward, through it: only 8080 from this side
        gnp("fwd", "hp == 'a'", types=["Ingress"], applyOnForward=True, ingress=[
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}]),
    ])
    # denied 9090 and allowed 8080 on the same server in the same probe
    until(lambda: probes([(a.ns, both)]) == [{"web": True, "other": False}], "only 8080 forwarded")
    # the other direction enters through ens-b (no host endpoint) and leaves through
    # ens-a, whose forward policy has no egress rules: not filtered
    back = [("web", a.ip, 8080), ("other", a.ip, 9090)]
    assert probes([(b.ns, back)]) == [{"web": True, "other": True}]
    clean.ds.delete("GlobalNetworkPolicy", "fwd")
    # without applyOnForward policy forwarded traffic is not the host endpoint's business
    until(lambda: probes([(a.ns, both)]) == [{"web": True, "other": True}], "forwarding open again")


def test_pre_dnat_deny_drops_a_source_before_dnat(clean, fvlib, outside):
    L = fvlib
    a, b = outside
    w1 = clean.workloads[0]
    ap.put_endpoints(clean, {}, {"w1": ["open"]})
    clean.ds.apply({"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "open"},
                    "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}})
    L.sh("nft", "-f", "-", ns=L.HOST_NS, input=(
        "table ip hpfv { chain pre { type nat hook prerouting priority dstnat; policy accept;\n"
        f"tcp dport 8888 dnat to {w1.ip}:8080; }}; }}\n"))
    try:
        def reach():
            got_a, got_b = probes([(a.ns, [("node-port", a.host_ip, 8888)]),
                                   (b.ns, [("node-port", b.host_ip, 8888)])])
            return got_a["node-port"], got_b["node-port"]

        until(lambda: reach() == (True, True), "both sources reach the workload through the DNAT")
        clean.ds.apply_all([
            hep(L, "ens-a", a.iface, {"hp": "edge"}), hep(L, "ens-b", b.iface, {"hp": "edge"}),
            gnp("no-a", "hp == 'edge'", types=["Ingress"], preDNAT=True, applyOnForward=True,
                ingress=[{"action": "Deny", "source": {"nets": [a.net]}}]),
        ])
        # a is dropped before DNAT; b, through the same kind of endpoint, still gets to
        # the same workload server in the same round
        until(lambda: reach() == (False, True), "a dropped before DNAT, b through")
        rules = L.nft_ruleset()
        assert "chain cali-mangle-prerouting" in rules and "priority mangle" in rules
    finally:
        L.sh("nft", "delete", "table", "ip", "hpfv", ns=L.HOST_NS, check=False)


def test_do_not_track_deny_and_untracked_allow_with_its_return_rule(clean, fvlib, outside):
    L = fvlib
    a, _b = outside
    server = serve(L, L.HOST_NS, 7000, 7001)
    host = [("allowed", a.host_ip, 7000), ("denied", a.host_ip, 7001)]
    try:
        until(lambda: probes([(a.ns, host)]) == [{"allowed": True, "denied": True}], "host ports open")
        L.sh("conntrack", "-F", ns=L.HOST_NS, check=False)
        clean.ds.apply_all([
            hep(L, "ens-a", a.iface, {"hp": "raw"}),
            gnp("untracked", "hp == 'raw'", types=["Ingress", "Egress"], doNotTrack=True, applyOnForward=True,
                ingress=[{"action": "Deny", "protocol": "TCP", "destination": {"ports": [7001]}},
                         {"action": "Allow", "protocol": "TCP", "destination": {"ports": [7000]}}],
                # the replies: untracked traffic has no connection to come back on
                egress=[{"action": "Allow", "protocol": "TCP", "source": {"ports": [7000]}}]),
        ])
        until(lambda: probes([(a.ns, host)]) == [{"allowed": True, "denied": False}],
              "7000 untracked both ways, 7001 dropped")
        L.sh("conntrack", "-F", ns=L.HOST_NS, check=False)
        assert probes([(a.ns, host)]) == [{"allowed": True, "denied": False}]
        entries = L.sh("conntrack", "-L", "-p", "tcp", ns=L.HOST_NS, check=False)
        # neither the denied nor the untracked allowed connection left an entry
        assert "dport=7001" not in entries and "dport=7000" not in entries, entries
        # without the return rule the replies are not allowed untracked: the host
        # endpoint (no normal policy) drops them
        clean.ds.apply(gnp("untracked", "hp == 'raw'", types=["Ingress"], doNotTrack=True, applyOnForward=True,
                           ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [7000]}}]))
        until(lambda: probes([(a.ns, host)]) == [{"allowed": False, "denied": False}],
              "no untracked return rule: no reply")
        clean.ds.delete("HostEndpoint", f"{L.NODE}-ens-a")
        until(lambda: probes([(a.ns, host)]) == [{"allowed": True, "denied": True}], "open again (server up)")
        # the control: tracked, the same probes do leave entries
        L.sh("conntrack", "-F", ns=L.HOST_NS, check=False)
        assert probes([(a.ns, host)]) == [{"allowed": True, "denied": True}]
        entries = L.sh("conntrack", "-L", "-p", "tcp", ns=L.HOST_NS, check=False)
        assert "dport=7001" in entries and "dport=7000" in entries, entries
    finally:
        server.kill()
        server.wait()


def test_all_interfaces_host_endpoint_and_failsafe_net(clean, fvlib, outside):
    L = fvlib
    a, b = outside
    server = serve(L, L.HOST_NS, 22, 2222, 8081)
    eth0 = f"{L.NET}.2"

    def reach() -> list[dict[str, bool]]:
        def t(ip):
            return [("ssh", ip, 22), ("limited", ip, 2222), ("other", ip, 8081)]
        return probes([(None, t(eth0)), (a.ns, t(a.host_ip)), (b.ns, t(b.host_ip))])

    try:
        until(lambda: all(all(r.values()) for r in reach()), "host ports open without a host endpoint")
        clean.ds.apply_all([
            {"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
             "metadata": {"name": "default"},
             "spec": {"failsafeInboundHostPorts": [
                 {"protocol": "TCP", "port": 22}, {"protocol": "TCP", "port": 2379},
                 {"protocol": "TCP", "port": 2222, "net": a.net}]}},
            hep(L, "all", "*", {"hp": "all"}),
            gnp("deny-host", "hp == 'all'", types=["Ingress"], ingress=[{"action": "Deny"}]),
        ])
        # every host interface: only ssh (failsafe) answers, and 2222 only from a's net
        want = [{"ssh": True, "limited": False, "other": False},
                {"ssh": True, "limited": True, "other": False},
                {"ssh": True, "limited": False, "other": False}]
        until(lambda: reach() == want, "deny-all on every interface, failsafes open")
        # workloads are not host interfaces: the host still reaches them
        w1 = clean.workloads[0]
        ap.put_endpoints(clean, {}, {"w1": ["open"]})
        clean.ds.apply({"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "open"},
                        "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}})
        until(lambda: ap.probe_round([(L.HOST_NS, [("w1", w1.ip, 8080)])]) == [{"w1": True}],
              "host -> workload with the all-interfaces endpoint")
        clean.ds.delete("HostEndpoint", f"{L.NODE}-all")
        until(lambda: all(all(r.values()) for r in reach()), "open again")
    finally:
        server.kill()
        server.wait()

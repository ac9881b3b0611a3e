"""FV: FelixConfiguration nftablesFilterDenyAction in the real kernel. With Reject a
denied TCP connect fails at once with ECONNREFUSED (nft ``reject``: ICMP port
unreachable) whether a Deny rule, the end of a tier or the missing profile decided;
with Drop it times out. Each round has an allowed connect to the same server.

Namespaces ``cnt9d-host`` and workloads ``cnt9d-w1`` (client) / ``cnt9d-w2`` (server
on 7070, 8080, 9090), wired as Calico's CNI plugin wires them (host side
``cnt9d`` + 10 hex, proxy ARP, /32 route; 169.254.1.1 gateway inside).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from calico_net.agent.felix.nft import NftRunner
from calico_net.agent.felix.policy import FelixSettings, PolicyDataplane
from netns_util import TOOL_SOURCE, plumb_host, plumb_workload, serve_in, sh, stop_servers

pytestmark = pytest.mark.root

PREFIX = "cnt9d-"
HOST_NS = PREFIX + "host"
NODE = "cnt9d-node"
NS = "fv"
PORTS = (7070, 8080, 9090)
WORKLOADS = {"w1": ("198.18.93.1", "client"), "w2": ("198.18.93.2", "db")}
SERVER_IP = WORKLOADS["w2"][0]
#: deny probes wait this long before calling it a timeout
PROBE_TIMEOUT = 3.0

# a connect that says how it failed: ok, refused, unreachable, timeout or the errno's name
KIND_PROBE = r"""
import errno, json, socket, sys, threading
def one(out, label, ip, port, timeout):
    try:
        with socket.create_connection((ip, port), timeout=timeout) as c:
            c.settimeout(timeout)
            out[label] = "ok" if c.recv(64).startswith(b"ok ") else "bad reply"
    except socket.timeout:
        out[label] = "timeout"
    except OSError as e:
        out[label] = {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable",
                      errno.ENETUNREACH: "unreachable"}.get(e.errno, errno.errorcode.get(e.errno, str(e)))
out = {}
ts = [threading.Thread(target=one, args=(out, *t, float(sys.argv[1]))) for t in json.loads(sys.argv[2])]
for t in ts: t.start()
for t in ts: t.join()
print(json.dumps(out))
"""


def _iface(name: str) -> str:
    return "cnt9d" + hashlib.sha1(name.encode()).hexdigest()[:10]


def _cleanup() -> None:
    for ns in [HOST_NS, *(PREFIX + w for w in WORKLOADS)]:
        for pid in sh("ip", "netns", "pids", ns, check=False).split():
            sh("kill", "-9", pid, check=False)
        sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="module")
def topo(tmp_path_factory) -> Iterator[Path]:
    d = tmp_path_factory.mktemp("cnt9d")
    (d / "tool.py").write_text(TOOL_SOURCE)
    (d / "kind.py").write_text(KIND_PROBE)
    server = None
    _cleanup()
    try:
        plumb_host(HOST_NS, "cnt9d-ext", "198.18.94.1/24")
        for name, (ip, _role) in WORKLOADS.items():
            ns, iface = PREFIX + name, _iface(name)
            plumb_workload(HOST_NS, ns, iface, ip)
        server = serve_in(PREFIX + "w2", d / "tool.py", PORTS)
        yield d
    finally:
        stop_servers([server])
        _cleanup()


def _wep(name: str) -> dict[str, Any]:
    ip, role = WORKLOADS[name]
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": name, "namespace": NS, "labels": {"role": role}},
            "spec": {"node": NODE, "orchestrator": "cni", "workload": name, "endpoint": "eth0",
                     "interfaceName": _iface(name), "ipNetworks": [f"{ip}/32"],
                     "profiles": ["open"] if name == "w1" else []}}


def _tcp(action: str, port: int) -> dict[str, Any]:
    return {"action": action, "protocol": "TCP", "destination": {"ports": [port]}}


DOCS = [
    {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": "open"},
     "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}},
    {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "sec"}, "spec": {"order": 10}},
    # 9090: the Deny rule; 7070: no rule of tier sec matches, its end decides; 8080
    # passes to the default tier, whose policy allows it
    {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "sec.db"},
     "spec": {"tier": "sec", "selector": "role == 'db'", "types": ["Ingress"],
              "ingress": [_tcp("Deny", 9090), _tcp("Pass", 8080)]}},
    {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy", "metadata": {"name": "db"},
     "spec": {"selector": "role == 'db'", "types": ["Ingress"], "ingress": [_tcp("Allow", 8080)]}},
]


def _kinds(d: Path, ports: tuple[int, ...] = PORTS) -> dict[int, str]:
    out = sh(sys.executable, str(d / "kind.py"), str(PROBE_TIMEOUT),
             json.dumps([[str(p), SERVER_IP, p] for p in ports]), ns=PREFIX + "w1")
    got = {int(p): k for p, k in json.loads(out).items()}
    assert got[8080] == "ok", f"the allowed twin failed, the round proves nothing: {got}"
    return got


def _run(d: Path, action: str, docs: list[dict[str, Any]]) -> PolicyDataplane:
    dp = PolicyDataplane(NODE, FelixSettings(interface_prefixes=("cnt9d",), filter_deny_action=action),
                         nft=NftRunner(netns=HOST_NS))
    for doc in [*docs, *(_wep(w) for w in WORKLOADS)]:
        dp.update(doc["kind"], doc["metadata"]["name"], doc["metadata"].get("namespace"), doc)
    dp.apply()
    return dp


@pytest.fixture
def clean_table(topo: Path) -> Iterator[None]:
    yield
    sh("nft", "delete", "table", "inet", "calico", ns=HOST_NS, check=False)


def test_reject_refuses_and_drop_times_out(topo, clean_table):
    dp = _run(topo, "Reject", DOCS)
    # the Deny rule and the end of tier sec
    assert _kinds(topo) == {7070: "refused", 8080: "ok", 9090: "refused"}
    # the same live table switched to Drop: both time out
    dp.set_settings(FelixSettings(interface_prefixes=("cnt9d",), filter_deny_action="Drop"))
    dp.apply()
    assert _kinds(topo) == {7070: "timeout", 8080: "ok", 9090: "timeout"}


def test_reject_when_no_profile_allows(topo, clean_table):
    # only tier sec's Pass of 8080 and the default tier's Allow of it: w2 has no
    # profile, so 7070 and 9090 end at the no-profile drop (with no tier's policy
    # for 7070 and 9090 to match, tier sec passes everything on)
    docs = [DOCS[0], {**DOCS[1], "spec": {"order": 10, "defaultAction": "Pass"}},
            {**DOCS[2], "spec": {**DOCS[2]["spec"], "ingress": [_tcp("Pass", 8080)]}}, DOCS[3]]
    dp = _run(topo, "Reject", docs)
    assert dp.rs.chains[dp._programs[("WorkloadEndpoint", NS, "w2")].ingress].rules[-1] == "reject"
    assert _kinds(topo) == {7070: "refused", 8080: "ok", 9090: "refused"}

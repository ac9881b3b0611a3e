"""Tamper repair by the real agent, heard from netlink rather than found by a refresh.

The agent here runs with both periodic refreshes off (`FELIX_ROUTEREFRESHINTERVAL`
and `FELIX_IPTABLESREFRESHINTERVAL` 0), so only the tamper watch (`felix.tamper`)
can put anything back: a flushed or deleted table inet calico, one deleted rule,
a deleted workload route. Each repair is waited for with a hang guard, never
timed (bench/bench_tamper.py measures); after it, an allowed pair still talks and
a denied one is still denied, beside a control probe of the same server. The
agent's own writes (policy edits, endpoints coming and going) must not be taken
for tampering: no tamper report, no repair.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.root

P = "/calico/resources/v3/projectcalico.org/"
# Long enough that a starved machine cannot make an allowed connection look denied.
PROBE_TIMEOUT = 2.0
# Hang guard for anything the agent has to do: not a speed check (bench/ measures).
CONVERGE = 60

L = None  # the FV helper module (tests/fv/conftest.py), bound below


@pytest.fixture(autouse=True, scope="module")
def _bind_helpers(fvlib):
    global L
    L = fvlib


@pytest.fixture(scope="module")
def no_refresh(fv):
    """The module's agent restarted with the periodic refreshes off."""
    fv.agent.stop()
    fv.agent.env.update({"FELIX_IPTABLESREFRESHINTERVAL": "0", "FELIX_ROUTEREFRESHINTERVAL": "0"})
    fv.agent.start()
    fv.agent.wait_ready()
    yield fv


@pytest.fixture
def env(no_refresh, clean):
    return clean


EGRESS_ALL = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
              "metadata": {"name": "egress-all"},
              "spec": {"order": 5, "selector": "all()", "types": ["Egress"], "egress": [{"action": "Allow"}]}}
DB_FROM_WEB = {"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
               "metadata": {"name": "db-from-web"},
               "spec": {"order": 10, "selector": "role == 'db'", "types": ["Ingress"],
                        "ingress": [{"action": "Allow", "protocol": "TCP",
                                     "source": {"selector": "role == 'web'"}, "destination": {"ports": [8080]}}]}}
ROLES = {"w1": {"role": "web"}, "w2": {"role": "web"}, "w3": {"role": "db"}, "w4": {"role": "other"}}


def _probe_round(rounds):
    """One probe per (netns, [(label, ip, port)]), all run at once."""
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, str(L.FVTOOL), "probe",
                               str(PROBE_TIMEOUT), json.dumps([list(t) for t in targets])],
                              stdout=subprocess.PIPE, text=True)
             for ns, targets in rounds]
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=60)
        out.append(json.loads(text))
    return out


def allowed_and_denied(env) -> bool:
    """w1 -> w3:8080 connects, w4 -> w3:8080 does not, and in the same round the
    host (always allowed, as in Calico) reaches w3's server: the deny counts."""
    w1, w3, w4 = env.workloads[0], env.workloads[2], env.workloads[3]
    a, d, control = _probe_round([(w1.ns, [("x", w3.ip, 8080)]), (w4.ns, [("x", w3.ip, 8080)]),
                                  (L.HOST_NS, [("x", w3.ip, 8080)])])
    return a["x"] and control["x"] and not d["x"]


def nft_table() -> str:
    return L.sh("nft", "list", "table", "inet", "calico", ns=L.HOST_NS, check=False)


def nft_objects(text: str) -> list[str]:
    """`nft list table` output as a sorted list of its sets, maps and chains: the
    listing order is creation order, which a full rewrite may change."""
    blocks, cur = [], []
    for line in text.splitlines():
        if re.match(r"^\t(set|map|chain) ", line) and cur:
            blocks.append("\n".join(cur))
            cur = []
        if line.strip() and line != "}":
            cur.append(line)
    blocks.append("\n".join(cur))
    return sorted(blocks)


def log_since(env, mark: int) -> str:
    return env.agent.log_path.read_text()[mark:]


def programmed(env):
    """Policy and endpoints in, routes there, the allowed pair talking: the state
    every test tampers with. Returns the table's objects and our routes."""
    env.ds.apply_all([EGRESS_ALL, DB_FROM_WEB] + [L.wep(w, ROLES[w.name]) for w in env.workloads])
    L.wait_for(lambda: all(w.ip in L.our_routes() for w in env.workloads), CONVERGE, "workload routes",
               env.agent)
    L.wait_for(lambda: allowed_and_denied(env), CONVERGE, "w1 -> w3 allowed, w4 -> w3 denied", env.agent)
    return nft_objects(nft_table()), L.our_routes()


def wait_table(env, want, what: str) -> None:
    L.wait_for(lambda: nft_objects(nft_table()) == want, CONVERGE, what, env.agent, interval=0.1)


@pytest.mark.parametrize("how", [("flush", "table"), ("delete", "table")])
def test_flushed_or_deleted_table_is_rewritten(env, how):
    want, _routes = programmed(env)
    before = env.agent.metric("felix_nft_repairs_total")
    L.sh("nft", *how, "inet", "calico", ns=L.HOST_NS)
    assert nft_objects(nft_table()) != want
    wait_table(env, want, f"table inet calico rewritten after `nft {' '.join(how)}`")
    assert env.agent.metric("felix_nft_repairs_total") >= before + 1
    assert allowed_and_denied(env)


def test_deleted_rule_is_put_back(env):
    want, _routes = programmed(env)
    # the rule of db-from-web that lets web in: without it, w1 -> w3 is dropped
    listing = L.sh("nft", "-a", "list", "table", "inet", "calico", ns=L.HOST_NS)
    chain, handle = None, None
    for line in listing.splitlines():
        m = re.match(r"^\tchain (\S+) \{", line)
        if m:
            chain = m.group(1)
        elif chain and chain.startswith("cali-pi-") and "dport 8080" in line and "# handle" in line:
            handle = line.rsplit("# handle", 1)[1].strip()
            break
    assert handle is not None, listing
    L.sh("nft", "delete", "rule", "inet", "calico", chain, "handle", handle, ns=L.HOST_NS)
    assert nft_objects(nft_table()) != want
    wait_table(env, want, f"the rule deleted from {chain} put back")
    assert allowed_and_denied(env)


def test_deleted_route_is_re_added(env):
    _want, routes = programmed(env)
    w1 = env.workloads[0]
    before = env.agent.metric("felix_route_repairs_total")
    L.sh("ip", "route", "del", f"{w1.ip}/32", ns=L.HOST_NS)
    assert w1.ip not in L.our_routes()
    L.wait_for(lambda: L.our_routes() == routes, CONVERGE, "the deleted route re-added", env.agent,
               interval=0.1)
    assert env.agent.metric("felix_route_repairs_total") >= before + 1
    assert allowed_and_denied(env)


def test_own_writes_are_not_taken_for_tampering(env):
    programmed(env)
    mark = len(env.agent.log_path.read_text())
    nft_before = env.agent.metric("felix_nft_repairs_total")
    routes_before = env.agent.metric("felix_route_repairs_total")
    w4 = env.workloads[3]
    # element writes (w4 relabelled), a chain rewrite (the policy edited), and a
    # route deleted and added again by the agent (w4's endpoint gone and back)
    env.ds.apply(L.wep(w4, {"role": "web"}))
    edited = json.loads(json.dumps(DB_FROM_WEB))
    edited["spec"]["ingress"][0]["destination"]["ports"] = [8080, 9090]
    env.ds.apply(edited)
    L.wait_for(lambda: "9090" in nft_table(), CONVERGE, "the edited policy written", env.agent)
    env.ds.client.delete(P + f"workloadendpoints/default/{w4.wep_name}")
    L.wait_for(lambda: w4.ip not in L.our_routes(), CONVERGE, "w4's route removed", env.agent)
    env.ds.apply(L.wep(w4, ROLES["w4"]))
    env.ds.apply(DB_FROM_WEB)
    L.wait_for(lambda: w4.ip in L.our_routes() and "9090" not in nft_table(), CONVERGE,
               "w4 back, the policy as before", env.agent)
    assert allowed_and_denied(env)
    # a foreign change after them all is reported: every event before it has been read
    L.sh("nft", "add", "chain", "inet", "calico", "cnfv-tamper-marker", ns=L.HOST_NS)
    L.wait_for(lambda: "cnfv-tamper-marker" not in nft_table(), CONVERGE, "the marker chain removed",
               env.agent)
    reports = [ln for ln in log_since(env, mark).splitlines()
               if "daemon: tamper" in ln or "felix.tamper:" in ln]
    assert len(reports) == 1 and "another process changed table inet calico" in reports[0], reports
    assert env.agent.metric("felix_nft_repairs_total") == nft_before + 1
    assert env.agent.metric("felix_route_repairs_total") == routes_before


FILTER_CHECK = r"""
import json, socket, subprocess, time
from calico_net.agent.felix.rtnetlink import Netlink, RouteOp
from calico_net.agent.felix.tamper import TamperWatcher
subprocess.run("ip link add cali0 type veth peer name x0 && ip link set cali0 up && ip link set x0 up",
               shell=True, check=True)
idx = socket.if_nametoindex("cali0")
nl = Netlink()
w = TamperWatcher(lambda t: None, frozenset({nl.port()}), None)
routes = [RouteOp("replace", (2, f"198.19.88.{i}", 32), idx) for i in range(1, 201)]
nl.write(routes)                                                     # our adds
nl.write([RouteOp("delete", r.route, idx) for r in routes[:100]])   # our deletes
subprocess.run("ip route add 198.19.89.1/32 dev cali0 proto 12 && ip route del 198.19.89.1/32 && "
               "ip route del 198.19.88.150/32 && ip link set cali0 down", shell=True, check=True)
w.route_sock.setblocking(False)
seen = []
while True:
    try:
        data = w.route_sock.recv(1 << 16)
    except BlockingIOError:
        break
    w._routes(data)
    seen.append(len(data))
print(json.dumps({"datagrams": len(seen), "routes": [list(r) for r in w._pending.routes]}))
"""


def test_route_socket_hears_only_foreign_deletes_of_our_routes():
    """The kernel-side filter: of 200 route adds and 100 deletes by the agent's
    socket, a foreign protocol-12 route, the kernel's deletes when a link goes down
    and one foreign delete of a protocol-80 route, only the last reaches the socket."""
    ns = f"cntamper-{os.getpid()}"
    L.sh("ip", "netns", "add", ns)
    try:
        out = json.loads(L.sh(sys.executable, "-c", FILTER_CHECK, ns=ns))
    finally:
        L.sh("ip", "netns", "del", ns, check=False)
    assert out == {"datagrams": 1, "routes": [[2, "198.19.88.150", 32]]}

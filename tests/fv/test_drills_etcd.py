"""Drills against a real etcd going away under the real agent (calico-node), confd and
BIRD, in network namespaces (topology and helpers: drill_util.py; the etcd is the
drills' own, never the session's).

* etcd frozen with SIGSTOP — a silently dead connection, not a closed socket — and,
  separately, every packet to it dropped by an nft rule in the host namespace (a table
  of the drill's own, deleted afterwards): the agent's probe and confd's watcher
  notice (readiness 503 "datastore lost", confd's status `datastore_connected`
  false), the dataplane stays exactly as it was (routes, the ruleset with its
  handles, BIRD's routes, bird.cfg), and after recovery both resync: a
  WorkloadEndpoint and a BGPPeer written right after etcd returns are applied, and
  readiness comes back.
* The agent started while etcd is down: it runs, is not ready, and is ready after
  the first snapshot once etcd is back.
* The agent SIGKILLed in its cold start (when table inet calico first exists) and
  started again: its ruleset is the one a clean start makes on the same data, no
  duplicate rule, no stale route.

Bounds (as the code states them): the agent's syncer probes etcd every 5 s while a
watch is open (`Syncer.probe_interval`), and a probe call gives up after the etcd
client's 10 s deadline (`EtcdConfig.timeout`); confd probes after 5 s without news
(`ConfdWatcher.probe_interval`) with the same deadline. So a frozen etcd is noticed
within about 15 s; the waits below are hang guards well above that, and the measured
times are printed, not asserted.
"""
from __future__ import annotations

import ipaddress
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import drill_util as du

pytestmark = pytest.mark.root

NOTICE_GUARD = 60      # hang guard for "the loss is noticed" (bound ~15 s)
RECOVER_GUARD = 90     # hang guard for "resynced after etcd is back"


class Drill:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.etcd = du.Etcd()
        self.agent = du.agent_proc(self.etcd, tmp)
        self.confd = du.confd_proc(self.etcd, tmp)
        self.bird = du.bird_proc(tmp)
        self.client = None
        self.ds = None
        self.ipam = None
        self.workloads: list[du.Workload] = []
        self.routed: list[du.Workload] = []   # those with a WorkloadEndpoint

    def logs(self) -> str:
        """The state when a wait timed out: readiness, confd's status, the logs."""
        return "\n".join([f"agent readiness now: {du.readiness()}", f"confd status now: {self.confd_status()}",
                          *(p.log_tail() for p in (self.agent, self.confd, self.bird))])

    def new_workload(self, name: str) -> du.Workload:
        """An IPAM address for `name` on the node, its namespace and veth (no WEP yet)."""
        v4, _ = self.ipam.auto_assign(f"k8s-pod-network.{name}", du.NODE)
        w = du.Workload(name, str(v4[0]))
        du.add_workload(w)
        self.workloads.append(w)
        return w

    def wait_agent_ready(self, guard: float = 60) -> None:
        du.wait_for(lambda: du.readiness()[0] == 200, guard, "agent ready", self.logs)

    def wait_confd_ready(self, guard: float = 60) -> None:
        du.wait_for(lambda: self.confd_status().get("ready") is True, guard,
                    "confd ready", self.logs)

    def confd_status(self) -> dict:
        return du.confd_status(self.tmp)


def _pool() -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "drl-pool"},
            "spec": {"cidr": du.POOL, "blockSize": 26, "ipipMode": "Never", "vxlanMode": "Never",
                     "natOutgoing": False}}


def _node() -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": du.NODE},
            "spec": {"bgp": {"ipv4Address": f"{du.HOST_IP}/24"}}}


def _peer(name: str, ip: str) -> dict:
    return {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer", "metadata": {"name": name},
            "spec": {"peerIP": ip, "asNumber": 64513}}


@pytest.fixture(scope="module")
def drill(tmp_path_factory) -> Iterator[Drill]:
    from calico_net.datastore import Datastore
    from calico_net.ipam import IPAM

    du.cleanup()
    d = None
    try:
        du.build_host()
        d = Drill(tmp_path_factory.mktemp("drills"))
        d.etcd.start()
        d.client = d.etcd.client()
        d.ds = Datastore(d.client)
        d.ipam = IPAM(d.client, d.ds)
        d.ds.create(_pool())
        d.ds.create(_node())
        for name in ("w1", "w2"):
            w = d.new_workload(name)
            d.ds.create(w.wep())
            d.routed.append(w)
        d.confd.start()
        du.wait_for((d.tmp / "bird.cfg").exists, 60, "confd writes bird.cfg", d.logs)
        d.bird.start()
        d.agent.start()
        d.wait_agent_ready()
        d.wait_confd_ready()
        du.wait_for(lambda: any(ln.startswith("blackhole 198.18.185.0/26") for ln in du.bird_routes()), 60,
                    "BIRD's blackhole for the node's block", d.logs)
        yield d
    finally:
        if d is not None:
            print(d.logs())
            for p in (d.agent, d.confd, d.bird):
                p.stop()
            if d.client is not None:
                d.client.close()
            d.etcd.destroy()
        du.cleanup()


def _route_of(w: du.Workload) -> bool:
    return any(ln.startswith(f"{w.ip} dev {w.iface} ") for ln in du.agent_routes())


def _cut_and_recover(d: Drill, cut, restore, label: str) -> None:
    """The common drill: cut etcd off (`cut`), see both notice, compare the dataplane,
    restore, write a WorkloadEndpoint and a BGPPeer at once, see both applied."""
    for w in d.routed:
        du.wait_for(lambda: _route_of(w), 60, f"route of {w.name}", d.logs)
    before = du.Dataplane.read(d.tmp)
    assert before.routes and "table inet calico" in before.nft and before.bird and before.bird_cfg
    resyncs_before = du.metric("felix_resyncs_total")
    extra = d.new_workload(f"x{label[:3]}")   # its WEP is written only after recovery
    peer_ip = "198.18.184.77" if label == "sigstop" else "198.18.184.78"

    t0 = time.monotonic()
    cut()
    try:
        code, text = du.wait_for(lambda: (lambda r: r if r[0] == 503 and "datastore lost" in r[1] else None)(
            du.readiness()), NOTICE_GUARD, "the agent's readiness says the datastore is lost", d.logs)
        t_agent = time.monotonic() - t0
        du.wait_for(lambda: d.confd_status().get("datastore_connected") is False, NOTICE_GUARD,
                    "confd's status says the datastore is lost", d.logs)
        t_confd = time.monotonic() - t0
        print(f"[{label}] agent noticed after {t_agent:.1f} s ({text.strip()}); "
              f"confd after {t_confd:.1f} s ({d.confd_status().get('datastore_reason')})")
        assert du.metric("felix_datastore_connected") == 0
        # Two refresh intervals (2 s each) pass while cut off: a refresh that
        # rewrote anything would change a handle. The agent must still be live.
        du.hold(4.5)
        during = du.Dataplane.read(d.tmp)
        assert d.agent.running() and d.confd.running() and d.bird.running()
    finally:
        restore()
    t1 = time.monotonic()
    # the changes are written the moment etcd answers again
    d.ds.create(extra.wep())
    d.routed.append(extra)
    d.ds.create(_peer(f"drl-{label}", peer_ip))
    assert during.routes == before.routes, "the agent's routes changed while etcd was cut off"
    assert during.nft == before.nft, "the ruleset changed while etcd was cut off"
    assert during.bird == before.bird, "BIRD's routes changed while etcd was cut off"
    assert during.bird_cfg == before.bird_cfg, "bird.cfg changed while etcd was cut off"

    du.wait_for(lambda: _route_of(extra), RECOVER_GUARD, f"the agent routes {extra.name} (written after recovery)",
                d.logs)
    du.wait_for(lambda: peer_ip in (d.tmp / "bird.cfg").read_text(), RECOVER_GUARD,
                "the BGPPeer written after recovery in bird.cfg", d.logs)
    d.wait_agent_ready(RECOVER_GUARD)
    t_ready = time.monotonic() - t1
    du.wait_for(lambda: d.confd_status().get("datastore_connected") is True, RECOVER_GUARD,
                "confd connected again", d.logs)
    t_confd_back = time.monotonic() - t1
    resyncs_after = du.metric("felix_resyncs_total")
    print(f"[{label}] after recovery: agent ready in {t_ready:.1f} s, confd connected in {t_confd_back:.1f} s, "
          f"agent resyncs {resyncs_before} -> {resyncs_after}")
    assert resyncs_after is not None and resyncs_before is not None and resyncs_after > resyncs_before
    after = du.Dataplane.read(d.tmp)
    assert set(before.routes) < set(after.routes)
    assert d.bird.running()


def test_etcd_frozen_with_sigstop(drill):
    _cut_and_recover(drill, drill.etcd.freeze, drill.etcd.thaw, "sigstop")


DROP_TABLE = "cnfv_drl_cut"


def test_etcd_cut_by_an_nft_drop_rule(drill):
    """Packets between the host namespace and etcd dropped both ways (a table of the
    drill's own in the host namespace; the agent's table inet calico is not touched)."""
    port = drill.etcd.port
    rules = (f"table inet {DROP_TABLE} {{\n"
             f"  chain out {{ type filter hook output priority -300; policy accept;\n"
             f"    ip daddr {du.ETCD_IP} tcp dport {port} drop\n  }}\n"
             f"  chain in {{ type filter hook input priority -300; policy accept;\n"
             f"    ip saddr {du.ETCD_IP} tcp sport {port} drop\n  }}\n}}\n")

    def cut() -> None:
        du.sh("nft", "-f", "-", ns=du.HOST_NS, input=rules)

    def restore() -> None:
        du.sh("nft", "delete", "table", "inet", DROP_TABLE, ns=du.HOST_NS, check=False)

    try:
        _cut_and_recover(drill, cut, restore, "nftdrop")
    finally:
        restore()
    assert DROP_TABLE not in du.sh("nft", "list", "tables", ns=du.HOST_NS)


def _snapshots_logged(d: Drill, since: int) -> int:
    """How many snapshots the agent's syncer took since log byte `since`."""
    return d.agent.log_path.read_text()[since:].count("syncer: datastore in sync (snapshot")


def test_agent_started_while_etcd_is_down(drill):
    d = drill
    for w in d.routed:
        du.wait_for(lambda: _route_of(w), 60, f"route of {w.name}", d.logs)
    d.agent.stop()
    before = du.Dataplane.read()
    d.etcd.stop()          # down: the port refuses connections
    try:
        mark = len(d.agent.log_path.read_text())
        d.agent.start()
        code, text = du.wait_for(lambda: (lambda r: r if r[0] == 503 else None)(du.readiness()),
                                 NOTICE_GUARD, "the agent's health answering, not ready", d.logs)
        assert "datastore lost" in text
        # The outage lasts a few of the syncer's back-off rounds (0.1 s doubling) and
        # gRPC's reconnect back-off (1 s growing by 1.6x): the return is then met by
        # a client that has been failing for a while, not by its first try.
        du.hold(4)
        code, text = du.readiness()
        assert code == 503 and "datastore lost" in text
        print(f"[down at start] readiness {code}: {text.strip()}")
        # nothing was read, so nothing may be removed: a restart without a datastore
        # leaves the dataplane as the last agent left it
        during = du.Dataplane.read()
        assert d.agent.running()
    finally:
        d.etcd.start()
    t0 = time.monotonic()
    assert during.routes == before.routes and during.nft == before.nft
    d.wait_agent_ready(RECOVER_GUARD)
    t_ready = time.monotonic() - t0
    snaps = _snapshots_logged(d, mark)
    print(f"[down at start] ready {t_ready:.1f} s after etcd's return, after {snaps} snapshot(s); "
          f"resyncs {du.metric('felix_resyncs_total')}")
    # "ready within one snapshot of etcd's return": the first snapshot it got made it ready
    assert snaps == 1, d.agent.log_tail()
    assert du.metric("felix_resyncs_total") == 0
    for w in d.routed:
        assert _route_of(w), f"{w.name} lost its route"
    d.wait_confd_ready(RECOVER_GUARD)


def _bulk(n_policies: int, n_remote: int) -> list[dict]:
    """Policies that each select a local workload and allow from a label group of
    remote endpoints, so the ruleset has many chains and sets to load."""
    docs: list[dict] = []
    net = ipaddress.ip_network("198.18.186.0/23")
    for i in range(n_remote):
        ip = net[i + 1]
        docs.append({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                     "metadata": {"name": f"drl-other-k8s-r{i}-eth0", "namespace": "default",
                                  "labels": {"projectcalico.org/namespace": "default",
                                             "projectcalico.org/orchestrator": "k8s", "role": f"r{i % 40}"}},
                     "spec": {"node": "drl-other", "orchestrator": "k8s", "workload": f"r{i}", "endpoint": "eth0",
                              "interfaceName": f"cali{i:011d}", "ipNetworks": [f"{ip}/32"], "profiles": []}})
    for i in range(n_policies):
        docs.append({"apiVersion": "projectcalico.org/v3", "kind": "GlobalNetworkPolicy",
                     "metadata": {"name": f"drl-gnp-{i}"},
                     "spec": {"order": i, "selector": "app in {'w1', 'w2', 'xsi', 'xnf'}",
                              "types": ["Ingress", "Egress"],
                              "ingress": [{"action": "Allow", "protocol": "TCP",
                                           "source": {"selector": f"role == 'r{i % 40}'"},
                                           "destination": {"ports": [1000 + i]}}],
                              "egress": [{"action": "Allow", "protocol": "UDP",
                                          "destination": {"nets": [f"198.19.{i % 250}.0/24"], "ports": [53]}}]}})
    return docs


def test_agent_sigkilled_in_cold_start_converges(drill):
    d = drill
    d.agent.stop()
    d.ds.create_all(_bulk(400, 400))
    gone = d.routed.pop(1)               # its endpoint is deleted while the agent is down
    d.ds.delete("WorkloadEndpoint", gone.wep()["metadata"]["name"], "default")

    # The reference: a clean cold start on this data.
    du.sh("nft", "delete", "table", "inet", "calico", ns=du.HOST_NS)
    d.agent.start()
    d.wait_agent_ready(RECOVER_GUARD)
    du.wait_for(lambda: not _route_of(gone), 60, f"{gone.name}'s route removed by a clean start", d.logs)
    ref_nft, ref_routes = du.ruleset(handles=False), du.agent_routes()
    # the reference is made by the same code, so it is checked on its own too
    assert du.placeholder_rules(ref_nft) == [], "a clean start left the placeholder's rules in its table"
    assert ref_nft.count("drl-gnp-") >= 400 or ref_nft.count("chain ") > 400, "the big ruleset is not loaded"
    d.agent.stop()

    # The drill: cold start again (no table), with the stale route a previous agent
    # left for the deleted endpoint, and SIGKILL as soon as the table exists.
    du.sh("nft", "delete", "table", "inet", "calico", ns=du.HOST_NS)
    du.sh("ip", "route", "add", f"{gone.ip}/32", "dev", gone.iface, "proto", "80", "scope", "link", ns=du.HOST_NS)
    d.agent.start()
    t0 = time.monotonic()
    du.wait_for(du.table_exists, 60, "table inet calico created by the starting agent", d.logs, interval=0.002)
    d.agent.kill()
    t_kill = time.monotonic() - t0
    at_kill_rules = du.ruleset(handles=False)
    print(f"[sigkill] killed {t_kill:.2f} s after start; the table then held {at_kill_rules.count(chr(10))} lines "
          f"(a clean start makes {ref_nft.count(chr(10))}); routes then: {len(du.agent_routes())}")
    assert at_kill_rules != ref_nft, "the kill came after the whole ruleset was in: no mid-start window was drilled"
    print(f"[sigkill] placeholder rules at the kill: {len(du.placeholder_rules(at_kill_rules))}")

    d.agent.start()
    d.wait_agent_ready(RECOVER_GUARD)
    du.wait_for(lambda: du.ruleset(handles=False) == ref_nft and du.agent_routes() == ref_routes, 60,
                "the restarted agent's ruleset and routes equal a clean start's", d.logs)
    # and they stay so (no duplicate rule added by a later refresh)
    nft = du.ruleset(handles=False)
    assert nft == ref_nft and du.agent_routes() == ref_routes
    assert du.placeholder_rules(nft) == []
    assert not _route_of(gone), "the stale route of a deleted endpoint is still there"
    lines = [ln.strip() for ln in nft.splitlines() if ln.strip() and not ln.strip().startswith(("chain", "}", "set", "map", "type", "flags", "elements", "policy", "table"))]
    print(f"[sigkill] converged: {len(lines)} rule lines, {len(ref_routes)} routes")

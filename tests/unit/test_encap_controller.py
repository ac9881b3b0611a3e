"""The overlay controller (calico_net.agent.encap.controller) with fake kernel, policy,
allocator and watcher; its wiring into the daemon; and the block affinity watcher
(calico_net.agent.encap.watch) against a real etcd.

Addresses: nodes in 198.19.175.0/26 and 198.19.175.64/26; pools in 198.19.176.0/22.
"""
from __future__ import annotations

import json
import queue
import subprocess
import sys
import time

import pytest

from calico_net.agent.config import Config
from calico_net.agent.encap import types as t
from calico_net.agent.encap.controller import EncapController
from calico_net.agent.encap.mtu import LinkFacts
from calico_net.agent.encap.watch import AffinityWatcher
from calico_net.datastore.store import RESOURCE_PREFIX as P

ME, B, C = "n1", "n2", "n3"
LINKS = [LinkFacts("eth0", 1500, True, ("198.19.175.1",))]


def node_spec(ip, **extra):
    spec = {"bgp": {"ipv4Address": ip}}
    spec.update(extra)
    return spec


NODES = {
    ME: node_spec("198.19.175.1/26", ipv4VXLANTunnelAddr="198.19.176.1", vxlanTunnelMACAddr="66:00:00:00:01:01"),
    B: node_spec("198.19.175.2/26", ipv4VXLANTunnelAddr="198.19.176.65", vxlanTunnelMACAddr="66:00:00:00:01:02"),
    C: node_spec("198.19.175.65/26", ipv4VXLANTunnelAddr="198.19.176.129", vxlanTunnelMACAddr="66:00:00:00:01:03"),
}
PLAIN = {"cidr": "198.19.176.0/22", "ipipMode": "Never", "vxlanMode": "Never"}
IPIP = dict(PLAIN, ipipMode="Always")
VXLAN = dict(PLAIN, vxlanMode="Always")
AFF = {ME: {"198.19.176.0/26"}, B: {"198.19.176.64/26"}, C: {"198.19.176.128/26"}}


class FakeKernel:
    def __init__(self):
        self.applied: list[t.Desired] = []
        self.fail = 0
        self.refuse = 0
        self.invalidated = 0

    def apply(self, want):
        if self.fail:
            self.fail -= 1
            raise OSError("netlink said no")
        self.applied.append(want)
        if self.refuse:
            self.refuse -= 1
            return {"routes": len(want.routes), "errors": 1}
        return {"routes": len(want.routes)}

    def invalidate(self):
        self.invalidated += 1


class FakeAllocator:
    def __init__(self):
        self.started = 0
        self.pokes = 0
        self.stopped = 0

    def start(self):
        self.started += 1

    def poke(self):
        self.pokes += 1

    def stop(self):
        self.stopped += 1


class FakeWatcher:
    def __init__(self, on_snapshot, on_update):
        self.on_snapshot, self.on_update = on_snapshot, on_update
        self.started = self.stopped = 0

    def start(self):
        self.started += 1

    def stop(self):
        self.stopped += 1


class FakePolicy:
    def __init__(self):
        self.encap = []

    def set_encap_hosts(self, ipip, vxlan, port):
        self.encap.append((ipip, vxlan, port))


class Harness:
    def __init__(self, tmp_path, env=None):
        env = {"FELIX_MTUFILEPATH": str(tmp_path / "mtu"), **(env or {})}
        self.mtu_path = tmp_path / "mtu"
        self.config = Config(ME, env=env, config_file=str(tmp_path / "none"))
        self.kernel = FakeKernel()
        self.kernels_made = 0
        self.watchers: list[FakeWatcher] = []
        self.alloc = FakeAllocator()
        self.policy = FakePolicy()
        self.events: queue.Queue = queue.Queue()
        self.links = list(LINKS)

        def kernel_factory():
            self.kernels_made += 1
            return self.kernel

        def watcher_factory(s, u):
            w = FakeWatcher(s, u)
            self.watchers.append(w)
            return w

        self.c = EncapController(ME, self.config, kernel_factory=kernel_factory,
                                 watcher_factory=watcher_factory, allocator=self.alloc,
                                 links_reader=lambda: list(self.links))
        self.c.attach(self.policy, self.events.put)

    def apply(self):
        self.c.before_policy()
        self.c.after_routes()

    def deliver(self):
        """What the daemon does with the watcher's events."""
        n = 0
        while not self.events.empty():
            self.c.on_event(self.events.get_nowait())
            n += 1
        return n

    def load(self, pool, nodes=NODES):
        self.c.resource("IPPool", "default", pool)
        for name, spec in nodes.items():
            self.c.resource("Node", name, spec)


def test_nothing_happens_without_an_encapsulated_pool(tmp_path):
    h = Harness(tmp_path)
    h.load(PLAIN, {n: node_spec(s["bgp"]["ipv4Address"]) for n, s in NODES.items()})
    h.apply()
    assert h.kernels_made == 0 and h.watchers == [] and h.alloc.started == 0
    assert h.policy.encap == []                       # the policy's default: no call
    assert h.mtu_path.read_text() == "1500\n"        # the underlay's MTU for workloads
    assert h.c.desired.devices == {} and h.c.desired.routes == set()


def test_no_pyroute2_and_no_thread_while_nothing_is_encapsulated(tmp_path):
    code = f"""
import sys, threading
from calico_net.agent.config import Config
from calico_net.agent.encap.controller import EncapController
cfg = Config("n1", env={{"FELIX_MTUFILEPATH": {str(tmp_path / "mtu")!r}}}, config_file="/nonexistent")
c = EncapController("n1", cfg, watcher_factory=lambda s, u: 1 / 0, allocator=None)
c.attach(None, lambda ev: None)
c.resource("IPPool", "p", {{"cidr": "198.19.176.0/22"}})
c.resource("Node", "n1", {{"bgp": {{"ipv4Address": "198.19.175.1/26"}}}})
c.before_policy(); c.after_routes()
assert "pyroute2" not in sys.modules, "pyroute2 imported"
assert threading.active_count() == 1, threading.enumerate()
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_encapsulated_pool_starts_watch_and_allocator_and_waits_for_affinities(tmp_path):
    h = Harness(tmp_path)
    h.load(VXLAN)
    assert h.alloc.started == 1          # started (its first pass) when the pool appeared
    h.apply()
    assert len(h.watchers) == 1 and h.watchers[0].started == 1
    assert h.kernel.applied == []        # not before the affinities are in
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    assert h.deliver() == 1
    h.apply()
    want = h.kernel.applied[-1]
    assert {r.dst for r in want.routes} == {"198.19.176.64/26", "198.19.176.128/26"}
    assert set(want.devices) == {"vxlan.calico"}
    assert h.policy.encap == [(None, frozenset({"198.19.175.1", "198.19.175.2", "198.19.175.65"}), 4789)]
    assert h.mtu_path.read_text() == "1450\n"


def test_dirty_tracking(tmp_path):
    h = Harness(tmp_path)
    h.load(IPIP)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    h.apply()
    computes, applies, calls = h.c.computes, len(h.kernel.applied), len(h.policy.encap)
    h.apply()                                              # nothing changed: nothing done
    assert (h.c.computes, len(h.kernel.applied)) == (computes, applies)
    assert h.c.resource("Node", B, dict(NODES[B])) is False  # the same again: not a change
    # a change that does not change the outcome: recomputed, nothing written
    h.c.resource("Node", B, dict(NODES[B], orchRefs=[{"orchestrator": "k8s"}]))
    h.apply()
    assert h.c.computes == computes + 1 and len(h.kernel.applied) == applies
    assert len(h.policy.encap) == calls                    # sets unchanged: not told again
    # a new block on a peer: recomputed and written
    h.watchers[0].on_update(C, "198.19.176.192/26", True)
    h.deliver()
    h.apply()
    assert len(h.kernel.applied) == applies + 1
    assert "198.19.176.192/26" in {r.dst for r in h.kernel.applied[-1].routes}
    assert len(h.policy.encap) == calls
    # a repeated event is no change
    assert h.c.on_event(("encap", "update", C, "198.19.176.192/26", True)) is False
    h.watchers[0].on_update(C, "198.19.176.192/26", False)
    h.deliver()
    h.apply()
    assert "198.19.176.192/26" not in {r.dst for r in h.kernel.applied[-1].routes}
    # a new node: the allowed IP-in-IP sources change, the policy is told once
    h.c.resource("Node", "n4", node_spec("198.19.175.66/26"))
    h.apply()
    assert h.policy.encap[-1][0] == frozenset({"198.19.175.1", "198.19.175.2", "198.19.175.65", "198.19.175.66"})
    assert len(h.policy.encap) == calls + 1


def test_allocator_poked_on_pools_and_this_node_only(tmp_path):
    h = Harness(tmp_path)
    h.load(IPIP)
    pokes = h.alloc.pokes
    h.c.resource("Node", B, dict(NODES[B], bgp={"ipv4Address": "198.19.175.3/26"}))
    assert h.alloc.pokes == pokes
    h.c.resource("Node", ME, dict(NODES[ME], bgp={"ipv4Address": "198.19.175.1/26", "asNumber": 65001}))
    assert h.alloc.pokes == pokes + 1
    h.c.resource("IPPool", "default", VXLAN)
    assert h.alloc.pokes == pokes + 2
    assert h.alloc.started == 1


def test_allocator_started_to_release_a_leftover_address(tmp_path):
    h = Harness(tmp_path)
    h.load(PLAIN, {ME: NODES[ME]})           # no encapsulated pool, but a VXLAN address held
    assert h.alloc.started == 1
    h2 = Harness(tmp_path)
    h2.load(PLAIN, {ME: node_spec("198.19.175.1/26")})
    assert h2.alloc.started == 0


def test_switching_modes_and_deleting_the_pool(tmp_path):
    h = Harness(tmp_path)
    h.load(IPIP)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    h.apply()
    assert {r.dev for r in h.kernel.applied[-1].routes} == {"tunl0"}
    h.c.resource("IPPool", "default", VXLAN)
    h.apply()
    assert {r.dev for r in h.kernel.applied[-1].routes} == {"vxlan.calico"}
    assert set(h.kernel.applied[-1].devices) == {"vxlan.calico"}
    assert h.policy.encap[-1][0] is None and h.policy.encap[-1][1]
    h.c.resource("IPPool", "default", None)
    h.apply()
    gone = h.kernel.applied[-1]
    assert gone.devices == {} and gone.routes == set() and gone.fdb == set() and gone.neighbours == set()
    assert h.policy.encap[-1] == (None, None, 4789)
    assert h.watchers[0].stopped == 0 and len(h.watchers) == 1   # kept, as are the pieces
    assert h.mtu_path.read_text() == "1500\n"
    n = len(h.kernel.applied)
    h.c.resource("Node", B, dict(NODES[B], bgp={"ipv4Address": "198.19.175.9/26"}))
    h.apply()
    assert len(h.kernel.applied) == n   # still nothing wanted: nothing written


def test_kernel_failure_propagates_and_is_retried(tmp_path):
    h = Harness(tmp_path)
    h.load(IPIP)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    h.kernel.fail = 1
    h.c.before_policy()
    with pytest.raises(OSError):
        h.c.after_routes()
    h.apply()                              # the retry: nothing changed, but the write is due
    assert len(h.kernel.applied) == 1 and len(h.kernel.applied[0].routes) == 2


def test_kernel_refusal_keeps_the_write_due(tmp_path):
    h = Harness(tmp_path)
    h.load(IPIP)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    h.kernel.refuse = 1
    h.c.before_policy()
    assert h.c.after_routes() is False
    h.c.before_policy()
    assert h.c.after_routes() is True and len(h.kernel.applied) == 2
    h.c.before_policy()
    assert h.c.after_routes() is True and len(h.kernel.applied) == 2


def test_link_events(tmp_path):
    h = Harness(tmp_path)
    h.load(IPIP)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    h.apply()
    n = len(h.kernel.applied)
    assert h.c.link_event("cali123", True, False) is False       # a workload's: not ours
    assert h.c.link_event("tunl0", True, False) is False         # ours, up: our own write's echo
    h.apply()
    assert len(h.kernel.applied) == n
    assert h.c.link_event("tunl0", False, True) is True          # ours, deleted: read back, rewrite
    h.apply()
    assert len(h.kernel.applied) == n + 1 and h.kernel.invalidated == 1
    h.links = [LinkFacts("eth0", 1400, True, ("198.19.175.1",))]
    assert h.c.link_event("eth0", True, False) is True           # the underlay: its MTU
    h.apply()
    assert h.kernel.applied[-1].devices["tunl0"].mtu == 1380 and h.mtu_path.read_text() == "1380\n"


def test_settings_are_live(tmp_path):
    h = Harness(tmp_path)
    h.load(VXLAN)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    h.apply()
    changed = h.config.set_felix_configuration("default", {"vxlanMTU": 1400, "vxlanVNI": 7, "vxlanPort": 8472})
    assert h.c.settings_changed(changed) is True
    h.apply()
    dev = h.kernel.applied[-1].devices["vxlan.calico"]
    assert (dev.mtu, dev.vni, dev.port) == (1400, 7, 8472)
    assert h.policy.encap[-1][2] == 8472 and h.mtu_path.read_text() == "1400\n"
    assert h.c.settings_changed(h.config.set_felix_configuration("default", {"vxlanMTU": 1400, "vxlanVNI": 7,
                                                                             "vxlanPort": 8472,
                                                                             "logSeverityScreen": "Debug"})) is False


def test_refresh_rereads_the_underlay_and_rewrites(tmp_path):
    h = Harness(tmp_path)
    h.load(IPIP)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    h.apply()
    n = len(h.kernel.applied)
    h.links = [LinkFacts("eth0", 9000, True, ("198.19.175.1",))]
    h.c.refresh()
    h.apply()
    assert len(h.kernel.applied) == n + 1 and h.kernel.applied[-1].devices["tunl0"].mtu == 8980
    assert h.mtu_path.read_text() == "8980\n"


# --- the daemon forwards ---------------------------------------------------------------


def test_daemon_forwards_and_an_overlay_failure_does_not_block_policy(tmp_path):
    from test_agent_daemon import FakePolicy as DaemonPolicy, FakeSettings, NullSyncer

    from calico_net.agent.daemon import Daemon
    from calico_net.agent.felix.rtnetlink import Link
    from calico_net.agent.syncer import Resource
    from fakes import FakeKernel as RouteKernel, FakeSysctls

    h = Harness(tmp_path)
    policy = DaemonPolicy()
    d = Daemon(ME, h.config, None, policy=policy, settings_cls=FakeSettings,
               route_backend=RouteKernel([Link(5, "cali1", True)]), sysctls=FakeSysctls(), watch_links=False,
               syncer_factory=NullSyncer, coalesce=0.001, encap=h.c)
    d.start()

    def res(kind, plural, name, spec, rev=1):
        doc = {"kind": kind, "metadata": {"name": name}, "spec": spec}
        return P + f"{plural}/{name}", Resource(kind, name, None, doc, rev)

    snap = dict([res("IPPool", "ippools", "default", IPIP)] +
                [res("Node", "nodes", n, s) for n, s in NODES.items()])
    d.on_snapshot(snap, 5)
    d.loop_once(max_wait=0.01)
    assert policy.applies == 1 and ("IPPool", "default", None, True) in policy.updates
    assert len(h.watchers) == 1 and h.alloc.started == 1
    # the watcher's snapshot comes through the daemon's queue (its thread would put it there)
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.kernel.fail = 1
    d.loop_once(max_wait=0.01)
    assert policy.applies == 2                     # policy went in all the same
    assert d.metrics.errors.value == 1 and d.retry_at is not None and h.kernel.applied == []
    d.retry_at = 0
    d.loop_once(max_wait=0.01)
    assert len(h.kernel.applied) == 1 and len(h.kernel.applied[0].routes) == 2
    assert policy.encap[-1][0] == frozenset({"198.19.175.1", "198.19.175.2", "198.19.175.65"})
    # a FelixConfiguration change reaches the overlay and the policy settings
    d.on_update(*res("FelixConfiguration", "felixconfigurations", "default",
                     {"ipipMTU": 1300, "allowIPIPPacketsFromWorkloads": True}))
    d.loop_once(max_wait=0.01)
    assert h.kernel.applied[-1].devices["tunl0"].mtu == 1300
    assert policy.settings[-1].allow_ipip_from_workloads is True
    # a remote WorkloadEndpoint with a borrowed address reaches the overlay by its key
    wep_key, wep_res = res("WorkloadEndpoint", "workloadendpoints/ns", "w1",
                           {"node": B, "ipNetworks": ["198.19.176.9/32"], "interfaceName": "cali1"})
    d.on_update(wep_key, wep_res)
    d.loop_once(max_wait=0.01)
    assert h.c.endpoints == {wep_key: (B, ("198.19.176.9",))}
    assert "198.19.176.9/32" in {r.dst for r in h.kernel.applied[-1].routes}
    d.on_update(wep_key, None)
    d.loop_once(max_wait=0.01)
    assert h.c.endpoints == {} and "198.19.176.9/32" not in {r.dst for r in h.kernel.applied[-1].routes}
    # a pool switched off: the overlay removes what it made
    d.on_update(*res("IPPool", "ippools", "default", PLAIN, rev=9))
    d.loop_once(max_wait=0.01)
    assert h.kernel.applied[-1].routes == set() and h.kernel.applied[-1].devices == {}
    d.stop()
    d.shutdown()
    assert h.watchers[0].stopped == 1 and h.alloc.stopped == 1


# --- the affinity watcher against etcd --------------------------------------------------


def _aff_key(node, cidr):
    return f"/calico/ipam/v2/host/{node}/ipv4/block/{cidr.replace('/', '-')}"


def _wait(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_affinity_watcher_snapshot_and_updates(etcd_client):
    confirmed = json.dumps({"state": "confirmed", "deleted": False})
    etcd_client.put(_aff_key(B, "198.19.176.64/26"), confirmed)
    etcd_client.put(_aff_key(B, "198.19.176.0/26"), json.dumps({"state": "pendingDeletion"}))
    etcd_client.put(_aff_key(C, "198.19.176.128/26"), json.dumps({"state": "pending"}))
    etcd_client.put(_aff_key(C, "198.19.176.192/26"), "not json")
    etcd_client.put("/calico/ipam/v2/host/n5/ipv4/block/garbage", confirmed)
    snaps, updates = [], []
    w = AffinityWatcher(etcd_client, on_snapshot=snaps.append,
                        on_update=lambda n, c, p: updates.append((n, c, p)), probe_interval=0.5)
    w.start()
    try:
        assert _wait(lambda: snaps)
        assert snaps[0] == {B: {"198.19.176.64/26"}, C: {"198.19.176.128/26"}}
        assert set(w.bad) == {_aff_key(C, "198.19.176.192/26"), "/calico/ipam/v2/host/n5/ipv4/block/garbage"}
        etcd_client.put(_aff_key(C, "198.19.177.0/26"), confirmed)                 # a claim
        assert _wait(lambda: (C, "198.19.177.0/26", True) in updates)
        etcd_client.put(_aff_key(B, "198.19.176.64/26"), json.dumps({"state": "pendingDeletion"}))
        assert _wait(lambda: (B, "198.19.176.64/26", False) in updates)
        etcd_client.put(_aff_key(C, "198.19.176.192/26"), confirmed)               # bad turned good
        assert _wait(lambda: (C, "198.19.176.192/26", True) in updates)
        etcd_client.put(_aff_key(C, "198.19.176.192/26"), "[]")                    # good turned bad
        assert _wait(lambda: (C, "198.19.176.192/26", False) in updates)
        etcd_client.delete(_aff_key(C, "198.19.177.0/26"))
        assert _wait(lambda: (C, "198.19.177.0/26", False) in updates)
        n = len(updates)
        etcd_client.put(_aff_key(C, "198.19.176.128/26"), confirmed)   # pending -> confirmed: still a block
        etcd_client.put(_aff_key(C, "198.19.178.0/26"), confirmed)     # a marker after it
        assert _wait(lambda: (C, "198.19.178.0/26", True) in updates)
        assert updates[n:] == [(C, "198.19.178.0/26", True)]
        assert w.held[_aff_key(C, "198.19.176.128/26")] == (C, "198.19.176.128/26")
    finally:
        w.stop()


def test_unwritable_mtu_file_is_logged_once_not_retried(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    h = Harness(tmp_path, env={"FELIX_MTUFILEPATH": str(blocker / "mtu")})   # under a file
    h.load(PLAIN, {ME: node_spec("198.19.175.1/26")})
    h.c.before_policy()
    assert h.c.after_routes() is True
    h.c.refresh()
    h.c.before_policy()
    assert h.c.after_routes() is True
    assert len([r for r in caplog.records if "cannot write the workload MTU" in r.getMessage()]) == 1


def test_garbage_specs_do_not_break_the_rest(tmp_path):
    h = Harness(tmp_path)
    h.c.resource("IPPool", "weird", ["not", "a", "dict"])   # first: looked at before the good one
    h.c.resource("Node", ME, "nonsense")
    h.apply()
    assert h.watchers == [] and h.kernels_made == 0
    h.load(IPIP)
    h.c.resource("Node", "weird", "nonsense")
    h.apply()
    h.watchers[0].on_snapshot({**{k: set(v) for k, v in AFF.items()}, "weird": {"198.19.177.0/26"}})
    h.deliver()
    h.apply()
    assert {r.dst for r in h.kernel.applied[-1].routes} == {"198.19.176.64/26", "198.19.176.128/26"}


def wep(node, *nets):
    return {"node": node, "ipNetworks": list(nets), "interfaceName": "cali0123456789a"}


def test_borrowed_addresses_follow_endpoint_changes_incrementally(tmp_path):
    h = Harness(tmp_path)
    # remote endpoints before any encapsulated pool: kept, nothing recomputed
    assert h.c.resource("WorkloadEndpoint", "ns/b-borrow", wep(B, "198.19.176.5/32")) is False
    h.load(VXLAN)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    h.apply()
    dsts = {r.dst: r for r in h.kernel.applied[-1].routes}
    # B's endpoint holds an address of this node's block: routed onward to B
    assert dsts["198.19.176.5/32"] == t.TunnelRoute("198.19.176.5/32", "198.19.176.65", "vxlan.calico", True)
    computes, applies = h.c.computes, len(h.kernel.applied)
    # an endpoint in its own node's block, a local one, a bad address: no route, no write
    assert h.c.resource("WorkloadEndpoint", "ns/b-own", wep(B, "198.19.176.70/32")) is True
    h.c.resource("WorkloadEndpoint", "ns/local", wep(ME, "198.19.176.140/32"))
    h.c.resource("WorkloadEndpoint", "ns/bad", wep(C, "198.19.176.0/24", "not-an-ip", 7))
    h.apply()
    assert len(h.kernel.applied) == applies and h.c.computes == computes
    assert set(h.c.endpoints) == {"ns/b-borrow", "ns/b-own"}
    # C's endpoint borrows from B's block: one endpoint recomputed, not everything
    h.c.resource("WorkloadEndpoint", "ns/c-borrow", wep(C, "198.19.176.66/32"))
    h.apply()
    assert h.c.computes == computes and h.c.endpoint_computes >= 1
    assert {r.dst: r.gateway for r in h.kernel.applied[-1].routes}["198.19.176.66/32"] == "198.19.176.129"
    # the endpoint moves to this node: its route goes; deleted: the other goes
    h.c.resource("WorkloadEndpoint", "ns/c-borrow", wep(ME, "198.19.176.66/32"))
    h.c.resource("WorkloadEndpoint", "ns/b-borrow", None)
    h.apply()
    assert not {r.dst for r in h.kernel.applied[-1].routes} & {"198.19.176.66/32", "198.19.176.5/32"}
    # a pool change recomputes everything and keeps the endpoints' routes
    h.c.resource("WorkloadEndpoint", "ns/b-borrow", wep(B, "198.19.176.5/32"))
    h.c.resource("IPPool", "default", dict(VXLAN, disabled=True))
    h.apply()
    assert h.c.computes == computes + 1
    assert "198.19.176.5/32" in {r.dst for r in h.kernel.applied[-1].routes}


def test_endpoint_change_at_10k_endpoints_is_cheap(tmp_path):
    h = Harness(tmp_path)
    h.load(VXLAN)
    h.apply()
    h.watchers[0].on_snapshot({k: set(v) for k, v in AFF.items()})
    h.deliver()
    for i in range(10_000):
        # every tenth borrowed from this node's block or C's; the rest in B's own block
        last = (5 if i % 20 else 133) + i % 50 if i % 10 == 0 else 70 + i % 50
        h.c.resource("WorkloadEndpoint", f"ns/w{i}", wep(B, f"198.19.176.{last}/32"))
    start = time.perf_counter()
    h.apply()
    full = time.perf_counter() - start
    assert len(h.c.borrowed) == 1000
    start = time.perf_counter()
    h.c.resource("WorkloadEndpoint", "ns/new", wep(B, "198.19.177.9/32"))
    h.c.before_policy()
    one = time.perf_counter() - start
    print(f"10,000 remote endpoints (1,000 borrowed): full recompute {full * 1000:.1f} ms, "
          f"one endpoint change {one * 1000:.2f} ms")
    assert "198.19.177.9/32" in {r.dst for r in h.c.desired.routes}
    assert one < full

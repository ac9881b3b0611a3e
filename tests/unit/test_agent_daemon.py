"""The daemon's loop with fakes for policy, kernel and syncer (calico_net.agent.daemon)."""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field

from calico_net.agent.config import Config
from calico_net.agent.daemon import Daemon
from calico_net.agent.felix.rtnetlink import Link
from calico_net.agent.syncer import Resource
from calico_net.datastore.store import RESOURCE_PREFIX as P
from fakes import FakeKernel, FakeSysctls, sys_class_net

V4 = socket.AF_INET


@dataclass
class FakeSettings:
    failsafe_inbound: list = field(default_factory=list)
    failsafe_outbound: list = field(default_factory=list)
    default_endpoint_to_host_action: str = "Drop"
    interface_prefixes: tuple = ("cali",)
    allow_ipip_from_workloads: bool = False
    allow_vxlan_from_workloads: bool = False
    nat_outgoing_address: object = None
    nat_port_range: object = None
    log_prefix: str = "calico-packet"
    drop_invalid: bool = True
    filter_deny_action: str = "Drop"


@dataclass
class FakePolicy:
    updates: list = field(default_factory=list)
    applies: int = 0
    settings: list = field(default_factory=list)
    refreshes: int = 0
    fail_next_apply: bool = False
    encap: list = field(default_factory=list)

    def update(self, kind, name, namespace, doc):
        self.updates.append((kind, name, namespace, doc is not None))

    def update_member(self, member):
        self.updates.append((member.key[0], member.key[2], member.key[1], True))

    def set_settings(self, s):
        self.settings.append(s)

    def apply(self, while_loading=None):
        if self.fail_next_apply:
            self.fail_next_apply = False
            raise RuntimeError("nft said no")
        self.applies += 1
        if while_loading is not None:
            while_loading()
        return {}

    def refresh(self):
        self.refreshes += 1
        return False

    def table_exists(self):
        return True       # our table is there: never the cold start's placeholder path

    def load_placeholder(self):
        raise AssertionError("no placeholder over an existing table")

    def set_encap_hosts(self, ipip, vxlan, vxlan_port):
        self.encap.append((ipip, vxlan, vxlan_port))


class NullSyncer:
    def __init__(self, client, sink):
        self.bad = {}

    def start(self):
        pass

    def stop(self):
        pass


def wep(name, node, iface, ip, rev=1, ns="default"):
    doc = {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"node": node, "interfaceName": iface, "ipNetworks": [ip]}}
    return P + f"workloadendpoints/{ns}/{name}", Resource("WorkloadEndpoint", name, ns, doc, rev)


def gnp(name, rev=1):
    doc = {"kind": "GlobalNetworkPolicy", "metadata": {"name": name}, "spec": {"selector": "all()"}}
    return P + f"globalnetworkpolicies/{name}", Resource("GlobalNetworkPolicy", name, None, doc, rev)


def fc(name, spec, rev=1):
    doc = {"kind": "FelixConfiguration", "metadata": {"name": name}, "spec": spec}
    return P + f"felixconfigurations/{name}", Resource("FelixConfiguration", name, None, doc, rev)


def make(tmp_path, links=(Link(5, "cali1", True), Link(6, "cali2", True))):
    kernel = FakeKernel(list(links))
    policy = FakePolicy()
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none"))
    d = Daemon("n1", cfg, None, policy=policy, settings_cls=FakeSettings, route_backend=kernel,
               sysctls=FakeSysctls(), watch_links=False, syncer_factory=NullSyncer, coalesce=0.001)
    d.start()
    return d, kernel, policy


def test_nothing_written_before_first_snapshot(tmp_path):
    d, kernel, policy = make(tmp_path)
    d.on_update(*wep("a", "n1", "cali1", "198.19.0.1/32"))
    d.loop_once(max_wait=0.01)
    assert policy.applies == 0 and kernel.writes == [] and not d.health.ready()[0]


def test_snapshot_apply_then_updates_batched(tmp_path):
    d, kernel, policy = make(tmp_path)
    d.on_status(True, "ok")
    snap = dict([wep("a", "n1", "cali1", "198.19.0.1/32"), wep("b", "other", "cali2", "198.19.0.2/32"), gnp("p")])
    d.on_snapshot(snap, 10)
    d.loop_once(max_wait=0.01)
    assert policy.applies == 1
    assert kernel.table == {(V4, "198.19.0.1", 32): 5}
    assert d.health.ready() == (True, "ready")
    assert d.metrics.active_local_endpoints.value == 1 and d.metrics.active_policies.value == 1
    assert d.routes.interfaces_to_configure() == [] and d.sysctls.ifaces == ["cali1"]
    # A burst of updates is one apply.
    for i in range(20):
        d.on_update(*gnp(f"q{i}"))
    d.on_update(*wep("c", "n1", "cali2", "198.19.0.3/32"))
    d.loop_once(max_wait=0.01)
    assert policy.applies == 2
    assert kernel.table[(V4, "198.19.0.3", 32)] == 6


def test_resync_dispatches_only_differences(tmp_path):
    d, kernel, policy = make(tmp_path)
    a, b, p = wep("a", "n1", "cali1", "198.19.0.1/32"), wep("b", "n1", "cali2", "198.19.0.2/32"), gnp("p")
    d.on_snapshot(dict([a, b, p]), 10)
    d.loop_once(max_wait=0.01)
    policy.updates.clear()
    kernel.writes.clear()
    b2 = wep("b", "n1", "cali2", "198.19.0.9/32", rev=12)
    d.on_snapshot(dict([a, b2]), 12)   # p deleted while we were away, b changed, a unchanged
    d.loop_once(max_wait=0.01)
    assert sorted(policy.updates) == [("GlobalNetworkPolicy", "p", None, False),
                                      ("WorkloadEndpoint", "b", "default", True)]
    assert kernel.table == {(V4, "198.19.0.1", 32): 5, (V4, "198.19.0.9", 32): 6}
    assert d.metrics.resyncs.value == 1


def test_resync_after_etcd_history_restarted_compares_contents(tmp_path):
    for history_reset in (False, True):
        d, kernel, policy = make(tmp_path / str(history_reset))
        d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.1/32", rev=7)]), 10)
        d.loop_once(max_wait=0.01)
        policy.updates.clear()
        # the same revision with another value: only possible once etcd's history
        # restarted (a restore from a snapshot), which the syncer saw as its
        # revision going back
        d.syncer.history_reset = history_reset
        d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.8/32", rev=7)]), 9)
        d.loop_once(max_wait=0.01)
        if not history_reset:   # within one history a revision names one value: kept
            assert policy.updates == [] and kernel.table == {(V4, "198.19.0.1", 32): 5}
            continue
        assert policy.updates == [("WorkloadEndpoint", "a", "default", True)]
        assert kernel.table == {(V4, "198.19.0.8", 32): 5}
        policy.updates.clear()
        d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.8/32", rev=7)]), 9)   # equal contents
        d.loop_once(max_wait=0.01)
        assert policy.updates == []


def test_felix_configuration_live(tmp_path):
    d, kernel, policy = make(tmp_path)
    d.on_snapshot(dict([fc("default", {"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 2222}]})]), 3)
    d.loop_once(max_wait=0.01)
    assert policy.settings[-1].failsafe_inbound == [("tcp", 2222)]
    d.on_update(*fc("node.n1", {"defaultEndpointToHostAction": "Accept"}))
    d.loop_once(max_wait=0.01)
    assert policy.settings[-1].default_endpoint_to_host_action == "Accept"
    assert not any(u[0] == "FelixConfiguration" for u in policy.updates)


def test_failed_apply_is_retried_and_not_ready_until_then(tmp_path):
    d, kernel, policy = make(tmp_path)
    d.on_status(True, "ok")
    policy.fail_next_apply = True
    d.on_snapshot(dict([gnp("p")]), 3)
    d.loop_once(max_wait=0.01)
    assert not d.health.ready()[0] and d.metrics.errors.value == 1
    d.retry_at = 0  # do not wait the second
    d.loop_once(max_wait=0.01)
    assert policy.applies == 1 and d.health.ready()[0]


def test_interface_created_after_endpoint(tmp_path):
    d, kernel, policy = make(tmp_path, links=[])
    d.on_snapshot(dict([wep("a", "n1", "cali7", "198.19.0.7/32")]), 3)
    d.loop_once(max_wait=0.01)
    assert kernel.table == {}
    link = Link(9, "cali7", True)
    kernel.link_list.append(link)
    d._on_link(link, False)
    d.loop_once(max_wait=0.01)
    assert kernel.table == {(V4, "198.19.0.7", 32): 9} and d.sysctls.ifaces == ["cali7"]


def test_refresh_repairs_routes(tmp_path):
    d, kernel, policy = make(tmp_path)
    d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.1/32")]), 3)
    d.loop_once(max_wait=0.01)
    kernel.table.clear()
    d.next_route_refresh = d.next_nft_refresh = 0
    d.loop_once(max_wait=0.01)
    assert kernel.table == {(V4, "198.19.0.1", 32): 5}
    assert d.metrics.route_repairs.value == 1 and policy.refreshes == 1


def test_tamper_report_repairs_at_once_not_at_the_refresh(tmp_path):
    from calico_net.agent.felix.tamper import Tamper
    d, kernel, policy = make(tmp_path)
    d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.1/32")]), 3)
    d.loop_once(max_wait=0.01)
    # another process deleted the route: re-added by the next pass, no refresh needed
    del kernel.table[(V4, "198.19.0.1", 32)]
    d.next_route_refresh = d.next_nft_refresh = float("inf")
    d._on_tamper(Tamper(routes={(V4, "198.19.0.1", 32): 5}))
    d.loop_once(max_wait=0.01)
    assert kernel.table == {(V4, "198.19.0.1", 32): 5}
    assert d.metrics.route_repairs.value == 1 and policy.refreshes == 0
    # a deleted route that was not ours (another interface, another address) changes nothing
    writes = len(kernel.writes)
    d._on_tamper(Tamper(routes={(V4, "198.19.0.1", 32): 6, (V4, "198.19.0.9", 32): 5}))
    d.loop_once(max_wait=0.01)
    assert len(kernel.writes) == writes and d.metrics.route_repairs.value == 1
    # our table changed by someone else: the nft check runs now; the periodic one
    # is due a whole interval (90 s) later
    d._on_tamper(Tamper(nft="another process changed table inet calico"))
    d.loop_once(max_wait=0.01)
    assert policy.refreshes == 1 and d.next_nft_refresh > time.monotonic() + 60
    # lost route events: every route is read back
    kernel.table.clear()
    d._on_tamper(Tamper(routes_lost=True))
    d.loop_once(max_wait=0.01)
    assert kernel.table == {(V4, "198.19.0.1", 32): 5} and d.tampers == 4


def test_settings_for_the_real_policy_dataplane(tmp_path):
    from calico_net.agent.daemon import felix_settings
    from calico_net.agent.felix.policy import FelixSettings

    cfg = Config("n1", env={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:22,udp:68",
                            "FELIX_DEFAULTENDPOINTTOHOSTACTION": "accept"}, config_file=str(tmp_path / "x"))
    s = felix_settings(cfg, FelixSettings)
    assert s.failsafe_inbound == [("tcp", 22), ("udp", 68)]
    assert s.default_endpoint_to_host_action == "Accept"
    assert s.interface_prefixes == ("cali",)


def test_bgp_and_node_resources_do_not_reach_the_policy_dataplane(tmp_path):
    d, kernel, policy = make(tmp_path)
    bgp = {"kind": "BGPConfiguration", "metadata": {"name": "default"}, "spec": {}}
    node = {"kind": "Node", "metadata": {"name": "n1"}, "spec": {}}
    d.on_snapshot({P + "bgpconfigurations/default": Resource("BGPConfiguration", "default", None, bgp, 1),
                   P + "nodes/n1": Resource("Node", "n1", None, node, 2), **dict([gnp("p")])}, 10)
    d.loop_once(max_wait=0.01)
    assert policy.updates == [("GlobalNetworkPolicy", "p", None, True)]
    assert d.metrics.errors.value == 0


class PlaceholderPolicy(FakePolicy):
    """A policy dataplane on a host without its table: records the order of events."""

    def __init__(self, kernel, exists=False):
        super().__init__()
        self.kernel = kernel
        self.exists = exists
        self.events = []

    def table_exists(self):
        return self.exists

    def load_placeholder(self):
        self.events.append(("placeholder", dict(self.kernel.table)))
        self.exists = True

    def apply(self, while_loading=None):
        self.events.append(("apply", dict(self.kernel.table)))
        self.applies += 1
        if while_loading is not None:
            while_loading()
        return {}


def _make_placeholder(tmp_path, exists):
    kernel = FakeKernel([Link(5, "cali1", True), Link(6, "cali2", True)])
    policy = PlaceholderPolicy(kernel, exists=exists)
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none"))
    d = Daemon("n1", cfg, None, policy=policy, settings_cls=FakeSettings, route_backend=kernel,
               sysctls=FakeSysctls(), watch_links=False, syncer_factory=NullSyncer, coalesce=0.001)
    d.start()
    return d, kernel, policy


def test_fresh_host_routes_come_after_the_placeholder_table(tmp_path):
    d, kernel, policy = _make_placeholder(tmp_path, exists=False)
    d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.1/32"),
                        wep("b", "n1", "cali2", "198.19.0.2/32")]), 10)
    d.loop_once(max_wait=0.01)
    # the placeholder went in before any route; the policy apply started before routes too
    assert [e[0] for e in policy.events] == ["placeholder", "apply"]
    assert policy.events[0][1] == {} and policy.events[1][1] == {}
    assert kernel.table == {(V4, "198.19.0.1", 32): 5, (V4, "198.19.0.2", 32): 6}
    assert d.applied
    # later applies: no placeholder again, routes as usual
    d.on_update(*wep("c", "n1", "cali2", "198.19.0.3/32"))
    d.loop_once(max_wait=0.01)
    assert [e[0] for e in policy.events] == ["placeholder", "apply", "apply"]
    assert kernel.table[(V4, "198.19.0.3", 32)] == 6


def test_existing_table_means_no_placeholder_and_routes_after_policy(tmp_path):
    d, kernel, policy = _make_placeholder(tmp_path, exists=True)
    d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.1/32")]), 10)
    d.loop_once(max_wait=0.01)
    assert [e[0] for e in policy.events] == ["apply"]
    assert kernel.table == {(V4, "198.19.0.1", 32): 5}


def test_fresh_host_sysctls_start_by_name_before_the_link_listing(tmp_path, monkeypatch):
    # Many interfaces on a fresh host: the Sysctls helper starts on the endpoints'
    # interface names before the links are listed; the listing then decides what
    # counts as configured. cali2 was re-created between the two (other index),
    # cali3 does not exist yet: it is configured when its link event comes.
    from calico_net.agent.felix.sysctl import Sysctls
    names = ["cali1", "cali2", "cali3"]
    proc = tmp_path / "proc"
    for d in ["net/ipv4", *(f"net/ipv4/conf/{n}" for n in names[:2]), *(f"net/ipv4/neigh/{n}" for n in names[:2])]:
        (proc / d).mkdir(parents=True, exist_ok=True)
    (proc / "net/ipv4/ip_forward").write_text("1\n")
    for n in names[:2]:
        for f in ("proxy_arp", "route_localnet", "forwarding"):
            (proc / f"net/ipv4/conf/{n}/{f}").write_text("0\n")
        (proc / f"net/ipv4/neigh/{n}/proxy_delay").write_text("80\n")
    net = sys_class_net(tmp_path / "class-net", {"cali1": 5, "cali2": 60})
    monkeypatch.setattr(Sysctls, "HELPER_MIN", 2)
    sysctls = Sysctls(str(proc), sys_class_net=net)
    started = []
    real_start = sysctls.start_configure_names

    def start(items):
        started.append((list(items), list(d.routes.links), [e[0] for e in policy.events]))
        return real_start(items)

    sysctls.start_configure_names = start
    inline = []
    real_inline = sysctls.configure_interfaces

    def configure_interfaces(items):
        inline.append([link.name for link, _ in items])
        return real_inline(items)

    sysctls.configure_interfaces = configure_interfaces
    kernel = FakeKernel([Link(5, "cali1", True), Link(6, "cali2", True)])
    policy = PlaceholderPolicy(kernel)
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none"))
    d = Daemon("n1", cfg, None, policy=policy, settings_cls=FakeSettings, route_backend=kernel,
               sysctls=sysctls, watch_links=False, syncer_factory=NullSyncer, coalesce=0.001)
    d.start()
    d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.1/32"), wep("b", "n1", "cali2", "198.19.0.2/32"),
                        wep("c", "n1", "cali3", "198.19.0.3/32")]), 10)
    d.loop_once(max_wait=0.01)
    # with the snapshot: before the placeholder table and the link listing
    assert started == [([("cali1", False), ("cali2", False), ("cali3", False)], [], [])]
    assert d.applied and d.routes.configured == {"cali1": 5, "cali2": 6}
    assert inline == [["cali2"]]            # the re-created one, again after the listing
    for n in ("cali1", "cali2"):
        assert (proc / f"net/ipv4/conf/{n}/proxy_arp").read_text().strip() == "1"
        assert (proc / f"net/ipv4/neigh/{n}/proxy_delay").read_text().strip() == "0"
    assert kernel.table == {(V4, "198.19.0.1", 32): 5, (V4, "198.19.0.2", 32): 6}
    # cali3 appears
    for d_ in ("net/ipv4/conf/cali3", "net/ipv4/neigh/cali3"):
        (proc / d_).mkdir(parents=True)
    for f in ("proxy_arp", "route_localnet", "forwarding"):
        (proc / f"net/ipv4/conf/cali3/{f}").write_text("0\n")
    kernel.link_list.append(Link(7, "cali3", True))
    d._on_link(Link(7, "cali3", True), False)
    d.loop_once(max_wait=0.01)
    assert d.routes.configured == {"cali1": 5, "cali2": 6, "cali3": 7} and inline[1:] == [["cali3"]]
    assert (proc / "net/ipv4/conf/cali3/route_localnet").read_text().strip() == "1"
    assert kernel.table[(V4, "198.19.0.3", 32)] == 7
    assert d.metrics.errors.value == 0


def test_fresh_host_lists_only_the_endpoints_links_then_looks_up_new_names(tmp_path):
    # On a fresh host the route thread looks up only the local endpoints' interfaces
    # (cali1); an endpoint written later for an interface that existed all along but
    # was nobody's then (cali2) is looked up when it comes, and routed at once.
    kernel = FakeKernel([Link(4, "eth0", True), Link(5, "cali1", True), Link(6, "cali2", True)])
    listed = []
    real_links = kernel.links
    kernel.links = lambda: listed.append("full") or real_links()
    policy = PlaceholderPolicy(kernel)
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none"))
    d = Daemon("n1", cfg, None, policy=policy, settings_cls=FakeSettings, route_backend=kernel,
               sysctls=FakeSysctls(), watch_links=False, syncer_factory=NullSyncer, coalesce=0.001)
    d.start()
    d.on_snapshot(dict([wep("a", "n1", "cali1", "198.19.0.1/32")]), 10)
    d.loop_once(max_wait=0.01)
    assert d.applied and listed == [] and d.links_partial
    assert set(d.routes.links) == {"cali1"}
    assert kernel.table == {(V4, "198.19.0.1", 32): 5}
    d.on_update(*wep("b", "n1", "cali2", "198.19.0.2/32"))
    d.on_update(*wep("c", "n1", "cali9", "198.19.0.9/32"))    # no such interface (yet)
    d.loop_once(max_wait=0.01)
    assert kernel.table == {(V4, "198.19.0.1", 32): 5, (V4, "198.19.0.2", 32): 6}
    assert d.sysctls.ifaces == ["cali1", "cali2"]
    # the route refresh lists everything and ends the endpoints-only state
    d.next_route_refresh = 0
    d.loop_once(max_wait=0.01)
    assert listed == ["full"] and not d.links_partial and set(d.routes.links) == {"eth0", "cali1", "cali2"}
    assert d.metrics.errors.value == 0


# --- endpoints and config values that must never widen the dataplane ----------------

INJECTION = '*" accept; iifname "cali'


def hep(name, iface, ips=("198.18.0.1",), rev=1):
    doc = {"kind": "HostEndpoint", "metadata": {"name": name},
           "spec": {"node": "n1", "interfaceName": iface, "expectedIPs": list(ips)}}
    return P + f"hostendpoints/{name}", Resource("HostEndpoint", name, None, doc, rev)


def doc_given(policy, name):
    """Whether the policy dataplane got `name` as present (its last update)."""
    return [u[3] for u in policy.updates if u[1] == name][-1]


def test_endpoints_outside_the_prefixes_or_wider_than_a_host_are_refused(tmp_path, caplog):
    d, kernel, policy = make(tmp_path, links=(Link(2, "eth0", True), Link(5, "cali1", True),
                                              Link(6, "cali2", True)))
    snap = dict([wep("good", "n1", "cali1", "198.19.0.1/32"),
                 wep("takeover", "n1", "eth0", "0.0.0.0/0"),
                 wep("hostif", "n1", "eth0", "198.19.0.3/32"),
                 wep("wide", "n1", "cali2", "198.19.0.0/24"),
                 wep("remote-wide", "other", "cali9", "::/0"),
                 wep("remote", "other", "eth0", "198.19.0.5/32"),      # not this host's interface
                 hep("star", "*"), hep("hep-wide", "eth0", ips=("198.18.0.0/16",)), hep("hep", "eth0")])
    with caplog.at_level(logging.ERROR):
        d.on_snapshot(snap, 5)
        d.loop_once(max_wait=0.01)
        assert kernel.table == {(V4, "198.19.0.1", 32): 5}
        assert d.sysctls.ifaces == ["cali1"]
        for name in ("takeover", "hostif", "wide", "remote-wide", "hep-wide"):
            assert doc_given(policy, name) is False, name
        # "*": one host endpoint for every host interface
        for name in ("good", "remote", "hep", "star"):
            assert doc_given(policy, name) is True, name
        assert d.metrics.refused_endpoints_total.value == 5 and d.metrics.refused_endpoints.value == 5
        # a resync with the same documents, and a re-put of one: counted and logged once
        d.on_snapshot(dict(snap), 6)
        d.on_update(*wep("takeover", "n1", "eth0", "0.0.0.0/0", rev=7))
        d.loop_once(max_wait=0.01)
    assert d.metrics.refused_endpoints_total.value == 5
    assert len([r for r in caplog.records if "takeover" in r.getMessage()]) == 1
    assert any("0.0.0.0/0" in r.getMessage() and "wider than a host" in r.getMessage() for r in caplog.records)
    assert kernel.table == {(V4, "198.19.0.1", 32): 5}
    # fixed: no longer refused, programmed
    d.on_update(*wep("hostif", "n1", "cali2", "198.19.0.3/32", rev=8))
    d.on_update(*wep("takeover", "n1", "eth0", "198.19.0.4/32", rev=9))   # another reason: logged again
    d.loop_once(max_wait=0.01)
    assert kernel.table == {(V4, "198.19.0.1", 32): 5, (V4, "198.19.0.3", 32): 6}
    assert doc_given(policy, "hostif") is True
    assert d.metrics.refused_endpoints_total.value == 6 and d.metrics.refused_endpoints.value == 4
    # deleted: forgotten
    d.on_update(wep("takeover", "n1", "eth0", "198.19.0.4/32")[0], None)
    d.loop_once(max_wait=0.01)
    assert d.metrics.refused_endpoints.value == 3


def test_interface_prefix_from_the_first_snapshot_then_fixed(tmp_path, caplog):
    d, kernel, policy = make(tmp_path, links=(Link(5, "cali1", True), Link(9, "tap1", True)))
    # the FelixConfiguration sorts after the endpoint here: it is still taken first
    snap = {**dict([wep("a", "n1", "tap1", "198.19.0.1/32"), wep("b", "n1", "cali1", "198.19.0.2/32")]),
            **dict([fc("default", {"interfacePrefix": "tap"})])}
    with caplog.at_level(logging.WARNING):
        d.on_snapshot(snap, 5)
        d.loop_once(max_wait=0.01)
    assert not [r for r in caplog.records if "restart" in r.getMessage()]
    assert d.iface_prefixes == ("tap",) and d.routes.iface_prefixes == ("tap",)
    assert kernel.table == {(V4, "198.19.0.1", 32): 9}
    assert d.metrics.refused_endpoints_total.value == 1          # b, on cali1
    # a later change needs a restart: logged, not applied
    with caplog.at_level(logging.WARNING):
        d.on_update(*fc("default", {"interfacePrefix": "cali"}, rev=6))
        d.loop_once(max_wait=0.01)
    assert any("restart" in r.getMessage() for r in caplog.records)
    assert d.iface_prefixes == ("tap",) and kernel.table == {(V4, "198.19.0.1", 32): 9}


def test_bad_interface_prefix_in_etcd_is_counted_and_never_applied(tmp_path, caplog):
    from calico_net.agent.felix.policy import FelixSettings
    kernel = FakeKernel([Link(5, "cali1", True)])
    policy = FakePolicy()
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none"))
    d = Daemon("n1", cfg, None, policy=policy, settings_cls=FelixSettings, route_backend=kernel,
               sysctls=FakeSysctls(), watch_links=False, syncer_factory=NullSyncer, coalesce=0.001)
    d.start()
    with caplog.at_level(logging.ERROR):
        d.on_snapshot(dict([fc("default", {"interfacePrefix": INJECTION, "logSeverityScreen": "Warning"}),
                            wep("a", "n1", "cali1", "198.19.0.1/32")]), 5)
        d.loop_once(max_wait=0.01)
    assert d.iface_prefixes == ("cali",)
    assert all(s.interface_prefixes == ("cali",) for s in policy.settings)
    assert d.metrics.config_errors.value == 1
    msg = [r.getMessage() for r in caplog.records if "InterfacePrefix" in r.getMessage()]
    assert len(msg) == 1 and "FelixConfiguration default" in msg[0] and "accept" in msg[0]
    assert kernel.table == {(V4, "198.19.0.1", 32): 5}


def test_local_interfaces_for_the_sysctl_helper_only_match_the_prefixes():
    from calico_net.agent.felix.coldstart import local_interfaces as _local_interfaces
    res = dict([wep("a", "n1", "cali1", "198.19.0.1/32"), wep("b", "n1", "eth0", "0.0.0.0/0"),
                wep("c", "n1", "tap1", "fd00::1/128"), wep("d", "n2", "cali4", "198.19.0.4/32")])
    assert _local_interfaces(res, "n1") == [("cali1", False)]
    assert _local_interfaces(res, "n1", ("cali", "tap")) == [("cali1", False), ("tap1", True)]
    res.update([wep("e", "n1", "cali5", "0.0.0.0/0"), wep("f", "n1", "cali6", "fd00::/64")])
    assert _local_interfaces(res, "n1", ("cali", "tap")) == [("cali1", False), ("tap1", True)]


def test_failsafe_entries_limited_to_a_network_reach_the_settings(tmp_path):
    from calico_net.agent.daemon import felix_settings
    from calico_net.agent.felix.policy import FelixSettings

    cfg = Config("n1", env={"FELIX_FAILSAFEINBOUNDHOSTPORTS": "tcp:22,tcp:198.18.0.0/24:2222"},
                 config_file=str(tmp_path / "x"))
    assert felix_settings(cfg, FelixSettings).failsafe_inbound == [("tcp", 22), ("tcp", 2222, "198.18.0.0/24")]


def test_sustained_change_waits_out_the_window_a_lone_change_does_not(tmp_path):
    import threading

    kernel = FakeKernel([Link(5, "cali1", True)])
    policy = FakePolicy()
    cfg = Config("n1", env={}, config_file=str(tmp_path / "none"))
    d = Daemon("n1", cfg, None, policy=policy, settings_cls=FakeSettings, route_backend=kernel,
               sysctls=FakeSysctls(), watch_links=False, syncer_factory=NullSyncer, coalesce=0.4, quiet=0.01,
               sustained=0.4)
    d.start()
    d.on_status(True, "ok")
    d.on_snapshot(dict([gnp("p")]), 10)
    d.loop_once(max_wait=0.01)
    assert policy.applies == 1

    def stream(names, gap):
        for n in names:
            d.on_update(*gnp(n))
            time.sleep(gap)

    # a stream going on (the last batch held more than one change): changes right
    # after its apply, with gaps longer than `quiet`, make one batch
    d.on_update(*gnp("x"))
    d.on_update(*gnp("y"))
    d.loop_once(max_wait=0.01)
    assert policy.applies == 2
    t = threading.Thread(target=stream, args=(["a", "b", "c", "d"], 0.05))
    t.start()
    d.loop_once(max_wait=2)
    t.join()
    assert policy.applies == 3
    assert [u[1] for u in policy.updates[-4:]] == ["a", "b", "c", "d"]
    # after a quiet spell longer than the window, a gap longer than `quiet` ends the batch
    time.sleep(0.45)
    t = threading.Thread(target=stream, args=(["e", "f"], 0.1))
    t.start()
    d.loop_once(max_wait=2)
    assert policy.applies == 4 and policy.updates[-1][1] == "e"
    t.join()
    d.loop_once(max_wait=2)
    assert policy.applies == 5 and policy.updates[-1][1] == "f"
    # one change at a time, each right after the last one's apply (a CNI add, then
    # the next): not a stream, so a gap longer than `quiet` still ends the batch
    t = threading.Thread(target=stream, args=(["g", "h"], 0.1))
    t.start()
    d.loop_once(max_wait=2)
    assert policy.applies == 6 and policy.updates[-1][1] == "g"
    t.join()
    d.loop_once(max_wait=2)
    assert policy.applies == 7 and policy.updates[-1][1] == "h"

"""The overlay's controller: holds the inputs (IPPools, Nodes, block affinities, the
Felix parameters), recomputes `state.desired()` when one of them changed, and hands
the result to the kernel layer, the policy dataplane and the MTU file. It also keeps
each remote WorkloadEndpoint's node and host addresses (no more: 10,000 endpoints
stay small), for the routes of borrowed addresses. The daemon
only forwards to it (`resource`, `settings_changed`, `on_event`) and calls its two
apply steps from its own apply, in its one thread:

* `before_policy()` — recompute if dirty; tell the policy dataplane which hosts may
  send IP-in-IP / VXLAN (`set_encap_hosts`, only when that changed), so the policy
  apply that follows writes it;
* `after_routes()` — write the devices, routes, neighbours and FDB entries
  (`kernel.apply`, only when the desired state changed or the last write failed),
  then the workload MTU file.

Nothing costs anything while no pool is encapsulated and nothing was made: the
kernel layer (pyroute2) is created, and the affinity watch started, when the first
encapsulated pool appears, and both are kept after. The kernel is not written
before the affinity watch's first snapshot is in, so a restart never removes
routes that are still right. The tunnel address allocator is started when a pool is
encapsulated or this Node holds a tunnel address (to release it), and poked
whenever the pools or this Node change. An exception in any step propagates to the
daemon, which logs, counts and retries; the inputs stay dirty until a pass works.
"""
from __future__ import annotations

import ipaddress
import logging
import sys
from dataclasses import replace
from typing import Any, Callable, Mapping, Protocol

from calico_net.agent.encap import types as t
from calico_net.agent.encap.mtu import LinkFacts, MtuFile, read_links, underlay
from calico_net.agent.encap.state import Endpoint, EncapSettings, Problems, Resolver, Underlay, compute

log = logging.getLogger(__name__)

ENCAP_MODES = ("Always", "CrossSubnet")
#: Node fields holding a tunnel address (or its MAC): the allocator has work to do
TUNNEL_FIELDS = ("ipv4VXLANTunnelAddr", "vxlanTunnelMACAddr", "ipv6VXLANTunnelAddr",
                 "vxlanTunnelMACAddrV6")
#: the config parameters the overlay's state depends on
SETTINGS_PARAMS = ("VXLANVNI", "VXLANPort", "VXLANMTU", "VXLANMTUV6", "IPIPMTU", "MTUIfacePattern",
                   "MTUFilePath")


class Kernel(Protocol):
    def apply(self, want: t.Desired) -> dict[str, int]: ...
    def invalidate(self) -> None: ...


class Allocator(Protocol):
    def start(self) -> None: ...
    def poke(self) -> None: ...
    def stop(self) -> None: ...


class Watcher(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


class EncapPolicy(Protocol):
    def set_encap_hosts(self, ipip: frozenset[str] | None, vxlan: frozenset[str] | None,
                        vxlan_port: int) -> None: ...


#: builds the affinity watcher from its two callbacks (snapshot, update)
WatcherFactory = Callable[[Callable[[dict[str, set[str]]], None], Callable[[str, str, bool], None]], Watcher]


def pool_encapsulated(spec: Mapping[str, Any] | None) -> bool:
    return isinstance(spec, Mapping) and (spec.get("ipipMode") in ENCAP_MODES
                                          or spec.get("vxlanMode") in ENCAP_MODES)


def _default_kernel() -> Kernel:
    from calico_net.agent.encap.kernel import EncapKernel   # pyroute2: only when needed

    return EncapKernel()


def _host_ip(value: Any, cls: Any) -> str | None:
    try:
        return str(cls(str(value)).ip) if value else None
    except ValueError:
        return None   # state.desired reports it


def _host_addresses(nets: Any) -> tuple[str, ...]:
    """The host addresses (/32, /128) of an endpoint's ipNetworks, in canonical text;
    anything else is left out here (the daemon logs and counts the endpoint's bad
    address)."""
    if not isinstance(nets, list):
        return ()
    out = []
    for raw in nets:
        try:
            iface = ipaddress.ip_interface(str(raw))
        except ValueError:
            continue
        if iface.network.prefixlen == iface.max_prefixlen:
            out.append(str(iface.ip))
    return tuple(out)


class EncapController:
    """See the module docstring. `kernel_factory`, `watcher_factory`, `allocator`
    and `links_reader` are the real pieces by default or when __main__ passes them;
    tests pass fakes. `own_blackholes`: no BIRD runs (backend vxlan or none), so the
    overlay blackholes this node's own blocks."""

    def __init__(
        self,
        node_name: str,
        config: Any,
        *,
        kernel_factory: Callable[[], Kernel] = _default_kernel,
        watcher_factory: WatcherFactory | None = None,
        allocator: Allocator | None = None,
        links_reader: Callable[[], list[LinkFacts]] = read_links,
        own_blackholes: bool = False,
    ) -> None:
        self.node_name = node_name
        self.config = config
        self.kernel_factory = kernel_factory
        self.watcher_factory = watcher_factory
        self.allocator = allocator
        self.links_reader = links_reader
        self.policy: EncapPolicy | None = None
        self.post: Callable[[tuple], None] | None = None
        self.pools: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.affinities: dict[str, set[str]] = {}
        #: remote WorkloadEndpoints: key -> (node, host addresses)
        self.endpoints: dict[str, Endpoint] = {}
        #: the borrowed-address routes per endpoint key (only endpoints with some),
        #: the state without them, and the resolver of the last full computation: an
        #: endpoint change recomputes that endpoint only (a full computation at
        #: 10,000 endpoints costs tens of ms; see docs/encapsulation.md)
        self.borrowed: dict[str, tuple[t.TunnelRoute, ...]] = {}
        self.base: t.Desired | None = None
        self.resolver: Resolver | None = None
        self.endpoints_dirty: set[str] = set()
        self.affinities_synced = False
        self.own_blackholes = own_blackholes
        self.settings = EncapSettings.from_values(config.values, own_blackholes)
        self.problems = Problems()
        self.kernel: Kernel | None = None
        self.watcher: Watcher | None = None
        self.allocator_started = False
        self.dirty = True             # inputs changed since the last computation
        self.kernel_dirty = False     # the kernel needs a write (changed, or the last failed)
        self.made = False             # the kernel layer was (or may have been) used
        self.desired: t.Desired | None = None
        self.applied: t.Desired | None = None
        #: what set_encap_hosts was last told; the policy dataplane starts with no
        #: encapsulation, so that needs no call
        self.hosts: tuple = (None, None, t.DEFAULT_VXLAN_PORT)
        self.underlay: Underlay | None = None
        self.computes = 0
        self.endpoint_computes = 0
        self.kernel_applies = 0
        self.mtu_writes = 0
        self._mtu_file = MtuFile(config.values["MTUFilePath"])
        self._mtu_error: tuple[str, int | None] | None = None

    # --- wiring ---
    def attach(self, policy: EncapPolicy, post: Callable[[tuple], None]) -> None:
        """The daemon's policy dataplane, and how to put an event on its queue."""
        self.policy = policy
        self.post = post

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.allocator is not None and self.allocator_started:
            self.allocator.stop()

    @property
    def encapsulated(self) -> bool:
        return any(pool_encapsulated(spec) for spec in self.pools.values())

    # --- inputs (the daemon's thread) ---
    def resource(self, kind: str, name: str, spec: dict[str, Any] | None) -> bool:
        """An IPPool, Node or WorkloadEndpoint changed (None: deleted; `name` is the
        endpoint's key). True when the overlay cares."""
        if kind == "WorkloadEndpoint":
            return self._endpoint(name, spec)
        table = self.pools if kind == "IPPool" else self.nodes if kind == "Node" else None
        if table is None:
            return False
        old = table.get(name)
        if spec is None:
            if old is None:
                return False
            del table[name]
        else:
            if old == spec:
                return False
            table[name] = spec
        self.dirty = True
        if kind == "IPPool" or name == self.node_name:
            self._allocator_poke()
        return True

    def _endpoint(self, key: str, spec: Mapping[str, Any] | None) -> bool:
        node = spec.get("node") if spec is not None else None
        entry = None
        if isinstance(node, str) and node and node != self.node_name:
            # one string per node name, not one per endpoint
            entry = (sys.intern(node), _host_addresses(spec.get("ipNetworks")))  # type: ignore[union-attr]
            if not entry[1]:
                entry = None
        return self._set_endpoint(key, entry)

    def remote_endpoint(self, key: str, node: str, addrs4: tuple[str, ...],
                        addrs6: tuple[str, ...]) -> bool:
        """A remote WorkloadEndpoint whose host addresses are already read (the
        policy record's: canonical text, node name interned); as `resource`."""
        addrs = addrs4 + addrs6     # one family: the record's own tuple
        return self._set_endpoint(key, (node, addrs) if addrs and node != self.node_name else None)

    def _set_endpoint(self, key: str, entry: Endpoint | None) -> bool:
        old = self.endpoints.get(key)
        if entry == old:
            return False
        if entry is None:
            del self.endpoints[key]
        else:
            self.endpoints[key] = entry
        # without an encapsulated pool no route can follow; the pool's arrival recomputes
        if self.encapsulated:
            self.endpoints_dirty.add(key)
            return True
        return False

    def settings_changed(self, changed: list[str]) -> bool:
        """Config parameters changed: recompute when one of the overlay's did."""
        if not any(name in SETTINGS_PARAMS for name in changed):
            return False
        self.settings = EncapSettings.from_values(self.config.values, self.own_blackholes)
        if self._mtu_file.path != self.config.values["MTUFilePath"]:
            self._mtu_file = MtuFile(self.config.values["MTUFilePath"])
        self.dirty = True
        return True

    def on_event(self, ev: tuple) -> bool:
        """An affinity event the watcher posted: ("encap", "snapshot", affinities) or
        ("encap", "update", node, cidr, present); True when an apply is due."""
        if ev[1] == "hosts":
            return True   # the daemon's own: apply again, so the policy writes the hosts
        if ev[1] == "snapshot":
            first = not self.affinities_synced
            self.affinities_synced = True
            if ev[2] != self.affinities or first:
                self.affinities = ev[2]
                self.dirty = True
            return True
        _, _, node, cidr, present = ev
        blocks = self.affinities.get(node)
        if present and (blocks is None or cidr not in blocks):
            self.affinities.setdefault(node, set()).add(cidr)
        elif not present and blocks is not None and cidr in blocks:
            blocks.discard(cidr)
            if not blocks:
                del self.affinities[node]
        else:
            return False
        self.dirty = True
        return True

    def _allocator_poke(self) -> None:
        if self.allocator is None:
            return
        if not self.allocator_started:
            me = self.nodes.get(self.node_name)
            me = me if isinstance(me, Mapping) else {}
            bgp = me.get("bgp")
            holds = any(me.get(f) for f in TUNNEL_FIELDS) or (
                isinstance(bgp, Mapping) and bool(bgp.get("ipv4IPIPTunnelAddr")))
            if not (self.encapsulated or holds):
                return    # nothing to allocate, nothing to release
            self.allocator.start()   # its first pass runs at start
            self.allocator_started = True
            return
        self.allocator.poke()

    def _start_watch(self) -> None:
        if self.watcher is not None or self.watcher_factory is None:
            return
        post = self.post
        assert post is not None, "attach() first"
        self.watcher = self.watcher_factory(
            lambda aff: post(("encap", "snapshot", aff)),
            lambda node, cidr, present: post(("encap", "update", node, cidr, present)))
        self.watcher.start()
        log.info("overlay: an encapsulated pool is in use; watching every node's block affinities")

    # --- the apply steps (the daemon's thread) ---
    def _my_addresses(self) -> tuple[str | None, str | None]:
        me = self.nodes.get(self.node_name)
        bgp = me.get("bgp") if isinstance(me, Mapping) else None
        if not isinstance(bgp, Mapping):
            return None, None
        return (_host_ip(bgp.get("ipv4Address"), ipaddress.IPv4Interface),
                _host_ip(bgp.get("ipv6Address"), ipaddress.IPv6Interface))

    def _detect_underlay(self) -> Underlay:
        links = self.links_reader()
        if not self.made:
            # a device this agent made before a restart: the kernel layer removes it
            # if no longer wanted (tunl0 appears by itself when the ipip module loads,
            # so only an up tunl0 counts)
            self.made = any(link.name in (t.VXLAN_DEVICE, t.VXLAN_V6_DEVICE) or
                            (link.name == t.IPIP_DEVICE and link.up) for link in links)
        ip4, ip6 = self._my_addresses()
        return underlay(links, self.config.values["MTUIfacePattern"], ip4, ip6)

    def before_policy(self) -> None:
        if self.encapsulated:
            self._start_watch()
            if not self.allocator_started:
                self._allocator_poke()
        if self.dirty:
            self.underlay = self._detect_underlay()
            self.base, self.resolver, self.borrowed = compute(
                self.node_name, self.pools, self.nodes, self.affinities, self.settings,
                self.underlay, self.problems, self.endpoints)
            self.computes += 1
        elif self.endpoints_dirty and self.resolver is not None:
            for key in self.endpoints_dirty:
                ep = self.endpoints.get(key)
                routes = self.resolver.routes(key, ep) if ep is not None else ()
                if routes:
                    self.borrowed[key] = routes
                else:
                    self.borrowed.pop(key, None)
            self.endpoint_computes += 1
        else:
            self.endpoints_dirty.clear()
            return
        self.dirty = False
        self.endpoints_dirty.clear()
        base = self.base
        assert base is not None
        want = replace(base, routes=base.routes.union(*self.borrowed.values()))
        if want != self.desired:
            self.desired = want
            self.kernel_dirty = True
        hosts = (want.ipip_sources, want.vxlan_sources, want.vxlan_port)
        if want.ipip_sources is None and want.vxlan_sources is None and self.hosts[:2] == (None, None):
            hosts = self.hosts   # no encapsulation before or now: the port means nothing
        if hosts != self.hosts and self.policy is not None:
            self.policy.set_encap_hosts(*hosts)
            self.hosts = hosts

    def after_routes(self) -> bool:
        """False when the kernel layer refused something (it logged what): the write
        stays due and the daemon retries it."""
        want = self.desired
        if want is None:
            return True
        if self.kernel_dirty and (self.encapsulated or self.made):
            if self.encapsulated and self.watcher_factory is not None and not self.affinities_synced:
                return True   # not before the affinities are in: routes still right would go
            if self.kernel is None:
                self.kernel = self.kernel_factory()
            self.made = True
            counts = self.kernel.apply(want)
            self.kernel_applies += 1
            if any(counts.values()):
                log.info("overlay programmed: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v))
            if counts.get("errors"):
                return False
            self.applied = want
            self.kernel_dirty = False
        elif self.kernel_dirty:
            self.kernel_dirty = False   # nothing encapsulated, nothing made: nothing to write
        if want.workload_mtu:
            try:
                if self._mtu_file.write(want.workload_mtu):
                    self.mtu_writes += 1
                self._mtu_error = None
            except OSError as e:
                # a host problem (a read-only or wrong MTUFilePath), not one a retry
                # every second mends: logged once per error, tried again on changes
                if self._mtu_error != (self._mtu_file.path, e.errno):
                    self._mtu_error = (self._mtu_file.path, e.errno)
                    log.error("cannot write the workload MTU to %s: %s", self._mtu_file.path, e)
        return True

    def refresh(self) -> None:
        """The periodic refresh: the underlay MTU may have changed, and the kernel
        layer reads the kernel back and repairs drift."""
        self.dirty = True
        if self.made:
            self.kernel_dirty = True
            if self.kernel is not None:
                self.kernel.invalidate()

    def link_event(self, name: str, up: bool, deleted: bool) -> bool:
        """A link changed. One of our devices deleted or down (not by us: we only
        bring them up), or any change of the underlay's (its MTU), makes a
        recompute and a kernel read-back due. Our own writes' events (a device
        made, brought up) are not reacted to, so they cannot loop."""
        under = self.underlay
        if name in t.TUNNEL_DEVICES:
            if up and not deleted:
                return False
        elif under is None or name not in (under.iface, under.iface_v6):
            return False
        if not (self.made or self.encapsulated):
            self.dirty = True   # only the workload MTU can change
            return True
        self.refresh()
        return True

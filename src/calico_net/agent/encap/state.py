"""The overlay's brain, pure: IPPools + Nodes + block affinities + Felix settings +
this host's underlay facts -> `types.Desired`, what the kernel should hold.

Felix's rules (its route resolver and VXLAN manager), with the agent, not BIRD,
programming the routes (BIRD 2 has no krt_tunnel; see docs/encapsulation.md):

* a block affine to another node, inside a pool with `ipipMode` or `vxlanMode`
  `Always` or `CrossSubnet`, gets a route: IPIP `via <node IP> dev tunl0 onlink`,
  VXLAN `via <remote tunnel address> dev vxlan.calico onlink`; with `CrossSubnet`
  and the remote node inside this node's subnet (its `spec.bgp.ipv4Address` prefix,
  IPv6: `ipv6Address`) a plain route `via <node IP> dev <underlay interface>`;
* a remote WorkloadEndpoint's address inside such a pool but not inside a block
  affine to the endpoint's own node (IPAM borrowed it: strict affinity off, that
  node's blocks full) gets a /32 (/128) route to the endpoint's node, built exactly
  like a block route, as Felix's route resolver does; the longer prefix beats the
  block owner's block route, and the owner routes it onward the same way;
* every remote node with a VXLAN tunnel address and MAC gets a permanent neighbour
  (tunnel address -> MAC) and FDB entry (MAC -> node IP) on the device, whether or
  not it has blocks (Felix's VTEPs); a node without them yet gets nothing, its
  blocks no route, until its allocator has written them;
* devices exist while a pool of their kind exists; their MTU is the configured one
  or the underlay's minus the encapsulation's overhead; the workload MTU is the
  smallest MTU of the encapsulations in use, else the underlay's.

A disabled pool still routes its blocks, as in Calico: `disabled` stops new
allocations, the workloads already in it keep working.

Bad data (a CIDR, address or MAC that does not parse, a node without an address)
skips that object: it is reported once through `Problems` and the rest is computed.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from calico_net.agent.encap import types as t

log = logging.getLogger(__name__)

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network
#: a remote WorkloadEndpoint as the overlay keeps it: (its node, its host addresses in
#: canonical text, the policy record's own strings)
Endpoint = tuple[str, tuple[str, ...]]

#: the underlay MTU assumed while none is known (Felix's fallback)
FALLBACK_UNDERLAY_MTU = 1500

_MAC_RE = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")


@dataclass(frozen=True)
class Underlay:
    """This host's underlay facts: the interface holding this node's IPv4 (and
    IPv6) address and the underlay MTU (0: not known)."""

    iface: str | None = None
    mtu: int = 0
    iface_v6: str | None = None


@dataclass(frozen=True)
class EncapSettings:
    """The Felix parameters the overlay uses (config.py's names)."""

    vni: int = t.DEFAULT_VXLAN_VNI
    port: int = t.DEFAULT_VXLAN_PORT
    vxlan_mtu: int = 0
    vxlan_mtu_v6: int = 0
    ipip_mtu: int = 0
    #: blackhole this node's own blocks (no BIRD does it: backend vxlan or none)
    own_blackholes: bool = False

    @classmethod
    def from_values(cls, values: Mapping[str, Any], own_blackholes: bool = False) -> "EncapSettings":
        return cls(vni=values["VXLANVNI"], port=values["VXLANPort"], vxlan_mtu=values["VXLANMTU"],
                   vxlan_mtu_v6=values["VXLANMTUV6"], ipip_mtu=values["IPIPMTU"],
                   own_blackholes=own_blackholes)


class Problems:
    """Bad objects seen, each (key, reason) logged once; `current` is the set of the
    last computation, so a fixed object is forgotten (and logged again if it breaks
    again)."""

    def __init__(self) -> None:
        self.current: set[tuple[str, str]] = set()
        self._next: set[tuple[str, str]] = set()
        self.total = 0

    def begin(self) -> None:
        self._next = set()

    def report(self, key: str, reason: str) -> None:
        item = (key, reason)
        self._next.add(item)
        if item not in self.current:
            self.current.add(item)
            self.total += 1
            log.error("overlay: skipping %s: %s", key, reason)

    def end(self) -> None:
        self.current = self._next


@dataclass(frozen=True)
class _Pool:
    name: str
    net: IPNet
    kind: str          # "ipip" | "vxlan"
    cross_subnet: bool


@dataclass
class _Node:
    ip4: ipaddress.IPv4Interface | None = None
    ip6: ipaddress.IPv6Interface | None = None
    ipip_addr: str | None = None
    vxlan4: str | None = None
    mac4: str | None = None
    vxlan6: str | None = None
    mac6: str | None = None


@dataclass
class _Ctx:
    node_name: str
    problems: Problems
    pools: list[_Pool] = field(default_factory=list)


def _mode(value: Any) -> str:
    return value if value in ("Always", "CrossSubnet") else "Never"


def _parse_pools(pools: Mapping[str, Mapping[str, Any]], ctx: _Ctx) -> list[_Pool]:
    out = []
    for name, spec in sorted(pools.items()):
        if not isinstance(spec, Mapping):
            ctx.problems.report(f"IPPool {name}", "spec is not an object")
            continue
        try:
            net = ipaddress.ip_network(str(spec.get("cidr")), strict=False)
        except ValueError:
            ctx.problems.report(f"IPPool {name}", f"cidr {spec.get('cidr')!r:.80} is not a CIDR")
            continue
        ipip, vxlan = _mode(spec.get("ipipMode")), _mode(spec.get("vxlanMode"))
        if ipip != "Never" and vxlan != "Never":
            ctx.problems.report(f"IPPool {name}", "ipipMode and vxlanMode both enabled")
            continue
        if ipip != "Never":
            if net.version != 4:
                ctx.problems.report(f"IPPool {name}", "ipipMode on an IPv6 pool")
                continue
            out.append(_Pool(name, net, "ipip", ipip == "CrossSubnet"))
        elif vxlan != "Never":
            out.append(_Pool(name, net, "vxlan", vxlan == "CrossSubnet"))
    # the most specific pool first: a block belongs to the longest prefix holding it
    out.sort(key=lambda p: -p.net.prefixlen)
    return out


def _ip(value: Any, version: int) -> str | None:
    """A host address (no prefix) of `version`, normalized; ValueError if bad."""
    a = ipaddress.ip_address(str(value))
    if a.version != version:
        raise ValueError(f"{value!r:.80} is not an IPv{version} address")
    return str(a)


def _mac(value: Any) -> str:
    if not isinstance(value, str) or not _MAC_RE.fullmatch(value):
        raise ValueError(f"{value!r:.80} is not a MAC address")
    return value.replace("-", ":").lower()


def _parse_node(name: str, spec: Mapping[str, Any], ctx: _Ctx) -> _Node:
    """The node's facts; each bad field is reported and left out, not the node."""
    n = _Node()
    key = f"Node {name}"
    if not isinstance(spec, Mapping):
        ctx.problems.report(key, "spec is not an object")
        return n
    bgp = spec.get("bgp") or {}
    if not isinstance(bgp, Mapping):
        ctx.problems.report(key, "spec.bgp is not an object")
        bgp = {}

    def take(what: str, raw: Any, parse: Any) -> Any:
        if raw is None or raw == "":
            return None
        try:
            return parse(raw)
        except (ValueError, TypeError) as e:
            ctx.problems.report(key, f"{what}: {e}")
            return None

    n.ip4 = take("bgp.ipv4Address", bgp.get("ipv4Address"),
                 lambda v: ipaddress.IPv4Interface(str(v)))
    n.ip6 = take("bgp.ipv6Address", bgp.get("ipv6Address"),
                 lambda v: ipaddress.IPv6Interface(str(v)))
    n.ipip_addr = take("bgp.ipv4IPIPTunnelAddr", bgp.get("ipv4IPIPTunnelAddr"), lambda v: _ip(v, 4))
    n.vxlan4 = take("ipv4VXLANTunnelAddr", spec.get("ipv4VXLANTunnelAddr"), lambda v: _ip(v, 4))
    n.mac4 = take("vxlanTunnelMACAddr", spec.get("vxlanTunnelMACAddr"), _mac)
    n.vxlan6 = take("ipv6VXLANTunnelAddr", spec.get("ipv6VXLANTunnelAddr"), lambda v: _ip(v, 6))
    n.mac6 = take("vxlanTunnelMACAddrV6", spec.get("vxlanTunnelMACAddrV6"), _mac)
    return n


def _pool_of(net: IPNet, pools: list[_Pool]) -> _Pool | None:
    for p in pools:
        if p.net.version == net.version and net.subnet_of(p.net):  # type: ignore[arg-type]
            return p
    return None


def _device_mtu(configured: int, underlay_mtu: int, overhead: int) -> int:
    return configured if configured else (underlay_mtu or FALLBACK_UNDERLAY_MTU) - overhead


def desired(
    node_name: str,
    pools: Mapping[str, Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
    affinities: Mapping[str, Iterable[str]],
    settings: EncapSettings,
    underlay: Underlay,
    problems: Problems | None = None,
    endpoints: Mapping[str, Endpoint] | None = None,
) -> t.Desired:
    """What the kernel should hold on `node_name` (see the module docstring).
    `endpoints`: the remote WorkloadEndpoints, key -> (node, host addresses)."""
    out, _, borrowed = compute(node_name, pools, nodes, affinities, settings, underlay, problems,
                               endpoints or {})
    for routes in borrowed.values():
        out.routes.update(routes)
    return out


def compute(
    node_name: str,
    pools: Mapping[str, Mapping[str, Any]],
    nodes: Mapping[str, Mapping[str, Any]],
    affinities: Mapping[str, Iterable[str]],
    settings: EncapSettings,
    underlay: Underlay,
    problems: Problems | None,
    endpoints: Mapping[str, Endpoint],
) -> tuple[t.Desired, "Resolver", dict[str, tuple[t.TunnelRoute, ...]]]:
    """`desired()` in parts, for a caller that updates borrowed routes one endpoint
    at a time: the state without the borrowed routes, the `Resolver` that computes
    an endpoint's borrowed routes from the same inputs, and those routes per
    endpoint key (only endpoints that have some)."""
    problems = problems if problems is not None else Problems()
    problems.begin()
    try:
        ctx = _Ctx(node_name, problems)
        out, resolver = _desired(ctx, pools, nodes, affinities, settings, underlay)
        borrowed = {}
        for key, ep in endpoints.items():
            routes = resolver.routes(key, ep)
            if routes:
                borrowed[key] = routes
        return out, resolver, borrowed
    finally:
        problems.end()


def _desired(ctx: _Ctx, pools: Mapping[str, Mapping[str, Any]], nodes: Mapping[str, Mapping[str, Any]],
             affinities: Mapping[str, Iterable[str]], settings: EncapSettings,
             underlay: Underlay) -> tuple[t.Desired, "Resolver"]:
    out = t.Desired(vxlan_port=settings.port, workload_mtu=underlay.mtu)
    ctx.pools = _parse_pools(pools, ctx)
    has_ipip = any(p.kind == "ipip" for p in ctx.pools)
    has_vx4 = any(p.kind == "vxlan" and p.net.version == 4 for p in ctx.pools)
    has_vx6 = any(p.kind == "vxlan" and p.net.version == 6 for p in ctx.pools)
    if not ctx.pools:
        return out, Resolver(ctx, {}, {}, _Node(), underlay)
    facts = {name: _parse_node(name, spec or {}, ctx) for name, spec in sorted(nodes.items())}
    me = facts.get(ctx.node_name) or _Node()
    umtu = underlay.mtu

    mtus = []
    if has_ipip:
        mtu = _device_mtu(settings.ipip_mtu, umtu, t.IPIP_OVERHEAD)
        out.devices[t.IPIP_DEVICE] = t.TunnelDevice(t.IPIP_DEVICE, "ipip", me.ipip_addr, mtu)
        mtus.append(mtu)
    if has_vx4:
        mtu = _device_mtu(settings.vxlan_mtu, umtu, t.VXLAN_OVERHEAD)
        out.devices[t.VXLAN_DEVICE] = t.TunnelDevice(
            t.VXLAN_DEVICE, "vxlan", me.vxlan4, mtu, vni=settings.vni, port=settings.port,
            local=str(me.ip4.ip) if me.ip4 else None, parent=underlay.iface, mac=me.mac4)
        mtus.append(mtu)
    if has_vx6:
        mtu = _device_mtu(settings.vxlan_mtu_v6, umtu, t.VXLAN_V6_OVERHEAD)
        out.devices[t.VXLAN_V6_DEVICE] = t.TunnelDevice(
            t.VXLAN_V6_DEVICE, "vxlan", me.vxlan6, mtu, vni=settings.vni, port=settings.port,
            local=str(me.ip6.ip) if me.ip6 else None, parent=underlay.iface_v6 or underlay.iface,
            mac=me.mac6)
        mtus.append(mtu)
    out.workload_mtu = min(mtus)

    if has_ipip:
        # Felix admits IP-in-IP from all hosts (its all-hosts set), this one included
        out.ipip_sources = frozenset(str(n.ip4.ip) for n in facts.values() if n.ip4)
    if has_vx4 or has_vx6:
        # the VTEPs (tunnel address, MAC and underlay address known), this one included
        srcs = set()
        for n in facts.values():
            if has_vx4 and n.vxlan4 and n.mac4 and n.ip4:
                srcs.add(str(n.ip4.ip))
            if has_vx6 and n.vxlan6 and n.mac6 and n.ip6:
                srcs.add(str(n.ip6.ip))
        out.vxlan_sources = frozenset(srcs)

    # VTEPs: every remote node with a tunnel address, a MAC and an underlay address
    for name, n in facts.items():
        if name == ctx.node_name:
            continue
        if has_vx4 and n.vxlan4 and n.mac4 and n.ip4:
            out.neighbours.add(t.Neighbour(t.VXLAN_DEVICE, n.vxlan4, n.mac4))
            out.fdb.add(t.FdbEntry(t.VXLAN_DEVICE, n.mac4, str(n.ip4.ip)))
        if has_vx6 and n.vxlan6 and n.mac6 and n.ip6:
            out.neighbours.add(t.Neighbour(t.VXLAN_V6_DEVICE, n.vxlan6, n.mac6))
            out.fdb.add(t.FdbEntry(t.VXLAN_V6_DEVICE, n.mac6, str(n.ip6.ip)))

    #: (node, IP version, prefix length) -> the blocks' network numbers, for the
    #: borrowed-address test: integers, so 10,000 endpoints cost a few set lookups each
    owned: dict[tuple[str, int, int], set[int]] = {}
    for name, blocks in sorted(affinities.items()):
        if name == ctx.node_name:
            # own blocks: the workload routes of this host, and a blackhole for the
            # rest of each block when BIRD does not write one
            if settings.own_blackholes:
                out.blackholes.update(_own_blocks(ctx, blocks))
            continue
        n = facts.get(name)
        for raw in sorted(blocks):
            try:
                net = ipaddress.ip_network(str(raw), strict=True)
            except ValueError:
                ctx.problems.report(f"affinity {name}/{raw!r:.60}", "not a block CIDR")
                continue
            pool = _pool_of(net, ctx.pools)
            if pool is None:
                continue
            owned.setdefault((name, net.version, net.prefixlen), set()).add(
                int(net.network_address) >> (net.max_prefixlen - net.prefixlen))
            if n is None:
                ctx.problems.report(f"affinity {name}/{net}", "no Node of that name")
                continue
            route = _route(ctx, name, n, str(net), net.version, pool, me, underlay)
            if route is not None:
                out.routes.add(route)
    return out, Resolver(ctx, owned, facts, me, underlay)


def _address_number(addr: str) -> tuple[int, int]:
    """(IP version, the address as a number) of an address in canonical text."""
    if ":" in addr:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
    return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")


class Resolver:
    """The borrowed-address routes of one endpoint (Felix's route resolver): each of
    its addresses in an encapsulated pool but in no block affine to the endpoint's
    node gets a /32 (/128) route to that node. Built from one computation's inputs;
    a change of any of them needs a new one. Pools and own blocks are compared as
    integers, so an address costs a few set lookups, not a walk of every block."""

    def __init__(self, ctx: _Ctx, owned: Mapping[tuple[str, int, int], set[int]],
                 facts: Mapping[str, _Node], me: _Node, underlay: Underlay) -> None:
        self.ctx, self.facts, self.me, self.underlay = ctx, facts, me, underlay
        #: most specific first, as ctx.pools: (version, host bits, network number, pool)
        self.pools = [(p.net.version, p.net.max_prefixlen - p.net.prefixlen,
                       int(p.net.network_address) >> (p.net.max_prefixlen - p.net.prefixlen), p)
                      for p in ctx.pools]
        self.own: dict[str, list[tuple[int, int, set[int]]]] = {}
        for (name, version, plen), nets in owned.items():
            bits = 32 if version == 4 else 128
            self.own.setdefault(name, []).append((version, bits - plen, nets))

    def routes(self, key: str, ep: Endpoint) -> tuple[t.TunnelRoute, ...]:
        node, addrs = ep
        if node == self.ctx.node_name or not self.pools:
            return ()    # local: the workload routes
        out = []
        for addr in addrs:
            version, value = _address_number(addr)
            pool = None
            for v, host_bits, net, p in self.pools:
                if v == version and value >> host_bits == net:
                    pool = p
                    break
            if pool is None:
                continue
            if any(v == version and value >> host_bits in nets
                   for v, host_bits, nets in self.own.get(node, ())):
                continue    # inside its node's own block: the block route covers it
            n = self.facts.get(node)
            if n is None:
                self.ctx.problems.report(f"WorkloadEndpoint {key}", f"no Node {node!r:.60}: its "
                                         "borrowed addresses get no route")
                continue
            route = _route(self.ctx, node, n, f"{addr}/{32 if version == 4 else 128}", version, pool,
                           self.me, self.underlay)
            if route is not None:
                out.append(route)
        return tuple(out)


def _own_blocks(ctx: _Ctx, blocks: Iterable[str]) -> list[str]:
    out = []
    for raw in blocks:
        try:
            net = ipaddress.ip_network(str(raw), strict=True)
        except ValueError:
            ctx.problems.report(f"affinity {ctx.node_name}/{raw!r:.60}", "not a block CIDR")
            continue
        if _pool_of(net, ctx.pools) is not None:
            out.append(str(net))
    return out


def _route(ctx: _Ctx, name: str, n: _Node, dst: str, version: int, pool: _Pool, me: _Node,
           underlay: Underlay) -> t.TunnelRoute | None:
    """The route to `dst` (a block, or a borrowed /32 or /128) on node `name`."""
    v6 = version == 6
    remote = n.ip6 if v6 else n.ip4
    if remote is None:
        ctx.problems.report(f"Node {name}", f"no bgp.ipv{version}Address: its blocks get no route")
        return None
    mine = me.ip6 if v6 else me.ip4
    if pool.cross_subnet and mine is not None and remote.ip in mine.network:
        dev = (underlay.iface_v6 or underlay.iface) if v6 else underlay.iface
        if dev is None:
            ctx.problems.report("underlay", f"no interface holds this node's IPv{version} address")
            return None
        return t.TunnelRoute(dst, str(remote.ip), dev, False)
    if pool.kind == "ipip":
        return t.TunnelRoute(dst, str(remote.ip), t.IPIP_DEVICE, True)
    tunnel = n.vxlan6 if v6 else n.vxlan4
    mac = n.mac6 if v6 else n.mac4
    if not tunnel or not mac:
        return None    # its allocator has not written them yet: no route until then
    return t.TunnelRoute(dst, tunnel, t.VXLAN_V6_DEVICE if v6 else t.VXLAN_DEVICE, True)

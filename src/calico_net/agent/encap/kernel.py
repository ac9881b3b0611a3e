"""The overlay's kernel side: `EncapKernel.apply(desired)` writes a `types.Desired`
into the current network namespace and removes what it made that is no longer
desired — and nothing else.

What counts as ours (so a restart, which has no memory, still converges):

* devices: Calico's names, `tunl0`, `vxlan.calico`, `vxlan-v6.calico`;
* routes: main table, protocol 80 (RTPROT_FELIX) *with a gateway*, and blackholes
  of protocol 80 (this node's own blocks, when no BIRD writes them). Workload routes
  share protocol 80 but are unicast without a gateway, which is how the two owners
  tell their routes apart (`felix.rtnetlink.Netlink.routes` skips ours the same way);
* neighbours and FDB entries: the permanent ones on our VXLAN devices (the others
  are the kernel's cache and expire by themselves).

Every diff is computed from a dump of the kernel, but only when the desired state
changed since the last apply that went through without an error: the agent calls
`apply` on every datastore change, and the steady state must not cost a dump.

Links and addresses go through pyroute2 (a handful of messages; its vxlan
attribute encoding is worth having). Routes, neighbours and FDB entries scale with
the number of blocks and nodes, so they go through the agent's own rtnetlink codec
(`kernel_codec`): one dump each, one batched sendmsg for all writes.

This module is imported only when a pool is encapsulated, so pyroute2 costs the
agent's start-up nothing otherwise.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import re
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as PyrouteError

from ..felix.rtnetlink import Netlink
from . import kernel_codec as kc
from . import types as t

log = logging.getLogger(__name__)

__all__ = ["EncapKernel", "COUNT_KEYS"]

IFF_UP = 0x1
IFA_F_NODAD = 0x02

#: an interface name the kernel could hold (IFNAMSIZ, no '/', no whitespace)
_IFNAME = re.compile(r"^[^/\s:]{1,15}$")

#: device name -> (kind, address family): anything else in a Desired is refused
_DEVICE_KINDS = {
    t.IPIP_DEVICE: ("ipip", socket.AF_INET),
    t.VXLAN_DEVICE: ("vxlan", socket.AF_INET),
    t.VXLAN_V6_DEVICE: ("vxlan", socket.AF_INET6),
}

_KINDS = ("devices", "routes", "neighbours", "fdb")
_VERBS = ("added", "changed", "removed")
#: the keys of what `apply` returns, always all present
COUNT_KEYS = tuple(f"{k}_{v}" for k in _KINDS for v in _VERBS) + ("errors",)

_KERNEL_ERRORS = (PyrouteError, OSError)

#: the wanted-route value of a blackhole (this node's own block, no BIRD to write it)
_BLACKHOLE = (b"", 0, False)


@dataclass(frozen=True)
class _Snapshot:
    """The kernel-relevant part of a Desired (the nft and MTU fields are not ours)."""

    devices: tuple[tuple[str, t.TunnelDevice], ...]
    routes: frozenset[t.TunnelRoute]
    neighbours: frozenset[t.Neighbour]
    fdb: frozenset[t.FdbEntry]
    blackholes: frozenset[str]

    @classmethod
    def of(cls, d: t.Desired) -> "_Snapshot":
        return cls(tuple(sorted(d.devices.items())), frozenset(d.routes),
                   frozenset(d.neighbours), frozenset(d.fdb), frozenset(d.blackholes))


class EncapKernel:
    """Writes `Desired` states into the kernel of the network namespace it was
    made in. Not thread-safe: one caller (the overlay's loop)."""

    def __init__(self) -> None:
        self.ipr = IPRoute()
        self.nl = Netlink()
        #: what the last apply without any error wrote; None forces a dump
        self._applied: _Snapshot | None = None

    def close(self) -> None:
        self.ipr.close()
        self.nl.close()

    def invalidate(self) -> None:
        """Make the next `apply` read the kernel again even if nothing changed (a
        periodic resync, or a link event that may have removed something of ours)."""
        self._applied = None

    def apply(self, desired: t.Desired) -> dict[str, int]:
        """Make the kernel match `desired`; returns counts (see COUNT_KEYS). Kernel
        refusals are logged and counted in "errors", never raised: one bad entry
        must not keep the rest of the overlay down."""
        counts = dict.fromkeys(COUNT_KEYS, 0)
        snap = _Snapshot.of(desired)
        if snap == self._applied:
            return counts
        self._applied = None
        ifindex = self._devices(desired, counts)
        self._routes(desired, ifindex, counts)
        self._neighbours(desired, ifindex, counts)
        self._fdb(desired, ifindex, counts)
        self._remove_devices(desired, counts)
        if not counts["errors"]:
            self._applied = snap
        return counts

    # ------------------------------------------------------------------ devices

    def _link(self, name: str):
        """The RTM_NEWLINK message of interface `name`, None if there is none."""
        try:
            return self.ipr.link("get", ifname=name)[0]
        except PyrouteError as e:
            if e.code == errno.ENODEV:
                return None
            raise

    def _devices(self, desired: t.Desired, counts: dict[str, int]) -> dict[str, int]:
        """Create/repair every desired device; returns {name: ifindex} of those now
        right (routes, neighbours and FDB entries go only onto those)."""
        out: dict[str, int] = {}
        for name, dev in sorted(desired.devices.items()):
            try:
                index = self._device(name, dev, counts)
            except _KERNEL_ERRORS as e:
                log.error("tunnel device %s: the kernel refused: %s", name, e)
                index = None
            if index is None:
                counts["errors"] += 1
            else:
                out[name] = index
        return out

    def _device(self, name: str, dev: t.TunnelDevice, counts: dict[str, int]) -> int | None:
        spec = _DEVICE_KINDS.get(name)
        if spec is None or dev.name != name or spec[0] != dev.kind:
            log.error("not creating tunnel device %r of kind %r: not one of Calico's", name, dev.kind)
            return None
        kind, family = spec
        address = None
        if dev.address is not None:
            address = kc.ip(dev.address, family)
            if address is None:
                log.error("tunnel device %s: bad tunnel address %r", name, dev.address)
                return None
        mac = None
        if dev.mac is not None:
            mac = kc.mac(dev.mac)
            if mac is None:
                log.error("tunnel device %s: bad MAC %r", name, dev.mac)
                return None
        if not 68 <= dev.mtu <= 65535:
            log.error("tunnel device %s: bad MTU %r", name, dev.mtu)
            return None
        link = self._link(name)
        added = changed = False
        if kind == "vxlan":
            create = self._vxlan_args(dev, family)
            if create is None:
                return None
            if link is not None and not self._vxlan_matches(link, create):
                # vni, port, local address and parent are fixed at creation
                log.info("recreating %s: its VXLAN parameters changed", name)
                self.ipr.link("del", index=link["index"])
                link, changed = None, True
            if link is None:
                extra = {"address": dev.mac.lower()} if dev.mac else {}
                self.ipr.link("add", ifname=name, kind="vxlan", mtu=dev.mtu, **create, **extra)
                added = not changed
                link = self._link(name)
        elif link is None:
            # With the ipip module loaded every namespace has its fallback tunl0;
            # it is absent only when fb_tunnels_only_for_init_net hides it.
            self.ipr.link("add", ifname=name, kind="ipip", mtu=dev.mtu)
            added = True
            link = self._link(name)
        if link is None:
            log.error("tunnel device %s vanished while being configured", name)
            return None
        index = link["index"]
        settings: dict[str, object] = {}
        if link.get_attr("IFLA_MTU") != dev.mtu:
            settings["mtu"] = dev.mtu
        if mac is not None and str(link.get_attr("IFLA_ADDRESS") or "").lower() != dev.mac.lower():
            settings["address"] = dev.mac.lower()
        if not link["flags"] & IFF_UP:
            settings["state"] = "up"
        if settings:
            self.ipr.link("set", index=index, **settings)
            changed = True
        if self._set_addresses(index, family, address):
            changed = True
        if added:
            counts["devices_added"] += 1
        elif changed:
            counts["devices_changed"] += 1
        return index

    def _vxlan_args(self, dev: t.TunnelDevice, family: int) -> dict[str, object] | None:
        """pyroute2's keywords for creating `dev`; None (logged) when one is bad or
        the parent interface is missing."""
        if not (0 < dev.vni < 1 << 24 and 0 < dev.port < 1 << 16):
            log.error("tunnel device %s: bad VNI %r or port %r", dev.name, dev.vni, dev.port)
            return None
        args: dict[str, object] = {"vxlan_id": dev.vni, "vxlan_port": dev.port, "vxlan_learning": 0}
        if dev.local is not None:
            local = kc.ip(dev.local, family)
            if local is None:
                log.error("tunnel device %s: bad local address %r", dev.name, dev.local)
                return None
            key = "vxlan_local" if family == socket.AF_INET else "vxlan_local6"
            args[key] = socket.inet_ntop(family, local)
        if dev.parent is not None:
            parent = self._link(dev.parent) if _IFNAME.match(dev.parent) else None
            if parent is None:
                log.error("tunnel device %s: parent interface %r does not exist", dev.name, dev.parent)
                return None
            args["vxlan_link"] = parent["index"]
        return args

    @staticmethod
    def _vxlan_matches(link, want: dict[str, object]) -> bool:
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return False
        data = info.get_attr("IFLA_INFO_DATA")
        if data is None:
            return False
        have = {
            "vxlan_id": data.get_attr("IFLA_VXLAN_ID"),
            "vxlan_port": data.get_attr("IFLA_VXLAN_PORT"),
            "vxlan_learning": data.get_attr("IFLA_VXLAN_LEARNING") or 0,
        }
        for key, attr_name in (("vxlan_local", "IFLA_VXLAN_LOCAL"), ("vxlan_local6", "IFLA_VXLAN_LOCAL6"),
                               ("vxlan_link", "IFLA_VXLAN_LINK")):
            value = data.get_attr(attr_name)
            if value in (None, 0, "0.0.0.0", "::"):
                continue
            have[key] = ipaddress.ip_address(value).compressed if key != "vxlan_link" else value
        want = {k: (ipaddress.ip_address(v).compressed if k.startswith("vxlan_local") else v)
                for k, v in want.items()}
        return have == want

    def _addresses(self, index: int) -> list[tuple[int, str, int]]:
        """(family, address, prefix length) on the device, link-local IPv6 left out:
        the kernel makes those itself and they are not the tunnel address."""
        out = []
        for msg in self.ipr.addr("dump", index=index):
            if msg["index"] != index:
                continue
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr is None:
                continue
            if msg["family"] == socket.AF_INET6 and ipaddress.ip_address(addr).is_link_local:
                continue
            out.append((msg["family"], addr, msg["prefixlen"]))
        return out

    def _set_addresses(self, index: int, family: int, address: bytes | None) -> bool:
        """Leave exactly `address` (as a host prefix) on the device; True if changed."""
        plen = 32 if family == socket.AF_INET else 128
        want = (family, socket.inet_ntop(family, address), plen) if address is not None else None
        changed = False
        have = self._addresses(index)
        for fam, addr, prefixlen in have:
            if want is not None and (fam, ipaddress.ip_address(addr).compressed, prefixlen) == want:
                continue
            self.ipr.addr("del", index=index, address=addr, prefixlen=prefixlen, family=fam)
            changed = True
        if want is not None and not any((f, ipaddress.ip_address(a).compressed, p) == want for f, a, p in have):
            extra = {"flags": IFA_F_NODAD} if family == socket.AF_INET6 else {}
            self.ipr.addr("add", index=index, address=want[1], prefixlen=plen, family=family, **extra)
            changed = True
        return changed

    def _remove_devices(self, desired: t.Desired, counts: dict[str, int]) -> None:
        for name in t.TUNNEL_DEVICES:
            if name in desired.devices:
                continue
            try:
                link = self._link(name)
                if link is None:
                    continue
                if name == t.IPIP_DEVICE:
                    # tunl0 is the ipip module's fallback device: the kernel
                    # ignores deleting it (it goes with the namespace or module),
                    # so "removed" means down and without our address; down also
                    # makes the kernel drop any route left through it.
                    changed = self._set_addresses(link["index"], socket.AF_INET, None)
                    if link["flags"] & IFF_UP:
                        self.ipr.link("set", index=link["index"], state="down")
                        changed = True
                    if changed:
                        counts["devices_removed"] += 1
                else:
                    self.ipr.link("del", index=link["index"])
                    counts["devices_removed"] += 1
            except _KERNEL_ERRORS as e:
                log.error("removing tunnel device %s: %s", name, e)
                counts["errors"] += 1

    # ------------------------------------------------------------------ routes

    def _oif(self, dev: str, ifindex: dict[str, int], cache: dict[str, int | None]) -> int | None:
        """The ifindex routes through `dev` use: one of our devices only if it was
        configured, any other (an underlay interface, CrossSubnet) by name."""
        if dev in _DEVICE_KINDS:
            return ifindex.get(dev)
        if dev not in cache:
            link = None
            if _IFNAME.match(dev):
                try:
                    link = self._link(dev)
                except _KERNEL_ERRORS as e:
                    log.error("looking up interface %r: %s", dev, e)
            cache[dev] = link["index"] if link is not None else None
        return cache[dev]

    def _wanted_routes(self, desired: t.Desired, ifindex: dict[str, int],
                       counts: dict[str, int]) -> dict[kc.RouteKey, tuple[bytes, int, bool]]:
        want: dict[kc.RouteKey, tuple[bytes, int, bool]] = {}
        cache: dict[str, int | None] = {}
        # sorted: when two routes claim one destination, the same one wins every time
        for r in sorted(desired.routes, key=lambda r: (r.dst, r.dev, r.gateway, r.onlink)):
            try:
                net = ipaddress.ip_network(r.dst)
            except ValueError:
                log.error("not routing %r: not a CIDR", r.dst)
                counts["errors"] += 1
                continue
            family = socket.AF_INET if net.version == 4 else socket.AF_INET6
            gateway = kc.ip(r.gateway, family)
            if gateway is None:
                log.error("not routing %s: bad gateway %r", r.dst, r.gateway)
                counts["errors"] += 1
                continue
            oif = self._oif(r.dev, ifindex, cache)
            if oif is None:
                log.warning("not routing %s via %s: device %r missing or not configured", r.dst, r.gateway, r.dev)
                counts["errors"] += 1
                continue
            key = (family, net.network_address.packed, net.prefixlen)
            if key in want:
                log.warning("route %s: more than one next hop desired; keeping one", r.dst)
                continue
            want[key] = (gateway, oif, r.onlink)
        for dst in sorted(desired.blackholes):
            try:
                net = ipaddress.ip_network(dst)
            except ValueError:
                log.error("not blackholing %r: not a CIDR", dst)
                counts["errors"] += 1
                continue
            key = (socket.AF_INET if net.version == 4 else socket.AF_INET6, net.network_address.packed,
                   net.prefixlen)
            want.setdefault(key, _BLACKHOLE)
        return want

    def _routes(self, desired: t.Desired, ifindex: dict[str, int], counts: dict[str, int]) -> None:
        want = self._wanted_routes(desired, ifindex, counts)
        try:
            have = kc.dump_routes(self.nl.nl)
        except _KERNEL_ERRORS as e:
            log.error("reading routes: %s", e)
            counts["errors"] += 1
            return
        deletes: list[tuple[int, int, bytes]] = []
        right: set[kc.RouteKey] = set()
        present: set[kc.RouteKey] = set()
        for kr in have:
            w = want.get(kr.key)
            if w is not None and (kr.gateway is not None or kr.blackhole) \
                    and kc.is_default_priority(kr.key[0], kr.priority):
                present.add(kr.key)          # the slot a replace overwrites
                if (w is _BLACKHOLE) == kr.blackhole and (kr.blackhole or (kr.gateway, kr.oif, kr.onlink) == w):
                    right.add(kr.key)
                continue
            deletes.append(kc.route_delete(kr))
        replaces: list[tuple[int, int, bytes]] = []
        replaced: list[kc.RouteKey] = []
        for key, w in want.items():
            if key not in right:
                replaces.append(kc.route_blackhole(key) if w is _BLACKHOLE else kc.route_replace(key, *w))
                replaced.append(key)
        if not deletes and not replaces:
            return
        errs = self._batch(deletes + replaces)
        for err in errs[:len(deletes)]:
            if err in (0, errno.ESRCH):      # ESRCH: already gone (its device went down)
                counts["routes_removed"] += 1
            else:
                log.error("deleting an overlay route: %s", errno.errorcode.get(err, err))
                counts["errors"] += 1
        for key, err in zip(replaced, errs[len(deletes):]):
            if err:
                log.error("route %s/%d refused: %s", socket.inet_ntop(key[0], key[1]), key[2],
                          errno.errorcode.get(err, err))
                counts["errors"] += 1
            else:
                counts["routes_changed" if key in present else "routes_added"] += 1

    def _batch(self, msgs: list[tuple[int, int, bytes]]) -> list[int]:
        """Send the messages in batches; the errno of each (a failed send fails all)."""
        if not msgs:
            return []
        try:
            return self.nl.request_batch(msgs)
        except OSError as e:
            log.error("netlink write failed: %s", e)
            return [e.errno or errno.EIO] * len(msgs)

    # ------------------------------------------------------ neighbours and FDB

    def _vxlan_index(self, dev: str, ifindex: dict[str, int]) -> tuple[int, int] | None:
        """(ifindex, family) of one of our configured VXLAN devices."""
        spec = _DEVICE_KINDS.get(dev)
        if spec is None or spec[0] != "vxlan" or dev not in ifindex:
            return None
        return ifindex[dev], spec[1]

    def _neighbours(self, desired: t.Desired, ifindex: dict[str, int], counts: dict[str, int]) -> None:
        want: dict[tuple[int, bytes], tuple[int, bytes]] = {}   # (ifindex, ip) -> (family, mac)
        for n in sorted(desired.neighbours, key=lambda n: (n.dev, n.ip, n.mac)):
            dev = self._vxlan_index(n.dev, ifindex)
            ip = kc.ip(n.ip, dev[1]) if dev else None
            mac = kc.mac(n.mac)
            if dev is None or ip is None or mac is None:
                log.warning("not adding neighbour %s -> %s on %s: bad entry or device not configured",
                            n.ip, n.mac, n.dev)
                counts["errors"] += 1
                continue
            want.setdefault((dev[0], ip), (dev[1], mac))
        msgs: list[tuple[int, int, bytes]] = []
        kinds: list[str] = []
        right: set[tuple[int, bytes]] = set()
        present: set[tuple[int, bytes]] = set()
        for name in (t.VXLAN_DEVICE, t.VXLAN_V6_DEVICE):
            dev = self._vxlan_index(name, ifindex)
            if dev is None:
                continue   # gone, or going: its neighbours go with it
            try:
                entries = kc.dump_neigh(self.nl.nl, dev[1], dev[0])
            except _KERNEL_ERRORS as e:
                log.error("reading neighbours of %s: %s", name, e)
                counts["errors"] += 1
                continue
            for ip, mac, state in entries:
                w = want.get((dev[0], ip))
                if w is not None:
                    present.add((dev[0], ip))
                    if state & kc.NUD_PERMANENT and mac == w[1]:
                        right.add((dev[0], ip))
                elif state & kc.NUD_PERMANENT:
                    msgs.append(kc.neigh_msg(kc.RTM_DELNEIGH, dev[1], dev[0], ip, mac))
                    kinds.append("neighbours_removed")
        for (index, ip), (family, mac) in want.items():
            if (index, ip) not in right:
                msgs.append(kc.neigh_msg(kc.RTM_NEWNEIGH, family, index, ip, mac))
                kinds.append("neighbours_changed" if (index, ip) in present else "neighbours_added")
        self._count(self._batch(msgs), kinds, counts, "neighbour")

    def _fdb(self, desired: t.Desired, ifindex: dict[str, int], counts: dict[str, int]) -> None:
        want: dict[tuple[int, bytes], bytes] = {}    # (ifindex, mac) -> remote address
        for f in sorted(desired.fdb, key=lambda f: (f.dev, f.mac, f.dst)):
            dev = self._vxlan_index(f.dev, ifindex)
            dst = kc.ip(f.dst, dev[1]) if dev else None
            mac = kc.mac(f.mac)
            if dev is None or dst is None or mac is None:
                log.warning("not adding FDB entry %s -> %s on %s: bad entry or device not configured",
                            f.mac, f.dst, f.dev)
                counts["errors"] += 1
                continue
            if want.setdefault((dev[0], mac), dst) != dst:
                log.warning("FDB entry %s on %s: more than one remote desired; keeping one", f.mac, f.dev)
        deletes: list[tuple[tuple[int, bytes], tuple[int, int, bytes]]] = []
        had: set[tuple[int, bytes]] = set()          # (ifindex, mac) with some entry
        right: set[tuple[int, bytes]] = set()
        for name in (t.VXLAN_DEVICE, t.VXLAN_V6_DEVICE):
            dev = self._vxlan_index(name, ifindex)
            if dev is None:
                continue
            try:
                entries = kc.dump_fdb(self.nl.nl, dev[0])
            except _KERNEL_ERRORS as e:
                log.error("reading the FDB of %s: %s", name, e)
                counts["errors"] += 1
                continue
            for mac, dst, state in entries:
                if not state & kc.NUD_PERMANENT or dst is None:
                    continue
                key = (dev[0], mac)
                had.add(key)
                if want.get(key) == dst:
                    right.add(key)
                else:
                    deletes.append((key, kc.fdb_msg(kc.RTM_DELNEIGH, dev[0], mac, dst)))
        adds = [(k, kc.fdb_msg(kc.RTM_NEWNEIGH, k[0], k[1], dst)) for k, dst in want.items() if k not in right]
        # a MAC whose remote changed is one delete and one add: counted once, as
        # changed (deletes go first, so the add then creates the entry afresh)
        kinds = ["" if k in want else "fdb_removed" for k, _ in deletes]
        kinds += ["fdb_changed" if k in had else "fdb_added" for k, _ in adds]
        errs = self._batch([m for _, m in deletes] + [m for _, m in adds])
        self._count(errs, kinds, counts, "FDB entry")

    @staticmethod
    def _count(errs: list[int], kinds: list[str], counts: dict[str, int], what: str) -> None:
        for err, kind in zip(errs, kinds):
            if err and not (err == errno.ENOENT and not kind.endswith(("_added", "_changed"))):
                log.error("%s write refused: %s", what, errno.errorcode.get(err, err))
                counts["errors"] += 1
            elif kind:
                counts[kind] += 1

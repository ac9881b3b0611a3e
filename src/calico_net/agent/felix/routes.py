"""Workload routes: a /32 (/128) per local endpoint address to its `cali…` interface.

Owns `RouteManager` — pure bookkeeping of what must exist (endpoints → addresses →
interface) and what we believe exists; `apply()` writes only the differences of
what was marked dirty, `resync()` dumps the kernel's routes and repairs drift —
and the checks that keep an endpoint to host routes on its own interface
(`host_routes`, `interface_problem`). The kernel side is a `backends.RouteBackend`:
the rtnetlink one (`rtnetlink.Netlink`) or, in unit tests, a fake with the same methods.

Only routes with our protocol number (`RTPROT_FELIX = 80`) in the main table are
ever read as ours, changed or deleted. 80 is what Calico's Felix uses; it is not in
iproute2's `rt_protos` (kernel 2, boot 3, static 4, bird 12, bgp 186, …), so no
routing daemon here owns it, and `ip route show proto 80` lists exactly our routes.
IPv4 routes are scope link (the address is on the wire behind the interface);
IPv6 routes carry the kernel's usual universe scope.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from .rtnetlink import RT_TABLE_MAIN, RTPROT_FELIX, Link, Route, RouteOp

if TYPE_CHECKING:
    from .backends import RouteBackend

log = logging.getLogger(__name__)


_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_HOST_LEN = {_AF_INET: 32, _AF_INET6: 128}


def host_routes(nets: Iterable[str], field: str = "ipNetworks") -> tuple[list[Route], str | None]:
    """The host routes (a /32 or /128 each) for an endpoint's ipNetworks, and the
    first problem found (None if every entry is a host address).

    Calico allows only host addresses here: libcalico-go's validator refuses a
    WorkloadEndpoint whose ipNetworks entry "contains multiple addresses" ("The
    configured networks only support /32 (for IPv4) and /128 (for IPv6)"). So an
    entry wider than that (0.0.0.0/0, a /24, ::/0) is never routed — an endpoint
    can never install a default route or take a subnet — nor is one that does not
    parse; the caller refuses the endpoint."""
    out: list[Route] = []
    problem = None
    for n in nets:
        if isinstance(n, str) and n.endswith("/32"):
            # the common case (a validated "a.b.c.d/32"), without the slower ipaddress
            a = n[:-3]
            try:
                if socket.inet_ntop(_AF_INET, socket.inet_pton(_AF_INET, a)) == a:
                    out.append((_AF_INET, a, 32))
                    continue
            except (OSError, ValueError):
                pass
        try:
            if not isinstance(n, str):
                raise ValueError(n)
            net = ipaddress.ip_network(n, strict=False)
        except ValueError:
            problem = problem or f"{field} entry {n!r} is not an address or CIDR"
            continue
        if net.prefixlen != net.max_prefixlen:
            problem = problem or (f"{field} entry {n} is wider than a host address "
                                  f"(/{net.max_prefixlen}, as Calico requires)")
            continue
        out.append((_AF_INET if net.version == 4 else _AF_INET6, str(net.network_address), net.prefixlen))
    return out, problem


def endpoint_routes(nets: Iterable[str]) -> list[Route]:
    """Host routes for an endpoint's ipNetworks (see `host_routes`; entries that are
    not host addresses are left out and logged)."""
    routes, problem = host_routes(nets)
    if problem:
        log.warning("ignoring %s", problem)
    return routes


def interface_problem(ifname: object, prefixes: tuple[str, ...]) -> str | None:
    """Why a local workload endpoint may not use interface `ifname`, or None.

    Felix only ever touches interfaces that match its interface prefix (its route
    table ignores every other interface: "not a Calico interface"); anything else
    (eth0, lo, a bond) is the host's, and an endpoint naming it must not get
    routes, sysctls or a place in the policy maps."""
    if not isinstance(ifname, str) or not ifname.startswith(prefixes):
        return (f"interface {ifname!r} does not start with an interface prefix "
                f"({','.join(prefixes)})")
    return None


@dataclass
class RouteStats:
    added: int = 0
    removed: int = 0
    failed: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.failed)


@dataclass
class _Endpoint:
    ifname: str | None
    routes: tuple[Route, ...]


class RouteManager:
    """What routes must exist, from local endpoints and links; writes differences."""

    def __init__(self, backend: RouteBackend, *, protocol: int = RTPROT_FELIX, table: int = RT_TABLE_MAIN,
                 iface_prefixes: tuple[str, ...] = ("cali",)) -> None:
        self.nl = backend
        #: only interfaces starting with one of these are ever routed to or configured
        self.iface_prefixes = tuple(iface_prefixes)
        self.protocol = protocol
        self.table = table
        self.endpoints: dict[str, _Endpoint] = {}
        self.claims: dict[Route, dict[str, str | None]] = {}   # route -> {endpoint key: ifname}
        self.links: dict[str, Link] = {}
        self.programmed: dict[Route, int] = {}
        self.dirty: set[Route] = set()
        self.synced = False   # False until the first full resync read the kernel
        self.if_endpoints: dict[str, set[str]] = {}  # interface name -> keys of its endpoints
        self.if_v6: dict[str, int] = {}          # interface name -> those with IPv6 addresses
        self.ifaces_dirty: set[str] = set()      # interfaces whose sysctls may need writing
        self.configured: dict[str, int] = {}     # interface name -> ifindex we configured

    # --- inputs ---
    def set_endpoint(self, key: str, ifname: str | None, nets: Iterable[str]) -> str | None:
        """A local endpoint's interface and ipNetworks. Refused (and forgotten, as if
        removed) when its interface does not start with an interface prefix or an
        address is not a host address (see `interface_problem`, `host_routes`):
        returns the problem then, else None. An endpoint without an interface
        gets no routes."""
        routes, problem = host_routes(nets)
        if problem is None and ifname is not None:
            problem = interface_problem(ifname, self.iface_prefixes)
        if problem is not None:
            self.remove_endpoint(key)
            return problem
        new = _Endpoint(ifname, tuple(routes))
        old = self.endpoints.get(key)
        if old == new:
            return None
        if old is not None:
            self._unclaim(key, old)
        self.endpoints[key] = new
        if ifname:
            self.if_endpoints.setdefault(ifname, set()).add(key)
            if any(r[0] == socket.AF_INET6 for r in new.routes):
                self.if_v6[ifname] = self.if_v6.get(ifname, 0) + 1
            self.ifaces_dirty.add(ifname)
        for r in new.routes:
            self.claims.setdefault(r, {})[key] = ifname
            self.dirty.add(r)
        return None

    def remove_endpoint(self, key: str) -> None:
        old = self.endpoints.pop(key, None)
        if old is not None:
            self._unclaim(key, old)

    def _unclaim(self, key: str, ep: _Endpoint) -> None:
        if ep.ifname:
            if any(r[0] == socket.AF_INET6 for r in ep.routes):
                v6 = self.if_v6.get(ep.ifname, 0) - 1
                if v6 > 0:
                    self.if_v6[ep.ifname] = v6
                else:
                    self.if_v6.pop(ep.ifname, None)
            users = self.if_endpoints.get(ep.ifname)
            if users is not None:
                users.discard(key)
                if not users:
                    del self.if_endpoints[ep.ifname]
                    self.configured.pop(ep.ifname, None)
        for r in ep.routes:
            c = self.claims.get(r)
            if c is not None:
                c.pop(key, None)
                if not c:
                    del self.claims[r]
            self.dirty.add(r)

    def set_links(self, links: Iterable[Link]) -> None:
        """A full link listing (start, or after lost events)."""
        fresh = {l.name: l for l in links}
        if not self.links:     # the first listing: every link is new
            for name, link in fresh.items():
                self._link_changed(name, link)
            return
        for name in set(self.links) | set(fresh):
            if self.links.get(name) != fresh.get(name):
                self._link_changed(name, fresh.get(name))

    def link_update(self, link: Link, deleted: bool) -> None:
        cur = self.links.get(link.name)
        if deleted:
            if cur is not None and cur.index == link.index:
                self._link_changed(link.name, None)
        elif cur != link:
            self._link_changed(link.name, link)

    def _link_changed(self, name: str, link: Link | None) -> None:
        old = self.links.get(name)
        if link is None:
            self.links.pop(name, None)
            self.configured.pop(name, None)
        else:
            self.links[name] = link
            if old is None or old.index != link.index:
                self.ifaces_dirty.add(name)
        users = self.if_endpoints.get(name, ())
        if old is not None and (link is None or old.index != link.index or not link.up):
            # Routes through a vanished or downed interface are gone from the kernel.
            # (Others through it, not ours by any endpoint, are forgotten at the next
            # resync, which re-reads the kernel.)
            for key in users:
                for r in self.endpoints[key].routes:
                    if self.programmed.get(r) == old.index:
                        del self.programmed[r]
        for key in users:
            self.dirty.update(self.endpoints[key].routes)

    def forget(self, deleted: dict[Route, int]) -> int:
        """Routes another process deleted (route → the interface index it had):
        those we had programmed through that interface are no longer in the kernel,
        and are marked dirty so that the next `apply` writes what is wanted (the
        tamper watch's repair). Returns how many were ours."""
        n = 0
        for r, oif in deleted.items():
            have = self.programmed.get(r)
            if have is not None and (have == oif or not oif):
                del self.programmed[r]
                self.dirty.add(r)
                n += 1
        return n

    # --- desired state ---
    def interface_of(self, route: Route) -> str | None:
        c = self.claims.get(route)
        if not c:
            return None
        if len(c) == 1:
            for name in c.values():
                return name
        # Two endpoints claiming one address: the first key wins, deterministically.
        return c[min(c)]

    def wanted_oif(self, route: Route) -> int:
        name = self.interface_of(route)
        if not name:
            return 0
        link = self.links.get(name)
        return link.index if link is not None and link.up else 0

    def local_interfaces(self) -> set[str]:
        return set(self.if_endpoints)

    def interfaces_to_configure(self) -> list[tuple[Link, bool]]:
        """Local endpoints' interfaces that exist and whose sysctls are not written
        yet (new, or re-created with a new index), as (link, has IPv6). The caller
        writes them and calls `mark_configured`."""
        out = []
        for name in self.ifaces_dirty:
            link = self.links.get(name)
            if link is not None and name in self.if_endpoints and self.configured.get(name) != link.index:
                out.append((link, name in self.if_v6))
        self.ifaces_dirty.clear()
        return sorted(out, key=lambda x: x[0].name)

    def mark_configured(self, name: str) -> None:
        link = self.links.get(name)
        if link is not None:
            self.configured[name] = link.index

    # --- writing ---
    def apply(self) -> RouteStats:
        """Write what is dirty; the first call reads the kernel first (resync)."""
        if not self.synced:
            return self.resync()
        todo, self.dirty = self.dirty, set()
        return self._write(todo)

    def resync(self) -> RouteStats:
        """Read our routes back from the kernel and repair every difference."""
        self.programmed = dict(self.nl.routes(self.protocol, self.table))
        self.synced = True
        self.dirty.clear()
        return self._write(set(self.programmed) | set(self.claims))

    def _write(self, routes: Iterable[Route]) -> RouteStats:
        ops: list[RouteOp] = []
        for r in routes:
            want = self.wanted_oif(r)
            if want and r[2] != _HOST_LEN.get(r[0]):
                # never anything but a host route (set_endpoint refuses the rest)
                log.error("not adding route %s/%d: not a host route", r[1], r[2])
                want = 0
            have = self.programmed.get(r, 0)
            if want == have:
                continue
            if want:
                ops.append(RouteOp("replace", r, want))
            else:
                ops.append(RouteOp("delete", r, have))
        stats = RouteStats()
        if not ops:
            return stats
        self.nl.write(ops, self.protocol, self.table)
        for op in ops:
            if op.op == "replace":
                if op.error == 0:
                    self.programmed[op.route] = op.oif
                    stats.added += 1
                else:
                    stats.failed += 1
                    self.programmed.pop(op.route, None)
                    log.warning("cannot add route %s/%d via ifindex %d: %s", op.route[1], op.route[2], op.oif,
                                os.strerror(op.error))
            else:
                if op.error in (0, errno.ESRCH, errno.ENOENT):
                    self.programmed.pop(op.route, None)
                    stats.removed += 1
                else:
                    stats.failed += 1
                    log.warning("cannot delete route %s/%d: %s", op.route[1], op.route[2], os.strerror(op.error))
        return stats

"""The workload's wiring, Calico's way, through netlink (pyroute2; no `ip` commands).

    host:       caliXXXXXXXXXXX  MAC ee:ee:ee:ee:ee:ee, up, a /32 (/128) route per
                                 workload address (protocol 80, the agent's number,
                                 so the agent adopts them)
    container:  eth0             the workload's addresses as /32 and /128,
                                 169.254.1.1 scope link + default via 169.254.1.1
                                 (its ARP entry fixed to the host side's MAC),
                                 default via fe80::ecee:eeff:feee:eeee for IPv6 (the
                                 link-local address the host side derives from its MAC)

The pair is created in the host namespace with a temporary container-side name,
the peer is moved into the container's namespace by file descriptor and renamed
there — so a half-made pair never has the container's interface name.
`teardown` removes both ends and is a no-op when they are already gone.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
from dataclasses import dataclass
from typing import Iterable

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from calico_net.cni.errors import DATAPLANE, UNKNOWN_CONTAINER, CNIError

log = logging.getLogger(__name__)

HOST_MAC = "ee:ee:ee:ee:ee:ee"
NUD_PERMANENT = 0x80
GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::ecee:eeff:feee:eeee"
RTPROT_FELIX = 80
RT_SCOPE_LINK = 253
IFA_F_NODAD = 0x02


@dataclass
class Wiring:
    host_ifname: str
    host_mac: str
    container_ifname: str
    container_mac: str
    netns: str


def _netns_exists(netns: str) -> bool:
    # Only absolute paths (config.check_netns_path): a bare name would be looked up
    # relative to the working directory here and under /var/run/netns by pyroute2.
    return bool(netns) and netns.startswith("/") and "\x00" not in netns and os.path.exists(netns)


def _open_netns(netns: str) -> NetNS:
    if not _netns_exists(netns):
        raise CNIError(UNKNOWN_CONTAINER, f"network namespace {netns} does not exist")
    # flags=0: open the namespace file, never create one (pyroute2's default is O_CREAT).
    return NetNS(netns, flags=0)


def _sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        log.debug("sysctl %s=%s: %s", path, value, e)


def setup(
    netns: str,
    host_ifname: str,
    container_ifname: str,
    addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address],
    mtu: int,
) -> Wiring:
    """Create and configure the veth pair; raises CNIError (after removing what it
    made) when netlink refuses."""
    addrs = list(addresses)
    if not _netns_exists(netns):
        raise CNIError(UNKNOWN_CONTAINER, f"network namespace {netns} does not exist")
    tmp = "tmp" + secrets.token_hex(5)
    has_v6 = any(a.version == 6 for a in addrs)
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=host_ifname):
            # left over by a runtime that never called DEL: it is ours by name
            log.warning("removing stale interface %s", host_ifname)
            ipr.link("del", ifname=host_ifname)
        try:
            ipr.link("add", ifname=host_ifname, kind="veth", peer={"ifname": tmp, "mtu": mtu}, mtu=mtu)
            host_idx = ipr.link_lookup(ifname=host_ifname)[0]
            ipr.link("set", index=host_idx, address=HOST_MAC)
            if has_v6:
                _sysctl(f"/proc/sys/net/ipv6/conf/{host_ifname}/disable_ipv6", "0")
                _sysctl(f"/proc/sys/net/ipv6/conf/{host_ifname}/accept_ra", "0")
            peer_idx = ipr.link_lookup(ifname=tmp)[0]
            fd = os.open(netns, os.O_RDONLY)
            try:
                ipr.link("set", index=peer_idx, net_ns_fd=fd)
            finally:
                os.close(fd)
            ipr.link("set", index=host_idx, state="up")
        except NetlinkError as e:
            _delete_link(host_ifname)
            raise CNIError(DATAPLANE, f"could not create veth {host_ifname}: {e}") from None
        try:
            with _open_netns(netns) as ns:
                idx = ns.link_lookup(ifname=tmp)[0]
                if ns.link_lookup(ifname=container_ifname):
                    raise CNIError(DATAPLANE, f"the container already has an interface {container_ifname}")
                ns.link("set", index=idx, ifname=container_ifname)
                ns.link("set", index=idx, state="up")
                lo = ns.link_lookup(ifname="lo")
                if lo:
                    ns.link("set", index=lo[0], state="up")
                for a in addrs:
                    if a.version == 4:
                        ns.addr("add", index=idx, address=str(a), prefixlen=32)
                    else:
                        ns.addr("add", index=idx, address=str(a), prefixlen=128, flags=IFA_F_NODAD)
                if any(a.version == 4 for a in addrs):
                    ns.route("add", dst=f"{GATEWAY_V4}/32", oif=idx, scope=RT_SCOPE_LINK)
                    ns.route("add", dst="0.0.0.0/0", gateway=GATEWAY_V4, oif=idx)
                    # The gateway's ARP entry, fixed: proxy ARP on the host answers only
                    # for addresses the host can route elsewhere, so a host without a
                    # default route would leave 169.254.1.1 unresolved.
                    ns.neigh("add", dst=GATEWAY_V4, lladdr=HOST_MAC, ifindex=idx, state=NUD_PERMANENT)
                if has_v6:
                    ns.route("add", dst="::/0", gateway=GATEWAY_V6, oif=idx, family=10)
                container_mac = ns.get_links(idx)[0].get_attr("IFLA_ADDRESS")
            for a in addrs:
                plen = 32 if a.version == 4 else 128
                ipr.route("replace", dst=f"{a}/{plen}", oif=host_idx, proto=RTPROT_FELIX,
                          scope=RT_SCOPE_LINK if a.version == 4 else 0, family=2 if a.version == 4 else 10)
        except (NetlinkError, OSError, IndexError) as e:
            _delete_link(host_ifname)
            raise CNIError(DATAPLANE, f"could not configure {container_ifname} in {netns}: {e}") from None
        except CNIError:
            _delete_link(host_ifname)
            raise
    return Wiring(host_ifname, HOST_MAC, container_ifname, container_mac, netns)


def _delete_link(ifname: str) -> bool:
    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=ifname)
            return True
        except NetlinkError as e:
            if e.code in (errno.ENODEV, errno.EINVAL):
                return False
            raise


def teardown(netns: str, host_ifname: str, container_ifname: str) -> bool:
    """Remove the pair; True if it existed. Deleting the host end removes both ends.
    When the host end is already gone, whatever the container has under its
    interface name is not our pair (a veth's ends live and die together) and is
    left alone."""
    try:
        return _delete_link(host_ifname)
    except NetlinkError as e:
        raise CNIError(DATAPLANE, f"could not delete {host_ifname}: {e}") from None


def _link_kind(link) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def inspect(netns: str, host_ifname: str, container_ifname: str) -> dict:
    """What exists now: host link (mac, up), container link (mac, addresses, routes)."""
    out: dict = {"host": None, "container": None}
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=host_ifname)
        if idx:
            link = ipr.get_links(idx[0])[0]
            routes = [
                f"{r.get_attr('RTA_DST')}/{r['dst_len']}"
                for fam in (2, 10) for r in ipr.get_routes(family=fam, oif=idx[0])
                if r.get_attr("RTA_DST") and r["proto"] == RTPROT_FELIX
            ]
            out["host"] = {"mac": link.get_attr("IFLA_ADDRESS"), "up": bool(link["flags"] & 1), "routes": routes}
    if not _netns_exists(netns):
        return out
    with NetNS(netns, flags=0) as ns:
        idx = ns.link_lookup(ifname=container_ifname)
        if not idx:
            return out
        link = ns.get_links(idx[0])[0]
        addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ns.get_addr(index=idx[0])
                 if a["scope"] == 0]
        routes = []
        for fam in (2, 10):
            for r in ns.get_routes(family=fam, oif=idx[0]):
                dst = r.get_attr("RTA_DST")
                gw = r.get_attr("RTA_GATEWAY")
                routes.append({"dst": f"{dst or ('0.0.0.0' if fam == 2 else '::')}/{r['dst_len']}", "gw": gw})
        out["container"] = {"mac": link.get_attr("IFLA_ADDRESS"), "up": bool(link["flags"] & 1),
                            "addresses": addrs, "routes": routes}
    return out

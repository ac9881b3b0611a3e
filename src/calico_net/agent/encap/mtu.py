"""The underlay facts the overlay needs, and the workload MTU file.

* `read_links()` — this namespace's interfaces (name, MTU, up, addresses) over
  rtnetlink, with the agent's own netlink codec (no pyroute2 import for this).
* `underlay()` — Felix's MTU autodetection: the smallest MTU of the up interfaces
  whose name matches `MTUIfacePattern`, falling back to the MTU of the interface
  that holds this node's address; and that interface's name (the VXLAN parent
  and the device of CrossSubnet's plain routes).
* `MtuFile` — writes the workload MTU to `MTUFilePath` (/var/lib/calico/mtu, which
  the CNI plugin reads when its network config has no "mtu"), atomically
  (temporary file + rename) and only when the value changes.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import struct
from dataclasses import dataclass
from typing import Iterable

from calico_net.agent.encap.state import Underlay
from calico_net.agent.felix.netlink import NetlinkSocket, attrs, cstr, open_socket

log = logging.getLogger(__name__)

RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
IFLA_IFNAME, IFLA_MTU = 3, 4
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")


@dataclass(frozen=True)
class LinkFacts:
    name: str
    mtu: int
    up: bool
    addrs: tuple[str, ...] = ()   # host addresses, no prefix length


def read_links() -> list[LinkFacts]:
    """The interfaces of this network namespace with their addresses."""
    nl = NetlinkSocket(open_socket(socket.NETLINK_ROUTE, rcvbuf=1 << 20, timeout=5.0))
    try:
        links: dict[int, tuple[str, int, bool]] = {}
        for mtype, buf, off, end in nl.dump(RTM_GETLINK, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if mtype != RTM_NEWLINK:
                continue
            _fam, _type, index, flags, _change = _IFINFOMSG.unpack_from(buf, off)
            a = attrs(buf, off + _IFINFOMSG.size, end)
            if IFLA_IFNAME not in a or len(a.get(IFLA_MTU, b"")) < 4:
                continue
            links[index] = (cstr(a[IFLA_IFNAME]), struct.unpack("=I", a[IFLA_MTU][:4])[0], bool(flags & IFF_UP))
        addrs: dict[int, list[str]] = {}
        for mtype, buf, off, end in nl.dump(RTM_GETADDR, _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            if mtype != RTM_NEWADDR:
                continue
            family, _plen, _flags, _scope, index = _IFADDRMSG.unpack_from(buf, off)
            a = attrs(buf, off + _IFADDRMSG.size, end)
            # IFA_LOCAL is the interface's own address (IFA_ADDRESS the peer on a
            # point-to-point link); IPv6 only sends IFA_ADDRESS
            raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if family == socket.AF_INET and raw and len(raw) == 4:
                addrs.setdefault(index, []).append(str(ipaddress.IPv4Address(bytes(raw))))
            elif family == socket.AF_INET6 and raw and len(raw) == 16:
                addrs.setdefault(index, []).append(str(ipaddress.IPv6Address(bytes(raw))))
    finally:
        nl.close()
    return [LinkFacts(name, mtu, up, tuple(addrs.get(index, ()))) for index, (name, mtu, up) in
            sorted(links.items())]


def detect_mtu(links: Iterable[LinkFacts], pattern: str) -> int:
    """Felix's autodetection: the smallest MTU of the up interfaces matching
    `pattern` (a search, like Go's MatchString); 0 when none matches."""
    rx = re.compile(pattern)
    mtus = [link.mtu for link in links if link.up and link.mtu > 0 and rx.search(link.name)]
    return min(mtus) if mtus else 0


def _holder(links: list[LinkFacts], addr: str | None) -> LinkFacts | None:
    if not addr:
        return None
    for link in links:
        if addr in link.addrs:
            return link
    return None


def underlay(links: list[LinkFacts], pattern: str, node_ip4: str | None, node_ip6: str | None) -> Underlay:
    """The underlay for this node: its address's interfaces and the underlay MTU
    (autodetected; the IPv4, else IPv6 address's interface MTU when nothing matches)."""
    h4, h6 = _holder(links, node_ip4), _holder(links, node_ip6)
    mtu = detect_mtu(links, pattern)
    if not mtu:
        parent = h4 or h6
        mtu = parent.mtu if parent is not None else 0
    return Underlay(iface=h4.name if h4 else None, mtu=mtu, iface_v6=h6.name if h6 else None)


class MtuFile:
    """The workload MTU file; `write(mtu)` returns True when it wrote."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> int | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def write(self, mtu: int) -> bool:
        if mtu <= 0 or self.read() == mtu:
            return False
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(f"{mtu}\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)   # the CNI plugin never reads a half-written file
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        log.info("workload MTU %d written to %s", mtu, self.path)
        return True
